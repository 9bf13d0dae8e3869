//! Alerts: a sync's health changes posted to Slack-compatible webhooks (`[[alerts]]`),
//! routed by sync or destination so each destination's owner hears about their destination.
//!
//! A route watches conditions ([`conditions`]): the run outcomes it names in `on` and the
//! thresholds it sets. Each condition of each sync goes through episodes ([`episode`]): one
//! `firing` alert when it starts, a `reminder` at most every `repeat_after` while it lasts,
//! one `recovered` when it ends. Episodes are kept in the state, so a restart neither repeats
//! nor forgets them. Every alert carries a stable `alert_id` (sync, condition, episode) and
//! its `state`, so receivers can deduplicate.
//!
//! An alert never changes a run: a webhook that fails or hangs is logged (naming its host,
//! never its URL, which is a credential) and the run's record stays as it is.

pub mod conditions;
pub mod episode;
pub mod watch;

use crate::domain::{RunRecord, RunStatus};
use crate::state::{AlertEpisode, StateStore};
use crate::workspace::{Alert, AlertOutcome, Workspace};
use conditions::Condition;
use episode::{AlertState, Observation};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// How long one webhook may take.
const ALERT_TIMEOUT: Duration = Duration::from_secs(10);

/// Every route of `ws` that reports on `sync`, with the key its episodes are stored under:
/// a hash of its URL as written (not its place in the file, so reordering routes keeps
/// their episodes), numbered when two routes share a URL.
pub fn routes_for<'a>(ws: &'a Workspace, sync: &str) -> Vec<(String, &'a Alert)> {
    let destination = ws
        .syncs
        .get(sync)
        .map(|s| s.destination.as_str())
        .unwrap_or("");
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for alert in &ws.alerts {
        let hash = hex::encode(&Sha256::digest(alert.url.as_bytes())[..6]);
        let twins = seen.iter().filter(|h| **h == hash).count();
        seen.push(hash.clone());
        let key = if twins == 0 {
            hash
        } else {
            format!("{hash}.{twins}")
        };
        let by_sync = alert.syncs.is_empty() || alert.syncs.iter().any(|s| s == sync);
        let by_destination =
            alert.destinations.is_empty() || alert.destinations.iter().any(|d| d == destination);
        if by_sync && by_destination {
            out.push((key, alert));
        }
    }
    out
}

/// The stable id of an episode, as receivers deduplicate on it.
pub fn alert_id(sync: &str, condition: Condition, episode: u64) -> String {
    format!("{sync}/{}/{episode}", condition.as_str())
}

/// What one alert is about.
pub struct Notice<'a> {
    /// The sync.
    pub sync: &'a str,
    /// The condition.
    pub condition: Condition,
    /// Firing, reminder or recovered.
    pub state: AlertState,
    /// The episode.
    pub episode: &'a AlertEpisode,
    /// How the condition holds (empty for a recovery).
    pub detail: &'a str,
    /// The run that showed it, if a run did (not for a stale sync).
    pub run: Option<&'a RunRecord>,
}

fn rfc3339_of(unix_s: i64) -> String {
    jiff::Timestamp::from_second(unix_s)
        .map(crate::schedule::rfc3339)
        .unwrap_or_default()
}

/// The message: what happened, to which sync and destination, and what to do.
pub fn message(ws: &Workspace, n: &Notice<'_>) -> serde_json::Value {
    let destination = ws
        .syncs
        .get(n.sync)
        .map(|s| s.destination.clone())
        .unwrap_or_default();
    let run_id = n.run.map(|r| r.run_id.as_str()).unwrap_or("");
    let since = rfc3339_of(n.episode.since);
    let what = match (n.condition, n.state) {
        (_, AlertState::Recovered) => format!(
            "recovered: {} since {since} is over (run {run_id} {})",
            n.condition.as_str(),
            n.run.map(|r| r.status.as_str()).unwrap_or("")
        ),
        (Condition::Outcome(AlertOutcome::AwaitingApproval), _) => format!(
            "run {run_id} awaits approval (`backflow runs approve {run_id}`): {}",
            n.detail
        ),
        (Condition::Outcome(AlertOutcome::Blocked), _) => {
            format!("run {run_id} was blocked by a quality check: {}", n.detail)
        }
        (Condition::Outcome(o), _) => format!("run {run_id} {}: {}", o.as_str(), n.detail),
        (Condition::Stale, _) => format!("stale: {}", n.detail),
        (c, _) => format!("run {run_id} {}: {}", c.as_str(), n.detail),
    };
    let still = if n.state == AlertState::Reminder {
        format!(" (still, since {since})")
    } else {
        String::new()
    };
    let text = format!("backflow: sync {} → {destination}, {what}{still}", n.sync);
    serde_json::json!({
        "text": text,
        "alert_id": alert_id(n.sync, n.condition, n.episode.number),
        "state": n.state.as_str(),
        "sync": n.sync,
        "destination": destination,
        "outcome": n.condition.as_str(),
        "condition": n.condition.as_str(),
        "episode": n.episode.number,
        "since": since,
        "detail": n.detail,
        "run_id": n.run.map(|r| r.run_id.clone()),
        "status": n.run.map(|r| r.status.as_str()),
        "trigger": n.run.map(|r| r.trigger.clone()),
        "user": n.run.map(|r| r.user.clone()),
    })
}

/// The watched count of the sync's last successful runs before `run`, newest first.
fn baseline(state: &StateStore, alert: &Alert, run: &RunRecord) -> Vec<u64> {
    let Some(d) = &alert.conditions.row_count_deviation else {
        return Vec::new();
    };
    match state.runs_page(
        Some(&crate::state::history_key(run)),
        Some(RunStatus::Succeeded),
        None,
        d.baseline_runs as usize + 1,
    ) {
        Ok(runs) => runs
            .iter()
            .filter(|r| r.run_id != run.run_id)
            .map(|r| conditions::measured(r, d.measure))
            .collect(),
        Err(e) => {
            tracing::error!(
                sync = run.sync,
                "alerts: reading the row-count baseline: {e}"
            );
            Vec::new()
        }
    }
}

/// Moves the episode stored under `key` on by `seen`; what to send, if anything. A state
/// that cannot be read or written is logged and nothing is sent (rather than an alert that
/// would be sent again at every run).
fn advance(
    state: &StateStore,
    key: &str,
    seen: &Observation,
    now: i64,
    repeat_after_s: u64,
) -> Option<(AlertState, AlertEpisode)> {
    if *seen == Observation::Unknown {
        return None;
    }
    let last = match state.alert_episode(key) {
        Ok(last) => last,
        Err(e) => {
            tracing::error!(episode = key, "alert not evaluated: {e}");
            return None;
        }
    };
    let step = episode::step(last.as_ref(), seen, now, repeat_after_s);
    if let Some(episode) = &step.store {
        if let Err(e) = state.set_alert_episode(key, episode) {
            tracing::error!(
                episode = key,
                "alert not sent: recording its episode failed: {e}"
            );
            return None;
        }
    }
    step.send
}

/// Judges the run against every matching route's conditions and posts what changed; waits
/// for the posts (bounded), never fails.
pub async fn dispatch(http: &reqwest::Client, ws: &Workspace, state: &StateStore, run: &RunRecord) {
    if run.draft {
        return;
    }
    let now = jiff::Timestamp::now().as_second();
    let mut sends = Vec::new();
    for (route, alert) in routes_for(ws, &run.sync) {
        let baseline = baseline(state, alert, run);
        for (condition, seen) in conditions::observe(alert, run, &baseline) {
            let key = format!("{route} {} {}", run.sync, condition.as_str());
            let seen = match condition {
                // A long run the watch alerted while it went on ends its episode by ending.
                Condition::LongRun => {
                    let stored = state.alert_episode(&key).ok().flatten();
                    watch::long_run_at_end(stored.as_ref(), run, seen)
                }
                _ => seen,
            };
            let repeat = alert.conditions.repeat_after_s;
            let Some((st, episode)) = advance(state, &key, &seen, now, repeat) else {
                continue;
            };
            let detail = match &seen {
                Observation::Active(d) => d.as_str(),
                _ => "",
            };
            let notice = Notice {
                sync: &run.sync,
                condition,
                state: st,
                episode: &episode,
                detail,
                run: Some(run),
            };
            sends.push((alert, message(ws, &notice)));
        }
    }
    futures::future::join_all(sends.iter().map(|(alert, body)| post(http, alert, body))).await;
}

/// Fires `stale` for every sync whose last successful run ended more than a route's
/// `stale_after` ago, or that never succeeded and was first seen by this watch (or first
/// ran) longer ago than that; a success ends the episode (see [`dispatch`]). The service
/// calls this now and then.
pub async fn check_stale(http: &reqwest::Client, ws: &Workspace, state: &StateStore) {
    let now = jiff::Timestamp::now();
    let mut sends = Vec::new();
    for sync in ws.syncs.keys() {
        let routes: Vec<(String, &Alert, u64)> = routes_for(ws, sync)
            .into_iter()
            .filter_map(|(k, a)| a.conditions.stale_after_s.map(|s| (k, a, s)))
            .collect();
        if routes.is_empty() {
            continue;
        }
        let Some((last_success, what)) = watch::stale_since(state, sync, now.as_second()) else {
            continue;
        };
        let age = now.as_second() - last_success.as_second();
        for (route, alert, stale_after) in routes {
            if age <= i64::try_from(stale_after).unwrap_or(i64::MAX) {
                continue;
            }
            let detail = format!(
                "{what} {} (more than {stale_after} s)",
                crate::schedule::rfc3339(last_success)
            );
            let seen = Observation::Active(detail.clone());
            let key = format!("{route} {sync} {}", Condition::Stale.as_str());
            let repeat = alert.conditions.repeat_after_s;
            let Some((st, episode)) = advance(state, &key, &seen, now.as_second(), repeat) else {
                continue;
            };
            let notice = Notice {
                sync,
                condition: Condition::Stale,
                state: st,
                episode: &episode,
                detail: &detail,
                run: None,
            };
            sends.push((alert, message(ws, &notice)));
        }
    }
    futures::future::join_all(sends.iter().map(|(alert, body)| post(http, alert, body))).await;
}

/// When the last successful (or partial) run of `sync` ended, if one did.
pub fn last_success(state: &StateStore, sync: &str) -> Option<jiff::Timestamp> {
    let runs = state.runs(Some(sync), 200).ok()?;
    runs.iter()
        .find(|r| matches!(r.status, RunStatus::Succeeded | RunStatus::Partial))
        .and_then(|r| r.finished_at.parse().ok())
}

async fn post(http: &reqwest::Client, alert: &Alert, body: &serde_json::Value) {
    let field = alert.origin.key("url");
    let url = match granted_url(alert) {
        Ok(url) => url,
        Err(e) => return tracing::warn!("alert not sent: {field}: {e}"),
    };
    let granted_http;
    let http = match alert_client(alert) {
        Some(client) => {
            granted_http = client;
            &granted_http
        }
        None => http,
    };
    let host = reqwest::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    match http
        .post(&url)
        .timeout(ALERT_TIMEOUT)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => tracing::info!(alert = field, host, "alert sent"),
        Ok(r) => tracing::warn!(
            alert = field,
            host,
            status = r.status().as_u16(),
            "alert refused by its webhook"
        ),
        Err(e) => tracing::warn!(
            alert = field,
            host,
            "alert failed: {}",
            crate::redact::redact(std::slice::from_ref(&url), &e.to_string())
        ),
    }
}

/// Why an alert's URL cannot be made.
#[derive(Debug, thiserror::Error)]
enum AlertUrlError {
    /// The URL names a variable its `grants.env` does not (refused at load too).
    #[error("uses ${{env.{0}}}, which is not in its grants.env")]
    Ungranted(String),
    /// A granted variable is not set, or the reference is malformed.
    #[error("{0}")]
    Expansion(String),
}

/// The alert's URL with its `${env.NAME}` expanded, reading only variables in its
/// `grants.env` (checked at load; checked again here, where the values are read).
fn granted_url(alert: &Alert) -> Result<String, AlertUrlError> {
    if let Some(name) = crate::workspace::env_references(&alert.url)
        .into_iter()
        .find(|name| !alert.grants.env.contains(name))
    {
        return Err(AlertUrlError::Ungranted(name));
    }
    backflow_plugin_sdk::expand_secrets(&alert.url, "alert").map_err(AlertUrlError::Expansion)
}

/// The client for an alert whose `grants.network` names addresses or ranges its URL's host
/// name may lead to; `None` for the host's client (no proxy, names checked like plugins').
fn alert_client(alert: &Alert) -> Option<reqwest::Client> {
    if alert.grants.network.iter().all(|g| g.is_name()) {
        return None;
    }
    match crate::host::checked_client_granting(&alert.grants.network) {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::warn!(alert = alert.origin.key("url"), "{e:#}");
            None
        }
    }
}
