//! The receiver's record store (`records = Some(KEY)`): what a destination that keeps records
//! would hold after the deliveries it accepted, so that tests (and demos) can read back what
//! landed, edit it behind backflow's back, and see drift.
//!
//! Each accepted row is merged field by field into the record of its key (the row's `KEY`
//! field, compared as text): fields present overwrite, absent fields keep their value. A row
//! is a delete, removing its record, when the request's method is `DELETE`, when the request's
//! path ends in `/delete` (an `endpoints.delete` URL), when a wrapper object says
//! `"operation": "delete"`, or when the row's `operation` or `op` field says `delete` (an
//! `operation_field`). Rows without the key field are not stored.
//!
//! Admin and lookup endpoints (under `/_records`, never recorded as deliveries):
//! `GET /_records` (every record, by key), `GET /_records/{key}` (200 with the record, or 404),
//! `POST /_records/lookup` with `{"keys": [...]}` (answers `{"records": [...]}`, the records
//! found, in the order asked), `PUT /_records/{key}` (replaces the record with the body, an
//! object), `DELETE /_records/{key}` (204, or 404).

use super::record_store::{key_text, RecordStore};
use super::state::Shared;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::Value;
use std::sync::Arc;

/// The routes of the record store, added when the receiver keeps records.
pub(super) fn routes() -> axum::Router<Arc<Shared>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/_records", get(list))
        .route("/_records/lookup", post(lookup))
        .route("/_records/{key}", get(show).put(replace).delete(remove))
}

fn store(shared: &Shared) -> &RecordStore {
    shared
        .records
        .as_ref()
        .expect("the /_records routes exist only with a record store")
}

fn not_found(shared: &Shared, key: &str) -> Response {
    let field = &store(shared).key_field;
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": format!("no record with {field} = {key}") })),
    )
        .into_response()
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// `GET /_records`: every record, by key.
async fn list(State(shared): State<Arc<Shared>>) -> Response {
    Json(store(&shared).all()).into_response()
}

/// `GET /_records/{key}`: the record, or 404.
async fn show(State(shared): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    match store(&shared).get(&key) {
        Some(record) => Json(record).into_response(),
        None => not_found(&shared, &key),
    }
}

/// `POST /_records/lookup` with `{"keys": [...]}`: `{"records": [...]}`, those found.
async fn lookup(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let keys = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut m)) => match m.remove("keys") {
            Some(Value::Array(keys)) => keys,
            _ => return bad_request("the body needs \"keys\": an array of keys".into()),
        },
        Ok(_) => return bad_request("the body must be an object {\"keys\": [...]}".into()),
        Err(e) => return bad_request(format!("the body is not JSON: {e}")),
    };
    let store = store(&shared);
    let records: Vec<Value> = keys
        .iter()
        .filter_map(key_text)
        .filter_map(|k| store.get(&k))
        .collect();
    Json(serde_json::json!({ "records": records })).into_response()
}

/// `PUT /_records/{key}`: replaces the record with the body (an object).
async fn replace(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(record)) => Json(store(&shared).put(&key, record)).into_response(),
        Ok(_) => bad_request("the body must be a JSON object (the record)".into()),
        Err(e) => bad_request(format!("the body is not JSON: {e}")),
    }
}

/// `DELETE /_records/{key}`: 204, or 404 when there is no such record.
async fn remove(State(shared): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    if store(&shared).remove(&key) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found(&shared, &key)
    }
}
