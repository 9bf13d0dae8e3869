//! The HTTP API, JSON under `/api/v1`, plus `/healthz`, `/readyz` and `/metrics`.
//!
//! Every `/api/v1` request carries `Authorization: Bearer TOKEN` (`backflow token create`),
//! acts as the token's user and goes through the application layer, hence the same
//! authorization table and audit log as the CLI. Every error is JSON, `{"error": "..."}`,
//! with a 4xx status for anything the caller can fix (unknown sync, malformed JSON, oversized
//! body, bad parameter) and the parameter named.

use super::http::{
    bad_request, change_id, check_comment, json_body, query, trigger_run as trigger, ApiError,
    ApiState, UndoQuery, WriteLimiter,
};
use crate::app::{AppError, AuditFilter, RunApproval, RunFilter};
use crate::authz::Actor;
use crate::domain::RunStatus;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

mod drift;

type Shared = State<Arc<ApiState>>;

/// The user a request acts as, from its bearer token.
pub struct User(pub Actor);

impl FromRequestParts<Arc<ApiState>> for User {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let unauthenticated =
            |m: &str| ApiError(StatusCode::UNAUTHORIZED, m.to_string()).into_response();
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| unauthenticated("no API token: send `Authorization: Bearer TOKEN` (create one with `backflow token create`)"))?;
        let value = value
            .to_str()
            .map_err(|_| unauthenticated("the Authorization header is not text"))?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthenticated("the Authorization header must read `Bearer TOKEN`"))?;
        let actor = state.app.authenticate(token).map_err(|e| match e {
            AppError::Failed(m) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, m).into_response(),
            other => unauthenticated(&other.to_string()),
        })?;
        // Counted once the token is known valid: the limiter's table holds valid tokens only.
        if WriteLimiter::counts(&parts.method) {
            let key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
            state
                .write_limiter
                .check(&key)
                .map_err(IntoResponse::into_response)?;
        }
        Ok(User(actor))
    }
}

/// The API's routes, `/healthz` and `/metrics`.
pub fn router() -> Router<Arc<ApiState>> {
    api_routes().merge(probes_router())
}

/// The API's routes under `/api/v1`.
pub fn api_routes() -> Router<Arc<ApiState>> {
    let api = Router::new()
        .route("/whoami", get(whoami))
        .route("/syncs", get(list_syncs))
        .route("/syncs/{name}", get(show_sync))
        .route("/syncs/{name}/runs", post(trigger_run))
        .route("/runs", get(list_runs))
        .route("/runs/{id}", get(show_run))
        .route("/runs/{id}/approve", post(approve_run))
        .route("/runs/{id}/reject", post(reject_run))
        .route("/runs/{id}/cancel", post(cancel_run))
        .route("/runs/{id}/undo", get(plan_undo).post(undo_run))
        .route("/runs/{id}/requests", get(run_requests))
        .route("/runs/{id}/requests/{number}", get(run_request))
        .route("/syncs/{name}/rows/{key}", get(row_history))
        .route("/syncs/{name}/drift", get(drift::drift))
        .route("/changes", get(list_changes))
        .route("/changes/{id}", get(show_change))
        .route("/changes/{id}/approve", post(approve_change))
        .route("/changes/{id}/reject", post(reject_change))
        .route("/changes/{id}/publish", post(publish_change))
        .route("/audit", get(audit))
        .route("/audit/verify", get(verify_audit))
        .route("/plugins", get(list_plugins))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such API endpoint (see the README's API section)".into(),
            )
        });
    Router::new().nest("/api/v1", api)
}

/// `/healthz` and `/metrics`, which need no token: on the service's address, or on their own
/// with `--metrics-listen`.
pub fn probes_router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz(State(s): Shared) -> Json<Value> {
    let refused = s.app.plugins_refused();
    Json(
        json!({ "status": "ok", "runs_in_flight": s.scheduler.runs_in_flight(), "plugins_refused": refused }),
    )
}

/// Readiness, without a token: 200 when the state reads, the configuration runs use loads,
/// no plugin file is refused and every sync can start; else 503 with the reasons.
async fn readyz(State(s): Shared) -> Response {
    let reasons = s.app.readiness();
    if reasons.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        let body = json!({ "status": "not_ready", "reasons": reasons });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}

async fn whoami(User(actor): User) -> Json<Actor> {
    Json(actor)
}

/// A sync as the API shows it: its definition, last run, schedule and what is going on.
fn sync_json(s: &ApiState, summary: &crate::app::SyncSummary) -> Value {
    let (running, queued) = s.scheduler.status(&summary.name);
    let mut v = serde_json::to_value(summary).unwrap_or(Value::Null);
    v["running"] = json!(running);
    v["follow_up_queued"] = json!(queued);
    v
}

async fn list_syncs(State(s): Shared, User(actor): User) -> Result<Json<Value>, ApiError> {
    let syncs = s.app.list_syncs(&actor)?;
    Ok(Json(Value::Array(
        syncs.iter().map(|x| sync_json(&s, x)).collect(),
    )))
}

async fn show_sync(
    State(s): Shared,
    User(actor): User,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let syncs = s.app.list_syncs(&actor)?;
    let summary = syncs
        .iter()
        .find(|x| x.name == name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no sync named {name:?}")))?;
    Ok(Json(sync_json(&s, summary)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    full_resync: bool,
}

async fn trigger_run(
    State(s): Shared,
    User(actor): User,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: TriggerBody = json_body(body)?;
    let queued = trigger(&s, &actor, &name, body.full_resync, "api")?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "sync": name, "accepted": queued.accepted, "run_id": queued.run_id, "full_resync": body.full_resync, "user": actor.user }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    sync: Option<String>,
    status: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

async fn list_runs(
    State(s): Shared,
    User(actor): User,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let status = match &q.status {
        None => None,
        Some(text) => Some(serde_json::from_value::<RunStatus>(Value::String(text.clone())).map_err(|_| {
            bad_request(format!("status: unknown run status {text:?} (succeeded, partial, failed, running, interrupted, blocked, awaiting_approval, approved, rejected, superseded, cancelled)"))
        })?),
    };
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > crate::app::MAX_RUNS_PAGE {
        return Err(bad_request(format!(
            "limit: must be between 1 and {}",
            crate::app::MAX_RUNS_PAGE
        )));
    }
    let runs = s.app.runs_page(
        &actor,
        &RunFilter {
            sync: q.sync,
            status,
            before: q.before,
            limit,
        },
    )?;
    let next = if runs.len() == limit {
        runs.last().map(|r| r.run_id.clone())
    } else {
        None
    };
    Ok(Json(json!({ "runs": runs, "next_before": next })))
}

async fn show_run(
    State(s): Shared,
    User(actor): User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let progress = s.app.run_progress(&actor, &id)?;
    let (run, gate) = match (s.app.run_detail(&actor, &id), progress.as_ref()) {
        // Queued (or preparing): no record yet, only its live progress.
        (Err(AppError::NotFound(_)), Some(p)) => {
            return Ok(Json(
                json!({ "run_id": id, "status": "queued", "phase": p.phase, "progress": p }),
            ))
        }
        (detail, _) => detail?,
    };
    let mut v = serde_json::to_value(&run).unwrap_or(Value::Null);
    if run.run_id != id {
        v["folded_from"] = json!(id);
    }
    if let Some(gate) = gate {
        v["approval"] = serde_json::to_value(gate).unwrap_or(Value::Null);
    }
    if let Some(p) = progress.filter(|_| run.status == RunStatus::Running) {
        v["phase"] = json!(p.phase);
        v["progress"] = serde_json::to_value(p).unwrap_or(Value::Null);
    }
    Ok(Json(v))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    #[serde(default)]
    comment: Option<String>,
}

fn comment(body: Result<Bytes, BytesRejection>) -> Result<Option<String>, ApiError> {
    let body: CommentBody = json_body(body)?;
    if let Some(c) = &body.comment {
        check_comment(c)?;
    }
    Ok(body.comment)
}

async fn approve_run(
    State(s): Shared,
    User(actor): User,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let comment = comment(body)?;
    let approval = s
        .app
        .approve_run_queued(&actor, &id, comment.as_deref(), &s.scheduler)?;
    Ok(Json(match approval {
        RunApproval::NeedsMore(gate) => {
            json!({ "status": "needs_more_approvals", "approval": gate })
        }
        RunApproval::Queued(run_id) => json!({ "status": "released", "run_id": run_id }),
        RunApproval::Released(run) => {
            json!({ "status": "released", "run_id": run.run_id, "run": run })
        }
    }))
}

/// An approver refuses a held run (`{"comment": …}` optional); nothing is sent.
async fn reject_run(
    State(s): Shared,
    User(actor): User,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let comment = comment(body)?;
    let run = s.app.reject_run(&actor, &id, comment.as_deref())?;
    Ok(Json(serde_json::to_value(run).unwrap_or(Value::Null)))
}

/// Whoever started a held run, or an admin, withdraws it; nothing is sent.
async fn cancel_run(
    State(s): Shared,
    User(actor): User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = s.app.cancel_run(&actor, &id)?;
    Ok(Json(serde_json::to_value(run).unwrap_or(Value::Null)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UndoBody {
    /// Undo rows a later run changed too.
    #[serde(default)]
    force: bool,
}

/// The inverse plan of a run (counts, samples, conflicts); sends nothing.
async fn plan_undo(
    State(s): Shared,
    User(actor): User,
    Path(id): Path<String>,
    q: Result<Query<UndoQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    Ok(Json(
        serde_json::to_value(s.app.plan_undo(&actor, &id, q.force).await?).unwrap_or(Value::Null),
    ))
}

/// Runs the inverse of a run (approver): through checks, the approval gate and delivery.
async fn undo_run(
    State(s): Shared,
    User(actor): User,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: UndoBody = json_body(body)?;
    let queued = s
        .app
        .undo_run_queued(&actor, &id, body.force, "api", &s.scheduler)?;
    if queued.accepted == crate::app::Accepted::ShuttingDown {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is shutting down and starts no run".into(),
        ));
    }
    Ok(Json(
        json!({ "accepted": queued.accepted, "run_id": queued.run_id, "undo_of": id }),
    ))
}

/// Every retained run that touched one row (`key` as `sync plan` prints it: `42`, `42|eu`).
async fn row_history(
    State(s): Shared,
    User(actor): User,
    Path((name, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        serde_json::to_value(s.app.row_history(&actor, &name, &key, false)?).unwrap_or(Value::Null),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn list_changes(
    State(s): Shared,
    User(actor): User,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let limit = query(q)?.limit.unwrap_or(50).clamp(1, 1000);
    let changes = s.app.list_changes(&actor, limit)?;
    // The list leaves out file contents; `GET /changes/ID` has them.
    let list: Vec<Value> = changes
        .iter()
        .map(|c| json!({ "id": c.id, "author": c.author, "message": c.message, "created_at": c.created_at, "status": c.status, "config_hash": c.config_hash, "published_at": c.published_at }))
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn show_change(
    State(s): Shared,
    User(actor): User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        serde_json::to_value(s.app.change(&actor, change_id(&id)?)?).unwrap_or(Value::Null),
    ))
}

async fn approve_change(
    State(s): Shared,
    User(actor): User,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let comment = comment(body)?;
    Ok(Json(
        serde_json::to_value(s.app.review_change(
            &actor,
            change_id(&id)?,
            true,
            comment.as_deref(),
        )?)
        .unwrap_or(Value::Null),
    ))
}

async fn reject_change(
    State(s): Shared,
    User(actor): User,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let comment = comment(body)?;
    Ok(Json(
        serde_json::to_value(s.app.review_change(
            &actor,
            change_id(&id)?,
            false,
            comment.as_deref(),
        )?)
        .unwrap_or(Value::Null),
    ))
}

async fn publish_change(
    State(s): Shared,
    User(actor): User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        serde_json::to_value(s.app.publish_change(&actor, change_id(&id)?).await?)
            .unwrap_or(Value::Null),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Only entries after this sequence number.
    after: Option<u64>,
    /// Only entries before this sequence number: the previous page's `next_before`.
    before: Option<u64>,
    limit: Option<usize>,
    user: Option<String>,
    action: Option<String>,
}

/// A page of the audit log, newest first; `next_before` continues it. The hash chain is
/// checked by `GET /api/v1/audit/verify` (or `backflow audit --verify`), not per page.
async fn audit(
    State(s): Shared,
    User(actor): User,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let log = s.app.audit_filtered(
        &actor,
        &AuditFilter {
            after: q.after,
            before: q.before,
            user: q.user,
            action: q.action,
            action_prefix: false,
            limit,
        },
    )?;
    let next_before = (log.entries.len() >= limit)
        .then(|| log.entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(
        json!({ "entries": log.entries, "next_before": next_before }),
    ))
}

/// Checks the whole audit log's hash chain (from the anchor pruning left).
async fn verify_audit(State(s): Shared, User(actor): User) -> Result<Json<Value>, ApiError> {
    let log = s.app.audit(&actor)?;
    Ok(Json(json!({
        "chain_verified": log.broken_at.is_none(),
        "broken_at": log.broken_at,
        "entries": log.entries.len(),
        "anchor": log.anchor,
    })))
}

async fn list_plugins(State(s): Shared, User(actor): User) -> Result<Json<Value>, ApiError> {
    let plugins = s.app.plugin_statuses(&actor)?;
    Ok(Json(serde_json::to_value(plugins).unwrap_or(Value::Null)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RequestsQuery {
    #[serde(default)]
    failed: bool,
}

/// The delivery debugger: the requests a run kept (summaries; `?failed=true` for the failed).
async fn run_requests(
    State(s): Shared,
    User(actor): User,
    Path(id): Path<String>,
    params: Result<Query<RequestsQuery>, QueryRejection>,
) -> Result<Json<crate::app::RunRequests>, ApiError> {
    let params = query(params)?;
    Ok(Json(s.app.run_requests(&actor, &id, params.failed)?))
}

/// One kept request in full.
async fn run_request(
    State(s): Shared,
    User(actor): User,
    Path((id, number)): Path<(String, String)>,
) -> Result<Json<crate::domain::CapturedRequest>, ApiError> {
    let number: u64 = number.parse().map_err(|_| {
        bad_request(format!(
            "request number {number:?} is not a number (see GET /api/v1/runs/{id}/requests)"
        ))
    })?;
    Ok(Json(s.app.run_request(&actor, &id, number)?))
}
