//! Run records and their counts: what a run did, as history keeps it and `--json` prints it.

use serde::{Deserialize, Serialize};

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
    /// An approval policy, or an approver (`backflow runs reject RUN`), rejected the run;
    /// nothing was written.
    Rejected,
    /// A held run replaced by a newer plan of its sync (held in turn): its approval no longer
    /// applies; nothing was written.
    Superseded,
    /// A held run withdrawn by whoever started it or an admin (`backflow runs cancel RUN`);
    /// nothing was written.
    Cancelled,
    /// A held run whose approvals are complete: the run named in `error` delivers its plan.
    Approved,
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
            RunStatus::Superseded => "superseded",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Approved => "approved",
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
    /// Where a failed run stopped, when it is not the run's own stages: `prepare` for a run
    /// that could not start (its plugins, its configuration or the state could not be used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
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

/// What a failing check does to its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A failing (or erroring) check blocks the run: nothing is sent. The default.
    Fail,
    /// A failing check is recorded in the run's report and the run goes on.
    Warn,
}
