//! Approval policies: asking each policy plugin, combining their verdicts (strictest wins),
//! the requirements no policy can relax, and whether reviews meet a requirement.

use super::diff::{ConfigDiff, EntityChangeKind};
use crate::domain::Role;
use crate::host::evaluate_policy;
use crate::workspace::{Governance, Workspace};
use backflow_plugin_sdk::{ApprovalRequest, Decision};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Approvals some policy asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// The policy asking (`default`, `built-in` or a policy's name).
    pub policy: String,
    /// How many approvals.
    pub count: u32,
    /// From which roles.
    pub roles: Vec<Role>,
    /// Whether the author's own approval counts.
    pub allow_self_approval: bool,
    /// Why, in the policy's words.
    pub reason: String,
}

/// A reviewer's verdict on a change request or a held run (`approve` or `reject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewVerdict {
    /// `approve`.
    Approve,
    /// `reject`.
    Reject,
}

impl ReviewVerdict {
    /// `approve` or `reject`, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewVerdict::Approve => "approve",
            ReviewVerdict::Reject => "reject",
        }
    }
}

impl std::fmt::Display for ReviewVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Pages render a verdict as its text (`status(&review.verdict)`), as when it was a string.
impl std::ops::Deref for ReviewVerdict {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// One review of a change request or a held run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Review {
    /// The reviewer.
    pub user: String,
    /// Their role when they reviewed.
    pub role: Role,
    /// `approve` or `reject`.
    pub verdict: ReviewVerdict,
    /// What they said.
    pub comment: Option<String>,
    /// When (RFC 3339).
    pub at: String,
}

/// What one policy decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyVerdict {
    /// The policy's name.
    pub policy: String,
    /// Its decision (approve, require approvals, reject).
    #[serde(flatten)]
    pub decision: Decision,
}

/// Whether `reviews` meet `r` for a request by `author`.
pub(crate) fn requirement_met(r: &Requirement, author: &str, reviews: &[Review]) -> bool {
    let n = reviews
        .iter()
        .filter(|rv| {
            rv.verdict == ReviewVerdict::Approve
                && r.roles.contains(&rv.role)
                && (r.allow_self_approval || rv.user != author)
        })
        .count();
    n as u32 >= r.count
}

/// Requirements when no policy is configured: one approver or admin, not the author.
fn default_requirement() -> Requirement {
    Requirement {
        policy: "default".into(),
        count: 1,
        roles: vec![Role::Approver, Role::Admin],
        allow_self_approval: false,
        reason: "no approval policy is configured: one approver or admin other than the author"
            .into(),
    }
}

/// A requirement as a sentence: `1 approval(s) from approver or admin (policy: reason)`.
pub fn describe_requirement(r: &Requirement) -> String {
    let roles = r
        .roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(" or ");
    format!(
        "{} approval(s) from {roles} ({}: {})",
        r.count, r.policy, r.reason
    )
}

/// Several requirements, described and joined with `; `.
pub(crate) fn describe_requirements<'r>(rs: impl IntoIterator<Item = &'r Requirement>) -> String {
    rs.into_iter()
        .map(describe_requirement)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Asks every policy; a policy that fails (trap, timeout, error) rejects: fail closed.
pub(crate) async fn ask_policies(
    host: &crate::plugins::Registry,
    root: &Path,
    governance: &Governance,
    plugins_dir: &Path,
    request: &ApprovalRequest,
) -> Vec<PolicyVerdict> {
    let mut out = Vec::new();
    for policy in &governance.policies {
        let decision = async {
            let plugin = crate::plugins::resolve_pinned(
                host,
                root,
                plugins_dir,
                &policy.plugin,
                governance
                    .plugin_pins
                    .get(&policy.plugin)
                    .map(String::as_str),
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
            Workspace::check_pin(
                &governance.plugin_pins,
                &policy.plugin,
                &plugin.path,
                &plugin.hash,
            )
            .map_err(|e| e.to_string())?;
            crate::host::expect_kind(&plugin, backflow_plugin_sdk::PluginKind::ApprovalPolicy)
                .map_err(|e| e.to_string())?;
            evaluate_policy(host, &plugin, policy.limits, &policy.config_json, request)
                .await
                .map_err(|e| e.to_string())
        }
        .await
        .unwrap_or_else(|e| {
            Decision::Reject(format!(
                "policy {} failed, so the request is rejected (fail closed): {e}",
                policy.name
            ))
        });
        out.push(PolicyVerdict {
            policy: policy.name.clone(),
            decision,
        });
    }
    out
}

/// Strictest wins: any rejection rejects; otherwise every requirement must be met. Returns
/// the rejections (joined) and the requirements; with `no_policies`, the default requirement.
pub(crate) fn combine(
    verdicts: &[PolicyVerdict],
    no_policies: bool,
) -> (Option<String>, Vec<Requirement>) {
    let rejections: Vec<String> = verdicts
        .iter()
        .filter_map(|v| match &v.decision {
            Decision::Reject(reason) => Some(format!("{}: {reason}", v.policy)),
            _ => None,
        })
        .collect();
    let requirements: Vec<Requirement> = verdicts
        .iter()
        .filter_map(|v| match &v.decision {
            Decision::Require {
                count,
                roles,
                allow_self_approval,
                reason,
            } => Some(Requirement {
                policy: v.policy.clone(),
                count: *count,
                roles: roles.clone(),
                allow_self_approval: *allow_self_approval,
                reason: reason.clone(),
            }),
            _ => None,
        })
        .collect();
    let rejected = if rejections.is_empty() {
        None
    } else {
        Some(rejections.join("; "))
    };
    if no_policies {
        return (rejected, vec![default_requirement()]);
    }
    (rejected, requirements)
}

/// One admin other than the author, for `reason`.
fn admin_requirement(reason: String) -> Requirement {
    Requirement {
        policy: "built-in".into(),
        count: 1,
        roles: vec![Role::Admin],
        allow_self_approval: false,
        reason,
    }
}

/// Rules no policy can relax: a change to who may do what (users, policies, approval
/// settings, workspace settings) needs an admin other than the author, and so does a change
/// whose affected syncs could not be dry-run (their counts would understate it).
pub(crate) fn built_in_requirements(diff: &ConfigDiff) -> Vec<Requirement> {
    let mut out = Vec::new();
    let governance: Vec<String> = diff
        .entities
        .iter()
        .filter(|e| matches!(e.kind.as_str(), "users" | "policies" | "settings"))
        .map(|e| format!("{} {} {}", e.change, e.kind, e.name))
        .collect();
    if !governance.is_empty() {
        out.push(admin_requirement(format!(
            "changes who may do what ({})",
            governance.join(", ")
        )));
    }
    // What backflow may touch and where it may send: adding a destination (staging or not)
    // or changing any grants is reviewed by an admin, whatever the policies say.
    let mut reach: Vec<String> = diff
        .entities
        .iter()
        .filter(|e| e.kind == "destinations" && e.change == EntityChangeKind::Added)
        .map(|e| format!("adds destination {}", e.name))
        .collect();
    reach.extend(diff.changed_grants.iter().map(|g| format!("changes {g}")));
    if !reach.is_empty() {
        out.push(admin_requirement(format!(
            "changes what backflow may reach ({})",
            reach.join(", ")
        )));
    }
    if !diff.removed_labels.is_empty() {
        out.push(admin_requirement(format!(
            "removes column labels ({})",
            diff.removed_labels.join(", ")
        )));
    }
    let unplanned: Vec<&str> = diff
        .syncs
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.impact.sync_name.as_str())
        .collect();
    if !unplanned.is_empty() {
        out.push(admin_requirement(format!(
            "sync(s) {} could not be dry-run, so their size is unknown",
            unplanned.join(", ")
        )));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::diff::{EntityChange, SyncPlanCounts};
    use super::*;
    use backflow_plugin_sdk::SyncImpact;

    fn verdict(policy: &str, decision: Decision) -> PolicyVerdict {
        PolicyVerdict {
            policy: policy.into(),
            decision,
        }
    }

    fn require(count: u32, roles: Vec<Role>, allow_self_approval: bool) -> Decision {
        Decision::Require {
            count,
            roles,
            allow_self_approval,
            reason: "big".into(),
        }
    }

    fn review(user: &str, role: Role, verdict: ReviewVerdict) -> Review {
        Review {
            user: user.into(),
            role,
            verdict,
            comment: None,
            at: "2024-01-01T00:00:00Z".into(),
        }
    }

    fn impact(sync: &str) -> SyncImpact {
        SyncImpact {
            sync_name: sync.into(),
            destination: "hook".into(),
            mode: "upsert".into(),
            added: 1,
            changed: 0,
            removed: 0,
            column_labels: vec![],
        }
    }

    fn empty_diff() -> ConfigDiff {
        ConfigDiff {
            published_hash: None,
            working_hash: "w".into(),
            entities: vec![],
            syncs: vec![],
            text: String::new(),
            removed_labels: vec![],
            changed_grants: vec![],
        }
    }

    fn entity(kind: &str, name: &str, change: EntityChangeKind) -> EntityChange {
        EntityChange {
            kind: kind.into(),
            name: name.into(),
            change,
        }
    }

    #[test]
    fn any_rejection_rejects_and_names_each_policy() {
        let verdicts = [
            verdict("a", Decision::Reject("too many".into())),
            verdict("b", Decision::Approve("fine".into())),
            verdict("c", Decision::Reject("pii".into())),
            verdict("d", require(1, vec![Role::Admin], false)),
        ];
        let (rejected, requirements) = combine(&verdicts, false);
        assert_eq!(rejected.as_deref(), Some("a: too many; c: pii"));
        assert_eq!(requirements.len(), 1);
        assert_eq!(requirements[0].policy, "d");
    }

    #[test]
    fn requirements_of_every_policy_are_kept() {
        let verdicts = [
            verdict("a", require(2, vec![Role::Approver], true)),
            verdict("b", Decision::Approve("fine".into())),
            verdict("c", require(1, vec![Role::Admin], false)),
        ];
        let (rejected, requirements) = combine(&verdicts, false);
        assert_eq!(rejected, None);
        assert_eq!(
            requirements,
            vec![
                Requirement {
                    policy: "a".into(),
                    count: 2,
                    roles: vec![Role::Approver],
                    allow_self_approval: true,
                    reason: "big".into(),
                },
                Requirement {
                    policy: "c".into(),
                    count: 1,
                    roles: vec![Role::Admin],
                    allow_self_approval: false,
                    reason: "big".into(),
                },
            ]
        );
    }

    #[test]
    fn approvals_alone_require_nothing() {
        let verdicts = [verdict("a", Decision::Approve("fine".into()))];
        assert_eq!(combine(&verdicts, false), (None, vec![]));
    }

    #[test]
    fn no_policies_means_the_default_requirement() {
        let (rejected, requirements) = combine(&[], true);
        assert_eq!(rejected, None);
        assert_eq!(requirements, vec![default_requirement()]);
        assert_eq!(requirements[0].policy, "default");
        assert_eq!(requirements[0].roles, vec![Role::Approver, Role::Admin]);
        assert!(!requirements[0].allow_self_approval);
    }

    #[test]
    fn a_requirement_needs_enough_approvals_from_its_roles_by_others() {
        let r = Requirement {
            policy: "p".into(),
            count: 2,
            roles: vec![Role::Approver, Role::Admin],
            allow_self_approval: false,
            reason: "r".into(),
        };
        let one = [review("bob", Role::Approver, ReviewVerdict::Approve)];
        assert!(!requirement_met(&r, "ann", &one));
        let two = [
            review("bob", Role::Approver, ReviewVerdict::Approve),
            review("cat", Role::Admin, ReviewVerdict::Approve),
        ];
        assert!(requirement_met(&r, "ann", &two));
        // The author's own approval, a contributor's and a rejection do not count.
        let not_counted = [
            review("bob", Role::Approver, ReviewVerdict::Approve),
            review("ann", Role::Admin, ReviewVerdict::Approve),
            review("dan", Role::Contributor, ReviewVerdict::Approve),
            review("eve", Role::Admin, ReviewVerdict::Reject),
        ];
        assert!(!requirement_met(&r, "ann", &not_counted));
        let self_ok = Requirement {
            allow_self_approval: true,
            ..r
        };
        assert!(requirement_met(&self_ok, "ann", &not_counted));
    }

    #[test]
    fn a_change_with_nothing_sensitive_has_no_built_in_requirement() {
        let mut diff = empty_diff();
        diff.entities = vec![
            entity("syncs", "s", EntityChangeKind::Modified),
            entity("destinations", "old", EntityChangeKind::Removed),
            entity("destinations", "hook", EntityChangeKind::Modified),
        ];
        assert_eq!(built_in_requirements(&diff), vec![]);
    }

    #[test]
    fn governance_reach_labels_and_unplanned_syncs_need_an_admin() {
        let mut diff = empty_diff();
        diff.entities = vec![
            entity("users", "bob", EntityChangeKind::Added),
            entity("policies", "size", EntityChangeKind::Modified),
            entity("settings", "approvals", EntityChangeKind::Removed),
            entity("destinations", "crm", EntityChangeKind::Added),
            entity("models", "m", EntityChangeKind::Modified),
        ];
        diff.changed_grants = vec!["sources.files.grants".into()];
        diff.removed_labels = vec!["email:pii".into()];
        diff.syncs = vec![
            SyncPlanCounts {
                impact: impact("planned"),
                error: None,
            },
            SyncPlanCounts {
                impact: impact("broken"),
                error: Some("no such file".into()),
            },
        ];
        let requirements = built_in_requirements(&diff);
        let reasons: Vec<&str> = requirements.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            vec![
                "changes who may do what (added users bob, modified policies size, removed settings approvals)",
                "changes what backflow may reach (adds destination crm, changes sources.files.grants)",
                "removes column labels (email:pii)",
                "sync(s) broken could not be dry-run, so their size is unknown",
            ]
        );
        for r in &requirements {
            assert_eq!(r.policy, "built-in");
            assert_eq!((r.count, r.roles.as_slice()), (1, &[Role::Admin][..]));
            assert!(!r.allow_self_approval);
        }
    }

    #[test]
    fn a_requirement_reads_as_a_sentence() {
        let r = Requirement {
            policy: "size".into(),
            count: 2,
            roles: vec![Role::Approver, Role::Admin],
            allow_self_approval: false,
            reason: "over 100 rows".into(),
        };
        assert_eq!(
            describe_requirement(&r),
            "2 approval(s) from approver or admin (size: over 100 rows)"
        );
        assert_eq!(
            describe_requirements([&r, &r]),
            format!("{0}; {0}", describe_requirement(&r))
        );
    }

    #[test]
    fn a_review_verdict_is_stored_and_shown_as_before() {
        let json = serde_json::to_value(review("bob", Role::Admin, ReviewVerdict::Reject)).unwrap();
        assert_eq!(json["verdict"], "reject");
        let back: Review = serde_json::from_value(serde_json::json!({
            "user": "bob", "role": "admin", "verdict": "approve", "comment": null, "at": "t"
        }))
        .unwrap();
        assert_eq!(back.verdict, ReviewVerdict::Approve);
        assert_eq!(format!("{:<9}|", ReviewVerdict::Approve), "approve  |");
        assert_eq!(&*ReviewVerdict::Reject, "reject");
    }
}
