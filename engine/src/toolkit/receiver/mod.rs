//! `backflow receiver`: a local webhook endpoint that records what it receives, for demos
//! and tests. Every request to any path is recorded and answered `200 {"ok":true}`, unless a
//! flag makes it behave like a real API: added latency, an error rate, 429 with
//! `Retry-After` above a request rate, refusing rows whose field has a value (the whole
//! request with 422, or only those rows with a 207 Multi-Status), verifying HMAC signatures. `GET /_receiver/requests` returns everything recorded so far as JSON.
//! With `records`, it also keeps what a record-keeping API would hold (`records.rs`):
//! rows merged into records by key, readable and editable under `/_records`.
//!
//! The handler answers in named steps (`answer.rs`): the fast counting path of a benchmark's
//! receiver, the verdict (faults injected in a fixed order), then keeping the request.

mod answer;
mod record_store;
mod records;
mod row_count;
mod signature;
mod state;

pub use state::{Received, ReceiverOptions};

use axum::extract::State;
use axum::response::{IntoResponse, Json};
use state::Shared;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// A running receiver. Dropping it stops the server.
pub struct Receiver {
    /// The address it listens on (with the port picked when started on port 0).
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
            .map(|r| r.rows - r.refused)
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

    /// The record store's records by key (empty without `records`).
    pub fn records(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.shared
            .records
            .as_ref()
            .map(|r| r.all())
            .unwrap_or_default()
    }

    /// The stored record of `key` (compared as text), if any.
    pub fn record(&self, key: &str) -> Option<serde_json::Value> {
        self.shared.records.as_ref().and_then(|r| r.get(key))
    }

    /// Replaces the record of `key` behind backflow's back (as `PUT /_records/{key}`);
    /// `record` must be a JSON object, anything else is ignored.
    pub fn put_record(&self, key: &str, record: serde_json::Value) {
        if let (Some(store), serde_json::Value::Object(record)) = (&self.shared.records, record) {
            store.put(key, record);
        }
    }

    /// Removes the record of `key` behind backflow's back; whether there was one.
    pub fn remove_record(&self, key: &str) -> bool {
        self.shared.records.as_ref().is_some_and(|r| r.remove(key))
    }

    /// The URL of `path` on this receiver (`path` starts with `/`).
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
        records: options.records.clone().map(record_store::RecordStore::new),
        options,
        errors_due: Mutex::new(0.0),
        window: Mutex::new(Default::default()),
        count: Default::default(),
        discarded_rows: Default::default(),
        active: Default::default(),
        max_active: Default::default(),
        started: std::time::Instant::now(),
    });
    let mut app = axum::Router::new().route("/_receiver/requests", axum::routing::get(list));
    if shared.records.is_some() {
        app = app.merge(records::routes());
    }
    let app = app
        .fallback(answer::record)
        // Accept what the engine may send in one request (batches are cut at 16 MiB). With
        // axum's 2 MB default, a larger batch got a 413 before its body was read; under load
        // the client saw the closed connection ("broken pipe") instead of the 413 and retried
        // the same batch until it gave up.
        .layer(axum::extract::DefaultBodyLimit::max(32 << 20))
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

/// `GET /_receiver/requests`: everything recorded so far.
async fn list(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.received.lock().unwrap().clone())
}
