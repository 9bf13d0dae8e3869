//! The UI's change requests and audit log.

use super::runs::{comment_of, CommentForm};
use super::session::{posted, viewer, CsrfForm};
use super::{pages, query, Shared, UiError};
use crate::app::AuditFilter;
use crate::serve::http::change_id;
use crate::serve::http::ApiState;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::sync::Arc;

/// Audit entries shown at most.
const AUDIT_PAGE: usize = 500;

/// Change requests and the audit log.
pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/ui/changes", get(changes))
        .route("/ui/changes/{id}", get(change_detail))
        .route("/ui/changes/{id}/review", post(review_change))
        .route("/ui/changes/{id}/publish", post(publish_change))
        .route("/ui/audit", get(audit))
}

async fn changes(State(s): Shared, headers: HeaderMap) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let list = s.app.list_changes(&v.actor, 200)?;
    Ok(Html(pages::changes(&v, &list)))
}

async fn change_detail(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let change = s.app.change(&v.actor, change_id(&id)?)?;
    Ok(Html(pages::change_detail(&v, &change)))
}

async fn review_change(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<CommentForm>, FormRejection>,
) -> Result<Response, UiError> {
    let (v, f) = posted(&s, &headers, f)?;
    let approve = match f.verdict.as_str() {
        "approve" => true,
        "reject" => false,
        other => {
            return Err(UiError::Page(
                StatusCode::BAD_REQUEST,
                format!("verdict: {other:?} is neither approve nor reject"),
            ))
        }
    };
    let id = change_id(&id)?;
    s.app
        .review_change(&v.actor, id, approve, comment_of(&f)?)?;
    Ok(Redirect::to(&format!("/ui/changes/{id}")).into_response())
}

async fn publish_change(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, UiError> {
    let (v, _) = posted(&s, &headers, f)?;
    let id = change_id(&id)?;
    s.app.publish_change(&v.actor, id).await?;
    Ok(Redirect::to(&format!("/ui/changes/{id}")).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    user: String,
    #[serde(default)]
    action: String,
    /// Only entries before this sequence number (the page after the previous one).
    before: Option<u64>,
    /// Non-empty: check the whole log's hash chain (done only when asked).
    #[serde(default)]
    verify: String,
}

async fn audit(
    State(s): Shared,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let q = query(q)?;
    let log = s.app.audit_filtered(
        &v.actor,
        &AuditFilter {
            after: None,
            before: q.before,
            user: Some(q.user.clone()).filter(|u| !u.is_empty()),
            action: Some(q.action.clone()).filter(|a| !a.is_empty()),
            action_prefix: true,
            limit: AUDIT_PAGE,
        },
    )?;
    let chain = if q.verify.is_empty() {
        None
    } else {
        Some(s.app.audit(&v.actor)?.broken_at)
    };
    let next_before = (log.entries.len() >= AUDIT_PAGE)
        .then(|| log.entries.last().map(|e| e.seq))
        .flatten();
    Ok(Html(pages::audit(
        &v,
        &log.entries,
        pages::AuditView {
            chain,
            next_before,
            user: &q.user,
            action: &q.action,
        },
    )))
}
