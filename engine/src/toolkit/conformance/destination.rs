//! Destinations: batches of 0, 1 and many rows for every operation, `finish`, and an
//! unreachable remote reported as retryable.

use super::options::Options;
use super::report::{describe_error, Outcome, Report};
use super::samples::SampleRows;
use crate::host::{CallError, DestinationInstance, Plugin, PluginHost};
use backflow_plugin_sdk::{Operation, RowOutcome, SyncContext};

/// The check of an unreachable remote (`--offline-config`).
const OFFLINE: &str = "an unreachable remote is retryable";

/// Runs the destination checks: malformed config, the writes, `finish`, then the offline
/// remote. A trap ends them (the instance is gone).
pub(super) async fn check_destination(
    report: &mut Report,
    host: &PluginHost,
    plugin: &Plugin,
    options: &Options,
) {
    let samples = options.rows.clone().unwrap_or_else(SampleRows::builtin);
    let context = SyncContext {
        sync_name: "conformance".into(),
        primary_key: vec![samples.key()],
        run_id: "conformance-run".into(),
    };
    let malformed = open(host, plugin, options, "{not json", &context).await;
    report.record_malformed_open(
        &malformed,
        "opened a writer with the config text `{not json`",
    );
    if let Ok(w) = malformed {
        let _ = w.finish().await;
    }
    let mut writer = match open(host, plugin, options, &options.config, &context).await {
        Ok(w) => {
            report.record("open", Outcome::Pass, "");
            w
        }
        Err(e) => {
            report.record("open", Outcome::Fail, describe_error(&e));
            return;
        }
    };
    if write_every_operation(report, &mut writer, plugin, &samples)
        .await
        .is_err()
    {
        return;
    }
    let finished = writer.finish().await;
    report.record_call("finish", &finished, |_| String::new());
    check_offline(report, host, plugin, options, &context, &samples).await;
    super::faults::check_faults(report, host, plugin, options, &context, &samples).await;
}

/// Opens a writer with `config`, with the options' grants and limits.
async fn open(
    host: &PluginHost,
    plugin: &Plugin,
    options: &Options,
    config: &str,
    context: &SyncContext,
) -> Result<DestinationInstance, CallError> {
    DestinationInstance::open(
        host,
        plugin,
        &options.grants,
        options.limits,
        config,
        context,
    )
    .await
}

/// The plugin trapped: its instance cannot be used any more.
struct Trapped;

/// How many columns a write of `op` sends: deletes carry only the primary key, as in a run.
fn width_for(op: Operation, samples: &SampleRows) -> usize {
    if op == Operation::Delete {
        1
    } else {
        samples.columns.len()
    }
}

/// Writes 0, 1 and many sample rows with every operation the destination declares. Stops
/// at a trap.
async fn write_every_operation(
    report: &mut Report,
    writer: &mut DestinationInstance,
    plugin: &Plugin,
    samples: &SampleRows,
) -> Result<(), Trapped> {
    let many = match plugin.spec.max_batch_size {
        0 => samples.many(),
        max => max.min(samples.many()),
    };
    for &op in &plugin.spec.operations {
        // Updates and deletes name the rows the inserts wrote (the first `many` rows).
        let width = width_for(op, samples);
        for rows in [0, 1, many] {
            let batch = samples.batch(width, rows, 0);
            let name = format!("write {} × {rows} rows", op.as_str());
            let result = writer.write(op, batch).await;
            match &result {
                Ok(outcomes) => record_outcomes(report, name, rows, outcomes),
                Err(e) => report.record(name, Outcome::Fail, describe_error(e)),
            }
            if matches!(result, Err(CallError::Trap(_))) {
                return Err(Trapped);
            }
        }
    }
    Ok(())
}

/// A write's outcomes: every row accepted passes. Refusing a row is the destination's right
/// (a CRM may refuse the sample's made-up fields), so it is worth a look, not a failure.
fn record_outcomes(report: &mut Report, name: String, rows: u32, outcomes: &[RowOutcome]) {
    let refused: Vec<&RowOutcome> = outcomes
        .iter()
        .filter(|o| !matches!(o, RowOutcome::Accepted))
        .collect();
    if refused.is_empty() {
        report.record(name, Outcome::Pass, format!("{} accepted", outcomes.len()));
    } else {
        report.record(
            name,
            Outcome::Warn,
            format!(
                "{} of {rows} rows not accepted, first: {:?}",
                refused.len(),
                refused[0]
            ),
        );
    }
}

/// With `--offline-config`: opening or writing to a remote that cannot be reached must fail
/// as retryable (so a run retries it), not as fatal nor as a trap.
async fn check_offline(
    report: &mut Report,
    host: &PluginHost,
    plugin: &Plugin,
    options: &Options,
    context: &SyncContext,
    samples: &SampleRows,
) {
    let Some(offline) = &options.offline_config else {
        report.record(OFFLINE, Outcome::Skip, "no --offline-config given");
        return;
    };
    let mut writer = match open(host, plugin, options, offline, context).await {
        Ok(w) => w,
        Err(e) if e.is_retryable() => {
            report.record(OFFLINE, Outcome::Pass, format!("open: {e}"));
            return;
        }
        Err(e) => {
            report.record(
                OFFLINE,
                Outcome::Fail,
                format!("open: {}", describe_error(&e)),
            );
            return;
        }
    };
    let Some(&op) = plugin.spec.operations.first() else {
        report.record(
            OFFLINE,
            Outcome::Skip,
            "the destination declares no operation",
        );
        return;
    };
    match writer
        .write(op, samples.batch(width_for(op, samples), 3, 0))
        .await
    {
        Err(e) if e.is_retryable() => report.record(OFFLINE, Outcome::Pass, e.to_string()),
        Ok(outcomes)
            if outcomes
                .iter()
                .all(|o| matches!(o, RowOutcome::Retryable(_))) =>
        {
            report.record(OFFLINE, Outcome::Pass, "every row retryable")
        }
        Ok(outcomes) => report.record(
            OFFLINE,
            Outcome::Fail,
            format!("the write to an unreachable remote answered {outcomes:?}"),
        ),
        Err(e) => report.record(
            OFFLINE,
            Outcome::Fail,
            format!("{} (expected a retryable error)", describe_error(&e)),
        ),
    }
    let _ = writer.finish().await;
}
