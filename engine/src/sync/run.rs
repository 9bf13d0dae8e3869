//! What the stages of one run share, so that no stage reaches up to the orchestrator
//! (`sync/mod.rs`): why a stage stops the run ([`Abort`]), the run's counters ([`Tally`]) and
//! the service's request to stop starting batches ([`StopSignal`]).

use crate::domain::{OpCounts, RejectedRow, Timings};
use crate::state::StateError;

/// How a run stopped by a shutting-down service begins its error (and becomes `interrupted`).
pub(crate) const SHUTDOWN_STOP: &str = "stopped: the service is shutting down";

/// Why a stage stops a run: the variant says which part failed, the message what went wrong,
/// naming file, field or row. The message becomes the run record's `error`.
#[derive(Debug, thiserror::Error)]
pub enum Abort {
    /// The state store could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// A file of the run (plan files, spill, delivery journal) could not be used; `what` says
    /// which and what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file or folder.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The source failed or sent what it should not.
    #[error("{0}")]
    Source(String),
    /// The model's rows cannot be planned as they are (keys missing, duplicated, retyped…).
    #[error("{0}")]
    Model(String),
    /// The snapshot changed under the plan: another run of the sync delivered meanwhile.
    #[error("the snapshot of sync {sync} changed while the plan was made (key {key}): a run of the sync delivered meanwhile; plan again")]
    SnapshotMoved {
        /// The sync's state key.
        sync: String,
        /// The key whose snapshot entry moved, as text.
        key: String,
    },
    /// The destination failed, refused its config, or cannot take a row.
    #[error("{0}")]
    Destination(String),
    /// The delivery journal could not be committed to the snapshot.
    #[error("{0}")]
    Commit(String),
    /// The run to undo cannot be undone (no changelog, events, unsupported operations).
    #[error("{0}")]
    Undo(String),
    /// The service is shutting down: no batch is started any more.
    #[error("{SHUTDOWN_STOP}; {left} planned rows were not sent and go with the next run")]
    Shutdown {
        /// Planned rows neither delivered nor refused.
        left: u64,
    },
    /// The sync's `time_budget_s` ran out.
    #[error("stopped after the time budget of {seconds} s ({key}); {left} planned rows were not sent and go with the next run")]
    TimeBudget {
        /// The budget, in seconds.
        seconds: u64,
        /// Where the budget is set (file key).
        key: String,
        /// Planned rows neither delivered nor refused.
        left: u64,
    },
    /// A bug in backflow.
    #[error("internal error: {0}")]
    Internal(String),
    /// The delivery stopped, and recording what was acknowledged failed too.
    #[error("{run}; and recording the acknowledged rows failed: {commit}")]
    AlsoUnrecorded {
        /// Why the delivery stopped.
        run: Box<Abort>,
        /// Why the acknowledged rows could not be committed.
        commit: Box<Abort>,
    },
}

impl Abort {
    /// An I/O failure while doing `what`.
    pub(crate) fn io(what: impl Into<String>) -> impl Fn(std::io::Error) -> Abort {
        let what = what.into();
        move |source| Abort::Io {
            what: what.clone(),
            source,
        }
    }

    /// Whether the run stopped because the service is shutting down (then it is
    /// interrupted, not failed: nothing is wrong with the sync).
    pub(crate) fn is_shutdown(&self) -> bool {
        match self {
            Abort::Shutdown { .. } => true,
            Abort::AlsoUnrecorded { run, .. } => run.is_shutdown(),
            _ => false,
        }
    }
}

/// Counters, timings and rejected rows gathered during a run.
#[derive(Default)]
pub(crate) struct Tally {
    pub planned: OpCounts,
    pub delivered: OpCounts,
    pub failed: OpCounts,
    pub rejected: Vec<RejectedRow>,
    pub timings: Timings,
}

impl Tally {
    /// Planned rows neither delivered nor refused yet.
    pub(crate) fn left(&self) -> u64 {
        self.planned.total() - self.delivered.total() - self.failed.total()
    }
}

/// Asks runs to stop starting batches (the service's graceful shutdown). Batches in flight
/// finish and are recorded; what was not sent goes with the next run.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl StopSignal {
    /// Asks every run holding this signal to stop starting batches.
    pub fn stop(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether [`StopSignal::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
