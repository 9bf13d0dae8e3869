//! Rate limits: requests and rows per second, never exceeded.

use crate::sync::prepare::PreparedSync;
use std::time::{Duration, Instant};

/// The sync's own rate limit, or else the one its destination declares.
pub(crate) fn effective_rate_limit(p: &PreparedSync) -> crate::config::RateLimit {
    let own = p.sync.rate_limit;
    if own.requests_per_second.is_some() || own.rows_per_second.is_some() {
        return own;
    }
    match p.destination_plugin.as_ref().and_then(|d| d.spec.default_rate_limit) {
        Some(d) => crate::config::RateLimit { requests_per_second: d.requests_per_second, rows_per_second: d.rows_per_second },
        None => own,
    }
}

/// Spaces requests so a sync never exceeds its rate limit: each request may start only
/// after the previous one's share of a second (and of the row budget) has passed.
pub struct Pacer {
    per_request: Option<Duration>,
    per_row: Option<Duration>,
    next: Instant,
}

impl Pacer {
    pub fn new(limit: crate::config::RateLimit) -> Pacer {
        Pacer {
            per_request: limit.requests_per_second.map(|r| Duration::from_secs_f64(1.0 / r)),
            per_row: limit.rows_per_second.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Instant::now(),
        }
    }

    /// Waits until a request of `rows` rows may go.
    pub async fn wait(&mut self, rows: usize) {
        if self.per_request.is_none() && self.per_row.is_none() {
            return;
        }
        let now = Instant::now();
        if self.next > now {
            tokio::time::sleep_until(self.next.into()).await;
        }
        let start = self.next.max(now);
        let by_requests = self.per_request.unwrap_or_default();
        let by_rows = self.per_row.map(|d| d * rows as u32).unwrap_or_default();
        self.next = start + by_requests.max(by_rows);
    }
}
