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
        let start = self.reserve(rows, now);
        if start > now {
            tokio::time::sleep_until(start.into()).await;
        }
    }

    /// Reserves the slot of the next request of `rows` rows: when it may start (never before
    /// `now`); the one after may start once this one's share of a second has passed.
    fn reserve(&mut self, rows: usize, now: Instant) -> Instant {
        let start = self.next.max(now);
        let by_requests = self.per_request.unwrap_or_default();
        let by_rows = self.per_row.map(|d| d * rows as u32).unwrap_or_default();
        self.next = start + by_requests.max(by_rows);
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimit;

    #[test]
    fn requests_are_spaced_by_the_stricter_of_the_two_limits() {
        // 10 requests/s and 100 rows/s: 50-row requests are bound by rows (0.5 s each),
        // 1-row requests by requests (0.1 s each).
        let mut pacer = Pacer::new(RateLimit { requests_per_second: Some(10.0), rows_per_second: Some(100.0) });
        let t0 = Instant::now();
        let ms = |t: Instant| t.duration_since(t0).as_millis();
        let starts: Vec<u128> = (0..3).map(|_| ms(pacer.reserve(50, t0))).collect();
        assert_eq!(starts, [0, 500, 1000]);
        assert_eq!(ms(pacer.reserve(1, t0)), 1500);
        assert_eq!(ms(pacer.reserve(1, t0)), 1600);
    }

    #[test]
    fn an_idle_pacer_does_not_bank_credit() {
        let mut pacer = Pacer::new(RateLimit { requests_per_second: Some(2.0), rows_per_second: None });
        let t0 = Instant::now();
        pacer.reserve(1, t0);
        // Five seconds later the next request goes at once, and the one after 0.5 s later:
        // quiet time is not saved up for a burst.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(pacer.reserve(1, later), later);
        assert_eq!(pacer.reserve(1, later).duration_since(later).as_millis(), 500);
    }
}
