//! Plugin builds as part of a change: what each plugin file a workspace uses is (hash, size,
//! what its spec declares, which imports it requests), and which builds differ from the
//! published ones. A new build is code that will run with the workspace's grants, so it is
//! shown to reviewers and needs an admin (see `builtin_rules`), even when no configuration
//! file changed.

use crate::workspace::Workspace;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A plugin of the workspace that cannot be resolved.
#[derive(Debug, thiserror::Error)]
#[error("plugin {reference}: {error:#}")]
pub struct PluginUnavailable {
    /// The workspace's reference to it.
    pub reference: String,
    /// Why it cannot be resolved.
    pub error: anyhow::Error,
}

/// One plugin file as submitted or published: its identity and what it declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginBuild {
    /// SHA-256 of the file.
    pub hash: String,
    /// The file's size in bytes.
    pub size: u64,
    /// The name its spec declares.
    pub name: String,
    /// The version its spec declares.
    pub version: String,
    /// The kind its spec declares (`destination`, `source`, …).
    pub kind: String,
    /// The operations its spec declares (destinations).
    pub operations: Vec<String>,
    /// Its config schema, as JSON text.
    pub config_schema: String,
    /// The interfaces the component imports from the host (`wasi:sockets/…`, `backflow:…`).
    pub imports: Vec<String>,
}

/// A plugin whose build differs from the published one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginBuildChange {
    /// The workspace's reference to it (`webhook`, `local/x.wasm`).
    pub reference: String,
    /// The published build's SHA-256 (`None`: the published configuration does not use it).
    pub old_hash: Option<String>,
    /// The working copy's build's SHA-256.
    pub new_hash: String,
    /// The published build's size, when it was recorded.
    pub old_size: Option<u64>,
    /// The working copy's build's size.
    pub new_size: u64,
    /// What the new build's spec declares differently (`version 0.1.0 → 0.2.0`); empty when
    /// it declares the same.
    pub spec_changes: Vec<String>,
}

impl PluginBuildChange {
    /// A rebuild of a plugin the published configuration already runs (not a new reference).
    pub fn is_rebuild(&self) -> bool {
        self.old_hash.is_some()
    }

    /// `webhook sha256 0123456789ab (1024 bytes) → 3210fedcba98 (2048 bytes): version 1 → 2`.
    pub fn describe(&self) -> String {
        let old = match (&self.old_hash, self.old_size) {
            (Some(h), Some(size)) => format!("{} ({size} bytes)", short(h)),
            (Some(h), None) => short(h).to_string(),
            (None, _) => "(not published)".to_string(),
        };
        let mut text = format!(
            "{} sha256 {old} → {} ({} bytes)",
            self.reference,
            short(&self.new_hash),
            self.new_size
        );
        if !self.spec_changes.is_empty() {
            text.push_str(": ");
            text.push_str(&self.spec_changes.join("; "));
        } else if self.is_rebuild() {
            text.push_str(": same spec");
        }
        text
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// A serde enum's name (`destination`, `upsert`), or its debug text.
fn label<T: Serialize + std::fmt::Debug>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{value:?}"),
    }
}

/// What a loaded plugin is: hash, size, spec and imports.
pub(crate) fn build_of(plugin: &crate::host::Plugin) -> PluginBuild {
    let component = &plugin.component;
    let mut imports: Vec<String> = component
        .component_type()
        .imports(component.engine())
        .map(|(name, _)| name.to_string())
        .collect();
    imports.sort();
    PluginBuild {
        hash: plugin.hash.clone(),
        size: std::fs::metadata(&plugin.path).map_or(0, |m| m.len()),
        name: plugin.spec.name.clone(),
        version: plugin.spec.version.clone(),
        kind: label(&plugin.spec.kind),
        operations: plugin.spec.operations.iter().map(label).collect(),
        config_schema: plugin.spec.config_schema.clone(),
        imports,
    }
}

/// Every plugin a workspace uses, by reference, as built now.
pub(crate) async fn plugin_builds(
    host: &crate::plugins::Registry,
    ws: &Workspace,
) -> Result<BTreeMap<String, PluginBuild>, PluginUnavailable> {
    let mut out = BTreeMap::new();
    for reference in ws.plugin_refs() {
        let plugin = crate::plugins::resolve(host, &ws.root, &ws.plugins_dir, &reference)
            .await
            .map_err(|error| PluginUnavailable {
                reference: reference.clone(),
                error,
            })?;
        out.insert(reference, build_of(&plugin));
    }
    Ok(out)
}

/// What `new` declares differently from `old`.
fn spec_changes(old: &PluginBuild, new: &PluginBuild) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what} {a} → {b}"));
        }
    };
    field("name", old.name.clone(), new.name.clone());
    field("version", old.version.clone(), new.version.clone());
    field("kind", old.kind.clone(), new.kind.clone());
    field(
        "operations",
        format!("[{}]", old.operations.join(", ")),
        format!("[{}]", new.operations.join(", ")),
    );
    if old.config_schema != new.config_schema {
        out.push("config schema changed".to_string());
    }
    let added: Vec<&String> = new
        .imports
        .iter()
        .filter(|i| !old.imports.contains(i))
        .collect();
    let dropped: Vec<&String> = old
        .imports
        .iter()
        .filter(|i| !new.imports.contains(i))
        .collect();
    if !added.is_empty() {
        out.push(format!(
            "imports added: {}",
            added
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !dropped.is_empty() {
        out.push(format!(
            "imports dropped: {}",
            dropped
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}

/// The plugins whose build differs from the published one: rebuilt files of references the
/// published configuration uses, and references it does not use yet. `published_hashes` is
/// what the published configuration pins; `published_builds` what was recorded about those
/// builds (empty for configurations published before builds were recorded).
pub(crate) fn build_changes(
    published_hashes: &BTreeMap<String, String>,
    published_builds: &BTreeMap<String, PluginBuild>,
    now: &BTreeMap<String, PluginBuild>,
) -> Vec<PluginBuildChange> {
    now.iter()
        .filter(|(reference, build)| published_hashes.get(*reference) != Some(&build.hash))
        .map(|(reference, build)| {
            let old_hash = published_hashes.get(reference).cloned();
            let old_build = published_builds
                .get(reference)
                .filter(|b| Some(&b.hash) == old_hash.as_ref());
            let spec_changes = match (old_hash.is_some(), old_build) {
                (_, Some(old)) => spec_changes(old, build),
                (true, None) => {
                    vec!["the published build's spec was not recorded".to_string()]
                }
                (false, None) => vec![format!(
                    "new plugin: {} {} ({}), imports {}",
                    build.name,
                    build.version,
                    build.kind,
                    build.imports.join(", ")
                )],
            };
            PluginBuildChange {
                reference: reference.clone(),
                old_size: old_build.map(|b| b.size),
                old_hash,
                new_hash: build.hash.clone(),
                new_size: build.size,
                spec_changes,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(hash: &str, version: &str, imports: &[&str]) -> PluginBuild {
        PluginBuild {
            hash: hash.into(),
            size: 100,
            name: "webhook".into(),
            version: version.into(),
            kind: "destination".into(),
            operations: vec!["upsert".into()],
            config_schema: "{}".into(),
            imports: imports.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_rebuilt_plugin_is_listed_with_old_and_new_hash_size_and_spec_differences() {
        let old = build("1111111111111111", "0.1.0", &["backflow:plugin/host"]);
        let mut new = build(
            "2222222222222222",
            "0.2.0",
            &["backflow:plugin/host", "wasi:sockets/tcp"],
        );
        new.size = 250;
        new.operations.push("delete".into());
        new.config_schema = "{\"type\":\"object\"}".into();
        let hashes = BTreeMap::from([("webhook".to_string(), old.hash.clone())]);
        let builds = BTreeMap::from([("webhook".to_string(), old.clone())]);
        let now = BTreeMap::from([("webhook".to_string(), new)]);
        let changes = build_changes(&hashes, &builds, &now);
        assert_eq!(changes.len(), 1);
        assert!(changes[0].is_rebuild());
        assert_eq!(
            changes[0].describe(),
            "webhook sha256 111111111111 (100 bytes) → 222222222222 (250 bytes): version 0.1.0 → 0.2.0; operations [upsert] → [upsert, delete]; config schema changed; imports added: wasi:sockets/tcp"
        );
        // The same build: nothing to list.
        let same = BTreeMap::from([("webhook".to_string(), old)]);
        assert_eq!(build_changes(&hashes, &builds, &same), vec![]);
    }

    #[test]
    fn a_new_reference_and_an_unrecorded_published_build_are_said_so() {
        let now = BTreeMap::from([
            ("a".to_string(), build("3333333333333333", "1", &["x:y/z"])),
            ("b".to_string(), build("4444444444444444", "1", &[])),
        ]);
        let hashes = BTreeMap::from([("b".to_string(), "5555555555555555".to_string())]);
        let changes = build_changes(&hashes, &BTreeMap::new(), &now);
        assert_eq!(
            changes[0].describe(),
            "a sha256 (not published) → 333333333333 (100 bytes): new plugin: webhook 1 (destination), imports x:y/z"
        );
        assert!(!changes[0].is_rebuild());
        assert_eq!(
            changes[1].describe(),
            "b sha256 555555555555 → 444444444444 (100 bytes): the published build's spec was not recorded"
        );
    }
}
