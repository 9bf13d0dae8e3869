//! A run that cannot start is still a run: whichever trigger asked for it (a schedule, an
//! `after` sequence, the API, the web UI, a CLI `sync run`), it is recorded as `failed` in
//! phase `prepare` with the reason, the trigger and the user, and goes through the same
//! metrics and alerts as any failed run. Nothing else makes it visible to someone who is not
//! reading the log.

use super::App;
use crate::domain::{DiffCounts, OpCounts, PluginHashes, RunRecord, RunStatus, Timings};
use crate::state::StateStore;
use crate::sync::RunError;
use std::path::{Path, PathBuf};

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
        self.report_failed_start(record).await
    }

    /// A run the service queued could not start: recorded (and alerted) under the id its
    /// trigger was answered with, so that id leads to the failure. A released approval's
    /// held run then says its release failed instead of staying `approved`.
    pub async fn record_failed_queued_start(
        &self,
        sync: &str,
        request: &super::RunRequest,
        user: &str,
        error: &str,
    ) -> RunRecord {
        let mut record =
            failed_start_record(sync, &request.trigger, user, request.full_resync, error);
        if let Some(id) = &request.run_id {
            record.run_id = id.clone();
        }
        let ws = self.store_failed_start(&record);
        if let Some(held) = &request.approved_run {
            self.release_failed(held, &record);
        }
        self.announce_failed_start(&ws, &record).await;
        record
    }

    /// The held run `held`, approved and released by `release`, which could not start or
    /// failed: it is `failed` with why (still `approved`, it would say a run delivers its
    /// plan). Nothing happens unless `release` failed and `held` is still `approved`.
    pub(super) fn release_failed(&self, held: &str, release: &RunRecord) {
        if release.status != RunStatus::Failed {
            return;
        }
        let approved = self
            .state
            .run(held)
            .ok()
            .flatten()
            .is_some_and(|r| r.status == RunStatus::Approved);
        if !approved {
            return;
        }
        let message = format!(
            "approved, but its release (run {}) failed: {} (that run says what was sent). Once the cause is fixed, run the sync again (a new plan asks for approval again)",
            release.run_id,
            release.error.as_deref().unwrap_or("")
        );
        let keep = self
            .runnable_workspace()
            .map(|ws| ws.keep_runs)
            .unwrap_or(self.working.keep_runs);
        if let Err(e) = crate::governance::held_runs::set_record_status(
            &self.state,
            held,
            RunStatus::Failed,
            message,
            keep,
        ) {
            tracing::error!(
                run_id = held,
                "recording that its release could not start: {e}"
            );
        }
    }

    async fn report_failed_start(&self, record: RunRecord) -> RunRecord {
        let ws = self.store_failed_start(&record);
        self.announce_failed_start(&ws, &record).await;
        record
    }

    /// Logs and stores a run that could not start; returns the workspace whose settings
    /// (history, alerts) apply.
    fn store_failed_start(
        &self,
        record: &RunRecord,
    ) -> std::sync::Arc<crate::workspace::Workspace> {
        let (sync, trigger, user) = (&record.sync, &record.trigger, &record.user);
        let error = record.error.as_deref().unwrap_or("");
        let ws = self
            .runnable_workspace()
            .unwrap_or_else(|_| self.working.clone());
        tracing::error!(sync, run_id = record.run_id, trigger, user, "{error}");
        if let Err(e) = self.state.record_run(record, ws.keep_runs) {
            tracing::error!(sync, "recording the run that could not start: {e}");
        }
        ws
    }

    /// Counts and alerts a stored run that could not start.
    async fn announce_failed_start(&self, ws: &crate::workspace::Workspace, record: &RunRecord) {
        crate::metrics::record_run(record);
        crate::alerts::dispatch(self.host.http(), ws, &self.state, record).await;
    }
}

/// Where the state of the workspace at `root` lives, read leniently from its main file
/// (`[workspace] state_dir`, default `.backflow`) when the workspace as a whole does not
/// load; `None` when that directory does not exist (nothing ever ran there).
pub fn lenient_state_dir(root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(root.join(crate::workspace::WORKSPACE_FILE)).ok();
    let parsed = text.and_then(|t| t.parse::<toml::Table>().ok());
    let setting = |section: &str, key: &str| {
        parsed
            .as_ref()
            .and_then(|t| t.get(section))
            .and_then(|s| s.get(key))
            .cloned()
    };
    let dir = setting("workspace", "state_dir")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| ".backflow".into());
    let dir = root.join(dir);
    dir.join("state.redb").is_file().then_some(dir)
}

/// A CLI `sync run` whose workspace does not load (a configuration error, say): records a
/// failed run in phase `prepare`, with `error`, of each of `names` that the state has run
/// before (a name it never saw is more likely a typo than a sync). Without a loaded
/// configuration there are no alert routes, so nothing is alerted; the service alerts such
/// a failure, as its runs read the configuration that is published. Returns the records
/// written; a state that cannot be opened or written is logged.
pub fn record_runs_of_unloadable_workspace(
    root: &Path,
    names: &[String],
    user: Option<&str>,
    full_resync: bool,
    error: &str,
) -> Vec<RunRecord> {
    let Some(dir) = lenient_state_dir(root) else {
        return Vec::new();
    };
    let state = match StateStore::open(&dir) {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!("recording the runs that could not start: {e}");
            return Vec::new();
        }
    };
    let user = user
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "local".into());
    let keep_runs = crate::workspace::DEFAULT_KEEP_RUNS;
    let mut recorded = Vec::new();
    for name in names {
        if state.runs(Some(name), 1).map_or(true, |r| r.is_empty()) {
            continue;
        }
        let record = failed_start_record(name, "manual", &user, full_resync, error);
        match state.record_run(&record, keep_runs) {
            Ok(()) => recorded.push(record),
            Err(e) => tracing::warn!(sync = name, "recording the run that could not start: {e}"),
        }
    }
    recorded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_of_a_workspace_that_does_not_load_is_found_from_its_main_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Nothing ran there yet: no state to record in.
        std::fs::write(
            root.join("backflow.toml"),
            "[workspace]\nstate_dir = \"st\"\n[syncs.x]\nbogus = 1\n",
        )
        .unwrap();
        assert_eq!(lenient_state_dir(root), None);
        StateStore::open(&root.join("st")).unwrap();
        assert_eq!(lenient_state_dir(root), Some(root.join("st")));
        // A main file that does not even parse: the default place.
        std::fs::write(root.join("backflow.toml"), "[workspace\n").unwrap();
        assert_eq!(lenient_state_dir(root), None);
        StateStore::open(&root.join(".backflow")).unwrap();
        assert_eq!(lenient_state_dir(root), Some(root.join(".backflow")));
    }

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
