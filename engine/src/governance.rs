//! Governance: who may do what, how a working copy becomes the published configuration
//! (change requests, approval policies, reviews), the run-time approval gate, and the audit
//! log entries for each of those steps.
//!
//! The workspace files are the working copy. Once the workspace declares `[users]`, runs use
//! the *published* configuration, kept in redb: a change request records the exact files
//! (and their hash), the approval policies decide what it needs, reviewers approve, and
//! publishing copies those files, only if the working copy still hashes the same.
//!
//! Users, roles and policies themselves come from the published configuration once there is
//! one: a contributor cannot make themselves an admin by editing their working copy.
//!
//! Why one file of ~850 lines: change requests, policy combination and the run gate share the
//! requirement and review types and one audit discipline. The next split, when it grows:
//! `changes` (submit, review, publish, diff) and `run_gate`.

use crate::authz::{authorize, Action};
use crate::workspace::{ConfigFiles, Governance, Workspace};
pub use crate::domain::{Role, MAX_TTL_MINUTES};
use crate::host::{evaluate_policy, PluginHost};
use crate::state::{AuditEvent, GovernanceDoc, StateStore};
use crate::sync::gate::{ApprovalGate, GateDecision, GateError, GateRequest};
use backflow_plugin_sdk::{ApprovalRequest, Decision, RequestKind, SyncImpact};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Who is acting (an authenticated user and their role).
pub type Identity = crate::authz::Actor;

/// The configuration runs use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    pub config_hash: String,
    pub files: ConfigFiles,
    /// Plugin reference → SHA-256 of the plugin reviewed with this configuration.
    #[serde(default)]
    pub plugin_hashes: BTreeMap<String, String>,
    pub change_id: u64,
    pub published_by: String,
    pub published_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    /// Waiting for approvals.
    Pending,
    /// Every requirement is met; `change publish` may publish it.
    Approved,
    /// A policy or a reviewer rejected it.
    Rejected,
    Published,
}

impl ChangeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeStatus::Pending => "pending",
            ChangeStatus::Approved => "approved",
            ChangeStatus::Rejected => "rejected",
            ChangeStatus::Published => "published",
        }
    }
}

/// Approvals some policy asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    pub policy: String,
    pub count: u32,
    pub roles: Vec<Role>,
    pub allow_self_approval: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Review {
    pub user: String,
    pub role: Role,
    /// `approve` or `reject`.
    pub verdict: String,
    pub comment: Option<String>,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyVerdict {
    pub policy: String,
    #[serde(flatten)]
    pub decision: Decision,
}

/// One entity (source, destination, model, sync, user, policy, setting) that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityChange {
    pub kind: String,
    pub name: String,
    /// `added`, `removed` or `modified`.
    pub change: String,
}

/// What a sync would do under the changed configuration (a dry run against current state).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncPlanCounts {
    /// What a policy is told about the sync.
    #[serde(flatten)]
    pub impact: SyncImpact,
    /// Why it could not be planned, if it could not.
    pub error: Option<String>,
}

/// The working copy against the published configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigDiff {
    pub published_hash: Option<String>,
    pub working_hash: String,
    pub entities: Vec<EntityChange>,
    /// Syncs whose behaviour the change affects, with their dry-run counts.
    pub syncs: Vec<SyncPlanCounts>,
    /// Unified diff of the configuration files.
    pub text: String,
    /// Column labels the working copy no longer has anywhere (`email:pii`), whatever was
    /// renamed: removing a label needs an admin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_labels: Vec<String>,
    /// Every `grants` table added, removed or changed (`destinations.hook.grants`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_grants: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeRequest {
    pub id: u64,
    pub author: String,
    pub author_role: Role,
    pub message: String,
    pub created_at: String,
    pub status: ChangeStatus,
    /// Hash of `files`: what was reviewed, and what the working copy must hash to at publish.
    pub config_hash: String,
    /// The published configuration the change was made against.
    pub base_hash: Option<String>,
    pub files: ConfigFiles,
    /// Plugin reference → SHA-256 of the plugin files as submitted: what reviewers approved
    /// runs with. Publishing refuses if any changed since.
    #[serde(default)]
    pub plugin_hashes: BTreeMap<String, String>,
    pub diff: ConfigDiff,
    pub policies: Vec<PolicyVerdict>,
    pub requirements: Vec<Requirement>,
    pub reviews: Vec<Review>,
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

fn requirement_met(r: &Requirement, author: &str, reviews: &[Review]) -> bool {
    let n = reviews
        .iter()
        .filter(|rv| {
            rv.verdict == "approve"
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

use crate::domain::now_rfc3339 as now;

fn state_err(e: crate::state::StateError) -> String {
    e.to_string()
}

/// The published configuration and the workspace it loads as, if anything is published.
pub fn published_workspace(
    root: &Path,
    state: &StateStore,
) -> Result<Option<(Published, Workspace)>, String> {
    let Some(published) = state.published::<Published>().map_err(state_err)? else {
        return Ok(None);
    };
    let mut ws = Workspace::load_files(root, &published.files).map_err(|e| {
        format!(
            "the published configuration (change #{}) no longer loads: {e}",
            published.change_id
        )
    })?;
    ws.plugin_pins = published.plugin_hashes.clone();
    ws.governance.plugin_pins = published.plugin_hashes.clone();
    Ok(Some((published, ws)))
}

/// Where users, roles and policies come from: the published configuration, or the working
/// copy until something is published.
pub fn authority(
    root: &Path,
    working: &Workspace,
    state: &StateStore,
) -> Result<Governance, String> {
    Ok(match published_workspace(root, state)? {
        Some((_, ws)) => ws.governance,
        None => working.governance.clone(),
    })
}

/// Resolves `--as`/`BACKFLOW_USER` against the declared users. Without declared users,
/// everyone acts as an admin of their own workspace.
pub fn identify(governance: &Governance, user: Option<&str>) -> Result<Identity, String> {
    if !governance.enabled() {
        let user = user
            .map(str::to_string)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "local".into());
        return Ok(Identity {
            user,
            role: Role::Admin,
        });
    }
    let known = governance
        .users
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let user = user.ok_or_else(|| format!("this workspace declares users: say who you are with --as USER or BACKFLOW_USER (users: {known})"))?;
    let role = governance
        .users
        .get(user)
        .ok_or_else(|| format!("unknown user {user:?} (users: {known})"))?;
    Ok(Identity {
        user: user.to_string(),
        role: *role,
    })
}

/// Which workspace a run uses: the working copy when approvals are off; otherwise the
/// published one, or with `draft` the working copy, but only towards staging destinations.
pub fn workspace_for_run(
    root: &Path,
    state: &StateStore,
    working: Workspace,
    draft: bool,
    syncs: &[String],
) -> Result<Workspace, String> {
    let published = published_workspace(root, state)?;
    let governed = working.governance.enabled()
        || published
            .as_ref()
            .is_some_and(|(_, ws)| ws.governance.enabled());
    if !governed {
        return Ok(working);
    }
    if draft {
        for name in syncs {
            let sync = working.sync(name)?;
            let destination = &working.destinations[&sync.destination];
            // Whether a destination is staging is itself reviewed: once something is
            // published, the published destination (same name, same plugin and config) must
            // be marked staging, so a working-copy edit cannot turn production into staging.
            let reviewed_staging = match &published {
                Some((_, ws)) => ws.destinations.get(&destination.name).is_some_and(|d| {
                    d.staging
                        && d.plugin == destination.plugin
                        && d.config_json == destination.config_json
                        && d.grants == destination.grants
                }),
                None => destination.staging,
            };
            if !reviewed_staging {
                return Err(format!(
                    "sync {name} delivers to {}, which is not a (published) staging destination: drafts run only against destinations published with staging = true (try `sync plan --draft`)",
                    destination.name
                ));
            }
        }
        // What a draft may touch is reviewed too: its source (and checks) run with the
        // published grants, so a working-copy edit cannot grant a draft new files, hosts or
        // variables.
        if let Some((_, ws)) = &published {
            for name in syncs {
                let sync = working.sync(name)?;
                let model = &working.models[&sync.model];
                let source = &working.sources[&model.source];
                let published_grants = ws.sources.get(&source.name).map(|s| &s.grants);
                if published_grants != Some(&source.grants) {
                    return Err(format!(
                        "sync {name} reads source {} with grants that are not published: a draft runs only with published grants (submit the change to have them reviewed)",
                        source.name
                    ));
                }
                let published_checks = ws
                    .syncs
                    .get(name)
                    .map(|s| {
                        s.checks
                            .iter()
                            .map(|c| (&c.name, &c.connector.grants))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                for check in &sync.checks {
                    if check.connector.grants != crate::domain::Grants::default()
                        && !published_checks.contains(&(&check.name, &check.connector.grants))
                    {
                        return Err(format!("sync {name}: check {} has grants that are not published: a draft runs only with published grants", check.name));
                    }
                }
            }
        }
        let mut working = working;
        // The draft's own [users]/[[policies]] do not decide anything: the published ones do.
        if let Some((_, ws)) = published {
            working.governance = ws.governance;
        }
        return Ok(working);
    }
    match published {
        Some((_, ws)) => Ok(ws),
        None => Err("this workspace requires approvals ([users] is set) and nothing is published yet: `backflow change submit`, have it approved, then `backflow change publish ID`".into()),
    }
}

/// Configuration entities by (kind, name) as TOML values, from every file.
fn entities(files: &ConfigFiles) -> BTreeMap<(String, String), toml::Value> {
    let mut out = BTreeMap::new();
    for (path, text) in &files.0 {
        let Ok(table) = toml::from_str::<toml::Table>(text) else {
            continue;
        };
        if let Some(name) = path
            .strip_prefix("models/")
            .or_else(|| path.strip_prefix("syncs/"))
        {
            let kind = if path.starts_with("models/") {
                "models"
            } else {
                "syncs"
            };
            out.insert(
                (kind.to_string(), name.trim_end_matches(".toml").to_string()),
                toml::Value::Table(table),
            );
            continue;
        }
        for (kind, value) in table {
            match (kind.as_str(), value) {
                (
                    "sources" | "destinations" | "models" | "syncs" | "users",
                    toml::Value::Table(t),
                ) => {
                    for (name, v) in t {
                        out.insert((kind.clone(), name), v);
                    }
                }
                ("policies", toml::Value::Array(items)) => {
                    for (i, v) in items.into_iter().enumerate() {
                        // Two entries of one plugin are two policies: an unnamed entry is keyed
                        // by its plugin and position, so an edit to either is a policy change.
                        let name = match (
                            v.get("name").and_then(|n| n.as_str()),
                            v.get("plugin").and_then(|n| n.as_str()),
                        ) {
                            (Some(name), _) => name.to_string(),
                            (None, Some(plugin)) => format!("{plugin}[{i}]"),
                            (None, None) => format!("[{i}]"),
                        };
                        out.insert(("policies".into(), name), v);
                    }
                }
                (_, v) => {
                    out.insert(("settings".into(), kind), v);
                }
            }
        }
    }
    out
}

fn unified_diff(old: &ConfigFiles, new: &ConfigFiles) -> String {
    let paths: BTreeSet<&String> = old.0.keys().chain(new.0.keys()).collect();
    let mut out = String::new();
    for path in paths {
        let a = old.0.get(path).map(String::as_str).unwrap_or("");
        let b = new.0.get(path).map(String::as_str).unwrap_or("");
        if a == b {
            continue;
        }
        let diff = similar::TextDiff::from_lines(a, b);
        let from = if old.0.contains_key(path) {
            format!("published/{path}")
        } else {
            "/dev/null".into()
        };
        let to = if new.0.contains_key(path) {
            format!("working/{path}")
        } else {
            "/dev/null".into()
        };
        out.push_str(
            &diff
                .unified_diff()
                .context_radius(3)
                .header(&from, &to)
                .to_string(),
        );
    }
    out
}

/// The labels of the columns a sync sends (its mapping's model columns, or every labelled
/// column when it maps none).
fn sync_labels(ws: &Workspace, sync: &str) -> Vec<String> {
    let Ok(s) = ws.sync(sync) else { return vec![] };
    let model = &ws.models[&s.model];
    let mut labels = BTreeSet::new();
    for (column, column_labels) in &model.labels {
        if s.mapping.is_empty() || s.mapping.iter().any(|(from, _)| from == column) {
            labels.extend(column_labels.iter().cloned());
        }
    }
    labels.into_iter().collect()
}

/// The working copy against the published configuration, with a dry run of every affected
/// sync (counts against the current snapshot; nothing is sent or recorded).
pub async fn diff(
    host: &PluginHost,
    state: &StateStore,
    working_files: &ConfigFiles,
    working: &Workspace,
) -> Result<ConfigDiff, String> {
    let published = state.published::<Published>().map_err(state_err)?;
    let published_ws = published
        .as_ref()
        .and_then(|p| Workspace::load_files(&working.root, &p.files).ok());
    let empty = ConfigFiles::default();
    let old_files = published.as_ref().map(|p| &p.files).unwrap_or(&empty);
    let old = entities(old_files);
    let new = entities(working_files);
    let keys: BTreeSet<&(String, String)> = old.keys().chain(new.keys()).collect();
    let mut changes = Vec::new();
    for key in keys {
        let change = match (old.get(key), new.get(key)) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some(a), Some(b)) if a != b => "modified",
            _ => continue,
        };
        changes.push(EntityChange {
            kind: key.0.clone(),
            name: key.1.clone(),
            change: change.into(),
        });
    }
    let touched = |kind: &str, name: &str| changes.iter().any(|c| c.kind == kind && c.name == name);
    let mut syncs = Vec::new();
    for (name, s) in &working.syncs {
        let model = &working.models[&s.model];
        let affected = touched("syncs", name)
            || touched("models", &s.model)
            || touched("destinations", &s.destination)
            || touched("sources", &model.source);
        if !affected {
            continue;
        }
        let planned = crate::sync::plan_sync(
            host,
            working,
            state,
            name,
            crate::sync::plan::PlanOptions::default(),
            0,
        )
        .await;
        let counts = planned.as_ref().map(|r| r.planned).unwrap_or_default();
        let mut impact = sync_impact(working, s, counts);
        // A label removed in the working copy still counts: dropping `pii` must not dodge
        // the rule that protects it.
        if let Some(published_ws) = &published_ws {
            let mut labels: BTreeSet<String> = impact.column_labels.into_iter().collect();
            labels.extend(sync_labels(published_ws, name));
            impact.column_labels = labels.into_iter().collect();
        }
        syncs.push(SyncPlanCounts {
            impact,
            error: planned.err().map(|e| e.to_string()),
        });
    }
    let text = unified_diff(old_files, working_files);
    let labels = |ws: &Workspace| -> BTreeSet<String> {
        ws.models
            .values()
            .flat_map(|m| {
                m.labels.iter().flat_map(|(column, labels)| {
                    labels.iter().map(move |l| format!("{column}:{l}"))
                })
            })
            .collect()
    };
    let removed_labels = match &published_ws {
        Some(p) => labels(p).difference(&labels(working)).cloned().collect(),
        None => Vec::new(),
    };
    let grants = |entities: &BTreeMap<(String, String), toml::Value>| {
        let mut out = BTreeMap::new();
        for ((kind, name), value) in entities {
            collect_grants(&format!("{kind}.{name}"), value, &mut out);
        }
        out
    };
    let (old_grants, new_grants) = (grants(&old), grants(&new));
    let changed_grants = old_grants
        .keys()
        .chain(new_grants.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| old_grants.get(*k) != new_grants.get(*k))
        .cloned()
        .collect();
    Ok(ConfigDiff {
        published_hash: published.as_ref().map(|p| p.config_hash.clone()),
        working_hash: working_files.hash(),
        entities: changes,
        syncs,
        text,
        removed_labels,
        changed_grants,
    })
}

/// Every `grants` table inside a configuration value, by its path.
fn collect_grants(path: &str, value: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                if k == "grants" {
                    out.insert(format!("{path}.grants"), v.clone());
                } else {
                    collect_grants(&format!("{path}.{k}"), v, out);
                }
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_grants(&format!("{path}[{i}]"), v, out);
            }
        }
        _ => {}
    }
}

/// Asks every policy; a policy that fails (trap, timeout, error) rejects: fail closed.
async fn ask_policies(
    host: &PluginHost,
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
            Workspace::check_pin(&governance.plugin_pins, &policy.plugin, &plugin)?;
            crate::host::expect_kind(&plugin, backflow_plugin_sdk::PluginKind::ApprovalPolicy)?;
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

/// Strictest wins: any rejection rejects; otherwise every requirement must be met.
fn combine(verdicts: &[PolicyVerdict], no_policies: bool) -> (Option<String>, Vec<Requirement>) {
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

/// Rules no policy can relax: a change to who may do what (users, policies, approval
/// settings, workspace settings) needs an admin other than the author, and so does a change
/// whose affected syncs could not be dry-run (their counts would understate it).
fn built_in_requirements(diff: &ConfigDiff) -> Vec<Requirement> {
    let mut out = Vec::new();
    let governance: Vec<String> = diff
        .entities
        .iter()
        .filter(|e| matches!(e.kind.as_str(), "users" | "policies" | "settings"))
        .map(|e| format!("{} {} {}", e.change, e.kind, e.name))
        .collect();
    if !governance.is_empty() {
        out.push(Requirement {
            policy: "built-in".into(),
            count: 1,
            roles: vec![Role::Admin],
            allow_self_approval: false,
            reason: format!("changes who may do what ({})", governance.join(", ")),
        });
    }
    // What backflow may touch and where it may send: adding a destination (staging or not)
    // or changing any grants is reviewed by an admin, whatever the policies say.
    let mut reach: Vec<String> = diff
        .entities
        .iter()
        .filter(|e| e.kind == "destinations" && e.change == "added")
        .map(|e| format!("adds destination {}", e.name))
        .collect();
    reach.extend(diff.changed_grants.iter().map(|g| format!("changes {g}")));
    if !reach.is_empty() {
        out.push(Requirement {
            policy: "built-in".into(),
            count: 1,
            roles: vec![Role::Admin],
            allow_self_approval: false,
            reason: format!("changes what backflow may reach ({})", reach.join(", ")),
        });
    }
    if !diff.removed_labels.is_empty() {
        out.push(Requirement {
            policy: "built-in".into(),
            count: 1,
            roles: vec![Role::Admin],
            allow_self_approval: false,
            reason: format!("removes column labels ({})", diff.removed_labels.join(", ")),
        });
    }
    let unplanned: Vec<&str> = diff
        .syncs
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.impact.sync_name.as_str())
        .collect();
    if !unplanned.is_empty() {
        out.push(Requirement {
            policy: "built-in".into(),
            count: 1,
            roles: vec![Role::Admin],
            allow_self_approval: false,
            reason: format!(
                "sync(s) {} could not be dry-run, so their size is unknown",
                unplanned.join(", ")
            ),
        });
    }
    out
}

/// The SHA-256 of every plugin a workspace uses, by reference.
async fn plugin_hashes(
    host: &PluginHost,
    ws: &Workspace,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for reference in ws.plugin_refs() {
        let plugin = crate::plugins::resolve(host, &ws.root, &ws.plugins_dir, &reference)
            .await
            .map_err(|e| format!("plugin {reference}: {e:#}"))?;
        out.insert(reference, plugin.hash);
    }
    Ok(out)
}

/// `backflow change submit`.
pub async fn submit(
    host: &PluginHost,
    root: &Path,
    state: &StateStore,
    who: &Identity,
    message: &str,
) -> Result<ChangeRequest, String> {
    authorize(who, Action::SubmitChange).map_err(|e| e.to_string())?;
    let files = ConfigFiles::read(root).map_err(|e| e.to_string())?;
    let working = Workspace::load_files(root, &files)
        .map_err(|e| format!("the working copy does not load, fix it first:\n{e}"))?;
    // Read once: its hash, its users and policies (the authority) and its plugins directory.
    let published = published_workspace(root, state)?;
    let hash = files.hash();
    let plugin_hashes = plugin_hashes(host, &working)
        .await
        .map_err(|e| format!("the working copy names a plugin that cannot be loaded: {e}"))?;
    // A new build of a plugin is a change to review even when no file of configuration
    // changed: it is the code that runs.
    let plugins_changed: Vec<String> = match &published {
        Some((p, _)) => plugin_hashes
            .iter()
            .filter(|(reference, hash)| {
                p.plugin_hashes
                    .get(*reference)
                    .is_some_and(|old| old != *hash)
            })
            .map(|(reference, hash)| {
                format!(
                    "plugin {reference} sha256 {} → {}",
                    short(&p.plugin_hashes[reference]),
                    short(hash)
                )
            })
            .collect(),
        None => Vec::new(),
    };
    if published
        .as_ref()
        .is_some_and(|(p, _)| p.config_hash == hash)
        && plugins_changed.is_empty()
    {
        return Err("the working copy and its plugins are identical to the published configuration: nothing to submit".into());
    }
    let diff = diff(host, state, &files, &working).await?;
    let authority_ws = published.as_ref().map_or(&working, |(_, ws)| ws);
    let (governance, plugins_dir) = (
        authority_ws.governance.clone(),
        authority_ws.plugins_dir.clone(),
    );
    let description = {
        let mut d = format!("{message}\n\nchanged: ");
        d.push_str(
            &diff
                .entities
                .iter()
                .map(|e| format!("{} {} {}", e.change, e.kind, e.name))
                .chain(plugins_changed.iter().cloned())
                .collect::<Vec<_>>()
                .join(", "),
        );
        d.push_str("\n\n");
        d.push_str(&diff.text);
        d
    };
    let request = ApprovalRequest {
        kind: RequestKind::ConfigChange,
        author: who.user.clone(),
        author_role: who.role,
        description,
        syncs: diff.syncs.iter().map(|s| s.impact.clone()).collect(),
    };
    let verdicts = ask_policies(host, root, &governance, &plugins_dir, &request).await;
    let (rejected, mut requirements) = combine(&verdicts, governance.policies.is_empty());
    requirements.extend(built_in_requirements(&diff));
    let mut change = ChangeRequest {
        id: state.next_change_id().map_err(state_err)?,
        author: who.user.clone(),
        author_role: who.role,
        message: message.to_string(),
        created_at: now(),
        status: ChangeStatus::Pending,
        config_hash: hash.clone(),
        base_hash: published.map(|(p, _)| p.config_hash),
        files,
        plugin_hashes,
        diff,
        policies: verdicts,
        requirements,
        reviews: Vec::new(),
        published_at: None,
    };
    change.settle(rejected.is_some());
    let event = AuditEvent {
        user: who.user.clone(),
        action: "change.submit".into(),
        target: format!("change #{}", change.id),
        config_hash: Some(hash),
        detail: serde_json::json!({"message": message, "status": change.status.as_str(), "rejected": rejected, "requirements": change.requirements}),
    };
    state
        .write_governance(
            vec![GovernanceDoc::Change(
                change.id,
                serde_json::to_value(&change).expect("serializes"),
            )],
            vec![event],
        )
        .map_err(state_err)?;
    if change.status == ChangeStatus::Pending {
        let needs = change
            .unmet()
            .iter()
            .map(|r| describe_requirement(r))
            .collect::<Vec<_>>()
            .join("; ");
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

/// What a policy is told about a sync that would send `planned`.
fn sync_impact(
    ws: &Workspace,
    sync: &crate::workspace::SyncConfig,
    planned: crate::state::OpCounts,
) -> SyncImpact {
    SyncImpact {
        sync_name: sync.name.clone(),
        destination: sync.destination.clone(),
        mode: sync.mode.as_str().into(),
        added: planned.added,
        changed: planned.changed,
        removed: planned.removed,
        column_labels: sync_labels(ws, &sync.name),
    }
}

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

fn load_change(state: &StateStore, id: u64) -> Result<ChangeRequest, String> {
    state
        .change::<ChangeRequest>(id)
        .map_err(state_err)?
        .ok_or_else(|| format!("no change request #{id} (see `backflow change list`)"))
}

/// `backflow change approve` / `change reject`.
pub fn review(
    state: &StateStore,
    who: &Identity,
    id: u64,
    approve: bool,
    comment: Option<&str>,
) -> Result<ChangeRequest, String> {
    authorize(
        who,
        if approve {
            Action::ApproveChange
        } else {
            Action::RejectChange
        },
    )
    .map_err(|e| e.to_string())?;
    let mut change = load_change(state, id)?;
    if change.status != ChangeStatus::Pending
        && !(change.status == ChangeStatus::Approved && !approve)
    {
        return Err(format!(
            "change #{id} is {}, not pending",
            change.status.as_str()
        ));
    }
    if approve {
        if change.author == who.user && !change.unmet().iter().all(|r| r.allow_self_approval) {
            return Err(format!(
                "{} cannot approve their own change #{id}: no policy allows self-approval",
                who.user
            ));
        }
        if change
            .reviews
            .iter()
            .any(|r| r.user == who.user && r.verdict == "approve")
        {
            return Err(format!("{} already approved change #{id}", who.user));
        }
    }
    change.reviews.push(Review {
        user: who.user.clone(),
        role: who.role,
        verdict: if approve { "approve" } else { "reject" }.into(),
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
    state
        .write_governance(
            vec![GovernanceDoc::Change(
                id,
                serde_json::to_value(&change).expect("serializes"),
            )],
            vec![event],
        )
        .map_err(state_err)?;
    Ok(change)
}

/// `backflow change publish`: only an approved change whose exact files are still the
/// working copy's, made against what is published now.
pub async fn publish(
    host: &PluginHost,
    root: &Path,
    state: &StateStore,
    who: &Identity,
    id: u64,
) -> Result<ChangeRequest, String> {
    authorize(who, Action::PublishChange).map_err(|e| e.to_string())?;
    let mut change = load_change(state, id)?;
    if change.status != ChangeStatus::Approved {
        let unmet = change
            .unmet()
            .iter()
            .map(|r| describe_requirement(r))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(match change.status {
            ChangeStatus::Pending => {
                format!("change #{id} is not approved yet; it still needs {unmet}")
            }
            other => format!(
                "change #{id} is {}; only an approved change can be published",
                other.as_str()
            ),
        });
    }
    if who.role < Role::Approver && who.user != change.author {
        return Err(format!(
            "{} may publish only their own changes (approvers and admins may publish any)",
            who.user
        ));
    }
    let files = ConfigFiles::read(root).map_err(|e| e.to_string())?;
    let now_hash = files.hash();
    if now_hash != change.config_hash {
        return Err(format!(
            "the working copy changed after change #{id} was reviewed (reviewed {}, working copy now {}): submit it again with `backflow change submit`",
            short(&change.config_hash),
            short(&now_hash)
        ));
    }
    let current = state
        .published::<Published>()
        .map_err(state_err)?
        .map(|p| p.config_hash);
    if current != change.base_hash {
        return Err(format!(
            "something else was published after change #{id} was submitted (it was made against {}, published is now {}): submit it again",
            change.base_hash.as_deref().map(short).unwrap_or("nothing"),
            current.as_deref().map(short).unwrap_or("nothing")
        ));
    }
    let working = Workspace::load_files(root, &files).map_err(|e| e.to_string())?;
    let now_plugins = plugin_hashes(host, &working).await?;
    for (reference, hash) in &change.plugin_hashes {
        if now_plugins.get(reference) != Some(hash) {
            return Err(format!(
                "plugin {reference} changed after change #{id} was reviewed (reviewed sha256 {}, now {}): submit it again",
                short(hash),
                now_plugins.get(reference).map(|h| short(h)).unwrap_or("missing")
            ));
        }
    }
    let at = now();
    change.status = ChangeStatus::Published;
    change.published_at = Some(at.clone());
    let published = Published {
        config_hash: change.config_hash.clone(),
        files,
        plugin_hashes: change.plugin_hashes.clone(),
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
    state
        .write_governance(
            vec![
                GovernanceDoc::Published(serde_json::to_value(&published).expect("serializes")),
                GovernanceDoc::Change(id, serde_json::to_value(&change).expect("serializes")),
            ],
            vec![event],
        )
        .map_err(state_err)?;
    Ok(change)
}

pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

pub fn list_changes(state: &StateStore, limit: usize) -> Result<Vec<ChangeRequest>, String> {
    state.changes(limit).map_err(state_err)
}

pub fn show_change(state: &StateStore, id: u64) -> Result<ChangeRequest, String> {
    load_change(state, id)
}

/// Posts a Slack-compatible message (`{"text": ...}`) to the configured webhook. Failures are
/// logged, never fatal: the request is recorded either way.
pub async fn notify(host: &PluginHost, governance: &Governance, text: &str) {
    let Some(template) = &governance.notify_url else {
        return;
    };
    // The URL is a secret (a Slack webhook URL is its own credential): logs name its host only.
    let url = match backflow_plugin_sdk::expand_secrets(template, "notification") {
        Ok(url) => url,
        Err(e) => {
            return tracing::warn!("approval notification not sent: approvals.notify_url: {e}")
        }
    };
    let host_name = reqwest::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let body = serde_json::json!({ "text": text, "blocks": [ { "type": "section", "text": { "type": "mrkdwn", "text": text } } ] });
    match host
        .http()
        .post(&url)
        .timeout(std::time::Duration::from_secs(10))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {
            tracing::info!(host = host_name, "approval notification sent")
        }
        Ok(r) => tracing::warn!(
            host = host_name,
            status = r.status().as_u16(),
            "approval notification refused"
        ),
        // reqwest's error text quotes the URL.
        Err(e) => tracing::warn!(
            host = host_name,
            "approval notification failed: {}",
            crate::redact::redact(&[url.clone()], &e.to_string())
        ),
    }
}

// ---------------------------------------------------------------------------------------
// The run-time gate.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateStatus {
    Waiting,
    Approved,
    /// The approved plan ran.
    Used,
}

/// A run held for approval: exactly which plan was reviewed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunGate {
    pub run_id: String,
    pub sync: String,
    pub requested_by: String,
    pub requested_at: String,
    pub expires_at: String,
    /// Fingerprint of every planned change (key, operation, row): what approval covers.
    pub plan_fingerprint: String,
    /// The sync's configuration the plan was made with; a release needs the same.
    pub config_hash: String,
    /// Whether the held run was a full resync (its approval re-plans the same way).
    #[serde(default)]
    pub full_resync: bool,
    /// The held run is an undo of this run (its approval undoes it the same way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<crate::sync::UndoTarget>,
    pub planned: crate::state::OpCounts,
    pub samples: serde_json::Value,
    pub requirements: Vec<Requirement>,
    pub approvals: Vec<Review>,
    pub status: GateStatus,
}

/// The run-time gate of a workspace: its approval policies, the held runs in its state.
pub struct PolicyGate<'a> {
    pub host: &'a PluginHost,
    pub ws: &'a Workspace,
    pub state: &'a StateStore,
}

impl ApprovalGate for PolicyGate<'_> {
    fn is_active(&self) -> bool {
        !self.ws.governance.policies.is_empty()
    }

    fn decide<'a>(
        &'a self,
        request: GateRequest<'a>,
    ) -> BoxFuture<'a, Result<GateDecision, GateError>> {
        let decided = gate_run(self.host, self.ws, self.state, request);
        Box::pin(async move { decided.await.map_err(GateError) })
    }
}

/// Asks the policies about a run's plan, unless it is the run of a plan already approved
/// with `runs approve`.
async fn gate_run(
    host: &PluginHost,
    ws: &Workspace,
    state: &StateStore,
    request: GateRequest<'_>,
) -> Result<GateDecision, String> {
    let GateRequest {
        run_id,
        sync,
        planned,
        plan_fingerprint,
        samples,
        config_hash,
        full_resync,
        user,
        approved_run,
        undo,
    } = request;
    if let Some(approved) = approved_run {
        if let Some(mut gate) = state.run_gate::<RunGate>(approved).map_err(state_err)? {
            if gate.status == GateStatus::Approved
                && gate.sync == sync.name
                && gate.plan_fingerprint == plan_fingerprint
                && gate.config_hash == config_hash
                && gate.undo.as_ref() == undo
            {
                gate.status = GateStatus::Used;
                let event = AuditEvent {
                    user: user.into(),
                    action: "run.release".into(),
                    target: format!("{} run {run_id}", sync.name),
                    config_hash: Some(config_hash.into()),
                    detail: serde_json::json!({"approved_run": approved, "plan_fingerprint": plan_fingerprint}),
                };
                state
                    .write_governance(
                        vec![GovernanceDoc::RunGate(
                            approved,
                            serde_json::to_value(&gate).expect("serializes"),
                        )],
                        vec![event],
                    )
                    .map_err(state_err)?;
                return Ok(GateDecision::Proceed);
            }
            tracing::warn!(sync = %sync.name, approved, "the data changed since the approved plan: asking the policies again");
        }
    }
    let role = ws
        .governance
        .users
        .get(user)
        .copied()
        .unwrap_or(Role::Contributor);
    let request = ApprovalRequest {
        kind: RequestKind::Run,
        author: user.into(),
        author_role: role,
        // Contract 0.1.0 has no field for it, so an undo says so in the description's first words.
        description: match undo {
            None => format!(
                "run of sync {} ({} added, {} changed, {} removed)",
                sync.name, planned.added, planned.changed, planned.removed
            ),
            Some(u) => format!(
                "undo of run {} of sync {} ({} added, {} changed, {} removed)",
                u.run_id, sync.name, planned.added, planned.changed, planned.removed
            ),
        },
        syncs: vec![sync_impact(ws, sync, planned)],
    };
    let verdicts = ask_policies(host, &ws.root, &ws.governance, &ws.plugins_dir, &request).await;
    let (rejected, requirements) = combine(&verdicts, false);
    if let Some(reason) = rejected {
        let event = AuditEvent {
            user: user.into(),
            action: "run.rejected".into(),
            target: format!("{} run {run_id}", sync.name),
            config_hash: Some(config_hash.into()),
            detail: serde_json::json!({"planned": planned, "reason": reason}),
        };
        state
            .write_governance(vec![], vec![event])
            .map_err(state_err)?;
        return Ok(GateDecision::Reject(reason));
    }
    if requirements.is_empty() {
        return Ok(GateDecision::Proceed);
    }
    let requested = time::OffsetDateTime::now_utc();
    let expires = requested
        + time::Duration::minutes(ws.governance.run_request_ttl_minutes.min(MAX_TTL_MINUTES) as i64);
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let gate = RunGate {
        run_id: run_id.into(),
        sync: sync.name.clone(),
        requested_by: user.into(),
        requested_at: fmt(requested),
        expires_at: fmt(expires),
        plan_fingerprint: plan_fingerprint.into(),
        config_hash: config_hash.into(),
        full_resync,
        undo: undo.cloned(),
        planned,
        samples,
        requirements: requirements.clone(),
        approvals: Vec::new(),
        status: GateStatus::Waiting,
    };
    let needs = requirements
        .iter()
        .map(describe_requirement)
        .collect::<Vec<_>>()
        .join("; ");
    let event = AuditEvent {
        user: user.into(),
        action: "run.awaiting_approval".into(),
        target: format!("{} run {run_id}", sync.name),
        config_hash: Some(config_hash.into()),
        detail: serde_json::json!({"planned": planned, "plan_fingerprint": plan_fingerprint, "requirements": requirements}),
    };
    state
        .write_governance(
            vec![GovernanceDoc::RunGate(
                run_id,
                serde_json::to_value(&gate).expect("serializes"),
            )],
            vec![event],
        )
        .map_err(state_err)?;
    let message = format!("run {run_id} of {} waits for approval: {needs}; approve with `backflow runs approve {run_id}`", sync.name);
    notify(host, &ws.governance, &format!("backflow: {message}")).await;
    Ok(GateDecision::Await(message))
}

/// `backflow runs approve RUN`: records an approval of a held run's plan. Returns the gate;
/// when it is approved the caller runs the sync again with this run as the approved plan.
pub fn approve_run(
    state: &StateStore,
    who: &Identity,
    run_id: &str,
    comment: Option<&str>,
) -> Result<RunGate, String> {
    authorize(who, Action::ApproveRun).map_err(|e| e.to_string())?;
    let mut gate = state
        .run_gate::<RunGate>(run_id)
        .map_err(state_err)?
        .ok_or_else(|| format!("run {run_id} is not waiting for approval"))?;
    if gate.status != GateStatus::Waiting {
        return Err(format!("run {run_id} was already approved"));
    }
    let expires = time::OffsetDateTime::parse(
        &gate.expires_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|e| {
        format!(
            "run {run_id}: stored expires_at {:?} is not a timestamp: {e}",
            gate.expires_at
        )
    })?;
    if time::OffsetDateTime::now_utc() > expires {
        return Err(format!(
            "the approval request for run {run_id} expired at {}: run the sync again to ask again",
            gate.expires_at
        ));
    }
    let unmet: Vec<&Requirement> = gate
        .requirements
        .iter()
        .filter(|r| !requirement_met(r, &gate.requested_by, &gate.approvals))
        .collect();
    if gate.requested_by == who.user && !unmet.iter().all(|r| r.allow_self_approval) {
        return Err(format!(
            "{} started run {run_id} and cannot approve it: no policy allows self-approval",
            who.user
        ));
    }
    if gate.approvals.iter().any(|a| a.user == who.user) {
        return Err(format!("{} already approved run {run_id}", who.user));
    }
    gate.approvals.push(Review {
        user: who.user.clone(),
        role: who.role,
        verdict: "approve".into(),
        comment: comment.map(str::to_string),
        at: now(),
    });
    if gate
        .requirements
        .iter()
        .all(|r| requirement_met(r, &gate.requested_by, &gate.approvals))
    {
        gate.status = GateStatus::Approved;
    }
    let event = AuditEvent {
        user: who.user.clone(),
        action: "run.approve".into(),
        target: format!("{} run {run_id}", gate.sync),
        config_hash: Some(gate.config_hash.clone()),
        detail: serde_json::json!({"comment": comment, "plan_fingerprint": gate.plan_fingerprint, "approved": gate.status == GateStatus::Approved}),
    };
    state
        .write_governance(
            vec![GovernanceDoc::RunGate(
                run_id,
                serde_json::to_value(&gate).expect("serializes"),
            )],
            vec![event],
        )
        .map_err(state_err)?;
    Ok(gate)
}
