//! Alerts: run outcomes posted to Slack-compatible webhooks (`[[alerts]]`), routed by sync
//! or destination so each destination's owner hears about their destination.
//!
//! An alert never changes a run: a webhook that fails or hangs is logged (naming its host,
//! never its URL, which is a credential) and the run's record stays as it is.

use crate::domain::{RunRecord, RunStatus};
use crate::workspace::{Alert, AlertOutcome, Workspace};
use std::time::Duration;

/// How long one webhook may take.
const ALERT_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome a run reports to `alert`, if any.
pub fn outcome_for(alert: &Alert, ws: &Workspace, run: &RunRecord) -> Option<AlertOutcome> {
    if run.draft {
        return None;
    }
    let outcome = match run.status {
        RunStatus::Failed => AlertOutcome::Failed,
        RunStatus::Partial if run.failed.total() >= alert.partial_min_rejected => {
            AlertOutcome::Partial
        }
        RunStatus::Blocked => AlertOutcome::Blocked,
        RunStatus::AwaitingApproval => AlertOutcome::AwaitingApproval,
        _ => return None,
    };
    if !alert.on.contains(&outcome) {
        return None;
    }
    if !alert.syncs.is_empty() && !alert.syncs.contains(&run.sync) {
        return None;
    }
    let destination = ws
        .syncs
        .get(&run.sync)
        .map(|s| s.destination.as_str())
        .unwrap_or("");
    if !alert.destinations.is_empty() && !alert.destinations.iter().any(|d| d == destination) {
        return None;
    }
    Some(outcome)
}

/// The message: what happened, to which sync and destination, and what to do.
pub fn message(ws: &Workspace, run: &RunRecord, outcome: AlertOutcome) -> serde_json::Value {
    let destination = ws
        .syncs
        .get(&run.sync)
        .map(|s| s.destination.clone())
        .unwrap_or_default();
    let what = match outcome {
        AlertOutcome::Failed => format!(
            "failed: {}",
            run.error.as_deref().unwrap_or("no error recorded")
        ),
        AlertOutcome::Partial => format!(
            "delivered {} rows; the destination rejected {}",
            run.delivered.total(),
            run.failed.total()
        ),
        AlertOutcome::Blocked => format!(
            "was blocked by a quality check: {}",
            run.error.as_deref().unwrap_or("")
        ),
        AlertOutcome::AwaitingApproval => format!(
            "awaits approval (`backflow runs approve {}`): {}",
            run.run_id,
            run.error.as_deref().unwrap_or("")
        ),
    };
    let text = format!(
        "backflow: sync {} → {destination}, run {} {what}",
        run.sync, run.run_id
    );
    serde_json::json!({
        "text": text,
        "sync": run.sync,
        "destination": destination,
        "run_id": run.run_id,
        "status": run.status.as_str(),
        "outcome": outcome.as_str(),
        "trigger": run.trigger,
        "user": run.user,
    })
}

/// Posts the run's outcome to every matching route; waits for them (bounded), never fails.
pub async fn dispatch(http: &reqwest::Client, ws: &Workspace, run: &RunRecord) {
    let sends = ws.alerts.iter().filter_map(|alert| {
        let outcome = outcome_for(alert, ws, run)?;
        let body = message(ws, run, outcome);
        Some(async move { post(http, alert, &body).await })
    });
    futures::future::join_all(sends).await;
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
