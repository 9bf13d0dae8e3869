//! The domain's shared vocabulary: roles, sync modes, grants and limits, changes and the
//! operations they become, run records and their counts. A leaf module: the host, the state,
//! governance, the sync path and the application layer all import it, and it imports none of
//! them, so those modules never need each other for a type.

use backflow_plugin_sdk::Operation;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;

// ---- Run records and counts ----

/// Rows per operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Rows new to the destination (sent as inserts, updates or appends, by mode).
    pub added: u64,
    /// Rows whose values differ from what the snapshot says the destination has.
    pub changed: u64,
    /// Rows gone from the model (sent as deletes in `mirror` mode).
    pub removed: u64,
}

impl OpCounts {
    /// Rows of every change together.
    pub fn total(&self) -> u64 {
        self.added + self.changed + self.removed
    }
}

/// The diff of the model against the snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffCounts {
    /// Model rows whose key is not in the snapshot.
    pub added: u64,
    /// Model rows in the snapshot with a different fingerprint (or any row on a full resync).
    pub changed: u64,
    /// Snapshot rows whose key is no longer in the model.
    pub removed: u64,
    /// Model rows equal to their snapshot entry: nothing to send.
    pub unchanged: u64,
    /// A full resync's way out of a delete the destination keeps refusing: rows gone from
    /// the model whose last delete was refused, dropped from the state instead of being
    /// sent again (they are not in `removed`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cleared_deletes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One quality check's result for a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The check's name in the sync's configuration.
    pub name: String,
    /// The name of the check plugin that ran it (the built-in `checks` or one of your own).
    pub plugin: String,
    /// Whether a failure blocks the run (`fail`) or is only recorded (`warn`).
    pub severity: Severity,
    /// `pass`, `warn`, `fail`, or `error` when the check itself failed (which counts as fail).
    pub verdict: CheckVerdict,
    /// The check's explanation, or why it could not run (its error, a failed model read).
    pub message: String,
    /// Offending rows as JSON text.
    pub samples: Vec<String>,
}

impl CheckReport {
    /// Whether this result stops the run.
    pub fn blocks(&self) -> bool {
        self.severity == Severity::Fail
            && matches!(self.verdict, CheckVerdict::Fail | CheckVerdict::Error)
    }
}

/// What a quality check concluded about a plan; serialized as `pass`, `warn`, `fail` or
/// `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckVerdict {
    /// The plan passed the check.
    Pass,
    /// The check found something worth a warning; never blocks.
    Warn,
    /// The check failed the plan (blocks when the check's severity is `fail`).
    Fail,
    /// The check itself failed (crashed, timed out, ran out of memory): counts as a failure,
    /// so checks fail closed.
    Error,
}

impl CheckVerdict {
    /// The verdict as stored and shown: `pass`, `warn`, `fail` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckVerdict::Pass => "pass",
            CheckVerdict::Warn => "warn",
            CheckVerdict::Fail => "fail",
            CheckVerdict::Error => "error",
        }
    }
}

impl From<backflow_plugin_sdk::check::Verdict> for CheckVerdict {
    fn from(v: backflow_plugin_sdk::check::Verdict) -> CheckVerdict {
        match v {
            backflow_plugin_sdk::check::Verdict::Pass => CheckVerdict::Pass,
            backflow_plugin_sdk::check::Verdict::Warn => CheckVerdict::Warn,
            backflow_plugin_sdk::check::Verdict::Fail => CheckVerdict::Fail,
        }
    }
}

impl std::fmt::Display for CheckVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that width and alignment apply (the CLI lines verdicts up).
        f.pad(self.as_str())
    }
}

impl PartialEq<&str> for CheckVerdict {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A row the destination refused, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRow {
    /// The primary key, rendered as text (`1` or `1|eu` for composite keys).
    pub key: String,
    /// The row's change as [`Change::as_str`] writes it (`added`, `changed`, `removed`).
    pub change: String,
    /// The destination's answer for the row (cut to a bounded size).
    pub error: String,
}

/// How a run ended (or that it is still going), as stored, shown and counted in metrics;
/// serialized in snake case (`awaiting_approval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every planned row was delivered.
    Succeeded,
    /// The run finished but the destination rejected some rows.
    Partial,
    /// The run stopped early; see `error`.
    Failed,
    /// The run is in progress (or its process died; the next run marks it interrupted).
    Running,
    /// The process running it stopped before it finished. Rows it had delivered are kept.
    Interrupted,
    /// A quality check failed: nothing was written, the snapshot is untouched.
    Blocked,
    /// An approval policy wants a person to approve this plan first (`backflow runs
    /// approve RUN`); nothing was written.
    AwaitingApproval,
    /// An approval policy rejected the run; nothing was written.
    Rejected,
}

impl RunStatus {
    /// The status as stored and shown (`succeeded`, `awaiting_approval`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Running => "running",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Blocked => "blocked",
            RunStatus::AwaitingApproval => "awaiting_approval",
            RunStatus::Rejected => "rejected",
        }
    }
}

/// One run of a sync, as stored and as printed by `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's ID, as `runs show`, `runs undo` and `runs approve` take it.
    pub run_id: String,
    /// The name of the sync that ran.
    pub sync: String,
    /// Why the run started: `manual`, `schedule`, `schedule (missed at T)`, `after SYNC`,
    /// `api`, `api (coalesced)`, `approved run ID`, `undo of run ID`.
    pub trigger: String,
    /// Who asked for the run (the workspace user, or `BACKFLOW_USER` / `USER` on the CLI).
    pub user: String,
    /// When the run started, RFC 3339 in UTC.
    pub started_at: String,
    /// When the run ended, RFC 3339 in UTC (empty while it runs).
    pub finished_at: String,
    /// Wall-clock time from start to finish.
    pub duration_ms: u64,
    /// Time spent reading the model and building the plan, and delivering it.
    #[serde(default)]
    pub timings: Timings,
    /// How the run ended.
    pub status: RunStatus,
    /// Whether the snapshot was ignored and every model row re-sent.
    #[serde(default)]
    pub full_resync: bool,
    /// Rows in the model and in the snapshot before the run.
    #[serde(default)]
    pub model_rows: u64,
    /// Rows in the snapshot (what the destination had from backflow) before the run.
    #[serde(default)]
    pub snapshot_rows: u64,
    /// The diff, before the sync's mode picks what to send.
    #[serde(default)]
    pub diff: DiffCounts,
    /// What the mode sends, per change.
    pub planned: OpCounts,
    /// Rows the destination acknowledged, per change.
    pub delivered: OpCounts,
    /// Rows the destination rejected, or given up on after retries, per change.
    pub failed: OpCounts,
    /// Content hashes (SHA-256) of the plugins used.
    pub plugins: PluginHashes,
    /// Hash of the sync's effective configuration.
    pub config_hash: String,
    /// Why the run did not deliver everything it could (failed, interrupted, blocked,
    /// awaiting approval, rejected); `None` for succeeded and partial runs, whose refused
    /// rows are in `rejected`.
    pub error: Option<String>,
    /// Quality check results, in the order the sync lists its checks.
    #[serde(default)]
    pub checks: Vec<CheckReport>,
    /// Rejected rows (at most [`MAX_REJECTED_KEPT`] are kept in the record).
    pub rejected: Vec<RejectedRow>,
    /// A run of the working copy (`--draft`): its snapshot and history are the draft's own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draft: bool,
    /// For an undo (`runs undo`): which run it undid and what it left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<UndoSummary>,
    /// Whether the model's rows came out of key order, so the plan sorted them before the
    /// diff. The next run of the sync then sorts from the start instead of first trying to
    /// diff while reading (see `sync/plan/intake.rs`); one that finds them in order again
    /// records `false`, and the run after it diffs while reading again.
    /// (Named `model_sorted` in records written before 2026-11-29.)
    #[serde(
        default,
        alias = "model_sorted",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub out_of_key_order: bool,
}

/// What an undo run undid, and the rows it left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoSummary {
    /// The run undone.
    pub run_id: String,
    /// Whether rows later runs changed were overwritten anyway (`--force`).
    pub forced: bool,
    /// Rows a later run changed (left alone unless forced).
    pub conflicts: u64,
    /// A few of their keys.
    pub conflict_keys: Vec<String>,
    /// Rows sent as updates of records backflow never delivered before (`update` mode):
    /// nothing to go back to, left as they are.
    pub without_before: u64,
}

/// How many rejected rows a run record keeps.
pub const MAX_REJECTED_KEPT: usize = 1000;

/// Where a run's time went, phase by phase (`timings` in `--json`), in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    /// Loading plugins (compiling a plugin seen for the first time) and checking configs.
    #[serde(default)]
    pub prepare_ms: u64,
    /// Reading the model and diffing it against the snapshot into a plan.
    pub plan_ms: u64,
    /// Quality checks over the plan.
    #[serde(default)]
    pub check_ms: u64,
    /// Of `prepare_ms`: compiling plugins this run met for the first time (0 when every
    /// plugin's code came from the cache).
    #[serde(default)]
    pub compile_ms: u64,
    /// Asking the approval policies about the plan (0 without policies).
    #[serde(default)]
    pub approval_ms: u64,
    /// Sending the plan to the destination, retries and pacing included.
    pub deliver_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
/// Content hashes (SHA-256) of every plugin a run used.
pub struct PluginHashes {
    /// Hash of the source plugin that reads the sync's model.
    pub source: String,
    /// Hash of the destination plugin that received the rows ([`BUILTIN_NOOP`] for the
    /// native no-op destination).
    pub destination: String,
    /// Quality check name → hash of its plugin.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checks: std::collections::BTreeMap<String, String>,
    /// Approval policy name → hash of its plugin, for runs in a workspace with policies.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub policies: std::collections::BTreeMap<String, String>,
}

/// Cuts a message to at most `max` bytes (on a character boundary), marking the cut.
pub fn truncate_message(mut message: String, max: usize) -> String {
    if message.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|i| message.is_char_boundary(*i))
            .unwrap_or(0);
        message.truncate(cut);
        message.push('…');
    }
    message
}

// ---- Sync definitions' value types ----

/// A sync's pace towards its destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Most destination write calls (batches) per second; `None` for no cap.
    pub requests_per_second: Option<f64>,
    /// Most rows sent per second, across batches; `None` for no cap.
    pub rows_per_second: Option<f64>,
}

/// What a failing check does to its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A failing (or erroring) check blocks the run: nothing is sent. The default.
    Fail,
    /// A failing check is recorded in the run's report and the run goes on.
    Warn,
}

/// How a sync treats the diff. See the README for each mode's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Added rows are inserted, changed rows updated, removed rows left alone. The default.
    Upsert,
    /// Added and changed rows are sent as updates: never creates records in the destination.
    Update,
    /// Only added rows are sent, as inserts.
    Insert,
    /// The destination follows the model: inserts, updates and deletes of removed rows.
    Mirror,
    /// Added rows are appended as events, once each, with a stable `event_id`.
    Append,
}

impl SyncMode {
    /// The mode a sync's `mode = "..."` names, or `None` for an unknown one.
    pub fn parse(s: &str) -> Option<SyncMode> {
        Some(match s {
            "upsert" => SyncMode::Upsert,
            "update" => SyncMode::Update,
            "insert" => SyncMode::Insert,
            "mirror" => SyncMode::Mirror,
            "append" => SyncMode::Append,
            _ => return None,
        })
    }

    /// The mode as configured and recorded (`upsert`, `mirror`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Upsert => "upsert",
            SyncMode::Update => "update",
            SyncMode::Insert => "insert",
            SyncMode::Mirror => "mirror",
            SyncMode::Append => "append",
        }
    }
}

// ---- Grants and limits ----

/// What the operator grants one plugin. Everything defaults to nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Directories the plugin may read, mounted read-only at the same path they are
    /// written with in the workspace (relative paths resolved against the workspace).
    pub files: Vec<(PathBuf, String)>,
    /// Hosts (with a port, or any port) the plugin may reach, through host HTTP or sockets.
    pub network: Vec<NetworkGrant>,
    /// Environment variables the plugin may read.
    pub env: Vec<String>,
}

impl Grants {
    /// Whether `host:port` is granted. Host names compare case-insensitively.
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.network.iter().any(|g| g.allows(host, port))
    }
}

/// One network grant, `host:port` or `host:*` (any port): the host a name (`db.internal`)
/// or an IP address (`10.0.0.5`, an IPv6 one in brackets: `[::1]:5432`). Parsed once, when
/// the workspace loads ([`str::parse`]); it shows as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkGrant {
    /// As written, for messages and comparisons between configurations.
    text: String,
    /// The host as written, without IPv6 brackets.
    host: String,
    /// The host's address, when it is written as one rather than as a name.
    address: Option<IpAddr>,
    /// The port; `None` for `host:*`.
    port: Option<u16>,
}

/// A network grant that is not `host:port` (or `host:*`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not host:port (or host:*)")]
pub struct InvalidNetworkGrant(pub String);

impl NetworkGrant {
    /// The host as written, without IPv6 brackets: a name or an address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host's IP address, or `None` when the grant names a host (resolved when used).
    pub fn address(&self) -> Option<IpAddr> {
        self.address
    }

    /// The granted port, or `None` when any port is (`host:*`).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether this grant covers `host` (without brackets) on `port`. Hosts compare as
    /// text, case-insensitively.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.host.eq_ignore_ascii_case(host) && self.port.is_none_or(|p| p == port)
    }
}

impl std::str::FromStr for NetworkGrant {
    type Err = InvalidNetworkGrant;

    fn from_str(text: &str) -> Result<NetworkGrant, InvalidNetworkGrant> {
        let invalid = || InvalidNetworkGrant(text.to_string());
        let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
        if host.is_empty() {
            return Err(invalid());
        }
        let port = match port {
            "*" => None,
            port => Some(port.parse::<u16>().map_err(|_| invalid())?),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(NetworkGrant {
            text: text.to_string(),
            host: host.to_string(),
            address: host.parse().ok(),
            port,
        })
    }
}

impl std::fmt::Display for NetworkGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Per-instance resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory the instance may grow to, in MiB (also bounds its host resources).
    pub memory_mb: u64,
    /// CPU time the guest may run in one call.
    pub call_timeout_ms: u64,
    /// Wall-clock time one call may take, including waits on the network or sleeps.
    pub wall_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 256,
            call_timeout_ms: 30_000,
            wall_timeout_ms: 300_000,
        }
    }
}

// ---- Roles ----

/// A workspace role. The same type policies see: it is part of the plugin contract, so it is
/// defined once, in the SDK.
pub use backflow_plugin_sdk::Role;

/// The longest a run approval request may stay open (one year; the config refuses more).
pub const MAX_TTL_MINUTES: u64 = 525_600;

// ---- Changes and operations ----

/// The change a planned row represents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The row's key is not in the snapshot: new to the destination.
    Added,
    /// The row differs from its snapshot entry (or a full resync re-sends it).
    Changed,
    /// The row's key is in the snapshot but gone from the model.
    Removed,
    /// Rows equal to the snapshot; planned only for quality checks, never sent.
    Unchanged,
}

impl Change {
    /// The change as counted, recorded and shown: `added`, `changed`, `removed`, `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Changed => "changed",
            Change::Removed => "removed",
            Change::Unchanged => "unchanged",
        }
    }
}

/// Adds `n` rows of `change` to the counts (unchanged rows are not counted).
pub fn bump(c: &mut OpCounts, change: Change, n: u64) {
    match change {
        Change::Added => c.added += n,
        Change::Changed => c.changed += n,
        Change::Removed => c.removed += n,
        Change::Unchanged => {}
    }
}

/// The destination operation a mode uses for a change, or `None` if the mode skips it.
pub fn operation_for(mode: SyncMode, change: Change) -> Option<Operation> {
    use Change::*;
    match (mode, change) {
        (SyncMode::Upsert, Added) | (SyncMode::Insert, Added) | (SyncMode::Mirror, Added) => {
            Some(Operation::Insert)
        }
        (SyncMode::Upsert, Changed) | (SyncMode::Mirror, Changed) => Some(Operation::Update),
        // `update` never creates: rows new to backflow are sent as updates of records the
        // destination is expected to have; it rejects those it does not.
        (SyncMode::Update, Added | Changed) => Some(Operation::Update),
        (SyncMode::Mirror, Removed) => Some(Operation::Delete),
        (SyncMode::Append, Added) => Some(Operation::Append),
        _ => None,
    }
}

/// The native destination used to measure the Wasm boundary's cost.
pub const BUILTIN_NOOP: &str = "builtin:noop";

// ---- What delivery records ----

/// A row fingerprint: xxh3-128 of the mapped row and the destination field names.
pub type Fingerprint = [u8; 16];

/// What the destination did with one row, as journaled and then applied to the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalOp {
    /// The destination has this row with these values (added or changed, acknowledged).
    Upsert {
        /// The row's encoded primary key, as the snapshot is keyed.
        key: Vec<u8>,
        /// The fingerprint of the values delivered.
        fp: Fingerprint,
        /// The encoded row delivered, the snapshot entry's new value.
        row: Vec<u8>,
    },
    /// The destination deleted this row.
    Delete {
        /// The deleted row's encoded primary key.
        key: Vec<u8>,
    },
    /// The destination refused this row; it stays pending and is retried by later runs.
    Reject {
        /// The refused row's encoded primary key.
        key: Vec<u8>,
        /// The row's change (`added`, `changed`, `removed`).
        change: String,
        /// The destination's answer.
        error: String,
        /// The run it was refused in (kept with the pending row).
        run_id: String,
    },
    /// The ops after this one were delivered by this run: their changelog entries (values
    /// sent, values before) are kept under its ID.
    Begin(ChangelogHeader),
}

/// What a run's changelog needs to be read back: the run, the mode it sent in and the
/// destination fields of its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangelogHeader {
    /// The run whose changelog this is.
    pub run_id: String,
    /// The sync's mode for this run (`mirror` for an undo).
    pub mode: String,
    /// The destination fields of the rows the run sent, in their encoded order.
    pub columns: Vec<backflow_plugin_sdk::Column>,
    /// The primary key's fields, to read keys back (`runs undo` takes them as text).
    pub key_columns: Vec<backflow_plugin_sdk::Column>,
    /// The run this one undid, if it was an undo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_of: Option<String>,
}

/// A snapshot entry: the row's fingerprint and the encoded row the destination has from us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The fingerprint of the row as delivered, compared with the model's to find changes.
    pub fp: Fingerprint,
    /// The encoded row as delivered: the values an undo puts back, a history's `before`.
    pub row: Vec<u8>,
}

impl Delivered {
    /// From the stored form: 16 bytes of fingerprint, then the row.
    pub fn from_stored(v: &[u8]) -> Option<Delivered> {
        Some(Delivered {
            fp: v.get(..16)?.try_into().ok()?,
            row: v[16..].to_vec(),
        })
    }
}

/// What one run did to one row, as its changelog keeps it. The values sent are kept as
/// their fingerprint only: they are what the snapshot held after the run, so they are the
/// `before` of the next run that touched the row, or the snapshot entry now (see
/// `rows history`). That keeps the changelog of an initial load to a few bytes per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowChange {
    /// The row was new to the destination (no snapshot entry before).
    Inserted {
        /// The fingerprint of the values sent.
        sent: Fingerprint,
    },
    /// The row replaced what the destination had from us.
    Updated {
        /// The snapshot entry the row replaced.
        before: Delivered,
        /// The fingerprint of the values sent.
        sent: Fingerprint,
    },
    /// The row was deleted; `before` is what the destination had.
    Deleted {
        /// The snapshot entry the delete removed.
        before: Delivered,
    },
}

impl RowChange {
    /// The change as a run's changelog shows it: `inserted`, `updated` or `deleted`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RowChange::Inserted { .. } => "inserted",
            RowChange::Updated { .. } => "updated",
            RowChange::Deleted { .. } => "deleted",
        }
    }

    /// The fingerprint of the snapshot entry this change left (`None` after a delete).
    pub fn sent(&self) -> Option<Fingerprint> {
        match self {
            RowChange::Inserted { sent } | RowChange::Updated { sent, .. } => Some(*sent),
            RowChange::Deleted { .. } => None,
        }
    }

    /// The snapshot entry before this change (`None` before an insert).
    pub fn before(&self) -> Option<&Delivered> {
        match self {
            RowChange::Updated { before, .. } | RowChange::Deleted { before } => Some(before),
            RowChange::Inserted { .. } => None,
        }
    }

    /// Stored form: a kind byte (1 inserted, 2 updated, 3 deleted), then the entry before
    /// (length-prefixed: fingerprint and row), then the 16-byte fingerprint sent.
    pub fn encode(&self) -> Vec<u8> {
        let kind = match self {
            RowChange::Inserted { .. } => 1u8,
            RowChange::Updated { .. } => 2,
            RowChange::Deleted { .. } => 3,
        };
        let mut out = vec![kind];
        if let Some(b) = self.before() {
            out.extend_from_slice(&((b.row.len() + 16) as u32).to_le_bytes());
            out.extend_from_slice(&b.fp);
            out.extend_from_slice(&b.row);
        }
        if let Some(fp) = self.sent() {
            out.extend_from_slice(&fp);
        }
        out
    }

    /// Reads back the stored form [`RowChange::encode`] writes; `None` if it is malformed.
    pub fn decode(v: &[u8]) -> Option<RowChange> {
        let (kind, rest) = v.split_first()?;
        let before = |rest: &[u8]| -> Option<(Delivered, usize)> {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            Some((Delivered::from_stored(rest.get(4..4 + len)?)?, 4 + len))
        };
        let fp = |rest: &[u8]| -> Option<Fingerprint> {
            (rest.len() == 16).then(|| rest.try_into().ok()).flatten()
        };
        match kind {
            1 => Some(RowChange::Inserted { sent: fp(rest)? }),
            2 => {
                let (before, used) = before(rest)?;
                Some(RowChange::Updated {
                    before,
                    sent: fp(&rest[used..])?,
                })
            }
            3 => {
                let (before, used) = before(rest)?;
                (used == rest.len()).then_some(RowChange::Deleted { before })
            }
            _ => None,
        }
    }
}

/// The current time as RFC 3339 (UTC), as records and the audit log write it.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
