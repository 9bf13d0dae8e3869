//! Opening the state file: the redb settings, the format version in the `meta` table, and
//! the migrations of older layouts.

use super::audit::AUDIT;
use super::governance_records::{CHANGES, PUBLISHED, RUN_GATES};
use super::runs::{history_key, RUNS, RUNS_BY_SYNC};
use super::sync_state::SYNC_META;
use super::{snapshot, snapshot_write, RunRecord, StateStore};
use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use std::path::{Path, PathBuf};

/// Layout version of the state file. Bump on any incompatible change to tables or records,
/// and migrate the previous version in [`StateStore::open`].
/// - 1: the first layout;
/// - 2: adds `runs_by_sync`, the history index (built from `runs` on migration);
/// - 3: a run's changelog keeps the rows it inserted in blocks (see `changelog::InsertBlock`);
///   entries of version 2 are still read as they are, so the migration only records 3;
/// - 4: a snapshot is a base and a delta, and its size is kept in `snapshot_rows` (see
///   `snapshot.rs`). An older backflow must refuse the file: it would read the base without
///   the delta;
/// - 5: a snapshot's base is stored in blocks of consecutive rows (`snapshot-blocks/NAME`,
///   see `block.rs`) instead of one entry per row (`snapshot/NAME`); the migration rewrites
///   every per-row base into blocks, recording the size of a version 3 snapshot as it goes.
pub const FORMAT_VERSION: u64 = 5;

/// `format_version` → the layout version of the file.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The state file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Creating the directory, opening the file, or migrating it failed.
    #[error("cannot open state file {path}: {message}")]
    Storage {
        /// The state file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The file is of a layout this backflow does not know (a newer one).
    #[error("state file {path} has format version {found}, but this backflow understands only version {FORMAT_VERSION}; use a newer backflow (or move the file aside to start over)")]
    UnknownFormat {
        /// The state file.
        path: PathBuf,
        /// The format version it records.
        found: u64,
    },
    /// Another process holds the file in a way that excludes this one.
    #[error("state file {path} is in use by another backflow process")]
    Locked {
        /// The state file.
        path: PathBuf,
    },
}

impl StateStore {
    /// Opens (creating if needed) `state.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<StateStore, OpenError> {
        let path = dir.join("state.redb");
        let storage = |message: String| OpenError::Storage {
            path: path.clone(),
            message,
        };
        // Owner-only: the state holds delivered rows (personal data), tokens and the audit log.
        create_private_dir(dir).map_err(|e| storage(e.to_string()))?;
        let db = super::db::database(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen
            | redb::DatabaseError::LockProtocolMismatch => OpenError::Locked { path: path.clone() },
            other => storage(other.to_string()),
        })?;
        make_private_file(&path).map_err(|e| storage(e.to_string()))?;
        let txn = db.begin_write().map_err(|e| storage(e.to_string()))?;
        migrate(&txn, &path)?;
        create_tables(&txn).map_err(|e| storage(e.to_string()))?;
        txn.commit().map_err(|e| storage(e.to_string()))?;
        Ok(StateStore {
            db: std::sync::Arc::new(super::db::Db::new(db, &path)),
            path,
            deferred: Default::default(),
        })
    }
}

/// Creates `dir` (and its parents) if needed; a directory this creates is owner-only (0700).
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes a file of the state owner-only (0600).
pub(crate) fn make_private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Records the format version in a new file, migrates an older one to it, and refuses a
/// newer or unknown one.
fn migrate(txn: &WriteTransaction, path: &Path) -> Result<(), OpenError> {
    let storage = |message: String| OpenError::Storage {
        path: path.to_path_buf(),
        message,
    };
    let mut meta = txn.open_table(META).map_err(|e| storage(e.to_string()))?;
    let found = meta
        .get("format_version")
        .map_err(|e| storage(e.to_string()))?
        .map(|v| v.value());
    match found {
        None | Some(FORMAT_VERSION) => {}
        Some(found @ 1..=4) => {
            if found == 1 {
                index_history(txn, storage)?;
            }
            // 2 → 3: insert blocks are new; a version 2 changelog reads as it is.
            // 3 → 4: a version 3 snapshot is a base without a delta and without a
            // recorded size. 4 → 5: every per-row base is rewritten into blocks (and
            // the size of a version 3 one recorded).
            rewrite_per_row_bases(txn, found, storage)?;
        }
        Some(found) => {
            return Err(OpenError::UnknownFormat {
                path: path.to_path_buf(),
                found,
            })
        }
    }
    if found != Some(FORMAT_VERSION) {
        meta.insert("format_version", FORMAT_VERSION)
            .map_err(|e| storage(e.to_string()))?;
    }
    Ok(())
}

/// 1 → 2: indexes the existing history by sync.
fn index_history(
    txn: &WriteTransaction,
    storage: impl Fn(String) -> OpenError,
) -> Result<(), OpenError> {
    let runs = txn.open_table(RUNS).map_err(|e| storage(e.to_string()))?;
    let mut index = txn
        .open_table(RUNS_BY_SYNC)
        .map_err(|e| storage(e.to_string()))?;
    for entry in runs.iter().map_err(|e| storage(e.to_string()))? {
        let (id, value) = entry.map_err(|e| storage(e.to_string()))?;
        let run: RunRecord = serde_json::from_slice(value.value())
            .map_err(|e| storage(format!("run {} is unreadable: {e}", id.value())))?;
        index
            .insert((history_key(&run).as_str(), id.value()), ())
            .map_err(|e| storage(e.to_string()))?;
    }
    Ok(())
}

/// 4 → 5: rewrites every per-row snapshot base into blocks.
fn rewrite_per_row_bases(
    txn: &WriteTransaction,
    found: u64,
    storage: impl Fn(String) -> OpenError,
) -> Result<(), OpenError> {
    let per_row: Vec<String> = txn
        .list_tables()
        .map_err(|e| storage(e.to_string()))?
        .filter_map(|table| {
            table
                .name()
                .strip_prefix(snapshot::PER_ROW_BASE_PREFIX)
                .map(str::to_string)
        })
        .collect();
    for sync in per_row {
        let started = std::time::Instant::now();
        let rows = snapshot_write::migrate_per_row_base(txn, &sync).map_err(|e| {
            storage(format!(
                "migrating the snapshot of sync {sync} to blocks: {e}"
            ))
        })?;
        tracing::info!(
            sync,
            rows,
            ms = started.elapsed().as_millis() as u64,
            "snapshot rewritten into blocks (state format {found} to {FORMAT_VERSION})"
        );
    }
    Ok(())
}

/// Creates the tables every operation expects to find.
fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(RUNS)?;
    txn.open_table(RUNS_BY_SYNC)?;
    txn.open_table(PUBLISHED)?;
    txn.open_table(CHANGES)?;
    txn.open_table(RUN_GATES)?;
    txn.open_table(AUDIT)?;
    txn.open_table(SYNC_META)?;
    txn.open_table(snapshot::SNAPSHOT_ROWS)?;
    txn.open_table(super::runs::RUNS_RUNNING)?;
    txn.open_table(super::runs::RUN_PROGRESS)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::run;
    use redb::Database;

    #[cfg(unix)]
    #[test]
    fn the_state_directory_and_file_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/state");
        drop(StateStore::open(&state).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("state.redb")), 0o600);
    }

    #[test]
    fn refuses_unknown_format_versions() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateStore::open(dir.path()).unwrap());
        {
            let db = Database::create(dir.path().join("state.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format_version", FORMAT_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        match StateStore::open(dir.path()) {
            Err(OpenError::UnknownFormat { found, .. }) => assert_eq!(found, FORMAT_VERSION + 1),
            other => panic!("expected UnknownFormat, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_version_1_file_gets_its_history_indexed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join("state.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format_version", 1u64)
                .unwrap();
            let mut runs = txn.open_table(RUNS).unwrap();
            for (id, sync) in [("01A", "a"), ("01B", "b"), ("01C", "a")] {
                runs.insert(id, serde_json::to_vec(&run(id, sync)).unwrap().as_slice())
                    .unwrap();
            }
            drop(runs);
            txn.commit().unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        let ids: Vec<String> = store
            .runs(Some("a"), 10)
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(ids, ["01C", "01A"]);
    }
}
