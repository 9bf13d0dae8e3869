//! The quality-check side of the contract as plain Rust types: what a check is told about a
//! plan, which planned rows a batch holds, and its verdict. The engine and plugins both use
//! these; each side converts to and from the generated WIT types in one place.

use crate::value::Column;

/// What a check is told about the run before it sees rows.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanSummary {
    pub sync_name: String,
    pub columns: Vec<Column>,
    pub snapshot_rows: u64,
    pub model_rows: u64,
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
