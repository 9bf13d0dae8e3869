//! Stage 5: the approval gate, as the sync path sees it. Governance implements
//! [`ApprovalGate`] (approval-policy plugins, held runs, approvals); the sync path only asks
//! it about a plan and obeys, so neither module imports the other's internals.

use crate::domain::OpCounts;
use crate::sync::plan::undo::UndoTarget;
use crate::workspace::SyncConfig;
use futures::future::BoxFuture;

/// What the gate is asked about: a run's complete plan, before anything is sent.
pub struct GateRequest<'a> {
    /// The id of the run asking; a held run is stored (and later approved) under it.
    pub run_id: &'a str,
    /// The sync being run, as configured.
    pub sync: &'a SyncConfig,
    /// What the plan would send, per change, in the sync's mode.
    pub planned: OpCounts,
    /// xxh3-128 over every planned change: what an approval covers.
    pub plan_fingerprint: &'a str,
    /// A few rows per change, for the reviewer.
    pub samples: serde_json::Value,
    /// SHA-256 of the sync's configuration the plan was made with; releasing an approved
    /// run needs the same.
    pub config_hash: &'a str,
    /// Whether the run is a full resync (an approved held run re-plans the same way).
    pub full_resync: bool,
    /// Who started the run: the author the policies judge, and the user in the audit log.
    pub user: &'a str,
    /// A run held before and since approved: if this plan is exactly that one, it may go.
    pub approved_run: Option<&'a str>,
    /// The run this one undoes, for an undo (`runs undo`).
    pub undo: Option<&'a UndoTarget>,
    /// A reconcile (`sync reconcile`): its approval releases a reconcile again.
    pub reconcile: bool,
}

/// The gate could not decide (a policy plugin or the state failed): the run fails with this
/// message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GateError(pub String);

/// What the gate lets a run do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateDecision {
    /// Deliver the plan now: no policy asks for anything, or this is the approved plan.
    Proceed,
    /// Held: the request was stored; the message says what is needed.
    Await(String),
    /// A policy refused the run; nothing is sent. The message is the policy's reason.
    Reject(String),
    /// The plan is exactly that of this run, already held for approval: the run is folded
    /// into it (not kept) and nothing is sent.
    Folded(String),
}

/// Decides whether a planned run may deliver.
pub trait ApprovalGate: Send + std::marker::Sync {
    /// Whether the gate has anything to ask (approval policies are configured). A run with an
    /// inactive gate does not build the request at all.
    fn is_active(&self) -> bool;

    /// Asks about a plan. An `Err` fails the run (the gate could not decide).
    fn decide<'a>(
        &'a self,
        request: GateRequest<'a>,
    ) -> BoxFuture<'a, Result<GateDecision, GateError>>;
}
