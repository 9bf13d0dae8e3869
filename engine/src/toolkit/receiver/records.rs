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

use super::state::Shared;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Records by key, merged from accepted deliveries.
pub(super) struct RecordStore {
    /// The field holding a row's key.
    key_field: String,
    records: Mutex<BTreeMap<String, Map<String, Value>>>,
}

/// A key value as text (`1` and `"1"` are the same key); null and composite values are none.
pub(super) fn key_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether a row field names the delete operation.
fn says_delete(value: Option<&Value>) -> bool {
    value
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("delete"))
}

impl RecordStore {
    pub(super) fn new(key_field: String) -> RecordStore {
        RecordStore {
            key_field,
            records: Mutex::new(BTreeMap::new()),
        }
    }

    /// Applies one accepted request: its `rows` (from its parsed `body`), except those
    /// `refused` says the answer refused one by one.
    pub(super) fn apply(
        &self,
        method: &str,
        path: &str,
        body: &Value,
        rows: &[Value],
        refused: impl Fn(&Value) -> bool,
    ) {
        let path = path.split('?').next().unwrap_or_default();
        let request_deletes = method.eq_ignore_ascii_case("DELETE")
            || path.trim_end_matches('/').ends_with("/delete")
            || says_delete(body.get("operation"));
        let mut records = self.records.lock().unwrap();
        for row in rows.iter().filter(|r| !refused(r)) {
            let Some(object) = row.as_object() else {
                continue;
            };
            let Some(key) = object.get(&self.key_field).and_then(key_text) else {
                continue;
            };
            let deletes = request_deletes
                || says_delete(object.get("operation"))
                || says_delete(object.get("op"));
            if deletes {
                records.remove(&key);
                continue;
            }
            let record = records.entry(key).or_default();
            for (field, value) in object {
                record.insert(field.clone(), value.clone());
            }
        }
    }

    /// Every record, by key.
    pub(super) fn all(&self) -> BTreeMap<String, Value> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|(k, r)| (k.clone(), Value::Object(r.clone())))
            .collect()
    }

    /// The record of `key`, if there is one.
    pub(super) fn get(&self, key: &str) -> Option<Value> {
        self.records
            .lock()
            .unwrap()
            .get(key)
            .map(|r| Value::Object(r.clone()))
    }

    /// Replaces (or creates) the record of `key`; the key field is set to `key` when the
    /// record lacks it.
    pub(super) fn put(&self, key: &str, mut record: Map<String, Value>) -> Value {
        if !record.contains_key(&self.key_field) {
            record.insert(self.key_field.clone(), Value::String(key.to_string()));
        }
        self.records
            .lock()
            .unwrap()
            .insert(key.to_string(), record.clone());
        Value::Object(record)
    }

    /// Removes the record of `key`; whether there was one.
    pub(super) fn remove(&self, key: &str) -> bool {
        self.records.lock().unwrap().remove(key).is_some()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(v: Value) -> Vec<Value> {
        v.as_array().unwrap().clone()
    }

    #[test]
    fn merges_field_by_field_and_deletes() {
        let store = RecordStore::new("id".into());
        let body = json!([{"id": 1, "a": "x", "b": 1}, {"id": "2", "a": "y"}]);
        store.apply("POST", "/c", &body, &rows(body.clone()), |_| false);
        let body = json!([{"id": "1", "b": 2}, {"a": "no key"}]);
        store.apply("POST", "/c", &body, &rows(body.clone()), |_| false);
        assert_eq!(store.get("1"), Some(json!({"id": "1", "a": "x", "b": 2})));
        assert_eq!(store.all().len(), 2);
        let body = json!([{"id": 2}]);
        store.apply("DELETE", "/c", &body, &rows(body.clone()), |_| false);
        assert_eq!(store.get("2"), None);
        let body = json!({"operation": "delete", "rows": [{"id": 1}]});
        store.apply("POST", "/c", &body, &[json!({"id": 1})], |_| false);
        assert!(store.all().is_empty());
    }

    #[test]
    fn operation_fields_paths_and_refused_rows() {
        let store = RecordStore::new("id".into());
        let body = json!([{"id": 1, "op": "insert"}, {"id": 2, "op": "insert"}]);
        store.apply("POST", "/c", &body, &rows(body.clone()), |r| r["id"] == 2);
        assert_eq!(store.all().keys().collect::<Vec<_>>(), vec!["1"]);
        let body = json!([{"id": 1, "op": "delete"}]);
        store.apply("POST", "/c", &body, &rows(body.clone()), |_| false);
        assert!(store.get("1").is_none());
        store.put("3", Map::new());
        assert_eq!(store.get("3"), Some(json!({"id": "3"})));
        let body = json!([{"id": 3}]);
        store.apply("POST", "/c/delete?x=1", &body, &rows(body.clone()), |_| {
            false
        });
        assert!(!store.remove("3"));
    }
}
