//! A plugin's stdout and stderr. Each line goes to the logs at debug level, with the
//! plugin's name and granted secrets cut out (`RUST_LOG=backflow=debug` shows them). Of
//! stderr, the last few KiB are also kept for error messages. Writes never fail (a full
//! buffer drops the oldest bytes), so a chatty plugin cannot make its own `eprintln!` panic,
//! and a later panic message is never lost behind old output.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line forwarded to the logs; a longer one is cut in pieces of this size.
const MAX_LINE: usize = 4096;

#[derive(Clone)]
pub struct StderrTail {
    buf: Arc<Mutex<VecDeque<u8>>>,
    capacity: usize,
    lines: Arc<LineLog>,
}

/// Cuts output into lines and logs each at debug level.
struct LineLog {
    plugin: String,
    stream: &'static str,
    secrets: Vec<String>,
    partial: Mutex<Vec<u8>>,
}

impl LineLog {
    fn write(&self, data: &[u8]) {
        // Nothing to do (and no copying) unless debug logs are on.
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let Ok(mut partial) = self.partial.lock() else {
            return;
        };
        for &b in data {
            if b == b'\n' || partial.len() >= MAX_LINE {
                self.emit(&partial);
                partial.clear();
                if b == b'\n' {
                    continue;
                }
            }
            partial.push(b);
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = crate::redact::redact(&self.secrets, text.trim_end_matches('\r'));
        tracing::debug!(plugin = %self.plugin, stream = self.stream, "{text}");
    }
}

impl Drop for LineLog {
    fn drop(&mut self) {
        if let Ok(partial) = self.partial.get_mut() {
            if !partial.is_empty() && tracing::enabled!(tracing::Level::DEBUG) {
                let line = std::mem::take(partial);
                self.emit(&line);
            }
        }
    }
}

impl StderrTail {
    /// A plugin's stderr: kept (the last `capacity` bytes) and logged.
    pub fn new(capacity: usize, plugin: &str, secrets: Vec<String>) -> StderrTail {
        StderrTail {
            buf: Arc::new(Mutex::new(VecDeque::with_capacity(capacity))),
            capacity,
            lines: Arc::new(LineLog {
                plugin: plugin.into(),
                stream: "stderr",
                secrets,
                partial: Mutex::default(),
            }),
        }
    }

    /// A plugin's stdout: logged only.
    pub fn stdout(plugin: &str, secrets: Vec<String>) -> StderrTail {
        StderrTail {
            buf: Arc::default(),
            capacity: 0,
            lines: Arc::new(LineLog {
                plugin: plugin.into(),
                stream: "stdout",
                secrets,
                partial: Mutex::default(),
            }),
        }
    }

    /// What was written most recently (at most the capacity).
    pub fn contents(&self) -> Vec<u8> {
        self.buf.lock().unwrap().iter().copied().collect()
    }

    /// Forgets what was written (called at the start of each guest call, so an error shows
    /// that call's output).
    pub fn clear(&self) {
        self.buf.lock().unwrap().clear();
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.lines.write(data);
        if self.capacity == 0 {
            return Poll::Ready(Ok(data.len()));
        }
        let mut buf = self.buf.lock().unwrap();
        let keep = &data[data.len().saturating_sub(self.capacity)..];
        let len = buf.len();
        let overflow = (len + keep.len()).saturating_sub(self.capacity);
        buf.drain(..overflow.min(len));
        buf.extend(keep);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
