//! Approval policies: asking each policy plugin, combining their verdicts (strictest wins),
//! the requirements no policy can relax, and whether reviews meet a requirement.

use crate::domain::Role;
use crate::host::evaluate_policy_decision;
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
    /// The built-in rule it comes from (`another-reviewer`, `plugin-code`, …; see
    /// `builtin_rules`), which a policy may name to waive it; `None` for a policy's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
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
    /// The built-in rules it explicitly waives (contract 0.3.0's `waive`), by rule name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waive: Vec<String>,
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
/// `review`: what 0.3.0 policies see beside the request (plugin build changes, the built-in
/// requirements before any waiver).
pub(crate) async fn ask_policies(
    host: &crate::plugins::Registry,
    root: &Path,
    governance: &Governance,
    plugins_dir: &Path,
    request: &ApprovalRequest,
    review: &backflow_plugin_sdk::ReviewContext,
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
            evaluate_policy_decision(
                host,
                &plugin,
                policy.limits,
                &policy.config_json,
                request,
                review,
            )
            .await
            .map_err(|e| e.to_string())
        }
        .await
        .unwrap_or_else(|e| {
            Decision::Reject(format!(
                "policy {} failed, so the request is rejected (fail closed): {e}",
                policy.name
            ))
            .into()
        });
        out.push(PolicyVerdict {
            policy: policy.name.clone(),
            decision: decision.decision,
            waive: decision
                .waive
                .iter()
                .map(|rule| match rule {
                    backflow_plugin_sdk::WaivableRule::ApproverOtherThanAuthor => {
                        "another-reviewer".to_string()
                    }
                })
                .collect(),
        });
    }
    out
}

/// Strictest wins: any rejection rejects; otherwise every requirement must be met. Returns
/// the rejections (joined) and the requirements. The built-in rules (an approver other than
/// the author, among others) are added by the caller: they hold whatever the policies say.
pub(crate) fn combine(verdicts: &[PolicyVerdict]) -> (Option<String>, Vec<Requirement>) {
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
                rule: None,
            }),
            _ => None,
        })
        .collect();
    let rejected = if rejections.is_empty() {
        None
    } else {
        Some(rejections.join("; "))
    };
    (rejected, requirements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(policy: &str, decision: Decision) -> PolicyVerdict {
        PolicyVerdict {
            waive: Vec::new(),
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

    #[test]
    fn any_rejection_rejects_and_names_each_policy() {
        let verdicts = [
            verdict("a", Decision::Reject("too many".into())),
            verdict("b", Decision::Approve("fine".into())),
            verdict("c", Decision::Reject("pii".into())),
            verdict("d", require(1, vec![Role::Admin], false)),
        ];
        let (rejected, requirements) = combine(&verdicts);
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
        let (rejected, requirements) = combine(&verdicts);
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
                    rule: None,
                },
                Requirement {
                    policy: "c".into(),
                    count: 1,
                    roles: vec![Role::Admin],
                    allow_self_approval: false,
                    reason: "big".into(),
                    rule: None,
                },
            ]
        );
    }

    #[test]
    fn approvals_alone_require_nothing() {
        let verdicts = [verdict("a", Decision::Approve("fine".into()))];
        assert_eq!(combine(&verdicts), (None, vec![]));
    }

    #[test]
    fn a_requirement_needs_enough_approvals_from_its_roles_by_others() {
        let r = Requirement {
            policy: "p".into(),
            count: 2,
            roles: vec![Role::Approver, Role::Admin],
            allow_self_approval: false,
            reason: "r".into(),
            rule: None,
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
    fn a_requirement_reads_as_a_sentence() {
        let r = Requirement {
            policy: "size".into(),
            count: 2,
            roles: vec![Role::Approver, Role::Admin],
            allow_self_approval: false,
            reason: "over 100 rows".into(),
            rule: None,
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
