//! The plugins a service serves: what it did with each file of the plugins directory (the
//! table `GET /api/v1/plugins` and `/healthz` read), and the host operations its hot reload
//! performs through the [`App`].

use super::{App, AppError};
use crate::authz::{authorize, Action, Actor};
use crate::host::Plugin;
use backflow_plugin_sdk::Operation;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where a plugin file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginFileState {
    /// Loaded and checked: runs starting from now use it.
    Serving,
    /// The newest file did not load (the previous version, if any, keeps serving: its hash
    /// stays in `sha256`).
    Refused,
    /// The file was deleted: runs starting from now cannot use it.
    Removed,
}

/// What the service did with one plugin file, for `GET /api/v1/plugins` and the log.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// The plugin file.
    pub file: PathBuf,
    /// `serving`, `refused`, `removed`.
    pub status: PluginFileState,
    /// The plugin's name, as its spec gives it.
    pub name: Option<String>,
    /// `source`, `destination`, …
    pub kind: Option<String>,
    /// The plugin's version, as its spec gives it.
    pub version: Option<String>,
    /// The hash runs starting now use (without a pin).
    pub sha256: Option<String>,
    /// Why the newest file was refused (the previous version, if any, keeps serving).
    pub error: Option<String>,
    /// The hash of the new file when the published configuration pins another: it is loaded
    /// but runs use the pinned one ([`PluginStatus::published_pin`]) until a change
    /// publishing the new hash is approved.
    pub awaiting_publish: Option<String>,
    /// The hash the published configuration pins, while [`PluginStatus::awaiting_publish`].
    pub published_pin: Option<String>,
    /// When the file was last looked at (RFC 3339).
    pub loaded_at: String,
    /// How long compiling it took.
    pub compile_ms: u64,
}

/// What a served plugin says of itself, as the plugin listing shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServedSpec {
    /// The plugin's description.
    pub description: String,
    /// Destinations: supported operations.
    pub operations: Vec<Operation>,
    /// Destinations: largest accepted batch (0 = unlimited).
    pub max_batch_size: u32,
    /// The contract version the plugin implements.
    pub contract: String,
    /// JSON Schema of the plugin's config (its text when it is not JSON).
    pub config_schema: serde_json::Value,
}

/// One plugin file as listed: its status and, while it serves, its spec.
#[derive(Debug, Clone, Serialize)]
pub struct PluginListing {
    /// What the service did with the file.
    #[serde(flatten)]
    pub status: PluginStatus,
    /// The spec of the version serving from the file, if any.
    pub spec: Option<ServedSpec>,
}

/// Every plugin file the service knows, by path.
#[derive(Default)]
pub(super) struct PluginTable(Mutex<BTreeMap<PathBuf, PluginStatus>>);

impl App {
    /// The plugin files the service knows, with the spec of what serves from each.
    pub fn plugin_statuses(&self, actor: &Actor) -> Result<Vec<PluginListing>, AppError> {
        authorize(actor, Action::ListPlugins)?;
        let statuses: Vec<PluginStatus> =
            self.with_plugin_statuses(|t| t.values().cloned().collect());
        let served = self.host.with_served(|x| x.current()).unwrap_or_default();
        Ok(statuses
            .into_iter()
            .map(|status| {
                let spec = served.iter().find(|p| p.path == status.file).map(|p| {
                    let schema = serde_json::from_str(&p.spec.config_schema)
                        .unwrap_or(serde_json::Value::String(p.spec.config_schema.clone()));
                    ServedSpec {
                        description: p.spec.description.clone(),
                        operations: p.spec.operations.clone(),
                        max_batch_size: p.spec.max_batch_size,
                        contract: p.contract.to_string(),
                        config_schema: schema,
                    }
                });
                PluginListing { status, spec }
            })
            .collect())
    }

    /// How many plugin files are refused (for `/healthz`, which needs no sign-in).
    pub fn plugins_refused(&self) -> usize {
        self.with_plugin_statuses(|t| {
            t.values()
                .filter(|p| p.status == PluginFileState::Refused)
                .count()
        })
    }

    /// Reads or changes the service's plugin table.
    pub(crate) fn with_plugin_statuses<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<PathBuf, PluginStatus>) -> T,
    ) -> T {
        f(&mut self
            .plugin_files
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner()))
    }

    /// The workspace's plugins directory.
    pub(crate) fn plugins_dir(&self) -> &Path {
        &self.working.plugins_dir
    }

    /// Turns on serving plugins from the plugins directory (a service does this once).
    pub(crate) fn serve_plugins(&self) {
        self.host.serve_plugins_from(&self.working.plugins_dir);
    }

    /// Compiles and checks one plugin file (not yet served).
    pub(crate) async fn load_plugin(&self, file: &Path) -> anyhow::Result<Plugin> {
        self.host.load(file).await
    }

    /// Serves a loaded plugin to runs that start from now.
    pub(crate) fn offer_plugin(&self, plugin: Plugin) {
        self.host.with_served(|s| s.offer(plugin));
    }

    /// Stops serving a file that is gone.
    pub(crate) fn withdraw_plugin(&self, file: &Path) {
        self.host.with_served(|s| s.withdraw(file));
    }

    /// The newest version serving from `file`.
    pub(crate) fn newest_served(&self, file: &Path) -> Option<Plugin> {
        self.host
            .with_served(|s| s.versions(file).last().cloned())
            .flatten()
    }

    /// The published pin of a reference that resolves to this plugin, when it differs.
    pub(crate) fn published_pin(&self, plugin: &Plugin) -> Option<String> {
        let ws = self.runnable_workspace().ok()?;
        let file_name = plugin.path.file_name()?.to_string_lossy().into_owned();
        ws.plugin_pins
            .iter()
            .chain(ws.governance.plugin_pins.iter())
            .find(|(reference, pin)| {
                (**reference == plugin.spec.name || reference.ends_with(&file_name))
                    && **pin != plugin.hash
            })
            .map(|(_, pin)| pin.clone())
    }
}
