//! The per-token limit on state-changing requests (triggers, approvals, reviews, undo):
//! one API token cannot flood the service with runs or audit entries. Reads are not
//! limited, and nothing the scheduler starts goes through here. A refused request is
//! answered `429 Too Many Requests` with `Retry-After`: the client always sees it.

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde_json::json;
use std::num::NonZeroU32;
use std::time::Duration;

/// How many times the table of tokens may grow past its last cleaning before it is cleaned.
const CLEAN_EVERY: usize = 1024;

/// At most N state-changing requests per minute per token (bursts up to N).
pub struct WriteLimiter {
    per_minute: Option<NonZeroU32>,
    limiter: Option<RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>>,
    clock: DefaultClock,
}

/// A request refused by the limit: when the token may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyRequests {
    /// How long until the next request of this token is accepted.
    pub retry_after: Duration,
}

impl WriteLimiter {
    /// A limit of `per_minute` state-changing requests per token; `0` turns it off.
    pub fn new(per_minute: u32) -> WriteLimiter {
        let per_minute = NonZeroU32::new(per_minute);
        WriteLimiter {
            per_minute,
            limiter: per_minute.map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            clock: DefaultClock::default(),
        }
    }

    /// Whether a request with this method changes state (and so counts).
    pub fn counts(method: &Method) -> bool {
        !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
    }

    /// Counts one state-changing request of the token `key` (an identity of the token, never
    /// an unauthenticated value: the table holds one entry per valid token).
    pub fn check(&self, key: &str) -> Result<(), TooManyRequests> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() >= CLEAN_EVERY {
            limiter.retain_recent();
        }
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            TooManyRequests {
                retry_after: wait.max(Duration::from_secs(1)),
            }
        })
    }

    /// The configured limit, for messages.
    pub fn per_minute(&self) -> Option<NonZeroU32> {
        self.per_minute
    }
}

impl TooManyRequests {
    /// `Retry-After` in whole seconds, rounded up.
    pub fn retry_after_s(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

impl IntoResponse for TooManyRequests {
    fn into_response(self) -> Response {
        let seconds = self.retry_after_s();
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({ "error": format!("too many state-changing requests with this token: try again in {seconds} s (`backflow serve --write-requests-per-minute`)"), "retry_after_s": seconds })),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_past_its_quota_waits_and_others_do_not() {
        let limiter = WriteLimiter::new(2);
        assert_eq!(limiter.check("a"), Ok(()));
        assert_eq!(limiter.check("a"), Ok(()));
        let refused = limiter.check("a").unwrap_err();
        assert!(refused.retry_after_s() >= 1 && refused.retry_after_s() <= 30);
        assert_eq!(
            limiter.check("b"),
            Ok(()),
            "another token has its own quota"
        );
        let response = refused.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn zero_turns_the_limit_off_and_reads_never_count() {
        let limiter = WriteLimiter::new(0);
        for _ in 0..1000 {
            assert_eq!(limiter.check("a"), Ok(()));
        }
        assert!(!WriteLimiter::counts(&Method::GET));
        assert!(WriteLimiter::counts(&Method::POST));
    }
}
