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
    fn trigger(&self, sync: &str, trigger: Trigger) -> Accepted;
}

impl App {
    /// Asks `queue` for a run of `sync` on behalf of `actor` (the API's and the web UI's one
    /// path): authorized as a run, only for a sync of the configuration runs use, and
    /// audited with the user and `via`. A queue shutting down answers
    /// [`Accepted::ShuttingDown`]: nothing is started and nothing audited.
    pub fn trigger_run(
        &self,
        actor: &Actor,
        sync: &str,
        full_resync: bool,
        via: &str,
        queue: &dyn RunQueue,
    ) -> Result<Accepted, AppError> {
        authorize(actor, Action::RunSync)?;
        let ws = self.runnable_workspace()?;
        ws.sync(sync)
            .map_err(|e| AppError::NotFound(e.to_string()))?;
        let accepted = queue.trigger(
            sync,
            Trigger {
                reason: via.into(),
                user: actor.user.clone(),
                full_resync,
            },
        );
        if accepted == Accepted::ShuttingDown {
            return Ok(accepted);
        }
        self.audit_event(
            actor,
            "run.trigger",
            sync,
            serde_json::json!({ "full_resync": full_resync, "accepted": accepted, "via": via }),
        )?;
        Ok(accepted)
    }
}
