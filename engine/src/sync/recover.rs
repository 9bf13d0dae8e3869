//! Runs a dead process left `running`: found at the start of every process (service or CLI)
//! and by every run that takes a sync's lease, and marked `interrupted` with the counts of
//! what they had delivered (committed from their journal first) — or, when the process saved
//! the final record the state had no room for ([`unrecorded`](super::unrecorded)), given
//! that record.
//!
//! A run's record says `running` only while its process holds the sync's lease (it takes
//! the lease first and writes its final record before it lets go). So whoever holds the
//! lease of a sync knows that every other `running` run of it is dead, whichever process
//! died when: none is forgotten, however many processes were killed one after another.

use super::commit::commit_left_journal;
use super::run::Abort;
use crate::domain::RunRecord;
use crate::state::{LeaseError, LeaseHolder, StateStore, SyncLease};
use std::path::Path;

/// The error of a run whose process died mid-run.
pub(crate) const DEAD_RUN: &str = "the process running this sync stopped before the run finished; rows it had delivered were kept";

/// How a process recovering dead runs names itself in a lease file (a run refused meanwhile
/// says who holds the lease).
const RECOVERING: &str = "(recovering interrupted runs)";

/// Marks every run that a dead process left `running` as `interrupted`, with the counts of
/// what it had delivered. A sync whose lease a live run holds is left to that run (it does
/// the same when it starts). Returns the runs marked.
pub fn recover_dead_runs(
    state: &StateStore,
    state_dir: &Path,
    keep_runs: u64,
) -> Result<Vec<RunRecord>, Abort> {
    let mut keys: Vec<String> = state.running_runs()?.into_iter().map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    let mut marked = Vec::new();
    for key in keys {
        let holder = LeaseHolder {
            run_id: RECOVERING.into(),
            started_at: crate::domain::now_rfc3339(),
            pid: std::process::id(),
        };
        let lease = match SyncLease::acquire(state_dir, &key, &holder) {
            Ok(lease) => lease,
            // A live run holds it: it marks the dead ones itself.
            Err(LeaseError::Busy { .. }) => continue,
            Err(e) => {
                tracing::warn!(sync = key, "cannot check for interrupted runs: {e}");
                continue;
            }
        };
        marked.extend(recover_key(state, state_dir, &key, keep_runs)?);
        drop(lease);
    }
    Ok(marked)
}

/// With the lease of `key` held: commits what a killed run left in the journal, then marks
/// every run of `key` whose record still says `running` as interrupted. Returns them.
pub(crate) fn recover_key(
    state: &StateStore,
    state_dir: &Path,
    key: &str,
    keep_runs: u64,
) -> Result<Vec<RunRecord>, Abort> {
    let applied = commit_left_journal(state_dir, state, key)?;
    if applied > 0 {
        tracing::info!(
            sync = key,
            ops = applied,
            "recorded deliveries of an interrupted run from its journal"
        );
    }
    let mut marked = Vec::new();
    for (_, run_id) in state.running_runs()?.into_iter().filter(|(k, _)| k == key) {
        // A run whose process saved its final record (the state had no room for it) ended
        // as that record says.
        if let Some(saved) = super::unrecorded::saved_record(state_dir, &run_id) {
            state.record_run(&saved, keep_runs)?;
            super::unrecorded::forget_saved(state_dir, &run_id);
            tracing::warn!(
                sync = key,
                run_id,
                status = saved.status.as_str(),
                "the final record of a run that could not be written for want of space is written now"
            );
            marked.push(saved);
            continue;
        }
        if let Some(run) = state.interrupt_run(&run_id, DEAD_RUN, keep_runs)? {
            tracing::warn!(
                sync = key,
                run_id,
                delivered = run.delivered.total(),
                "a run left running by a process that died is marked interrupted"
            );
            marked.push(run);
        }
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunStatus;

    fn running(state: &StateStore, id: &str) -> RunRecord {
        let r: RunRecord = serde_json::from_value(serde_json::json!({
            "run_id": id, "sync": "s", "trigger": "manual", "user": "u", "started_at": "", "finished_at": "", "duration_ms": 0,
            "status": "running", "planned": {"added": 0, "changed": 0, "removed": 0}, "delivered": {"added": 0, "changed": 0, "removed": 0},
            "failed": {"added": 0, "changed": 0, "removed": 0}, "plugins": {"source": "", "destination": ""}, "config_hash": "", "error": null, "rejected": []
        }))
        .unwrap();
        state.record_run(&r, 10).unwrap();
        r
    }

    #[test]
    fn the_next_start_writes_a_final_record_the_disk_had_no_room_for() {
        let dir = tempfile::tempdir().unwrap();
        let saved = {
            let state = StateStore::open(dir.path()).unwrap();
            let mut end = running(&state, "01A");
            running(&state, "01B");
            // The run ended on a full disk: its final record stayed in memory, and the
            // exiting process saved it beside the state.
            end.status = RunStatus::Failed;
            end.delivered.added = 58;
            end.error = Some("writing the journal: No space left on device (os error 28)".into());
            super::super::unrecorded::save_unrecorded(dir.path(), &end).unwrap();
            end
        };
        let state = StateStore::open(dir.path()).unwrap();
        let mut marked = recover_dead_runs(&state, dir.path(), 10).unwrap();
        marked.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        assert_eq!(marked.len(), 2);
        let a = state.run("01A").unwrap().unwrap();
        assert_eq!(a.status, RunStatus::Failed);
        assert_eq!(a.delivered.added, 58);
        assert_eq!(a.error, saved.error);
        // Without a saved record: interrupted, as any run of a dead process.
        let b = state.run("01B").unwrap().unwrap();
        assert_eq!(b.status, RunStatus::Interrupted);
        assert_eq!(b.error.as_deref(), Some(DEAD_RUN));
        assert!(state.running_runs().unwrap().is_empty());
        assert!(super::super::unrecorded::saved_record(dir.path(), "01A").is_none());
        // Nothing left to repair at the next start.
        assert!(recover_dead_runs(&state, dir.path(), 10)
            .unwrap()
            .is_empty());
    }
}
