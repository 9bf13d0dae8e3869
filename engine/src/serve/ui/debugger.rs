//! The delivery debugger in the UI: a run's kept requests, one request in full (with the
//! rows of its batch), and "Test one row" from a sync's page (contributors; its form is
//! `pages::test_row_form`), which shows the destination's answer and the requests it took.

use super::pages::{layout, path_segment, status};
use super::session::{posted, viewer, Csrf};
use super::viewer::Viewer;
use super::{Shared, UiError};
use crate::app::RunRequests;
use crate::domain::CapturedRequest;
use crate::serve::http::ApiState;
use crate::sync::TestReport;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Html;
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use std::sync::Arc;

/// The debugger's pages.
pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/ui/runs/{id}/requests", get(run_requests))
        .route("/ui/runs/{id}/requests/{number}", get(run_request))
        .route("/ui/syncs/{name}/test", post(test_row))
}

async fn run_requests(
    State(s): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let listed = s.app.run_requests(&v.actor, &id, false)?;
    Ok(Html(requests_page(&v, &listed)))
}

async fn run_request(
    State(s): Shared,
    headers: HeaderMap,
    Path((id, number)): Path<(String, String)>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let number: u64 = number.parse().map_err(|_| {
        UiError::Page(
            StatusCode::BAD_REQUEST,
            format!("request number {number:?} is not a number"),
        )
    })?;
    let request = s.app.run_request(&v.actor, &id, number)?;
    Ok(Html(layout(
        Some(&v),
        &format!("Request #{} of run {}", request.seq, request.run_id),
        html! {
            p { a href=(format!("/ui/runs/{}/requests", path_segment(&request.run_id))) { "← all requests of the run" } }
            (request_detail(&request))
        },
    )))
}

#[derive(Deserialize)]
struct TestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
}

impl Csrf for TestForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Sends one row of the sync (the given key, or the model's first) through the App, which
/// authorizes (`TestRow`: contributors) and audits it.
async fn test_row(
    State(s): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    f: Result<Form<TestForm>, FormRejection>,
) -> Result<Html<String>, UiError> {
    let (v, f) = posted(&s, &headers, f)?;
    let key = Some(f.key.trim()).filter(|k| !k.is_empty());
    let report = s.app.test_row(&v.actor, &name, key, false).await?;
    Ok(Html(test_page(&v, &report)))
}

fn test_page(v: &Viewer, r: &TestReport) -> String {
    layout(
        Some(v),
        &format!("Test row: {}", r.sync),
        html! {
            p { "Sent row " code #test-key { (r.key) } " as " (r.operation.to_string()) ": " span #test-outcome { (status(&r.outcome)) } }
            @if let Some(m) = &r.message { p.error { (m) } }
            pre.row { (r.row.to_string()) }
            p.note { "A test row is sent for real; it is not recorded in the sync's state, so the next run sends it again if it is part of its plan." }
            @for request in &r.requests { (request_detail(request)) }
            p { a href=(format!("/ui/syncs/{}", path_segment(&r.sync))) { "← back to the sync" } }
        },
    )
}

fn requests_page(v: &Viewer, listed: &RunRequests) -> String {
    layout(
        Some(v),
        &format!("Requests of run {}", listed.run_id),
        html! {
            p { "Sync " a href=(format!("/ui/syncs/{}", path_segment(&listed.sync))) { (listed.sync) } " · "
                a href=(format!("/ui/runs/{}", path_segment(&listed.run_id))) { "the run" } " · "
                (listed.kept) " request(s) kept, " (listed.dropped) " dropped." }
            @if listed.requests.is_empty() {
                p.note { "No request kept. [debug] capture decides which requests a run keeps (by default the failed ones and the first 5)." }
            } @else {
                table #requests {
                    tr { th { "#" } th { "Request" } th { "Answer" } th { "Time" } th { "Batch" } }
                    @for r in &listed.requests {
                        tr class=(if r.failed { "failed" } else { "" }) {
                            td { a href=(format!("/ui/runs/{}/requests/{}", path_segment(&r.run_id), r.seq)) { (r.seq) } }
                            td { code { (r.method) " " (r.url) } }
                            td { (answer(r)) }
                            td { (r.duration_ms) " ms" }
                            td { @if let Some(b) = &r.batch { (b.index) ": " (b.operation) ", " (b.rows) " row(s)" } }
                        }
                    }
                }
            }
        },
    )
}

fn answer(r: &CapturedRequest) -> Markup {
    html! {
        @match (&r.status, &r.error) {
            (Some(code), _) => { (status(if r.failed { "failed" } else { "succeeded" })) " " (code) }
            (None, Some(e)) => { (status("failed")) " " (e) }
            (None, None) => { "no answer" }
        }
    }
}

/// One request in full: request, answer, and the rows of its batch.
fn request_detail(r: &CapturedRequest) -> Markup {
    let headers = |list: &[(String, String)]| {
        html! { @for (name, value) in list { (name) ": " (value) "\n" } }
    };
    html! {
        div.card.request {
            p { strong { "#" (r.seq) } " " code.request-line { (r.method) " " (r.url) } " → " (answer(r)) ", " (r.duration_ms) " ms, by " (r.plugin) }
            h3 { "Request" }
            pre.request-headers { (headers(&r.request_headers)) }
            pre.request-body { (r.request_body) }
            p.note { (r.request_bytes) " bytes" }
            h3 { "Answer" }
            pre.response-headers { (headers(&r.response_headers)) }
            pre.response-body { (r.response_body) }
            p.note { (r.response_bytes) " bytes" }
            @if let Some(b) = &r.batch {
                h3 { "Batch " (b.index) ": " (b.operation) " of " (b.rows) " row(s)" }
                p.keys { @for k in &b.keys { code { (k) } " " } }
            }
        }
    }
}
