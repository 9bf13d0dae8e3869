//! The delivery debugger's use-cases: the requests a run's destination made (those the run
//! kept, see `[debug] capture`) and one of them in full. Whoever may read a run may read its
//! requests: the same authorization, and the run must exist.

use super::{App, AppError};
use crate::authz::Actor;
use crate::domain::CapturedRequest;

/// A run's kept requests, as listed (without headers, bodies or row keys).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRequests {
    /// The run.
    pub run_id: String,
    /// Its sync.
    pub sync: String,
    /// Requests kept for the run (before `--failed` filtering).
    pub kept: u64,
    /// Requests that should have been kept but were dropped (a full capture queue, or the
    /// run's requests over `[debug] max_bytes`).
    pub dropped: u64,
    /// The requests, in the order the run made them (only failed ones with `failed_only`).
    pub requests: Vec<CapturedRequest>,
}

impl App {
    /// The requests run `run_id` kept, only the failed ones with `failed_only`; summaries
    /// (see [`CapturedRequest::summary`]), in the order the run made them.
    pub fn run_requests(
        &self,
        actor: &Actor,
        run_id: &str,
        failed_only: bool,
    ) -> Result<RunRequests, AppError> {
        let run = self.run_record(actor, run_id)?;
        let failed = |e: crate::state::StateError| AppError::Failed(e.to_string());
        let kept = self.state.debug_run(&run.run_id).map_err(failed)?;
        let requests = self
            .state
            .debug_requests(&run.run_id)
            .map_err(failed)?
            .iter()
            .filter(|r| r.failed || !failed_only)
            .map(CapturedRequest::summary)
            .collect();
        Ok(RunRequests {
            run_id: run.run_id,
            sync: run.sync,
            kept: kept.as_ref().map_or(0, |k| k.kept),
            dropped: kept.as_ref().map_or(0, |k| k.dropped),
            requests,
        })
    }

    /// Request number `seq` of run `run_id`, in full (headers and bodies redacted, bodies
    /// cut), if the run kept it.
    pub fn run_request(
        &self,
        actor: &Actor,
        run_id: &str,
        seq: u64,
    ) -> Result<CapturedRequest, AppError> {
        let run = self.run_record(actor, run_id)?;
        self.state
            .debug_request(&run.run_id, seq)
            .map_err(|e| AppError::Failed(e.to_string()))?
            .ok_or_else(|| {
                AppError::NotFound(format!(
                    "run {run_id} kept no request number {seq} (see `backflow runs requests {run_id}`; [debug] capture decides which requests are kept)"
                ))
            })
    }
}
