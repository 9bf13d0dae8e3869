//! What the HTTP API and the web UI share: the service's state handed to every handler,
//! errors as statuses, request bodies, query strings, comments and ids, and the limits on
//! them. [`api`](super::api) and [`ui`](super::ui) both build on this module and never on
//! each other.

mod limits;
mod sessions;

pub use limits::{TooManyRequests, WriteLimiter};
pub use sessions::{Session, Sessions};

use super::scheduler::Scheduler;
use crate::app::{Accepted, App, AppError, Queued};
use crate::authz::Actor;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// The longest review or approval comment (API and UI).
pub const MAX_COMMENT_BYTES: usize = 4096;

/// The largest request body accepted (JSON bodies here are a comment or a flag).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler of the service reaches.
pub struct ApiState {
    /// The application layer: every operation goes through it.
    pub app: Arc<App>,
    /// Where triggered runs go.
    pub scheduler: Arc<Scheduler>,
    /// Signed-in browser sessions of the web UI.
    pub sessions: Sessions,
    /// The per-token limit on state-changing requests.
    pub write_limiter: WriteLimiter,
}

/// An API error: a status and a message.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        let status = match &e {
            AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AppError::Denied(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Invalid(_) => StatusCode::BAD_REQUEST,
            AppError::Refused(_) => StatusCode::CONFLICT,
            AppError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// A 400 with `message`.
pub fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// A JSON body, or the default when the body is empty.
pub fn json_body<T: serde::de::DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes =
        body.map_err(|e| ApiError(e.status(), format!("request body: {}", e.body_text())))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| bad_request(format!("request body: not the expected JSON: {e}")))
}

/// A query string, or a 400 naming what is wrong with it.
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| bad_request(format!("query string: {}", e.body_text())))
}

/// Refuses a comment longer than [`MAX_COMMENT_BYTES`].
pub fn check_comment(comment: &str) -> Result<(), ApiError> {
    if comment.len() > MAX_COMMENT_BYTES {
        return Err(bad_request(format!(
            "comment: at most {MAX_COMMENT_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A change request's id from a path.
pub fn change_id(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| bad_request(format!("change id: {text:?} is not a number")))
}

/// `?force=true` on an undo's plan (the API's and the UI's).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UndoQuery {
    /// Undo rows a later run changed too.
    #[serde(default)]
    pub force: bool,
}

/// Runs `work` on its own task and waits for it. A run started by a request (an approved
/// plan released, an undo) must not stop halfway because the client hung up: dropping the
/// request's future would cancel the run mid-delivery.
pub async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, AppError>> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::spawn(work).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the run stopped unexpectedly: {e}"),
        )),
    }
}

/// Asks the scheduler for a run on behalf of `actor` (the API's and the web UI's one path);
/// a service shutting down answers 503.
pub fn trigger_run(
    s: &ApiState,
    actor: &Actor,
    sync: &str,
    full_resync: bool,
    via: &str,
) -> Result<Queued, ApiError> {
    let queued = s
        .app
        .trigger_run(actor, sync, full_resync, via, &s.scheduler)?;
    if queued.accepted == Accepted::ShuttingDown {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is shutting down and starts no run".into(),
        ));
    }
    Ok(queued)
}
