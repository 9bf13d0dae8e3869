//! Quality checks: every change kind with 0, 1 and many rows, then a verdict.

use super::options::Options;
use super::report::{describe_error, Outcome, Report};
use super::samples::{SampleRows, MANY_ROWS};
use crate::host::{CallError, CheckInstance, Plugin, PluginHost};
use backflow_plugin_sdk::{ChangeKind, PlanSummary};

/// Runs the quality-check checks: malformed config, every change kind with 0, 1 and many
/// rows (a trap ends them), then `finish` with a verdict.
pub(super) async fn check_quality_check(
    report: &mut Report,
    host: &PluginHost,
    plugin: &Plugin,
    options: &Options,
) {
    let samples = options.rows.clone().unwrap_or_else(SampleRows::builtin);
    let columns = samples.columns.clone();
    let plan = PlanSummary {
        sync_name: "conformance".into(),
        purpose: backflow_plugin_sdk::PlanPurpose::Run,
        columns: columns.clone(),
        snapshot_rows: u64::from(MANY_ROWS) * 2,
        model_rows: Some(u64::from(MANY_ROWS) * 3),
        added: u64::from(MANY_ROWS) + 1,
        changed: u64::from(MANY_ROWS) + 1,
        removed: u64::from(MANY_ROWS) + 1,
    };
    let malformed = CheckInstance::open(
        host,
        plugin,
        &options.grants,
        options.limits,
        "{not json",
        &plan,
    )
    .await;
    report.record_malformed_open(
        &malformed,
        "opened a checker with the config text `{not json`",
    );
    if let Ok(instance) = malformed {
        let _ = instance.finish().await;
    }
    let mut checker = match CheckInstance::open(
        host,
        plugin,
        &options.grants,
        options.limits,
        &options.config,
        &plan,
    )
    .await
    {
        Ok(c) => {
            report.record("open", Outcome::Pass, "");
            c
        }
        Err(e) => {
            report.record("open", Outcome::Fail, describe_error(&e));
            return;
        }
    };
    for kind in [
        ChangeKind::Added,
        ChangeKind::Changed,
        ChangeKind::Removed,
        ChangeKind::Unchanged,
    ] {
        // Removed rows carry only the primary key.
        let width = if kind == ChangeKind::Removed {
            1
        } else {
            columns.len()
        };
        for rows in [0, 1, samples.many()] {
            let after = samples.batch(width, rows, 0);
            let before = (kind == ChangeKind::Changed).then(|| samples.batch(width, rows, 1));
            let result = checker.observe(kind, after, before).await;
            let trapped = matches!(result, Err(CallError::Trap(_)));
            report.record_call(
                format!("observe {} × {rows} rows", kind.as_str()),
                &result,
                |_| String::new(),
            );
            if trapped {
                return;
            }
        }
    }
    let result = checker.finish().await;
    report.record_call("finish gives a verdict", &result, |r| {
        format!("{}: {}", r.verdict.as_str(), r.message)
    });
}
