//! The delivery debugger's store: the requests a run's destination made that the run kept
//! (`debug_requests`, keyed by run id and request number), what was kept of each run
//! (`debug_runs`), and their retention (`[debug] keep_debug_runs`, `keep_debug_days`,
//! `max_bytes`). Written by the run's capture task, off the delivery's path.

use super::{StateError, StateOp, StateStore};
use crate::domain::CapturedRequest;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// (run id, request number) → JSON [`CapturedRequest`].
const DEBUG_REQUESTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("debug_requests");
/// run id → JSON [`DebugRun`].
const DEBUG_RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("debug_runs");

/// What the delivery debugger kept of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugRun {
    /// The run's history key (its sync, or `draft/SYNC`).
    pub sync: String,
    /// When its first kept request was stored, Unix milliseconds.
    pub first_at_ms: u64,
    /// Requests kept.
    pub kept: u64,
    /// Bytes they take in the state.
    pub bytes: u64,
    /// Requests that should have been kept but were not: the capture queue was full, or the
    /// run's requests reached `[debug] max_bytes`.
    pub dropped: u64,
}

impl StateStore {
    /// Stores `requests` of run `run_id` of `sync` and counts `dropped` ones, in one
    /// transaction. Returns the bytes stored.
    pub fn append_debug_requests(
        &self,
        run_id: &str,
        sync: &str,
        requests: &[CapturedRequest],
        dropped: u64,
        now_ms: u64,
    ) -> Result<u64, StateError> {
        let doing = self.doing(StateOp::WriteDebugRequests);
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        let mut bytes = 0u64;
        {
            let mut table = txn.open_table(DEBUG_REQUESTS).map_err(|e| doing.err(e))?;
            for request in requests {
                let json = doing.encode(request)?;
                bytes += json.len() as u64;
                table
                    .insert((run_id, request.seq), json.as_slice())
                    .map_err(|e| doing.err(e))?;
            }
            let mut runs = txn.open_table(DEBUG_RUNS).map_err(|e| doing.err(e))?;
            let mut run: DebugRun = match runs.get(run_id).map_err(|e| doing.err(e))? {
                Some(v) => serde_json::from_slice(v.value()).map_err(|e| doing.corrupt(e))?,
                None => DebugRun {
                    sync: sync.to_string(),
                    first_at_ms: now_ms,
                    ..DebugRun::default()
                },
            };
            run.kept += requests.len() as u64;
            run.bytes += bytes;
            run.dropped += dropped;
            let json = doing.encode(&run)?;
            runs.insert(run_id, json.as_slice())
                .map_err(|e| doing.err(e))?;
        }
        txn.commit().map_err(|e| doing.err(e))?;
        Ok(bytes)
    }

    /// What the debugger kept of run `run_id`, if anything.
    pub fn debug_run(&self, run_id: &str) -> Result<Option<DebugRun>, StateError> {
        self.read_table(
            StateOp::ReadDebugRequests,
            DEBUG_RUNS,
            || None,
            |t, doing| {
                let v = t.get(run_id).map_err(|e| doing.err(e))?;
                v.map(|v| serde_json::from_slice(v.value()).map_err(|e| doing.corrupt(e)))
                    .transpose()
            },
        )
    }

    /// The kept requests of run `run_id`, in the order the run made them.
    pub fn debug_requests(&self, run_id: &str) -> Result<Vec<CapturedRequest>, StateError> {
        self.read_table(
            StateOp::ReadDebugRequests,
            DEBUG_REQUESTS,
            Vec::new,
            |t, doing| {
                let range = t
                    .range((run_id, 0)..=(run_id, u64::MAX))
                    .map_err(|e| doing.err(e))?;
                let mut out = Vec::new();
                for entry in range {
                    let (_, v) = entry.map_err(|e| doing.err(e))?;
                    out.push(serde_json::from_slice(v.value()).map_err(|e| doing.corrupt(e))?);
                }
                Ok(out)
            },
        )
    }

    /// Request number `seq` of run `run_id`, if it was kept.
    pub fn debug_request(
        &self,
        run_id: &str,
        seq: u64,
    ) -> Result<Option<CapturedRequest>, StateError> {
        self.read_table(
            StateOp::ReadDebugRequests,
            DEBUG_REQUESTS,
            || None,
            |t, doing| {
                let v = t.get((run_id, seq)).map_err(|e| doing.err(e))?;
                v.map(|v| serde_json::from_slice(v.value()).map_err(|e| doing.corrupt(e)))
                    .transpose()
            },
        )
    }

    /// Removes the requests of runs beyond the newest `keep_runs` of each sync, of runs
    /// whose first request is older than `keep_days` days, and of the oldest runs for as long
    /// as all kept requests take more than `max_bytes`. Returns the runs pruned.
    pub fn prune_debug_requests(
        &self,
        keep_runs: u64,
        keep_days: u64,
        max_bytes: u64,
        now_ms: u64,
    ) -> Result<u64, StateError> {
        let doing = self.doing(StateOp::WriteDebugRequests);
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        let mut pruned = 0;
        {
            let mut runs = txn.open_table(DEBUG_RUNS).map_err(|e| doing.err(e))?;
            let mut all: Vec<(String, DebugRun)> = Vec::new();
            for entry in runs.iter().map_err(|e| doing.err(e))? {
                let (k, v) = entry.map_err(|e| doing.err(e))?;
                let run = serde_json::from_slice(v.value()).map_err(|e| doing.corrupt(e))?;
                all.push((k.value().to_string(), run));
            }
            let doomed = runs_to_prune(all, keep_runs, keep_days, max_bytes, now_ms);
            let mut requests = txn.open_table(DEBUG_REQUESTS).map_err(|e| doing.err(e))?;
            for run_id in &doomed {
                runs.remove(run_id.as_str()).map_err(|e| doing.err(e))?;
                requests
                    .retain_in(
                        (run_id.as_str(), 0)..=(run_id.as_str(), u64::MAX),
                        |_, _| false,
                    )
                    .map_err(|e| doing.err(e))?;
                pruned += 1;
            }
        }
        txn.commit().map_err(|e| doing.err(e))?;
        Ok(pruned)
    }
}

/// Which runs retention removes (see [`StateStore::prune_debug_requests`]). Run ids are
/// ULIDs: sorting them sorts runs by start.
fn runs_to_prune(
    mut all: Vec<(String, DebugRun)>,
    keep_runs: u64,
    keep_days: u64,
    max_bytes: u64,
    now_ms: u64,
) -> Vec<String> {
    all.sort_by(|a, b| b.0.cmp(&a.0));
    let oldest_kept = now_ms.saturating_sub(keep_days.saturating_mul(86_400_000));
    let mut per_sync: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total = 0u64;
    let mut doomed = Vec::new();
    for (run_id, run) in &all {
        let seen = per_sync.entry(run.sync.as_str()).or_default();
        *seen += 1;
        let too_old = run.first_at_ms < oldest_kept;
        if *seen > keep_runs || too_old || total.saturating_add(run.bytes) > max_bytes {
            doomed.push(run_id.clone());
        } else {
            total += run.bytes;
        }
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(run_id: &str, seq: u64) -> CapturedRequest {
        CapturedRequest {
            run_id: run_id.into(),
            seq,
            plugin: "webhook".into(),
            started_at_ms: 1,
            duration_ms: 2,
            method: "POST".into(),
            url: "http://127.0.0.1/x".into(),
            status: Some(422),
            error: None,
            failed: true,
            request_headers: vec![],
            request_body: "[]".into(),
            request_bytes: 2,
            response_headers: vec![],
            response_body: "no".into(),
            response_bytes: 2,
            batch: None,
        }
    }

    #[test]
    fn requests_are_stored_per_run_and_pruned_by_retention() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let day = 86_400_000;
        state
            .append_debug_requests("01A", "s", &[request("01A", 1), request("01A", 3)], 0, day)
            .unwrap();
        state
            .append_debug_requests("01B", "s", &[request("01B", 2)], 4, 2 * day)
            .unwrap();
        state
            .append_debug_requests("01C", "t", &[request("01C", 1)], 0, 10 * day)
            .unwrap();
        let seqs: Vec<u64> = state
            .debug_requests("01A")
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, vec![1, 3]);
        assert_eq!(state.debug_run("01B").unwrap().unwrap().dropped, 4);
        assert!(state.debug_request("01A", 3).unwrap().is_some());
        // One run per sync: 01A (older than 01B) goes; 01C is another sync's.
        assert_eq!(
            state
                .prune_debug_requests(1, 30, u64::MAX, 10 * day)
                .unwrap(),
            1
        );
        assert!(state.debug_requests("01A").unwrap().is_empty());
        assert_eq!(state.debug_requests("01B").unwrap().len(), 1);
        // Days: 01B's first request is 8 days old.
        state
            .prune_debug_requests(10, 7, u64::MAX, 10 * day)
            .unwrap();
        assert!(state.debug_run("01B").unwrap().is_none());
        // Bytes: nothing fits in 1 byte.
        state.prune_debug_requests(10, 30, 1, 10 * day).unwrap();
        assert!(state.debug_requests("01C").unwrap().is_empty());
    }
}
