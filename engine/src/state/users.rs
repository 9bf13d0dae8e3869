//! Stable user ids: what API tokens are bound to, so that a user name removed from `[users]`
//! and declared again later is a new user, whom the old tokens do not authenticate.
//!
//! `[users]` holds names only; the state gives each declared name an id when it first sees
//! it declared (the configuration in force, at each identification) and forgets the id when
//! it sees the name no longer declared. Without `[users]` a name gets an id at first sight
//! and keeps it.

use super::tokens::TOKENS;
use super::{ApiToken, StateError, StateOp, StateStore};
use crate::domain::now_rfc3339;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// user name → JSON [`UserId`].
const USER_IDS: TableDefinition<&str, &[u8]> = TableDefinition::new("user_ids");

/// The id a user name has now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserId {
    /// The id (a ULID): what tokens are bound to.
    pub id: String,
    /// When the name was first seen declared (RFC 3339).
    pub since: String,
}

fn new_id() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

impl StateStore {
    /// Every user name with an id, and its id.
    pub fn user_ids(&self) -> Result<BTreeMap<String, UserId>, StateError> {
        self.read_table(StateOp::ReadUserIds, USER_IDS, BTreeMap::new, |t, doing| {
            let mut out = BTreeMap::new();
            for entry in t.iter().map_err(|e| doing.err(e))? {
                let (k, v) = entry.map_err(|e| doing.err(e))?;
                let id = serde_json::from_slice(v.value()).map_err(|e| {
                    doing.corrupt(format!("unreadable user id of {}: {e}", k.value()))
                })?;
                out.insert(k.value().to_string(), id);
            }
            Ok(out)
        })
    }

    /// Brings the ids in line with the `declared` user names: a name not declared any more
    /// loses its id (tokens made before ids existed, still unbound, are bound to the id
    /// that ends, so they end with it); a declared name without one gets a new one. Writes
    /// only when something changes. Returns name → id.
    pub fn reconcile_user_ids(
        &self,
        declared: &[&str],
    ) -> Result<BTreeMap<String, String>, StateError> {
        let current = self.user_ids()?;
        let retired: Vec<(&String, &UserId)> = current
            .iter()
            .filter(|(name, _)| !declared.contains(&name.as_str()))
            .collect();
        let missing: Vec<&str> = declared
            .iter()
            .copied()
            .filter(|name| !current.contains_key(*name))
            .collect();
        let mut ids: BTreeMap<String, String> = current
            .iter()
            .filter(|(name, _)| declared.contains(&name.as_str()))
            .map(|(name, id)| (name.clone(), id.id.clone()))
            .collect();
        if retired.is_empty() && missing.is_empty() {
            return Ok(ids);
        }
        let doing = self.doing(StateOp::WriteUserIds);
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        {
            let mut users = txn.open_table(USER_IDS).map_err(|e| doing.err(e))?;
            let mut tokens = txn.open_table(TOKENS).map_err(|e| doing.err(e))?;
            for (name, id) in &retired {
                users.remove(name.as_str()).map_err(|e| doing.err(e))?;
                let mut unbound = Vec::new();
                for entry in tokens.iter().map_err(|e| doing.err(e))? {
                    let (_, v) = entry.map_err(|e| doing.err(e))?;
                    if let Ok(token) = serde_json::from_slice::<ApiToken>(v.value()) {
                        if token.user == **name && token.user_id.is_none() {
                            unbound.push(token);
                        }
                    }
                }
                for mut token in unbound {
                    token.user_id = Some(id.id.clone());
                    tokens
                        .insert(token.id.as_str(), doing.encode(&token)?.as_slice())
                        .map_err(|e| doing.err(e))?;
                }
            }
            for name in missing {
                let id = UserId {
                    id: new_id(),
                    since: now_rfc3339(),
                };
                users
                    .insert(name, doing.encode(&id)?.as_slice())
                    .map_err(|e| doing.err(e))?;
                ids.insert(name.to_string(), id.id);
            }
        }
        txn.commit().map_err(|e| doing.err(e))?;
        for (name, _) in retired {
            tracing::info!(user = %name, "user no longer declared: their API tokens no longer authenticate");
        }
        Ok(ids)
    }

    /// The id of `name`, given one now if it has none (for workspaces without `[users]`,
    /// where any name may act).
    pub fn user_id_at_first_sight(&self, name: &str) -> Result<String, StateError> {
        if let Some(id) = self.user_ids()?.remove(name) {
            return Ok(id.id);
        }
        let doing = self.doing(StateOp::WriteUserIds);
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        let id = {
            let mut users = txn.open_table(USER_IDS).map_err(|e| doing.err(e))?;
            let existing = users
                .get(name)
                .map_err(|e| doing.err(e))?
                .and_then(|v| serde_json::from_slice::<UserId>(v.value()).ok());
            match existing {
                Some(id) => id.id,
                None => {
                    let id = UserId {
                        id: new_id(),
                        since: now_rfc3339(),
                    };
                    users
                        .insert(name, doing.encode(&id)?.as_slice())
                        .map_err(|e| doing.err(e))?;
                    id.id
                }
            }
        };
        txn.commit().map_err(|e| doing.err(e))?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_declared_again_after_removal_is_a_new_user() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let first = state.reconcile_user_ids(&["ann", "vic"]).unwrap();
        assert_eq!(state.reconcile_user_ids(&["ann", "vic"]).unwrap(), first);
        let without_vic = state.reconcile_user_ids(&["ann"]).unwrap();
        assert_eq!(without_vic.get("ann"), first.get("ann"));
        assert!(!without_vic.contains_key("vic"));
        let again = state.reconcile_user_ids(&["ann", "vic"]).unwrap();
        assert_ne!(again.get("vic"), first.get("vic"));
        assert_eq!(again.get("ann"), first.get("ann"));
    }

    #[test]
    fn without_users_a_name_keeps_the_id_it_got_at_first_sight() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let id = state.user_id_at_first_sight("sam").unwrap();
        assert_eq!(state.user_id_at_first_sight("sam").unwrap(), id);
        assert_ne!(state.user_id_at_first_sight("kim").unwrap(), id);
    }
}
