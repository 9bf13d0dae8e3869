//! The conformance suite: whether one plugin file keeps the contract, whatever language it
//! was written in. `backflow plugin conformance FILE` runs it; the templates' tests and CI
//! run it on the Rust, JavaScript and Python plugins alike.
//!
//! It drives the plugin through the same host code a sync uses (`host::instance`), so what
//! passes here behaves the same in a run. Checks, per kind:
//!
//! - every plugin: it loads (a hosted contract version, a spec with a name, a version and a
//!   config schema that is JSON); `check-config` answers malformed JSON with errors, not a
//!   trap; the given config passes `check-config`; removing a field the schema requires gives
//!   an error naming that field; opening with a malformed config is an error value, not a
//!   trap;
//! - destinations: batches of 0, 1 and many rows with a column of every value type (edge
//!   values included) for every operation it declares, one outcome per row; `finish`; with
//!   `--offline-config` (a config whose remote cannot be reached), a retryable error rather
//!   than a fatal one or a trap;
//! - quality checks: every change kind with 0, 1 and many rows (and `before` rows for
//!   changes), then `finish` with a verdict;
//! - sources: reading the query to the end with small and large `max-rows`, every batch
//!   within the limit and in the declared columns;
//! - approval policies: a run and a config change each get a decision.

use crate::domain::{Grants, Limits};
use crate::host::{
    CallError, CheckInstance, DestinationInstance, Plugin, PluginHost, SourceInstance,
};
use backflow_plugin_sdk::{
    ApprovalRequest, Batch, BatchBuilder, ChangeKind, Column, Operation, PlanSummary, PluginKind,
    RequestKind, Role, RowOutcome, SyncContext, SyncImpact, Value, ValueType,
};
use std::path::Path;

/// What the suite needs besides the plugin file.
#[derive(Debug, Clone)]
pub struct Options {
    /// A working config (JSON text): the plugin's remote, if it has one, must be reachable.
    pub config: String,
    /// Sources: the query to read.
    pub query: String,
    /// Destinations: a config whose remote cannot be reached, to check that failure is
    /// reported as retryable.
    pub offline_config: Option<String>,
    pub grants: Grants,
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    /// Allowed by the contract but likely a mistake (a plugin that accepts malformed config).
    Warn,
    Fail,
    /// Not applicable with the options given.
    Skip,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "ok",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub file: String,
    pub plugin: Option<String>,
    pub kind: Option<PluginKind>,
    pub contract: Option<String>,
    pub row_encoding: Option<String>,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(|c| c.outcome == Outcome::Fail)
    }

    fn record(&mut self, name: impl Into<String>, outcome: Outcome, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            outcome,
            detail: detail.into(),
        });
    }

    /// Records a call's result: its error is a failure, a trap says so.
    fn record_call<T>(
        &mut self,
        name: impl Into<String>,
        result: &Result<T, CallError>,
        ok_detail: impl FnOnce(&T) -> String,
    ) {
        match result {
            Ok(v) => self.record(name, Outcome::Pass, ok_detail(v)),
            Err(e) => self.record(name, Outcome::Fail, describe_error(e)),
        }
    }
}

fn describe_error(e: &CallError) -> String {
    match e {
        CallError::Trap(m) => format!("trapped (a plugin must return errors as values): {m}"),
        CallError::Plugin(p) => format!("returned an error: {p}"),
        CallError::Host(m) => format!("host error: {m}"),
    }
}

/// Rows of the "many rows" batches: more than one page of anything, fewer than any
/// reasonable batch limit.
const MANY_ROWS: u32 = 300;

/// Sources: how far each pass reads at most.
const SOURCE_BATCH_BUDGET: u64 = 5_000;
const SOURCE_ROW_BUDGET: u64 = 1_000_000;

/// Runs the suite on `file`. Never fails itself: what goes wrong is a failed check.
pub async fn run(host: &PluginHost, file: &Path, options: &Options) -> Report {
    let mut report = Report {
        file: file.display().to_string(),
        ..Report::default()
    };
    let plugin = match host.load(file).await {
        Ok(p) => p,
        Err(e) => {
            report.record("loads", Outcome::Fail, format!("{e:#}"));
            return report;
        }
    };
    report.plugin = Some(plugin.spec.name.clone());
    report.kind = Some(plugin.spec.kind);
    report.contract = Some(plugin.contract.to_string());
    report.row_encoding = Some(plugin.row_encoding.as_str().to_string());
    check_spec(&mut report, &plugin);
    check_config(&mut report, host, &plugin, options).await;
    match plugin.spec.kind {
        PluginKind::Destination => check_destination(&mut report, host, &plugin, options).await,
        PluginKind::QualityCheck => check_quality_check(&mut report, host, &plugin, options).await,
        PluginKind::Source => check_source(&mut report, host, &plugin, options).await,
        PluginKind::ApprovalPolicy => check_policy(&mut report, host, &plugin, options).await,
    }
    report
}

fn check_spec(report: &mut Report, plugin: &Plugin) {
    let spec = &plugin.spec;
    let mut problems = Vec::new();
    if spec.name.trim().is_empty() {
        problems.push("the name is empty".to_string());
    }
    if spec.version.split('.').count() < 3
        || !spec
            .version
            .split('.')
            .take(3)
            .all(|p| p.chars().next().is_some_and(|c| c.is_ascii_digit()))
    {
        problems.push(format!(
            "the version {:?} is not semver (MAJOR.MINOR.PATCH)",
            spec.version
        ));
    }
    match serde_json::from_str::<serde_json::Value>(&spec.config_schema) {
        Ok(serde_json::Value::Object(_)) => {}
        Ok(_) => problems.push("the config schema is not a JSON object".into()),
        Err(e) => problems.push(format!("the config schema is not JSON: {e}")),
    }
    if spec.kind == PluginKind::Destination && spec.operations.is_empty() {
        problems.push("a destination must declare at least one operation".into());
    }
    if problems.is_empty() {
        report.record(
            "spec",
            Outcome::Pass,
            format!(
                "{} {} ({}, contract {}, {} rows)",
                spec.name,
                spec.version,
                spec.kind.as_str(),
                plugin.contract,
                plugin.row_encoding.as_str()
            ),
        );
    } else {
        report.record("spec", Outcome::Fail, problems.join("; "));
    }
}

async fn check_config(report: &mut Report, host: &PluginHost, plugin: &Plugin, options: &Options) {
    match host.check_config(plugin, "{not json", options.limits).await {
        Ok(errors) if errors.is_empty() => report.record(
            "check-config refuses malformed JSON",
            Outcome::Fail,
            "no error for the config text `{not json`",
        ),
        Ok(errors) => report.record(
            "check-config refuses malformed JSON",
            Outcome::Pass,
            errors[0].message.clone(),
        ),
        Err(e) => report.record(
            "check-config refuses malformed JSON",
            Outcome::Fail,
            describe_error(&e),
        ),
    }
    match host
        .check_config(plugin, &options.config, options.limits)
        .await
    {
        Ok(errors) if errors.is_empty() => {
            report.record("check-config accepts the given config", Outcome::Pass, "")
        }
        Ok(errors) => report.record(
            "check-config accepts the given config",
            Outcome::Fail,
            errors
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        if e.field.is_empty() {
                            "(config)"
                        } else {
                            &e.field
                        },
                        e.message
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Err(e) => report.record(
            "check-config accepts the given config",
            Outcome::Fail,
            describe_error(&e),
        ),
    }
    // A field the schema requires, taken out of the working config, must be named.
    let schema: serde_json::Value =
        serde_json::from_str(&plugin.spec.config_schema).unwrap_or_default();
    let config: serde_json::Value = serde_json::from_str(&options.config).unwrap_or_default();
    let required = schema
        .get("required")
        .and_then(|r| r.as_array())
        .and_then(|r| {
            r.iter()
                .filter_map(|f| f.as_str())
                .find(|f| config.get(*f).is_some())
        });
    match (required, config) {
        (Some(field), serde_json::Value::Object(mut object)) => {
            object.remove(field);
            let without = serde_json::Value::Object(object).to_string();
            let name = format!("check-config names a missing required field ({field})");
            match host.check_config(plugin, &without, options.limits).await {
                Ok(errors)
                    if errors
                        .iter()
                        .any(|e| e.field == field || e.field.starts_with(&format!("{field}."))) =>
                {
                    report.record(name, Outcome::Pass, "")
                }
                Ok(errors) if errors.is_empty() => report.record(
                    name,
                    Outcome::Fail,
                    format!("no error for a config without {field:?}"),
                ),
                Ok(errors) => report.record(
                    name,
                    Outcome::Fail,
                    format!(
                        "the errors do not name {field:?}: {}",
                        errors
                            .iter()
                            .map(|e| format!("{:?}: {}", e.field, e.message))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                ),
                Err(e) => report.record(name, Outcome::Fail, describe_error(&e)),
            }
        }
        _ => report.record(
            "check-config names a missing required field",
            Outcome::Skip,
            "the schema requires no field the given config has",
        ),
    }
}

/// One column per value type, all nullable, after an integer `id`.
pub fn sample_columns() -> Vec<Column> {
    let mut columns = vec![Column {
        name: "id".into(),
        value_type: ValueType::Integer,
        nullable: false,
    }];
    for t in [
        ValueType::Boolean,
        ValueType::Integer,
        ValueType::Float,
        ValueType::Decimal,
        ValueType::Text,
        ValueType::Bytes,
        ValueType::Timestamp,
        ValueType::Date,
        ValueType::Json,
        ValueType::Any,
    ] {
        columns.push(Column {
            name: format!("{}_value", t.as_str()),
            value_type: t,
            nullable: true,
        });
    }
    columns
}

/// Row `i` of the sample: edge values in turn (extremes, negative, empty, non-ASCII,
/// before 1970), and nulls in every seventh row. Floats stay finite: JSON has no NaN, so a
/// destination speaking JSON could not pass one on.
pub fn sample_row(i: u32) -> Vec<Value> {
    let k = i as usize;
    let pick = |n: usize| k % n;
    if i % 7 == 6 {
        let mut row = vec![Value::Int(i64::from(i))];
        row.extend(std::iter::repeat_n(Value::Null, sample_columns().len() - 1));
        return row;
    }
    let any = [
        Value::Int(42),
        Value::Text("any".into()),
        Value::Decimal("0.10".into()),
        Value::Timestamp(-1),
        Value::Bool(true),
        Value::Json("{\"nested\":[1,2]}".into()),
    ];
    vec![
        Value::Int(i64::from(i)),
        Value::Bool(i % 2 == 0),
        Value::Int([0, -1, i64::MAX, i64::MIN, 9_007_199_254_740_993][pick(5)]),
        Value::Float([1.5, -0.25, 1e300, 0.0][pick(4)]),
        Value::Decimal(["12345678901234567890.123456789", "-0.01", "0"][pick(3)].into()),
        Value::Text(["", "plain", "quote \" backslash \\ newline \n", "é 中文 🙂"][pick(4)].into()),
        Value::Bytes([vec![], vec![0, 255, 10], b"bytes".to_vec()][pick(3)].clone()),
        Value::Timestamp([0, 1_700_000_000_123_456, -86_400_000_001][pick(3)]),
        Value::Date([0, 19_723, -1][pick(3)]),
        Value::Json(["{\"a\":1}", "[true,null]", "\"text\""][pick(3)].into()),
        any[pick(any.len())].clone(),
    ]
}

fn sample_batch(columns: &[Column], rows: u32, first: u32) -> Batch {
    let width = columns.len();
    let mut builder = BatchBuilder::new(columns.to_vec());
    for i in first..first + rows {
        let row = sample_row(i);
        builder.push_row(&row[..width]);
    }
    builder.finish()
}

async fn check_destination(
    report: &mut Report,
    host: &PluginHost,
    plugin: &Plugin,
    options: &Options,
) {
    let context = SyncContext {
        sync_name: "conformance".into(),
        primary_key: vec!["id".into()],
        run_id: "conformance-run".into(),
    };
    match DestinationInstance::open(
        host,
        plugin,
        &options.grants,
        options.limits,
        "{not json",
        &context,
    )
    .await
    {
        Ok(w) => {
            let _ = w.finish().await;
            report.record(
                "open refuses malformed config",
                Outcome::Warn,
                "opened a writer with the config text `{not json`",
            )
        }
        Err(CallError::Plugin(e)) => report.record(
            "open refuses malformed config",
            Outcome::Pass,
            e.to_string(),
        ),
        Err(e) => report.record(
            "open refuses malformed config",
            Outcome::Fail,
            describe_error(&e),
        ),
    }
    let mut writer = match DestinationInstance::open(
        host,
        plugin,
        &options.grants,
        options.limits,
        &options.config,
        &context,
    )
    .await
    {
        Ok(w) => {
            report.record("open", Outcome::Pass, "");
            w
        }
        Err(e) => {
            report.record("open", Outcome::Fail, describe_error(&e));
            return;
        }
    };
    let all = sample_columns();
    let many = match plugin.spec.max_batch_size {
        0 => MANY_ROWS,
        max => max.min(MANY_ROWS),
    };
    for &op in &plugin.spec.operations {
        // Deletes carry only the primary key, as in a run. Updates and deletes name the rows
        // the inserts wrote (ids 0 to `many`).
        let columns = if op == Operation::Delete {
            &all[..1]
        } else {
            &all[..]
        };
        for rows in [0, 1, many] {
            let batch = sample_batch(columns, rows, 0);
            let name = format!("write {} × {rows} rows", op.as_str());
            let result = writer.write(op, batch).await;
            match &result {
                Ok(outcomes) => {
                    // Refusing a row is the destination's right (a CRM may refuse the sample's
                    // made-up fields), so it is worth a look, not a failure.
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
                Err(e) => report.record(name, Outcome::Fail, describe_error(e)),
            }
            if matches!(result, Err(CallError::Trap(_))) {
                return;
            }
        }
    }
    let finished = writer.finish().await;
    report.record_call("finish", &finished, |_| String::new());

    let Some(offline) = &options.offline_config else {
        report.record(
            "an unreachable remote is retryable",
            Outcome::Skip,
            "no --offline-config given",
        );
        return;
    };
    let name = "an unreachable remote is retryable";
    let mut writer = match DestinationInstance::open(
        host,
        plugin,
        &options.grants,
        options.limits,
        offline,
        &context,
    )
    .await
    {
        Ok(w) => w,
        Err(e) if e.is_retryable() => {
            report.record(name, Outcome::Pass, format!("open: {e}"));
            return;
        }
        Err(e) => {
            report.record(name, Outcome::Fail, format!("open: {}", describe_error(&e)));
            return;
        }
    };
    let Some(&op) = plugin.spec.operations.first() else {
        report.record(name, Outcome::Skip, "the destination declares no operation");
        return;
    };
    let columns = if op == Operation::Delete {
        &all[..1]
    } else {
        &all[..]
    };
    match writer.write(op, sample_batch(columns, 3, 0)).await {
        Err(e) if e.is_retryable() => report.record(name, Outcome::Pass, e.to_string()),
        Ok(outcomes)
            if outcomes
                .iter()
                .all(|o| matches!(o, RowOutcome::Retryable(_))) =>
        {
            report.record(name, Outcome::Pass, "every row retryable")
        }
        Ok(outcomes) => report.record(
            name,
            Outcome::Fail,
            format!("the write to an unreachable remote answered {outcomes:?}"),
        ),
        Err(e) => report.record(
            name,
            Outcome::Fail,
            format!("{} (expected a retryable error)", describe_error(&e)),
        ),
    }
    let _ = writer.finish().await;
}

async fn check_quality_check(
    report: &mut Report,
    host: &PluginHost,
    plugin: &Plugin,
    options: &Options,
) {
    let columns = sample_columns();
    let plan = PlanSummary {
        sync_name: "conformance".into(),
        columns: columns.clone(),
        snapshot_rows: u64::from(MANY_ROWS) * 2,
        model_rows: u64::from(MANY_ROWS) * 3,
        added: u64::from(MANY_ROWS) + 1,
        changed: u64::from(MANY_ROWS) + 1,
        removed: u64::from(MANY_ROWS) + 1,
    };
    match CheckInstance::open(
        host,
        plugin,
        &options.grants,
        options.limits,
        "{not json",
        &plan,
    )
    .await
    {
        Ok(c) => {
            let _ = c.finish().await;
            report.record(
                "open refuses malformed config",
                Outcome::Warn,
                "opened a checker with the config text `{not json`",
            )
        }
        Err(CallError::Plugin(e)) => report.record(
            "open refuses malformed config",
            Outcome::Pass,
            e.to_string(),
        ),
        Err(e) => report.record(
            "open refuses malformed config",
            Outcome::Fail,
            describe_error(&e),
        ),
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
        let cols = if kind == ChangeKind::Removed {
            &columns[..1]
        } else {
            &columns[..]
        };
        for rows in [0, 1, MANY_ROWS] {
            let after = sample_batch(cols, rows, 0);
            let before = (kind == ChangeKind::Changed).then(|| sample_batch(cols, rows, 1));
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

async fn check_source(report: &mut Report, host: &PluginHost, plugin: &Plugin, options: &Options) {
    match SourceInstance::open(
        host,
        plugin,
        &options.grants,
        options.limits,
        "{not json",
        &options.query,
    )
    .await
    {
        Ok(r) => {
            r.close().await;
            report.record(
                "open refuses malformed config",
                Outcome::Warn,
                "opened a reader with the config text `{not json`",
            )
        }
        Err(CallError::Plugin(e)) => report.record(
            "open refuses malformed config",
            Outcome::Pass,
            e.to_string(),
        ),
        Err(e) => report.record(
            "open refuses malformed config",
            Outcome::Fail,
            describe_error(&e),
        ),
    }
    let mut counts = Vec::new();
    for max_rows in [1u32, 1000] {
        let name = format!("read to the end, max-rows {max_rows}");
        let mut reader = match SourceInstance::open(
            host,
            plugin,
            &options.grants,
            options.limits,
            &options.config,
            &options.query,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                report.record(name, Outcome::Fail, format!("open: {}", describe_error(&e)));
                return;
            }
        };
        let columns = reader.columns().to_vec();
        let (mut rows, mut batches, mut empty_in_a_row) = (0u64, 0u64, 0u32);
        let mut stopped_early = false;
        let problem = loop {
            // Enough to see the source keep the contract; a large model need not be read
            // to its end (then both passes stop at the same row count).
            if batches >= SOURCE_BATCH_BUDGET || rows >= SOURCE_ROW_BUDGET {
                stopped_early = true;
                break None;
            }
            match reader.next_batch(max_rows).await {
                Ok(None) => break None,
                Ok(Some(batch)) => {
                    batches += 1;
                    rows += u64::from(batch.row_count);
                    empty_in_a_row = if batch.row_count == 0 {
                        empty_in_a_row + 1
                    } else {
                        0
                    };
                    if empty_in_a_row >= 1000 {
                        break Some(format!("{empty_in_a_row} empty batches in a row without an end (return none when the model is exhausted)"));
                    }
                    if batch.row_count > max_rows {
                        break Some(format!(
                            "batch {batches} holds {} rows, more than max-rows {max_rows}",
                            batch.row_count
                        ));
                    }
                    if batch.columns != columns {
                        break Some(format!(
                            "batch {batches} has other columns than `columns()` declared"
                        ));
                    }
                    if let Err(e) = batch.decode() {
                        break Some(format!("batch {batches} does not decode: {e}"));
                    }
                }
                Err(e) => break Some(describe_error(&e)),
            }
        };
        reader.close().await;
        match problem {
            None => {
                let note = if stopped_early {
                    " (stopped there: enough to judge)"
                } else {
                    ""
                };
                report.record(
                    name,
                    Outcome::Pass,
                    format!(
                        "{rows} rows in {batches} batches, {} columns{note}",
                        columns.len()
                    ),
                );
                counts.push(if stopped_early { None } else { Some(rows) });
            }
            Some(p) => {
                report.record(name, Outcome::Fail, p);
                return;
            }
        }
    }
    if let [Some(small), Some(large)] = counts[..] {
        if small != large {
            report.record(
                "the same rows whatever the batch size",
                Outcome::Fail,
                format!("{small} rows with max-rows 1, {large} with 1000"),
            );
        }
    }
}

async fn check_policy(report: &mut Report, host: &PluginHost, plugin: &Plugin, options: &Options) {
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
