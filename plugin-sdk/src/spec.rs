//! Plain Rust mirrors of the contract's records: what plugins say about themselves and the
//! errors they return. The engine uses these too, so both sides speak the same types.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    Source,
    Destination,
    QualityCheck,
    ApprovalPolicy,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Source => "source",
            PluginKind::Destination => "destination",
            PluginKind::QualityCheck => "quality-check",
            PluginKind::ApprovalPolicy => "approval-policy",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a destination is asked to do with a row.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Insert,
    Update,
    Delete,
    Append,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Append => "append",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plugin's description of itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PluginSpec {
    pub name: String,
    pub version: String,
    pub kind: PluginKind,
    pub description: String,
    /// JSON Schema of the plugin's config, as JSON text.
    pub config_schema: String,
    /// Destinations: supported operations.
    pub operations: Vec<Operation>,
    /// Destinations: largest accepted batch (0 = unlimited).
    pub max_batch_size: u32,
    /// Destinations: the pace the API allows, for syncs without their own `rate_limit`.
    #[serde(default)]
    pub default_rate_limit: Option<RateLimitSpec>,
}

/// Requests and/or rows per second.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RateLimitSpec {
    pub requests_per_second: Option<f64>,
    pub rows_per_second: Option<f64>,
}

/// A problem with one field of a plugin's config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigError {
    /// Dotted path inside the plugin's `config` table; empty for the table as a whole.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// A bad row, named by its position in the batch and, where known, its key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowError {
    pub row_index: u32,
    pub key: Option<String>,
    pub message: String,
}

/// Every failure a plugin reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PluginError {
    Retryable {
        message: String,
    },
    RateLimited {
        message: String,
        retry_after_ms: Option<u64>,
    },
    BadConfig(ConfigError),
    BadRow(RowError),
    Fatal {
        message: String,
    },
}

impl PluginError {
    pub fn retryable(message: impl Into<String>) -> PluginError {
        PluginError::Retryable {
            message: message.into(),
        }
    }
    pub fn fatal(message: impl Into<String>) -> PluginError {
        PluginError::Fatal {
            message: message.into(),
        }
    }
    pub fn bad_config(field: impl Into<String>, message: impl Into<String>) -> PluginError {
        PluginError::BadConfig(ConfigError::new(field, message))
    }
    pub fn bad_row(row_index: u32, key: Option<String>, message: impl Into<String>) -> PluginError {
        PluginError::BadRow(RowError {
            row_index,
            key,
            message: message.into(),
        })
    }
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PluginError::Retryable { .. } | PluginError::RateLimited { .. }
        )
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginError::Retryable { message } => write!(f, "retryable: {message}"),
            PluginError::RateLimited {
                message,
                retry_after_ms: Some(ms),
            } => {
                write!(f, "rate limited (retry after {ms} ms): {message}")
            }
            PluginError::RateLimited {
                message,
                retry_after_ms: None,
            } => write!(f, "rate limited: {message}"),
            PluginError::BadConfig(e) => write!(f, "bad config: {e}"),
            PluginError::BadRow(e) => match &e.key {
                Some(k) => write!(f, "bad row {} (key {k}): {}", e.row_index, e.message),
                None => write!(f, "bad row {}: {}", e.row_index, e.message),
            },
            PluginError::Fatal { message } => f.write_str(message),
        }
    }
}

impl std::error::Error for PluginError {}

/// A destination's verdict on one row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", content = "message", rename_all = "snake_case")]
pub enum RowOutcome {
    Accepted,
    Rejected(String),
    Retryable(String),
}

/// Facts about the sync a destination writer works for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncContext {
    pub sync_name: String,
    pub primary_key: Vec<String>,
    pub run_id: String,
}

/// Parses a plugin's config (JSON text) into `T`, naming the offending field on failure.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(config);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let mut field = if path == "." || path == "?" {
            String::new()
        } else {
            path
        };
        let message = e.into_inner().to_string();
        // serde reports a missing field at the object holding it; name the field itself.
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            field = if field.is_empty() {
                name.to_string()
            } else {
                format!("{field}.{name}")
            };
        }
        ConfigError::new(field, message)
    })
}

/// Replaces `${env.NAME}` references in a config value with the granted environment
/// variable's value; `Err` names the missing variable. `kind` ("source", "destination")
/// words the hint about granting it.
pub fn expand_secrets(value: &str, kind: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${env.") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 6..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{env.…}} in {value:?}"))?;
        let name = &after[..end];
        let secret = std::env::var(name)
            .map_err(|_| format!("environment variable {name} is not set or not granted to this {kind} (add it to grants.env)"))?;
        out.push_str(&secret);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// How row batches cross the boundary (contract 0.2.0's `row-encoding`; 0.1.0 plugins all
/// speak MessagePack). See [`crate::json_rows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowEncoding {
    #[default]
    Msgpack,
    Json,
}

impl RowEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            RowEncoding::Msgpack => "msgpack",
            RowEncoding::Json => "json",
        }
    }
}

/// What a plugin implements beyond its kind's basics (contract 0.3.0). Older plugins declare
/// none. A plugin declares its capabilities by overriding its trait's `capabilities()`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Sources: the `warehouse` interface (the snapshot lives in the source database).
    WarehouseDiff,
    /// Sources: cursor reads (only rows whose cursor moved).
    CursorRead,
    /// Sources: sync logs written to the source database (`write-logs`).
    WarehouseLogs,
    /// Destinations: `writer.read` (what the destination holds for given keys).
    ReadBack,
    /// Destinations: honour absent cells (`row-batch.present`).
    FieldPresence,
}

impl Capability {
    /// The capability's WIT name, `read-back`.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::WarehouseDiff => "warehouse-diff",
            Capability::CursorRead => "cursor-read",
            Capability::WarehouseLogs => "warehouse-logs",
            Capability::ReadBack => "read-back",
            Capability::FieldPresence => "field-presence",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operations one destination config can express (contract 0.3.0 `operations-for`),
/// with a sentence per missing operation saying how to enable it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct OperationSupport {
    /// A subset of the spec's operations.
    pub operations: Vec<Operation>,
    /// For operations of the spec this config cannot express: how to enable each, naming
    /// the config options.
    pub hints: Vec<(Operation, String)>,
}

impl OperationSupport {
    /// Every operation of `spec`, no hints: what a plugin that says nothing more can do.
    pub fn all_of(spec: &PluginSpec) -> OperationSupport {
        OperationSupport {
            operations: spec.operations.clone(),
            hints: Vec::new(),
        }
    }

    /// Whether this config can express `op`.
    pub fn supports(&self, op: Operation) -> bool {
        self.operations.contains(&op)
    }

    /// The plugin's hint for enabling `op`, if it gave one.
    pub fn hint(&self, op: Operation) -> Option<&str> {
        self.hints
            .iter()
            .find(|(o, _)| *o == op)
            .map(|(_, h)| h.as_str())
    }
}
