//! The quality-check side of the contract as plain Rust types: what a check is told about a
//! plan, which planned rows a batch holds, and its verdict. The engine and plugins both use
//! these; each side converts to and from the generated WIT types in one place.

use crate::value::Column;

/// Why a plan exists (contract 0.3.0). Checks that judge the model as a whole let an undo
/// pass: an undo reads no model.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PlanPurpose {
    /// A run of the sync: the model diffed against what was delivered.
    #[default]
    Run,
    /// The inverse of an earlier run, read from its changelog.
    Undo,
    /// Re-sending what a drift report found missing or changed.
    Reconcile,
}

impl PlanPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanPurpose::Run => "run",
            PlanPurpose::Undo => "undo",
            PlanPurpose::Reconcile => "reconcile",
        }
    }
}

/// What a check is told about the run before it sees rows.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanSummary {
    pub sync_name: String,
    /// Why the plan exists (0.1.0 and 0.2.0 checks are not told).
    pub purpose: PlanPurpose,
    pub columns: Vec<Column>,
    pub snapshot_rows: u64,
    /// Rows in the model now; `None` when the plan did not read the whole model (an undo).
    pub model_rows: Option<u64>,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
}

/// Which planned rows a batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Rows the run would send as new.
    Added,
    /// Rows the run would send as changed (`before` holds the last delivered values).
    Changed,
    /// Rows the run would delete: only their primary key fields.
    Removed,
    /// Model rows identical to what was delivered: not sent, shown for whole-model checks.
    Unchanged,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Changed => "changed",
            ChangeKind::Removed => "removed",
            ChangeKind::Unchanged => "unchanged",
        }
    }
}

/// A check's judgement of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a check returns when it has seen every planned row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub verdict: Verdict,
    pub message: String,
    /// Offending rows as JSON objects, a few at most.
    pub samples: Vec<String>,
}
