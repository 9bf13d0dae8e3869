//! Why a run could not start ([`RunError`]): nothing was read or written, nothing recorded
//! (or, for [`RunError::State`], the record could not be written).

use super::prepare::PrepareError;
use crate::state::{LeaseError, StateError};

/// Why [`run_sync`](super::run_sync) returned no run record.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another run of the sync holds its lease (in this process or another).
    #[error("sync {sync} is already running since {since}, run ID {run_id}: wait for it to finish (`backflow runs show {run_id}`)")]
    LeaseBusy {
        /// The sync's state key.
        sync: String,
        /// The run holding the lease.
        run_id: String,
        /// When that run started.
        since: String,
    },
    /// The lease file could not be used.
    #[error(transparent)]
    Lease(LeaseError),
    /// The workspace has approval policies and the run was started without its gate.
    #[error("sync {sync}: this workspace has approval policies, and this run was started without its approval gate")]
    NoApprovalGate {
        /// The sync asked to run.
        sync: String,
    },
    /// The sync's config or plugins are not usable.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The state store failed while recording the run.
    #[error(transparent)]
    State(#[from] StateError),
}

impl From<LeaseError> for RunError {
    fn from(e: LeaseError) -> RunError {
        match e {
            LeaseError::Busy {
                sync,
                run_id,
                since,
            } => RunError::LeaseBusy {
                sync,
                run_id,
                since,
            },
            other => RunError::Lease(other),
        }
    }
}
