//! Who is acting: where users and roles come from (the published configuration once there
//! is one, so nobody makes themselves an admin by editing their working copy) and resolving
//! `--as`/`BACKFLOW_USER` against them.

use super::published::{published_workspace, PublishedError};
use crate::domain::Role;
use crate::state::StateStore;
use crate::workspace::{Governance, Workspace};
use std::path::Path;

/// Who is acting (an authenticated user and their role).
pub type Identity = crate::authz::Actor;

/// Why a user cannot be identified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    /// Users are declared and nobody said who they are.
    #[error("this workspace declares users: say who you are with --as USER or BACKFLOW_USER (users: {known})")]
    MissingUser {
        /// The declared users, comma-separated.
        known: String,
    },
    /// The name is not a declared user.
    #[error("unknown user {user:?} (users: {known})")]
    UnknownUser {
        /// The name given.
        user: String,
        /// The declared users, comma-separated.
        known: String,
    },
}

/// Where users, roles and policies come from: the published configuration, or the working
/// copy until something is published.
pub fn authority(
    root: &Path,
    working: &Workspace,
    state: &StateStore,
) -> Result<Governance, PublishedError> {
    Ok(match published_workspace(root, state)? {
        Some((_, ws)) => ws.governance,
        None => working.governance.clone(),
    })
}

/// Resolves `--as`/`BACKFLOW_USER` against the declared users. Without declared users,
/// everyone acts as an admin of their own workspace.
pub fn identify(governance: &Governance, user: Option<&str>) -> Result<Identity, IdentifyError> {
    if !governance.enabled() {
        let user = user
            .map(str::to_string)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "local".into());
        return Ok(Identity {
            user,
            role: Role::Admin,
        });
    }
    let known = governance
        .users
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let Some(user) = user else {
        return Err(IdentifyError::MissingUser { known });
    };
    let role = governance
        .users
        .get(user)
        .ok_or_else(|| IdentifyError::UnknownUser {
            user: user.to_string(),
            known,
        })?;
    Ok(Identity {
        user: user.to_string(),
        role: *role,
    })
}
