//! API tokens and schedule marks: the records `backflow serve` keeps beside run history.
//!
//! A token is shown once, when created; the store keeps only its SHA-256. A token reads
//! `bft_<id>_<secret>`: the id finds the record without scanning, the secret is checked
//! against the hash. A token is bound to its user's stable id (see `users`), not only the
//! name, and expires (by default after [`DEFAULT_TOKEN_LIFETIME`]).
//!
//! Tokens made before ids and expiry existed have neither: the first time such a token
//! authenticates, it is bound to the user who has its name then and expires
//! [`DEFAULT_TOKEN_LIFETIME`] later; one whose user is removed before that is bound to the
//! removed user (and so ends with them).

use super::{StateError, StateOp, StateStore};
use crate::domain::now_rfc3339;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// token id → JSON [`ApiToken`].
pub(super) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
/// sync name → unix seconds of the last schedule fire the service handled.
pub(super) const SCHEDULE_MARKS: TableDefinition<&str, i64> =
    TableDefinition::new("schedule_marks");

/// How long a token lives unless `token create --expires-in` says otherwise: 90 days.
pub const DEFAULT_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(90 * 24 * 3600);

/// Last use is recorded at most this often per token (each write is a transaction).
const LAST_USE_PRECISION: std::time::Duration = std::time::Duration::from_secs(60);

/// A stored API token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// The id, as in `bft_ID_SECRET`.
    pub id: String,
    /// The user the token acts as.
    pub user: String,
    /// The stable id of that user when the token was made: a user of the same name declared
    /// later has another id, and the token does not act as them. `None` for a token made
    /// before ids existed, until its first use binds it.
    #[serde(default)]
    pub user_id: Option<String>,
    /// What it is for (`ci`, `laptop`…).
    pub name: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
    /// When it was revoked, if it was.
    #[serde(default)]
    pub revoked_at: Option<String>,
    /// Who revoked it, if anyone did.
    #[serde(default)]
    pub revoked_by: Option<String>,
    /// When it stops authenticating (RFC 3339); `None` for a token made before expiry
    /// existed, until its first use gives it [`DEFAULT_TOKEN_LIFETIME`].
    #[serde(default)]
    pub expires_at: Option<String>,
    /// When it last authenticated (RFC 3339, to the minute), if ever.
    #[serde(default)]
    pub last_used_at: Option<String>,
}

/// Why a presented token does not authenticate (all answer 401; the reason goes to the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejected {
    /// Not `bft_ID_SECRET`.
    #[error("the token is not of the form bft_ID_SECRET")]
    Malformed,
    /// No token has this id, or its secret does not match.
    #[error("no such token")]
    Unknown,
    /// The token (by id) was revoked.
    #[error("token {0} was revoked")]
    Revoked(String),
    /// The token (by id) expired.
    #[error("token {0} expired at {1}; create a new one with `backflow token create`")]
    Expired(String, String),
    /// The token could not be read from the state file.
    #[error("storage: {0}")]
    Storage(String),
}

/// A new token: its record and the text handed to the user once.
pub struct NewToken {
    /// What is stored.
    pub record: ApiToken,
    /// `bft_ID_SECRET`, shown once.
    pub secret_text: String,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Splits `bft_ID_SECRET`.
pub fn parse_token(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("bft_")?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && secret.len() >= 32 && secret.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some((id, secret))
}

/// `now + lifetime` as RFC 3339 (saturating far in the future).
fn after(lifetime: std::time::Duration) -> String {
    let now = jiff::Timestamp::now();
    jiff::SignedDuration::try_from(lifetime)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(jiff::Timestamp::MAX)
        .to_string()
}

/// Whether the RFC 3339 time `at` has passed (an unreadable time counts as passed).
fn has_passed(at: &str) -> bool {
    at.parse::<jiff::Timestamp>()
        .map_or(true, |t| t <= jiff::Timestamp::now())
}

impl StateStore {
    /// Creates a token for `user` (whose stable id is `user_id`), valid for `lifetime`; the
    /// secret is returned here and nowhere else.
    pub fn create_token(
        &self,
        user: &str,
        user_id: &str,
        name: &str,
        created_by: &str,
        lifetime: std::time::Duration,
    ) -> Result<NewToken, StateError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| {
            self.doing(StateOp::WriteToken)
                .other(format!("no randomness for a token: {e}"))
        })?;
        let secret = hex::encode(secret);
        let id = ulid::Ulid::new().to_string().to_lowercase();
        let record = ApiToken {
            id: id.clone(),
            user: user.to_string(),
            user_id: Some(user_id.to_string()),
            name: name.to_string(),
            secret_sha256: sha256_hex(&secret),
            created_at: now_rfc3339(),
            created_by: created_by.to_string(),
            revoked_at: None,
            revoked_by: None,
            expires_at: Some(after(lifetime)),
            last_used_at: None,
        };
        self.put_token(&record)?;
        Ok(NewToken {
            secret_text: format!("bft_{id}_{secret}"),
            record,
        })
    }

    fn put_token(&self, record: &ApiToken) -> Result<(), StateError> {
        let doing = self.doing(StateOp::WriteToken);
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        {
            let mut t = txn.open_table(TOKENS).map_err(|e| doing.err(e))?;
            t.insert(record.id.as_str(), doing.encode(record)?.as_slice())
                .map_err(|e| doing.err(e))?;
        }
        txn.commit().map_err(|e| doing.err(e))
    }

    /// One token's record, revoked or not.
    pub fn token(&self, id: &str) -> Result<Option<ApiToken>, StateError> {
        self.read_table(
            StateOp::ReadTokens,
            TOKENS,
            || None,
            |t, doing| {
                let value = t.get(id).map_err(|e| doing.err(e))?;
                value
                    .map(|v| {
                        serde_json::from_slice(v.value())
                            .map_err(|e| doing.corrupt(format!("unreadable token {id}: {e}")))
                    })
                    .transpose()
            },
        )
    }

    /// Every token, oldest first.
    pub fn tokens(&self) -> Result<Vec<ApiToken>, StateError> {
        self.read_table(StateOp::ReadTokens, TOKENS, Vec::new, |t, doing| {
            let mut out = Vec::new();
            for entry in t.iter().map_err(|e| doing.err(e))? {
                let (k, v) = entry.map_err(|e| doing.err(e))?;
                out.push(
                    serde_json::from_slice(v.value()).map_err(|e| {
                        doing.corrupt(format!("unreadable token {}: {e}", k.value()))
                    })?,
                );
            }
            Ok(out)
        })
    }

    /// Marks a token revoked (kept, so `token list` shows who revoked it when).
    pub fn revoke_token(&self, id: &str, by: &str) -> Result<Option<ApiToken>, StateError> {
        let Some(mut record) = self.token(id)? else {
            return Ok(None);
        };
        if record.revoked_at.is_none() {
            record.revoked_at = Some(now_rfc3339());
            record.revoked_by = Some(by.to_string());
            self.put_token(&record)?;
        }
        Ok(Some(record))
    }

    /// The token a request presents, if it is valid (its secret matches, not revoked, not
    /// expired); records its use. The caller checks that its user (by id) still exists.
    pub fn authenticate_token(&self, text: &str) -> Result<ApiToken, TokenRejected> {
        let (id, secret) = parse_token(text.trim()).ok_or(TokenRejected::Malformed)?;
        let record = self
            .token(id)
            .map_err(|e| TokenRejected::Storage(e.to_string()))?
            .ok_or(TokenRejected::Unknown)?;
        // Both sides are hashes of the same length: comparing them leaks nothing useful.
        if record.secret_sha256 != sha256_hex(secret) {
            return Err(TokenRejected::Unknown);
        }
        if record.revoked_at.is_some() {
            return Err(TokenRejected::Revoked(record.id));
        }
        if let Some(at) = record.expires_at.as_deref().filter(|at| has_passed(at)) {
            return Err(TokenRejected::Expired(record.id.clone(), at.to_string()));
        }
        self.note_use(record)
            .map_err(|e| TokenRejected::Storage(e.to_string()))
    }

    /// Whether token `id` still authenticates (exists, not revoked, not expired): what a
    /// signed-in session checks at each request.
    pub fn token_in_force(&self, id: &str) -> Result<Option<ApiToken>, StateError> {
        Ok(self
            .token(id)?
            .filter(|t| t.revoked_at.is_none() && !t.expires_at.as_deref().is_some_and(has_passed)))
    }

    /// Binds a token made before ids and expiry existed to `user_id` (the id its user has
    /// now), expiring [`DEFAULT_TOKEN_LIFETIME`] from now. A bound token is left as it is.
    pub fn bind_legacy_token(&self, id: &str, user_id: &str) -> Result<ApiToken, StateError> {
        let mut record = self.token(id)?.ok_or_else(|| {
            self.doing(StateOp::WriteToken)
                .other(format!("no token {id}"))
        })?;
        if record.user_id.is_none() {
            record.user_id = Some(user_id.to_string());
            record
                .expires_at
                .get_or_insert_with(|| after(DEFAULT_TOKEN_LIFETIME));
            self.put_token(&record)?;
        }
        Ok(record)
    }

    /// Records that `record` authenticated now (at most once a minute).
    fn note_use(&self, mut record: ApiToken) -> Result<ApiToken, StateError> {
        let recent = record.last_used_at.as_deref().is_some_and(|at| {
            at.parse::<jiff::Timestamp>().is_ok_and(|t| {
                jiff::Timestamp::now().duration_since(t).unsigned_abs() < LAST_USE_PRECISION
            })
        });
        if !recent {
            record.last_used_at = Some(now_rfc3339());
            self.put_token(&record)?;
        }
        Ok(record)
    }

    /// The last schedule fire handled for `sync` (unix seconds).
    pub fn schedule_mark(&self, sync: &str) -> Result<Option<i64>, StateError> {
        self.read_table(
            StateOp::ReadScheduleMark,
            SCHEDULE_MARKS,
            || None,
            |t, doing| Ok(t.get(sync).map_err(|e| doing.err(e))?.map(|v| v.value())),
        )
    }

    /// Records the last schedule fire handled for `sync` (unix seconds).
    pub fn set_schedule_mark(&self, sync: &str, unix_s: i64) -> Result<(), StateError> {
        let doing = self.doing(StateOp::WriteScheduleMark);
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        {
            let mut t = txn.open_table(SCHEDULE_MARKS).map_err(|e| doing.err(e))?;
            t.insert(sync, unix_s).map_err(|e| doing.err(e))?;
        }
        txn.commit().map_err(|e| doing.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let new = state
            .create_token("ann", "id-ann", "ci", "ann", DEFAULT_TOKEN_LIFETIME)
            .unwrap();
        assert!(
            !serde_json::to_string(&new.record)
                .unwrap()
                .contains(new.secret_text.rsplit('_').next().unwrap()),
            "the secret is not stored"
        );
        assert_eq!(
            state.authenticate_token(&new.secret_text).unwrap().user,
            "ann"
        );
        let mut wrong = new.secret_text.clone();
        wrong.pop();
        wrong.push(if new.secret_text.ends_with('0') {
            '1'
        } else {
            '0'
        });
        assert_eq!(
            state.authenticate_token(&wrong),
            Err(TokenRejected::Unknown)
        );
        assert_eq!(
            state.authenticate_token("Bearer nonsense"),
            Err(TokenRejected::Malformed)
        );
        state.revoke_token(&new.record.id, "bob").unwrap();
        assert_eq!(
            state.authenticate_token(&new.secret_text),
            Err(TokenRejected::Revoked(new.record.id.clone()))
        );
        assert_eq!(
            state.tokens().unwrap()[0].revoked_by.as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn tokens_expire_and_record_their_last_use() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let lasting = state
            .create_token("ann", "id-ann", "ci", "ann", DEFAULT_TOKEN_LIFETIME)
            .unwrap();
        assert_eq!(lasting.record.last_used_at, None);
        let used = state.authenticate_token(&lasting.secret_text).unwrap();
        assert_eq!(used.user_id.as_deref(), Some("id-ann"));
        assert!(state
            .token(&used.id)
            .unwrap()
            .unwrap()
            .last_used_at
            .is_some());
        let expires = lasting
            .record
            .expires_at
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap();
        let days = expires.duration_since(jiff::Timestamp::now()).as_hours() / 24;
        assert!((89..=90).contains(&days), "{days}");
        let spent = state
            .create_token("ann", "id-ann", "ci", "ann", std::time::Duration::ZERO)
            .unwrap();
        let Err(TokenRejected::Expired(id, _)) = state.authenticate_token(&spent.secret_text)
        else {
            panic!("an expired token authenticated")
        };
        assert_eq!(id, spent.record.id);
        assert!(TokenRejected::Expired(id.clone(), "T".into())
            .to_string()
            .contains("expired"));
        assert!(state.token_in_force(&id).unwrap().is_none());
        assert!(state.token_in_force(&lasting.record.id).unwrap().is_some());
    }

    /// Tokens stored before ids and expiry existed still read, and are bound once.
    #[test]
    fn tokens_of_the_previous_format_are_bound_once_with_the_default_lifetime() {
        let old = r#"{"id":"x1","user":"vic","name":"ci","secret_sha256":"00","created_at":"2024-01-01T00:00:00Z","created_by":"vic"}"#;
        let token: ApiToken = serde_json::from_str(old).unwrap();
        assert_eq!(
            (token.user_id.as_deref(), token.expires_at.as_deref()),
            (None, None)
        );
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        state.put_token(&token).unwrap();
        let bound = state.bind_legacy_token("x1", "id-vic").unwrap();
        assert_eq!(bound.user_id.as_deref(), Some("id-vic"));
        assert!(bound.expires_at.is_some());
        let again = state.bind_legacy_token("x1", "id-other").unwrap();
        assert_eq!(again.user_id.as_deref(), Some("id-vic"), "bound once");
    }
}
