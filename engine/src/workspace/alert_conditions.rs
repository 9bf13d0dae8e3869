//! The conditions of an `[[alerts]]` route beyond run outcomes, and how often a route is
//! reminded of a condition that lasts: `repeat_after`, `rejected_rows_over`,
//! `rejected_percent_over`, `row_count_deviation_percent` (with `row_count_baseline_runs`
//! and `row_count_measure`), `run_longer_than` and `stale_after`, as a loaded workspace
//! holds them (`alert_keys.rs` reads and checks them), and the durations they are written in.

/// How long a condition may stay firing before its route hears of it again, by default.
pub const DEFAULT_REPEAT_AFTER_S: u64 = 3600;
/// How many successful runs the row-count median is taken over, by default.
pub const DEFAULT_BASELINE_RUNS: u64 = 7;
/// The most runs a row-count baseline may span.
pub(super) const MAX_BASELINE_RUNS: u64 = 1000;

/// Which count of a run the row-count deviation watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCountMeasure {
    /// Rows the model had (`model_rows`).
    ModelRows,
    /// Rows the run planned to send (added, changed and removed, by mode).
    RowsToSend,
}

impl RowCountMeasure {
    /// The name `row_count_measure` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            RowCountMeasure::ModelRows => "model_rows",
            RowCountMeasure::RowsToSend => "rows_to_send",
        }
    }
}

/// A row count deviating from the median of the last successful runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowCountDeviation {
    /// Fires when the count differs from the median by more than this percentage.
    pub percent: f64,
    /// How many successful runs the median is taken over (fewer: not judged yet).
    pub baseline_runs: u64,
    /// Which count is watched.
    pub measure: RowCountMeasure,
}

/// The conditions and reminder interval of one route (every threshold optional: a condition
/// is watched only when its key is set).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertConditions {
    /// Seconds between reminders of a condition that stays firing (`repeat_after`).
    pub repeat_after_s: u64,
    /// Fires when a run's destination rejected more rows than this.
    pub rejected_rows_over: Option<u64>,
    /// Fires when a run's destination rejected more than this percentage of its planned rows.
    pub rejected_percent_over: Option<f64>,
    /// Fires when a row count deviates from its recent median.
    pub row_count_deviation: Option<RowCountDeviation>,
    /// Fires when a run takes longer than this many seconds.
    pub run_longer_than_s: Option<u64>,
    /// Fires when a sync has had no successful run for this many seconds.
    pub stale_after_s: Option<u64>,
}

/// Why a duration (`"90s"`, `"30m"`, `"1h"`, `"2d"`) does not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{text:?} is not a duration: write a whole number and a unit, s, m, h or d (\"30m\", \"1h\"), more than 0")]
pub struct BadDuration {
    text: String,
}

/// Seconds in a duration written as a whole number and a unit (`s`, `m`, `h`, `d`).
pub fn parse_duration(text: &str) -> Result<u64, BadDuration> {
    let bad = || BadDuration {
        text: text.to_string(),
    };
    let t = text.trim();
    let unit_at = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = t.split_at(unit_at);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(scale) {
        Some(s) if s > 0 => Ok(s),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit_and_nothing_else() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        for bad in [
            "",
            "1",
            "h",
            "0s",
            "1.5h",
            "1 week",
            "-1h",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
