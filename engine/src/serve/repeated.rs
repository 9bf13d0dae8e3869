//! Saying a standing condition once, not on every tick: the scheduler looks at the
//! configuration four times a second, and a condition that lasts (nothing published yet, a
//! published configuration that no longer loads) is logged when it starts or changes, then
//! again only every few minutes while it lasts.

use std::time::{Duration, Instant};

/// How often a condition that lasts is said again.
pub(crate) const REPEAT_EVERY: Duration = Duration::from_secs(300);

/// The last message logged about a standing condition, and when.
#[derive(Debug)]
pub(crate) struct RepeatedMessage {
    last: Option<(String, Instant)>,
    every: Duration,
}

impl RepeatedMessage {
    /// Nothing said yet; a message lasting is said again every `every`.
    pub(crate) fn new(every: Duration) -> RepeatedMessage {
        RepeatedMessage { last: None, every }
    }

    /// Whether `message` is to be logged at `now`: it is not the message last logged, or
    /// `every` has passed since. Records it when it is.
    pub(crate) fn due(&mut self, message: &str, now: Instant) -> bool {
        let due = match &self.last {
            Some((last, at)) => last != message || now.duration_since(*at) >= self.every,
            None => true,
        };
        if due {
            self.last = Some((message.to_string(), now));
        }
        due
    }

    /// The condition is over: the next message is said at once.
    pub(crate) fn clear(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lasting_message_is_said_once_then_every_period() {
        let start = Instant::now();
        let mut m = RepeatedMessage::new(Duration::from_secs(300));
        assert!(m.due("nothing published", start));
        // Four ticks a second for a minute: silent.
        for i in 1..240 {
            assert!(!m.due("nothing published", start + Duration::from_millis(250 * i)));
        }
        assert!(m.due("nothing published", start + Duration::from_secs(300)));
        // Another message is said at once; so is the first again once the condition ended.
        assert!(m.due("does not load", start + Duration::from_secs(301)));
        m.clear();
        assert!(m.due("does not load", start + Duration::from_secs(302)));
    }
}
