//! A consistent copy of the state file while other processes use it (`backflow state
//! backup FILE`): every table, copied in one read transaction (so the copy is the state as of
//! one instant, with runs, snapshots and their history agreeing) into a fresh redb file.
//! The copy is written beside its destination and renamed into place when complete, owner-only.
//!
//! Tables are copied by their key and value types; every table backflow keeps is of one of
//! the types in [`copy_table`] (a table of another type fails the backup rather than being
//! left out).

use super::open::make_private_file;
use super::StateStore;
use redb::{
    Database, Key, ReadOnlyTable, ReadTransaction, ReadableTable, TableDefinition, TableHandle,
    Value, WriteTransaction,
};
use std::path::{Path, PathBuf};

/// What a backup copied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    /// The copy.
    pub file: PathBuf,
    /// Tables copied.
    pub tables: usize,
    /// Entries copied, every table together.
    pub entries: u64,
}

/// A backup could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination exists: a backup never overwrites a file.
    #[error("{0} exists: choose a new file for the backup (a backup never overwrites one)")]
    Exists(PathBuf),
    /// Reading the state or writing the copy failed.
    #[error("backing up state file {state} to {file}: {message}")]
    Copy {
        /// The state file.
        state: PathBuf,
        /// The copy.
        file: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Why copying failed (the message of [`BackupError::Copy`]).
#[derive(Debug, thiserror::Error)]
enum CopyError {
    #[error("{0}")]
    Redb(#[from] redb::Error),
    #[error("table {table}: {source}")]
    Table { table: String, source: redb::Error },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("table {0} is of a type this backup does not know")]
    UnknownType(String),
    #[error("the state holds a multimap table, which backflow does not write")]
    Multimap,
}

impl CopyError {
    fn table(table: &str) -> impl Fn(redb::Error) -> CopyError + '_ {
        move |source| CopyError::Table {
            table: table.to_string(),
            source,
        }
    }
}

impl StateStore {
    /// Writes a consistent copy of the state to `file` (which must not exist).
    pub fn backup(&self, file: &Path) -> Result<BackupReport, BackupError> {
        if file.exists() {
            return Err(BackupError::Exists(file.to_path_buf()));
        }
        let fail = |message: String| BackupError::Copy {
            state: self.path.clone(),
            file: file.to_path_buf(),
            message,
        };
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "backup".into());
        let partial = file.with_file_name(format!(".{name}.partial"));
        let _ = std::fs::remove_file(&partial);
        let copied = (|| {
            let read = self.db.begin_read().map_err(redb::Error::from)?;
            let target = Database::builder()
                .create(&partial)
                .map_err(redb::Error::from)?;
            make_private_file(&partial)?;
            let write = target.begin_write().map_err(redb::Error::from)?;
            let (tables, entries) = copy_all(&read, &write)?;
            write.commit().map_err(redb::Error::from)?;
            drop(target);
            std::fs::rename(&partial, file)?;
            Ok::<_, CopyError>((tables, entries))
        })();
        match copied {
            Ok((tables, entries)) => Ok(BackupReport {
                file: file.to_path_buf(),
                tables,
                entries,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(fail(e.to_string()))
            }
        }
    }
}

/// Copies every table of `read` into `write`; returns (tables, entries).
fn copy_all(read: &ReadTransaction, write: &WriteTransaction) -> Result<(usize, u64), CopyError> {
    let mut tables = 0;
    let mut entries = 0;
    if read
        .list_multimap_tables()
        .map_err(redb::Error::from)?
        .next()
        .is_some()
    {
        return Err(CopyError::Multimap);
    }
    for handle in read.list_tables().map_err(redb::Error::from)? {
        entries += copy_table(read, write, handle.name())?;
        tables += 1;
    }
    Ok((tables, entries))
}

/// Copies table `name`, trying each key and value type backflow's tables use.
fn copy_table(
    read: &ReadTransaction,
    write: &WriteTransaction,
    name: &str,
) -> Result<u64, CopyError> {
    macro_rules! try_types {
        ($(($k:ty, $v:ty)),* $(,)?) => {
            $(
                if let Some(n) = copy_as::<$k, $v>(read, write, name)? {
                    return Ok(n);
                }
            )*
        };
    }
    try_types!(
        (&str, &[u8]),
        (u64, &[u8]),
        (&[u8], &[u8]),
        ((&str, &[u8]), &[u8]),
        ((&str, u64), &[u8]),
        ((&str, &str), ()),
        (&str, u64),
        (&str, i64),
        (&str, &str),
        (u64, u64),
        (&str, ()),
    );
    Err(CopyError::UnknownType(name.to_string()))
}

/// Copies table `name` as `K → V`; `None` when it is of other types.
fn copy_as<K: Key + 'static, V: Value + 'static>(
    read: &ReadTransaction,
    write: &WriteTransaction,
    name: &str,
) -> Result<Option<u64>, CopyError> {
    let fail = CopyError::table(name);
    let definition = TableDefinition::<K, V>::new(name);
    let source: ReadOnlyTable<K, V> = match read.open_table(definition) {
        Ok(t) => t,
        Err(redb::TableError::TableTypeMismatch { .. }) => return Ok(None),
        Err(e) => return Err(fail(e.into())),
    };
    let mut target = write.open_table(definition).map_err(|e| fail(e.into()))?;
    let mut n = 0;
    for entry in source.iter().map_err(|e| fail(e.into()))? {
        let (k, v) = entry.map_err(|e| fail(e.into()))?;
        target
            .insert(k.value(), v.value())
            .map_err(|e| fail(e.into()))?;
        n += 1;
    }
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::run;

    #[test]
    fn a_backup_opens_as_the_same_state_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        store.record_run(&run("01A", "s"), 10).unwrap();
        let meta = crate::state::SyncMeta {
            primary_key: vec!["id".into()],
            destination: "d".into(),
            destination_plugin: "p".into(),
            key_types: vec![],
        };
        let upsert = |k: u32| crate::domain::JournalOp::Upsert {
            key: k.to_be_bytes().to_vec(),
            fp: [1; 16],
            row: vec![1],
        };
        store
            .apply("s", &meta, &(0..1000).map(upsert).collect::<Vec<_>>())
            .unwrap();
        let file = dir.path().join("copy.redb");
        let report = store.backup(&file).unwrap();
        assert!(report.tables > 5 && report.entries > 3);
        assert!(matches!(store.backup(&file), Err(BackupError::Exists(_))));

        let restored = dir.path().join("restored");
        std::fs::create_dir_all(&restored).unwrap();
        std::fs::copy(&file, restored.join("state.redb")).unwrap();
        let copy = StateStore::open(&restored).unwrap();
        assert_eq!(copy.snapshot_len("s").unwrap(), 1000);
        assert_eq!(copy.run("01A").unwrap().unwrap().run_id, "01A");
    }
}
