//! The web UI under `/ui`: server-rendered HTML (no JavaScript, no build step, no external
//! requests) over the same application layer as the API.
//!
//! Sign-in exchanges an API token for a session cookie (`HttpOnly`, `SameSite=Strict`,
//! eight hours). Every form that changes state carries the session's CSRF token, checked
//! before anything else; then the action goes through the application layer, hence the one
//! authorization table and the audit log, exactly as from the CLI or the API (no handler
//! here decides who may act). Buttons a user's role cannot use are not shown, and a forged
//! request for them is refused by the server all the same.
//!
//! - [`session`]: sign-in, sign-out, the signed-in user and the CSRF check;
//! - [`runs`]: syncs, runs, approvals, undo and row history;
//! - [`changes`]: change requests and the audit log;
//! - [`plugins`]: the plugin files and their status;
//! - [`debugger`]: a run's requests (the delivery debugger) and "Test one row";
//! - [`pages`]: the HTML.

mod changes;
mod debugger;
mod drift;
mod pages;
mod plugins;
mod runs;
mod session;
mod viewer;

use super::http::{ApiError, ApiState};
use crate::app::AppError;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Router;
use std::sync::Arc;

type Shared = State<Arc<ApiState>>;

/// What a UI handler answers when it cannot go on: the sign-in page, or an error page.
enum UiError {
    SignIn,
    Page(StatusCode, String),
    /// The per-token write limit: `429` with `Retry-After` (seconds), as the API answers.
    TooManyRequests(u64, String),
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::SignIn => Redirect::to("/ui/login").into_response(),
            UiError::Page(status, message) => {
                (status, Html(pages::error(status, &message))).into_response()
            }
            UiError::TooManyRequests(retry_after_s, message) => {
                let status = StatusCode::TOO_MANY_REQUESTS;
                let mut response = (status, Html(pages::error(status, &message))).into_response();
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(retry_after_s),
                );
                response
            }
        }
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError::Page(e.0, e.1)
    }
}

impl From<AppError> for UiError {
    fn from(e: AppError) -> Self {
        ApiError::from(e).into()
    }
}

fn form<T>(f: Result<Form<T>, FormRejection>) -> Result<T, UiError> {
    f.map(|Form(v)| v)
        .map_err(|e| UiError::Page(StatusCode::BAD_REQUEST, format!("form: {}", e.body_text())))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, UiError> {
    Ok(super::http::query(q)?)
}

/// The UI's routes, under `/ui`.
pub fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .merge(session::routes())
        .merge(runs::routes())
        .merge(changes::routes())
        .merge(plugins::routes())
        .merge(debugger::routes())
        .merge(drift::routes())
}

/// The HTML page for a path under `/ui` that does not exist.
pub fn not_found(path: &str) -> Response {
    UiError::Page(StatusCode::NOT_FOUND, format!("there is no page at {path}")).into_response()
}
