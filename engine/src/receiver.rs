//! `backflow receiver`: a local webhook endpoint that records what it receives, for demos
//! and tests. Every request to any path is recorded and answered `200 {"ok":true}`, unless a
//! flag makes it behave like a real API: added latency, an error rate, 429 with
//! `Retry-After` above a request rate, refusing rows whose field has a value, verifying
//! HMAC signatures. `GET /_receiver/requests` returns everything recorded so far as JSON.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Json};

use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One recorded request.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, or as a string when it is not JSON.
    pub body: serde_json::Value,
    /// Rows in the body: the array's length (or a wrapper object's array), or 1 for an object.
    pub rows: usize,
    /// The status the receiver answered with.
    pub status: u16,
}

#[derive(Debug, Clone, Default)]
pub struct ReceiverOptions {
    /// Append each request as a JSON line to this file.
    pub out: Option<PathBuf>,
    /// Print one line per request to stdout.
    pub print: bool,
    /// Wait this long before answering each request.
    pub latency_ms: u64,
    /// Answer this fraction of requests (0..1) with 500, spread evenly.
    pub error_rate: f64,
    /// Answer 429 with `Retry-After: 1` to requests beyond this many per second.
    pub rate_limit: Option<u32>,
    /// Answer 422 to a request containing a row whose field (first) equals the value (second).
    pub reject: Option<(String, String)>,
    /// Verify `X-Backflow-Signature` with this HMAC-SHA256 key; answer 401 when it is wrong.
    pub hmac_secret: Option<String>,
    /// Answer 503 to everything for this long after starting (a destination that is down).
    pub down_for_ms: u64,
    /// Answer every request with this status and the request's headers in the body, as some
    /// APIs echo the request in their errors (for testing that credentials do not leak).
    pub echo_headers_status: Option<u16>,
    /// Answer requests of this method with this status (e.g. `DELETE` → 404: the record is gone).
    pub status_for_method: Option<(String, u16)>,
    /// Answer requests number `first..first + count` (counting from 1) with 500: a burst of
    /// errors in an otherwise healthy destination.
    pub fail_requests: Option<(usize, usize)>,
    /// Parse every body but keep only counts, not the requests (for benchmarks: a million
    /// rows would otherwise stay in memory).
    pub discard: bool,
}

struct Shared {
    received: Mutex<Vec<Received>>,
    out: Option<Mutex<std::fs::File>>,
    options: ReceiverOptions,
    /// Error budget for `error_rate` and the accepted-request times of the last second.
    errors_due: Mutex<f64>,
    window: Mutex<std::collections::VecDeque<std::time::Instant>>,
    started: std::time::Instant,
    /// Requests received so far (numbering for `fail_requests`).
    count: std::sync::atomic::AtomicUsize,
    /// Rows accepted but not kept (`discard`).
    discarded_rows: std::sync::atomic::AtomicUsize,
    /// Requests being handled now, and the most ever at once.
    active: std::sync::atomic::AtomicUsize,
    max_active: std::sync::atomic::AtomicUsize,
}

/// A running receiver. Dropping it stops the server.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Rows received in requests that were accepted (2xx).
    pub fn rows(&self) -> usize {
        self.shared
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| r.rows)
            .sum::<usize>()
            + self
                .shared
                .discarded_rows
                .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most requests the receiver was handling at the same time.
    pub fn max_concurrency(&self) -> usize {
        self.shared
            .max_active
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Starts a receiver on `addr` (use port 0 for a free port).
pub async fn start(addr: SocketAddr, options: ReceiverOptions) -> anyhow::Result<Receiver> {
    let out = match &options.out {
        Some(path) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let shared = Arc::new(Shared {
        received: Mutex::new(Vec::new()),
        out,
        options,
        errors_due: Mutex::new(0.0),
        window: Mutex::new(Default::default()),
        count: Default::default(),
        discarded_rows: Default::default(),
        active: Default::default(),
        max_active: Default::default(),
        started: std::time::Instant::now(),
    });
    let app = axum::Router::new()
        .route("/_receiver/requests", axum::routing::get(list))
        .fallback(record)
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Receiver {
        addr,
        shared,
        _stop: stop,
    })
}

async fn list(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.received.lock().unwrap().clone())
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use std::sync::atomic::Ordering;
    let now_active = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_active.fetch_max(now_active, Ordering::SeqCst);
    let response = answer(&shared, method, uri, headers, body).await;
    shared.active.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn answer(
    shared: &Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let o = &shared.options;
    if o.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(o.latency_ms)).await;
    }
    // Discarding and judging no row: parse every body in full, but only to count its rows
    // (no JSON value is built; a benchmark's receiver must not be the bottleneck).
    let faults = o.latency_ms > 0
        || o.down_for_ms > 0
        || o.fail_requests.is_some()
        || o.status_for_method.is_some()
        || o.echo_headers_status.is_some()
        || o.hmac_secret.is_some()
        || o.rate_limit.is_some()
        || o.error_rate > 0.0;
    if o.discard && o.reject.is_none() && shared.out.is_none() && !o.print && !faults {
        // Like the full path: a body that is not JSON counts no rows.
        let rows = serde_json::from_slice::<RowCount>(&body)
            .map(|c| c.0)
            .unwrap_or(0);
        shared
            .count
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        shared
            .discarded_rows
            .fetch_add(rows, std::sync::atomic::Ordering::SeqCst);
        return (axum::http::StatusCode::OK, r#"{"ok":true}"#).into_response();
    }
    let body_json = serde_json::from_slice::<serde_json::Value>(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    let rows_of = |v: &serde_json::Value| -> Vec<serde_json::Value> {
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
    };
    let rows = rows_of(&body_json);
    let (status, answer, retry_after) = 'verdict: {
        if shared.started.elapsed() < std::time::Duration::from_millis(o.down_for_ms) {
            break 'verdict (StatusCode::SERVICE_UNAVAILABLE, "down".to_string(), false);
        }
        let number = shared
            .count
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if let Some((first, count)) = o.fail_requests {
            if (first..first + count).contains(&number) {
                break 'verdict (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("request {number}: injected error"),
                    false,
                );
            }
        }
        if let Some((m, status)) = &o.status_for_method {
            if method.as_str().eq_ignore_ascii_case(m) {
                break 'verdict (
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::NOT_FOUND),
                    "no such record".to_string(),
                    false,
                );
            }
        }
        if let Some(status) = o.echo_headers_status {
            let echoed: BTreeMap<&str, &str> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("?")))
                .collect();
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            break 'verdict (
                status,
                format!(
                    "request refused; you sent: {}",
                    serde_json::to_string(&echoed).unwrap_or_default()
                ),
                false,
            );
        }
        if let Some(secret) = &o.hmac_secret {
            if let Err(why) = verify_signature(secret, &headers, &body) {
                break 'verdict (
                    StatusCode::UNAUTHORIZED,
                    format!("bad signature: {why}"),
                    false,
                );
            }
        }
        if let Some(limit) = o.rate_limit {
            let mut window = shared.window.lock().unwrap();
            let now = std::time::Instant::now();
            while window
                .front()
                .is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_secs(1))
            {
                window.pop_front();
            }
            if window.len() >= limit as usize {
                break 'verdict (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("more than {limit} requests per second"),
                    true,
                );
            }
            window.push_back(now);
        }
        if o.error_rate > 0.0 {
            let mut due = shared.errors_due.lock().unwrap();
            *due += o.error_rate;
            if *due >= 1.0 {
                *due -= 1.0;
                break 'verdict (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "injected error".to_string(),
                    false,
                );
            }
        }
        if let Some((field, value)) = &o.reject {
            let hit = rows.iter().any(|r| {
                r.get(field).is_some_and(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                        == *value
                })
            });
            if hit {
                break 'verdict (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("rows with {field} = {value} are refused"),
                    false,
                );
            }
        }
        (StatusCode::OK, r#"{"ok":true}"#.to_string(), false)
    };
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
        status: status.as_u16(),
    };
    if o.print {
        println!(
            "{} {}  {} rows  {} bytes  -> {}",
            received.method,
            received.path,
            received.rows,
            body.len(),
            status.as_u16()
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
                received.rows
            } else {
                0
            },
            std::sync::atomic::Ordering::SeqCst,
        );
    } else {
        shared.received.lock().unwrap().push(received);
    }
    let mut response = (status, answer).into_response();
    if retry_after {
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    response
}

/// The rows of a body, counted while parsing it: an array's elements, the array of a
/// one-key wrapper object (`{"records": [...]}`) or of an object's `rows` field, or 1 for any
/// other object. Every byte is
/// parsed; no value is kept.
struct RowCount(usize);

impl<'de> serde::Deserialize<'de> for RowCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RowCount, D::Error> {
        use serde::de::DeserializeSeed;
        Ok(RowCount(Count { top: true }.deserialize(d)?.0))
    }
}

/// Counts a value's rows as [`RowCount`] says; `.1`: whether it was an array. Only the
/// top level looks into objects (for a wrapper).
struct Count {
    top: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Count {
    type Value = (usize, bool);
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(usize, bool), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Count {
    type Value = (usize, bool);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<(usize, bool), A::Error> {
        let mut n = 0;
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok((n, true))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<(usize, bool), A::Error> {
        let (mut entries, mut array, mut rows) = (0, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            entries += 1;
            if self.top {
                let (n, is_array) = map.next_value_seed(Count { top: false })?;
                array = is_array.then_some(n);
                if key == "rows" && is_array {
                    rows = Some(n);
                }
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok((
            if entries == 1 {
                array.unwrap_or(1)
            } else {
                rows.unwrap_or(1)
            },
            false,
        ))
    }
    fn visit_bool<E>(self, _: bool) -> Result<(usize, bool), E> {
        Ok((0, false))
    }
    fn visit_i64<E>(self, _: i64) -> Result<(usize, bool), E> {
        Ok((0, false))
    }
    fn visit_u64<E>(self, _: u64) -> Result<(usize, bool), E> {
        Ok((0, false))
    }
    fn visit_f64<E>(self, _: f64) -> Result<(usize, bool), E> {
        Ok((0, false))
    }
    fn visit_str<E>(self, _: &str) -> Result<(usize, bool), E> {
        Ok((0, false))
    }
    fn visit_unit<E>(self) -> Result<(usize, bool), E> {
        Ok((0, false))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_rows_as_the_full_parse_does() {
        let count = |body: &str| {
            serde_json::from_str::<super::RowCount>(body)
                .map(|c| c.0)
                .ok()
        };
        assert_eq!(count(r#"[{"a":1},{"b":[1,2]},3]"#), Some(3));
        assert_eq!(count(r#"{"records":[{"a":1},{"a":2}]}"#), Some(2));
        assert_eq!(count(r#"{"id":1,"x":[1]}"#), Some(1));
        assert_eq!(
            count(r#"{"operation":"insert","rows":[{"a":1},{"a":2}]}"#),
            Some(2)
        );
        assert_eq!(
            count(r#"{"operation":"insert","ro\u0077s":[{"a":1},{"a":2}]}"#),
            Some(2)
        );
        assert_eq!(count(r#"{"x":{"y":[1,2,3]}}"#), Some(1));
        assert_eq!(count(r#"[{"a":1},"#), None);
        assert_eq!(count(r#"["\x"]"#), None);
    }
}

/// Checks `X-Backflow-Signature: t=UNIX,v1=HEX` = HMAC-SHA256(secret, "UNIX." + body).
fn verify_signature(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    use hmac::Mac;
    let header = headers
        .get("x-backflow-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or("no X-Backflow-Signature header")?;
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", x)) => t = Some(x),
            Some(("v1", x)) => v1 = Some(x),
            _ => {}
        }
    }
    let (t, v1) = (t.ok_or("no t=")?, v1.ok_or("no v1=")?);
    let expected = hex::decode(v1).map_err(|_| "v1 is not hex")?;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| "signature mismatch".to_string())
}
