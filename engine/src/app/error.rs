//! What an application operation can fail with: a caller (the CLI, the HTTP API) matches on
//! the kind to choose an exit code or a status; the message names the file, field, row or
//! parameter.

use crate::authz::Denied;

/// Why an application operation failed, by kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// The user is not known (or not given where users are declared).
    #[error("{0}")]
    Unauthenticated(String),
    /// The user's role does not allow the action.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// No such sync, run, change or model.
    #[error("{0}")]
    NotFound(String),
    /// The workspace or the request is invalid (names the file and key, or the parameter).
    #[error("{0}")]
    Invalid(String),
    /// A governance rule refused the action (self-approval, stale review, …).
    #[error("{0}")]
    Refused(String),
    /// The operation could not be carried out (plugins, state, I/O).
    #[error("{0}")]
    Failed(String),
}
