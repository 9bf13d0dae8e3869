//! The run-time gate: approval policies asked about a run's plan before anything is sent,
//! runs held for approval (exactly the reviewed plan), and approving them.

use super::diff::sync_impact;
use super::gate_record::{GateStatus, RunGate};
use super::identity::Identity;
use super::notify::notify;
use super::policies::{
    ask_policies, combine, describe_requirements, requirement_met, Requirement, Review,
    ReviewVerdict,
};
use crate::domain::now_rfc3339 as now;
use crate::domain::{Role, MAX_TTL_MINUTES};
use crate::state::{AuditEvent, GovernanceDoc, StateError, StateStore};
use crate::sync::gate::{ApprovalGate, GateDecision, GateRequest};
use crate::workspace::Workspace;
use backflow_plugin_sdk::{ApprovalRequest, RequestKind};
use futures::future::BoxFuture;

/// Why a held run cannot be approved.
#[derive(Debug, thiserror::Error)]
pub enum ApproveRunError {
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// No run with this id is held.
    #[error("run {0} is not waiting for approval")]
    NotWaiting(String),
    /// The run is approved (or ran) already.
    #[error("run {0} was already approved")]
    AlreadyApproved(String),
    /// The stored expiry does not parse.
    #[error("run {run_id}: stored expires_at {expires_at:?} is not a timestamp: {error}")]
    BadExpiry {
        /// The held run.
        run_id: String,
        /// The stored value.
        expires_at: String,
        /// Why it does not parse.
        error: time::error::Parse,
    },
    /// The request expired.
    #[error("the approval request for run {run_id} expired at {expires_at}: run the sync again to ask again")]
    Expired {
        /// The held run.
        run_id: String,
        /// When it expired.
        expires_at: String,
    },
    /// Whoever started the run approving it without a policy allowing it.
    #[error("{user} started run {run_id} and cannot approve it: no policy allows self-approval")]
    SelfApproval {
        /// Who started it.
        user: String,
        /// The held run.
        run_id: String,
    },
    /// A reviewer approving twice.
    #[error("{user} already approved run {run_id}")]
    AlreadyApprovedBy {
        /// The reviewer.
        user: String,
        /// The held run.
        run_id: String,
    },
}

/// The run-time gate of a workspace: its approval policies, the held runs in its state.
pub struct PolicyGate<'a> {
    /// Runs the policy plugins.
    pub host: &'a crate::plugins::Registry,
    /// The workspace whose policies decide.
    pub ws: &'a Workspace,
    /// Where held runs and audit entries go.
    pub state: &'a StateStore,
}

impl ApprovalGate for PolicyGate<'_> {
    fn is_active(&self) -> bool {
        !self.ws.governance.policies.is_empty()
    }

    fn decide<'a>(
        &'a self,
        request: GateRequest<'a>,
    ) -> BoxFuture<'a, Result<GateDecision, crate::sync::gate::GateError>> {
        Box::pin(async move {
            gate_run(self.host, self.ws, self.state, request)
                .await
                .map_err(|e| crate::sync::gate::GateError(e.to_string()))
        })
    }
}

/// Asks the policies about a run's plan, unless it is the run of a plan already approved
/// with `runs approve`.
async fn gate_run(
    host: &crate::plugins::Registry,
    ws: &Workspace,
    state: &StateStore,
    request: GateRequest<'_>,
) -> Result<GateDecision, StateError> {
    if let Some(approved) = request.approved_run {
        if release_approved(ws, state, &request, approved)? {
            return Ok(GateDecision::Proceed);
        }
    }
    // The plan of a run already held: a waiting one takes this trigger in (a schedule never
    // piles up held runs), an approved one is released by it.
    if let Some(held) = super::held_runs::same_plan(state, &request)? {
        if held.status == GateStatus::Waiting {
            return Ok(GateDecision::Folded(held.run_id));
        }
        if release_approved(ws, state, &request, &held.run_id)? {
            return Ok(GateDecision::Proceed);
        }
    }
    let approval_request = run_approval_request(ws, &request);
    let verdicts = ask_policies(
        host,
        &ws.root,
        &ws.governance,
        &ws.plugins_dir,
        &approval_request,
        // A run changes no plugin build and adds no built-in requirement.
        &backflow_plugin_sdk::ReviewContext::default(),
    )
    .await;
    let (rejected, requirements) = combine(&verdicts);
    if let Some(reason) = rejected {
        let event = AuditEvent {
            user: request.user.into(),
            action: "run.rejected".into(),
            target: format!("{} run {}", request.sync.name, request.run_id),
            config_hash: Some(request.config_hash.into()),
            detail: serde_json::json!({"planned": request.planned, "reason": reason}),
        };
        state.write_governance(vec![], vec![event])?;
        return Ok(GateDecision::Reject(reason));
    }
    if requirements.is_empty() {
        return Ok(GateDecision::Proceed);
    }
    let message = hold_run(ws, state, request, requirements)?;
    notify(host, &ws.governance, &format!("backflow: {message}")).await;
    Ok(GateDecision::Await(message))
}

/// Marks the approved run `approved` used if `request` is exactly its plan; `false` (and the
/// policies are asked again) if the data changed since.
fn release_approved(
    ws: &Workspace,
    state: &StateStore,
    request: &GateRequest<'_>,
    approved: &str,
) -> Result<bool, StateError> {
    let Some(mut gate) = state.run_gate::<RunGate>(approved)? else {
        return Ok(false);
    };
    let sync = request.sync;
    if gate.status == GateStatus::Approved
        && gate.sync == sync.name
        && gate.plan_fingerprint == request.plan_fingerprint
        && gate.config_hash == request.config_hash
        && gate.undo.as_ref() == request.undo
    {
        gate.status = GateStatus::Used;
        let event = AuditEvent {
            user: request.user.into(),
            action: "run.release".into(),
            target: format!("{} run {}", sync.name, request.run_id),
            config_hash: Some(request.config_hash.into()),
            detail: serde_json::json!({"approved_run": approved, "plan_fingerprint": request.plan_fingerprint}),
        };
        state.write_governance(
            vec![GovernanceDoc::RunGate(
                approved,
                serde_json::to_value(&gate).expect("serializes"),
            )],
            vec![event],
        )?;
        super::held_runs::set_record_status(
            state,
            approved,
            crate::domain::RunStatus::Approved,
            format!(
                "approved; run {} delivers its plan (nothing was sent by this run)",
                request.run_id
            ),
            ws.keep_runs,
        )?;
        return Ok(true);
    }
    tracing::warn!(sync = %sync.name, approved, "the data changed since the approved plan: asking the policies again");
    Ok(false)
}

/// What the policies are told about a run.
fn run_approval_request(ws: &Workspace, request: &GateRequest<'_>) -> ApprovalRequest {
    let (sync, planned) = (request.sync, request.planned);
    let role = ws
        .governance
        .users
        .get(request.user)
        .copied()
        .unwrap_or(Role::Contributor);
    ApprovalRequest {
        kind: RequestKind::Run,
        author: request.user.into(),
        author_role: role,
        // Contract 0.1.0 has no field for it, so an undo says so in the description's first words.
        description: match request.undo {
            None => format!(
                "run of sync {} ({} added, {} changed, {} removed)",
                sync.name, planned.added, planned.changed, planned.removed
            ),
            Some(u) => format!(
                "undo of run {} of sync {} ({} added, {} changed, {} removed)",
                u.run_id, sync.name, planned.added, planned.changed, planned.removed
            ),
        },
        syncs: vec![sync_impact(ws, sync, planned)],
    }
}

/// Stores the run as held until `requirements` are met; returns what to tell people.
fn hold_run(
    ws: &Workspace,
    state: &StateStore,
    request: GateRequest<'_>,
    requirements: Vec<Requirement>,
) -> Result<String, StateError> {
    super::held_runs::supersede_older(state, ws.keep_runs, &request)?;
    let GateRequest {
        run_id,
        sync,
        planned,
        plan_fingerprint,
        samples,
        config_hash,
        full_resync,
        user,
        undo,
        reconcile,
        ..
    } = request;
    let requested = time::OffsetDateTime::now_utc();
    let expires = requested
        + time::Duration::minutes(ws.governance.run_request_ttl_minutes.min(MAX_TTL_MINUTES) as i64);
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let needs = describe_requirements(&requirements);
    let event = AuditEvent {
        user: user.into(),
        action: "run.awaiting_approval".into(),
        target: format!("{} run {run_id}", sync.name),
        config_hash: Some(config_hash.into()),
        detail: serde_json::json!({"planned": planned, "plan_fingerprint": plan_fingerprint, "requirements": requirements}),
    };
    let gate = RunGate {
        run_id: run_id.into(),
        sync: sync.name.clone(),
        requested_by: user.into(),
        requested_at: fmt(requested),
        expires_at: fmt(expires),
        plan_fingerprint: plan_fingerprint.into(),
        config_hash: config_hash.into(),
        full_resync,
        reconcile,
        undo: undo.cloned(),
        planned,
        samples,
        requirements,
        approvals: Vec::new(),
        status: GateStatus::Waiting,
    };
    state.write_governance(
        vec![GovernanceDoc::RunGate(
            run_id,
            serde_json::to_value(&gate).expect("serializes"),
        )],
        vec![event],
    )?;
    Ok(format!("run {run_id} of {} waits for approval: {needs}; approve with `backflow runs approve {run_id}`", sync.name))
}

/// `backflow runs approve RUN`: records an approval of a held run's plan. Returns the gate;
/// when it is approved the caller runs the sync again with this run as the approved plan.
/// The caller has authorized `who` to approve runs.
pub(crate) fn approve_run(
    state: &StateStore,
    who: &Identity,
    run_id: &str,
    comment: Option<&str>,
) -> Result<RunGate, ApproveRunError> {
    let mut gate = state
        .run_gate::<RunGate>(run_id)?
        .ok_or_else(|| ApproveRunError::NotWaiting(run_id.to_string()))?;
    if gate.status != GateStatus::Waiting {
        return Err(ApproveRunError::AlreadyApproved(run_id.to_string()));
    }
    let expires = time::OffsetDateTime::parse(
        &gate.expires_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|error| ApproveRunError::BadExpiry {
        run_id: run_id.to_string(),
        expires_at: gate.expires_at.clone(),
        error,
    })?;
    if time::OffsetDateTime::now_utc() > expires {
        return Err(ApproveRunError::Expired {
            run_id: run_id.to_string(),
            expires_at: gate.expires_at.clone(),
        });
    }
    let unmet: Vec<&Requirement> = gate
        .requirements
        .iter()
        .filter(|r| !requirement_met(r, &gate.requested_by, &gate.approvals))
        .collect();
    if gate.requested_by == who.user && !unmet.iter().all(|r| r.allow_self_approval) {
        return Err(ApproveRunError::SelfApproval {
            user: who.user.clone(),
            run_id: run_id.to_string(),
        });
    }
    if gate.approvals.iter().any(|a| a.user == who.user) {
        return Err(ApproveRunError::AlreadyApprovedBy {
            user: who.user.clone(),
            run_id: run_id.to_string(),
        });
    }
    gate.approvals.push(Review {
        user: who.user.clone(),
        role: who.role,
        verdict: ReviewVerdict::Approve,
        comment: comment.map(str::to_string),
        at: now(),
    });
    if gate
        .requirements
        .iter()
        .all(|r| requirement_met(r, &gate.requested_by, &gate.approvals))
    {
        gate.status = GateStatus::Approved;
    }
    let event = AuditEvent {
        user: who.user.clone(),
        action: "run.approve".into(),
        target: format!("{} run {run_id}", gate.sync),
        config_hash: Some(gate.config_hash.clone()),
        detail: serde_json::json!({"comment": comment, "plan_fingerprint": gate.plan_fingerprint, "approved": gate.status == GateStatus::Approved}),
    };
    state.write_governance(
        vec![GovernanceDoc::RunGate(
            run_id,
            serde_json::to_value(&gate).expect("serializes"),
        )],
        vec![event],
    )?;
    Ok(gate)
}
