//! Stage 1: everything a run needs, resolved and checked before anything is read. Every
//! problem names the file and key to fix.

use crate::domain::{operation_for, Change, PluginHashes, BUILTIN_NOOP};
use crate::host::{expect_kind, CallError, Plugin, PluginHost};
use crate::workspace::{Connector, Model, SyncConfig, Workspace};
use backflow_plugin_sdk::{Operation, PluginError, PluginKind};
use sha2::{Digest, Sha256};

/// Default rows per destination call when neither the sync nor the destination says.
pub(crate) const DEFAULT_BATCH_SIZE: u32 = 500;

/// A problem found before a run could start (bad config, missing or wrong plugin).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PrepareError(pub String);

/// Everything a run needs, resolved and checked.
pub struct PreparedSync {
    pub sync: SyncConfig,
    pub model: Model,
    pub source: Connector,
    pub destination: Connector,
    pub source_plugin: Plugin,
    /// `None` for the built-in native no-op destination.
    pub destination_plugin: Option<Plugin>,
    pub batch_size: u32,
    pub config_hash: String,
    /// The sync's quality checks with their plugins.
    pub checks: Vec<(crate::workspace::Check, Plugin)>,
    /// Under which key the state keeps this sync's snapshot, pending rows and journal: the
    /// sync's name, or `draft/NAME` for a draft run (see [`crate::state::draft_key`]).
    pub state_key: String,
    /// Approval policy name → hash of its plugin: the policies the gate asks about this run.
    /// A policy that cannot be loaded is left out here; the gate rejects the run for it.
    pub policy_hashes: std::collections::BTreeMap<String, String>,
}

impl PreparedSync {
    /// Time spent compiling this run's plugins while preparing it.
    pub fn compile_ms(&self) -> u64 {
        let plugins = [Some(&self.source_plugin), self.destination_plugin.as_ref()]
            .into_iter()
            .flatten()
            .chain(self.checks.iter().map(|(_, p)| p));
        plugins.filter_map(|p| p.compiled_ms).sum()
    }

    /// The hashes of the plugins this run uses (source, destination, checks, policies).
    pub fn plugin_hashes(&self) -> PluginHashes {
        PluginHashes {
            source: self.source_plugin.hash.clone(),
            destination: self
                .destination_plugin
                .as_ref()
                .map(|p| p.hash.clone())
                .unwrap_or_else(|| BUILTIN_NOOP.into()),
            checks: self
                .checks
                .iter()
                .map(|(c, plugin)| (c.name.clone(), plugin.hash.clone()))
                .collect(),
            policies: self.policy_hashes.clone(),
        }
    }
}

/// Resolves plugins, checks their kinds and configs and the sync's mode against the
/// destination's operations. Every problem names the file and key to fix.
pub async fn prepare(
    host: &crate::plugins::Registry,
    ws: &Workspace,
    sync_name: &str,
) -> Result<PreparedSync, PrepareError> {
    let sync = ws.sync(sync_name)
        .map_err(|e| PrepareError(e.to_string()))?.clone();
    let model = ws.models[&sync.model].clone();
    let source = ws.sources[&model.source].clone();
    let destination = ws.destinations[&sync.destination].clone();

    let source_plugin = load_checked(host, ws, &source, PluginKind::Source).await?;

    let (destination_plugin, operations, max_batch) = if destination.plugin == BUILTIN_NOOP {
        (
            None,
            vec![
                Operation::Insert,
                Operation::Update,
                Operation::Delete,
                Operation::Append,
            ],
            0,
        )
    } else {
        let p = load_checked(host, ws, &destination, PluginKind::Destination).await?;
        let ops = p.spec.operations.clone();
        let max = p.spec.max_batch_size;
        (Some(p), ops, max)
    };
    // What the mode sends is defined once, by `operation_for`; the destination must do all of it.
    let mut needed: Vec<Operation> = Vec::new();
    for op in [Change::Added, Change::Changed, Change::Removed]
        .into_iter()
        .filter_map(|c| operation_for(sync.mode, c))
    {
        if !needed.contains(&op) {
            needed.push(op);
        }
    }
    let missing: Vec<&str> = needed
        .iter()
        .filter(|op| !operations.contains(op))
        .map(|op| op.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(PrepareError(format!(
            "{}: {}: mode {} needs the destination to {}, which {} does not support (it supports: {})",
            sync.origin.file.display(),
            sync.origin.key("mode"),
            sync.mode.as_str(),
            missing.join(" and "),
            destination.name,
            operations.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut batch_size = sync.batch_size.unwrap_or(if max_batch == 0 {
        DEFAULT_BATCH_SIZE
    } else {
        max_batch.min(DEFAULT_BATCH_SIZE)
    });
    if max_batch > 0 && batch_size > max_batch {
        return Err(PrepareError(format!(
            "{}: {}: {batch_size} is above the destination's limit of {max_batch} rows per batch",
            sync.origin.file.display(),
            sync.origin.key("batch_size")
        )));
    }
    batch_size = batch_size.max(1);

    let mut checks = Vec::new();
    for check in &sync.checks {
        let c = &check.connector;
        let plugin = load_checked(host, ws, c, PluginKind::QualityCheck).await?;
        checks.push((check.clone(), plugin));
    }

    let config_hash = {
        let mut h = Sha256::new();
        for part in [
            format!(
                "{:?}|{:?}|{:?}|{:?}",
                sync.mode, sync.mapping, sync.batch_size, sync.destination
            ),
            format!(
                "{:?}|{:?}|{:?}",
                model.query, model.primary_key, model.source
            ),
            source.config_json.clone(),
            destination.config_json.clone(),
            sync.checks
                .iter()
                .map(|c| {
                    format!(
                        "{}|{:?}|{}|{}",
                        c.name, c.severity, c.connector.plugin, c.connector.config_json
                    )
                })
                .collect::<Vec<_>>()
                .join(";"),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    };
    let mut policy_hashes = std::collections::BTreeMap::new();
    for policy in &ws.governance.policies {
        if let Ok(plugin) = crate::plugins::resolve_pinned(
            host,
            &ws.root,
            &ws.plugins_dir,
            &policy.plugin,
            ws.governance
                .plugin_pins
                .get(&policy.plugin)
                .map(String::as_str),
        )
        .await
        {
            policy_hashes.insert(policy.name.clone(), plugin.hash);
        }
    }
    let state_key = sync.name.clone();
    let prepared = PreparedSync {
        sync,
        model,
        source,
        destination,
        source_plugin,
        destination_plugin,
        batch_size,
        config_hash,
        checks,
        state_key,
        policy_hashes,
    };
    // A destination's declared rate limit is checked before anything is read.
    super::deliver::pacer::effective_rate_limit(&prepared).map_err(PrepareError)?;
    Ok(prepared)
}

/// Resolves a connector's plugin; errors name the file and its `plugin` key.
pub(crate) async fn load_plugin(
    host: &crate::plugins::Registry,
    ws: &Workspace,
    c: &Connector,
) -> Result<Plugin, PrepareError> {
    let plugin = crate::plugins::resolve_pinned(
        host,
        &ws.root,
        &ws.plugins_dir,
        &c.plugin,
        ws.plugin_pins.get(&c.plugin).map(String::as_str),
    )
    .await
    .map_err(|e| {
        PrepareError(format!(
            "{}: {}: {e:#}",
            c.origin.file.display(),
            c.origin.key("plugin")
        ))
    })?;
    Workspace::check_pin(&ws.plugin_pins, &c.plugin, &plugin.path, &plugin.hash).map_err(|e| {
        PrepareError(format!(
            "{}: {}: {e}",
            c.origin.file.display(),
            c.origin.key("plugin")
        ))
    })?;
    Ok(plugin)
}

/// Resolves a connector's plugin, checks it is of `kind` and that it accepts the config.
pub(crate) async fn load_checked(
    host: &crate::plugins::Registry,
    ws: &Workspace,
    c: &Connector,
    kind: PluginKind,
) -> Result<Plugin, PrepareError> {
    let plugin = load_plugin(host, ws, c).await?;
    expect_kind(&plugin, kind).map_err(|e| {
        PrepareError(format!(
            "{}: {}: {e}",
            c.origin.file.display(),
            c.origin.key("plugin")
        ))
    })?;
    check_plugin_config(host, &plugin, c).await?;
    Ok(plugin)
}

pub(crate) async fn check_plugin_config(
    host: &PluginHost,
    plugin: &Plugin,
    c: &Connector,
) -> Result<(), PrepareError> {
    let errors = host
        .check_config(plugin, &c.config_json, c.limits)
        .await
        .map_err(|e| {
            PrepareError(format!(
                "{}: {}: checking the config failed: {e}",
                c.origin.file.display(),
                c.origin.key("config")
            ))
        })?;
    if errors.is_empty() {
        return Ok(());
    }
    Err(PrepareError(
        errors
            .iter()
            .map(|e| {
                let key = if e.field.is_empty() {
                    c.origin.key("config")
                } else {
                    c.origin.key(&format!("config.{}", e.field))
                };
                format!("{}: {key}: {}", c.origin.file.display(), e.message)
            })
            .collect::<Vec<_>>()
            .join("\n"),
    ))
}

/// Why a plugin could not open, naming the file and key to fix for config errors: the
/// model's `query` for a source's `query` field, the connector's `config.FIELD` otherwise.
pub(crate) fn open_error(p: &PreparedSync, connector: &Connector, e: &CallError) -> String {
    connector_error(&p.model, connector, std::ptr::eq(connector, &p.source), e)
}

/// [`open_error`] for a connector that is (`is_source`) or is not the model's source.
pub(crate) fn connector_error(
    model: &Model,
    connector: &Connector,
    is_source: bool,
    e: &CallError,
) -> String {
    let what = if is_source {
        format!(
            "source {} could not open model {}",
            connector.name, model.name
        )
    } else {
        format!("destination {} could not open", connector.name)
    };
    match e {
        CallError::Plugin(PluginError::BadConfig(c)) if c.field == "query" && is_source => {
            format!(
                "{what}: {}: {}: {}",
                model.origin.file.display(),
                model.origin.key("query"),
                c.message
            )
        }
        CallError::Plugin(PluginError::BadConfig(c)) => {
            let key = if c.field.is_empty() {
                connector.origin.key("config")
            } else {
                connector.origin.key(&format!("config.{}", c.field))
            };
            format!(
                "{what}: {}: {key}: {}",
                connector.origin.file.display(),
                c.message
            )
        }
        other => format!("{what}: {other}"),
    }
}

pub(crate) fn primary_key_fields(p: &PreparedSync) -> Vec<String> {
    p.model
        .primary_key
        .iter()
        .map(|k| {
            p.sync
                .mapping
                .iter()
                .find(|(from, _)| from == k)
                .map(|(_, to)| to.clone())
                .unwrap_or_else(|| k.clone())
        })
        .collect()
}
