//! Rate limits: requests and rows per second, never exceeded. The limit itself is resolved
//! once, when the run is prepared (`PreparedSync::rate_limit`).

use std::time::{Duration, Instant};

/// The slowest pace a limit may set: one request (or row) per this long. A config refuses
/// slower rates; the pacer clamps to it whatever it is given.
pub(crate) const SLOWEST: Duration = Duration::from_secs(1000);

/// One unit's share of a second at `rate` per second, clamped to [`SLOWEST`]; `None` for a
/// rate that is not a positive number (no limit can be derived from it).
fn interval(rate: f64) -> Option<Duration> {
    // NaN is no rate either.
    if rate.is_nan() || rate <= 0.0 {
        return None;
    }
    Some(
        Duration::try_from_secs_f64(1.0 / rate)
            .unwrap_or(SLOWEST)
            .min(SLOWEST),
    )
}

/// Spaces requests so a sync never exceeds its rate limit: each request may start only
/// after the previous one's share of a second (and of the row budget) has passed.
pub struct Pacer {
    per_request: Option<Duration>,
    per_row: Option<Duration>,
    next: Instant,
}

impl Pacer {
    /// A pacer keeping `limit`.
    pub fn new(limit: crate::workspace::RateLimit) -> Pacer {
        Pacer {
            per_request: limit.requests_per_second.and_then(interval),
            per_row: limit.rows_per_second.and_then(interval),
            next: Instant::now(),
        }
    }

    /// Whether it holds requests back at all (the sync or its destination has a rate limit).
    pub fn paces(&self) -> bool {
        self.per_request.is_some() || self.per_row.is_some()
    }

    /// Waits until a request of `rows` rows may go.
    pub async fn wait(&mut self, rows: usize) {
        if !self.paces() {
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
        let rows = u32::try_from(rows).unwrap_or(u32::MAX);
        let by_rows = self
            .per_row
            .map(|d| d.checked_mul(rows).unwrap_or(Duration::MAX))
            .unwrap_or_default();
        // A pace too slow to add to the clock means "not in this process's lifetime".
        self.next = start
            .checked_add(by_requests.max(by_rows))
            .unwrap_or(start + SLOWEST * 1_000_000);
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::RateLimit;

    #[test]
    fn requests_are_spaced_by_the_stricter_of_the_two_limits() {
        // 10 requests/s and 100 rows/s: 50-row requests are bound by rows (0.5 s each),
        // 1-row requests by requests (0.1 s each).
        let mut pacer = Pacer::new(RateLimit {
            requests_per_second: Some(10.0),
            rows_per_second: Some(100.0),
        });
        let t0 = Instant::now();
        let ms = |t: Instant| t.duration_since(t0).as_millis();
        let starts: Vec<u128> = (0..3).map(|_| ms(pacer.reserve(50, t0))).collect();
        assert_eq!(starts, [0, 500, 1000]);
        assert_eq!(ms(pacer.reserve(1, t0)), 1500);
        assert_eq!(ms(pacer.reserve(1, t0)), 1600);
    }

    #[test]
    fn hostile_numbers_never_panic() {
        // Zero, negative and NaN rates give no interval; tiny and huge rates are clamped.
        for rate in [
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            1e-20,
            f64::MIN_POSITIVE,
            1e300,
        ] {
            let mut pacer = Pacer::new(RateLimit {
                requests_per_second: Some(rate),
                rows_per_second: Some(rate),
            });
            let t0 = Instant::now();
            pacer.reserve(usize::MAX, t0);
            pacer.reserve(4_000_000_000, t0);
        }
        assert_eq!(interval(1e-20), Some(SLOWEST));
        assert_eq!(interval(0.0), None);
    }

    #[test]
    fn an_idle_pacer_does_not_bank_credit() {
        let mut pacer = Pacer::new(RateLimit {
            requests_per_second: Some(2.0),
            rows_per_second: None,
        });
        let t0 = Instant::now();
        pacer.reserve(1, t0);
        // Five seconds later the next request goes at once, and the one after 0.5 s later:
        // quiet time is not saved up for a burst.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(pacer.reserve(1, later), later);
        assert_eq!(
            pacer.reserve(1, later).duration_since(later).as_millis(),
            500
        );
    }
}
