//! Which refused plugin files keep the service from being ready: only those a sync of the
//! configuration runs use (its model's source, its destination, its checks, or an approval
//! policy every run asks). A refused file nothing uses is listed (`/healthz`,
//! `GET /api/v1/plugins`) but does not make `/readyz` answer 503.

use super::PluginStatus;
use crate::workspace::Workspace;
use std::collections::BTreeSet;
use std::path::Path;

/// Every plugin reference a sync of `ws` uses when it runs.
pub(super) fn sync_plugin_refs(ws: &Workspace) -> BTreeSet<String> {
    let mut refs: BTreeSet<String> = ws
        .governance
        .policies
        .iter()
        .map(|p| p.plugin.clone())
        .collect();
    for sync in ws.syncs.values() {
        let source = ws
            .models
            .get(&sync.model)
            .and_then(|m| ws.sources.get(&m.source));
        let destination = ws.destinations.get(&sync.destination);
        refs.extend(
            source
                .into_iter()
                .chain(destination)
                .map(|c| c.plugin.clone()),
        );
        refs.extend(sync.checks.iter().map(|c| c.connector.plugin.clone()));
    }
    refs.remove(crate::domain::BUILTIN_NOOP);
    refs
}

/// Whether `reference` (a `plugin = "..."` value, relative to `root`) may resolve to the file
/// of `status`: by path, by the name the file's plugin gave, or by the file name a plugin
/// name is looked up under (`web-hook` → `web-hook.wasm` or `web_hook.wasm`).
pub(super) fn refers_to(reference: &str, root: &Path, status: &PluginStatus) -> bool {
    if reference.ends_with(".wasm") || reference.contains('/') {
        let path = root.join(reference);
        return crate::plugins::canonical_file(&path) == status.file || path == status.file;
    }
    if status.name.as_deref() == Some(reference) {
        return true;
    }
    let file_name = status
        .file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file_name == format!("{reference}.wasm")
        || file_name == format!("{}.wasm", reference.replace('-', "_"))
}

/// Whether a sync of `ws` uses the plugin file of `status`.
pub(super) fn in_use(ws: &Workspace, status: &PluginStatus) -> bool {
    sync_plugin_refs(ws)
        .iter()
        .any(|r| refers_to(r, &ws.root, status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::PluginFileState;

    fn refused(file: &str, name: Option<&str>) -> PluginStatus {
        PluginStatus {
            file: file.into(),
            status: PluginFileState::Refused,
            name: name.map(str::to_string),
            kind: None,
            version: None,
            sha256: None,
            error: Some("not a component".into()),
            awaiting_publish: None,
            published_pin: None,
            loaded_at: String::new(),
            compile_ms: 0,
        }
    }

    #[test]
    fn a_reference_reaches_a_file_by_name_by_file_name_or_by_path() {
        let root = Path::new("/ws");
        let hook = refused("/ws/plugins/webhook.wasm", None);
        assert!(refers_to("webhook", root, &hook));
        assert!(refers_to("plugins/webhook.wasm", root, &hook));
        assert!(!refers_to("file-source", root, &hook));
        let renamed = refused("/ws/plugins/hook_v2.wasm", Some("webhook"));
        assert!(refers_to("webhook", root, &renamed));
        let dashed = refused("/ws/plugins/file_source.wasm", None);
        assert!(refers_to("file-source", root, &dashed));
        let junk = refused("/ws/plugins/junk.wasm", None);
        assert!(!refers_to("webhook", root, &junk));
        assert!(!refers_to("file-source", root, &junk));
    }
}
