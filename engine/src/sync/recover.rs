//! Runs a dead process left `running`: found at the start of every process (service or CLI)
//! and by every run that takes a sync's lease, and marked `interrupted` with the counts of
//! what they had delivered (committed from their journal first).
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
