//! Run history: the `runs` table (run id → JSON [`RunRecord`]) and its index by sync
//! (`runs_by_sync`), their retention, and the history keys runs are filed under.

use super::error::Doing;
use super::{RunRecord, RunStatus, StateError, StateOp, StateStore};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

/// run id (a ULID, so keys sort by start time) → JSON-encoded [`RunRecord`].
pub(super) const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
/// (history key, run id) → nothing: each sync's runs in start order, so the last run of a
/// sync or its retention never reads the whole history. The history key is the sync's name,
/// or `draft/NAME` for draft runs.
pub(super) const RUNS_BY_SYNC: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("runs_by_sync");

/// run id → history key, for every run whose record says `running`.
pub(super) const RUNS_RUNNING: TableDefinition<&str, &str> = TableDefinition::new("runs_running");
/// run id → JSON [`RunProgress`], the run's counts as of its last committed rows.
pub(super) const RUN_PROGRESS: TableDefinition<&str, &[u8]> = TableDefinition::new("run_progress");

/// Longest run error message kept in history, and longest check message and sample.
const MAX_RUN_ERROR_BYTES: usize = 16 * 1024;
const MAX_CHECK_MESSAGE_BYTES: usize = 4 * 1024;
const MAX_CHECK_SAMPLE_BYTES: usize = 1024;

/// Above every run id (ULIDs are upper-case Crockford base32), to bound index ranges.
const HIGHEST_RUN_ID: &str = "~";

/// Where a run is filed in the history index: its sync, or `draft/SYNC` for a draft run.
pub fn history_key(run: &RunRecord) -> String {
    if run.draft {
        draft_key(&run.sync)
    } else {
        run.sync.clone()
    }
}

/// The state key of a sync's draft runs: their snapshot, pending rows, journal, lease and
/// history are kept apart from the published sync's under it.
pub fn draft_key(sync: &str) -> String {
    format!("draft/{sync}")
}

/// A run record with its messages cut to bounded sizes, as stored.
fn bounded(run: &RunRecord) -> RunRecord {
    use crate::domain::truncate_message;
    let mut run = run.clone();
    run.error = run.error.map(|e| truncate_message(e, MAX_RUN_ERROR_BYTES));
    for check in &mut run.checks {
        check.message =
            truncate_message(std::mem::take(&mut check.message), MAX_CHECK_MESSAGE_BYTES);
        for sample in &mut check.samples {
            *sample = truncate_message(std::mem::take(sample), MAX_CHECK_SAMPLE_BYTES);
        }
    }
    run
}

/// Writes a run record in `txn` (see [`StateStore::record_run`]).
pub(super) fn write_run(
    txn: &WriteTransaction,
    run: &RunRecord,
    keep_runs: u64,
    doing: &Doing,
) -> Result<(), StateError> {
    let run = bounded(run);
    let json = doing.encode(&run)?;
    let key = history_key(&run);
    track_running(txn, &run, &key, doing)?;
    let mut runs = txn.open_table(RUNS).map_err(|e| doing.err(e))?;
    let mut index = txn.open_table(RUNS_BY_SYNC).map_err(|e| doing.err(e))?;
    runs.insert(run.run_id.as_str(), json.as_slice())
        .map_err(|e| doing.err(e))?;
    index
        .insert((key.as_str(), run.run_id.as_str()), ())
        .map_err(|e| doing.err(e))?;
    if run.status != RunStatus::Running {
        let ids: Vec<String> = index
            .range((key.as_str(), "")..=(key.as_str(), HIGHEST_RUN_ID))
            .map_err(|e| doing.err(e))?
            .map(|entry| entry.map(|(k, _)| k.value().1.to_string()))
            .collect::<Result<_, _>>()
            .map_err(|e| doing.err(e))?;
        let excess = ids
            .len()
            .saturating_sub(usize::try_from(keep_runs.max(1)).unwrap_or(usize::MAX));
        for id in &ids[..excess] {
            index
                .remove((key.as_str(), id.as_str()))
                .map_err(|e| doing.err(e))?;
            runs.remove(id.as_str()).map_err(|e| doing.err(e))?;
        }
    }
    Ok(())
}

pub(super) fn read_record(doing: &Doing, value: &[u8]) -> Result<RunRecord, StateError> {
    serde_json::from_slice(value).map_err(|e| doing.corrupt(format!("unreadable run record: {e}")))
}

impl StateStore {
    /// Stores a run record (new, or updated as the run goes). When a run has finished, the
    /// oldest runs of its sync beyond `keep_runs` are pruned in the same transaction.
    ///
    /// On a full disk, a run's final record is kept in memory instead (and shown by every
    /// read of this process), and written by the next write of a run record once there is
    /// room: a run that failed for want of space says so, rather than `running` forever.
    pub fn record_run(&self, run: &RunRecord, keep_runs: u64) -> Result<(), StateError> {
        self.write_deferred();
        match self.write_run_now(run, keep_runs) {
            Err(e) if e.is_no_space() && run.status != RunStatus::Running => {
                tracing::error!(
                    run_id = run.run_id,
                    "recording the run's end: {e}; the record is kept in memory and written once there is room"
                );
                let mut deferred = self.deferred_runs();
                deferred.retain(|(r, _)| r.run_id != run.run_id);
                deferred.push((bounded(run), keep_runs));
                Ok(())
            }
            other => other,
        }
    }

    fn write_run_now(&self, run: &RunRecord, keep_runs: u64) -> Result<(), StateError> {
        let doing = self.doing(StateOp::RecordRun);
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        write_run(&txn, run, keep_runs, &doing)?;
        txn.commit().map_err(|e| doing.err(e))
    }

    fn deferred_runs(&self) -> std::sync::MutexGuard<'_, Vec<(RunRecord, u64)>> {
        self.deferred
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the final records kept in memory for want of space, as far as they fit now.
    pub(super) fn write_deferred(&self) {
        let waiting: Vec<(RunRecord, u64)> = self.deferred_runs().clone();
        for (run, keep_runs) in waiting {
            if self.write_run_now(&run, keep_runs).is_ok() {
                self.deferred_runs().retain(|(r, _)| r.run_id != run.run_id);
            }
        }
    }

    /// The final run records still kept in memory for want of space after one more try to
    /// write them (a process about to exit saves or reports them: they would be lost).
    pub fn unwritten_runs(&self) -> Vec<RunRecord> {
        self.write_deferred();
        self.deferred_runs()
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// The record of `run` kept in memory for want of space, if any.
    pub(super) fn deferred_run(&self, run_id: &str) -> Option<RunRecord> {
        self.deferred_runs()
            .iter()
            .find(|(r, _)| r.run_id == run_id)
            .map(|(r, _)| r.clone())
    }

    /// Runs, newest first: of one history key (a sync's name, or `draft/NAME` for its draft
    /// runs), or of every sync.
    pub fn runs(&self, sync: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, StateError> {
        self.runs_page(sync, None, None, limit)
    }

    /// A page of history, newest first: optionally one history key and one status, and only
    /// runs started before the run `before` (the previous page's last id).
    pub fn runs_page(
        &self,
        sync: Option<&str>,
        status: Option<RunStatus>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        let doing = self.doing(StateOp::ReadRuns);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let runs = txn.open_table(RUNS).map_err(|e| doing.err(e))?;
        let index = txn.open_table(RUNS_BY_SYNC).map_err(|e| doing.err(e))?;
        let read = |value: &[u8]| read_record(&doing, value);
        // Stored records, newest first: through the sync's index, or the whole history.
        let records: Box<dyn Iterator<Item = Result<Option<RunRecord>, StateError>>> = match sync {
            Some(sync) => {
                let range = match before {
                    Some(b) => index.range((sync, "")..(sync, b)),
                    None => index.range((sync, "")..=(sync, HIGHEST_RUN_ID)),
                }
                .map_err(|e| doing.err(e))?;
                Box::new(range.rev().map(|entry| {
                    let (k, _) = entry.map_err(|e| doing.err(e))?;
                    runs.get(k.value().1)
                        .map_err(|e| doing.err(e))?
                        .map(|v| read(v.value()))
                        .transpose()
                }))
            }
            None => {
                let range = match before {
                    Some(b) => runs.range(..b),
                    None => runs.range::<&str>(..),
                }
                .map_err(|e| doing.err(e))?;
                Box::new(range.rev().map(|entry| {
                    entry
                        .map_err(|e| doing.err(e))
                        .and_then(|(_, v)| read(v.value()).map(Some))
                }))
            }
        };
        let mut out = Vec::new();
        for record in records {
            let record = record?.map(|run| self.deferred_run(&run.run_id).unwrap_or(run));
            match record {
                Some(run) if status.is_none_or(|s| run.status == s) => out.push(run),
                _ => continue,
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Removes a run's record (a run folded into a held run of the same plan: it sent
    /// nothing and is not history). `false` if there was none.
    pub fn delete_run(&self, run_id: &str) -> Result<bool, StateError> {
        let doing = self.doing(StateOp::RecordRun);
        let Some(run) = self.run(run_id)? else {
            return Ok(false);
        };
        let key = history_key(&run);
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        {
            let mut runs = txn.open_table(RUNS).map_err(|e| doing.err(e))?;
            let mut index = txn.open_table(RUNS_BY_SYNC).map_err(|e| doing.err(e))?;
            runs.remove(run_id).map_err(|e| doing.err(e))?;
            index
                .remove((key.as_str(), run_id))
                .map_err(|e| doing.err(e))?;
        }
        txn.commit().map_err(|e| doing.err(e))?;
        Ok(true)
    }

    /// One run's record, if it is still in history.
    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        if let Some(run) = self.deferred_run(run_id) {
            return Ok(Some(run));
        }
        let doing = self.doing(StateOp::ReadRuns);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let runs = txn.open_table(RUNS).map_err(|e| doing.err(e))?;
        let value = runs.get(run_id).map_err(|e| doing.err(e))?;
        value.map(|v| read_record(&doing, v.value())).transpose()
    }
}

/// Notes in `txn` whether `run` is in flight (its record says `running`) or final (then its
/// progress entry goes too).
pub(super) fn track_running(
    txn: &WriteTransaction,
    run: &RunRecord,
    key: &str,
    doing: &super::error::Doing,
) -> Result<(), StateError> {
    if run.status == RunStatus::Running {
        let mut running = txn.open_table(RUNS_RUNNING).map_err(|e| doing.err(e))?;
        running
            .insert(run.run_id.as_str(), key)
            .map_err(|e| doing.err(e))?;
        Ok(())
    } else {
        forget_running(txn, &run.run_id, doing)
    }
}

pub(super) fn forget_running(
    txn: &WriteTransaction,
    run_id: &str,
    doing: &super::error::Doing,
) -> Result<(), StateError> {
    let mut running = txn.open_table(RUNS_RUNNING).map_err(|e| doing.err(e))?;
    running.remove(run_id).map_err(|e| doing.err(e))?;
    let mut progress = txn.open_table(RUN_PROGRESS).map_err(|e| doing.err(e))?;
    progress.remove(run_id).map_err(|e| doing.err(e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::run;

    #[test]
    fn finished_runs_prune_their_own_sync_only_and_messages_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.record_run(&run("01A", "other"), 1).unwrap();
        for id in ["01B", "01C", "01D"] {
            let mut r = run(id, "s");
            r.error = Some("x".repeat(100_000));
            store.record_run(&r, 2).unwrap();
        }
        let kept = store.runs(Some("s"), 10).unwrap();
        assert_eq!(
            kept.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
            ["01D", "01C"]
        );
        assert!(kept[0].error.as_ref().unwrap().len() <= MAX_RUN_ERROR_BYTES + 3);
        assert_eq!(store.runs(Some("other"), 10).unwrap().len(), 1);
        assert!(store.run("01B").unwrap().is_none());
    }
}
