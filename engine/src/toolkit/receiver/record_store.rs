//! The record store of a receiver started with `records` (see `records.rs` for what it is
//! for and its HTTP endpoints): records by key, merged field by field from accepted rows.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Records by key, merged from accepted deliveries.
pub(super) struct RecordStore {
    /// The field holding a row's key.
    pub(super) key_field: String,
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
