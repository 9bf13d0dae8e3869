//! The built-in rules of a change request: requirements that hold whatever the approval
//! policies answer, each naming why in its text. A policy can waive a waivable rule only
//! explicitly (a [`PolicyWaiver`], read from a typed field of its decision) and only when
//! the policy itself was published by an admin; a waived rule stays visible, as a
//! requirement of zero approvals saying who waived it.
//!
//! [`BUILT_IN_RULES`] lists them (the README's table is the same list).

use super::diff::{ConfigDiff, EntityChangeKind};
use super::policies::Requirement;
use crate::domain::{Role, Severity, SyncMode};
use crate::workspace::Workspace;

/// One built-in rule, as documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltInRule {
    /// Its name, as a policy's waiver names it.
    pub name: &'static str,
    /// When it applies.
    pub applies_when: &'static str,
    /// Who must approve.
    pub approvers: &'static [Role],
    /// Whether an admin-published policy may waive it.
    pub waivable: bool,
}

const ADMIN: &[Role] = &[Role::Admin];
const APPROVER: &[Role] = &[Role::Approver, Role::Admin];

/// Every built-in rule.
pub const BUILT_IN_RULES: &[BuiltInRule] = &[
    rule("another-reviewer", "every change", APPROVER, true),
    rule(
        "governance",
        "users, policies or workspace/approval settings change",
        ADMIN,
        false,
    ),
    rule(
        "alerts",
        "an `[[alerts]]` entry is added, removed or changed",
        ADMIN,
        false,
    ),
    rule(
        "reach",
        "a destination is added or any `grants` table changes",
        ADMIN,
        false,
    ),
    rule(
        "labels",
        "a column label is removed anywhere (renames included)",
        ADMIN,
        false,
    ),
    rule(
        "checks",
        "a check is removed or weakened (fail → warn, looser threshold)",
        APPROVER,
        false,
    ),
    rule(
        "deletes",
        "a sync switches to (or is added in) `mirror` mode, enabling deletes",
        ADMIN,
        false,
    ),
    rule(
        "plugin-code",
        "a plugin's build differs from the published one",
        ADMIN,
        false,
    ),
    rule(
        "unplanned",
        "an affected sync cannot be dry-run",
        ADMIN,
        false,
    ),
];

const fn rule(
    name: &'static str,
    applies_when: &'static str,
    approvers: &'static [Role],
    waivable: bool,
) -> BuiltInRule {
    BuiltInRule {
        name,
        applies_when,
        approvers,
        waivable,
    }
}

/// The built-in rules a policy's decision waives explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyWaiver {
    /// The policy's name.
    pub policy: String,
    /// The rule names its decision waives.
    pub rules: Vec<String>,
    /// Whether the policy (its entry in the published configuration) was published by an
    /// admin: a waiver counts only then.
    pub published_by_admin: bool,
}

/// Whether a policy of the published configuration counts as published by an admin: the
/// user who published that configuration is an admin in it. (Every policy change also
/// needs an admin's approval, by the `governance` rule.) The lead's wiring of contract
/// 0.3.0's `waive` field sets [`PolicyWaiver::published_by_admin`] from this.
pub(crate) fn published_by_admin(published: &super::published::Published, ws: &Workspace) -> bool {
    ws.governance.users.get(&published.published_by) == Some(&Role::Admin)
}

/// The built-in rules a policy's decision waives: contract 0.3.0's typed `waive` field, in
/// the names of [`BUILT_IN_RULES`] (the contract's `approver-other-than-author` is
/// `another-reviewer`, the only waivable rule). Policies of 0.1.0 and 0.2.0 waive nothing.
pub(crate) fn waived_rules(verdict: &super::policies::PolicyVerdict) -> Vec<String> {
    verdict.waive.clone()
}

/// What a 0.3.0 policy is shown beside its request: each plugin build the change makes
/// differ from the published one, and the built-in requirements (`built_in`, computed
/// without waivers).
pub(crate) fn review_context(
    diff: &super::diff::ConfigDiff,
    built_in: &[super::policies::Requirement],
) -> backflow_plugin_sdk::ReviewContext {
    backflow_plugin_sdk::ReviewContext {
        plugin_changes: diff
            .plugins
            .iter()
            .map(|p| backflow_plugin_sdk::PluginChange {
                name: p.reference.clone(),
                old_hash: p.old_hash.clone(),
                new_hash: p.new_hash.clone(),
                spec_changes: p.spec_changes.clone(),
            })
            .collect(),
        built_in: built_in
            .iter()
            .map(|r| backflow_plugin_sdk::BuiltInRequirement {
                rule: r.rule.clone().unwrap_or_default(),
                reason: r.reason.clone(),
                roles: r.roles.clone(),
                count: r.count,
            })
            .collect(),
    }
}

/// What each policy's decision waives, for [`built_in_requirements`]. `published`: the
/// published configuration the policies come from (none: nobody vouched for them yet).
pub(crate) fn policy_waivers(
    verdicts: &[super::policies::PolicyVerdict],
    published: Option<(&super::published::Published, &Workspace)>,
) -> Vec<PolicyWaiver> {
    let vouched = published.is_some_and(|(p, ws)| published_by_admin(p, ws));
    verdicts
        .iter()
        .map(|v| PolicyWaiver {
            policy: v.policy.clone(),
            rules: waived_rules(v),
            published_by_admin: vouched,
        })
        .filter(|w| !w.rules.is_empty())
        .collect()
}

/// The rule named `name`.
fn find(name: &str) -> &'static BuiltInRule {
    BUILT_IN_RULES
        .iter()
        .find(|r| r.name == name)
        .expect("every rule used is listed in BUILT_IN_RULES")
}

/// The requirement of rule `name` for `reason`, or its waived form.
fn requirement(name: &str, reason: String, waivers: &[PolicyWaiver]) -> Requirement {
    let rule = find(name);
    let waived_by = waivers
        .iter()
        .find(|w| rule.waivable && w.published_by_admin && w.rules.iter().any(|r| r == name));
    Requirement {
        policy: "built-in".into(),
        count: if waived_by.is_some() { 0 } else { 1 },
        roles: rule.approvers.to_vec(),
        allow_self_approval: false,
        reason: match waived_by {
            Some(w) => format!("waived by policy {}: {reason}", w.policy),
            None => reason,
        },
        rule: Some(name.to_string()),
    }
}

/// The checks of the published syncs that the working copy removes or weakens.
fn weakened_checks(published: &Workspace, working: &Workspace) -> Vec<String> {
    let mut out = Vec::new();
    for (sync_name, old_sync) in &published.syncs {
        let Some(new_sync) = working.syncs.get(sync_name) else {
            continue;
        };
        for old in &old_sync.checks {
            let Some(new) = new_sync.checks.iter().find(|c| c.name == old.name) else {
                out.push(format!("removes check {} of sync {sync_name}", old.name));
                continue;
            };
            if old.severity == Severity::Fail && new.severity == Severity::Warn {
                out.push(format!(
                    "lowers check {} of sync {sync_name} from fail to warn",
                    old.name
                ));
            }
            if new.connector.plugin != old.connector.plugin {
                out.push(format!(
                    "runs check {} of sync {sync_name} with plugin {} instead of {}",
                    old.name, new.connector.plugin, old.connector.plugin
                ));
            }
            for looser in looser_thresholds(&old.connector.config_json, &new.connector.config_json)
            {
                out.push(format!(
                    "loosens check {} of sync {sync_name}: {looser}",
                    old.name
                ));
            }
        }
    }
    out
}

/// The numeric thresholds of a check's config that `new` loosens: a `max…` raised or
/// dropped, a `min…` lowered or dropped (`max_percent 10 → 50`).
fn looser_thresholds(old: &str, new: &str) -> Vec<String> {
    let parse = |text: &str| {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).unwrap_or_default()
    };
    let (old, new) = (parse(old), parse(new));
    let mut out = Vec::new();
    for (key, value) in &old {
        let Some(before) = value.as_f64() else {
            continue;
        };
        let after = new.get(key).and_then(|v| v.as_f64());
        let looser = if key.starts_with("max") {
            after.is_none_or(|a| a > before)
        } else if key.starts_with("min") {
            after.is_none_or(|a| a < before)
        } else {
            false
        };
        if looser {
            let after = after.map_or("removed".to_string(), |a| a.to_string());
            out.push(format!("{key} {before} → {after}"));
        }
    }
    out
}

/// Syncs the working copy switches to `mirror` (or adds in `mirror` mode): they delete.
fn new_deletes(published: Option<&Workspace>, working: &Workspace) -> Vec<String> {
    working
        .syncs
        .iter()
        .filter(|(_, s)| s.mode == SyncMode::Mirror)
        .filter_map(
            |(name, _)| match published.map(|p| p.syncs.get(name).map(|s| s.mode)) {
                Some(Some(SyncMode::Mirror)) => None,
                Some(Some(old)) => Some(format!(
                    "switches sync {name} from {} to mirror",
                    old.as_str()
                )),
                Some(None) => Some(format!("adds sync {name} in mirror mode")),
                None => None,
            },
        )
        .collect()
}

/// Rules no policy can relax silently, for a change whose diff is `diff` made against
/// `published` (the published workspace, if any). `waivers`: what the policies' decisions
/// waive explicitly (none until policies of contract 0.3.0 are read).
pub(crate) fn built_in_requirements(
    diff: &ConfigDiff,
    published: Option<&Workspace>,
    working: &Workspace,
    waivers: &[PolicyWaiver],
) -> Vec<Requirement> {
    let mut out = vec![requirement(
        "another-reviewer",
        "every change is reviewed by an approver or admin other than its author".into(),
        waivers,
    )];
    // `why` is `WHAT IT DOES|WHY THAT NEEDS A REVIEW`: the items go in between.
    let mut push = |name: &str, why: &str, what: Vec<String>| {
        if !what.is_empty() {
            let (does, because) = why.split_once('|').unwrap_or((why, ""));
            let reason = format!("{does} ({}), {because}", what.join(", "));
            out.push(requirement(name, reason, waivers));
        }
    };
    let entities = |pred: &dyn Fn(&str, &str) -> bool| -> Vec<String> {
        diff.entities
            .iter()
            .filter(|e| pred(&e.kind, &e.name))
            .map(|e| format!("{} {} {}", e.change, e.kind, e.name))
            .collect()
    };
    push(
        "governance",
        "changes who may do what|so an admin reviews it",
        entities(&|kind, name| {
            matches!(kind, "users" | "policies") || (kind == "settings" && name != "alerts")
        }),
    );
    push(
        "alerts",
        "changes alerts|which decide where run outcomes go and which secrets they may read, so an admin reviews it",
        entities(&|kind, name| kind == "settings" && name == "alerts"),
    );
    // What backflow may touch and where it may send: adding a destination (staging or not)
    // or changing any grants.
    let mut reach: Vec<String> = diff
        .entities
        .iter()
        .filter(|e| e.kind == "destinations" && e.change == EntityChangeKind::Added)
        .map(|e| format!("adds destination {}", e.name))
        .collect();
    reach.extend(diff.changed_grants.iter().map(|g| format!("changes {g}")));
    push(
        "reach",
        "changes what backflow may reach|so an admin reviews it",
        reach,
    );
    push(
        "labels",
        "removes column labels|which policies protect, so an admin reviews it",
        diff.removed_labels.clone(),
    );
    push(
        "checks",
        "removes or weakens quality gates|which stop bad data, so another approver reviews it",
        published.map_or_else(Vec::new, |p| weakened_checks(p, working)),
    );
    push(
        "deletes",
        "lets syncs delete records in their destination|so an admin reviews it",
        new_deletes(published, working),
    );
    push(
        "plugin-code",
        "runs new plugin code with the workspace's grants|so an admin reviews it",
        diff.plugins
            .iter()
            .filter(|p| p.is_rebuild())
            .map(|p| p.describe())
            .collect(),
    );
    push(
        "unplanned",
        "cannot dry-run|so its size is unknown and an admin reviews it",
        diff.syncs
            .iter()
            .filter(|s| s.error.is_some())
            .map(|s| format!("sync {}", s.impact.sync_name))
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::diff::{EntityChange, SyncPlanCounts};
    use super::super::plugin_changes::PluginBuildChange;
    use super::*;
    use crate::workspace::ConfigFiles;
    use backflow_plugin_sdk::SyncImpact;
    use std::collections::BTreeMap;

    fn empty_diff() -> ConfigDiff {
        ConfigDiff {
            published_hash: None,
            working_hash: "w".into(),
            entities: vec![],
            syncs: vec![],
            text: String::new(),
            removed_labels: vec![],
            changed_grants: vec![],
            plugins: vec![],
        }
    }

    fn entity(kind: &str, name: &str, change: EntityChangeKind) -> EntityChange {
        EntityChange {
            kind: kind.into(),
            name: name.into(),
            change,
        }
    }

    const BASE: &str = r#"
[workspace]
plugins_dir = "p"
[sources.files]
plugin = "file-source"
grants.files = ["data"]
[destinations.hook]
plugin = "webhook"
config.url = "http://127.0.0.1:9/x"
grants.network = ["127.0.0.1:9"]
[models.m]
source = "files"
query = "data/x.csv"
primary_key = "id"
[syncs.s]
model = "m"
destination = "hook"
[[syncs.s.checks]]
name = "blast"
plugin = "checks"
config = { check = "max_changes", change = "removed", max_percent = 10 }
[[syncs.s.checks]]
name = "emails"
plugin = "checks"
config = { check = "not_null", columns = ["email"] }
"#;

    fn load(dir: &std::path::Path, text: &str) -> Workspace {
        let files = ConfigFiles(BTreeMap::from([(
            "backflow.toml".to_string(),
            text.to_string(),
        )]));
        Workspace::load_files(dir, &files).unwrap_or_else(|e| panic!("{e}"))
    }

    fn reasons(rs: &[Requirement]) -> Vec<(&str, &str)> {
        rs.iter()
            .map(|r| (r.rule.as_deref().unwrap_or(""), r.reason.as_str()))
            .collect()
    }

    #[test]
    fn every_change_needs_another_reviewer_and_nothing_else_when_nothing_is_sensitive() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let ws = load(dir.path(), BASE);
        let mut diff = empty_diff();
        diff.entities = vec![
            entity("syncs", "s", EntityChangeKind::Modified),
            entity("destinations", "old", EntityChangeKind::Removed),
        ];
        let rs = built_in_requirements(&diff, Some(&ws), &ws, &[]);
        assert_eq!(
            reasons(&rs),
            vec![(
                "another-reviewer",
                "every change is reviewed by an approver or admin other than its author"
            )]
        );
        assert_eq!(rs[0].roles, vec![Role::Approver, Role::Admin]);
        assert!(!rs[0].allow_self_approval);
        assert_eq!(rs[0].count, 1);
    }

    #[test]
    fn removing_weakening_checks_and_switching_to_mirror_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let published = load(dir.path(), BASE);
        let edited = BASE
            .replace("max_percent = 10", "max_percent = 50")
            .replace(
                "[[syncs.s.checks]]\nname = \"emails\"\nplugin = \"checks\"\nconfig = { check = \"not_null\", columns = [\"email\"] }\n",
                "",
            )
            .replace("destination = \"hook\"\n", "destination = \"hook\"\nmode = \"mirror\"\n");
        let working = load(dir.path(), &edited);
        let rs = built_in_requirements(&empty_diff(), Some(&published), &working, &[]);
        assert_eq!(
            reasons(&rs)[1..],
            [
                ("checks", "removes or weakens quality gates (loosens check blast of sync s: max_percent 10 → 50, removes check emails of sync s), which stop bad data, so another approver reviews it"),
                ("deletes", "lets syncs delete records in their destination (switches sync s from upsert to mirror), so an admin reviews it"),
            ]
        );
        let warn = load(
            dir.path(),
            &BASE.replace(
                "name = \"blast\"\n",
                "name = \"blast\"\nseverity = \"warn\"\n",
            ),
        );
        assert_eq!(
            weakened_checks(&published, &warn),
            vec!["lowers check blast of sync s from fail to warn"]
        );
        // Tightening is not weakening.
        assert!(looser_thresholds(
            r#"{"max_percent":10,"min_rows":5}"#,
            r#"{"max_percent":5,"min_rows":9}"#
        )
        .is_empty());
        assert_eq!(
            looser_thresholds(r#"{"min_rows":5}"#, r#"{}"#),
            vec!["min_rows 5 → removed"]
        );
    }

    #[test]
    fn governance_alerts_reach_labels_plugins_and_unplanned_syncs_need_an_admin() {
        let mut diff = empty_diff();
        diff.entities = vec![
            entity("users", "bob", EntityChangeKind::Added),
            entity("policies", "size", EntityChangeKind::Modified),
            entity("settings", "alerts", EntityChangeKind::Modified),
            entity("destinations", "crm", EntityChangeKind::Added),
        ];
        diff.changed_grants = vec!["sources.files.grants".into()];
        diff.removed_labels = vec!["email:pii".into()];
        diff.plugins = vec![PluginBuildChange {
            reference: "webhook".into(),
            old_hash: Some("1111111111111111".into()),
            new_hash: "2222222222222222".into(),
            old_size: Some(10),
            new_size: 20,
            spec_changes: vec![],
        }];
        let impact = SyncImpact {
            sync_name: "broken".into(),
            destination: "hook".into(),
            mode: "upsert".into(),
            added: 0,
            changed: 0,
            removed: 0,
            column_labels: vec![],
        };
        diff.syncs = vec![SyncPlanCounts {
            impact,
            error: Some("no such file".into()),
            samples: serde_json::Value::Null,
            checks: vec![],
        }];
        let rs = built_in_requirements(&diff, None, &dummy_working(), &[]);
        let got: Vec<&str> = rs.iter().skip(1).map(|r| r.reason.as_str()).collect();
        assert_eq!(
            got,
            vec![
                "changes who may do what (added users bob, modified policies size), so an admin reviews it",
                "changes alerts (modified settings alerts), which decide where run outcomes go and which secrets they may read, so an admin reviews it",
                "changes what backflow may reach (adds destination crm, changes sources.files.grants), so an admin reviews it",
                "removes column labels (email:pii), which policies protect, so an admin reviews it",
                "runs new plugin code with the workspace's grants (webhook sha256 111111111111 (10 bytes) → 222222222222 (20 bytes): same spec), so an admin reviews it",
                "cannot dry-run (sync broken), so its size is unknown and an admin reviews it",
            ]
        );
        for r in &rs[1..] {
            assert_eq!(r.policy, "built-in");
            assert_eq!((r.count, r.roles.as_slice()), (1, &[Role::Admin][..]));
            assert!(!r.allow_self_approval);
        }
    }

    fn dummy_working() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        load(dir.path(), BASE)
    }

    #[test]
    fn only_an_admin_published_policy_waives_and_only_a_waivable_rule() {
        let waiver = |by_admin: bool| PolicyWaiver {
            policy: "trusted".into(),
            rules: vec!["another-reviewer".into(), "plugin-code".into()],
            published_by_admin: by_admin,
        };
        let mut diff = empty_diff();
        diff.plugins = vec![PluginBuildChange {
            reference: "webhook".into(),
            old_hash: Some("1".into()),
            new_hash: "2".into(),
            old_size: None,
            new_size: 20,
            spec_changes: vec![],
        }];
        let ws = dummy_working();
        let rs = built_in_requirements(&diff, None, &ws, &[waiver(false)]);
        assert_eq!(
            (rs[0].count, rs[1].count),
            (1, 1),
            "not published by an admin"
        );
        let rs = built_in_requirements(&diff, None, &ws, &[waiver(true)]);
        assert_eq!(rs[0].count, 0);
        assert!(
            rs[0].reason.starts_with("waived by policy trusted: "),
            "{}",
            rs[0].reason
        );
        assert_eq!(rs[1].count, 1, "plugin code is not waivable");
    }

    #[test]
    fn every_rule_is_documented_once() {
        let mut names: Vec<&str> = BUILT_IN_RULES.iter().map(|r| r.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), BUILT_IN_RULES.len());
    }
}
