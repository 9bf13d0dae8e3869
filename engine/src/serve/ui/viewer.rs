//! The signed-in user of a UI request, as the pages and the session handlers see it (its own
//! file so that pages, which render it, and sessions, which make it, do not import each other).

use crate::authz::Actor;

/// The signed-in user of a request, with the session's CSRF token.
pub(crate) struct Viewer {
    /// Who is signed in, resolved against the configuration in force.
    pub actor: Actor,
    /// The session's CSRF token, carried by every form that changes state.
    pub csrf: String,
    /// The session's id (its cookie's value), to end it on sign-out.
    pub(super) session: String,
}
