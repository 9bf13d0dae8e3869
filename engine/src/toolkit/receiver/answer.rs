//! Answering one request, step by step: wait (`latency_ms`), count only (a benchmark's
//! receiver), parse the body and its rows, judge it (the faults the options inject, in a
//! fixed order), keep it (print, append to the file, record), answer.

use super::row_count::RowCount;
use super::signature::verify_signature;
use super::state::{Received, ReceiverOptions, Shared};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The handler of every path but `/_receiver/requests`: answers the request and keeps
/// count of how many are handled at once.
pub(super) async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now_active = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_active.fetch_max(now_active, Ordering::SeqCst);
    let response = answer(&shared, method, uri, headers, body).await;
    shared.active.fetch_sub(1, Ordering::SeqCst);
    response
}

/// How the receiver answers a request.
struct Verdict {
    status: StatusCode,
    answer: String,
    /// Whether to add `Retry-After: 1` (rate limited).
    retry_after: bool,
    /// Rows refused one by one (207).
    refused: usize,
}

impl Verdict {
    fn ok() -> Verdict {
        Verdict::new(StatusCode::OK, r#"{"ok":true}"#)
    }

    fn new(status: StatusCode, answer: impl Into<String>) -> Verdict {
        Verdict {
            status,
            answer: answer.into(),
            retry_after: false,
            refused: 0,
        }
    }

    fn into_response(self) -> Response {
        let mut response = (self.status, self.answer).into_response();
        if self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

async fn answer(
    shared: &Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let o = &shared.options;
    if o.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(o.latency_ms)).await;
    }
    if only_counts(shared) {
        return count_only(shared, &body);
    }
    let body_json = serde_json::from_slice::<serde_json::Value>(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    let rows = rows_of(&body_json);
    let verdict = judge(shared, &method, &headers, &body, &rows);
    if let (Some(store), true) = (&shared.records, verdict.status.is_success()) {
        let path = uri.path();
        store.apply(method.as_str(), path, &body_json, &rows, |row| {
            refused_one_by_one(o, row)
        });
    }
    let received = Received {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body_json,
        rows: rows.len(),
        status: verdict.status.as_u16(),
        refused: verdict.refused,
    };
    keep(shared, received, body.len());
    verdict.into_response()
}

/// Whether the receiver discards and judges no row: then it parses every body in full, but
/// only to count its rows (no JSON value is built; a benchmark's receiver must not be the
/// bottleneck).
fn only_counts(shared: &Shared) -> bool {
    let o = &shared.options;
    let faults = o.latency_ms > 0
        || o.down_for_ms > 0
        || o.fail_requests.is_some()
        || o.status_for_method.is_some()
        || o.echo_headers_status.is_some()
        || o.hmac_secret.is_some()
        || o.rate_limit.is_some()
        || o.error_rate > 0.0;
    o.discard
        && o.reject.is_none()
        && o.multi_status.is_none()
        && shared.out.is_none()
        && !o.print
        && o.records.is_none()
        && !faults
}

/// Counts the request and its rows, and accepts it.
fn count_only(shared: &Shared, body: &[u8]) -> Response {
    // Like the full path: a body that is not JSON counts no rows.
    let rows = serde_json::from_slice::<RowCount>(body)
        .map(|c| c.0)
        .unwrap_or(0);
    shared.count.fetch_add(1, Ordering::SeqCst);
    shared.discarded_rows.fetch_add(rows, Ordering::SeqCst);
    (StatusCode::OK, r#"{"ok":true}"#).into_response()
}

/// The rows of a body: an array's elements, the array of a one-key wrapper object, an
/// object's `rows` array, or the object itself.
fn rows_of(v: &serde_json::Value) -> Vec<serde_json::Value> {
    match v {
        serde_json::Value::Array(a) => a.clone(),
        // A wrapper object such as {"records": [...]}, or one with fields beside its
        // `rows` ({"operation": "insert", "rows": [...]}, what the templates send).
        serde_json::Value::Object(m)
            if m.len() == 1 && m.values().next().is_some_and(|x| x.is_array()) =>
        {
            m.values()
                .next()
                .and_then(|x| x.as_array())
                .cloned()
                .unwrap_or_default()
        }
        serde_json::Value::Object(m) if m.get("rows").is_some_and(|x| x.is_array()) => m
            .get("rows")
            .and_then(|x| x.as_array())
            .cloned()
            .unwrap_or_default(),
        serde_json::Value::Object(_) => vec![v.clone()],
        _ => vec![],
    }
}

/// The answer the options make of a request, in this order: down, a scripted failure
/// (numbered requests, a method, echoed headers), a bad signature, over the rate limit, an
/// injected error, a refused row, rows refused one by one (207); else 200. A later fault is not even looked at once an
/// earlier one answered (the rate window and the error budget only count what reached them).
fn judge(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
    rows: &[serde_json::Value],
) -> Verdict {
    let o = &shared.options;
    if shared.started.elapsed() < Duration::from_millis(o.down_for_ms) {
        return Verdict::new(StatusCode::SERVICE_UNAVAILABLE, "down");
    }
    let number = shared.count.fetch_add(1, Ordering::SeqCst) + 1;
    scripted_failure(o, number, method, headers)
        .or_else(|| bad_signature(o, headers, body))
        .or_else(|| over_rate_limit(shared))
        .or_else(|| injected_error(shared))
        .or_else(|| refused_row(o, rows))
        .or_else(|| multi_status(o, rows))
        .unwrap_or_else(Verdict::ok)
}

/// `fail_requests`, `status_for_method` and `echo_headers_status`.
fn scripted_failure(
    o: &ReceiverOptions,
    number: usize,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Verdict> {
    if let Some((first, count)) = o.fail_requests {
        if (first..first + count).contains(&number) {
            return Some(Verdict::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("request {number}: injected error"),
            ));
        }
    }
    if let Some((m, status)) = &o.status_for_method {
        if method.as_str().eq_ignore_ascii_case(m) {
            return Some(Verdict::new(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::NOT_FOUND),
                "no such record",
            ));
        }
    }
    let status = o.echo_headers_status?;
    let echoed: BTreeMap<&str, &str> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("?")))
        .collect();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    Some(Verdict::new(
        status,
        format!(
            "request refused; you sent: {}",
            serde_json::to_string(&echoed).unwrap_or_default()
        ),
    ))
}

/// `hmac_secret`: 401 when the signature is missing or wrong.
fn bad_signature(o: &ReceiverOptions, headers: &HeaderMap, body: &[u8]) -> Option<Verdict> {
    let secret = o.hmac_secret.as_ref()?;
    let why = verify_signature(secret, headers, body).err()?;
    Some(Verdict::new(
        StatusCode::UNAUTHORIZED,
        format!("bad signature: {why}"),
    ))
}

/// `rate_limit`: 429 with `Retry-After` beyond that many accepted requests in the last
/// second; an accepted request joins the window.
fn over_rate_limit(shared: &Shared) -> Option<Verdict> {
    let limit = shared.options.rate_limit?;
    let mut window = shared.window.lock().unwrap();
    let now = Instant::now();
    while window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        window.pop_front();
    }
    if window.len() >= limit as usize {
        return Some(Verdict {
            status: StatusCode::TOO_MANY_REQUESTS,
            answer: format!("more than {limit} requests per second"),
            retry_after: true,
            refused: 0,
        });
    }
    window.push_back(now);
    None
}

/// `error_rate`: 500 whenever the accrued error budget reaches one request.
fn injected_error(shared: &Shared) -> Option<Verdict> {
    let rate = shared.options.error_rate;
    if rate > 0.0 {
        let mut due = shared.errors_due.lock().unwrap();
        *due += rate;
        if *due >= 1.0 {
            *due -= 1.0;
            return Some(Verdict::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected error",
            ));
        }
    }
    None
}

/// `reject`: 422 when a row's field has the refused value (compared as text).
fn refused_row(o: &ReceiverOptions, rows: &[serde_json::Value]) -> Option<Verdict> {
    let (field, value) = o.reject.as_ref()?;
    let hit = rows.iter().any(|r| {
        r.get(field).is_some_and(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
                == *value
        })
    });
    hit.then(|| {
        Verdict::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("rows with {field} = {value} are refused"),
        )
    })
}

/// `multi_status`: 207 naming each row whose field has one of the values, by its position
/// and its `id`.
fn multi_status(o: &ReceiverOptions, rows: &[serde_json::Value]) -> Option<Verdict> {
    let (field, values) = o.multi_status.as_ref()?;
    let text = |v: &serde_json::Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let errors: Vec<serde_json::Value> = rows
        .iter()
        .enumerate()
        .filter_map(|(index, r)| {
            let value = text(r.get(field)?);
            values.contains(&value).then(|| {
                serde_json::json!({
                    "index": index,
                    "id": r.get("id").cloned().unwrap_or_default(),
                    "message": format!("rows with {field} = {value} are refused"),
                })
            })
        })
        .collect();
    if errors.is_empty() {
        return None;
    }
    let mut verdict = Verdict::new(
        StatusCode::MULTI_STATUS,
        serde_json::json!({ "errors": errors }).to_string(),
    );
    verdict.refused = errors.len();
    Some(verdict)
}

/// Whether `multi_status` refuses this row (a 207 refuses such rows, accepting the others).
fn refused_one_by_one(o: &ReceiverOptions, row: &serde_json::Value) -> bool {
    let Some((field, values)) = &o.multi_status else {
        return false;
    };
    row.get(field).is_some_and(|v| {
        let text = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        values.contains(&text)
    })
}

/// Prints the request (`print`), appends it to the file (`out`), and records it, or with
/// `discard` only counts its rows if it was accepted.
fn keep(shared: &Shared, received: Received, body_len: usize) {
    let o = &shared.options;
    if o.print {
        println!(
            "{} {}  {} rows  {} bytes  -> {}",
            received.method, received.path, received.rows, body_len, received.status
        );
    }
    if let Some(out) = &shared.out {
        let mut line = serde_json::to_vec(&received).unwrap_or_default();
        line.push(b'\n');
        let _ = out.lock().unwrap().write_all(&line);
    }
    if o.discard {
        shared.discarded_rows.fetch_add(
            if (200..300).contains(&received.status) {
                received.rows - received.refused
            } else {
                0
            },
            Ordering::SeqCst,
        );
    } else {
        shared.received.lock().unwrap().push(received);
    }
}
