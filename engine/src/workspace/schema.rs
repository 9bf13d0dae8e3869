//! The file format: one serde struct per table of `backflow.toml` (and of `models/*.toml`,
//! `syncs/*.toml`), each field documented, unknown keys refused (`deny_unknown_fields`), so
//! a typo is an error naming the key rather than a setting silently ignored. The bounds the
//! loader enforces on values are here too. What the values mean once checked is in
//! [`definitions`](super::definitions).

use crate::domain::RateLimit;
use indexmap::IndexMap;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `backflow.toml`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct WorkspaceFile {
    /// Workspace-wide settings.
    #[serde(default)]
    pub(super) workspace: WorkspaceSettings,
    /// `[sources.NAME]`: where models read from.
    #[serde(default)]
    pub(super) sources: IndexMap<String, ConnectorFile>,
    /// `[destinations.NAME]`: where syncs deliver.
    #[serde(default)]
    pub(super) destinations: IndexMap<String, ConnectorFile>,
    /// `[models.NAME]`, besides one per `models/NAME.toml`.
    #[serde(default)]
    pub(super) models: IndexMap<String, ModelFile>,
    /// `[syncs.NAME]`, besides one per `syncs/NAME.toml`.
    #[serde(default)]
    pub(super) syncs: IndexMap<String, SyncFile>,
    /// People and their roles (`admin`, `approver`, `contributor`, `viewer`). Declaring any
    /// turns approvals on: runs use the published configuration, changes need review.
    #[serde(default)]
    pub(super) users: IndexMap<String, UserFile>,
    /// Approval policies (plugins), asked about every change request and every run.
    #[serde(default)]
    pub(super) policies: Vec<PolicyFile>,
    /// Settings for change requests and run approvals.
    #[serde(default)]
    pub(super) approvals: ApprovalsFile,
    /// How much history the state keeps.
    #[serde(default)]
    pub(super) state: StateFile,
    /// Where run outcomes are reported.
    #[serde(default)]
    pub(super) alerts: Vec<AlertFile>,
}

/// `[state]`: retention of run history.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateFile {
    /// Runs kept per sync in history (default 1000); older ones are pruned as runs finish.
    pub(super) keep_runs: Option<u64>,
    /// Runs per sync whose changelog (values sent and values before, for `runs undo` and
    /// `rows history`) is kept (default 50; 0 writes none, and no run can be undone).
    pub(super) keep_changelog_runs: Option<u64>,
    /// Days of audit log kept (default 400); older entries are pruned, the hash chain stays
    /// verifiable from the first kept entry.
    pub(super) keep_audit_days: Option<u64>,
}

/// The names of the `${env.NAME}` references in a config value.
pub fn env_references(value: &str) -> Vec<String> {
    super::secrets::reference_names(value)
        .map_while(Result::ok)
        .map(str::to_string)
        .collect()
}

/// The slowest rate a `rate_limit` may set: one request or row per 1,000 seconds.
pub const MIN_RATE: f64 = 0.001;
/// The largest `batch_size` (rows per request); beyond it one batch alone could exhaust memory.
pub const MAX_BATCH_SIZE: u32 = 100_000;
/// The longest `time_budget_s`: 30 days.
pub const MAX_TIME_BUDGET_S: u64 = 30 * 24 * 3600;

/// Runs kept per sync when `[state] keep_runs` is not set.
pub const DEFAULT_KEEP_RUNS: u64 = 1000;
/// Days of audit log kept when `[state] keep_audit_days` is not set.
pub const DEFAULT_KEEP_AUDIT_DAYS: u64 = 400;
/// Changelogs kept per sync when `[state] keep_changelog_runs` is not set.
pub const DEFAULT_KEEP_CHANGELOG_RUNS: u64 = 50;

/// `[users.NAME]`: a person and their role.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserFile {
    /// `admin`, `approver`, `contributor` or `viewer`.
    pub(super) role: String,
}

/// One `[[policies]]` entry: an approval-policy plugin and its config. Policies get no grants.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    /// A name for reports (default: the plugin's).
    #[serde(default)]
    pub(super) name: Option<String>,
    /// An approval-policy plugin name or path.
    pub(super) plugin: String,
    /// The plugin's own configuration.
    #[serde(default)]
    pub(super) config: Option<toml::Table>,
    /// Resource limits for each instance of the plugin.
    #[serde(default)]
    pub(super) limits: LimitsFile,
}

/// `[approvals]`: change requests and run approvals.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ApprovalsFile {
    /// How long a run waiting for approval may be approved, in minutes (default 1440).
    #[serde(default)]
    pub(super) run_request_ttl_minutes: Option<u64>,
    /// A Slack-compatible incoming-webhook URL told when an approval is needed.
    #[serde(default)]
    pub(super) notify_url: Option<String>,
    /// Hosts the engine may reach for notifications; notify_url's host:port must be here.
    #[serde(default)]
    pub(super) grants: GrantsFile,
}

/// `[workspace]`: where plugins and state live.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct WorkspaceSettings {
    /// Where plugins named by spec name are looked up (default `plugins`).
    pub(super) plugins_dir: Option<String>,
    /// Where state, run history and the compiled-plugin cache live (default `.backflow`).
    pub(super) state_dir: Option<String>,
}

/// A source or destination: a plugin, its config, what it may touch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectorFile {
    /// A plugin name (looked up in `plugins_dir`) or a path to a `.wasm` file.
    pub(super) plugin: String,
    /// The plugin's own configuration; its schema is the plugin's (`backflow plugin inspect`).
    #[serde(default)]
    pub(super) config: Option<toml::Table>,
    /// Capabilities granted to the plugin. Nothing is granted by default.
    #[serde(default)]
    pub(super) grants: GrantsFile,
    /// Resource limits for each instance of the plugin.
    #[serde(default)]
    pub(super) limits: LimitsFile,
    /// A destination for trying drafts: `sync run --draft` may deliver the working copy here.
    #[serde(default)]
    pub(super) staging: bool,
}

/// A `grants` table: what a plugin may touch. Parsed and checked by
/// [`grants`](super::grants).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantsFile {
    /// Directories the plugin may read (read-only).
    #[serde(default)]
    pub(super) files: Vec<String>,
    /// `host:port` (or `host:*`) the plugin may connect to.
    #[serde(default)]
    pub(super) network: Vec<String>,
    /// Environment variables the plugin may read.
    #[serde(default)]
    pub(super) env: Vec<String>,
}

/// A `limits` table: resources for each instance of a plugin.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsFile {
    /// Linear memory per instance, in MiB (default 256).
    pub(super) memory_mb: Option<u64>,
    /// CPU time the plugin may spend in one call, in milliseconds (default 30000).
    pub(super) call_timeout_ms: Option<u64>,
    /// Wall-clock time one call may take, waits included, in milliseconds (default 300000).
    pub(super) wall_timeout_ms: Option<u64>,
}

/// A model: a query with a primary key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModelFile {
    /// Name of a source in `[sources]`.
    pub(super) source: String,
    /// What to read; its meaning is the source plugin's (SQL, a file path, ...).
    pub(super) query: String,
    /// Column(s) identifying a row.
    pub(super) primary_key: OneOrMany,
    /// Optional human description.
    #[serde(default)]
    pub(super) description: Option<String>,
    /// Labels of columns, e.g. `{ email = ["pii"] }`; approval policies see the labels of the
    /// columns a sync sends.
    #[serde(default)]
    pub(super) labels: BTreeMap<String, Vec<String>>,
}

/// A value written as one string or a list of them (`primary_key = "id"` or `["id", "eu"]`).
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A sync: a model delivered to a destination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SyncFile {
    /// Name of a model.
    pub(super) model: String,
    /// Name of a destination in `[destinations]`.
    pub(super) destination: String,
    /// upsert (default), update, insert, mirror or append.
    #[serde(default)]
    pub(super) mode: Option<String>,
    /// Model column → destination field. Empty: every column under its own name. An entry
    /// is a field name or a table with field rules (`{ to = "field", null = "skip", write =
    /// "on_insert" }`, see [`field_rules`](super::field_rules)).
    #[serde(default)]
    pub(super) mapping: IndexMap<String, toml::Value>,
    /// What an update carries: `all_fields` (default) or `changed_fields` (the key and the
    /// fields whose value changed since the last delivery).
    #[serde(default)]
    pub(super) update: Option<String>,
    /// Rows per destination call (default: the destination's limit, at most 500).
    #[serde(default)]
    pub(super) batch_size: Option<u32>,
    /// `append` mode: the field carrying each event's stable id (default `event_id`).
    #[serde(default)]
    pub(super) event_id_field: Option<String>,
    /// Quality checks run on the plan before anything is written.
    #[serde(default)]
    pub(super) checks: Vec<CheckFile>,
    /// Most requests and/or rows per second sent to the destination.
    #[serde(default)]
    pub(super) rate_limit: Option<RateLimit>,
    /// Stop delivering after this many seconds; what is left goes with the next run.
    #[serde(default)]
    pub(super) time_budget_s: Option<u64>,
    /// Requests sent at once (default 1; each in flight has its own plugin instance).
    #[serde(default)]
    pub(super) max_in_flight: Option<u32>,
    /// Optional human description.
    #[serde(default)]
    pub(super) description: Option<String>,
    /// When `backflow serve` runs this sync: a cron pattern, 5 fields (`*/15 * * * *`) or 6
    /// with seconds first.
    #[serde(default)]
    pub(super) schedule: Option<String>,
    /// The time zone the schedule is read in (IANA name; default UTC).
    #[serde(default)]
    pub(super) timezone: Option<String>,
    /// Run after these syncs, once each of them has succeeded since this one last ran.
    #[serde(default)]
    pub(super) after: Vec<String>,
    /// Whether a schedule missed while the service was down runs once when it starts
    /// (default true).
    #[serde(default)]
    pub(super) catch_up: Option<bool>,
}

/// `[[alerts]]`: where run outcomes are posted (Slack-compatible webhooks).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertFile {
    /// The webhook URL; `${env.NAME}` is replaced from the service's environment.
    pub(super) url: String,
    /// Outcomes to report: `failed`, `partial`, `blocked`, `awaiting_approval`
    /// (default: all of them).
    #[serde(default)]
    pub(super) on: Option<Vec<String>>,
    /// `partial` is reported only when at least this many rows were rejected (default 1).
    #[serde(default)]
    pub(super) partial_min_rejected: Option<u64>,
    /// Only runs of these syncs (default: every sync).
    #[serde(default)]
    pub(super) syncs: Vec<String>,
    /// Only runs delivering to these destinations (default: every destination).
    #[serde(default)]
    pub(super) destinations: Vec<String>,
    /// What the alert may use: `env`, the variables its URL may name (`${env.NAME}`), and
    /// `network`, addresses or ranges its URL's host name may resolve to although private.
    #[serde(default)]
    pub(super) grants: GrantsFile,
    /// How long a condition stays firing before a reminder (default `"1h"`).
    #[serde(default)]
    pub(super) repeat_after: Option<String>,
    /// Alerts when a run's destination rejected more rows than this.
    #[serde(default)]
    pub(super) rejected_rows_over: Option<u64>,
    /// Alerts when a run's destination rejected more than this percentage of planned rows.
    #[serde(default)]
    pub(super) rejected_percent_over: Option<f64>,
    /// Alerts when a row count deviates from its recent median by more than this percentage.
    #[serde(default)]
    pub(super) row_count_deviation_percent: Option<f64>,
    /// Successful runs the row-count median is taken over (default 7).
    #[serde(default)]
    pub(super) row_count_baseline_runs: Option<u64>,
    /// `model_rows` (default) or `rows_to_send`.
    #[serde(default)]
    pub(super) row_count_measure: Option<String>,
    /// Alerts when a run takes longer than this (`"30m"`).
    #[serde(default)]
    pub(super) run_longer_than: Option<String>,
    /// Alerts when a sync has had no successful run for this long (`"2h"`).
    #[serde(default)]
    pub(super) stale_after: Option<String>,
}

/// One quality check of a sync.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckFile {
    /// Shown in reports (default: the plugin name and its `check` config value).
    #[serde(default)]
    pub(super) name: Option<String>,
    /// A quality-check plugin name or path.
    pub(super) plugin: String,
    /// `fail` (default) blocks the run; `warn` records the result and proceeds.
    #[serde(default)]
    pub(super) severity: Option<String>,
    /// The plugin's own configuration (`check = "..."` names the kind of check).
    #[serde(default)]
    pub(super) config: Option<toml::Table>,
    /// Capabilities granted to the plugin. Nothing is granted by default.
    #[serde(default)]
    pub(super) grants: GrantsFile,
    /// Resource limits for each instance of the plugin.
    #[serde(default)]
    pub(super) limits: LimitsFile,
}
