//! Approval notifications: a Slack-compatible message to the configured webhook when a
//! change request or a run waits for approval.

use crate::host::PluginHost;
use crate::workspace::Governance;

/// Posts a Slack-compatible message (`{"text": ...}`) to the configured webhook. Failures are
/// logged, never fatal: the request is recorded either way.
pub async fn notify(host: &PluginHost, governance: &Governance, text: &str) {
    let Some(template) = &governance.notify_url else {
        return;
    };
    // The URL is a secret (a Slack webhook URL is its own credential): logs name its host only.
    let url = match backflow_plugin_sdk::expand_secrets(template, "notification") {
        Ok(url) => url,
        Err(e) => {
            return tracing::warn!("approval notification not sent: approvals.notify_url: {e}")
        }
    };
    let host_name = reqwest::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let body = serde_json::json!({ "text": text, "blocks": [ { "type": "section", "text": { "type": "mrkdwn", "text": text } } ] });
    match host
        .http()
        .post(&url)
        .timeout(std::time::Duration::from_secs(10))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {
            tracing::info!(host = host_name, "approval notification sent")
        }
        Ok(r) => tracing::warn!(
            host = host_name,
            status = r.status().as_u16(),
            "approval notification refused"
        ),
        // reqwest's error text quotes the URL.
        Err(e) => tracing::warn!(
            host = host_name,
            "approval notification failed: {}",
            crate::redact::redact(std::slice::from_ref(&url), &e.to_string())
        ),
    }
}
