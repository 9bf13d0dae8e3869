//! A run that cannot start is still a run: whichever trigger asked for it (a schedule, an
//! `after` sequence, the API, the web UI, a CLI `sync run`), it is recorded as `failed` in
//! phase `prepare` with the reason, the trigger and the user, and goes through the same
//! metrics and alerts as any failed run. Nothing else makes it visible to someone who is not
//! reading the log.

use super::App;
use crate::domain::{DiffCounts, OpCounts, PluginHashes, RunRecord, RunStatus, Timings};
use crate::sync::RunError;

/// The phase recorded for a run that could not start.
pub const PREPARE_PHASE: &str = "prepare";

/// The record of a run of `sync` that could not start because of `error`.
pub fn failed_start_record(
    sync: &str,
    trigger: &str,
    user: &str,
    full_resync: bool,
    error: &str,
) -> RunRecord {
    let now = crate::domain::now_rfc3339();
    RunRecord {
        run_id: ulid::Ulid::new().to_string(),
        sync: sync.to_string(),
        trigger: trigger.to_string(),
        user: user.to_string(),
        started_at: now.clone(),
        finished_at: now,
        duration_ms: 0,
        timings: Timings::default(),
        status: RunStatus::Failed,
        full_resync,
        model_rows: 0,
        snapshot_rows: 0,
        diff: DiffCounts::default(),
        planned: OpCounts::default(),
        delivered: OpCounts::default(),
        failed: OpCounts::default(),
        plugins: PluginHashes::default(),
        config_hash: String::new(),
        error: Some(crate::domain::truncate_message(
            format!("the run could not start: {error}"),
            4096,
        )),
        phase: Some(PREPARE_PHASE.to_string()),
        checks: Vec::new(),
        rejected: Vec::new(),
        draft: false,
        undo: None,
        out_of_key_order: false,
    }
}

/// Whether a run that did not start is a failure to record: a sync running elsewhere is not
/// (the trigger waits for it, or the CLI says so), everything else is.
pub fn is_failed_start(e: &RunError) -> bool {
    !matches!(e, RunError::LeaseBusy { .. })
}

impl App {
    /// Records that a run of `sync` asked for by `user` (`trigger`) could not start, and
    /// reports it like any failed run (metrics, alerts). The alerts and history settings are
    /// those of the configuration runs use, or of the working copy when that one does not
    /// load (which may be why the run could not start). A record that cannot be stored is
    /// logged.
    pub async fn record_failed_start(
        &self,
        sync: &str,
        trigger: &str,
        user: &str,
        full_resync: bool,
        error: &str,
    ) -> RunRecord {
        let record = failed_start_record(sync, trigger, user, full_resync, error);
        let ws = self
            .runnable_workspace()
            .unwrap_or_else(|_| self.working.clone());
        tracing::error!(
            sync,
            run_id = record.run_id,
            trigger,
            user,
            "run could not start: {error}"
        );
        if let Err(e) = self.state.record_run(&record, ws.keep_runs) {
            tracing::error!(sync, "recording the run that could not start: {e}");
        }
        crate::metrics::record_run(&record);
        crate::alerts::dispatch(self.host.http(), &ws, &self.state, &record).await;
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_could_not_start_is_a_failed_run_in_phase_prepare() {
        let r = failed_start_record("s", "schedule", "backflow-serve", false, "no plugin p");
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(r.phase.as_deref(), Some("prepare"));
        assert_eq!(
            r.error.as_deref(),
            Some("the run could not start: no plugin p")
        );
        assert_eq!(
            (r.trigger.as_str(), r.user.as_str()),
            ("schedule", "backflow-serve")
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["phase"], "prepare");
    }
}
