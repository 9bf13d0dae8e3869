//! A plugin's stderr: the last few KiB it wrote, kept for error messages. Writes never fail
//! (a full buffer drops the oldest bytes), so a chatty plugin cannot make its own
//! `eprintln!` panic, and a later panic message is never lost behind old output.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

#[derive(Clone)]
pub struct StderrTail {
    buf: Arc<Mutex<VecDeque<u8>>>,
    capacity: usize,
}

impl StderrTail {
    pub fn new(capacity: usize) -> StderrTail {
        StderrTail { buf: Arc::new(Mutex::new(VecDeque::with_capacity(capacity))), capacity }
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
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
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
