//! Approval policies: a run and a config change each get a decision.

use super::options::Options;
use super::report::{describe_error, Outcome, Report};
use crate::host::{CallError, Plugin, PluginHost};
use backflow_plugin_sdk::{ApprovalRequest, RequestKind, Role, SyncImpact};

/// Runs the approval-policy checks: four requests each get a decision, and a malformed
/// config is an error value.
pub(super) async fn check_policy(
    report: &mut Report,
    host: &PluginHost,
    plugin: &Plugin,
    options: &Options,
) {
    let impact = |removed: u64| SyncImpact {
        sync_name: "conformance".into(),
        destination: "crm".into(),
        mode: "mirror".into(),
        added: 10,
        changed: 5,
        removed,
        column_labels: vec!["pii".into()],
    };
    let requests = [
        ("a small run", RequestKind::Run, vec![impact(0)]),
        ("a large run", RequestKind::Run, vec![impact(1_000_000)]),
        (
            "a config change",
            RequestKind::ConfigChange,
            vec![impact(3)],
        ),
        ("a run of no sync", RequestKind::Run, vec![]),
    ];
    for (what, kind, syncs) in requests {
        let request = ApprovalRequest {
            kind,
            author: "conformance".into(),
            author_role: Role::Contributor,
            description: format!("{what} (conformance suite)"),
            syncs,
        };
        let result =
            crate::host::evaluate_policy(host, plugin, options.limits, &options.config, &request)
                .await;
        report.record_call(format!("evaluate {what}"), &result, |d| format!("{d:?}"));
    }
    let request = ApprovalRequest {
        kind: RequestKind::Run,
        author: "conformance".into(),
        author_role: Role::Viewer,
        description: String::new(),
        syncs: vec![impact(1)],
    };
    match crate::host::evaluate_policy(host, plugin, options.limits, "{not json", &request).await {
        Ok(d) => report.record(
            "evaluate with malformed config",
            Outcome::Warn,
            format!("decided {d:?} with the config text `{{not json`"),
        ),
        Err(CallError::Plugin(e)) => report.record(
            "evaluate with malformed config",
            Outcome::Pass,
            e.to_string(),
        ),
        Err(e) => report.record(
            "evaluate with malformed config",
            Outcome::Fail,
            describe_error(&e),
        ),
    }
}
