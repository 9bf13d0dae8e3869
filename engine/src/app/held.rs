//! Deciding held runs: approving (recorded, then released at once on the CLI or through the
//! sync's queue in the service), rejecting (an approver) and cancelling (whoever started the
//! run, or an admin); and undos put on the sync's queue. Each authorizes once and is audited
//! with its user.

use super::queue::{Accepted, Queued, RunQueue, Trigger};
use super::{App, AppError, RunApproval};
use crate::authz::{authorize, Action, Actor};
use crate::domain::{RunRecord, RunStatus};
use crate::governance::{self, Closing, GateStatus, RunGate};
use crate::sync::UndoTarget;

fn failed(e: impl std::fmt::Display) -> AppError {
    AppError::Failed(e.to_string())
}

impl App {
    /// How many runs per sync history keeps (the configuration runs use, else the working copy's).
    fn keep_runs(&self) -> u64 {
        self.runnable_workspace()
            .map(|ws| ws.keep_runs)
            .unwrap_or(self.working.keep_runs)
    }

    /// Records `actor`'s approval of a held run (authorized and audited).
    pub(super) fn record_approval(
        &self,
        actor: &Actor,
        run_id: &str,
        comment: Option<&str>,
    ) -> Result<RunGate, AppError> {
        authorize(actor, Action::ApproveRun)?;
        governance::approve_run(&self.state, actor, run_id, comment)
            .map_err(|e| AppError::Refused(e.to_string()))
    }

    /// The held run's record says it is approved and which run delivers its plan.
    pub(super) fn mark_approved(&self, gate: &RunGate, release_run: &str) -> Result<(), AppError> {
        let approvers: Vec<&str> = gate.approvals.iter().map(|a| a.user.as_str()).collect();
        governance::held_runs::set_record_status(
            &self.state,
            &gate.run_id,
            RunStatus::Approved,
            format!(
                "approved by {}; run {release_run} delivers its plan (nothing was sent by this run)",
                approvers.join(", ")
            ),
            self.keep_runs(),
        )
        .map_err(failed)
    }

    /// Approves a held run from the service: once every requirement is met, its release goes
    /// on the sync's queue like a trigger and the answer is the release's run id at once.
    pub fn approve_run_queued(
        &self,
        actor: &Actor,
        run_id: &str,
        comment: Option<&str>,
        queue: &dyn RunQueue,
    ) -> Result<RunApproval, AppError> {
        let gate = self.record_approval(actor, run_id, comment)?;
        if gate.status != GateStatus::Approved {
            return Ok(RunApproval::NeedsMore(Box::new(gate)));
        }
        let queued = queue.trigger(
            &gate.sync,
            Trigger {
                reason: format!("approved run {run_id}"),
                user: gate.requested_by.clone(),
                full_resync: gate.full_resync,
                approved_run: Some(run_id.to_string()),
                undo: gate.undo.clone(),
            },
        );
        let Some(release_id) = queued
            .run_id
            .filter(|_| queued.accepted != Accepted::ShuttingDown)
        else {
            return Err(AppError::Refused(format!(
                "the approval of run {run_id} is recorded, but the service is shutting down and starts no run: the next run of {} with the same plan delivers it",
                gate.sync
            )));
        };
        self.mark_approved(&gate, &release_id)?;
        // A release that failed before the held run was marked approved: its failure is
        // recorded before the held run is looked at, so the held run says so here.
        if let Ok(Some(release)) = self.state.run(&release_id) {
            self.release_failed(run_id, &release);
        }
        Ok(RunApproval::Queued(release_id))
    }

    /// Puts the undo of a run on its sync's queue (the service's path): authorized as an
    /// undo, audited with `via`; answers with the undo's run id at once.
    pub fn undo_run_queued(
        &self,
        actor: &Actor,
        run_id: &str,
        force: bool,
        via: &str,
        queue: &dyn RunQueue,
    ) -> Result<Queued, AppError> {
        authorize(actor, Action::UndoRun)?;
        let run = self.run_record(actor, run_id)?;
        let queued = queue.trigger(
            &run.sync,
            Trigger {
                reason: format!("undo of run {run_id}"),
                user: actor.user.clone(),
                full_resync: false,
                approved_run: None,
                undo: Some(UndoTarget {
                    run_id: run_id.to_string(),
                    force,
                }),
            },
        );
        if queued.accepted != Accepted::ShuttingDown {
            self.audit_event(
                actor,
                "run.undo",
                &format!("{} run {run_id}", run.sync),
                serde_json::json!({ "force": force, "accepted": queued.accepted, "run_id": queued.run_id, "via": via }),
            )?;
        }
        Ok(queued)
    }

    /// `backflow runs reject RUN`: an approver refuses a held run; nothing is sent.
    pub fn reject_run(
        &self,
        actor: &Actor,
        run_id: &str,
        comment: Option<&str>,
    ) -> Result<RunRecord, AppError> {
        authorize(actor, Action::RejectRun)?;
        self.close_held(actor, run_id, Closing::Reject, comment)
    }

    /// `backflow runs cancel RUN`: whoever started a held run (or an admin) withdraws it;
    /// nothing is sent.
    pub fn cancel_run(&self, actor: &Actor, run_id: &str) -> Result<RunRecord, AppError> {
        let gate = self
            .state
            .run_gate::<RunGate>(run_id)
            .map_err(failed)?
            .ok_or_else(|| {
                AppError::NotFound(format!(
                    "run {run_id} was not held for approval: there is nothing to cancel"
                ))
            })?;
        authorize(
            actor,
            if gate.requested_by == actor.user {
                Action::RunSync
            } else {
                Action::CancelRun
            },
        )?;
        self.close_held(actor, run_id, Closing::Cancel, None)
    }

    fn close_held(
        &self,
        actor: &Actor,
        run_id: &str,
        closing: Closing,
        comment: Option<&str>,
    ) -> Result<RunRecord, AppError> {
        governance::close_held_run(
            &self.state,
            actor,
            run_id,
            closing,
            comment,
            self.keep_runs(),
        )
        .map_err(|e| match e {
            governance::CloseRunError::NotHeld(_) => AppError::NotFound(e.to_string()),
            governance::CloseRunError::State(e) => failed(e),
            other => AppError::Refused(other.to_string()),
        })?;
        self.run_record(actor, run_id)
    }
}
