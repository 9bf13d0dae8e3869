//! The workspace: `backflow.toml` plus optional `models/*.toml` and `syncs/*.toml`.
//!
//! Parsing rejects unknown keys; every error names the file and the key. Cross-references
//! (a sync's model, a model's source, mapped columns) are checked in [`Workspace::load`], so
//! a loaded workspace is internally consistent. Whether a plugin accepts its `config` table is
//! the plugin's call, checked later through its `check-config` export.
//!
//! Why one file of ~800 lines: it is the schema (one serde struct per table, each field
//! documented) plus the cross-reference checks; splitting it would scatter one file format.

use crate::domain::{Grants, Limits};
pub use crate::domain::{RateLimit, Severity, SyncMode};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub const WORKSPACE_FILE: &str = "backflow.toml";

/// A configuration error, always naming the file and, where it applies, the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key path, e.g. `syncs.crm.model`; empty for the file as a whole.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// All errors found while loading, reported together.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// `backflow.toml`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WorkspaceFile {
    /// Workspace-wide settings.
    #[serde(default)]
    workspace: WorkspaceSettings,
    #[serde(default)]
    sources: IndexMap<String, ConnectorFile>,
    #[serde(default)]
    destinations: IndexMap<String, ConnectorFile>,
    #[serde(default)]
    models: IndexMap<String, ModelFile>,
    #[serde(default)]
    syncs: IndexMap<String, SyncFile>,
    /// People and their roles (`admin`, `approver`, `contributor`, `viewer`). Declaring any
    /// turns approvals on: runs use the published configuration, changes need review.
    #[serde(default)]
    users: IndexMap<String, UserFile>,
    /// Approval policies (plugins), asked about every change request and every run.
    #[serde(default)]
    policies: Vec<PolicyFile>,
    /// Settings for change requests and run approvals.
    #[serde(default)]
    approvals: ApprovalsFile,
    /// How much history the state keeps.
    #[serde(default)]
    state: StateFile,
    /// Where run outcomes are reported.
    #[serde(default)]
    alerts: Vec<AlertFile>,
}

/// `[state]`: retention of run history.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    /// Runs kept per sync in history (default 1000); older ones are pruned as runs finish.
    keep_runs: Option<u64>,
    /// Runs per sync whose changelog (values sent and values before, for `runs undo` and
    /// `rows history`) is kept (default 50; 0 writes none, and no run can be undone).
    keep_changelog_runs: Option<u64>,
}

/// The names of the `${env.NAME}` references in a config value.
pub fn env_references(value: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${env.") {
        let after = &rest[start + 6..];
        let Some(end) = after.find('}') else { break };
        names.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    names
}

/// The slowest rate a `rate_limit` may set: one request or row per 1,000 seconds.
pub const MIN_RATE: f64 = 0.001;
/// The largest `batch_size` (rows per request); beyond it one batch alone could exhaust memory.
pub const MAX_BATCH_SIZE: u32 = 100_000;
/// The longest `time_budget_s`: 30 days.
pub const MAX_TIME_BUDGET_S: u64 = 30 * 24 * 3600;

/// Runs kept per sync when `[state] keep_runs` is not set.
pub const DEFAULT_KEEP_RUNS: u64 = 1000;
/// Changelogs kept per sync when `[state] keep_changelog_runs` is not set.
pub const DEFAULT_KEEP_CHANGELOG_RUNS: u64 = 50;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFile {
    role: String,
}

/// One `[[policies]]` entry: an approval-policy plugin and its config. Policies get no grants.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// A name for reports (default: the plugin's).
    #[serde(default)]
    name: Option<String>,
    plugin: String,
    #[serde(default)]
    config: Option<toml::Table>,
    #[serde(default)]
    limits: LimitsFile,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApprovalsFile {
    /// How long a run waiting for approval may be approved, in minutes (default 1440).
    #[serde(default)]
    run_request_ttl_minutes: Option<u64>,
    /// A Slack-compatible incoming-webhook URL told when an approval is needed.
    #[serde(default)]
    notify_url: Option<String>,
    /// Hosts the engine may reach for notifications; notify_url's host:port must be here.
    #[serde(default)]
    grants: GrantsFile,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WorkspaceSettings {
    /// Where plugins named by spec name are looked up (default `plugins`).
    plugins_dir: Option<String>,
    /// Where state, run history and the compiled-plugin cache live (default `.backflow`).
    state_dir: Option<String>,
}

/// A source or destination: a plugin, its config, what it may touch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectorFile {
    /// A plugin name (looked up in `plugins_dir`) or a path to a `.wasm` file.
    plugin: String,
    /// The plugin's own configuration; its schema is the plugin's (`backflow plugin inspect`).
    #[serde(default)]
    config: Option<toml::Table>,
    /// Capabilities granted to the plugin. Nothing is granted by default.
    #[serde(default)]
    grants: GrantsFile,
    /// Resource limits for each instance of the plugin.
    #[serde(default)]
    limits: LimitsFile,
    /// A destination for trying drafts: `sync run --draft` may deliver the working copy here.
    #[serde(default)]
    staging: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    /// Directories the plugin may read (read-only).
    #[serde(default)]
    files: Vec<String>,
    /// `host:port` (or `host:*`) the plugin may connect to.
    #[serde(default)]
    network: Vec<String>,
    /// Environment variables the plugin may read.
    #[serde(default)]
    env: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    /// Linear memory per instance, in MiB (default 256).
    memory_mb: Option<u64>,
    /// CPU time the plugin may spend in one call, in milliseconds (default 30000).
    call_timeout_ms: Option<u64>,
    /// Wall-clock time one call may take, waits included, in milliseconds (default 300000).
    wall_timeout_ms: Option<u64>,
}

/// A model: a query with a primary key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    /// Name of a source in `[sources]`.
    source: String,
    /// What to read; its meaning is the source plugin's (SQL, a file path, ...).
    query: String,
    /// Column(s) identifying a row.
    primary_key: OneOrMany,
    /// Optional human description.
    #[serde(default)]
    description: Option<String>,
    /// Labels of columns, e.g. `{ email = ["pii"] }`; approval policies see the labels of the
    /// columns a sync sends.
    #[serde(default)]
    labels: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A sync: a model delivered to a destination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncFile {
    model: String,
    destination: String,
    /// upsert (default), update, insert, mirror or append.
    #[serde(default)]
    mode: Option<String>,
    /// Model column → destination field. Empty: every column under its own name.
    #[serde(default)]
    mapping: IndexMap<String, String>,
    /// Rows per destination call (default: the destination's limit, at most 500).
    #[serde(default)]
    batch_size: Option<u32>,
    /// `append` mode: the field carrying each event's stable id (default `event_id`).
    #[serde(default)]
    event_id_field: Option<String>,
    /// Quality checks run on the plan before anything is written.
    #[serde(default)]
    checks: Vec<CheckFile>,
    /// Most requests and/or rows per second sent to the destination.
    #[serde(default)]
    rate_limit: Option<RateLimit>,
    /// Stop delivering after this many seconds; what is left goes with the next run.
    #[serde(default)]
    time_budget_s: Option<u64>,
    /// Requests sent at once (default 1; each in flight has its own plugin instance).
    #[serde(default)]
    max_in_flight: Option<u32>,
    /// Optional human description.
    #[serde(default)]
    description: Option<String>,
    /// When `backflow serve` runs this sync: a cron pattern, 5 fields (`*/15 * * * *`) or 6
    /// with seconds first.
    #[serde(default)]
    schedule: Option<String>,
    /// The time zone the schedule is read in (IANA name; default UTC).
    #[serde(default)]
    timezone: Option<String>,
    /// Run after these syncs, once each of them has succeeded since this one last ran.
    #[serde(default)]
    after: Vec<String>,
    /// Whether a schedule missed while the service was down runs once when it starts
    /// (default true).
    #[serde(default)]
    catch_up: Option<bool>,
}

/// `[[alerts]]`: where run outcomes are posted (Slack-compatible webhooks).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertFile {
    /// The webhook URL; `${env.NAME}` is replaced from the service's environment.
    url: String,
    /// Outcomes to report: `failed`, `partial`, `blocked`, `awaiting_approval`
    /// (default: all of them).
    #[serde(default)]
    on: Option<Vec<String>>,
    /// `partial` is reported only when at least this many rows were rejected (default 1).
    #[serde(default)]
    partial_min_rejected: Option<u64>,
    /// Only runs of these syncs (default: every sync).
    #[serde(default)]
    syncs: Vec<String>,
    /// Only runs delivering to these destinations (default: every destination).
    #[serde(default)]
    destinations: Vec<String>,
}

/// One quality check of a sync.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckFile {
    /// Shown in reports (default: the plugin name and its `check` config value).
    #[serde(default)]
    name: Option<String>,
    /// A quality-check plugin name or path.
    plugin: String,
    /// `fail` (default) blocks the run; `warn` records the result and proceeds.
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    config: Option<toml::Table>,
    #[serde(default)]
    grants: GrantsFile,
    #[serde(default)]
    limits: LimitsFile,
}

/// A sync's quality check, resolved.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub severity: Severity,
    /// Plugin, config, grants and limits; its origin key is `syncs.NAME.checks[i]`.
    pub connector: Connector,
}

/// Where a definition came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    /// Key prefix inside that file, e.g. `sources.files` (empty for one-per-file definitions).
    pub key: String,
}

impl Origin {
    pub fn key(&self, field: &str) -> String {
        match (self.key.is_empty(), field.is_empty()) {
            (true, _) => field.to_string(),
            (false, true) => self.key.clone(),
            (false, false) => format!("{}.{field}", self.key),
        }
    }

    pub fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            key: self.key(field),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Connector {
    pub name: String,
    pub plugin: String,
    /// The plugin's config as JSON text.
    pub config_json: String,
    pub grants: Grants,
    pub limits: Limits,
    /// A staging destination: drafts may run against it.
    pub staging: bool,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub source: String,
    pub query: String,
    pub primary_key: Vec<String>,
    pub description: Option<String>,
    /// Column → labels (`pii`, ...).
    pub labels: BTreeMap<String, Vec<String>>,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub name: String,
    pub model: String,
    pub destination: String,
    pub mode: SyncMode,
    /// Model column → destination field, in order.
    pub mapping: Vec<(String, String)>,
    pub batch_size: Option<u32>,
    pub event_id_field: String,
    pub checks: Vec<Check>,
    pub rate_limit: RateLimit,
    pub time_budget_s: Option<u64>,
    pub max_in_flight: u32,
    pub description: Option<String>,
    /// When `backflow serve` runs it on its own.
    pub schedule: Option<crate::schedule::Schedule>,
    /// Syncs that must succeed before this one runs (a sequence).
    pub after: Vec<String>,
    /// Run once at service start if a schedule was missed while it was down.
    pub catch_up: bool,
    pub origin: Origin,
}

/// A run outcome worth telling someone about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertOutcome {
    Failed,
    Partial,
    Blocked,
    AwaitingApproval,
}

impl AlertOutcome {
    pub const ALL: [AlertOutcome; 4] = [
        AlertOutcome::Failed,
        AlertOutcome::Partial,
        AlertOutcome::Blocked,
        AlertOutcome::AwaitingApproval,
    ];

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
    pub on: Vec<AlertOutcome>,
    pub partial_min_rejected: u64,
    pub syncs: Vec<String>,
    pub destinations: Vec<String>,
    pub origin: Origin,
}

/// A loaded, cross-checked workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    pub root: PathBuf,
    pub plugins_dir: PathBuf,
    pub state_dir: PathBuf,
    /// Runs kept per sync in history (`[state] keep_runs`).
    pub keep_runs: u64,
    /// Runs per sync whose changelog is kept (`[state] keep_changelog_runs`; 0 keeps none).
    pub keep_changelog_runs: u64,
    pub sources: BTreeMap<String, Connector>,
    pub destinations: BTreeMap<String, Connector>,
    pub models: BTreeMap<String, Model>,
    pub syncs: BTreeMap<String, SyncConfig>,
    pub governance: Governance,
    /// Plugin reference → SHA-256 the published configuration was reviewed with. Empty for a
    /// working copy; a run refuses a plugin whose file no longer matches.
    pub plugin_pins: BTreeMap<String, String>,
    /// Where run outcomes are reported (`[[alerts]]`).
    pub alerts: Vec<Alert>,
}

/// Who may do what, and which policies decide on changes and runs.
#[derive(Debug, Clone, Default)]
pub struct Governance {
    pub users: BTreeMap<String, crate::domain::Role>,
    pub policies: Vec<Connector>,
    pub run_request_ttl_minutes: u64,
    pub notify_url: Option<String>,
    pub origin: Option<Origin>,
    /// Pins for the policy plugins (see [`Workspace::plugin_pins`]).
    pub plugin_pins: BTreeMap<String, String>,
}

impl Governance {
    /// Approvals are on once the workspace declares users.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }
}

fn toml_error(file: &Path, e: toml::de::Error) -> ConfigError {
    // toml's message carries the line, column and, for unknown keys, the expected ones.
    ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        message: e.to_string().trim_end().to_string(),
    }
}

fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        key: String::new(),
        message: format!("cannot read: {e}"),
    })
}

/// Files in `dir` ending in `.toml`, sorted; none if the directory does not exist.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// The configuration files of a workspace, by path relative to its root (`backflow.toml`,
/// `models/NAME.toml`, `syncs/NAME.toml`): what a change request reviews and what is
/// published. Data files (CSV and the like) are not configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigFiles(pub BTreeMap<String, String>);

impl ConfigFiles {
    /// Reads the working copy's configuration files.
    pub fn read(root: &Path) -> Result<ConfigFiles, ConfigErrors> {
        let main_file = root.join(WORKSPACE_FILE);
        if !main_file.exists() {
            return Err(ConfigErrors(vec![ConfigError {
                file: main_file,
                key: String::new(),
                message: "no workspace here (create one with `backflow init DIR`, or pass --workspace DIR)".into(),
            }]));
        }
        let mut files = BTreeMap::new();
        files.insert(
            WORKSPACE_FILE.to_string(),
            read(&main_file).map_err(|e| ConfigErrors(vec![e]))?,
        );
        for kind in ["models", "syncs"] {
            for file in toml_files(&root.join(kind)) {
                let name = file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                files.insert(
                    format!("{kind}/{name}"),
                    read(&file).map_err(|e| ConfigErrors(vec![e]))?,
                );
            }
        }
        Ok(ConfigFiles(files))
    }

    /// SHA-256 over every file's path and content: what a reviewer approved.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for (path, content) in &self.0 {
            h.update((path.len() as u64).to_be_bytes());
            h.update(path.as_bytes());
            h.update((content.len() as u64).to_be_bytes());
            h.update(content.as_bytes());
        }
        format!("{:x}", h.finalize())
    }
}

impl Workspace {
    /// Every plugin reference the workspace uses (sources, destinations, checks, policies),
    /// except the built-in no-op destination.
    pub fn plugin_refs(&self) -> std::collections::BTreeSet<String> {
        let mut refs = std::collections::BTreeSet::new();
        for c in self
            .sources
            .values()
            .chain(self.destinations.values())
            .chain(self.governance.policies.iter())
        {
            refs.insert(c.plugin.clone());
        }
        for s in self.syncs.values() {
            refs.extend(s.checks.iter().map(|c| c.connector.plugin.clone()));
        }
        refs.remove(crate::domain::BUILTIN_NOOP);
        refs
    }

    /// Refuses a plugin whose content is not the one pinned for `reference`.
    pub fn check_pin(
        pins: &BTreeMap<String, String>,
        reference: &str,
        plugin: &crate::host::Plugin,
    ) -> Result<(), String> {
        match pins.get(reference) {
            Some(pin) if *pin != plugin.hash => Err(format!(
                "plugin {reference} ({}) changed since the configuration was published (published sha256 {}, now {}): publish a change request to use it",
                plugin.path.display(),
                &pin[..pin.len().min(12)],
                &plugin.hash[..plugin.hash.len().min(12)]
            )),
            _ => Ok(()),
        }
    }

    /// Loads and checks the workspace in `root` from its files. Reports every error found.
    pub fn load(root: &Path) -> Result<Workspace, ConfigErrors> {
        Workspace::load_files(root, &ConfigFiles::read(root)?)
    }

    /// Loads and checks a workspace whose configuration is `files` (the working copy's or a
    /// published one) and whose data and plugins are under `root`.
    pub fn load_files(root: &Path, files: &ConfigFiles) -> Result<Workspace, ConfigErrors> {
        let main_file = root.join(WORKSPACE_FILE);
        let mut errors = Vec::new();
        let text = files.0.get(WORKSPACE_FILE).ok_or_else(|| {
            ConfigErrors(vec![ConfigError {
                file: main_file.clone(),
                key: String::new(),
                message: "missing from the configuration".into(),
            }])
        })?;
        let parsed: WorkspaceFile =
            toml::from_str(text).map_err(|e| ConfigErrors(vec![toml_error(&main_file, e)]))?;

        let plugins_dir = root.join(parsed.workspace.plugins_dir.as_deref().unwrap_or("plugins"));
        let state_dir = root.join(parsed.workspace.state_dir.as_deref().unwrap_or(".backflow"));
        let keep_runs = parsed.state.keep_runs.unwrap_or(DEFAULT_KEEP_RUNS);
        let keep_changelog_runs = parsed
            .state
            .keep_changelog_runs
            .unwrap_or(DEFAULT_KEEP_CHANGELOG_RUNS);
        if keep_runs == 0 {
            errors.push(ConfigError {
                file: main_file.clone(),
                key: "state.keep_runs".into(),
                message: "must be at least 1".into(),
            });
        }

        let origin = |prefix: &str, name: &str| Origin {
            file: main_file.clone(),
            key: format!("{prefix}.{name}"),
        };
        let mut sources = BTreeMap::new();
        for (name, c) in parsed.sources {
            match connector(root, &name, c, origin("sources", &name)) {
                Ok(c) => {
                    sources.insert(name, c);
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        let mut destinations = BTreeMap::new();
        for (name, c) in parsed.destinations {
            match connector(root, &name, c, origin("destinations", &name)) {
                Ok(c) => {
                    destinations.insert(name, c);
                }
                Err(mut e) => errors.append(&mut e),
            }
        }

        let model_files = definitions(parsed.models, "models", root, files, &mut errors);
        let mut models = BTreeMap::new();
        for (name, m, origin) in model_files {
            if let Some(prev) = models.get(&name).map(|m: &Model| m.origin.clone()) {
                errors.push(origin.error(
                    "",
                    format!("model {name:?} is also defined in {}", prev.file.display()),
                ));
                continue;
            }
            let primary_key = m.primary_key.into_vec();
            if primary_key.is_empty() || primary_key.iter().any(|k| k.trim().is_empty()) {
                errors.push(origin.error("primary_key", "needs at least one column name"));
            }
            if !sources.contains_key(&m.source) {
                errors.push(origin.error("source", unknown("source", &m.source, sources.keys())));
            }
            if m.query.trim().is_empty() {
                errors.push(origin.error("query", "is empty"));
            }
            models.insert(
                name.clone(),
                Model {
                    name,
                    source: m.source,
                    query: m.query,
                    primary_key,
                    description: m.description,
                    labels: m.labels,
                    origin,
                },
            );
        }

        let sync_files = definitions(parsed.syncs, "syncs", root, files, &mut errors);
        let mut syncs = BTreeMap::new();
        for (name, s, origin) in sync_files {
            if let Some(prev) = syncs.get(&name).map(|s: &SyncConfig| s.origin.clone()) {
                errors.push(origin.error(
                    "",
                    format!("sync {name:?} is also defined in {}", prev.file.display()),
                ));
                continue;
            }
            if !models.contains_key(&s.model) {
                errors.push(origin.error("model", unknown("model", &s.model, models.keys())));
            }
            if !destinations.contains_key(&s.destination) {
                errors.push(origin.error(
                    "destination",
                    unknown("destination", &s.destination, destinations.keys()),
                ));
            }
            let mode = match s.mode.as_deref() {
                None => SyncMode::Upsert,
                Some(m) => SyncMode::parse(m).unwrap_or_else(|| {
                    errors.push(origin.error(
                        "mode",
                        format!("unknown mode {m:?}; use upsert, update, insert, mirror or append"),
                    ));
                    SyncMode::Upsert
                }),
            };
            let mut seen_fields = std::collections::HashSet::new();
            for (column, field) in &s.mapping {
                if field.trim().is_empty() {
                    errors.push(origin.error(
                        &format!("mapping.{column}"),
                        "destination field name is empty",
                    ));
                } else if !seen_fields.insert(field.clone()) {
                    errors.push(origin.error(
                        &format!("mapping.{column}"),
                        format!("destination field {field:?} is mapped twice"),
                    ));
                }
            }
            if s.batch_size == Some(0) {
                errors.push(origin.error("batch_size", "must be at least 1"));
            } else if s.batch_size.is_some_and(|b| b > MAX_BATCH_SIZE) {
                errors
                    .push(origin.error("batch_size", format!("must be at most {MAX_BATCH_SIZE}")));
            }
            let rate_limit = s.rate_limit.unwrap_or_default();
            for (field, value) in [
                ("requests_per_second", rate_limit.requests_per_second),
                ("rows_per_second", rate_limit.rows_per_second),
            ] {
                if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                    errors.push(
                        origin.error(&format!("rate_limit.{field}"), "must be a positive number"),
                    );
                } else if value.is_some_and(|v| v < MIN_RATE) {
                    errors.push(origin.error(
                        &format!("rate_limit.{field}"),
                        format!("must be at least {MIN_RATE} (one per {} s)", 1.0 / MIN_RATE),
                    ));
                }
            }
            if s.max_in_flight.is_some_and(|n| n == 0 || n > 64) {
                errors.push(origin.error("max_in_flight", "must be between 1 and 64"));
            }
            if s.time_budget_s == Some(0) {
                errors.push(origin.error("time_budget_s", "must be at least 1"));
            } else if s.time_budget_s.is_some_and(|t| t > MAX_TIME_BUDGET_S) {
                errors.push(origin.error(
                    "time_budget_s",
                    format!("must be at most {MAX_TIME_BUDGET_S} (30 days)"),
                ));
            }
            let mut checks = Vec::new();
            for (i, c) in s.checks.into_iter().enumerate() {
                let check_origin = Origin {
                    file: origin.file.clone(),
                    key: origin.key(&format!("checks[{i}]")),
                };
                let severity = match c.severity.as_deref() {
                    None | Some("fail") => Severity::Fail,
                    Some("warn") => Severity::Warn,
                    Some(other) => {
                        errors.push(check_origin.error(
                            "severity",
                            format!("unknown severity {other:?}; use fail or warn"),
                        ));
                        Severity::Fail
                    }
                };
                let default_name = match c
                    .config
                    .as_ref()
                    .and_then(|t| t.get("check"))
                    .and_then(|v| v.as_str())
                {
                    Some(kind) => format!("{}:{kind}", c.plugin),
                    None => c.plugin.clone(),
                };
                let name = c.name.clone().unwrap_or(default_name);
                let file = ConnectorFile {
                    plugin: c.plugin,
                    config: c.config,
                    grants: c.grants,
                    limits: c.limits,
                    staging: false,
                };
                match connector(root, &name, file, check_origin) {
                    Ok(connector) => checks.push(Check {
                        name,
                        severity,
                        connector,
                    }),
                    Err(mut e) => errors.append(&mut e),
                }
            }
            let schedule = match &s.schedule {
                Some(pattern) => {
                    match crate::schedule::Schedule::parse(pattern, s.timezone.as_deref()) {
                        Ok(schedule) => Some(schedule),
                        Err(e @ crate::schedule::ScheduleError::TimeZone(_)) => {
                            errors.push(origin.error("timezone", e.to_string()));
                            None
                        }
                        Err(e) => {
                            errors.push(origin.error("schedule", e.to_string()));
                            None
                        }
                    }
                }
                None => {
                    if s.timezone.is_some() {
                        errors.push(
                            origin
                                .error("timezone", "applies to a schedule, and this sync has none"),
                        );
                    }
                    None
                }
            };
            syncs.insert(
                name.clone(),
                SyncConfig {
                    name,
                    model: s.model,
                    destination: s.destination,
                    mode,
                    mapping: s.mapping.into_iter().collect(),
                    batch_size: s.batch_size,
                    event_id_field: s.event_id_field.unwrap_or_else(|| "event_id".into()),
                    checks,
                    rate_limit,
                    time_budget_s: s.time_budget_s,
                    max_in_flight: s.max_in_flight.unwrap_or(1).clamp(1, 64),
                    description: s.description,
                    schedule,
                    after: s.after,
                    catch_up: s.catch_up.unwrap_or(true),
                    origin,
                },
            );
        }

        check_sequences(&syncs, &mut errors);
        let alerts = alerts(
            &main_file,
            parsed.alerts,
            &syncs,
            &destinations,
            &mut errors,
        );
        let governance = governance(
            root,
            &main_file,
            parsed.users,
            parsed.policies,
            parsed.approvals,
            &mut errors,
        );
        if errors.is_empty() {
            Ok(Workspace {
                root: root.to_path_buf(),
                plugins_dir,
                state_dir,
                keep_runs,
                keep_changelog_runs,
                sources,
                destinations,
                models,
                syncs,
                governance,
                plugin_pins: BTreeMap::new(),
                alerts,
            })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    pub fn sync(&self, name: &str) -> Result<&SyncConfig, String> {
        self.syncs
            .get(name)
            .ok_or_else(|| unknown("sync", name, self.syncs.keys()))
    }
}

/// `after` names existing syncs, not the sync itself, and no chain comes back to where it
/// started (a cycle would never run).
fn check_sequences(syncs: &BTreeMap<String, SyncConfig>, errors: &mut Vec<ConfigError>) {
    for sync in syncs.values() {
        for (i, upstream) in sync.after.iter().enumerate() {
            if upstream == &sync.name {
                errors.push(
                    sync.origin
                        .error(&format!("after[{i}]"), "a sync cannot run after itself"),
                );
            } else if !syncs.contains_key(upstream) {
                errors.push(sync.origin.error(
                    &format!("after[{i}]"),
                    unknown("sync", upstream, syncs.keys()),
                ));
            }
        }
    }
    for start in syncs.values() {
        let mut path = vec![start.name.clone()];
        if cycle_back_to(syncs, &start.name, &mut path) {
            errors.push(start.origin.error(
                "after",
                format!(
                    "syncs run after each other in a cycle: {}",
                    path.join(" → ")
                ),
            ));
            return;
        }
    }
}

/// Whether following `after` from the last sync of `path` comes back to `start` through at
/// least one other sync; `path` then holds the cycle. (A sync after itself is reported on
/// its own above.)
fn cycle_back_to(
    syncs: &BTreeMap<String, SyncConfig>,
    start: &str,
    path: &mut Vec<String>,
) -> bool {
    let Some(current) = path.last().and_then(|name| syncs.get(name)) else {
        return false;
    };
    for up in &current.after {
        if up == start && path.len() > 1 {
            path.push(up.clone());
            return true;
        }
        if up != start && syncs.contains_key(up) && !path.contains(up) {
            path.push(up.clone());
            if cycle_back_to(syncs, start, path) {
                return true;
            }
            path.pop();
        }
    }
    false
}

fn alerts(
    main_file: &Path,
    files: Vec<AlertFile>,
    syncs: &BTreeMap<String, SyncConfig>,
    destinations: &BTreeMap<String, Connector>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Alert> {
    let mut out = Vec::new();
    for (i, a) in files.into_iter().enumerate() {
        let origin = Origin {
            file: main_file.to_path_buf(),
            key: format!("alerts[{i}]"),
        };
        // Secrets are expanded when an alert is sent, not here (the CLI need not have them):
        // check the URL with each `${env.NAME}` standing for a plain word.
        let without_secrets = env_references(&a.url)
            .iter()
            .fold(a.url.clone(), |url, name| {
                url.replace(&format!("${{env.{name}}}"), "x")
            });
        match url::Url::parse(&without_secrets) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ if a.url.starts_with("${env.") => {}
            _ => errors.push(origin.error("url", format!("{:?} is not an http(s) URL", a.url))),
        }
        let mut on = Vec::new();
        for (j, name) in
            a.on.clone()
                .unwrap_or_else(|| {
                    AlertOutcome::ALL
                        .iter()
                        .map(|o| o.as_str().to_string())
                        .collect()
                })
                .iter()
                .enumerate()
        {
            match AlertOutcome::ALL.iter().find(|o| o.as_str() == name) {
                Some(o) => on.push(*o),
                None => errors.push(origin.error(&format!("on[{j}]"), format!("unknown outcome {name:?}; use failed, partial, blocked or awaiting_approval"))),
            }
        }
        for (j, s) in a.syncs.iter().enumerate() {
            if !syncs.contains_key(s) {
                errors.push(origin.error(&format!("syncs[{j}]"), unknown("sync", s, syncs.keys())));
            }
        }
        for (j, d) in a.destinations.iter().enumerate() {
            if !destinations.contains_key(d) {
                errors.push(origin.error(
                    &format!("destinations[{j}]"),
                    unknown("destination", d, destinations.keys()),
                ));
            }
        }
        out.push(Alert {
            url: a.url,
            on,
            partial_min_rejected: a.partial_min_rejected.unwrap_or(1),
            syncs: a.syncs,
            destinations: a.destinations,
            origin,
        });
    }
    out
}

/// Definitions of one kind: the `[KIND.NAME]` tables of the main file, then one per file in
/// `dir` (named after the file), each with where it came from.
fn definitions<T: serde::de::DeserializeOwned>(
    inline: IndexMap<String, T>,
    kind: &str,
    root: &Path,
    files: &ConfigFiles,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, T, Origin)> {
    let main_file = root.join(WORKSPACE_FILE);
    let mut out: Vec<(String, T, Origin)> = inline
        .into_iter()
        .map(|(name, def)| {
            let origin = Origin {
                file: main_file.clone(),
                key: format!("{kind}.{name}"),
            };
            (name, def, origin)
        })
        .collect();
    let prefix = format!("{kind}/");
    for (rel, text) in files
        .0
        .range(prefix.clone()..)
        .take_while(|(rel, _)| rel.starts_with(&prefix))
    {
        let file = root.join(rel);
        let name = Path::new(rel)
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match toml::from_str::<T>(text).map_err(|e| toml_error(&file, e)) {
            Ok(def) => out.push((
                name,
                def,
                Origin {
                    file,
                    key: String::new(),
                },
            )),
            Err(e) => errors.push(e),
        }
    }
    out
}

fn governance(
    root: &Path,
    main_file: &Path,
    users: IndexMap<String, UserFile>,
    policies: Vec<PolicyFile>,
    approvals: ApprovalsFile,
    errors: &mut Vec<ConfigError>,
) -> Governance {
    let origin = |key: String| Origin {
        file: main_file.to_path_buf(),
        key,
    };
    let mut out = Governance {
        run_request_ttl_minutes: approvals.run_request_ttl_minutes.unwrap_or(24 * 60),
        ..Default::default()
    };
    for (name, user) in users {
        match crate::domain::Role::parse(&user.role) {
            Some(role) => {
                out.users.insert(name, role);
            }
            None => errors.push(origin(format!("users.{name}")).error(
                "role",
                format!(
                    "unknown role {:?}; use admin, approver, contributor or viewer",
                    user.role
                ),
            )),
        }
    }
    for (i, p) in policies.into_iter().enumerate() {
        let name = p.name.clone().unwrap_or_else(|| p.plugin.clone());
        let file = ConnectorFile {
            plugin: p.plugin,
            config: p.config,
            grants: GrantsFile::default(),
            limits: p.limits,
            staging: false,
        };
        match connector(root, &name, file, origin(format!("policies[{i}]"))) {
            Ok(c) => out.policies.push(c),
            Err(mut e) => errors.append(&mut e),
        }
    }
    let approvals_origin = origin("approvals".into());
    if out.run_request_ttl_minutes > crate::domain::MAX_TTL_MINUTES {
        errors.push(approvals_origin.error(
            "run_request_ttl_minutes",
            format!(
                "must be at most {} (one year)",
                crate::domain::MAX_TTL_MINUTES
            ),
        ));
    }
    if let Some(template) = &approvals.notify_url {
        // A Slack webhook URL is a secret: it may come from a granted variable
        // (`${env.SLACK_WEBHOOK_URL}`), and messages name the template, never the URL.
        let names = crate::workspace::env_references(template);
        let ungranted: Vec<&String> = names
            .iter()
            .filter(|n| !approvals.grants.env.contains(n))
            .collect();
        if !ungranted.is_empty() {
            errors.push(approvals_origin.error(
                "notify_url",
                format!(
                    "uses ${{env.{}}}, which is not in approvals.grants.env",
                    ungranted[0]
                ),
            ));
        } else {
            match backflow_plugin_sdk::expand_secrets(template, "notification")
                .map(|url| reqwest::Url::parse(&url))
            {
                Err(e) => errors.push(approvals_origin.error("notify_url", e)),
                Ok(Ok(u)) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                    let host = u
                        .host_str()
                        .unwrap_or_default()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string();
                    let port = u.port_or_known_default().unwrap_or(80);
                    let grants = Grants {
                        files: vec![],
                        network: approvals.grants.network.clone(),
                        env: vec![],
                    };
                    if !grants.allows_host(&host, port) {
                        errors.push(approvals_origin.error(
                            "notify_url",
                            format!(
                                "{host}:{port} is not granted: add it to approvals.grants.network"
                            ),
                        ));
                    }
                }
                Ok(_) => errors.push(approvals_origin.error(
                    "notify_url",
                    if names.is_empty() {
                        format!("{template:?} is not an http(s) URL")
                    } else {
                        format!("{template:?} does not expand to an http(s) URL")
                    },
                )),
            }
        }
    }
    if !approvals.grants.files.is_empty() {
        errors.push(approvals_origin.error(
            "grants",
            "only network grants (and env, for notify_url) apply to notifications",
        ));
    }
    out.notify_url = approvals.notify_url;
    out.origin = Some(approvals_origin);
    out
}

fn unknown<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&String> = known.collect();
    if known.is_empty() {
        format!("no {what} named {name:?} (none are defined)")
    } else {
        format!(
            "no {what} named {name:?} (defined: {})",
            known
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn connector(
    root: &Path,
    name: &str,
    c: ConnectorFile,
    origin: Origin,
) -> Result<Connector, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for (i, dir) in c.grants.files.iter().enumerate() {
        let host_path = if Path::new(dir).is_absolute() {
            PathBuf::from(dir)
        } else {
            root.join(dir)
        };
        if !host_path.is_dir() {
            errors.push(origin.error(
                &format!("grants.files[{i}]"),
                format!("{} is not a directory", host_path.display()),
            ));
            continue;
        }
        files.push((host_path, dir.trim_end_matches('/').to_string()));
    }
    for (i, hp) in c.grants.network.iter().enumerate() {
        let valid = hp
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && (p == "*" || p.parse::<u16>().is_ok()));
        if !valid {
            errors.push(origin.error(
                &format!("grants.network[{i}]"),
                format!("{hp:?} is not host:port (or host:*)"),
            ));
        }
    }
    if c.plugin.trim().is_empty() {
        errors.push(origin.error("plugin", "is empty"));
    }
    let config_json = serde_json::to_string(&c.config.unwrap_or_default())
        .expect("TOML tables serialize to JSON");
    let defaults = Limits::default();
    let limits = Limits {
        memory_mb: c.limits.memory_mb.unwrap_or(defaults.memory_mb),
        call_timeout_ms: c.limits.call_timeout_ms.unwrap_or(defaults.call_timeout_ms),
        wall_timeout_ms: c.limits.wall_timeout_ms.unwrap_or(defaults.wall_timeout_ms),
    };
    if limits.memory_mb == 0 {
        errors.push(origin.error("limits.memory_mb", "must be at least 1"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Connector {
        name: name.to_string(),
        plugin: c.plugin,
        config_json,
        grants: Grants {
            files,
            network: c.grants.network,
            env: c.grants.env,
        },
        limits,
        staging: c.staging,
        origin,
    })
}

/// Fuzzing by property (issue 16): any `backflow.toml` loads or is refused with errors; the
/// loader never panics. Mutations of a valid workspace reach past the TOML parser.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const VALID: &str = "[workspace]\nplugins_dir = \"p\"\n[state]\nkeep_runs = 5\n[sources.files]\nplugin = \"file-source\"\ngrants.files = [\"data\"]\n[destinations.hook]\nplugin = \"webhook\"\nconfig.url = \"http://127.0.0.1:9/x\"\ngrants.network = [\"127.0.0.1:9\"]\n[models.m]\nsource = \"files\"\nquery = \"data/x.csv\"\nprimary_key = \"id\"\n[syncs.s]\nmodel = \"m\"\ndestination = \"hook\"\nbatch_size = 10\nrate_limit = { rows_per_second = 5.0 }\n[users]\nann = { role = \"admin\" }\n";

    fn load(text: &str) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("backflow.toml"), text).unwrap();
        let _ = Workspace::load(dir.path());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        #[test]
        fn any_text(text in "\\PC{0,200}") {
            load(&text);
        }

        #[test]
        fn a_valid_workspace_with_one_value_replaced(line in 0usize..30, value in prop_oneof![
            Just("-1".to_string()), Just("1e400".to_string()), Just("nan".to_string()), Just("\"\"".to_string()), Just("[]".to_string()),
            Just("{}".to_string()), Just("18446744073709551615".to_string()), Just("\"${env.\"".to_string()), "\"\\\\PC{0,10}\"".prop_map(|s| s),
        ]) {
            let text: Vec<String> = VALID.lines().enumerate().map(|(i, l)| match (i == line, l.split_once(" = ")) {
                (true, Some((key, _))) => format!("{key} = {value}"),
                _ => l.to_string(),
            }).collect();
            load(&text.join("\n"));
        }
    }
}
