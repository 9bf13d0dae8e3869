//! Runs asked for through the service: what a trigger carries, what became of it, and the
//! queue that takes it (the service's scheduler implements [`RunQueue`]).

use super::{App, AppError};
use crate::authz::{authorize, Action, Actor};

/// Why a run is asked for, and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// `schedule`, `api`, `after SYNC`, … (recorded as the run's trigger).
    pub reason: String,
    /// Recorded as the run's user.
    pub user: String,
    /// Re-send every model row, not only what changed.
    pub full_resync: bool,
    /// Release this held run, approved since (its plan, if the data did not move).
    pub approved_run: Option<String>,
    /// Undo this run.
    pub undo: Option<crate::sync::UndoTarget>,
}

impl Trigger {
    /// A plain run (not a release, not an undo), from `reason` on behalf of `user`.
    pub fn run(reason: impl Into<String>, user: impl Into<String>, full_resync: bool) -> Trigger {
        Trigger {
            reason: reason.into(),
            user: user.into(),
            full_resync,
            approved_run: None,
            undo: None,
        }
    }

    /// Whether several of these fold into one run (a release or an undo is a run of its own).
    pub fn is_plain(&self) -> bool {
        self.approved_run.is_none() && self.undo.is_none()
    }
}

/// What a queue answers a trigger with: what became of it, and the id of the run it started
/// or was folded into (none when the service is shutting down).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Queued {
    /// What became of the trigger.
    pub accepted: Accepted,
    /// The run it started or was folded into (a follow-up's id is known before it starts).
    pub run_id: Option<String>,
}

/// What became of a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Accepted {
    /// A run starts now.
    Started,
    /// The sync is running: one follow-up run will start when it ends.
    Coalesced,
    /// The service is shutting down and starts nothing.
    ShuttingDown,
}

/// Where triggered runs go: starts a run of `sync`, or folds the trigger into the one going on.
pub trait RunQueue {
    /// Asks for a run of `sync`.
    fn trigger(&self, sync: &str, trigger: Trigger) -> Queued;
}

impl App {
    /// Asks `queue` for a run of `sync` on behalf of `actor` (the API's and the web UI's one
    /// path): authorized as a run, only for a sync of the configuration runs use, and
    /// audited with the user and `via`; answers with the id of the run the trigger started or
    /// was folded into. A queue shutting down answers [`Accepted::ShuttingDown`]: nothing is
    /// started and nothing audited.
    pub fn trigger_run(
        &self,
        actor: &Actor,
        sync: &str,
        full_resync: bool,
        via: &str,
        queue: &dyn RunQueue,
    ) -> Result<Queued, AppError> {
        authorize(actor, Action::RunSync)?;
        let ws = self.runnable_workspace()?;
        ws.sync(sync)
            .map_err(|e| AppError::NotFound(e.to_string()))?;
        let queued = queue.trigger(sync, Trigger::run(via, actor.user.clone(), full_resync));
        if queued.accepted == Accepted::ShuttingDown {
            return Ok(queued);
        }
        self.audit_event(
            actor,
            "run.trigger",
            sync,
            serde_json::json!({ "full_resync": full_resync, "accepted": queued.accepted, "run_id": queued.run_id, "via": via }),
        )?;
        Ok(queued)
    }
}
