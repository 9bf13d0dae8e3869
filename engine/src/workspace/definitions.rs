//! The definitions a loaded workspace holds, resolved and cross-checked: connectors (sources,
//! destinations, checks and policies), models, syncs and alert routes, each with the
//! [`Origin`] its errors name.

use super::errors::ConfigError;
use crate::domain::{Grants, Limits, RateLimit, Severity, SyncMode};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A sync's quality check, resolved.
#[derive(Debug, Clone)]
pub struct Check {
    /// Shown in reports: the `name` given, or the plugin name and its `check` config value.
    pub name: String,
    /// Whether a failing result blocks the run or only warns.
    pub severity: Severity,
    /// Plugin, config, grants and limits; its origin key is `syncs.NAME.checks[i]`.
    pub connector: Connector,
}

/// Where a definition came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file the definition is in.
    pub file: PathBuf,
    /// Key prefix inside that file, e.g. `sources.files` (empty for one-per-file definitions).
    pub key: String,
}

impl Origin {
    /// The dotted key of `field` inside this definition (the definition itself when empty).
    pub fn key(&self, field: &str) -> String {
        match (self.key.is_empty(), field.is_empty()) {
            (true, _) => field.to_string(),
            (false, true) => self.key.clone(),
            (false, false) => format!("{}.{field}", self.key),
        }
    }

    /// An error about `field` of this definition.
    pub fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            key: self.key(field),
            message: message.into(),
        }
    }
}

/// A plugin as the workspace configures it: a source, a destination, a quality check or an
/// approval policy.
#[derive(Debug, Clone)]
pub struct Connector {
    /// Its name in the workspace (`[sources.NAME]`, a check's or a policy's name).
    pub name: String,
    /// A plugin name (looked up in the plugins directory) or a path to a `.wasm` file.
    pub plugin: String,
    /// The plugin's config as JSON text.
    pub config_json: String,
    /// What the plugin may touch.
    pub grants: Grants,
    /// Resource limits for each of its instances.
    pub limits: Limits,
    /// A staging destination: drafts may run against it.
    pub staging: bool,
    /// Where it is defined.
    pub origin: Origin,
}

/// A model: what to read from a source, and the columns identifying a row.
#[derive(Debug, Clone)]
pub struct Model {
    /// Its name in the workspace.
    pub name: String,
    /// The source it reads from (a key of [`Workspace::sources`](super::Workspace::sources)).
    pub source: String,
    /// What to read; its meaning is the source plugin's.
    pub query: String,
    /// Column(s) identifying a row.
    pub primary_key: Vec<String>,
    /// Optional human description.
    pub description: Option<String>,
    /// Column → labels (`pii`, ...).
    pub labels: BTreeMap<String, Vec<String>>,
    /// Where it is defined.
    pub origin: Origin,
}

/// A sync as configured: a model delivered to a destination, and how.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Its name in the workspace.
    pub name: String,
    /// The model it delivers.
    pub model: String,
    /// The destination it delivers to.
    pub destination: String,
    /// How the diff becomes operations.
    pub mode: SyncMode,
    /// Model column → destination field, in order.
    pub mapping: Vec<(String, String)>,
    /// Field-level write rules: of the mapping entries written as tables, and `update`.
    pub field_rules: super::field_rules::FieldRules,
    /// Rows per destination call (`None`: the destination's limit, at most 500).
    pub batch_size: Option<u32>,
    /// `append` mode: the field carrying each event's stable id.
    pub event_id_field: String,
    /// Quality checks run on the plan before anything is written.
    pub checks: Vec<Check>,
    /// The most requests and/or rows per second sent to the destination.
    pub rate_limit: RateLimit,
    /// Stop delivering after this many seconds; what is left goes with the next run.
    pub time_budget_s: Option<u64>,
    /// Requests sent at once (1 to 64).
    pub max_in_flight: u32,
    /// Optional human description.
    pub description: Option<String>,
    /// When `backflow serve` runs it on its own.
    pub schedule: Option<crate::schedule::Schedule>,
    /// Syncs that must succeed before this one runs (a sequence).
    pub after: Vec<String>,
    /// Run once at service start if a schedule was missed while it was down.
    pub catch_up: bool,
    /// Where it is defined.
    pub origin: Origin,
}

/// A run outcome worth telling someone about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertOutcome {
    /// The run failed.
    Failed,
    /// The destination rejected some rows.
    Partial,
    /// A quality check blocked the run.
    Blocked,
    /// The run waits for a person's approval.
    AwaitingApproval,
}

impl AlertOutcome {
    /// Every outcome, the default of an alert's `on`.
    pub const ALL: [AlertOutcome; 4] = [
        AlertOutcome::Failed,
        AlertOutcome::Partial,
        AlertOutcome::Blocked,
        AlertOutcome::AwaitingApproval,
    ];

    /// The name `on = [...]` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertOutcome::Failed => "failed",
            AlertOutcome::Partial => "partial",
            AlertOutcome::Blocked => "blocked",
            AlertOutcome::AwaitingApproval => "awaiting_approval",
        }
    }
}

/// One `[[alerts]]` route.
#[derive(Debug, Clone)]
pub struct Alert {
    /// The URL as written (may hold `${env.NAME}`; expanded when sent).
    pub url: String,
    /// The outcomes reported.
    pub on: Vec<AlertOutcome>,
    /// `partial` is reported only when at least this many rows were rejected.
    pub partial_min_rejected: u64,
    /// Only runs of these syncs (empty: every sync).
    pub syncs: Vec<String>,
    /// Only runs delivering to these destinations (empty: every destination).
    pub destinations: Vec<String>,
    /// The environment variables its URL may name, and the addresses or ranges its host
    /// name may resolve to although private (`grants.env`, `grants.network`; no files).
    pub grants: crate::domain::Grants,
    /// Conditions beyond run outcomes, and how often a lasting one is repeated.
    pub conditions: super::alert_conditions::AlertConditions,
    /// Where it is defined.
    pub origin: Origin,
}

/// Who may do what, and which policies decide on changes and runs.
#[derive(Debug, Clone, Default)]
pub struct Governance {
    /// Person → role (`[users]`).
    pub users: BTreeMap<String, crate::domain::Role>,
    /// Approval policies, asked about every change request and every run.
    pub policies: Vec<Connector>,
    /// How long a run waiting for approval may be approved, in minutes.
    pub run_request_ttl_minutes: u64,
    /// A Slack-compatible webhook URL told when an approval is needed (may hold
    /// `${env.NAME}`).
    pub notify_url: Option<String>,
    /// Where `[approvals]` is (the main file).
    pub origin: Option<Origin>,
    /// Pins for the policy plugins (see
    /// [`Workspace::plugin_pins`](super::Workspace::plugin_pins)).
    pub plugin_pins: BTreeMap<String, String>,
}

impl Governance {
    /// Approvals are on once the workspace declares users.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }
}
