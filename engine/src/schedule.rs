//! Cron schedules of syncs (`schedule = "*/15 * * * *"`, `timezone = "Europe/Paris"`): when a
//! schedule fires next, and whether it fired while nobody was watching (the service was down).
//!
//! Pure time arithmetic over [`jiff`] timestamps; the service's scheduler decides what to do
//! with the answers. Patterns have 5 fields (minute first) or 6 (seconds first); `@hourly`
//! and friends work. A local time skipped or repeated by a daylight-saving change fires once.

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use std::str::FromStr;

/// A parsed schedule and the time zone its fields are read in.
#[derive(Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: TimeZone,
    /// As written, for listings.
    pub pattern: String,
    /// IANA name (`UTC` when none is given).
    pub timezone: String,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Schedule({:?} in {})", self.pattern, self.timezone)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.timezone == other.timezone
    }
}

/// What is wrong with a schedule, and in which field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The sync's `schedule` is not a cron pattern croner accepts.
    #[error("{pattern:?} is not a cron pattern: {reason} (5 fields \"min hour day month weekday\", or 6 with seconds first)")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// What the cron parser objected to.
        reason: String,
    },
    /// The sync's `timezone` is not a known IANA time zone name.
    #[error("unknown time zone {0:?} (use an IANA name such as \"Europe/Paris\" or \"UTC\")")]
    TimeZone(String),
}

impl Schedule {
    /// Parses a sync's `schedule` pattern, read in `timezone` (an IANA name; UTC when
    /// `None`). Surrounding whitespace is ignored.
    pub fn parse(pattern: &str, timezone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let cron = croner::Cron::from_str(pattern.trim()).map_err(|e| ScheduleError::Pattern {
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })?;
        let tz_name = timezone.unwrap_or("UTC");
        let tz =
            TimeZone::get(tz_name).map_err(|_| ScheduleError::TimeZone(tz_name.to_string()))?;
        Ok(Schedule {
            cron,
            tz,
            pattern: pattern.trim().to_string(),
            timezone: tz_name.to_string(),
        })
    }

    /// The first time strictly after `after` at which the schedule fires.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let zoned = after.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&zoned, false)
            .ok()
            .map(|z: Zoned| z.timestamp())
    }

    /// The last time in `(since, now]` at which the schedule fired, if any: a fire missed
    /// while the service was not running.
    pub fn missed(&self, since: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let first = self.next_after(since)?;
        if first > now {
            return None;
        }
        // Walk back from now rather than forward from `since`: a long outage of a
        // every-second schedule must not take millions of steps.
        let zoned = now.to_zoned(self.tz.clone());
        self.cron
            .find_previous_occurrence(&zoned, true)
            .ok()
            .map(|z: Zoned| z.timestamp())
            .filter(|t| *t > since)
            .or(Some(first))
    }
}

/// A timestamp as RFC 3339 in UTC, as run records write times.
pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn five_fields_fire_on_the_minute() {
        let s = Schedule::parse("*/15 * * * *", None).unwrap();
        assert_eq!(
            s.next_after(ts("2026-11-27T10:07:30Z")),
            Some(ts("2026-11-27T10:15:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-11-27T10:15:00Z")),
            Some(ts("2026-11-27T10:30:00Z")),
            "strictly after"
        );
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let s = Schedule::parse("*/2 * * * * *", None).unwrap();
        assert_eq!(
            s.next_after(ts("2026-11-27T10:00:01Z")),
            Some(ts("2026-11-27T10:00:02Z"))
        );
    }

    #[test]
    fn fields_are_read_in_the_time_zone() {
        // 09:00 in Paris is 08:00 UTC in winter.
        let s = Schedule::parse("0 9 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(
            s.next_after(ts("2026-11-27T00:00:00Z")),
            Some(ts("2026-11-27T08:00:00Z"))
        );
        // ... and 07:00 UTC in summer.
        assert_eq!(
            s.next_after(ts("2026-07-01T00:00:00Z")),
            Some(ts("2026-07-01T07:00:00Z"))
        );
    }

    #[test]
    fn a_skipped_local_time_still_fires_once() {
        // 2026-03-29 02:30 does not exist in Paris (clocks jump 02:00 → 03:00).
        let s = Schedule::parse("30 2 * * *", Some("Europe/Paris")).unwrap();
        let next = s.next_after(ts("2026-03-28T12:00:00Z")).unwrap();
        assert!(
            next > ts("2026-03-28T12:00:00Z") && next < ts("2026-03-30T12:00:00Z"),
            "{next}"
        );
    }

    #[test]
    fn missed_fires_are_found_once() {
        let s = Schedule::parse("0 * * * *", None).unwrap();
        assert_eq!(
            s.missed(ts("2026-11-27T10:00:00Z"), ts("2026-11-27T10:59:59Z")),
            None
        );
        assert_eq!(
            s.missed(ts("2026-11-27T10:00:00Z"), ts("2026-11-27T11:00:00Z")),
            Some(ts("2026-11-27T11:00:00Z"))
        );
        // Down for three fires: the latest is reported, once.
        assert_eq!(
            s.missed(ts("2026-11-27T10:00:00Z"), ts("2026-11-27T13:20:00Z")),
            Some(ts("2026-11-27T13:00:00Z"))
        );
        // A long outage of an every-second schedule answers at once.
        let every_second = Schedule::parse("* * * * * *", None).unwrap();
        assert_eq!(
            every_second.missed(ts("2025-01-01T00:00:00Z"), ts("2026-11-27T10:00:00Z")),
            Some(ts("2026-11-27T10:00:00Z"))
        );
    }

    #[test]
    fn bad_patterns_and_zones_are_named() {
        let e = Schedule::parse("every monday", None).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"every monday\" is not a cron pattern"),
            "{e}"
        );
        assert!(Schedule::parse("61 * * * *", None).is_err());
        let e = Schedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err();
        assert_eq!(e, ScheduleError::TimeZone("Mars/Olympus".into()));
        // `@hourly` is the top of every hour, not merely accepted.
        let hourly = Schedule::parse("@hourly", None).unwrap();
        let at = |t: &str| t.parse::<Timestamp>().unwrap();
        assert_eq!(
            hourly.next_after(at("2026-03-01T10:15:00Z")),
            Some(at("2026-03-01T11:00:00Z"))
        );
        assert_eq!(
            hourly.next_after(at("2026-03-01T11:00:00Z")),
            Some(at("2026-03-01T12:00:00Z"))
        );
    }
}
