//! Drift and reconcile as use-cases: a drift report (read-only: authorized as a plan is,
//! logged, not audited, since it changes nothing) and a reconcile (a run: authorized as a
//! run, audited and gated like one).

use super::{App, AppError};
use crate::authz::{authorize, Action, Actor};
use crate::domain::RunRecord;
use crate::governance::PolicyGate;
use crate::sync::{self, DriftError, DriftOptions, DriftReport, RunEnv, RunOptions};

impl App {
    /// What the sync's destination holds against what backflow sent: rows missing, fields
    /// that differ, deleted rows still there. Reads the destination; writes nothing.
    pub async fn drift(
        &self,
        actor: &Actor,
        sync: &str,
        options: DriftOptions,
    ) -> Result<DriftReport, AppError> {
        authorize(actor, Action::PlanSync)?;
        let ws = self.workspace_for(false, &[sync.to_string()])?;
        ws.sync(sync)
            .map_err(|e| AppError::NotFound(e.to_string()))?;
        tracing::info!(user = %actor.user, sync, sample = ?options.sample, "drift report asked for");
        let report = sync::drift_report(&self.host, &ws, &self.state, sync, options)
            .await
            .map_err(drift_error)?;
        tracing::info!(
            sync,
            checked = report.checked,
            missing = report.missing,
            differing = report.differing,
            deleted_present = report.deleted_present,
            "drift measured"
        );
        Ok(report)
    }

    /// Reconciles a sync: its drift becomes a plan that goes through checks (purpose
    /// `reconcile`), the approval gate, delivery, the journal and history like any run.
    pub async fn reconcile(&self, actor: &Actor, sync: &str) -> Result<RunRecord, AppError> {
        authorize(actor, Action::RunSync)?;
        let ws = self.workspace_for(false, &[sync.to_string()])?;
        ws.sync(sync)
            .map_err(|e| AppError::NotFound(e.to_string()))?;
        let options = RunOptions {
            user: actor.user.clone(),
            trigger: "reconcile".into(),
            ..RunOptions::default()
        };
        run_reconcile(&self.host, &ws, &self.state, sync, &options)
            .await
            .map_err(|e| AppError::Failed(e.to_string()))
    }
}

/// Runs a reconcile of one sync of a loaded workspace through the workspace's approval gate,
/// counting and alerting like any run (for the [`App`] and the service's `reconcile_every`).
pub async fn run_reconcile(
    host: &crate::plugins::Registry,
    ws: &crate::workspace::Workspace,
    state: &crate::state::StateStore,
    name: &str,
    options: &RunOptions,
) -> Result<RunRecord, sync::RunError> {
    let gate = PolicyGate { host, ws, state };
    let _in_flight = crate::metrics::run_in_flight();
    let env = RunEnv {
        host,
        ws,
        state,
        gate: &gate,
    };
    let record = sync::run_sync_planned(env, name, options, true).await?;
    crate::metrics::record_run(&record);
    crate::alerts::dispatch(host.http(), ws, state, &record).await;
    Ok(record)
}

fn drift_error(e: DriftError) -> AppError {
    match e {
        DriftError::Prepare(p) if p.to_string().contains("no sync") => {
            AppError::NotFound(p.to_string())
        }
        e => AppError::Failed(e.to_string()),
    }
}
