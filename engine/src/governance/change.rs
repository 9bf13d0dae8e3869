//! Change requests: submitting the working copy (policies asked, requirements recorded),
//! reviewing it, and publishing it once approved, only if the working copy, the published
//! base and the plugins are still what was reviewed.
//!
//! Who may submit, review and publish is decided by the caller (the application layer
//! authorizes each action first); the rules here are governance's own: no self-approval
//! unless a policy allows it, one approval per reviewer, only the author or an approver
//! publishes.

use super::builtin_rules::{built_in_requirements, policy_waivers};
use super::diff::{diff, ConfigDiff};
use super::identity::Identity;
use super::notify::notify;
pub use super::plugin_changes::PluginUnavailable;
use super::plugin_changes::{build_changes, plugin_builds, PluginBuild};
use super::policies::{
    ask_policies, combine, describe_requirements, requirement_met, Requirement, Review,
    ReviewVerdict,
};
use super::published::{published_workspace, Published, PublishedError};
use crate::domain::now_rfc3339 as now;
use crate::domain::Role;
use crate::state::{AuditEvent, GovernanceDoc, StateError, StateStore};
use crate::workspace::{ConfigErrors, ConfigFiles, Workspace};
use backflow_plugin_sdk::{ApprovalRequest, RequestKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Plugin reference → SHA-256 of its files.
type PluginHashes = BTreeMap<String, String>;
use std::path::Path;

use super::policies::PolicyVerdict;

/// The first 12 characters of a hash, as shown to people.
pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// A short hash, or `none_text` when there is none.
fn short_or<'a>(hash: &'a Option<String>, none_text: &'a str) -> &'a str {
    hash.as_deref().map(short).unwrap_or(none_text)
}

/// Where a change request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    /// Waiting for approvals.
    Pending,
    /// Every requirement is met; `change publish` may publish it.
    Approved,
    /// A policy or a reviewer rejected it.
    Rejected,
    /// It is (or was) the published configuration.
    Published,
}

impl ChangeStatus {
    /// `pending`, `approved`, `rejected` or `published`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeStatus::Pending => "pending",
            ChangeStatus::Approved => "approved",
            ChangeStatus::Rejected => "rejected",
            ChangeStatus::Published => "published",
        }
    }
}

impl std::fmt::Display for ChangeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A submitted working copy, its policies' verdicts, requirements and reviews.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeRequest {
    /// Its number (`change #ID`).
    pub id: u64,
    /// Who submitted it.
    pub author: String,
    /// Their role when they submitted it.
    pub author_role: Role,
    /// What the author says it does.
    pub message: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// Where it stands.
    pub status: ChangeStatus,
    /// Hash of `files`: what was reviewed, and what the working copy must hash to at publish.
    pub config_hash: String,
    /// The published configuration the change was made against.
    pub base_hash: Option<String>,
    /// The configuration files as submitted.
    pub files: ConfigFiles,
    /// Plugin reference → SHA-256 of the plugin files as submitted: what reviewers approved
    /// runs with. Publishing refuses if any changed since.
    #[serde(default)]
    pub plugin_hashes: BTreeMap<String, String>,
    /// What each of those plugin builds declares (spec, size, imports): recorded so that a
    /// later build can be compared with it once this change is published.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_builds: BTreeMap<String, PluginBuild>,
    /// What it changes against the published configuration.
    pub diff: ConfigDiff,
    /// What each policy decided.
    pub policies: Vec<PolicyVerdict>,
    /// The approvals it needs.
    pub requirements: Vec<Requirement>,
    /// The reviews so far.
    pub reviews: Vec<Review>,
    /// When it was published, if it was.
    pub published_at: Option<String>,
}

impl ChangeRequest {
    /// Sets the status from a rejection (by a policy or a reviewer) or the approvals so far.
    fn settle(&mut self, rejected: bool) {
        self.status = if rejected {
            ChangeStatus::Rejected
        } else if self.unmet().is_empty() {
            ChangeStatus::Approved
        } else {
            ChangeStatus::Pending
        };
    }

    /// Requirements not yet met by the approvals so far.
    pub fn unmet(&self) -> Vec<&Requirement> {
        self.requirements
            .iter()
            .filter(|r| !requirement_met(r, &self.author, &self.reviews))
            .collect()
    }
}

/// Why a change request cannot be submitted, shown, reviewed or published.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The published configuration cannot be read.
    #[error(transparent)]
    Published(#[from] PublishedError),
    /// The working copy's files cannot be read (or, at publish, do not load).
    #[error(transparent)]
    WorkingCopy(ConfigErrors),
    /// The working copy does not load, so it cannot be submitted.
    #[error("the working copy does not load, fix it first:\n{0}")]
    WorkingCopyInvalid(ConfigErrors),
    /// At submit: a plugin the working copy names cannot be resolved.
    #[error("the working copy names a plugin that cannot be loaded: {0}")]
    SubmittedPluginUnavailable(PluginUnavailable),
    /// At publish: a plugin the working copy names cannot be resolved.
    #[error(transparent)]
    PluginUnavailable(PluginUnavailable),
    /// Nothing differs from the published configuration.
    #[error("the working copy and its plugins are identical to the published configuration: nothing to submit")]
    NothingToSubmit,
    /// No change request has this id.
    #[error("no change request #{0} (see `backflow change list`)")]
    NotFound(u64),
    /// Only a pending change (or an approved one, to reject it) can be reviewed.
    #[error("change #{id} is {status}, not pending")]
    NotPending {
        /// The change.
        id: u64,
        /// Where it stands.
        status: ChangeStatus,
    },
    /// The author approving their own change without a policy allowing it.
    #[error("{user} cannot approve their own change #{id}: no policy allows self-approval")]
    SelfApproval {
        /// The author.
        user: String,
        /// The change.
        id: u64,
    },
    /// A reviewer approving twice.
    #[error("{user} already approved change #{id}")]
    AlreadyApproved {
        /// The reviewer.
        user: String,
        /// The change.
        id: u64,
    },
    /// Publishing a change that still needs approvals.
    #[error("change #{id} is not approved yet; it still needs {}", describe_requirements(.unmet))]
    NotApproved {
        /// The change.
        id: u64,
        /// What it still needs.
        unmet: Vec<Requirement>,
    },
    /// Publishing a rejected or already published change.
    #[error("change #{id} is {status}; only an approved change can be published")]
    NotPublishable {
        /// The change.
        id: u64,
        /// Where it stands.
        status: ChangeStatus,
    },
    /// A contributor publishing someone else's change.
    #[error("{user} may publish only their own changes (approvers and admins may publish any)")]
    NotTheAuthor {
        /// Who tried.
        user: String,
    },
    /// The working copy is no longer what was reviewed.
    #[error("the working copy changed after change #{id} was reviewed (reviewed {}, working copy now {}): submit it again with `backflow change submit`", short(.reviewed), short(.now))]
    WorkingCopyChanged {
        /// The change.
        id: u64,
        /// The hash reviewed.
        reviewed: String,
        /// The working copy's hash now.
        now: String,
    },
    /// Something else was published since the change was submitted.
    #[error("something else was published after change #{id} was submitted (it was made against {}, published is now {}): submit it again", short_or(.base, "nothing"), short_or(.current, "nothing"))]
    BaseMoved {
        /// The change.
        id: u64,
        /// What it was made against.
        base: Option<String>,
        /// What is published now.
        current: Option<String>,
    },
    /// A plugin's files changed since the change was reviewed.
    #[error("plugin {reference} changed after change #{id} was reviewed (reviewed sha256 {}, now {}): submit it again", short(.reviewed), short_or(.now, "missing"))]
    PluginChanged {
        /// The change.
        id: u64,
        /// The plugin reference.
        reference: String,
        /// The hash reviewed.
        reviewed: String,
        /// Its hash now, if it still resolves.
        now: Option<String>,
    },
}

/// What the policies are told a change does: its message, what changed, the unified diff.
fn change_description(message: &str, diff: &ConfigDiff) -> String {
    let mut d = format!("{message}\n\nchanged: ");
    d.push_str(
        &diff
            .entities
            .iter()
            .map(|e| format!("{} {} {}", e.change, e.kind, e.name))
            .chain(
                diff.plugins
                    .iter()
                    .map(|p| format!("plugin {}", p.describe())),
            )
            .collect::<Vec<_>>()
            .join(", "),
    );
    d.push_str("\n\n");
    d.push_str(&diff.text);
    d
}

/// `backflow change submit`. The caller has authorized `who` to submit.
pub(crate) async fn submit(
    host: &crate::plugins::Registry,
    root: &Path,
    state: &StateStore,
    who: &Identity,
    message: &str,
) -> Result<ChangeRequest, ChangeError> {
    let files = ConfigFiles::read(root).map_err(ChangeError::WorkingCopy)?;
    let working = Workspace::load_files(root, &files).map_err(ChangeError::WorkingCopyInvalid)?;
    // Read once: its hash, its users and policies (the authority) and its plugins directory.
    let published = published_workspace(root, state)?;
    let hash = files.hash();
    let plugin_builds = plugin_builds(host, &working)
        .await
        .map_err(ChangeError::SubmittedPluginUnavailable)?;
    let plugin_hashes: PluginHashes = plugin_builds
        .iter()
        .map(|(reference, build)| (reference.clone(), build.hash.clone()))
        .collect();
    let unchanged = published.as_ref().is_some_and(|(p, _)| {
        p.config_hash == hash
            && build_changes(&p.plugin_hashes, &p.plugin_builds, &plugin_builds).is_empty()
    });
    if unchanged {
        return Err(ChangeError::NothingToSubmit);
    }
    let diff = diff(host, state, &files, &working).await?;
    let authority_ws = published.as_ref().map_or(&working, |(_, ws)| ws);
    let (governance, plugins_dir) = (
        authority_ws.governance.clone(),
        authority_ws.plugins_dir.clone(),
    );
    let request = ApprovalRequest {
        kind: RequestKind::ConfigChange,
        author: who.user.clone(),
        author_role: who.role,
        description: change_description(message, &diff),
        syncs: diff.syncs.iter().map(|s| s.impact.clone()).collect(),
    };
    // 0.3.0 policies see the plugin builds that change and the built-in requirements (before
    // any waiver), so a policy can react to them and waive knowingly.
    let review = super::builtin_rules::review_context(
        &diff,
        &built_in_requirements(&diff, published.as_ref().map(|(_, ws)| ws), &working, &[]),
    );
    let verdicts = ask_policies(host, root, &governance, &plugins_dir, &request, &review).await;
    let (rejected, mut requirements) = combine(&verdicts);
    // What the policies waive explicitly (contract 0.3.0's `waive`; nothing before it).
    let waivers = policy_waivers(&verdicts, published.as_ref().map(|(p, ws)| (p, ws)));
    requirements.extend(built_in_requirements(
        &diff,
        published.as_ref().map(|(_, ws)| ws),
        &working,
        &waivers,
    ));
    let mut change = ChangeRequest {
        id: state.next_change_id()?,
        author: who.user.clone(),
        author_role: who.role,
        message: message.to_string(),
        created_at: now(),
        status: ChangeStatus::Pending,
        config_hash: hash.clone(),
        base_hash: published.map(|(p, _)| p.config_hash),
        files,
        plugin_hashes,
        plugin_builds,
        diff,
        policies: verdicts,
        requirements,
        reviews: Vec::new(),
        published_at: None,
    };
    change.settle(rejected.is_some());
    record_submission(state, who, message, &change, rejected)?;
    if change.status == ChangeStatus::Pending {
        let needs = describe_requirements(change.unmet());
        notify(
            host,
            &governance,
            &format!(
                "backflow: change #{} by {} needs approval ({needs}): {message}",
                change.id, who.user
            ),
        )
        .await;
    }
    Ok(change)
}

/// Stores a submitted change with its `change.submit` audit entry.
fn record_submission(
    state: &StateStore,
    who: &Identity,
    message: &str,
    change: &ChangeRequest,
    rejected: Option<String>,
) -> Result<(), StateError> {
    let event = AuditEvent {
        user: who.user.clone(),
        action: "change.submit".into(),
        target: format!("change #{}", change.id),
        config_hash: Some(change.config_hash.clone()),
        detail: serde_json::json!({"message": message, "status": change.status.as_str(), "rejected": rejected, "requirements": change.requirements}),
    };
    state.write_governance(
        vec![GovernanceDoc::Change(
            change.id,
            serde_json::to_value(change).expect("serializes"),
        )],
        vec![event],
    )?;
    Ok(())
}

fn load_change(state: &StateStore, id: u64) -> Result<ChangeRequest, ChangeError> {
    state
        .change::<ChangeRequest>(id)?
        .ok_or(ChangeError::NotFound(id))
}

/// The newest change requests, at most `limit`.
pub fn list_changes(state: &StateStore, limit: usize) -> Result<Vec<ChangeRequest>, StateError> {
    state.changes(limit)
}

/// One change request.
pub fn show_change(state: &StateStore, id: u64) -> Result<ChangeRequest, ChangeError> {
    load_change(state, id)
}

/// `backflow change approve` / `change reject`. The caller has authorized `who` to approve
/// (or reject) changes.
pub(crate) fn review(
    state: &StateStore,
    who: &Identity,
    id: u64,
    approve: bool,
    comment: Option<&str>,
) -> Result<ChangeRequest, ChangeError> {
    let mut change = load_change(state, id)?;
    // A pending change takes either verdict; an approved one can still be rejected.
    let reviewable = change.status == ChangeStatus::Pending
        || (change.status == ChangeStatus::Approved && !approve);
    if !reviewable {
        return Err(ChangeError::NotPending {
            id,
            status: change.status,
        });
    }
    if approve {
        if change.author == who.user && !change.unmet().iter().all(|r| r.allow_self_approval) {
            return Err(ChangeError::SelfApproval {
                user: who.user.clone(),
                id,
            });
        }
        if change
            .reviews
            .iter()
            .any(|r| r.user == who.user && r.verdict == ReviewVerdict::Approve)
        {
            return Err(ChangeError::AlreadyApproved {
                user: who.user.clone(),
                id,
            });
        }
    }
    change.reviews.push(Review {
        user: who.user.clone(),
        role: who.role,
        verdict: if approve {
            ReviewVerdict::Approve
        } else {
            ReviewVerdict::Reject
        },
        comment: comment.map(str::to_string),
        at: now(),
    });
    change.settle(!approve);
    let event = AuditEvent {
        user: who.user.clone(),
        action: if approve {
            "change.approve"
        } else {
            "change.reject"
        }
        .into(),
        target: format!("change #{id}"),
        config_hash: Some(change.config_hash.clone()),
        detail: serde_json::json!({"comment": comment, "status": change.status.as_str()}),
    };
    state.write_governance(
        vec![GovernanceDoc::Change(
            id,
            serde_json::to_value(&change).expect("serializes"),
        )],
        vec![event],
    )?;
    Ok(change)
}

/// Whether `who` may publish `change` as it stands: approved, and theirs unless they are an
/// approver or admin.
fn check_publishable(change: &ChangeRequest, who: &Identity) -> Result<(), ChangeError> {
    let id = change.id;
    match change.status {
        ChangeStatus::Approved => {}
        ChangeStatus::Pending => {
            return Err(ChangeError::NotApproved {
                id,
                unmet: change.unmet().into_iter().cloned().collect(),
            })
        }
        status => return Err(ChangeError::NotPublishable { id, status }),
    }
    if who.role < Role::Approver && who.user != change.author {
        return Err(ChangeError::NotTheAuthor {
            user: who.user.clone(),
        });
    }
    Ok(())
}

/// `backflow change publish`: only an approved change whose exact files are still the
/// working copy's, made against what is published now. The caller has authorized `who` to
/// publish changes.
pub(crate) async fn publish(
    host: &crate::plugins::Registry,
    root: &Path,
    state: &StateStore,
    who: &Identity,
    id: u64,
) -> Result<ChangeRequest, ChangeError> {
    let mut change = load_change(state, id)?;
    check_publishable(&change, who)?;
    let files = ConfigFiles::read(root).map_err(ChangeError::WorkingCopy)?;
    let now_hash = files.hash();
    if now_hash != change.config_hash {
        return Err(ChangeError::WorkingCopyChanged {
            id,
            reviewed: change.config_hash.clone(),
            now: now_hash,
        });
    }
    let current = state.published::<Published>()?.map(|p| p.config_hash);
    if current != change.base_hash {
        return Err(ChangeError::BaseMoved {
            id,
            base: change.base_hash.clone(),
            current,
        });
    }
    let working = Workspace::load_files(root, &files).map_err(ChangeError::WorkingCopy)?;
    let now_plugins: PluginHashes = plugin_builds(host, &working)
        .await
        .map_err(ChangeError::PluginUnavailable)?
        .into_iter()
        .map(|(reference, build)| (reference, build.hash))
        .collect();
    for (reference, hash) in &change.plugin_hashes {
        if now_plugins.get(reference) != Some(hash) {
            return Err(ChangeError::PluginChanged {
                id,
                reference: reference.clone(),
                reviewed: hash.clone(),
                now: now_plugins.get(reference).cloned(),
            });
        }
    }
    let at = now();
    change.status = ChangeStatus::Published;
    change.published_at = Some(at.clone());
    let published = Published {
        config_hash: change.config_hash.clone(),
        files,
        plugin_hashes: change.plugin_hashes.clone(),
        plugin_builds: change.plugin_builds.clone(),
        change_id: id,
        published_by: who.user.clone(),
        published_at: at,
    };
    let event = AuditEvent {
        user: who.user.clone(),
        action: "change.publish".into(),
        target: format!("change #{id}"),
        config_hash: Some(change.config_hash.clone()),
        detail: serde_json::json!({"previous": current}),
    };
    state.write_governance(
        vec![
            GovernanceDoc::Published(serde_json::to_value(&published).expect("serializes")),
            GovernanceDoc::Change(id, serde_json::to_value(&change).expect("serializes")),
        ],
        vec![event],
    )?;
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_before() {
        let base_moved = ChangeError::BaseMoved {
            id: 3,
            base: None,
            current: Some("0123456789abcdef".into()),
        };
        assert_eq!(
            base_moved.to_string(),
            "something else was published after change #3 was submitted (it was made against nothing, published is now 0123456789ab): submit it again"
        );
        let plugin = ChangeError::PluginChanged {
            id: 3,
            reference: "webhook".into(),
            reviewed: "aaaaaaaaaaaaaaaa".into(),
            now: None,
        };
        assert_eq!(
            plugin.to_string(),
            "plugin webhook changed after change #3 was reviewed (reviewed sha256 aaaaaaaaaaaa, now missing): submit it again"
        );
        let not_pending = ChangeError::NotPending {
            id: 4,
            status: ChangeStatus::Rejected,
        };
        assert_eq!(
            not_pending.to_string(),
            "change #4 is rejected, not pending"
        );
        let unavailable = PluginUnavailable {
            reference: "x.wasm".into(),
            error: anyhow::anyhow!("inner").context("outer"),
        };
        assert_eq!(
            ChangeError::SubmittedPluginUnavailable(unavailable).to_string(),
            "the working copy names a plugin that cannot be loaded: plugin x.wasm: outer: inner"
        );
    }
}
