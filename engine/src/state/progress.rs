//! Runs in flight, as the state knows them: `runs_running` (run id → history key) lists the
//! runs whose record says `running`, so that the runs a dead process left behind are found
//! without reading the whole history; `run_progress` (run id → JSON [`RunProgress`]) keeps
//! what a run had delivered, committed in the same transaction as the rows themselves (the
//! journal carries it, see `JournalOp::Progress`), so that a killed run's record gets its
//! true counts back ([`StateStore::interrupt_run`]). Both entries go when the record is final.

use super::runs::{forget_running, write_run, RUNS_RUNNING, RUN_PROGRESS};
use super::{RunRecord, RunStatus, StateError, StateOp, StateStore};
use crate::domain::RunProgress;
use redb::{ReadableTable, WriteTransaction};

/// Records, in a commit's transaction, the last progress of each run among `ops`.
pub(super) fn record_progress(
    txn: &WriteTransaction,
    ops: &[crate::domain::JournalOp],
    doing: &super::error::Doing,
) -> Result<(), StateError> {
    let mut last: Vec<&RunProgress> = Vec::new();
    for op in ops {
        if let crate::domain::JournalOp::Progress(p) = op {
            match last.iter_mut().find(|l| l.run_id == p.run_id) {
                Some(slot) => *slot = p,
                None => last.push(p),
            }
        }
    }
    if last.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(RUN_PROGRESS).map_err(|e| doing.err(e))?;
    for p in last {
        table
            .insert(p.run_id.as_str(), doing.encode(p)?.as_slice())
            .map_err(|e| doing.err(e))?;
    }
    Ok(())
}

impl StateStore {
    /// The runs whose record says `running`: (history key, run id), oldest first.
    pub fn running_runs(&self) -> Result<Vec<(String, String)>, StateError> {
        let doing = self.doing(StateOp::ReadRuns);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let table = match txn.open_table(RUNS_RUNNING) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(doing.err(e)),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| doing.err(e))? {
            let (id, key) = entry.map_err(|e| doing.err(e))?;
            out.push((key.value().to_string(), id.value().to_string()));
        }
        Ok(out)
    }

    /// What a run had delivered as of its last committed rows, if it committed any.
    pub fn run_progress(&self, run_id: &str) -> Result<Option<RunProgress>, StateError> {
        self.read_table(
            StateOp::ReadRuns,
            RUN_PROGRESS,
            || None,
            |table, doing| {
                let value = table.get(run_id).map_err(|e| doing.err(e))?;
                value
                    .map(|v| {
                        serde_json::from_slice(v.value())
                            .map_err(|e| doing.corrupt(format!("unreadable run progress: {e}")))
                    })
                    .transpose()
            },
        )
    }

    /// Marks a run whose process died as `interrupted`, with the counts of the rows it had
    /// committed and `error`, in one transaction, if its record still says `running` (a run
    /// that finished meanwhile keeps its record). Returns the record written, if any.
    pub fn interrupt_run(
        &self,
        run_id: &str,
        error: &str,
        keep_runs: u64,
    ) -> Result<Option<RunRecord>, StateError> {
        // A final record waiting for room in memory is the run's true end.
        self.write_deferred();
        if self.deferred_run(run_id).is_some() {
            return Ok(None);
        }
        let doing = self.doing(StateOp::RecordRun);
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        let record = {
            let runs = txn
                .open_table(super::runs::RUNS)
                .map_err(|e| doing.err(e))?;
            let stored = runs.get(run_id).map_err(|e| doing.err(e))?;
            let record: Option<RunRecord> = stored
                .map(|v| super::runs::read_record(&doing, v.value()))
                .transpose()?;
            record
        };
        let interrupted = match record.filter(|r| r.status == RunStatus::Running) {
            Some(mut run) => {
                let progress = {
                    let table = txn.open_table(RUN_PROGRESS).map_err(|e| doing.err(e))?;
                    let value = table.get(run_id).map_err(|e| doing.err(e))?;
                    value
                        .map(|v| serde_json::from_slice::<RunProgress>(v.value()))
                        .transpose()
                        .map_err(|e| doing.corrupt(format!("unreadable run progress: {e}")))?
                };
                if let Some(p) = progress {
                    run.delivered = p.delivered;
                    run.failed = p.failed;
                }
                run.status = RunStatus::Interrupted;
                run.error = Some(error.to_string());
                run.finished_at = crate::domain::now_rfc3339();
                write_run(&txn, &run, keep_runs, &doing)?;
                Some(run)
            }
            None => {
                // Not running (any more): whatever the index says of it is stale.
                forget_running(&txn, run_id, &doing)?;
                None
            }
        };
        txn.commit().map_err(|e| doing.err(e))?;
        Ok(interrupted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JournalOp, OpCounts};
    use crate::state::testing::run;

    #[test]
    fn a_dead_run_gets_its_committed_counts_and_a_finished_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut dead = run("01A", "s");
        dead.status = RunStatus::Running;
        store.record_run(&dead, 10).unwrap();
        let mut done = run("01B", "s");
        done.status = RunStatus::Running;
        store.record_run(&done, 10).unwrap();
        done.status = RunStatus::Succeeded;
        store.record_run(&done, 10).unwrap();
        assert_eq!(store.running_runs().unwrap(), [("s".into(), "01A".into())]);

        let progress = |added| {
            JournalOp::Progress(RunProgress {
                run_id: "01A".into(),
                delivered: OpCounts {
                    added,
                    ..Default::default()
                },
                failed: OpCounts::default(),
            })
        };
        let meta = crate::state::SyncMeta {
            primary_key: vec!["id".into()],
            destination: "d".into(),
            destination_plugin: "p".into(),
            key_types: vec![],
        };
        store
            .apply("s", &meta, &[progress(3), progress(7)])
            .unwrap();

        let marked = store.interrupt_run("01A", "killed", 10).unwrap().unwrap();
        assert_eq!(marked.delivered.added, 7);
        assert_eq!(marked.status, RunStatus::Interrupted);
        assert!(store.running_runs().unwrap().is_empty());
        assert!(store.run_progress("01A").unwrap().is_none());
        assert!(store.interrupt_run("01B", "killed", 10).unwrap().is_none());
        assert_eq!(
            store.run("01B").unwrap().unwrap().status,
            RunStatus::Succeeded
        );
    }
}
