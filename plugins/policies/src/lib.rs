//! `policies`: the approval rules most teams start with, each switched by config.
//!
//! For a configuration change (`backflow change submit`):
//! - a sync that sends columns labelled as sensitive (`pii` by default) needs an admin;
//! - a sync in `mirror` mode (it deletes rows in the destination) needs an admin;
//! - more than `two_approvers_above_rows` affected rows (added + changed + removed over all
//!   affected syncs, from the dry run) need two approvals;
//! - otherwise `default_approvals` approvals (default 1) from an approver or admin, or
//!   automatic approval when that is 0.
//!
//! The rules combine into one requirement: the roles of the strictest rule, the largest count.
//!
//! With `waive_another_reviewer_up_to_rows = N` (contract 0.3.0), a change affecting at most N
//! rows, sending no sensitive column, mirroring nothing and changing no plugin build, is
//! approved and the built-in
//! "an approver other than the author" rule is explicitly waived: the author may publish it
//! alone. The engine honours the waiver only when an admin published this policy.
//!
//! For a run: a plan sending more than `run_approval_above_rows` rows waits for one approver.

use backflow_plugin_sdk::*;
use serde::Deserialize;

const SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "policies",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "sensitive_labels": { "type": "array", "items": { "type": "string" }, "description": "Column labels that need an admin (default [\"pii\"])." },
    "sensitive_needs_admin": { "type": "boolean", "description": "Changes touching sensitive columns need an admin (default true)." },
    "mirror_needs_admin": { "type": "boolean", "description": "Changes to mirror-mode syncs need an admin (default true)." },
    "two_approvers_above_rows": { "type": "integer", "minimum": 0, "description": "More affected rows than this need two approvals." },
    "default_approvals": { "type": "integer", "minimum": 0, "description": "Approvals any other change needs (default 1; 0 approves automatically)." },
    "allow_self_approval": { "type": "boolean", "description": "Whether an author's own approval counts (default false)." },
    "run_approval_above_rows": { "type": "integer", "minimum": 0, "description": "Runs sending more rows than this wait for an approver." },
    "waive_another_reviewer_up_to_rows": { "type": "integer", "minimum": 0, "description": "Changes affecting at most this many rows, with no sensitive column and no mirror sync, are approved and waive the built-in 'approver other than the author' rule (honoured only when an admin published this policy)." }
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_labels")]
    sensitive_labels: Vec<String>,
    #[serde(default = "yes")]
    sensitive_needs_admin: bool,
    #[serde(default = "yes")]
    mirror_needs_admin: bool,
    two_approvers_above_rows: Option<u64>,
    #[serde(default = "one")]
    default_approvals: u32,
    #[serde(default)]
    allow_self_approval: bool,
    run_approval_above_rows: Option<u64>,
    waive_another_reviewer_up_to_rows: Option<u64>,
}

fn default_labels() -> Vec<String> {
    vec!["pii".into()]
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}

struct Policies;

impl ApprovalPolicyPlugin for Policies {
    fn spec() -> PluginSpec {
        PluginSpec {
            name: "policies".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            kind: PluginKind::ApprovalPolicy,
            description: "Common approval rules: sensitive columns and mirror mode need an admin, large changes two approvers, large runs an approver.".into(),
            config_schema: SCHEMA.into(),
            operations: vec![],
            max_batch_size: 0,
            default_rate_limit: None,
        }
    }

    fn check_config(config: &str) -> Vec<ConfigError> {
        match parse_config::<Config>(config) {
            Ok(_) => vec![],
            Err(e) => vec![e],
        }
    }

    fn evaluate_with_review(
        config: &str,
        request: ApprovalRequest,
        review: ReviewContext,
    ) -> Result<PolicyDecision, PluginError> {
        let cfg: Config = parse_config(config).map_err(PluginError::BadConfig)?;
        if let Some(limit) = cfg.waive_another_reviewer_up_to_rows {
            // A change that brings new plugin code is never the author's alone.
            if review.plugin_changes.is_empty() && Self::small_and_harmless(&cfg, &request, limit) {
                return Ok(PolicyDecision {
                    decision: Decision::Approve(format!(
                        "at most {limit} affected rows, no sensitive column, no mirror: the author may publish alone"
                    )),
                    waive: vec![WaivableRule::ApproverOtherThanAuthor],
                });
            }
        }
        Self::evaluate(config, request).map(PolicyDecision::from)
    }

    fn evaluate(config: &str, request: ApprovalRequest) -> Result<Decision, PluginError> {
        let cfg: Config = parse_config(config).map_err(PluginError::BadConfig)?;
        let rows: u64 = request
            .syncs
            .iter()
            .map(|s| s.added + s.changed + s.removed)
            .sum();
        match request.kind {
            RequestKind::Run => Ok(match cfg.run_approval_above_rows {
                Some(limit) if rows > limit => Decision::Require {
                    count: 1,
                    roles: vec![Role::Approver, Role::Admin],
                    allow_self_approval: cfg.allow_self_approval,
                    reason: format!("the run would send {rows} rows, more than {limit}"),
                },
                _ => Decision::Approve(format!("{rows} rows is within the run limit")),
            }),
            RequestKind::ConfigChange => {
                let mut reasons = Vec::new();
                let mut admin = false;
                let mut count = cfg.default_approvals;
                for s in &request.syncs {
                    let sensitive: Vec<&String> = s
                        .column_labels
                        .iter()
                        .filter(|l| cfg.sensitive_labels.contains(l))
                        .collect();
                    if cfg.sensitive_needs_admin && !sensitive.is_empty() {
                        admin = true;
                        reasons.push(format!(
                            "sync {} sends columns labelled {}",
                            s.sync_name,
                            sensitive
                                .iter()
                                .map(|l| l.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    if cfg.mirror_needs_admin && s.mode == "mirror" {
                        admin = true;
                        reasons.push(format!(
                            "sync {} mirrors (it deletes rows in {})",
                            s.sync_name, s.destination
                        ));
                    }
                }
                if let Some(limit) = cfg.two_approvers_above_rows {
                    if rows > limit {
                        count = count.max(2);
                        reasons.push(format!("{rows} affected rows, more than {limit}"));
                    }
                }
                if admin {
                    count = count.max(1);
                }
                if count == 0 {
                    return Ok(Decision::Approve("no rule applies".into()));
                }
                if reasons.is_empty() {
                    reasons.push("every change is reviewed".into());
                }
                Ok(Decision::Require {
                    count,
                    roles: if admin {
                        vec![Role::Admin]
                    } else {
                        vec![Role::Approver, Role::Admin]
                    },
                    allow_self_approval: cfg.allow_self_approval,
                    reason: reasons.join("; "),
                })
            }
        }
    }
}

impl Policies {
    /// Whether `request` is a change small and harmless enough for the author alone: at most
    /// `limit` affected rows, no sensitive column sent, no mirror sync.
    fn small_and_harmless(cfg: &Config, request: &ApprovalRequest, limit: u64) -> bool {
        let rows: u64 = request
            .syncs
            .iter()
            .map(|s| s.added + s.changed + s.removed)
            .sum();
        request.kind == RequestKind::ConfigChange
            && rows <= limit
            && request.syncs.iter().all(|s| {
                s.mode != "mirror"
                    && !s
                        .column_labels
                        .iter()
                        .any(|l| cfg.sensitive_needs_admin && cfg.sensitive_labels.contains(l))
            })
    }
}

export_approval_policy!(Policies);
