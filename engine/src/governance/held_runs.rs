//! Held runs over their life, so that they do not pile up: a plan identical to one already
//! held is folded into it, a newer plan of the same sync supersedes an older held run (its
//! approval no longer applies), and a held run can be rejected (an approver) or cancelled
//! (whoever started it, or an admin). The run record follows its gate's status.

use super::gate_record::{GateStatus, RunGate};
use super::identity::Identity;
use crate::domain::{now_rfc3339 as now, RunStatus};
use crate::state::{AuditEvent, GovernanceDoc, StateError, StateStore};
use crate::sync::gate::GateRequest;

/// How many held runs of one sync are looked at (per status) when a new plan is held.
const OPEN_GATES_SCANNED: usize = 100;

/// Why a held run cannot be rejected or cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CloseRunError {
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// No run with this id was ever held.
    #[error("run {0} was not held for approval: there is nothing to reject or cancel")]
    NotHeld(String),
    /// The held run was decided already.
    #[error("run {run_id} is {status} already: only a run waiting for approval (or approved and not yet released) can be rejected or cancelled")]
    Closed {
        /// The held run.
        run_id: String,
        /// Its gate's status.
        status: &'static str,
    },
}

/// Whether a gate still holds its run (waiting, or approved and not yet released).
fn is_open(gate: &RunGate) -> bool {
    matches!(gate.status, GateStatus::Waiting | GateStatus::Approved)
}

/// Whether a held run's request has expired (a stored expiry that does not parse counts as
/// expired: it cannot be approved either).
fn expired(gate: &RunGate) -> bool {
    time::OffsetDateTime::parse(
        &gate.expires_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map_or(true, |at| time::OffsetDateTime::now_utc() > at)
}

/// The gates of `sync`'s runs still held, newest first.
fn open_gates(state: &StateStore, sync: &str) -> Result<Vec<RunGate>, StateError> {
    let mut gates = Vec::new();
    for status in [RunStatus::AwaitingApproval, RunStatus::Approved] {
        for run in state.runs_page(Some(sync), Some(status), None, OPEN_GATES_SCANNED)? {
            if let Some(gate) = state.run_gate::<RunGate>(&run.run_id)? {
                if is_open(&gate) && gate.sync == sync {
                    gates.push(gate);
                }
            }
        }
    }
    gates.sort_by(|a, b| b.run_id.cmp(&a.run_id));
    Ok(gates)
}

/// A held run (not expired) whose plan is exactly the one `request` asks about: same
/// changes, same configuration, same kind of run.
pub(crate) fn same_plan(
    state: &StateStore,
    request: &GateRequest<'_>,
) -> Result<Option<RunGate>, StateError> {
    Ok(open_gates(state, &request.sync.name)?
        .into_iter()
        .find(|g| {
            g.run_id != request.run_id
                && g.plan_fingerprint == request.plan_fingerprint
                && g.config_hash == request.config_hash
                && g.full_resync == request.full_resync
                && g.reconcile == request.reconcile
                && g.undo.as_ref() == request.undo
                && !expired(g)
        }))
}

/// Supersedes every other held run of `sync` of the same kind (runs, or undos of the same
/// run) now that `newer` holds a newer plan: their approvals no longer apply.
pub(crate) fn supersede_older(
    state: &StateStore,
    keep_runs: u64,
    newer: &GateRequest<'_>,
) -> Result<(), StateError> {
    let sync = &newer.sync.name;
    for mut gate in open_gates(state, sync)? {
        if gate.run_id == newer.run_id || gate.undo.as_ref() != newer.undo {
            continue;
        }
        gate.status = GateStatus::Superseded;
        let event = AuditEvent {
            user: newer.user.into(),
            action: "run.superseded".into(),
            target: format!("{sync} run {}", gate.run_id),
            config_hash: Some(newer.config_hash.into()),
            detail: serde_json::json!({"by_run": newer.run_id, "plan_fingerprint": newer.plan_fingerprint}),
        };
        state.write_governance(
            vec![GovernanceDoc::RunGate(
                &gate.run_id,
                serde_json::to_value(&gate).expect("serializes"),
            )],
            vec![event],
        )?;
        set_record_status(
            state,
            &gate.run_id,
            RunStatus::Superseded,
            format!("superseded by run {}: a newer plan of {sync} is held for approval, and this run's approval no longer applies; nothing was sent", newer.run_id),
            keep_runs,
        )?;
        tracing::info!(sync = %sync, run_id = gate.run_id, by = newer.run_id, "held run superseded by a newer plan");
    }
    Ok(())
}

/// Sets a held run's record to `status` with `message` as its `error` (a record gone from
/// history is left gone).
pub(crate) fn set_record_status(
    state: &StateStore,
    run_id: &str,
    status: RunStatus,
    message: String,
    keep_runs: u64,
) -> Result<(), StateError> {
    if let Some(mut record) = state.run(run_id)? {
        record.status = status;
        record.error = Some(message);
        state.record_run(&record, keep_runs)?;
    }
    Ok(())
}

/// How a held run is closed without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// An approver rejects it.
    Reject,
    /// Whoever started it, or an admin, withdraws it.
    Cancel,
}

/// `backflow runs reject RUN` / `runs cancel RUN`: closes a held run's gate (audited with
/// `who` and the comment) and its record. The caller has authorized `who`.
pub(crate) fn close_held_run(
    state: &StateStore,
    who: &Identity,
    run_id: &str,
    closing: Closing,
    comment: Option<&str>,
    keep_runs: u64,
) -> Result<RunGate, CloseRunError> {
    let mut gate = state
        .run_gate::<RunGate>(run_id)?
        .ok_or_else(|| CloseRunError::NotHeld(run_id.to_string()))?;
    if !is_open(&gate) {
        return Err(CloseRunError::Closed {
            run_id: run_id.to_string(),
            status: gate.status.as_str(),
        });
    }
    let (gate_status, run_status, action, verb) = match closing {
        Closing::Reject => (
            GateStatus::Rejected,
            RunStatus::Rejected,
            "run.reject",
            "rejected",
        ),
        Closing::Cancel => (
            GateStatus::Cancelled,
            RunStatus::Cancelled,
            "run.cancel",
            "cancelled",
        ),
    };
    gate.status = gate_status;
    let event = AuditEvent {
        user: who.user.clone(),
        action: action.into(),
        target: format!("{} run {run_id}", gate.sync),
        config_hash: Some(gate.config_hash.clone()),
        detail: serde_json::json!({"comment": comment, "plan_fingerprint": gate.plan_fingerprint, "at": now()}),
    };
    state.write_governance(
        vec![GovernanceDoc::RunGate(
            run_id,
            serde_json::to_value(&gate).expect("serializes"),
        )],
        vec![event],
    )?;
    let message = match comment {
        Some(c) => format!("{verb} by {}: {c}; nothing was sent", who.user),
        None => format!("{verb} by {}; nothing was sent", who.user),
    };
    set_record_status(state, run_id, run_status, message, keep_runs)?;
    Ok(gate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn held(state: &StateStore, id: &str, requested_by: &str) {
        let gate = serde_json::json!({
            "run_id": id, "sync": "crm", "requested_by": requested_by,
            "requested_at": "2030-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z",
            "plan_fingerprint": "fp", "config_hash": "h", "planned": {"added": 3, "changed": 0, "removed": 0},
            "samples": {}, "requirements": [], "approvals": [], "status": "waiting"
        });
        state
            .write_governance(vec![GovernanceDoc::RunGate(id, gate)], vec![])
            .unwrap();
        let record = serde_json::json!({
            "run_id": id, "sync": "crm", "trigger": "schedule", "user": requested_by, "started_at": "", "finished_at": "", "duration_ms": 0,
            "status": "awaiting_approval", "planned": {"added": 3, "changed": 0, "removed": 0}, "delivered": {"added": 0, "changed": 0, "removed": 0},
            "failed": {"added": 0, "changed": 0, "removed": 0}, "plugins": {"source": "", "destination": ""}, "config_hash": "h", "error": "held", "rejected": []
        });
        state
            .record_run(&serde_json::from_value(record).unwrap(), 10)
            .unwrap();
    }

    #[test]
    fn a_held_run_is_rejected_or_cancelled_once_and_its_record_follows() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        held(&state, "01A", "backflow-serve");
        held(&state, "01B", "carol");
        let bob = Identity {
            user: "bob".into(),
            role: Role::Approver,
        };
        let gate = close_held_run(&state, &bob, "01A", Closing::Reject, Some("no"), 10).unwrap();
        assert_eq!(gate.status, GateStatus::Rejected);
        let record = state.run("01A").unwrap().unwrap();
        assert_eq!(record.status, RunStatus::Rejected);
        assert_eq!(
            record.error.as_deref(),
            Some("rejected by bob: no; nothing was sent")
        );
        let again = close_held_run(&state, &bob, "01A", Closing::Cancel, None, 10).unwrap_err();
        assert!(again.to_string().contains("is rejected already"), "{again}");
        let missing = close_held_run(&state, &bob, "01Z", Closing::Cancel, None, 10).unwrap_err();
        assert!(matches!(missing, CloseRunError::NotHeld(_)), "{missing}");

        close_held_run(&state, &bob, "01B", Closing::Cancel, None, 10).unwrap();
        assert_eq!(
            state.run("01B").unwrap().unwrap().status,
            RunStatus::Cancelled
        );
        assert!(open_gates(&state, "crm").unwrap().is_empty());
        let audit = state.audit_log().unwrap();
        assert!(audit
            .iter()
            .any(|e| e.event.action == "run.reject" && e.event.user == "bob"));
        assert!(audit
            .iter()
            .any(|e| e.event.action == "run.cancel" && e.event.user == "bob"));
    }
}
