//! The working copy against the published configuration: which entities differ, the unified
//! diff of the files, which `grants` tables and column labels changed, and a dry run of each
//! affected sync (what a policy is told about it).

use super::plugin_changes::{build_changes, plugin_builds, PluginBuildChange};
use super::published::Published;
use crate::state::{StateError, StateStore};
use crate::workspace::{ConfigFiles, Workspace};
use backflow_plugin_sdk::SyncImpact;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How an entity differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityChangeKind {
    /// Only in the working copy.
    Added,
    /// Only in the published configuration.
    Removed,
    /// In both, different.
    Modified,
}

impl EntityChangeKind {
    /// `added`, `removed` or `modified`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityChangeKind::Added => "added",
            EntityChangeKind::Removed => "removed",
            EntityChangeKind::Modified => "modified",
        }
    }
}

impl std::fmt::Display for EntityChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One entity (source, destination, model, sync, user, policy, setting) that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityChange {
    /// `sources`, `destinations`, `models`, `syncs`, `users`, `policies` or `settings`.
    pub kind: String,
    /// The entity's name (a policy without one: `PLUGIN[INDEX]`).
    pub name: String,
    /// `added`, `removed` or `modified`.
    pub change: EntityChangeKind,
}

/// What a sync would do under the changed configuration (a dry run against current state).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncPlanCounts {
    /// What a policy is told about the sync.
    #[serde(flatten)]
    pub impact: SyncImpact,
    /// Why it could not be planned, if it could not.
    pub error: Option<String>,
    /// A few sample rows per change (`added`: rows; `changed`: before/after; `removed`:
    /// before), as `sync plan` shows them.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub samples: serde_json::Value,
    /// The sync's quality checks on the planned rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::domain::CheckReport>,
}

/// Sample rows kept per change (added, changed, removed) of each affected sync.
const SAMPLES_PER_CHANGE: usize = 3;

/// The working copy against the published configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigDiff {
    /// Hash of the published files, if anything is published.
    pub published_hash: Option<String>,
    /// Hash of the working copy's files.
    pub working_hash: String,
    /// The entities that differ.
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
    /// Plugins whose build differs from the published one (new code runs with the change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginBuildChange>,
}

impl ConfigDiff {
    /// Whether the working copy and its plugins are exactly what is published.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty() && self.plugins.is_empty()
    }
}

/// Configuration entities by (kind, name), as TOML values.
type Entities = BTreeMap<(String, String), toml::Value>;

/// Configuration entities by (kind, name) as TOML values, from every file.
fn entities(files: &ConfigFiles) -> Entities {
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
            insert_entities(&mut out, kind, value);
        }
    }
    out
}

/// The entities of one top-level key of a configuration file.
fn insert_entities(out: &mut Entities, kind: String, value: toml::Value) {
    match (kind.as_str(), value) {
        ("sources" | "destinations" | "models" | "syncs" | "users", toml::Value::Table(t)) => {
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

/// The entities that differ between `old` and `new`, by kind and name.
fn entity_changes(old: &Entities, new: &Entities) -> Vec<EntityChange> {
    let keys: BTreeSet<&(String, String)> = old.keys().chain(new.keys()).collect();
    let mut changes = Vec::new();
    for key in keys {
        let change = match (old.get(key), new.get(key)) {
            (None, Some(_)) => EntityChangeKind::Added,
            (Some(_), None) => EntityChangeKind::Removed,
            (Some(a), Some(b)) if a != b => EntityChangeKind::Modified,
            _ => continue,
        };
        changes.push(EntityChange {
            kind: key.0.clone(),
            name: key.1.clone(),
            change,
        });
    }
    changes
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

/// What a policy is told about a sync that would send `planned`.
pub(crate) fn sync_impact(
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

/// The working copy against the published configuration, with a dry run of every affected
/// sync (counts against the current snapshot; nothing is sent or recorded).
pub async fn diff(
    host: &crate::plugins::Registry,
    state: &StateStore,
    working_files: &ConfigFiles,
    working: &Workspace,
) -> Result<ConfigDiff, StateError> {
    let published = state.published::<Published>()?;
    let published_ws = published
        .as_ref()
        .and_then(|p| Workspace::load_files(&working.root, &p.files).ok());
    let empty = ConfigFiles::default();
    let old_files = published.as_ref().map(|p| &p.files).unwrap_or(&empty);
    let old = entities(old_files);
    let new = entities(working_files);
    let changes = entity_changes(&old, &new);
    let syncs = dry_run_affected(host, state, working, published_ws.as_ref(), &changes).await;
    // A plugin that does not resolve is reported by whatever needs it (submit names it).
    let plugins = match (&published, plugin_builds(host, working).await) {
        (Some(p), Ok(now)) => build_changes(&p.plugin_hashes, &p.plugin_builds, &now),
        _ => Vec::new(),
    };
    Ok(ConfigDiff {
        published_hash: published.as_ref().map(|p| p.config_hash.clone()),
        working_hash: working_files.hash(),
        entities: changes,
        syncs,
        text: unified_diff(old_files, working_files),
        removed_labels: match &published_ws {
            Some(p) => removed_labels(p, working),
            None => Vec::new(),
        },
        changed_grants: changed_grants(&old, &new),
        plugins,
    })
}

/// A dry run of every sync of `working` that `changes` touch (its sync, model, destination
/// or source).
async fn dry_run_affected(
    host: &crate::plugins::Registry,
    state: &StateStore,
    working: &Workspace,
    published_ws: Option<&Workspace>,
    changes: &[EntityChange],
) -> Vec<SyncPlanCounts> {
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
            SAMPLES_PER_CHANGE,
        )
        .await;
        let counts = planned.as_ref().map(|r| r.planned).unwrap_or_default();
        let mut impact = sync_impact(working, s, counts);
        // A label removed in the working copy still counts: dropping `pii` must not dodge
        // the rule that protects it.
        if let Some(published_ws) = published_ws {
            let mut labels: BTreeSet<String> = impact.column_labels.into_iter().collect();
            labels.extend(sync_labels(published_ws, name));
            impact.column_labels = labels.into_iter().collect();
        }
        let (samples, checks) = match &planned {
            Ok(report) => (report.samples.clone(), report.checks.clone()),
            Err(_) => (serde_json::Value::Null, Vec::new()),
        };
        syncs.push(SyncPlanCounts {
            impact,
            error: planned.err().map(|e| e.to_string()),
            samples,
            checks,
        });
    }
    syncs
}

/// Every `column:label` of a workspace's models.
fn column_labels(ws: &Workspace) -> BTreeSet<String> {
    ws.models
        .values()
        .flat_map(|m| {
            m.labels
                .iter()
                .flat_map(|(column, labels)| labels.iter().map(move |l| format!("{column}:{l}")))
        })
        .collect()
}

/// The `column:label`s `published` has and `working` no longer has anywhere.
fn removed_labels(published: &Workspace, working: &Workspace) -> Vec<String> {
    column_labels(published)
        .difference(&column_labels(working))
        .cloned()
        .collect()
}

/// The paths of every `grants` table added, removed or changed between `old` and `new`.
fn changed_grants(old: &Entities, new: &Entities) -> Vec<String> {
    let grants = |entities: &Entities| {
        let mut out = BTreeMap::new();
        for ((kind, name), value) in entities {
            collect_grants(&format!("{kind}.{name}"), value, &mut out);
        }
        out
    };
    let (old_grants, new_grants) = (grants(old), grants(new));
    old_grants
        .keys()
        .chain(new_grants.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| old_grants.get(*k) != new_grants.get(*k))
        .cloned()
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> ConfigFiles {
        ConfigFiles(
            pairs
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
        )
    }

    fn key(kind: &str, name: &str) -> (String, String) {
        (kind.into(), name.into())
    }

    const MAIN: &str = r#"
[workspace]
plugins_dir = "p"
[sources.files]
plugin = "file-source"
grants.files = ["data"]
[destinations.hook]
plugin = "webhook"
config.url = "http://127.0.0.1:9/x"
grants.network = ["127.0.0.1:9"]
[users]
ann = { role = "admin" }
[[policies]]
name = "size"
plugin = "size-policy"
[[policies]]
plugin = "pii-policy"
[[policies]]
config.x = 1
"#;

    #[test]
    fn entities_are_keyed_by_kind_and_name_from_every_file() {
        let entities = entities(&files(&[
            ("backflow.toml", MAIN),
            ("models/m.toml", "source = \"files\"\nquery = \"x\"\n"),
            ("syncs/s.toml", "model = \"m\"\ndestination = \"hook\"\n"),
            ("syncs/broken.toml", "not toml ="),
        ]));
        let keys: Vec<_> = entities.keys().cloned().collect();
        assert_eq!(
            keys,
            vec![
                key("destinations", "hook"),
                key("models", "m"),
                key("policies", "[2]"),
                key("policies", "pii-policy[1]"),
                key("policies", "size"),
                key("settings", "workspace"),
                key("sources", "files"),
                key("syncs", "s"),
                key("users", "ann"),
            ]
        );
        assert_eq!(
            entities[&key("models", "m")]["query"].as_str(),
            Some("x"),
            "a model file is the model"
        );
    }

    #[test]
    fn changes_are_added_removed_or_modified_and_the_rest_is_left_out() {
        let old = entities(&files(&[("backflow.toml", MAIN)]));
        let edited = MAIN
            .replace("[users]\nann = { role = \"admin\" }\n", "")
            .replace("127.0.0.1:9\"]", "127.0.0.1:10\"]")
            + "[sources.more]\nplugin = \"file-source\"\n";
        let new = entities(&files(&[("backflow.toml", &edited)]));
        let changes: Vec<(String, String, EntityChangeKind)> = entity_changes(&old, &new)
            .into_iter()
            .map(|c| (c.kind, c.name, c.change))
            .collect();
        assert_eq!(
            changes,
            vec![
                (
                    "destinations".into(),
                    "hook".into(),
                    EntityChangeKind::Modified
                ),
                ("sources".into(), "more".into(), EntityChangeKind::Added),
                ("users".into(), "ann".into(), EntityChangeKind::Removed),
            ]
        );
        assert_eq!(changed_grants(&old, &new), vec!["destinations.hook.grants"]);
        assert_eq!(entity_changes(&old, &old), vec![]);
        assert_eq!(changed_grants(&old, &old), Vec::<String>::new());
    }

    #[test]
    fn grants_are_found_wherever_they_are_nested() {
        let mut out = BTreeMap::new();
        let value: toml::Value = toml::from_str(
            "grants = { files = [\"a\"] }\nchecks = [{ grants = { env = [\"X\"] } }, { plugin = \"c\" }]\n",
        )
        .unwrap();
        collect_grants("syncs.s", &value, &mut out);
        assert_eq!(
            out.keys().collect::<Vec<_>>(),
            vec!["syncs.s.checks[0].grants", "syncs.s.grants"]
        );
        let old = BTreeMap::from([(key("syncs", "s"), value)]);
        assert_eq!(
            changed_grants(&old, &BTreeMap::new()),
            vec!["syncs.s.checks[0].grants", "syncs.s.grants"],
            "removing an entity removes its grants"
        );
    }

    #[test]
    fn the_unified_diff_names_published_and_working_files() {
        let old = files(&[("backflow.toml", "a = 1\n"), ("syncs/gone.toml", "x = 1\n")]);
        let new = files(&[("backflow.toml", "a = 2\n"), ("models/new.toml", "y = 1\n")]);
        let text = unified_diff(&old, &new);
        assert!(text.contains("--- published/backflow.toml\n+++ working/backflow.toml\n"));
        assert!(text.contains("-a = 1\n+a = 2\n"));
        assert!(text.contains("--- /dev/null\n+++ working/models/new.toml\n"));
        assert!(text.contains("--- published/syncs/gone.toml\n+++ /dev/null\n"));
        assert_eq!(unified_diff(&old, &old), "");
    }

    #[test]
    fn an_entity_change_is_stored_and_shown_as_before() {
        let change = EntityChange {
            kind: "syncs".into(),
            name: "s".into(),
            change: EntityChangeKind::Modified,
        };
        assert_eq!(
            serde_json::to_value(&change).unwrap(),
            serde_json::json!({"kind": "syncs", "name": "s", "change": "modified"})
        );
        assert_eq!(format!("{:<9}|", EntityChangeKind::Added), "added    |");
    }
}
