//! `backflow receiver`: a local webhook endpoint that records what it receives, for demos
//! and tests. Every request to any path is answered `200 {"ok":true}` and recorded; `GET
//! /_receiver/requests` returns everything recorded so far as JSON.

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
    /// Rows in the body: the array's length, or 1 for an object.
    pub rows: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ReceiverOptions {
    /// Append each request as a JSON line to this file.
    pub out: Option<PathBuf>,
    /// Print one line per request to stdout.
    pub print: bool,
}

struct Shared {
    received: Mutex<Vec<Received>>,
    out: Option<Mutex<std::fs::File>>,
    print: bool,
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

    /// Total rows received so far.
    pub fn rows(&self) -> usize {
        self.shared.received.lock().unwrap().iter().map(|r| r.rows).sum()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Starts a receiver on `addr` (use port 0 for a free port).
pub async fn start(addr: SocketAddr, options: ReceiverOptions) -> anyhow::Result<Receiver> {
    let out = match &options.out {
        Some(path) => Some(Mutex::new(
            std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let shared = Arc::new(Shared { received: Mutex::new(Vec::new()), out, print: options.print });
    let app = axum::Router::new()
        .route("/_receiver/requests", axum::routing::get(list))
        .fallback(record)
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Receiver { addr, shared, _stop: stop })
}

async fn list(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.received.lock().unwrap().clone())
}

async fn record(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let body_json = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    let rows = match &body_json {
        serde_json::Value::Array(a) => a.len(),
        serde_json::Value::Object(_) => 1,
        _ => 0,
    };
    let received = Received {
        method: method.to_string(),
        path: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect(),
        body: body_json,
        rows,
    };
    if shared.print {
        println!("{} {}  {} rows  {} bytes", received.method, received.path, rows, body.len());
    }
    if let Some(out) = &shared.out {
        let mut line = serde_json::to_vec(&received).unwrap_or_default();
        line.push(b'\n');
        let _ = out.lock().unwrap().write_all(&line);
    }
    shared.received.lock().unwrap().push(received);
    Json(serde_json::json!({"ok": true}))
}
