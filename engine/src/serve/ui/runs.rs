//! The UI's syncs and runs: the sync list, a sync's history, running one, a run's detail,
//! approving, rejecting, cancelling and undoing runs (approvals and undos go on the sync's
//! queue), a row's history and the approvals page.

use super::session::{posted, viewer, Csrf};
use super::{pages, query, Shared, UiError};
use crate::app::RunFilter;
use crate::serve::http::ApiState;
use crate::serve::http::{check_comment, trigger_run, UndoQuery};
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::sync::Arc;

/// Runs per page of a sync's history.
const PAGE: usize = 50;

/// Syncs, runs, approvals and row histories.
pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/ui", get(syncs))
        .route("/ui/", get(syncs))
        .route("/ui/syncs/{name}", get(sync_history))
        .route("/ui/syncs/{name}/confirm", get(confirm_run))
        .route("/ui/syncs/{name}/runs", post(run_sync))
        .route("/ui/runs/{id}", get(run_detail))
        .route("/ui/runs/{id}/approve", post(approve_run))
        .route("/ui/runs/{id}/reject", post(reject_run))
        .route("/ui/runs/{id}/cancel", post(cancel_run))
        .route("/ui/runs/{id}/undo", get(confirm_undo).post(undo_run))
        .route("/ui/syncs/{name}/rows", get(row_history))
        .route("/ui/approvals", get(approvals))
}

async fn syncs(State(s): Shared, headers: HeaderMap) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let syncs = s.app.list_syncs(&v.actor)?;
    let mut rows = Vec::new();
    for sync in syncs {
        // Oldest first, for the sparkline.
        let mut delivered: Vec<u64> = s
            .app
            .runs(&v.actor, Some(&sync.name), 20)?
            .iter()
            .map(|r| r.delivered.total())
            .collect();
        delivered.reverse();
        rows.push((sync, delivered));
    }
    Ok(Html(pages::syncs(&v, &rows)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    before: Option<String>,
}

async fn sync_history(
    State(s): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let q = query(q)?;
    let summary = s
        .app
        .list_syncs(&v.actor)?
        .into_iter()
        .find(|x| x.name == name)
        .ok_or_else(|| UiError::Page(StatusCode::NOT_FOUND, format!("no sync named {name:?}")))?;
    let runs = s.app.runs_page(
        &v.actor,
        &RunFilter {
            sync: Some(name.clone()),
            status: None,
            before: q.before,
            limit: PAGE,
        },
    )?;
    let next = (runs.len() == PAGE)
        .then(|| runs.last().map(|r| r.run_id.clone()))
        .flatten();
    let (running, queued) = s.scheduler.status(&name);
    Ok(Html(pages::sync_history(
        &v,
        &summary,
        &runs,
        next.as_deref(),
        running,
        queued,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmQuery {
    #[serde(default)]
    full_resync: bool,
}

async fn confirm_run(
    State(s): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: Result<Query<ConfirmQuery>, QueryRejection>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let q = query(q)?;
    let plan = s.app.confirm_run(&v.actor, &name, q.full_resync, 3).await?;
    Ok(Html(pages::confirm_run(&v, &name, q.full_resync, &plan)))
}

#[derive(Deserialize)]
struct RunForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    full_resync: Option<String>,
}

impl Csrf for RunForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn run_sync(
    State(s): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    f: Result<Form<RunForm>, FormRejection>,
) -> Result<Response, UiError> {
    let (v, f) = posted(&s, &headers, f)?;
    let full_resync = f.full_resync.as_deref() == Some("true");
    trigger_run(
        &s,
        &v.actor,
        &name,
        full_resync,
        if full_resync {
            "ui: full resync"
        } else {
            "ui: run now"
        },
    )?;
    Ok(Redirect::to(&format!("/ui/syncs/{}", pages::path_segment(&name))).into_response())
}

async fn run_detail(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let (run, gate) = s.app.run_detail(&v.actor, &id)?;
    Ok(Html(pages::run_detail(&v, &run, gate.as_ref())))
}

#[derive(Deserialize)]
pub(super) struct CommentForm {
    #[serde(default)]
    pub(super) csrf: String,
    #[serde(default)]
    pub(super) comment: String,
    #[serde(default)]
    pub(super) verdict: String,
}

impl Csrf for CommentForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

pub(super) fn comment_of(f: &CommentForm) -> Result<Option<&str>, UiError> {
    check_comment(&f.comment)?;
    Ok(Some(f.comment.trim()).filter(|c| !c.is_empty()))
}

async fn approve_run(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<CommentForm>, FormRejection>,
) -> Result<Response, UiError> {
    let (v, f) = posted(&s, &headers, f)?;
    let comment = comment_of(&f)?.map(str::to_string);
    // The release goes on the sync's queue; the held run's page names the run delivering it.
    s.app
        .approve_run_queued(&v.actor, &id, comment.as_deref(), &s.scheduler)?;
    Ok(Redirect::to(&format!("/ui/runs/{}", pages::path_segment(&id))).into_response())
}

async fn reject_run(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<CommentForm>, FormRejection>,
) -> Result<Response, UiError> {
    let (v, f) = posted(&s, &headers, f)?;
    let comment = comment_of(&f)?;
    s.app.reject_run(&v.actor, &id, comment)?;
    Ok(Redirect::to(&format!("/ui/runs/{}", pages::path_segment(&id))).into_response())
}

async fn cancel_run(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<CommentForm>, FormRejection>,
) -> Result<Response, UiError> {
    let (v, _) = posted(&s, &headers, f)?;
    s.app.cancel_run(&v.actor, &id)?;
    Ok(Redirect::to(&format!("/ui/runs/{}", pages::path_segment(&id))).into_response())
}

/// The confirmation of an undo: the inverse plan's counts, samples and conflicts.
async fn confirm_undo(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<UndoQuery>, QueryRejection>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let q = query(q)?;
    let report = s.app.confirm_undo(&v.actor, &id, q.force).await?;
    Ok(Html(pages::confirm_undo(&v, &report)))
}

#[derive(Deserialize)]
struct UndoForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    force: Option<String>,
}

impl Csrf for UndoForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn undo_run(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    f: Result<Form<UndoForm>, FormRejection>,
) -> Result<Response, UiError> {
    let (v, f) = posted(&s, &headers, f)?;
    let force = f.force.as_deref() == Some("true");
    let run = s.app.run_record(&v.actor, &id)?;
    let queued = s
        .app
        .undo_run_queued(&v.actor, &id, force, "ui", &s.scheduler)?;
    if queued.accepted == crate::app::Accepted::ShuttingDown {
        return Err(UiError::Page(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is shutting down and starts no run".into(),
        ));
    }
    // The undo is queued: the sync's history shows it running, then its result.
    Ok(Redirect::to(&format!("/ui/syncs/{}", pages::path_segment(&run.sync))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RowQuery {
    #[serde(default)]
    key: String,
}

async fn row_history(
    State(s): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: Result<Query<RowQuery>, QueryRejection>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let q = query(q)?;
    let history = if q.key.trim().is_empty() {
        None
    } else {
        Some(s.app.row_history(&v.actor, &name, q.key.trim(), false)?)
    };
    Ok(Html(pages::row_history(
        &v,
        &name,
        &q.key,
        history.as_ref(),
    )))
}

async fn approvals(State(s): Shared, headers: HeaderMap) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let waiting = s.app.held_runs(&v.actor)?;
    Ok(Html(pages::approvals(&v, &waiting)))
}
