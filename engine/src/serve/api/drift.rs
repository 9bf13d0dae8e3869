//! `GET /api/v1/syncs/NAME/drift[?sample=N]`: the sync's drift report (as `sync drift
//! --json` prints it). Read-only; needs what a plan needs (a viewer).

use super::{Shared, User};
use crate::serve::http::{query, ApiError};
use crate::sync::DriftOptions;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DriftQuery {
    sample: Option<u64>,
}

pub(super) async fn drift(
    State(s): Shared,
    User(actor): User,
    Path(name): Path<String>,
    q: Result<Query<DriftQuery>, QueryRejection>,
) -> Result<Json<crate::sync::DriftReport>, ApiError> {
    let q = query(q)?;
    let report = s
        .app
        .drift(&actor, &name, DriftOptions { sample: q.sample })
        .await?;
    Ok(Json(report))
}
