//! Runs the service has queued or is running, as they go on: each one's live progress (fed by
//! the run's progress reporting, `sync/progress.rs`), and triggers folded into a run already
//! held for approval (their id answers with the held run).

use super::{App, AppError};
use crate::authz::{authorize, Action, Actor};
use crate::sync::progress::{LiveProgress, LiveRun};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Folded run ids remembered at most (the oldest are forgotten first).
const FOLDED_KEPT: usize = 1000;

/// The registry of runs going on in this process.
#[derive(Default)]
pub(super) struct LiveRuns {
    inner: Mutex<LiveInner>,
}

#[derive(Default)]
struct LiveInner {
    running: HashMap<String, Arc<LiveRun>>,
    /// Run id → the held run it was folded into, in the order folded.
    folded: Vec<(String, String)>,
}

impl LiveRuns {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl App {
    /// Registers a run the service will start under `run_id` (queued until it starts).
    pub fn expect_run(&self, run_id: &str) -> Arc<LiveRun> {
        self.live
            .lock()
            .running
            .entry(run_id.to_string())
            .or_default()
            .clone()
    }

    /// The run under `run_id` ended (or will not start); `record_id` is the run it became (another id
    /// when it was folded into a held run).
    pub(super) fn forget_run(&self, run_id: &str, record_id: Option<&str>) {
        let mut live = self.live.lock();
        live.running.remove(run_id);
        if let Some(held) = record_id.filter(|id| *id != run_id) {
            if live.folded.len() >= FOLDED_KEPT {
                live.folded.remove(0);
            }
            live.folded.push((run_id.to_string(), held.to_string()));
        }
    }

    /// The held run a trigger's run was folded into, if it was.
    pub(super) fn folded_into(&self, run_id: &str) -> Option<String> {
        self.live
            .lock()
            .folded
            .iter()
            .rev()
            .find(|(id, _)| id == run_id)
            .map(|(_, held)| held.clone())
    }

    /// The live phase and counts of a run queued or going on in this service.
    pub fn run_progress(
        &self,
        actor: &Actor,
        run_id: &str,
    ) -> Result<Option<LiveProgress>, AppError> {
        authorize(actor, Action::ReadRuns)?;
        Ok(self
            .live
            .lock()
            .running
            .get(run_id)
            .map(|live| live.snapshot()))
    }
}
