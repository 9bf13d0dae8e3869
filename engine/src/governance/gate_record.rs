//! What a run held for approval stores (its gate): exactly which plan was reviewed, the
//! approvals so far and where it stands. `run_gate.rs` holds and releases runs with it;
//! `held_runs.rs` folds, supersedes, rejects and cancels them.

use super::policies::{Requirement, Review};
use serde::{Deserialize, Serialize};

/// Where a held run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateStatus {
    /// Waiting for approvals.
    Waiting,
    /// Every requirement is met; the plan may run.
    Approved,
    /// The approved plan ran.
    Used,
    /// An approver rejected it (`backflow runs reject`).
    Rejected,
    /// Whoever started it, or an admin, withdrew it (`backflow runs cancel`).
    Cancelled,
    /// A newer plan of the same sync was held: this approval no longer applies.
    Superseded,
}

impl GateStatus {
    /// The status as stored and shown (`waiting`, `approved`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            GateStatus::Waiting => "waiting",
            GateStatus::Approved => "approved",
            GateStatus::Used => "used",
            GateStatus::Rejected => "rejected",
            GateStatus::Cancelled => "cancelled",
            GateStatus::Superseded => "superseded",
        }
    }
}

/// A run held for approval: exactly which plan was reviewed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunGate {
    /// The held run.
    pub run_id: String,
    /// Its sync.
    pub sync: String,
    /// Who started it.
    pub requested_by: String,
    /// When it was held (RFC 3339).
    pub requested_at: String,
    /// When the request expires (RFC 3339).
    pub expires_at: String,
    /// Fingerprint of every planned change (key, operation, row): what approval covers.
    pub plan_fingerprint: String,
    /// The sync's configuration the plan was made with; a release needs the same.
    pub config_hash: String,
    /// Whether the held run was a full resync (its approval re-plans the same way).
    #[serde(default)]
    pub full_resync: bool,
    /// The held run is a reconcile (its approval reconciles again, not an ordinary run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconcile: bool,
    /// The held run is an undo of this run (its approval undoes it the same way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<crate::sync::UndoTarget>,
    /// What the plan would send.
    pub planned: crate::state::OpCounts,
    /// A few rows per change, for the reviewer.
    pub samples: serde_json::Value,
    /// The approvals it needs.
    pub requirements: Vec<Requirement>,
    /// The approvals so far.
    pub approvals: Vec<Review>,
    /// Where it stands.
    pub status: GateStatus,
}
