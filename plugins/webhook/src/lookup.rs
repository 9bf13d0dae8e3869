//! Reading back what the destination holds (contract 0.3.0 `writer.read`, capability
//! `read-back`), through a lookup endpoint the config names:
//!
//! - `lookup = { url = "https://api.example.com/contacts/{key}" }`: one GET per key; `{key}`
//!   is the key's value (one-column keys), `{FIELD}` the value of key field FIELD (every key),
//!   each percent-encoded as one path segment. 200 answers the record (at `response_path`
//!   inside the body when set), 404 or 410 says there is none.
//! - `lookup = { url = "...", method = "POST", keys_field = "keys", response_path = "records" }`:
//!   one POST per batch of keys, body `{"keys": [k1, k2, ...]}` (a composite key is an object
//!   of its fields); the answer holds an array of the records found at `response_path`, each
//!   matched to its key by the primary-key fields it carries. Keys without a record are absent.
//!
//! `response_path` is a JSON pointer (`/data/records`) or a dotted path (`data.records`).
//! The request carries the destination's headers (credentials); reading never writes.

use backflow_plugin_sdk::host::{self, HttpHeader, HttpRequest};
use backflow_plugin_sdk::warehouse::{Held, ReadResult};
use backflow_plugin_sdk::{Batch, BatchBuilder, Column, PluginError, Value, ValueType};
use serde::Deserialize;
use serde_json::Value as J;

/// `config.lookup`: where and how to read records back.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct Lookup {
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default = "default_keys_field")]
    keys_field: String,
    #[serde(default)]
    response_path: Option<String>,
}

fn default_method() -> String {
    "GET".into()
}

fn default_keys_field() -> String {
    "keys".into()
}

/// What is wrong with a `lookup` config, as (field, message).
pub(crate) fn check_lookup(lookup: &Lookup) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    if !(lookup.url.starts_with("http://") || lookup.url.starts_with("https://")) {
        errors.push((
            "lookup.url".into(),
            format!("{:?} is not an http:// or https:// URL", lookup.url),
        ));
    }
    let post = lookup.method.eq_ignore_ascii_case("POST");
    if !post && !lookup.method.eq_ignore_ascii_case("GET") {
        errors.push((
            "lookup.method".into(),
            format!(
                "{:?}: use GET (one request per key) or POST (a batch of keys)",
                lookup.method
            ),
        ));
    }
    if !post && !lookup.url.contains('{') {
        errors.push((
            "lookup.url".into(),
            "a GET lookup URL must name the key: put {key} (or {FIELD} for a key field) where the record's key goes".into(),
        ));
    }
    errors
}

/// Reads what the destination holds for `keys` (rows of the primary-key fields).
pub(crate) fn read(
    lookup: &Lookup,
    headers: &[HttpHeader],
    timeout_ms: Option<u32>,
    keys: &Batch,
) -> Result<ReadResult, PluginError> {
    let key_rows: Vec<Vec<(String, J)>> = keys
        .rows()
        .map(|row| {
            let row = row.map_err(|e| PluginError::fatal(format!("undecodable keys: {e}")))?;
            Ok(keys
                .columns
                .iter()
                .zip(row)
                .map(|(c, v)| (c.name.clone(), v.to_json()))
                .collect())
        })
        .collect::<Result<_, PluginError>>()?;
    let found: Vec<Option<serde_json::Map<String, J>>> =
        if lookup.method.eq_ignore_ascii_case("POST") {
            read_by_post(lookup, headers, timeout_ms, &key_rows)?
        } else {
            key_rows
                .iter()
                .map(|key| read_one(lookup, headers, timeout_ms, key))
                .collect::<Result<_, _>>()?
        };
    Ok(read_result(found))
}

/// The answer's records as a batch: one column per field seen (type `any`), a field a
/// record lacks an absent cell.
fn read_result(found: Vec<Option<serde_json::Map<String, J>>>) -> ReadResult {
    let mut names: Vec<String> = Vec::new();
    for record in found.iter().flatten() {
        for field in record.keys() {
            if !names.contains(field) {
                names.push(field.clone());
            }
        }
    }
    let columns: Vec<Column> = names
        .iter()
        .map(|n| Column::new(n.clone(), ValueType::Any))
        .collect();
    let mut builder = BatchBuilder::new(columns);
    let mut present_bits: Vec<bool> = Vec::new();
    let mut held = Vec::with_capacity(found.len());
    for record in &found {
        let Some(record) = record else {
            held.push(Held::Absent);
            continue;
        };
        held.push(Held::Present(builder.len()));
        let values: Vec<Value> = names
            .iter()
            .map(|n| {
                present_bits.push(record.contains_key(n));
                record.get(n).map(Value::from_json).unwrap_or(Value::Null)
            })
            .collect();
        builder.push_row(&values);
    }
    let present = (!present_bits.iter().all(|p| *p)).then(|| {
        let mut bitmap = vec![0u8; present_bits.len().div_ceil(8)];
        for (i, p) in present_bits.iter().enumerate() {
            if *p {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        bitmap
    });
    ReadResult {
        rows: builder.finish(),
        present,
        held,
    }
}

/// A value as text, for URLs and key matching (`1` and `"1"` are the same key).
fn text(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// The GET URL of one key: `{key}` and `{FIELD}` replaced by percent-encoded values.
fn key_url(template: &str, key: &[(String, J)]) -> Result<String, PluginError> {
    let mut url = template.to_string();
    if url.contains("{key}") {
        if key.len() != 1 {
            return Err(PluginError::bad_config(
                "lookup.url",
                format!(
                    "{{key}} stands for a one-column key, and this sync's key has {} columns ({}): name each as {{FIELD}}",
                    key.len(),
                    key.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        url = url.replace("{key}", &segment(&text(&key[0].1))?);
    }
    for (name, value) in key {
        let placeholder = format!("{{{name}}}");
        if url.contains(&placeholder) {
            url = url.replace(&placeholder, &segment(&text(value))?);
        }
    }
    Ok(url)
}

/// A value percent-encoded as one URL path segment; `.` and `..` are refused.
fn segment(value: &str) -> Result<String, PluginError> {
    if value == "." || value == ".." {
        return Err(PluginError::fatal(format!(
            "the key {value:?} cannot be a URL path segment"
        )));
    }
    Ok(crate::percent_encode_segment(value))
}

/// What `response_path` points at in `body` (the body itself without one).
fn at_path<'a>(body: &'a J, path: &Option<String>) -> Option<&'a J> {
    match path.as_deref() {
        None | Some("") => Some(body),
        Some(p) if p.starts_with('/') => body.pointer(p),
        Some(p) => p.split('.').try_fold(body, |v, part| match v {
            J::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            v => v.get(part),
        }),
    }
}

/// Sends one lookup request; the answer's status and body, or the error that stops the read.
fn send(
    lookup: &Lookup,
    headers: &[HttpHeader],
    timeout_ms: Option<u32>,
    url: String,
    body: Vec<u8>,
) -> Result<(u16, String), PluginError> {
    let request = HttpRequest {
        method: lookup.method.to_ascii_uppercase(),
        url: url.clone(),
        headers: headers.to_vec(),
        body,
        timeout_ms,
    };
    let response = match host::http_send(&request) {
        Ok(r) => r,
        Err(host::HttpError::Denied(m)) => return Err(PluginError::bad_config("lookup.url", m)),
        Err(host::HttpError::Timeout(m)) => {
            return Err(PluginError::retryable(format!(
                "lookup {url}: timed out: {m}"
            )))
        }
        Err(host::HttpError::Connection(m)) => {
            return Err(PluginError::retryable(format!("lookup {url}: {m}")))
        }
        Err(host::HttpError::InvalidRequest(m)) => {
            return Err(PluginError::fatal(format!("lookup {url}: {m}")))
        }
    };
    let mut text = String::from_utf8_lossy(&response.body).into_owned();
    for h in headers.iter().filter(|h| h.value.len() >= 4) {
        text = text.replace(h.value.as_str(), "[redacted]");
    }
    let shown: String = text.chars().take(300).collect();
    match response.status {
        200..=299 | 404 | 410 => Ok((response.status, text)),
        429 | 503 => Err(PluginError::RateLimited {
            message: format!("lookup {url}: HTTP {}: {shown}", response.status),
            retry_after_ms: response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
                .and_then(|h| crate::retry_after_ms(&h.value)),
        }),
        500..=599 => Err(PluginError::retryable(format!(
            "lookup {url}: HTTP {}: {shown}",
            response.status
        ))),
        status => Err(PluginError::bad_config(
            "lookup",
            format!("lookup {url}: HTTP {status}: {shown}"),
        )),
    }
}

/// One GET: the record of one key, or none (404/410).
fn read_one(
    lookup: &Lookup,
    headers: &[HttpHeader],
    timeout_ms: Option<u32>,
    key: &[(String, J)],
) -> Result<Option<serde_json::Map<String, J>>, PluginError> {
    let url = key_url(&lookup.url, key)?;
    let (status, body) = send(lookup, headers, timeout_ms, url.clone(), Vec::new())?;
    if status == 404 || status == 410 {
        return Ok(None);
    }
    let value: J = serde_json::from_str(&body).map_err(|e| {
        PluginError::bad_config(
            "lookup",
            format!("lookup {url}: the answer is not JSON ({e})"),
        )
    })?;
    match at_path(&value, &lookup.response_path) {
        Some(J::Object(record)) => Ok(Some(record.clone())),
        Some(J::Null) | None => Ok(None),
        Some(other) => Err(PluginError::bad_config(
            "lookup.response_path",
            format!("lookup {url}: the record is not a JSON object: {other}"),
        )),
    }
}

/// One POST of every key: the records found, matched to the keys by their key fields.
fn read_by_post(
    lookup: &Lookup,
    headers: &[HttpHeader],
    timeout_ms: Option<u32>,
    key_rows: &[Vec<(String, J)>],
) -> Result<Vec<Option<serde_json::Map<String, J>>>, PluginError> {
    let keys: Vec<J> = key_rows
        .iter()
        .map(|key| match key.as_slice() {
            [(_, one)] => one.clone(),
            many => J::Object(many.iter().cloned().collect()),
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ lookup.keys_field.as_str(): keys }))
        .expect("JSON values serialize");
    let url = lookup.url.clone();
    let (status, answer) = send(lookup, headers, timeout_ms, url.clone(), body)?;
    if status == 404 || status == 410 {
        return Ok(vec![None; key_rows.len()]);
    }
    let value: J = serde_json::from_str(&answer).map_err(|e| {
        PluginError::bad_config(
            "lookup",
            format!("lookup {url}: the answer is not JSON ({e})"),
        )
    })?;
    let Some(J::Array(records)) = at_path(&value, &lookup.response_path) else {
        return Err(PluginError::bad_config(
            "lookup.response_path",
            format!(
                "lookup {url}: no array of records at {:?} in the answer",
                lookup.response_path.as_deref().unwrap_or("")
            ),
        ));
    };
    let key_of = |record: &serde_json::Map<String, J>, names: &[(String, J)]| {
        names
            .iter()
            .map(|(n, _)| record.get(n).map(text))
            .collect::<Option<Vec<String>>>()
    };
    let mut by_key: std::collections::HashMap<Vec<String>, serde_json::Map<String, J>> =
        Default::default();
    if let Some(first) = key_rows.first() {
        for record in records.iter().filter_map(J::as_object) {
            if let Some(k) = key_of(record, first) {
                by_key.insert(k, record.clone());
            }
        }
    }
    Ok(key_rows
        .iter()
        .map(|key| {
            by_key
                .get(&key.iter().map(|(_, v)| text(v)).collect::<Vec<_>>())
                .cloned()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_name_keys_as_segments() {
        let key = vec![("id".to_string(), json!("a/b c"))];
        assert_eq!(
            key_url("http://x/c/{key}", &key).unwrap(),
            "http://x/c/a%2Fb%20c"
        );
        assert_eq!(
            key_url("http://x/c/{id}", &key).unwrap(),
            "http://x/c/a%2Fb%20c"
        );
        let two = vec![("a".to_string(), json!(1)), ("b".to_string(), json!(2))];
        assert!(key_url("http://x/{key}", &two).is_err());
        assert_eq!(key_url("http://x/{a}/{b}", &two).unwrap(), "http://x/1/2");
    }

    #[test]
    fn response_paths_and_presence() {
        let body = json!({"data": {"records": [{"id": 1}]}});
        assert_eq!(
            at_path(&body, &Some("/data/records".into())),
            Some(&json!([{"id": 1}]))
        );
        assert_eq!(
            at_path(&body, &Some("data.records.0.id".into())),
            Some(&json!(1))
        );
        let result = read_result(vec![
            Some(json!({"id": 1, "a": "x"}).as_object().unwrap().clone()),
            None,
            Some(json!({"id": 2}).as_object().unwrap().clone()),
        ]);
        assert_eq!(
            result.held,
            vec![Held::Present(0), Held::Absent, Held::Present(1)]
        );
        // Cells: row 0 (id, a) present, row 1 (id) present, (a) absent: bits 0,1,2 set.
        assert_eq!(result.present, Some(vec![0b0111]));
    }
}
