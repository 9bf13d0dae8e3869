//! The UI's drift page (`/ui/syncs/NAME/drift[?sample=N]`): read-only, for anyone who may
//! plan the sync.

use super::session::viewer;
use super::{pages, query, Shared, UiError};
use crate::serve::http::ApiState;
use crate::sync::DriftOptions;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/ui/syncs/{name}/drift", get(drift))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DriftQuery {
    sample: Option<u64>,
}

async fn drift(
    State(s): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: Result<Query<DriftQuery>, QueryRejection>,
) -> Result<Html<String>, UiError> {
    let v = viewer(&s, &headers)?;
    let q = query(q)?;
    let report = s
        .app
        .drift(&v.actor, &name, DriftOptions { sample: q.sample })
        .await?;
    Ok(Html(pages::drift::drift(&v, &report)))
}
