//! Stage 4: quality checks. Every check of the sync sees the whole plan before the first
//! write; a check that cannot run reports `error`, which blocks like a failure.

use super::deliver::MAX_BATCH_BYTES;
use super::plan::{Plan, PlannedRow};
use super::prepare::PreparedSync;
use crate::domain::{operation_for, Change, CheckReport, CheckVerdict, OpCounts};
use crate::host::{CheckInstance, PluginHost};
use backflow_plugin_sdk::codec::read_array_len;
use backflow_plugin_sdk::{Batch, BatchBuilder, ChangeKind, Column, PlanPurpose, PlanSummary};

/// Rows per batch shown to quality checks.
pub(crate) const CHECK_BATCH_ROWS: usize = 4096;

/// Runs every check of the sync over the plan of a run. A check that cannot run (trap,
/// timeout, out of memory, error) reports verdict `error`, which blocks like a failure:
/// checks fail closed.
pub async fn run_checks(
    host: &PluginHost,
    p: &PreparedSync,
    plan: &Plan,
    planned: OpCounts,
) -> Vec<CheckReport> {
    run_checks_for(host, p, plan, planned, PlanPurpose::Run).await
}

/// [`run_checks`] for a plan that exists for `purpose`: checks are told it (contract 0.3.0),
/// so those that judge the model as a whole let an undo pass; an undo's model row count is
/// unknown (`None`), not zero.
pub async fn run_checks_for(
    host: &PluginHost,
    p: &PreparedSync,
    plan: &Plan,
    planned: OpCounts,
    purpose: PlanPurpose,
) -> Vec<CheckReport> {
    if p.checks.is_empty() {
        return Vec::new();
    }
    let summary = PlanSummary {
        sync_name: p.sync.name.clone(),
        purpose,
        columns: plan.columns.clone(),
        snapshot_rows: plan.snapshot_rows,
        // An undo reads no model: its count is unknown, not zero.
        model_rows: (purpose == PlanPurpose::Run).then_some(plan.model_rows),
        added: planned.added,
        changed: planned.changed,
        removed: planned.removed,
    };
    let mut reports: Vec<CheckReport> = p
        .checks
        .iter()
        .map(|(c, plugin)| CheckReport {
            name: c.name.clone(),
            plugin: plugin.spec.name.clone(),
            severity: c.severity,
            verdict: CheckVerdict::Error,
            message: String::new(),
            samples: Vec::new(),
        })
        .collect();
    let (mut feeds, tasks) = start_checks(host, p, &summary, &mut reports).await;
    let read_error = feed_plan(p, plan, &mut feeds).await;
    drop(feeds);
    for (i, task) in tasks {
        match task.await {
            Ok(Ok(outcome)) if read_error.is_none() => {
                reports[i].verdict = outcome.verdict.into();
                reports[i].message = outcome.message;
                reports[i].samples = outcome.samples.into_iter().take(20).collect();
            }
            Ok(Ok(_)) => reports[i].message = read_error.clone().unwrap_or_default(),
            Ok(Err(e)) => reports[i].message = e.to_string(),
            Err(e) => reports[i].message = format!("the check task failed: {e}"),
        }
    }
    reports
}

/// Where the plan's batches go: one channel per check (`None` once it stopped listening).
type Feed = tokio::sync::mpsc::Sender<(ChangeKind, Batch, Option<Batch>)>;
/// A check's task and the index of its report; it ends with the check's result or the
/// message of its failure.
type CheckTask = (
    usize,
    tokio::task::JoinHandle<Result<backflow_plugin_sdk::CheckResult, CheckFailed>>,
);

/// A check that started failed while looking at the plan or concluding.
#[derive(Debug, thiserror::Error)]
#[error("the check failed: {0}")]
struct CheckFailed(String);

/// Opens every check, each on its own task owning its store; a check that cannot start gets
/// its message in its report and no feed.
async fn start_checks(
    host: &PluginHost,
    p: &PreparedSync,
    summary: &PlanSummary,
    reports: &mut [CheckReport],
) -> (Vec<Option<Feed>>, Vec<CheckTask>) {
    let mut feeds: Vec<Option<Feed>> = Vec::new();
    let mut tasks = Vec::new();
    for (i, (c, plugin)) in p.checks.iter().enumerate() {
        let cfg = &c.connector;
        match CheckInstance::open(
            host,
            plugin,
            &cfg.grants,
            cfg.limits,
            &cfg.config_json,
            summary,
        )
        .await
        {
            Ok(mut inst) => {
                let (tx, mut rx) =
                    tokio::sync::mpsc::channel::<(ChangeKind, Batch, Option<Batch>)>(2);
                feeds.push(Some(tx));
                tasks.push((
                    i,
                    tokio::spawn(tracing::Instrument::in_current_span(async move {
                        while let Some((kind, after, before)) = rx.recv().await {
                            inst.observe(kind, after, before)
                                .await
                                .map_err(|e| CheckFailed(e.to_string()))?;
                        }
                        inst.finish().await.map_err(|e| CheckFailed(e.to_string()))
                    })),
                ));
            }
            Err(e) => {
                reports[i].message = format!("the check could not start: {e}");
                feeds.push(None);
            }
        }
    }
    (feeds, tasks)
}

/// Shows every planned row to every check, change by change; returns why the plan could not
/// be read, if it could not.
async fn feed_plan(p: &PreparedSync, plan: &Plan, feeds: &mut [Option<Feed>]) -> Option<String> {
    let streams = [
        (Change::Added, ChangeKind::Added),
        (Change::Changed, ChangeKind::Changed),
        (Change::Removed, ChangeKind::Removed),
        (Change::Unchanged, ChangeKind::Unchanged),
    ];
    for (change, kind) in streams {
        // Changes the mode does not send are still model rows: whole-model checks see them
        // as unchanged. Removals the mode does not send are not shown at all.
        let kind = match (change, operation_for(p.sync.mode, change)) {
            (Change::Removed, None) => continue,
            (Change::Added | Change::Changed, None) => ChangeKind::Unchanged,
            _ => kind,
        };
        let mut reader = match plan.rows(change) {
            Ok(r) => r,
            Err(e) => return Some(format!("reading the plan: {e}")),
        };
        loop {
            let mut rows = Vec::with_capacity(CHECK_BATCH_ROWS);
            let mut bytes = 0usize;
            // Bounded in bytes too: checks get every row, however large.
            while rows.len() < CHECK_BATCH_ROWS && bytes < MAX_BATCH_BYTES {
                match reader.next() {
                    Ok(Some(row)) => {
                        bytes += row.row.len() + row.before.len();
                        rows.push(row)
                    }
                    Ok(None) => break,
                    Err(e) => return Some(format!("reading the plan: {e}")),
                }
            }
            if rows.is_empty() {
                break;
            }
            let (after, before) = check_batches(plan, change, &rows);
            for feed in feeds.iter_mut() {
                // A check whose task ended early (it failed) is no longer fed.
                if let Some(tx) = feed {
                    if tx
                        .send((kind, after.clone(), before.clone()))
                        .await
                        .is_err()
                    {
                        *feed = None;
                    }
                }
            }
        }
    }
    None
}

/// The batches a check sees for planned rows: removals carry the key fields; changes carry
/// the last delivered values as `before` when they have the current shape.
pub(crate) fn check_batches(
    plan: &Plan,
    change: Change,
    rows: &[PlannedRow],
) -> (Batch, Option<Batch>) {
    let build = |columns: &[Column], pick: &dyn Fn(&PlannedRow) -> &[u8]| {
        let mut b = BatchBuilder::with_capacity(
            columns.to_vec(),
            rows.iter().map(|r| pick(r).len()).sum::<usize>() + 8,
        );
        for r in rows {
            b.push_encoded_row(pick(r));
        }
        b.finish()
    };
    match change {
        Change::Removed => (build(&plan.key_columns, &|r| &r.key), None),
        Change::Changed => {
            let width_ok = rows.iter().all(|r| {
                let mut rest = r.before.as_slice();
                read_array_len(&mut rest).ok() == Some(plan.columns.len())
            });
            let before = width_ok.then(|| build(&plan.columns, &|r| &r.before));
            (build(&plan.columns, &|r| &r.row), before)
        }
        Change::Added | Change::Unchanged => (build(&plan.columns, &|r| &r.row), None),
    }
}
