//! The approval-policy side of the contract as plain Rust types: the request a policy
//! evaluates and its decision. The engine stores these in change requests and run gates, so
//! their serde forms are part of the state format: change them only with a migration.

use std::fmt;

/// A workspace role. Ordered by what it may do: `Viewer < Contributor < Approver < Admin`
/// (the engine's authorization table compares roles with `>=`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Contributor,
    Approver,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "contributor" => Some(Role::Contributor),
            "approver" => Some(Role::Approver),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Contributor => "contributor",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a policy is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestKind {
    /// A change request to the configuration.
    ConfigChange,
    /// A run about to deliver.
    Run,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::ConfigChange => "config-change",
            RequestKind::Run => "run",
        }
    }
}

/// What a request would do to one sync: planned counts and the labels of its columns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncImpact {
    pub sync_name: String,
    pub destination: String,
    pub mode: String,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub column_labels: Vec<String>,
}

/// The request a policy evaluates.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApprovalRequest {
    pub kind: RequestKind,
    pub author: String,
    pub author_role: Role,
    pub description: String,
    pub syncs: Vec<SyncImpact>,
}

/// A policy's answer. Stored by the engine as `{"decision": "approve", "reason": …}`,
/// `{"decision": "require", "count": …, "roles": […], …}` or `{"decision": "reject", …}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "DecisionRecord", into = "DecisionRecord")]
pub enum Decision {
    /// Go ahead; the text says why.
    Approve(String),
    /// Go ahead once `count` people holding one of `roles` approved.
    Require {
        count: u32,
        roles: Vec<Role>,
        allow_self_approval: bool,
        reason: String,
    },
    /// Refuse; the text says why.
    Reject(String),
}

/// The stored form of a [`Decision`]: internally tagged, every variant a record.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
enum DecisionRecord {
    Approve {
        reason: String,
    },
    Require {
        count: u32,
        roles: Vec<Role>,
        allow_self_approval: bool,
        reason: String,
    },
    Reject {
        reason: String,
    },
}

impl From<DecisionRecord> for Decision {
    fn from(d: DecisionRecord) -> Decision {
        match d {
            DecisionRecord::Approve { reason } => Decision::Approve(reason),
            DecisionRecord::Require {
                count,
                roles,
                allow_self_approval,
                reason,
            } => Decision::Require {
                count,
                roles,
                allow_self_approval,
                reason,
            },
            DecisionRecord::Reject { reason } => Decision::Reject(reason),
        }
    }
}

impl From<Decision> for DecisionRecord {
    fn from(d: Decision) -> DecisionRecord {
        match d {
            Decision::Approve(reason) => DecisionRecord::Approve { reason },
            Decision::Require {
                count,
                roles,
                allow_self_approval,
                reason,
            } => DecisionRecord::Require {
                count,
                roles,
                allow_self_approval,
                reason,
            },
            Decision::Reject(reason) => DecisionRecord::Reject { reason },
        }
    }
}

/// A built-in review rule a policy may explicitly waive (contract 0.3.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaivableRule {
    /// A change or run needs an approver other than its author.
    ApproverOtherThanAuthor,
}

impl WaivableRule {
    pub fn as_str(self) -> &'static str {
        match self {
            WaivableRule::ApproverOtherThanAuthor => "approver-other-than-author",
        }
    }
}

/// A plugin build that differs from the published one (contract 0.3.0).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginChange {
    pub name: String,
    /// The published build's hash; `None` for a plugin new to the workspace.
    pub old_hash: Option<String>,
    pub new_hash: String,
    /// What its spec declares differently, one line each.
    pub spec_changes: Vec<String>,
}

/// A requirement the engine adds on its own, with why (contract 0.3.0).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuiltInRequirement {
    pub rule: String,
    pub reason: String,
    pub roles: Vec<Role>,
    pub count: u32,
}

/// What 0.3.0 policies see beside the [`ApprovalRequest`]: plugin build changes and the
/// built-in requirements. Older policies are not shown it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ReviewContext {
    pub plugin_changes: Vec<PluginChange>,
    pub built_in: Vec<BuiltInRequirement>,
}

/// A policy's whole answer (contract 0.3.0): its decision and the built-in rules it
/// explicitly waives (always none for 0.1.0 and 0.2.0 policies).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyDecision {
    pub decision: Decision,
    pub waive: Vec<WaivableRule>,
}

impl From<Decision> for PolicyDecision {
    /// A decision that waives nothing.
    fn from(decision: Decision) -> PolicyDecision {
        PolicyDecision {
            decision,
            waive: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored form is what earlier engines wrote; a change here breaks existing state.
    #[test]
    fn decisions_keep_their_stored_form() {
        let require = Decision::Require {
            count: 2,
            roles: vec![Role::Approver, Role::Admin],
            allow_self_approval: false,
            reason: "pii".into(),
        };
        let json = serde_json::to_value(&require).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"decision": "require", "count": 2, "roles": ["approver", "admin"], "allow_self_approval": false, "reason": "pii"})
        );
        assert_eq!(serde_json::from_value::<Decision>(json).unwrap(), require);
        let approve = serde_json::to_value(Decision::Approve("ok".into())).unwrap();
        assert_eq!(
            approve,
            serde_json::json!({"decision": "approve", "reason": "ok"})
        );
        assert_eq!(
            serde_json::to_value(RequestKind::ConfigChange).unwrap(),
            "config-change"
        );
    }

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(
            Role::Viewer < Role::Contributor
                && Role::Contributor < Role::Approver
                && Role::Approver < Role::Admin
        );
        for r in [Role::Viewer, Role::Contributor, Role::Approver, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}
