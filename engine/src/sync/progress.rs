//! Progress of a long phase (rows read, delivered): log lines at most every two seconds.

use std::time::{Duration, Instant};

/// Logs progress at most every two seconds.
pub(crate) struct Progress {
    pub(crate) what: &'static str,
    pub(crate) total: u64,
    pub(crate) done: u64,
    pub(crate) last: Instant,
    pub(crate) started: Instant,
}

impl Progress {
    pub(crate) fn new(what: &'static str, total: u64) -> Progress {
        Progress { what, total, done: 0, last: Instant::now(), started: Instant::now() }
    }

    pub(crate) fn advance(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed() >= Duration::from_secs(2) {
            self.last = Instant::now();
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            if self.total > 0 {
                tracing::info!("{} {}/{} rows ({rate:.0} rows/s)", self.what, self.done, self.total);
            } else {
                tracing::info!("{} {} rows ({rate:.0} rows/s)", self.what, self.done);
            }
        }
    }
}
