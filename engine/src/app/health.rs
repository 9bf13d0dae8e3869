//! Whether each sync is healthy, and whether the service is ready: the per-sync health
//! `GET /api/v1/syncs` and the UI show (`ok`, `failing`, `blocked`, `awaiting_approval`,
//! `stale`, with since when), and the reasons `/readyz` gives when it answers 503.

use super::App;
use crate::domain::{RunRecord, RunStatus};
use crate::workspace::Workspace;
use serde::Serialize;

/// How a sync is doing, from its latest finished runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncHealth {
    /// Its latest run delivered (or it never ran).
    Ok,
    /// Its latest run failed (or could not start).
    Failing,
    /// A quality check blocked its latest run, or a policy rejected it.
    Blocked,
    /// Its latest run waits for a person's approval.
    AwaitingApproval,
    /// It has had no successful run for longer than an alert route's `stale_after`.
    Stale,
}

impl SyncHealth {
    /// The name shown (`ok`, `failing`, `blocked`, `awaiting_approval`, `stale`).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncHealth::Ok => "ok",
            SyncHealth::Failing => "failing",
            SyncHealth::Blocked => "blocked",
            SyncHealth::AwaitingApproval => "awaiting_approval",
            SyncHealth::Stale => "stale",
        }
    }
}

/// How often the service looks for stale syncs.
const STALE_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs read to find when the current health began.
const HEALTH_WINDOW: usize = 100;

fn health_class(status: RunStatus) -> Option<SyncHealth> {
    match status {
        RunStatus::Succeeded | RunStatus::Partial => Some(SyncHealth::Ok),
        RunStatus::Failed => Some(SyncHealth::Failing),
        RunStatus::Blocked | RunStatus::Rejected => Some(SyncHealth::Blocked),
        RunStatus::AwaitingApproval => Some(SyncHealth::AwaitingApproval),
        // A held run that was superseded, cancelled or approved says nothing of its own: the
        // run that replaced or delivered it does.
        RunStatus::Running
        | RunStatus::Interrupted
        | RunStatus::Superseded
        | RunStatus::Cancelled
        | RunStatus::Approved => None,
    }
}

/// The health of a sync from its runs (newest first) at `now`, and since when (RFC 3339):
/// the start of the oldest run of the current streak, or when it became stale.
pub fn health_of(
    runs: &[RunRecord],
    stale_after_s: Option<u64>,
    now: jiff::Timestamp,
) -> (SyncHealth, Option<String>) {
    let mut finished = runs
        .iter()
        .filter_map(|r| health_class(r.status).map(|h| (h, r)));
    let Some((health, newest)) = finished.next() else {
        return (SyncHealth::Ok, None);
    };
    let mut since = newest.started_at.clone();
    for (h, r) in finished {
        if h != health {
            break;
        }
        since = r.started_at.clone();
    }
    if health == SyncHealth::Ok {
        let stale_at = stale_after_s.and_then(|s| {
            let done: jiff::Timestamp = newest.finished_at.parse().ok()?;
            done.checked_add(jiff::SignedDuration::from_secs(i64::try_from(s).ok()?))
                .ok()
        });
        if let Some(at) = stale_at.filter(|at| *at < now) {
            return (SyncHealth::Stale, Some(crate::schedule::rfc3339(at)));
        }
    }
    (health, Some(since))
}

impl App {
    /// The health of `sync`, with `ws`'s alert routes deciding when it is stale.
    pub fn sync_health(&self, ws: &Workspace, sync: &str) -> (SyncHealth, Option<String>) {
        let stale_after = crate::alerts::routes_for(ws, sync)
            .iter()
            .filter_map(|(_, a)| a.conditions.stale_after_s)
            .min();
        let runs = self
            .state
            .runs(Some(sync), HEALTH_WINDOW)
            .unwrap_or_default();
        health_of(&runs, stale_after, jiff::Timestamp::now())
    }

    /// Fires `stale` alerts for syncs without a recent success and `long_run` alerts for
    /// runs going on for too long, as often as the shortest `stale_after` or
    /// `run_longer_than` needs (at most every [`STALE_CHECK`]), until the task is dropped
    /// (`backflow serve` runs this).
    pub async fn watch_stale(self: std::sync::Arc<Self>) {
        loop {
            let every = match self.runnable_workspace() {
                Ok(ws) => {
                    let http = self.host.http();
                    crate::alerts::check_stale(http, &ws, &self.state).await;
                    crate::alerts::watch::check_long_runs(http, &ws, &self.state).await;
                    crate::alerts::watch::check_every(&ws)
                }
                Err(e) => {
                    tracing::warn!("stale-sync and long-run alerts: {e}");
                    STALE_CHECK
                }
            };
            tokio::time::sleep(every).await;
        }
    }

    /// Why the service is not ready (empty when it is): the state does not read, the
    /// configuration runs use does not load, a plugin file a sync uses is refused, or a sync
    /// cannot start. `/readyz` answers 503 with these.
    pub fn readiness(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Err(e) = self.state.runs(None, 1) {
            reasons.push(format!("state: {e}"));
        }
        match self.runnable_workspace() {
            Err(e) => reasons.push(format!("configuration: {e}")),
            Ok(ws) => {
                for sync in ws.syncs.keys() {
                    let runs = self.state.runs(Some(sync), 10).unwrap_or_default();
                    let latest = runs.iter().find(|r| r.status != RunStatus::Running);
                    if let Some(r) = latest
                        .filter(|r| r.phase.as_deref() == Some(super::failed_start::PREPARE_PHASE))
                    {
                        reasons.push(format!(
                            "sync {sync}: {} (run {})",
                            r.error.as_deref().unwrap_or("the run could not start"),
                            r.run_id
                        ));
                    }
                }
            }
        }
        // Only a refused file that a sync of what runs uses keeps the service from being
        // ready; without a loadable configuration, every refused file counts.
        let runnable = self.runnable_workspace().ok();
        self.with_plugin_statuses(|t| {
            for p in t.values() {
                let used = runnable
                    .as_ref()
                    .is_none_or(|ws| super::readiness::in_use(ws, p));
                if p.status == super::PluginFileState::Refused && used {
                    reasons.push(format!(
                        "plugin {} refused: {}",
                        p.file.display(),
                        p.error.as_deref().unwrap_or("")
                    ));
                }
            }
        });
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus, started: &str) -> RunRecord {
        let mut r = super::super::failed_start::failed_start_record("s", "t", "u", false, "x");
        r.status = status;
        r.started_at = started.into();
        r.finished_at = started.into();
        r
    }

    #[test]
    fn health_is_the_latest_finished_run_and_since_when_its_streak_began() {
        let now: jiff::Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let runs = [
            run(RunStatus::Running, "2026-01-01T11:04:00Z"),
            run(RunStatus::Failed, "2026-01-01T11:03:00Z"),
            run(RunStatus::Failed, "2026-01-01T11:02:00Z"),
            run(RunStatus::Succeeded, "2026-01-01T11:01:00Z"),
        ];
        assert_eq!(
            health_of(&runs, None, now),
            (SyncHealth::Failing, Some("2026-01-01T11:02:00Z".into()))
        );
        assert_eq!(
            health_of(&runs[3..], None, now),
            (SyncHealth::Ok, Some("2026-01-01T11:01:00Z".into()))
        );
        assert_eq!(
            health_of(&runs[3..], Some(1800), now),
            (SyncHealth::Stale, Some("2026-01-01T11:31:00Z".into()))
        );
        assert_eq!(health_of(&[], Some(1), now), (SyncHealth::Ok, None));
    }
}
