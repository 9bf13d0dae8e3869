//! What a receiver keeps: the options it was started with, the requests it recorded, and
//! the counters its handlers share.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// One recorded request.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Received {
    /// The HTTP method (`POST`, `PATCH`, …).
    pub method: String,
    /// The path with its query string.
    pub path: String,
    /// Every header, its value read as UTF-8 (lossily).
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON, or as a string when it is not JSON.
    pub body: serde_json::Value,
    /// Rows in the body: the array's length (or a wrapper object's array), or 1 for an object.
    pub rows: usize,
    /// The status the receiver answered with.
    pub status: u16,
    /// Rows of the request its answer refused one by one (a 207 Multi-Status).
    #[serde(default)]
    pub refused: usize,
}

/// How a receiver behaves: by default it answers `200 {"ok":true}` to everything; each
/// option makes it behave more like a real API (slow, failing, rate-limited, picky).
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
    /// Answer `207 Multi-Status` to a request containing rows whose field (first) equals one
    /// of the values (second, compared as text), refusing only those rows: the body is
    /// `{"errors": [{"index": I, "id": ID, "message": "..."}]}`, one error per such row, by
    /// its position in the request (from 0) and its `id` field. The other rows are accepted.
    pub multi_status: Option<(String, Vec<String>)>,
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
    /// Keep a record store keyed by this field: accepted rows merge into records by key,
    /// deletes remove them, and `/_records` reads and edits them (see `records.rs`).
    pub records: Option<String>,
}

/// The state every request handler of one receiver shares.
pub(super) struct Shared {
    pub(super) received: Mutex<Vec<Received>>,
    pub(super) out: Option<Mutex<std::fs::File>>,
    pub(super) options: ReceiverOptions,
    /// Error budget for `error_rate` and the accepted-request times of the last second.
    pub(super) errors_due: Mutex<f64>,
    pub(super) window: Mutex<std::collections::VecDeque<std::time::Instant>>,
    pub(super) started: std::time::Instant,
    /// Requests received so far (numbering for `fail_requests`).
    pub(super) count: std::sync::atomic::AtomicUsize,
    /// Rows accepted but not kept (`discard`).
    pub(super) discarded_rows: std::sync::atomic::AtomicUsize,
    /// Requests being handled now, and the most ever at once.
    pub(super) active: std::sync::atomic::AtomicUsize,
    pub(super) max_active: std::sync::atomic::AtomicUsize,
    /// The record store (`records`).
    pub(super) records: Option<super::record_store::RecordStore>,
}
