//! Stage 1: everything a run needs, resolved and checked before anything is read. Every
//! problem names the file and key to fix.

use crate::domain::{operation_for, Change, OpCounts, PluginHashes, BUILTIN_NOOP};
use crate::host::{destination_operations, expect_kind, CallError, Plugin, PluginHost};
use crate::workspace::{secrets, Connector, Model, SyncConfig, Workspace};
use backflow_plugin_sdk::{Operation, OperationSupport, PluginError, PluginKind};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Default rows per destination call when neither the sync nor the destination says.
pub(crate) const DEFAULT_BATCH_SIZE: u32 = 500;

/// A problem found before a run could start (bad config, missing or wrong plugin). Each
/// names the file and key to fix.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The sync is not declared (the workspace's message lists the declared ones).
    #[error(transparent)]
    UnknownSync(#[from] crate::workspace::UnknownSync),
    /// A connector's plugin cannot be resolved, is not pinned as declared, or is of
    /// another kind.
    #[error("{}: {key}: {reason}", file.display())]
    Plugin {
        /// The file declaring the connector.
        file: PathBuf,
        /// The connector's `plugin` key.
        key: String,
        /// What is wrong with the plugin.
        reason: String,
    },
    /// The plugin could not check a connector's config.
    #[error("{}: {key}: checking the config failed: {reason}", file.display())]
    ConfigCheckFailed {
        /// The file declaring the connector.
        file: PathBuf,
        /// The connector's `config` key.
        key: String,
        /// Why the check failed.
        reason: String,
    },
    /// The plugin refused a connector's config: one line per problem, each naming file
    /// and key.
    #[error("{}", problems.join("\n"))]
    BadConfig {
        /// `FILE: KEY: message`, one per problem.
        problems: Vec<String>,
    },
    /// The sync's mode needs operations the destination (or its config) does not support.
    #[error("{at}: mode {mode} needs the destination to {}, which {destination} does not support{} (it supports: {}){}", missing.join(" and "), if supported.1.is_empty() { "" } else { " with its config" }, supported.0.join(", "), supported.1.iter().map(|h| format!("; {h}")).collect::<String>())]
    ModeUnsupported {
        /// `FILE: KEY` of the sync's `mode`.
        at: String,
        /// The mode.
        mode: &'static str,
        /// The operations missing.
        missing: Vec<&'static str>,
        /// The destination's name.
        destination: String,
        /// The operations the destination supports (with its config), and how to enable
        /// the missing ones, from the plugin's `operations-for` (contract 0.3.0).
        supported: Box<(Vec<&'static str>, Vec<String>)>,
    },
    /// The destination's config cannot express an operation `operations-for` lacks: found
    /// while validating it.
    #[error("{}: {key}: asking the plugin which operations this config can express failed: {reason}", file.display())]
    OperationsUnknown {
        /// The file declaring the destination.
        file: PathBuf,
        /// The destination's `config` key.
        key: String,
        /// Why the call failed.
        reason: String,
    },
    /// The sync's `batch_size` is above what the destination takes.
    #[error("{}: {key}: {batch_size} is above the destination's limit of {max} rows per batch", file.display())]
    BatchTooLarge {
        /// The file declaring the sync.
        file: PathBuf,
        /// The sync's `batch_size` key.
        key: String,
        /// The configured batch size.
        batch_size: u32,
        /// The destination's limit.
        max: u32,
    },
    /// A field rule the destination cannot honour: absent fields need `field-presence`,
    /// `write = "if_empty"` needs `read-back` (contract 0.3.0).
    #[error("{}: {key}: {reason}", file.display())]
    FieldRule {
        /// The file declaring the sync.
        file: PathBuf,
        /// The rule's key (`syncs.NAME.mapping.COL.write`, `syncs.NAME.update`, ...).
        key: String,
        /// Why the destination cannot honour it.
        reason: String,
    },
    /// The destination plugin declares an unusable default rate limit.
    #[error("destination plugin {plugin} declares default-rate-limit {name} = {value}, which is not a usable rate (at least {}); set rate_limit in the sync to override it", crate::workspace::MIN_RATE)]
    PluginRateLimit {
        /// The plugin's name.
        plugin: String,
        /// Which rate: `requests-per-second` or `rows-per-second`.
        name: &'static str,
        /// The declared value.
        value: f64,
    },
}

impl PrepareError {
    /// A problem with the plugin of `c`, at its `plugin` key.
    fn plugin(c: &Connector, reason: String) -> PrepareError {
        PrepareError::Plugin {
            file: c.origin.file.clone(),
            key: c.origin.key("plugin"),
            reason,
        }
    }
}

/// Everything a run needs, resolved and checked.
pub struct PreparedSync {
    /// The sync, as configured (an undo runs it in `mirror` mode).
    pub sync: SyncConfig,
    /// The sync's model.
    pub model: Model,
    /// The model's source.
    pub source: Connector,
    /// The sync's destination.
    pub destination: Connector,
    /// The source's plugin, resolved and checked.
    pub source_plugin: Plugin,
    /// `None` for the built-in native no-op destination.
    pub destination_plugin: Option<Plugin>,
    /// Rows per destination call.
    pub batch_size: u32,
    /// The rate limit deliveries keep: the sync's own, or else the one its destination
    /// declares (checked once, here, before anything is read).
    pub rate_limit: crate::workspace::RateLimit,
    /// SHA-256 of the configuration that shapes what a run sends.
    pub config_hash: String,
    /// The sync's quality checks with their plugins.
    pub checks: Vec<(crate::workspace::Check, Plugin)>,
    /// Under which key the state keeps this sync's snapshot, pending rows and journal: the
    /// sync's name, or `draft/NAME` for a draft run (see [`crate::state::draft_key`]).
    pub state_key: String,
    /// Approval policy name → hash of its plugin: the policies the gate asks about this run.
    /// A policy that cannot be loaded is left out here; the gate rejects the run for it.
    pub policy_hashes: std::collections::BTreeMap<String, String>,
    /// What the destination can do with its config (`operations-for`, contract 0.3.0; the
    /// spec's operations for older plugins), with hints for what it cannot.
    pub destination_operations: OperationSupport,
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
    let sync = ws
        .sync(sync_name)
        .map_err(PrepareError::UnknownSync)?
        .clone();
    let model = ws.models[&sync.model].clone();
    let source = ws.sources[&model.source].clone();
    let destination = ws.destinations[&sync.destination].clone();

    let source_plugin = load_checked(host, ws, &source, PluginKind::Source).await?;

    let (destination_plugin, support, max_batch) = if destination.plugin == BUILTIN_NOOP {
        let all = vec![
            Operation::Insert,
            Operation::Update,
            Operation::Delete,
            Operation::Append,
        ];
        let support = OperationSupport {
            operations: all,
            hints: Vec::new(),
        };
        (None, support, 0)
    } else {
        let p = load_checked(host, ws, &destination, PluginKind::Destination).await?;
        // What this config can express, not only what the plugin can (contract 0.3.0).
        let support =
            destination_operations(host, &p, destination.limits, &destination.config_json)
                .await
                .map_err(|e| PrepareError::OperationsUnknown {
                    file: destination.origin.file.clone(),
                    key: destination.origin.key("config"),
                    reason: e.to_string(),
                })?;
        let max = p.spec.max_batch_size;
        (Some(p), support, max)
    };
    let operations = &support.operations;
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
    let missing: Vec<Operation> = needed
        .into_iter()
        .filter(|op| !operations.contains(op))
        .collect();
    if !missing.is_empty() {
        return Err(mode_unsupported(&sync, &destination, &support, missing));
    }
    let mut batch_size = sync.batch_size.unwrap_or(if max_batch == 0 {
        DEFAULT_BATCH_SIZE
    } else {
        max_batch.min(DEFAULT_BATCH_SIZE)
    });
    if max_batch > 0 && batch_size > max_batch {
        return Err(PrepareError::BatchTooLarge {
            file: sync.origin.file.clone(),
            key: sync.origin.key("batch_size"),
            batch_size,
            max: max_batch,
        });
    }
    batch_size = batch_size.max(1);
    super::field_rules::check_destination(&sync, &destination, destination_plugin.as_ref())
        .map_err(|r| PrepareError::FieldRule {
            file: sync.origin.file.clone(),
            key: r.key,
            reason: r.reason,
        })?;

    let mut checks = Vec::new();
    for check in &sync.checks {
        let c = &check.connector;
        let plugin = load_checked(host, ws, c, PluginKind::QualityCheck).await?;
        checks.push((check.clone(), plugin));
    }

    let config_hash = config_hash(&sync, &model, &source, &destination);
    let policy_hashes = policy_hashes(host, ws).await;
    let state_key = sync.name.clone();
    // A destination's declared rate limit is checked before anything is read.
    let rate_limit = effective_rate_limit(&sync, destination_plugin.as_ref())?;
    let prepared = PreparedSync {
        sync,
        model,
        source,
        destination,
        source_plugin,
        destination_plugin,
        batch_size,
        rate_limit,
        config_hash,
        checks,
        state_key,
        policy_hashes,
        destination_operations: support,
    };
    check_warehouse_diff(&prepared)?;
    Ok(prepared)
}

/// Refuses a warehouse-diff model whose source plugin does not declare `warehouse-diff`,
/// or whose sync's mapping leaves out a primary key column (the snapshot table is keyed by
/// what was delivered).
fn check_warehouse_diff(p: &PreparedSync) -> Result<(), PrepareError> {
    if p.model.diff != crate::workspace::DiffLocation::Warehouse {
        return Ok(());
    }
    let origin = &p.model.origin;
    if !p
        .source_plugin
        .capabilities
        .contains(&backflow_plugin_sdk::Capability::WarehouseDiff)
    {
        return Err(PrepareError::Plugin {
            file: origin.file.clone(),
            key: origin.key("diff"),
            reason: format!(
                "diff = \"warehouse\" needs a source plugin with the warehouse-diff capability (contract 0.3.0); source {} uses plugin {}, which does not declare it; use diff = \"local\"",
                p.source.name, p.source_plugin.spec.name
            ),
        });
    }
    if !p.sync.mapping.is_empty() {
        for k in &p.model.primary_key {
            if !p.sync.mapping.iter().any(|(from, _)| from == k) {
                return Err(PrepareError::Plugin {
                    file: p.sync.origin.file.clone(),
                    key: p.sync.origin.key("mapping"),
                    reason: format!("model {} diffs in the warehouse (diff = \"warehouse\"), whose snapshot is keyed by the delivered rows: map its primary key column {k:?} too", p.model.name),
                });
            }
        }
    }
    Ok(())
}

/// The error for a sync whose mode needs operations its destination's config cannot
/// express, with the plugin's hints on how to enable them.
fn mode_unsupported(
    sync: &SyncConfig,
    destination: &Connector,
    support: &OperationSupport,
    missing: Vec<Operation>,
) -> PrepareError {
    PrepareError::ModeUnsupported {
        at: format!(
            "{}: {}",
            sync.origin.file.display(),
            sync.origin.key("mode")
        ),
        mode: sync.mode.as_str(),
        supported: Box::new((
            support.operations.iter().map(|o| o.as_str()).collect(),
            missing
                .iter()
                .filter_map(|op| support.hint(*op).map(|h| format!("to {op}: {h}")))
                .collect(),
        )),
        missing: missing.iter().map(|o| o.as_str()).collect(),
        destination: destination.name.clone(),
    }
}

/// A plan would send an operation the destination's config cannot express (an undo of
/// inserts sends deletes whatever the sync's mode): refused before anything is sent.
#[derive(Debug, thiserror::Error)]
#[error("{}: syncs.{sync}: this {what} would send {count} {op}s to destination {destination}, whose config cannot express {op}s; nothing was sent{}", file.display(), hint.as_deref().map(|h| format!("; {h}")).unwrap_or_default())]
pub struct PlanUnsupported {
    /// The file declaring the sync.
    pub file: PathBuf,
    /// The sync's name.
    pub sync: String,
    /// `run` or `undo`.
    pub what: &'static str,
    /// Rows of that operation the plan holds.
    pub count: u64,
    /// The operation.
    pub op: Operation,
    /// The destination's name.
    pub destination: String,
    /// The plugin's hint on how to enable it.
    pub hint: Option<String>,
}

/// Checks that every operation a plan sends (`planned`, delivered with the sync's mode)
/// is one the destination's config can express.
pub(crate) fn check_plan_operations(
    p: &PreparedSync,
    planned: OpCounts,
    what: &'static str,
) -> Result<(), Box<PlanUnsupported>> {
    for (change, count) in [
        (Change::Added, planned.added),
        (Change::Changed, planned.changed),
        (Change::Removed, planned.removed),
    ] {
        let Some(op) = operation_for(p.sync.mode, change).filter(|_| count > 0) else {
            continue;
        };
        if !p.destination_operations.supports(op) {
            return Err(Box::new(PlanUnsupported {
                file: p.sync.origin.file.clone(),
                sync: p.sync.name.clone(),
                what,
                count,
                op,
                destination: p.destination.name.clone(),
                hint: p.destination_operations.hint(op).map(str::to_string),
            }));
        }
    }
    Ok(())
}

/// The sync's own rate limit, or else the one its destination declares. A plugin's numbers
/// are checked like a config's: zero, negative, NaN or infinite is the plugin's bug, and an
/// error naming it (the sync can set its own `rate_limit` meanwhile).
fn effective_rate_limit(
    sync: &SyncConfig,
    destination: Option<&Plugin>,
) -> Result<crate::workspace::RateLimit, PrepareError> {
    let own = sync.rate_limit;
    if own.requests_per_second.is_some() || own.rows_per_second.is_some() {
        return Ok(own);
    }
    match destination.and_then(|d| d.spec.default_rate_limit.map(|r| (d, r))) {
        Some((plugin, d)) => {
            let limit = crate::workspace::RateLimit {
                requests_per_second: d.requests_per_second,
                rows_per_second: d.rows_per_second,
            };
            validate_plugin_rate_limit(&plugin.spec.name, limit)
        }
        None => Ok(own),
    }
}

/// A plugin-declared rate limit, or why it is unusable.
pub(crate) fn validate_plugin_rate_limit(
    plugin: &str,
    limit: crate::workspace::RateLimit,
) -> Result<crate::workspace::RateLimit, PrepareError> {
    for (name, value) in [
        ("requests-per-second", limit.requests_per_second),
        ("rows-per-second", limit.rows_per_second),
    ] {
        if let Some(v) = value {
            if !(v.is_finite() && v >= crate::workspace::MIN_RATE) {
                return Err(PrepareError::PluginRateLimit {
                    plugin: plugin.to_string(),
                    name,
                    value: v,
                });
            }
        }
    }
    Ok(limit)
}

/// SHA-256 over everything of the sync's configuration that shapes what a run sends.
fn config_hash(
    sync: &SyncConfig,
    model: &Model,
    source: &Connector,
    destination: &Connector,
) -> String {
    let mut h = Sha256::new();
    let mut parts = vec![
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
    ];
    // Only when set (part and separator), so the hash of a sync without rules is what it was
    // before them: runs approved before an upgrade stay approved.
    if !sync.field_rules.is_default() {
        parts.push(format!("{:?}", sync.field_rules));
    }
    parts.push(
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
    );
    for part in parts {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// Approval policy name → hash of its plugin. A policy that cannot be loaded is left out;
/// the gate rejects the run for it.
async fn policy_hashes(
    host: &crate::plugins::Registry,
    ws: &Workspace,
) -> std::collections::BTreeMap<String, String> {
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
    policy_hashes
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
    .map_err(|e| PrepareError::plugin(c, format!("{e:#}")))?;
    Workspace::check_pin(&ws.plugin_pins, &c.plugin, &plugin.path, &plugin.hash)
        .map_err(|e| PrepareError::plugin(c, e.to_string()))?;
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
    expect_kind(&plugin, kind).map_err(|e| PrepareError::plugin(c, e.to_string()))?;
    check_plugin_config(host, &plugin, c).await?;
    Ok(plugin)
}

/// Asks a connector's plugin whether it accepts the connector's config.
pub(crate) async fn check_plugin_config(
    host: &PluginHost,
    plugin: &Plugin,
    c: &Connector,
) -> Result<(), PrepareError> {
    // The plugin checks the config it will be opened with: `${env.NAME}` expanded by the host.
    // A granted variable not set here is left as written: opening the plugin names it.
    let lookup = |name: &str| std::env::var(name).ok();
    let owner = format!("plugin {}", plugin.spec.name);
    let config = secrets::expand_config(&c.config_json, &c.grants.env, &owner, &lookup)
        .unwrap_or_else(|_| c.config_json.clone());
    let secret_values = secrets::referenced_values(&c.config_json, &c.grants.env, &lookup);
    let errors = host
        .check_config(plugin, &config, c.limits)
        .await
        .map_err(|e| PrepareError::ConfigCheckFailed {
            file: c.origin.file.clone(),
            key: c.origin.key("config"),
            reason: crate::redact::redact(&secret_values, &e.to_string()),
        })?;
    if errors.is_empty() {
        return Ok(());
    }
    Err(PrepareError::BadConfig {
        problems: errors
            .iter()
            .map(|e| {
                let key = if e.field.is_empty() {
                    c.origin.key("config")
                } else {
                    c.origin.key(&format!("config.{}", e.field))
                };
                let message = crate::redact::redact(&secret_values, &e.message);
                format!("{}: {key}: {message}", c.origin.file.display())
            })
            .collect(),
    })
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

/// The destination fields of the model's primary key (renamed by the sync's mapping).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::RateLimit;

    #[test]
    fn a_plugin_rate_limit_must_be_a_usable_rate() {
        let limit = |requests_per_second, rows_per_second| RateLimit {
            requests_per_second,
            rows_per_second,
        };
        assert!(validate_plugin_rate_limit("p", limit(Some(0.0), None))
            .unwrap_err()
            .to_string()
            .contains("requests-per-second = 0"));
        assert!(validate_plugin_rate_limit("p", limit(None, Some(f64::NAN))).is_err());
        assert!(validate_plugin_rate_limit("p", limit(Some(5.0), None)).is_ok());
    }
}
