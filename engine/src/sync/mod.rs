//! The sync path: one run of one sync, stage by stage. Each stage is a module:
//!
//! 1. [`prepare`]: resolve plugins, check their kinds, configs and the mode;
//! 2. [`read`]: read the model through the source plugin, project and key every row;
//! 3. [`plan`]: spill, sort and merge the model with the snapshot into an on-disk plan;
//! 4. [`checks`]: quality checks judge the whole plan;
//! 5. [`gate`]: the approval gate (governance, seen through a narrow trait) may hold it;
//! 6. [`deliver`]: send the plan through the destination (writers, pacer, retries);
//! 7. [`commit`]: journal what the destination acknowledged, then commit it to the snapshot.
//!
//! Nothing is sent before the whole plan exists and has passed checks and the gate: a
//! source failure, a bad key or a failing check stops the run before the first write. The
//! run's result is one [`outcome::RunOutcome`].

pub mod checks;
pub mod commit;
mod debug_capture;
pub mod deliver;
pub mod drift;
pub mod dry_run;
mod error;
pub mod field_rules;
pub mod gate;
pub mod outcome;
pub mod plan;
pub mod prepare;
pub mod progress;
pub mod read;
pub mod recover;
mod redaction;
pub mod run;
mod unrecorded;
pub(crate) mod warehouse;

use crate::domain::{CheckReport, DiffCounts, OpCounts, RunRecord, RunStatus, Timings};
use crate::host::PluginHost;
use crate::state::{LeaseHolder, StateStore, SyncLease};
use crate::workspace::Workspace;
use backflow_plugin_sdk::PlanPurpose;
use checks::run_checks_for;
use commit::Committer;
use gate::{ApprovalGate, GateDecision, GateRequest};
use outcome::RunOutcome;
use plan::{build_plan, PlanOptions};
use prepare::{prepare, PreparedSync};
use run::Tally;
use std::time::Instant;

pub use crate::domain::{operation_for, Change, BUILTIN_NOOP};
pub use drift::{drift_report, DriftError, DriftOptions, DriftReport};
pub use dry_run::{
    plan_sync, plan_undo, test_row, BlockingCheck, DryRunError, PlanReport, TestReport, UndoReport,
};
pub use error::RunError;
pub use plan::key_text;
pub use plan::undo::UndoTarget;
pub use prepare::PrepareError;
pub use recover::recover_dead_runs;
pub use run::{Abort, StopSignal};
pub use unrecorded::save_unrecorded;

/// What a run works with: the plugin host, the workspace it runs, the state, and the
/// approval gate that may hold its plan.
#[derive(Clone, Copy)]
pub struct RunEnv<'a> {
    /// Runs the plugins.
    pub host: &'a crate::plugins::Registry,
    /// The workspace the sync is declared in.
    pub ws: &'a Workspace,
    /// Snapshots, journals, leases and run history.
    pub state: &'a StateStore,
    /// The approval gate that may hold the run's plan.
    pub gate: &'a dyn ApprovalGate,
}

/// Who started a run, why, and how it treats the snapshot.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Why the run started (`manual`, `schedule`, `approved run …`).
    pub trigger: String,
    /// Who started it.
    pub user: String,
    /// A run held for approval and since approved (`runs approve`): if this run's plan is
    /// exactly that one, it goes ahead without asking the policies again.
    pub approved_run: Option<String>,
    /// Re-send every model row: rows in the snapshot count as changed even when unchanged.
    pub full_resync: bool,
    /// A run of the working copy: its snapshot, pending rows, journal, lease and history are
    /// kept apart from the published sync's, so a draft never touches production state.
    pub draft: bool,
    /// Undo this run instead of reading the model (`runs undo`).
    pub undo: Option<UndoTarget>,
    /// Set by a service shutting down: start no new batch, let those in flight finish.
    pub stop: Option<StopSignal>,
    /// The run's id, when the caller chose it before the run started (the service answers a
    /// trigger with it at once); a new one otherwise.
    pub run_id: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            trigger: "manual".into(),
            user: std::env::var("BACKFLOW_USER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "unknown".into()),
            approved_run: None,
            full_resync: false,
            draft: false,
            undo: None,
            stop: None,
            run_id: None,
        }
    }
}

/// Runs a sync end to end and records it. Returns the record even when the run failed; an
/// `Err` means the run could not start (nothing was read or written, nothing recorded).
/// A run whose plan is exactly that of a run of the sync already held for approval is not
/// kept: it returns the held run's record (another id than its own).
pub async fn run_sync(
    env: RunEnv<'_>,
    sync_name: &str,
    options: &RunOptions,
) -> Result<RunRecord, RunError> {
    run_sync_planned(env, sync_name, options, false).await
}

/// [`run_sync`], or with `reconcile` a reconcile (`sync reconcile`): its plan is then the
/// drift between the destination and the snapshot ([`drift::reconcile`]), delivered like
/// any run's: checks (purpose `reconcile`), the approval gate, the journal and history.
pub async fn run_sync_planned(
    env: RunEnv<'_>,
    sync_name: &str,
    options: &RunOptions,
    reconcile: bool,
) -> Result<RunRecord, RunError> {
    let started_at = now_rfc3339();
    let clock = Instant::now();
    progress::enter_phase("prepare");
    // Nothing reaches a destination before approvals: a workspace with approval policies is
    // run only through a gate that asks them.
    if !env.ws.governance.policies.is_empty() && !env.gate.is_active() {
        return Err(RunError::NoApprovalGate {
            sync: sync_name.to_string(),
        });
    }
    let mut prepared = prepare(env.host, env.ws, sync_name).await?;
    let prepare_ms = clock.elapsed().as_millis() as u64;
    if options.draft {
        prepared.state_key = crate::state::draft_key(sync_name);
    }
    if options.undo.is_some() {
        // An undo sends each inverse change with its own operation: insert, update, delete.
        prepared.sync.mode = crate::workspace::SyncMode::Mirror;
    }
    let run_id = options
        .run_id
        .clone()
        .unwrap_or_else(|| ulid::Ulid::new().to_string());
    // Two runs of one sync never overlap: the lease is held until this function returns.
    let holder = LeaseHolder {
        run_id: run_id.clone(),
        started_at: started_at.clone(),
        pid: std::process::id(),
    };
    let lease = SyncLease::acquire(&env.ws.state_dir, &prepared.state_key, &holder)?;
    let mut record = new_record(&prepared, sync_name, &run_id, started_at, options);
    let (state, keep_runs) = (env.state, env.ws.keep_runs);
    // Holding the lease, every other run of the sync still recorded as running is dead
    // (the previous holder, or one before it whose successor died too): mark them. A failure
    // here leaves them for later; the journal is tried again below and fails the run then.
    if let Err(e) = recover::recover_key(state, &env.ws.state_dir, &prepared.state_key, keep_runs) {
        tracing::warn!(sync = sync_name, "marking interrupted runs: {e}");
    }
    state.record_run(&record, keep_runs)?;
    tracing::info!(
        sync = sync_name,
        run_id,
        draft = options.draft,
        "run started"
    );
    // The audit log is for people's actions: the service's own starts (schedules, `after`)
    // are in the run history only, or a schedule every few seconds would flood the log.
    let by_a_person = options.user != crate::domain::SERVICE_USER;
    let start = crate::state::AuditEvent {
        user: options.user.clone(),
        action: "run.start".into(),
        target: format!("{sync_name} run {run_id}"),
        config_hash: Some(prepared.config_hash.clone()),
        detail: serde_json::json!({"trigger": options.trigger, "approved_run": options.approved_run, "undo": options.undo}),
    };
    if by_a_person {
        state.write_governance(vec![], vec![start])?;
    }
    let mut tally = Tally::default();
    let outcome = guarded(execute(
        env,
        &prepared,
        &run_id,
        (options, reconcile),
        &mut tally,
        &mut record,
    ))
    .await;
    if let RunOutcome::FoldedInto(held) = &outcome {
        if let Some(held) = fold_into_held(state, &run_id, held)? {
            return Ok(held);
        }
    }
    record.status = outcome.status();
    record.error = outcome.into_error();
    record.finished_at = now_rfc3339();
    record.duration_ms = clock.elapsed().as_millis() as u64;
    record.timings = Timings {
        prepare_ms,
        compile_ms: prepared.compile_ms(),
        ..tally.timings
    };
    record.planned = tally.planned;
    record.delivered = tally.delivered;
    record.failed = tally.failed;
    record.rejected = tally.rejected;
    redaction::redact_record(&mut record, &prepared);
    state.record_run(&record, keep_runs)?;
    if let Err(e) = state.prune_changelog(&prepared.state_key, env.ws.keep_changelog_runs) {
        tracing::warn!(sync = sync_name, "pruning old changelogs: {e}");
    }
    drop(lease);
    tracing::info!(
        sync = sync_name,
        run_id = record.run_id,
        status = record.status.as_str(),
        trigger = record.trigger,
        delivered = record.delivered.total(),
        failed = record.failed.total(),
        "run finished"
    );
    Ok(record)
}

/// Drops the record of a run whose plan is the one `held` waits with (nothing was sent) and
/// returns the held run's record; `None` (and the run is recorded as held) if it is gone.
fn fold_into_held(
    state: &StateStore,
    run_id: &str,
    held: &str,
) -> Result<Option<RunRecord>, crate::state::StateError> {
    let Some(held_record) = state.run(held)? else {
        return Ok(None);
    };
    state.delete_run(run_id)?;
    tracing::info!(
        sync = held_record.sync,
        run_id,
        held,
        "the plan is the one already waiting for approval: folded into the held run"
    );
    Ok(Some(held_record))
}

/// The record of a run that starts now: running, nothing counted yet.
fn new_record(
    prepared: &PreparedSync,
    sync_name: &str,
    run_id: &str,
    started_at: String,
    options: &RunOptions,
) -> RunRecord {
    RunRecord {
        run_id: run_id.to_string(),
        sync: sync_name.to_string(),
        trigger: options.trigger.clone(),
        user: options.user.clone(),
        started_at,
        finished_at: String::new(),
        duration_ms: 0,
        timings: Timings::default(),
        status: RunStatus::Running,
        full_resync: options.full_resync,
        model_rows: 0,
        snapshot_rows: 0,
        diff: DiffCounts::default(),
        planned: OpCounts::default(),
        delivered: OpCounts::default(),
        failed: OpCounts::default(),
        plugins: prepared.plugin_hashes(),
        config_hash: prepared.config_hash.clone(),
        error: None,
        phase: None,
        checks: Vec::new(),
        rejected: Vec::new(),
        draft: options.draft,
        undo: options.undo.as_ref().map(|u| crate::domain::UndoSummary {
            run_id: u.run_id.clone(),
            forced: u.force,
            ..Default::default()
        }),
        out_of_key_order: false,
    }
}

pub(crate) use crate::domain::now_rfc3339;

/// The stages in order, from an empty plan to a committed delivery.
async fn execute(
    env: RunEnv<'_>,
    p: &PreparedSync,
    run_id: &str,
    (options, reconcile): (&RunOptions, bool),
    tally: &mut Tally,
    record: &mut RunRecord,
) -> RunOutcome {
    let RunEnv {
        host,
        ws,
        state,
        gate,
    } = env;
    let meta = plan::sync_meta(p);
    // A warehouse-diff sync has a journal of its own, written back to the source database.
    let (mut wh, mut journal) = match warehouse::open_journal(host, ws, state, p, &meta).await {
        Ok(opened) => opened,
        Err(e) => return RunOutcome::Failed(e.to_string()),
    };

    let plan_started = Instant::now();
    let planned = match (&options.undo, wh.as_mut()) {
        (None, Some(_)) if reconcile => Err(warehouse::no_reconcile(p)),
        (None, None) if reconcile => drift::reconcile::plan_reconcile_run(host, ws, state, p).await,
        (None, Some(wh)) => wh.plan(ws, p, options.full_resync).await,
        (None, None) => {
            let sort_first = sorts_first(state, p, run_id, record);
            let options = PlanOptions {
                full_resync: options.full_resync,
                sort_first,
            };
            build_plan(host, ws, state, p, options).await
        }
        (Some(_), Some(_)) => Err(warehouse::no_undo(p)),
        (Some(target), None) => plan::undo::plan_undo_run(ws, state, p, target, record),
    };
    let plan = match planned {
        Ok(plan) => plan,
        Err(e) => return RunOutcome::Failed(e.to_string()),
    };
    tally.timings.plan_ms = plan_started.elapsed().as_millis() as u64;
    record.model_rows = plan.model_rows;
    record.snapshot_rows = plan.snapshot_rows;
    record.diff = plan.diff;
    record.out_of_key_order = plan.out_of_key_order;
    tally.planned = plan.planned(p.sync.mode);
    if let Some(live) = progress::live() {
        live.set_planned(tally.planned.total());
    }
    tracing::debug!(
        model_rows = plan.model_rows,
        added = plan.diff.added,
        changed = plan.diff.changed,
        removed = plan.diff.removed,
        ms = tally.timings.plan_ms,
        "plan complete"
    );

    let purpose = match (options.undo.is_some(), reconcile) {
        (true, _) => PlanPurpose::Undo,
        (false, true) => PlanPurpose::Reconcile,
        (false, false) => PlanPurpose::Run,
    };
    if let Some(blocked) = judge_plan(host, p, &plan, purpose, tally, record).await {
        return blocked;
    }
    // Nothing is sent that the destination's config cannot express (an undo of inserts
    // deletes, whatever the sync's mode). After the checks, so their verdicts are recorded
    // too; before the gate, so nobody is asked to approve what cannot be delivered.
    if let Err(e) = prepare::check_plan_operations(p, tally.planned, purpose.as_str()) {
        tally.planned = OpCounts::default();
        return RunOutcome::Failed(e.to_string());
    }
    if tally.planned.total() == 0 {
        return match clear_refused_deletes(state, p, &meta, &plan) {
            Ok(()) => RunOutcome::Succeeded,
            Err(e) => RunOutcome::Failed(e.to_string()),
        };
    }
    if gate.is_active() {
        if let Some(held) = ask_gate(gate, p, &plan, run_id, (options, reconcile), tally).await {
            return held;
        }
    }
    if let Err(e) = clear_refused_deletes(state, p, &meta, &plan) {
        return RunOutcome::Failed(e.to_string());
    }
    if let Err(e) = warehouse::before_delivery(wh.as_mut(), ws, p, &plan).await {
        tally.planned = OpCounts::default();
        return RunOutcome::Failed(e.to_string());
    }
    let delivery = Delivery {
        host,
        ws,
        state,
        p,
        plan: &plan,
        run_id,
        options,
        write_back: wh.is_some(),
    };
    let outcome = delivery.run(&mut journal, meta.clone(), tally).await;
    warehouse::after_delivery(wh, ws, state, p, &meta, &mut journal, outcome).await
}

/// Whether to sort the model from the start: a model that came out of key order last time
/// is sorted from the start, since finding the disorder again midway would cost more than
/// sorting (see plan/intake.rs). Only a hint: a history that cannot be read costs speed,
/// never the run.
fn sorts_first(state: &StateStore, p: &PreparedSync, run_id: &str, record: &RunRecord) -> bool {
    match state.runs(Some(&crate::state::history_key(record)), 2) {
        Ok(runs) => runs
            .iter()
            .find(|r| r.run_id != run_id)
            .is_some_and(|r| r.out_of_key_order),
        Err(e) => {
            tracing::warn!(sync = %p.sync.name, "cannot read the previous run to learn whether the model came in key order ({e}); merging while reading");
            false
        }
    }
}

/// Quality gates: every check runs, on the whole plan, before the first write. Returns the
/// outcome of a run a check blocks.
async fn judge_plan(
    host: &PluginHost,
    p: &PreparedSync,
    plan: &plan::Plan,
    purpose: PlanPurpose,
    tally: &mut Tally,
    record: &mut RunRecord,
) -> Option<RunOutcome> {
    progress::enter_phase("check");
    let checks_started = Instant::now();
    record.checks = run_checks_for(host, p, plan, tally.planned, purpose).await;
    tally.timings.check_ms = checks_started.elapsed().as_millis() as u64;
    let blocking: Vec<&CheckReport> = record.checks.iter().filter(|c| c.blocks()).collect();
    if !blocking.is_empty() {
        tally.planned = OpCounts::default();
        return Some(RunOutcome::Blocked(format!(
            "blocked by {}: nothing was sent",
            blocking
                .iter()
                .map(|c| format!("check {:?} ({}: {})", c.name, c.verdict, c.message))
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    for warning in record
        .checks
        .iter()
        .filter(|c| c.verdict != crate::domain::CheckVerdict::Pass)
    {
        tracing::warn!(sync = %p.sync.name, check = %warning.name, verdict = %warning.verdict, "{}", warning.message);
    }
    None
}

/// The run-time gate: approval policies see the plan's size and may hold it for a person.
/// Returns the outcome of a run the gate does not let through.
async fn ask_gate(
    gate: &dyn ApprovalGate,
    p: &PreparedSync,
    plan: &plan::Plan,
    run_id: &str,
    (options, reconcile): (&RunOptions, bool),
    tally: &mut Tally,
) -> Option<RunOutcome> {
    let mut samples = serde_json::Map::new();
    for (name, change) in [
        ("added", Change::Added),
        ("changed", Change::Changed),
        ("removed", Change::Removed),
    ] {
        samples.insert(
            name.into(),
            serde_json::Value::Array(
                plan.samples(change, 5, &p.sync.field_rules)
                    .unwrap_or_default(),
            ),
        );
    }
    let request = GateRequest {
        run_id,
        sync: &p.sync,
        planned: tally.planned,
        plan_fingerprint: &plan.fingerprint,
        samples: serde_json::Value::Object(samples),
        config_hash: &p.config_hash,
        full_resync: options.full_resync,
        user: &options.user,
        approved_run: options.approved_run.as_deref(),
        undo: options.undo.as_ref(),
        reconcile,
    };
    progress::enter_phase("approval");
    let asked = Instant::now();
    let decision = gate.decide(request).await;
    tally.timings.approval_ms = asked.elapsed().as_millis() as u64;
    match decision {
        Err(e) => Some(RunOutcome::Failed(e.to_string())),
        Ok(GateDecision::Proceed) => None,
        Ok(GateDecision::Await(message)) => Some(RunOutcome::AwaitingApproval(format!(
            "{message}; nothing was sent"
        ))),
        Ok(GateDecision::Folded(held)) => Some(RunOutcome::FoldedInto(held)),
        Ok(GateDecision::Reject(reason)) => {
            tally.planned = OpCounts::default();
            Some(RunOutcome::Rejected(format!(
                "rejected by approval policy: {reason}; nothing was sent"
            )))
        }
    }
}

/// Stages 6 and 7 of a run whose plan passed checks and the gate.
struct Delivery<'a> {
    host: &'a PluginHost,
    ws: &'a Workspace,
    state: &'a StateStore,
    p: &'a PreparedSync,
    plan: &'a plan::Plan,
    run_id: &'a str,
    options: &'a RunOptions,
    /// A warehouse-diff run: acknowledged rows are written back after delivery.
    write_back: bool,
}

impl Delivery<'_> {
    /// Delivers the plan, then commits whatever was acknowledged, even when the run stops
    /// early.
    async fn run(
        &self,
        journal: &mut commit::journal::Journal,
        meta: crate::state::SyncMeta,
        tally: &mut Tally,
    ) -> RunOutcome {
        let (p, plan) = (self.p, self.plan);
        let deliver_started = Instant::now();
        let header = (self.ws.keep_changelog_runs > 0).then(|| crate::domain::ChangelogHeader {
            run_id: self.run_id.to_string(),
            mode: p.sync.mode.as_str().to_string(),
            columns: plan.columns.clone(),
            key_columns: plan.key_columns.clone(),
            undo_of: self.options.undo.as_ref().map(|u| u.run_id.clone()),
        });
        // What this run delivers is recorded with its key types (an undo's plan has none: the
        // recorded ones stay).
        let meta = crate::state::SyncMeta {
            key_types: plan.key_types.clone(),
            ..meta
        };
        let mut committer = Committer::new(
            journal,
            self.state,
            &meta,
            p,
            self.run_id,
            tally.planned.total(),
            header,
        );
        if self.write_back {
            committer = committer.for_write_back();
        }
        let capture = debug_capture::CaptureSession::start(
            self.state,
            &self.ws.debug,
            self.run_id,
            &p.state_key,
        );
        let delivered = deliver::deliver(
            self.host,
            p,
            plan,
            self.run_id,
            &mut committer,
            tally,
            deliver::Watch {
                stop: self.options.stop.as_ref(),
                capture: capture.recorder(),
            },
        )
        .await;
        capture.finish().await;
        // Whatever was acknowledged is committed, even when the run stops early.
        progress::enter_phase("commit");
        let committed = committer.commit_acknowledged();
        let result = match (delivered, committed) {
            (Err(run), Err(commit)) => Err(Abort::AlsoUnrecorded {
                run: Box::new(run),
                commit: Box::new(commit),
            }),
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        };
        tally.timings.deliver_ms = deliver_started.elapsed().as_millis() as u64;
        tracing::debug!(
            rows = tally.delivered.total(),
            ms = tally.timings.deliver_ms,
            "delivery complete"
        );
        match result {
            // Stopped by a shutdown: interrupted, not failed (nothing is wrong with the sync).
            Err(stop) if stop.is_shutdown() => RunOutcome::Interrupted(stop.to_string()),
            result => RunOutcome::after_delivery(result, tally.failed.total()),
        }
    }
}

/// A full resync drops from the state the rows whose delete the destination refused (see
/// [`DiffCounts::cleared_deletes`]): they leave the snapshot and the pending list, so no
/// later run sends their delete again. Nothing is sent for them, so nothing goes into the
/// run's changelog: an undo of this run does not bring them back.
fn clear_refused_deletes(
    state: &StateStore,
    p: &PreparedSync,
    meta: &crate::state::SyncMeta,
    plan: &plan::Plan,
) -> Result<(), Abort> {
    if plan.cleared_deletes.is_empty() {
        return Ok(());
    }
    let ops: Vec<crate::domain::JournalOp> = plan
        .cleared_deletes
        .iter()
        .map(|key| crate::domain::JournalOp::Delete { key: key.clone() })
        .collect();
    state
        .apply(&p.state_key, meta, &ops)
        .map_err(|e| Abort::Commit(format!("clearing refused deletes: {e}")))?;
    tracing::info!(sync = %p.sync.name, rows = ops.len(), "full resync: dropped rows whose delete the destination had refused; they are not sent again");
    Ok(())
}

/// Runs a run's stages so that a panic anywhere in them (a bug) becomes a failed run with
/// the panic's message, never a dead process leaving the run recorded as running. What was
/// acknowledged before stays in the journal and is committed by the next run.
async fn guarded(stages: impl std::future::Future<Output = RunOutcome>) -> RunOutcome {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(stages).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            RunOutcome::Failed(format!("internal error (a bug in backflow, please report it): the run stopped on a panic: {message}; rows acknowledged before it were kept"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_a_stage_becomes_a_failed_run() {
        let outcome = guarded(async { panic!("index out of bounds") }).await;
        match outcome {
            RunOutcome::Failed(m) => assert!(m.contains("panic: index out of bounds"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            guarded(async { RunOutcome::Succeeded }).await,
            RunOutcome::Succeeded
        ));
    }
}
