//! API tokens and schedule marks: the records `backflow serve` keeps beside run history.
//!
//! A token is shown once, when created; the store keeps only its SHA-256. A token reads
//! `bft_<id>_<secret>`: the id finds the record without scanning, the secret is checked
//! against the hash.

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

/// A stored API token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// The id, as in `bft_ID_SECRET`.
    pub id: String,
    /// The user the token acts as.
    pub user: String,
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

impl StateStore {
    /// Creates a token for `user`; the secret is returned here and nowhere else.
    pub fn create_token(
        &self,
        user: &str,
        name: &str,
        created_by: &str,
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
            name: name.to_string(),
            secret_sha256: sha256_hex(&secret),
            created_at: now_rfc3339(),
            created_by: created_by.to_string(),
            revoked_at: None,
            revoked_by: None,
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

    /// The token a request presents, if it is valid.
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
        let new = state.create_token("ann", "ci", "ann").unwrap();
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
}
