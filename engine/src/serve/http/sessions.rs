//! Signed-in browser sessions of the web UI, in memory: a restart of the service signs
//! everyone out.

use crate::app::SessionGrant;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// One signed-in browser.
pub struct Session {
    /// Who signed in, and with which API token.
    pub grant: SessionGrant,
    /// The token every state-changing form must carry.
    pub csrf: String,
    /// When the session ends.
    pub expires: Instant,
}

/// Signed-in sessions by session id (the cookie's value).
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session.
    pub fn insert(&self, id: String, session: Session) {
        self.map().insert(id, session);
    }

    /// The grant and CSRF token of a session that has not expired (expired ones are dropped).
    pub fn get(&self, id: &str) -> Option<(SessionGrant, String)> {
        let mut map = self.map();
        map.retain(|_, session| session.expires > Instant::now());
        map.get(id).map(|s| (s.grant.clone(), s.csrf.clone()))
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.map().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn session(expires: Instant) -> Session {
        Session {
            grant: SessionGrant {
                user: "ada".into(),
                token_id: "t1".into(),
            },
            csrf: "c".into(),
            expires,
        }
    }

    /// A session ends at its expiry (the sign-in's eight hours): after it, its cookie signs
    /// nobody in, and it is dropped from memory.
    #[test]
    fn an_expired_session_is_gone() {
        let sessions = Sessions::default();
        let now = Instant::now();
        sessions.insert("live".into(), session(now + Duration::from_secs(3600)));
        // Expired a moment ago (an `Instant` in the past, not a wait).
        let past = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        sessions.insert("expired".into(), session(past));
        assert_eq!(
            sessions.get("live").map(|(g, _)| g.user),
            Some("ada".into())
        );
        assert!(sessions.get("expired").is_none());
        assert!(!sessions.map().contains_key("expired"), "dropped, not kept");
        sessions.remove("live");
        assert!(sessions.get("live").is_none());
    }
}
