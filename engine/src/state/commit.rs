//! Commits of delivered rows: journal ops applied to a sync's snapshot, pending rows and run
//! changelog, with its [`SyncMeta`], in one durable transaction ([`StateStore::apply`]).

use super::changelog::{changelog_def, changelog_table, InsertBlock};
use super::error::Doing;
use super::pending::{pending_def, pending_table};
use super::snapshot_write::SnapshotWriter;
use super::sync_state::{SyncMeta, SYNC_META};
use super::{PendingRow, StateError, StateOp, StateStore};
use crate::domain::{ChangelogHeader, Delivered, Fingerprint, JournalOp, RowChange};
use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

type ChangelogTable<'txn> = redb::Table<'txn, (&'static str, &'static [u8]), &'static [u8]>;

impl StateStore {
    /// Applies journal ops to a sync's snapshot and pending rows in one durable transaction.
    pub fn apply(&self, sync: &str, meta: &SyncMeta, ops: &[JournalOp]) -> Result<(), StateError> {
        self.apply_part(sync, meta, ops, 0)
    }

    /// Like [`StateStore::apply`], for `ops` that are one chunk of a commit of `commit_ops`
    /// ops (a journal replayed in chunks): the snapshot decides by the whole commit's size
    /// whether it goes to its delta, so a large commit does not send its chunks there.
    pub fn apply_part(
        &self,
        sync: &str,
        meta: &SyncMeta,
        ops: &[JournalOp],
        commit_ops: u64,
    ) -> Result<(), StateError> {
        let doing = self.doing(StateOp::Commit);
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        {
            let changes = (ops
                .iter()
                .filter(|op| matches!(op, JournalOp::Upsert { .. } | JournalOp::Delete { .. }))
                .count() as u64)
                .max(commit_ops);
            let (pending_name, changelog_name) = (pending_table(sync), changelog_table(sync));
            let mut commit =
                Commit::open(&txn, sync, changes, &pending_name, &changelog_name, &doing)?;
            for op in ops {
                commit.apply(op, &doing)?;
            }
            commit.finish(&txn, sync, &doing)?;
            record_meta(&txn, sync, meta, &doing)?;
            super::progress::record_progress(&txn, ops, &doing)?;
        }
        txn.commit().map_err(|e| doing.err(e))
    }
}

/// A commit under way: the tables it writes, open in its transaction, and the run whose
/// deliveries the journal is at.
struct Commit<'txn> {
    snap: SnapshotWriter<'txn>,
    pending: redb::Table<'txn, &'static [u8], &'static [u8]>,
    changelog: ChangelogTable<'txn>,
    /// Most runs have no refused rows at all: then a delivered row has no pending entry to
    /// clear, and a lookup per row is saved.
    any_pending: bool,
    /// The stored value being built (fingerprint ‖ row), reused.
    value: Vec<u8>,
    /// Rows the current run inserted, logged a block at a time.
    inserted: InsertBlock,
    /// The run whose deliveries follow (a journal from before changelogs has none).
    run: Option<String>,
}

impl<'txn> Commit<'txn> {
    fn open(
        txn: &'txn WriteTransaction,
        sync: &str,
        changes: u64,
        pending_name: &str,
        changelog_name: &str,
        doing: &Doing,
    ) -> Result<Commit<'txn>, StateError> {
        let snap = SnapshotWriter::open(txn, sync, changes).map_err(|e| doing.err(e))?;
        let pending = txn
            .open_table(pending_def(pending_name))
            .map_err(|e| doing.err(e))?;
        let changelog = txn
            .open_table(changelog_def(changelog_name))
            .map_err(|e| doing.err(e))?;
        let any_pending = pending.len().map_err(|e| doing.err(e))? > 0;
        Ok(Commit {
            snap,
            pending,
            changelog,
            any_pending,
            value: Vec::new(),
            inserted: InsertBlock::default(),
            run: None,
        })
    }

    fn apply(&mut self, op: &JournalOp, doing: &Doing) -> Result<(), StateError> {
        match op {
            JournalOp::Begin(header) => self.begin(header, doing),
            // Recorded once per commit, by `progress::record_progress`.
            JournalOp::Progress(_) => Ok(()),
            JournalOp::Upsert { key, fp, row } => self.upsert(key, fp, row, doing),
            JournalOp::Delete { key } => self.delete(key, doing),
            JournalOp::Reject {
                key,
                change,
                error,
                run_id,
            } => {
                let row = PendingRow {
                    change: change.clone(),
                    error: error.clone(),
                    run_id: run_id.clone(),
                };
                let json = doing.encode(&row)?;
                self.pending
                    .insert(key.as_slice(), json.as_slice())
                    .map_err(|e| doing.err(e))?;
                self.any_pending = true;
                Ok(())
            }
        }
    }

    /// A run's deliveries start: the previous run's inserted rows are logged, the run's
    /// changelog header written.
    fn begin(&mut self, header: &ChangelogHeader, doing: &Doing) -> Result<(), StateError> {
        if let Some(run) = &self.run {
            self.inserted
                .flush(&mut self.changelog, run)
                .map_err(|e| doing.err(e))?;
        }
        self.inserted.start_run();
        let json = doing.encode(header)?;
        self.changelog
            .insert((header.run_id.as_str(), &[][..]), json.as_slice())
            .map_err(|e| doing.err(e))?;
        self.run = Some(header.run_id.clone());
        Ok(())
    }

    fn upsert(
        &mut self,
        key: &[u8],
        fp: &Fingerprint,
        row: &[u8],
        doing: &Doing,
    ) -> Result<(), StateError> {
        self.value.clear();
        self.value.extend_from_slice(fp);
        self.value.extend_from_slice(row);
        let stored = self
            .snap
            .upsert(key, &self.value)
            .map_err(|e| doing.err(e))?;
        // An entry left exactly as it was is not logged: that is this journal applied again (a
        // crash between commit and truncation: the first entry, maybe in an insert block,
        // stands), or a full resync sending a row again unchanged, which leaves nothing to undo.
        let unchanged = stored.as_deref() == Some(self.value.as_slice());
        let before = stored.and_then(|v| Delivered::from_stored(&v));
        match (&self.run, before) {
            (Some(_), _) if unchanged => {}
            (Some(run), None) => {
                self.inserted.push(key, fp);
                if self.inserted.is_full() {
                    self.inserted
                        .flush(&mut self.changelog, run)
                        .map_err(|e| doing.err(e))?;
                }
            }
            (Some(run), Some(before)) => log_first(
                &mut self.changelog,
                run,
                key,
                RowChange::Updated { before, sent: *fp },
            )
            .map_err(|e| doing.err(e))?,
            (None, _) => {}
        }
        self.clear_pending(key, doing)
    }

    fn delete(&mut self, key: &[u8], doing: &Doing) -> Result<(), StateError> {
        let before = self
            .snap
            .delete(key)
            .map_err(|e| doing.err(e))?
            .and_then(|v| Delivered::from_stored(&v));
        if let (Some(run), Some(before)) = (&self.run, before) {
            log_first(&mut self.changelog, run, key, RowChange::Deleted { before })
                .map_err(|e| doing.err(e))?;
        }
        self.clear_pending(key, doing)
    }

    /// A delivered row is no longer pending.
    fn clear_pending(&mut self, key: &[u8], doing: &Doing) -> Result<(), StateError> {
        if self.any_pending {
            self.pending.remove(key).map_err(|e| doing.err(e))?;
        }
        Ok(())
    }

    /// Logs the last run's inserted rows and writes back the snapshot.
    fn finish(
        mut self,
        txn: &WriteTransaction,
        sync: &str,
        doing: &Doing,
    ) -> Result<(), StateError> {
        if let Some(run) = &self.run {
            self.inserted
                .flush(&mut self.changelog, run)
                .map_err(|e| doing.err(e))?;
        }
        self.snap.finish(txn, sync).map_err(|e| doing.err(e))
    }
}

/// Keeps the first changelog entry of a (run, key): replaying a journal twice (a crash
/// between commit and truncation) must not turn "before" into "sent".
fn log_first(
    changelog: &mut ChangelogTable<'_>,
    run: &str,
    key: &[u8],
    change: RowChange,
) -> Result<(), redb::Error> {
    let encoded = change.encode();
    let previous = changelog
        .insert((run, key), encoded.as_slice())?
        .map(|g| g.value().to_vec());
    if let Some(previous) = previous {
        changelog.insert((run, key), previous.as_slice())?;
    }
    Ok(())
}

/// Records what the snapshot is for. A commit that does not know the key types (replaying a
/// journal before the plan) keeps the recorded ones.
fn record_meta(
    txn: &WriteTransaction,
    sync: &str,
    meta: &SyncMeta,
    doing: &Doing,
) -> Result<(), StateError> {
    let mut metas = txn.open_table(SYNC_META).map_err(|e| doing.err(e))?;
    let mut meta = meta.clone();
    if meta.key_types.is_empty() {
        let stored = metas
            .get(sync)
            .map_err(|e| doing.err(e))?
            .and_then(|v| serde_json::from_slice::<SyncMeta>(v.value()).ok());
        if let Some(stored) = stored.filter(|m| m.same_target(&meta)) {
            meta.key_types = stored.key_types;
        }
    }
    let json = doing.encode(&meta)?;
    metas
        .insert(sync, json.as_slice())
        .map_err(|e| doing.err(e))?;
    Ok(())
}
