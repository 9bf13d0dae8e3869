//! Runs that deliver nothing to state: `sync plan` (what a run would send now) and
//! `sync test` (one row sent, nothing recorded).

use super::checks::{run_checks, run_checks_for};
use super::deliver::with_event_id;
use super::deliver::writer::Writer;
use super::plan::undo::{check_undo_operations, UndoTarget};
use super::plan::{build_plan, key_text, row_json, PlanOptions};
use super::prepare::{open_error, prepare, primary_key_fields, PrepareError, PreparedSync};
use super::read::{read_model, spawn_reader, MissingColumn, Projection};
use super::run::Abort;
use crate::domain::{operation_for, Change, CheckReport, DiffCounts, OpCounts};
use crate::host::{DestinationInstance, SourceInstance};
use crate::state::StateStore;
use crate::workspace::{SyncMode, Workspace};
use backflow_plugin_sdk::{BatchBuilder, Column, Operation, RowOutcome, SyncContext};

/// Why a dry run (`sync plan`, `sync test`, an undo's preview) could not report.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    /// The sync's config or plugins are not usable.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// Planning stopped, as a run would have (source, model, state, undo problems).
    #[error(transparent)]
    Plan(#[from] Abort),
    /// A plugin could not open; names the file and key to fix.
    #[error("{0}")]
    Open(String),
    /// The model lacks a column the sync needs.
    #[error(transparent)]
    Projection(#[from] MissingColumn),
    /// A temporary file could not be used; `what` says which and what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Spilling or sorting the model's rows failed.
    #[error(transparent)]
    Spill(std::io::Error),
    /// `sync test`: the model has no row with that key.
    #[error("model {model} has no row with {key_columns} = {key}")]
    NoSuchRow {
        /// The model's name.
        model: String,
        /// The primary key columns, joined with `|`.
        key_columns: String,
        /// The key asked for.
        key: String,
    },
}

impl DryRunError {
    fn reading_plan(source: std::io::Error) -> DryRunError {
        DryRunError::Io {
            what: "reading the plan".into(),
            source,
        }
    }
}

/// A dry run's result: what a run would do now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanReport {
    /// The planned sync's name.
    pub sync: String,
    /// The sync's mode, which decides what each change is sent as (see `operations`).
    pub mode: SyncMode,
    /// Whether this is the plan of a `--full-resync` run (every model row re-sent).
    pub full_resync: bool,
    /// Rows the model returned through the source.
    pub model_rows: u64,
    /// Rows in the sync's snapshot (what was last delivered), or 0 when the snapshot is
    /// ignored because the primary key or destination changed since the last delivery.
    pub snapshot_rows: u64,
    /// The diff of the model against the snapshot: rows added, changed, removed, unchanged.
    pub diff: DiffCounts,
    /// What the mode would send, per change.
    pub planned: OpCounts,
    /// The destination operation per change (`null` where the mode sends nothing).
    pub operations: serde_json::Value,
    /// Sample rows per change: rows for added, before/after for changed, before for removed.
    pub samples: serde_json::Value,
    /// Quality check results on this plan.
    pub checks: Vec<CheckReport>,
    /// Whether a check would block the run.
    pub blocked: bool,
}

/// Plans a sync without sending or recording anything.
pub async fn plan_sync(
    host: &crate::plugins::Registry,
    ws: &Workspace,
    state: &StateStore,
    sync_name: &str,
    options: PlanOptions,
    samples: usize,
) -> Result<PlanReport, DryRunError> {
    let p = prepare(host, ws, sync_name).await?;
    // A warehouse diff: the differ only reads (no snapshot table is created, nothing is
    // written back).
    let plan = if super::warehouse::in_warehouse(&p) {
        let mut wh = super::warehouse::open_instance(host, &p).await?;
        let plan = super::warehouse::plan::build_plan(&mut wh, ws, &p, options).await;
        wh.close().await;
        plan?
    } else {
        build_plan(host, ws, state, &p, options).await?
    };
    let mut operations = serde_json::Map::new();
    let mut sample_map = serde_json::Map::new();
    let planned = plan.planned(p.sync.mode);
    let checks = run_checks(host, &p, &plan, planned).await;
    for change in [Change::Added, Change::Changed, Change::Removed] {
        let op = operation_for(p.sync.mode, change);
        operations.insert(
            change.as_str().into(),
            op.map(|o| serde_json::Value::String(o.as_str().into()))
                .unwrap_or(serde_json::Value::Null),
        );
        sample_map.insert(
            change.as_str().into(),
            serde_json::Value::Array(
                plan.samples(change, samples, &p.sync.field_rules)
                    .map_err(DryRunError::reading_plan)?,
            ),
        );
    }
    Ok(PlanReport {
        sync: sync_name.into(),
        mode: p.sync.mode,
        full_resync: options.full_resync,
        model_rows: plan.model_rows,
        snapshot_rows: plan.snapshot_rows,
        diff: plan.diff,
        planned,
        operations: serde_json::Value::Object(operations),
        samples: serde_json::Value::Object(sample_map),
        blocked: checks.iter().any(|c| c.blocks()),
        checks,
    })
}

/// The destination's answer to one test row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestReport {
    /// The sync whose destination got the row.
    pub sync: String,
    /// The primary key asked for, as text (`1`, or `1|eu` for a composite key).
    pub key: String,
    /// The destination operation the row went as: what the sync's mode sends for an added
    /// row (insert; update in `update` mode; append in `append` mode).
    pub operation: Operation,
    /// The row as sent, as a JSON object of destination fields (with the event id field for
    /// `append`).
    pub row: serde_json::Value,
    /// `accepted`, `rejected` or `retryable`, or `error` when the call itself failed.
    pub outcome: String,
    /// The destination's reason for a rejected or retryable row, or the failure of the call;
    /// `None` when the row was accepted.
    pub message: Option<String>,
    /// Every HTTP request the destination made for the row, and its answer, in full
    /// (headers redacted, bodies cut at `[debug] max_body_bytes`): the delivery debugger's
    /// capture, `all` for a test row whatever `[debug] capture` says.
    pub requests: Vec<crate::domain::CapturedRequest>,
}

/// Sends the model row with primary key `key` (as text, `1` or `1|eu`; without one, the
/// model's first row in key order) to the destination as an added row, and reports the
/// answer with every HTTP request the destination made for it. Neither the snapshot nor run
/// history change: a test row is not a delivery the next run builds on.
pub async fn test_row(
    host: &crate::plugins::Registry,
    ws: &Workspace,
    sync_name: &str,
    key: Option<&str>,
) -> Result<TestReport, DryRunError> {
    let p = prepare(host, ws, sync_name).await?;
    let tmp_dir = ws.state_dir.join("tmp");
    std::fs::create_dir_all(&tmp_dir).map_err(|source| DryRunError::Io {
        what: format!("creating {}", tmp_dir.display()),
        source,
    })?;
    let source = SourceInstance::open(
        host,
        &p.source_plugin,
        &p.source.grants,
        p.source.limits,
        &p.source.config_json,
        &p.model.query,
    )
    .await
    .map_err(|e| DryRunError::Open(open_error(&p, &p.source, &e)))?;
    let projection = Projection::new(&p, source.columns());
    let projection = match projection {
        Ok(pr) => pr,
        Err(e) => {
            source.close().await;
            return Err(e.into());
        }
    };
    let mut spill = crate::sync::plan::spill::ModelSpill::new(
        &tmp_dir,
        crate::sync::plan::spill::DEFAULT_MEMORY_BUDGET,
    )
    .map_err(DryRunError::Spill)?;
    read_model(spawn_reader(source), &p, &projection, &mut spill).await?;
    let mut sorted = spill.into_sorted().map_err(DryRunError::Spill)?;
    let mut found = None;
    while let Some(entry) = sorted.next_entry().map_err(DryRunError::Spill)? {
        if key.is_none_or(|k| key_text(&entry.key) == k) {
            found = Some((entry.row, entry.key));
            break;
        }
    }
    let (row, encoded_key) = found.ok_or_else(|| DryRunError::NoSuchRow {
        model: p.model.name.clone(),
        key_columns: p.model.primary_key.join("|"),
        key: key.unwrap_or("(any: the model is empty)").to_string(),
    })?;
    let key = key_text(&encoded_key);
    let op = operation_for(p.sync.mode, Change::Added).unwrap_or(Operation::Insert);
    let mut columns = projection.columns.clone();
    let payload = if op == Operation::Append {
        columns.push(Column {
            name: p.sync.event_id_field.clone(),
            value_type: backflow_plugin_sdk::ValueType::Text,
            nullable: false,
        });
        with_event_id(&row, &p.sync.name, &encoded_key)
    } else {
        row.clone()
    };
    let context = SyncContext {
        sync_name: p.sync.name.clone(),
        primary_key: primary_key_fields(&p),
        run_id: "test".into(),
    };
    let (recorder, mut captured) = crate::host::RequestCapture::new(
        crate::domain::CaptureMode::All,
        ws.debug.max_body_bytes,
        "test",
        crate::host::capture::CAPTURE_QUEUE,
    );
    let mut writer = open_test_writer(host, &p, &context, recorder).await?;
    // The row as a run would send it new: the field rules leave out what they would.
    let present = crate::sync::field_rules::PayloadRules::new(
        &p.sync.field_rules,
        &projection.columns,
        &projection.key_columns,
    )
    .present(Change::Added, &row, &[]);
    let (payload, present) = match present {
        Some(present) if op != Operation::Append => (
            crate::sync::field_rules::PayloadRules::payload(&payload, &present),
            crate::sync::field_rules::present_bitmap(&[Some(&present)], columns.len()),
        ),
        _ => (payload, None),
    };
    let mut b = BatchBuilder::new(columns.clone());
    b.push_encoded_row(&payload);
    let answer = writer.write(op, b.finish(), present).await;
    let _ = writer.finish().await;
    let mut requests = Vec::new();
    while let Ok(request) = captured.try_recv() {
        requests.push(request);
    }
    let (outcome, message) = match answer {
        Ok(mut outcomes) => match outcomes.pop() {
            Some(RowOutcome::Accepted) => ("accepted", None),
            Some(RowOutcome::Rejected(m)) => ("rejected", Some(m)),
            Some(RowOutcome::Retryable(m)) => ("retryable", Some(m)),
            None => (
                "error",
                Some("the destination returned no outcome".to_string()),
            ),
        },
        Err(e) => ("error", Some(e.to_string())),
    };
    Ok(TestReport {
        sync: sync_name.into(),
        key,
        operation: op,
        row: row_json(&columns, &payload),
        outcome: outcome.into(),
        message,
        requests,
    })
}

/// The destination's writer for a test row, its requests all shown to `recorder`.
async fn open_test_writer(
    host: &crate::host::PluginHost,
    p: &PreparedSync,
    context: &SyncContext,
    recorder: std::sync::Arc<crate::host::RequestCapture>,
) -> Result<Writer, DryRunError> {
    Ok(match &p.destination_plugin {
        None => Writer::Noop,
        Some(plugin) => {
            let mut writer = DestinationInstance::open(
                host,
                plugin,
                &p.destination.grants,
                p.destination.limits,
                &p.destination.config_json,
                context,
            )
            .await
            .map_err(|e| DryRunError::Open(open_error(p, &p.destination, &e)))?;
            writer.capture_requests(recorder, context.primary_key.clone());
            Writer::Wasm(writer)
        }
    })
}

/// What `runs undo` would send: the inverse plan of a run, and what it leaves alone.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UndoReport {
    /// The sync whose run is undone.
    pub sync: String,
    /// The run to undo.
    pub run_id: String,
    /// Whether the undo was forced (`--force`): rows a later run changed are overwritten
    /// too instead of being left alone.
    pub forced: bool,
    /// What the undo would send: `added` rows are inserted back, `changed` rows updated back
    /// to their values before the run, `removed` rows (the run's inserts) deleted.
    pub planned: OpCounts,
    /// The destination operation per change.
    pub operations: serde_json::Value,
    /// Sample rows per change, like `sync plan`: for changed rows `before` is what the
    /// destination has now and `after` what the undo sends.
    pub samples: serde_json::Value,
    /// Rows a later run changed: left alone unless forced.
    pub conflicts: u64,
    /// The keys of the first conflicting rows (at most 20), as text, for the report.
    pub conflict_keys: Vec<String>,
    /// Rows the run sent as updates of records backflow had never delivered (`update` mode).
    pub without_before: u64,
    /// The sync's quality checks on the inverse plan: an undo goes through them like any run.
    pub checks: Vec<CheckReport>,
    /// Whether a check would block the undo (`runs undo --yes` would end `blocked`).
    pub blocked: bool,
    /// For each check that would block: which, where it is configured, and what to do.
    pub blocking: Vec<BlockingCheck>,
}

/// A check that would block an undo, and how to get past it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BlockingCheck {
    /// The check's name in the sync's configuration.
    pub check: String,
    /// Its verdict's explanation, with its numbers.
    pub message: String,
    /// Where it is configured: `FILE: syncs.NAME.checks[i]`.
    pub configured_at: String,
    /// What to do to undo the run anyway.
    pub remedy: String,
}

/// What each blocking check of an undo's plan says, with where it is and what to do.
fn blocking_checks(p: &PreparedSync, reports: &[CheckReport], run_id: &str) -> Vec<BlockingCheck> {
    reports
        .iter()
        .filter(|r| r.blocks())
        .map(|r| {
            let configured_at = p
                .checks
                .iter()
                .find(|(c, _)| c.name == r.name)
                .map(|(c, _)| {
                    let origin = &c.connector.origin;
                    format!("{}: {}", origin.file.display(), origin.key(""))
                })
                .unwrap_or_else(|| format!("check {}", r.name));
            let remedy = if r.verdict == crate::domain::CheckVerdict::Error {
                format!("the check could not run: fix what its message says, then run `backflow runs undo {run_id}` again to see its verdict")
            } else {
                format!("an undo goes through the sync's checks like any run: to undo this run anyway, raise the limit of that check or set its severity = \"warn\" (with [users], through a change request), then `backflow runs undo {run_id} --yes`")
            };
            BlockingCheck {
                check: r.name.clone(),
                message: r.message.clone(),
                configured_at,
                remedy,
            }
        })
        .collect()
}

/// Plans the undo of a run without sending or recording anything. `state_key` is where the
/// run's sync keeps its state (the sync's name, or `draft/NAME` for a draft run).
pub async fn plan_undo(
    host: &crate::plugins::Registry,
    ws: &Workspace,
    state: &StateStore,
    sync_name: &str,
    state_key: &str,
    target: &UndoTarget,
    samples: usize,
) -> Result<UndoReport, DryRunError> {
    let mut p = prepare(host, ws, sync_name).await?;
    p.state_key = state_key.to_string();
    p.sync.mode = SyncMode::Mirror;
    let undo = super::plan::undo::plan_undo(
        state,
        &p.state_key,
        sync_name,
        &ws.state_dir.join("tmp"),
        target,
    )?;
    check_undo_operations(&p, &undo.plan.diff)?;
    let mut operations = serde_json::Map::new();
    let mut sample_map = serde_json::Map::new();
    for change in [Change::Added, Change::Changed, Change::Removed] {
        let op = operation_for(SyncMode::Mirror, change);
        operations.insert(
            change.as_str().into(),
            op.map(|o| serde_json::Value::String(o.as_str().into()))
                .unwrap_or(serde_json::Value::Null),
        );
        sample_map.insert(
            change.as_str().into(),
            serde_json::Value::Array(
                undo.plan
                    .samples(change, samples, &p.sync.field_rules)
                    .map_err(DryRunError::reading_plan)?,
            ),
        );
    }
    let planned = undo.plan.planned(SyncMode::Mirror);
    // The preview judges the undo as the undo itself will be judged: as an undo (checks of
    // the model as a whole do not apply to it).
    let checks = run_checks_for(
        host,
        &p,
        &undo.plan,
        planned,
        backflow_plugin_sdk::PlanPurpose::Undo,
    )
    .await;
    let blocking = blocking_checks(&p, &checks, &target.run_id);
    Ok(UndoReport {
        sync: sync_name.into(),
        run_id: target.run_id.clone(),
        forced: target.force,
        planned,
        operations: serde_json::Value::Object(operations),
        samples: serde_json::Value::Object(sample_map),
        conflicts: undo.conflicts,
        conflict_keys: undo.conflict_keys,
        without_before: undo.without_before,
        blocked: !blocking.is_empty(),
        checks,
        blocking,
    })
}
