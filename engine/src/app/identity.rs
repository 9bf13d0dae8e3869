//! Who a token or a name is, beyond the name: stable user ids (a name removed from `[users]`
//! and declared again is a new user, whom the old tokens do not authenticate), token
//! lifetimes, and approvals that need declared users.

use super::{App, AppError};
use crate::authz::Actor;
use crate::governance::Requirement;
use crate::state::ApiToken;
use crate::workspace::Governance;
use std::collections::BTreeMap;
use std::time::Duration;

/// Why a `--expires-in` is not a lifetime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--expires-in {0:?}: give a number and a unit, s, m, h, d or w (e.g. 90d, 12h)")]
pub struct InvalidLifetime(pub String);

/// A token lifetime as `token create --expires-in` takes it: `90d`, `12h`, `30m`, `2w`, `45s`.
pub fn parse_lifetime(text: &str) -> Result<Duration, InvalidLifetime> {
    let invalid = || InvalidLifetime(text.to_string());
    let text_trimmed = text.trim();
    let split = text_trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text_trimmed.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit_s = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(unit_s)
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .ok_or_else(invalid)
}

/// The answer to a token whose user is gone. It names no users (a 401 tells a caller who
/// failed to authenticate nothing about who exists).
fn user_gone() -> AppError {
    AppError::Unauthenticated(
        "invalid API token: its user is no longer declared (a user declared again under the same name needs a new token)"
            .into(),
    )
}

impl App {
    /// Brings the state's user ids in line with the users `authority` declares (see
    /// `state::users`); `None` when it declares none.
    pub(super) fn declared_user_ids(
        &self,
        authority: &Governance,
    ) -> Result<Option<BTreeMap<String, String>>, AppError> {
        if !authority.enabled() {
            return Ok(None);
        }
        let names: Vec<&str> = authority.users.keys().map(String::as_str).collect();
        self.state
            .reconcile_user_ids(&names)
            .map(Some)
            .map_err(|e| AppError::Failed(e.to_string()))
    }

    /// The stable id of `user` now: their id among the declared users, or, without
    /// `[users]`, the id the name got when first seen.
    pub(super) fn user_id(&self, user: &str) -> Result<Option<String>, AppError> {
        let authority = self.authority()?;
        Ok(match self.declared_user_ids(&authority)? {
            Some(ids) => ids.get(user).cloned(),
            None => Some(
                self.state
                    .user_id_at_first_sight(user)
                    .map_err(|e| AppError::Failed(e.to_string()))?,
            ),
        })
    }

    /// The actor an authenticated token acts as: its user, if that user (by id, not only
    /// by name) still exists. A token from before ids existed is bound here, once, to the
    /// user who has its name now.
    pub(super) fn token_actor(&self, token: &ApiToken) -> Result<Actor, AppError> {
        let Some(current) = self.user_id(&token.user)? else {
            return Err(user_gone());
        };
        let bound = match &token.user_id {
            Some(id) => id.clone(),
            None => self
                .state
                .bind_legacy_token(&token.id, &current)
                .map_err(|e| AppError::Failed(e.to_string()))?
                .user_id
                .unwrap_or_default(),
        };
        if bound != current {
            return Err(user_gone());
        }
        self.actor(Some(&token.user)).map_err(|_| user_gone())
    }

    /// Without `[users]`, `--as` names anyone, as an admin: an approval could not show the
    /// role a requirement names, so a requirement naming roles cannot be met.
    pub(super) fn approvals_need_declared_users(
        &self,
        requirements: &[&Requirement],
    ) -> Result<(), AppError> {
        if self.authority()?.enabled() || requirements.iter().all(|r| r.roles.is_empty()) {
            return Ok(());
        }
        let needs = requirements
            .iter()
            .map(|r| crate::governance::describe_requirement(r))
            .collect::<Vec<_>>()
            .join("; ");
        Err(AppError::Refused(format!(
            "this needs {needs}, and this workspace declares no [users]: without them --as names anyone, so no approval shows a role. Declare users with their roles in backflow.toml ([users] alice = {{ role = \"admin\" }}, bob = {{ role = \"approver\" }}) and approve as one of them"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_have_a_number_and_a_unit() {
        assert_eq!(parse_lifetime("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_lifetime("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_lifetime("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_lifetime("1s"), Ok(Duration::from_secs(1)));
        for bad in [
            "",
            "90",
            "d",
            "0d",
            "-1d",
            "1y",
            "1.5h",
            "99999999999999999999w",
        ] {
            assert_eq!(
                parse_lifetime(bad),
                Err(InvalidLifetime(bad.into())),
                "{bad}"
            );
        }
    }
}
