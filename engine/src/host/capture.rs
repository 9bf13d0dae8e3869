//! The delivery debugger's recorder: which of a run's `http-send` requests are kept, what a
//! kept one says (secrets redacted, bodies cut), and the write call it was part of.
//!
//! A run hands every destination writer the same [`RequestCapture`]; the host numbers the
//! run's requests as they start, and, once one is answered, decides with the run's
//! [`CaptureMode`] whether it is kept. A kept request goes into a bounded channel that the run
//! drains into the state on its own task: delivery never waits for it, and a request that
//! finds the channel full is dropped and counted ([`RequestCapture::dropped`]).
//!
//! Redaction: a header that carries credentials by name (`Authorization`, `Cookie`, …) or
//! contains the value of a granted environment variable reads `[redacted]`; every other
//! header value, the URL and both bodies go through [`crate::redact::redact`] (granted
//! secrets and credential-shaped values).

use super::bindings::newest_host::{HttpError, HttpHeader, HttpRequest, HttpResponse};
use crate::domain::{CaptureMode, CapturedBatch, CapturedRequest};
use crate::redact::{redact, REDACTED};
use backflow_plugin_sdk::{Batch, Operation};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// How many kept requests may wait for the state's writer before new ones are dropped.
pub const CAPTURE_QUEUE: usize = 256;

/// Header names whose values are credentials whatever they hold (compared lowercase).
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
];

/// What a run's writers share: which requests to keep and where kept ones go.
pub struct RequestCapture {
    mode: CaptureMode,
    max_body_bytes: usize,
    run_id: String,
    next_seq: AtomicU64,
    next_call: AtomicU64,
    dropped: AtomicU64,
    sender: mpsc::Sender<CapturedRequest>,
}

impl RequestCapture {
    /// A recorder for run `run_id` keeping `mode`'s requests with bodies cut at
    /// `max_body_bytes`, and the receiving end of its channel (at most `queue` waiting).
    pub fn new(
        mode: CaptureMode,
        max_body_bytes: usize,
        run_id: &str,
        queue: usize,
    ) -> (Arc<RequestCapture>, mpsc::Receiver<CapturedRequest>) {
        let (sender, receiver) = mpsc::channel(queue.max(1));
        let capture = RequestCapture {
            mode,
            max_body_bytes,
            run_id: run_id.to_string(),
            next_seq: AtomicU64::new(1),
            next_call: AtomicU64::new(1),
            dropped: AtomicU64::new(0),
            sender,
        };
        (Arc::new(capture), receiver)
    }

    /// Kept requests dropped because the channel was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Requests the run made so far, kept or not.
    pub fn requests_made(&self) -> u64 {
        self.next_seq.load(Ordering::Relaxed) - 1
    }
}

/// One writer's side of the capture: the run's recorder and the write call in progress.
pub(crate) struct WriterCapture {
    recorder: Arc<RequestCapture>,
    /// The destination's primary-key fields, to name the rows of a batch.
    primary_key: Vec<String>,
    call: Option<WriteCall>,
    /// When the request under way left for the network (after its turn at the gate).
    sending_since: Option<Instant>,
}

/// The write call a writer is in: its number in the run, operation and batch.
struct WriteCall {
    index: u64,
    operation: Operation,
    batch: Batch,
}

/// A request as it started: what is kept of it if it is kept.
pub(crate) struct Started {
    seq: u64,
    started: Instant,
    started_at_ms: u64,
    method: String,
    url: String,
    headers: Vec<HttpHeader>,
    body_head: Vec<u8>,
    body_bytes: u64,
}

impl WriterCapture {
    /// A writer's capture into `recorder`; rows are named by the `primary_key` fields.
    pub(crate) fn new(recorder: Arc<RequestCapture>, primary_key: Vec<String>) -> WriterCapture {
        WriterCapture {
            recorder,
            primary_key,
            call: None,
            sending_since: None,
        }
    }

    /// A write call of `batch` as `operation` begins (a copy of the batch is kept to name
    /// its rows, should one of its requests be kept).
    pub(crate) fn begin_call(&mut self, operation: Operation, batch: &Batch) {
        let index = self.recorder.next_call.fetch_add(1, Ordering::Relaxed);
        self.call = Some(WriteCall {
            index,
            operation,
            batch: batch.clone(),
        });
    }

    /// The write call ended.
    pub(crate) fn end_call(&mut self) {
        self.call = None;
    }

    /// The request leaves for the network now (its turn at the gate came).
    pub(crate) fn sending(&mut self) {
        self.sending_since = Some(Instant::now());
    }

    /// Numbers a request as it starts and keeps what may be shown of it.
    pub(crate) fn start(&mut self, request: &HttpRequest, now_ms: u64) -> Started {
        self.sending_since = None;
        let keep = self.recorder.max_body_bytes + 256;
        Started {
            seq: self.recorder.next_seq.fetch_add(1, Ordering::Relaxed),
            started: Instant::now(),
            started_at_ms: now_ms,
            method: request.method.to_ascii_uppercase(),
            url: request.url.clone(),
            headers: request.headers.clone(),
            body_head: request.body[..request.body.len().min(keep)].to_vec(),
            body_bytes: request.body.len() as u64,
        }
    }

    /// The request `started` ended with `result`: kept if the run's mode says so.
    pub(crate) fn finish(
        &mut self,
        started: Started,
        result: &Result<HttpResponse, HttpError>,
        plugin: &str,
        secrets: &[String],
    ) {
        let failed = match result {
            Ok(r) => r.status >= 400,
            Err(_) => true,
        };
        let recorder = &self.recorder;
        if !recorder.mode.keeps(started.seq, failed) {
            return;
        }
        let since = self.sending_since.take().unwrap_or(started.started);
        let max = recorder.max_body_bytes;
        let (status, error, response_headers, response_body, response_bytes) = match result {
            Ok(r) => (
                Some(r.status),
                None,
                redacted_headers(&r.headers, secrets),
                redacted_body(&r.body, max, secrets),
                r.body.len() as u64,
            ),
            Err(e) => (
                None,
                Some(redact(secrets, &http_error_text(e))),
                Vec::new(),
                String::new(),
                0,
            ),
        };
        let captured = CapturedRequest {
            run_id: recorder.run_id.clone(),
            seq: started.seq,
            plugin: plugin.to_string(),
            started_at_ms: started.started_at_ms,
            duration_ms: since.elapsed().as_millis() as u64,
            method: started.method,
            url: redact(secrets, &started.url),
            status,
            error,
            failed,
            request_headers: redacted_headers(&started.headers, secrets),
            request_body: redacted_body(&started.body_head, max, secrets),
            request_bytes: started.body_bytes,
            response_headers,
            response_body,
            response_bytes,
            batch: self.call.as_ref().map(|c| c.described(&self.primary_key)),
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = recorder.sender.try_send(captured) {
            recorder.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl WriteCall {
    fn described(&self, primary_key: &[String]) -> CapturedBatch {
        CapturedBatch {
            index: self.index,
            operation: self.operation.to_string(),
            rows: u64::from(self.batch.row_count),
            keys: batch_keys(&self.batch, primary_key),
        }
    }
}

/// The primary keys of a batch's rows as text (`1`, `1|eu`); none when the batch lacks a
/// key field or does not decode.
fn batch_keys(batch: &Batch, primary_key: &[String]) -> Vec<String> {
    let mut columns = Vec::new();
    for field in primary_key {
        let Some(index) = batch.column_index(field) else {
            return Vec::new();
        };
        let values: Result<Vec<String>, _> = batch
            .column_values(index)
            .map(|v| v.map(|v| v.to_string()))
            .collect();
        match values {
            Ok(v) => columns.push(v),
            Err(_) => return Vec::new(),
        }
    }
    (0..batch.row_count as usize)
        .map(|row| {
            columns
                .iter()
                .map(|c| c.get(row).map(String::as_str).unwrap_or("?"))
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

/// Headers as shown: credentials and granted secrets redacted.
fn redacted_headers(headers: &[HttpHeader], secrets: &[String]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|HttpHeader { name, value }| {
            let lower = name.to_ascii_lowercase();
            let carries_secret = secrets
                .iter()
                .any(|s| s.len() >= 4 && value.contains(s.as_str()));
            let shown = if CREDENTIAL_HEADERS.contains(&lower.as_str()) || carries_secret {
                REDACTED.to_string()
            } else {
                redact(secrets, value)
            };
            (name.clone(), shown)
        })
        .collect()
}

/// A body as shown: its first `max` bytes as text, redacted. It is redacted before it is
/// cut (with room for the longest secret), so a secret across the cut leaks no prefix.
fn redacted_body(body: &[u8], max: usize, secrets: &[String]) -> String {
    let longest = secrets.iter().map(String::len).max().unwrap_or(0);
    let head = &body[..body.len().min(max + longest.max(64))];
    let text = redact(secrets, &String::from_utf8_lossy(head));
    if text.len() <= max && head.len() == body.len() {
        return text;
    }
    let mut cut = max.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… (cut at {max} bytes)", &text[..cut])
}

fn http_error_text(e: &HttpError) -> String {
    match e {
        HttpError::InvalidRequest(m) => format!("invalid request: {m}"),
        HttpError::Denied(m) => format!("denied: {m}"),
        HttpError::Timeout(m) => format!("timeout: {m}"),
        HttpError::Connection(m) => format!("connection failed: {m}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: &str) -> HttpHeader {
        HttpHeader {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn credential_headers_and_granted_secrets_are_redacted() {
        let secrets = vec!["s3cr3t-value".to_string()];
        let shown = redacted_headers(
            &[
                header("Authorization", "Bearer anything"),
                header("X-Custom", "token s3cr3t-value"),
                header("Content-Type", "application/json"),
                header("Cookie", "a=b"),
            ],
            &secrets,
        );
        let values: Vec<&str> = shown.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(
            values,
            vec![REDACTED, REDACTED, "application/json", REDACTED]
        );
    }

    #[test]
    fn bodies_are_redacted_then_cut() {
        let secrets = vec!["s3cr3t-value".to_string()];
        let body = br#"{"echo":"Bearer s3cr3t-value","rest":"xxxxxxxx"}"#;
        let shown = redacted_body(body, 1000, &secrets);
        assert!(!shown.contains("s3cr3t"), "{shown}");
        // A secret across the cut leaks nothing of itself.
        let shown = redacted_body(b"0123s3cr3t-value", 8, &secrets);
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(shown.ends_with("(cut at 8 bytes)"), "{shown}");
    }

    #[test]
    fn rows_are_named_by_their_keys() {
        use backflow_plugin_sdk::{BatchBuilder, Column, Value, ValueType};
        let column = |name: &str| Column {
            name: name.into(),
            value_type: ValueType::Text,
            nullable: false,
        };
        let mut b = BatchBuilder::new(vec![column("id"), column("email")]);
        b.push_row(&[Value::Text("7".into()), Value::Text("a@x".into())]);
        let batch = b.finish();
        assert_eq!(batch_keys(&batch, &["id".to_string()]), vec!["7"]);
        assert!(batch_keys(&batch, &["nope".to_string()]).is_empty());
    }
}
