//! The alert keys beyond run outcomes (`repeat_after`, `rejected_rows_over`,
//! `rejected_percent_over`, `row_count_*`, `run_longer_than`, `stale_after`) read from an
//! `[[alerts]]` table and checked at load; each problem names `alerts[i].KEY`.

use super::alert_conditions::{
    parse_duration, AlertConditions, RowCountDeviation, RowCountMeasure, DEFAULT_BASELINE_RUNS,
    DEFAULT_REPEAT_AFTER_S, MAX_BASELINE_RUNS,
};
use super::definitions::Origin;
use super::errors::ConfigError;
use super::schema::AlertFile;

/// Reads the route's conditions; each problem names `alerts[i].KEY`.
pub(super) fn alert_conditions(
    file: &AlertFile,
    origin: &Origin,
    errors: &mut Vec<ConfigError>,
) -> AlertConditions {
    let mut duration = |key: &str, value: &Option<String>| -> Option<u64> {
        let text = value.as_ref()?;
        match parse_duration(text) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(origin.error(key, e.to_string()));
                None
            }
        }
    };
    let repeat_after_s =
        duration("repeat_after", &file.repeat_after).unwrap_or(DEFAULT_REPEAT_AFTER_S);
    let run_longer_than_s = duration("run_longer_than", &file.run_longer_than);
    let stale_after_s = duration("stale_after", &file.stale_after);
    let mut percent = |key: &str, value: Option<f64>| -> Option<f64> {
        let v = value?;
        if v.is_finite() && v >= 0.0 {
            Some(v)
        } else {
            errors.push(origin.error(
                key,
                format!("{v} is not a percentage (a number of 0 or more)"),
            ));
            None
        }
    };
    let rejected_percent_over = percent("rejected_percent_over", file.rejected_percent_over);
    let deviation_percent = percent(
        "row_count_deviation_percent",
        file.row_count_deviation_percent,
    );
    let baseline_runs = file
        .row_count_baseline_runs
        .unwrap_or(DEFAULT_BASELINE_RUNS);
    if !(1..=MAX_BASELINE_RUNS).contains(&baseline_runs) {
        errors.push(origin.error(
            "row_count_baseline_runs",
            format!("{baseline_runs} is out of range: give 1 to {MAX_BASELINE_RUNS} runs"),
        ));
    }
    let measure = match file.row_count_measure.as_deref() {
        None | Some("model_rows") => RowCountMeasure::ModelRows,
        Some("rows_to_send") => RowCountMeasure::RowsToSend,
        Some(other) => {
            errors.push(origin.error(
                "row_count_measure",
                format!("unknown measure {other:?}; use model_rows or rows_to_send"),
            ));
            RowCountMeasure::ModelRows
        }
    };
    if file.row_count_deviation_percent.is_none() {
        for (key, set) in [
            (
                "row_count_baseline_runs",
                file.row_count_baseline_runs.is_some(),
            ),
            ("row_count_measure", file.row_count_measure.is_some()),
        ] {
            if set {
                errors.push(origin.error(key, "has no effect without row_count_deviation_percent: set it too, or remove this key"));
            }
        }
    }
    AlertConditions {
        repeat_after_s,
        rejected_rows_over: file.rejected_rows_over,
        rejected_percent_over,
        row_count_deviation: deviation_percent.map(|percent| RowCountDeviation {
            percent,
            baseline_runs: baseline_runs.clamp(1, MAX_BASELINE_RUNS),
            measure,
        }),
        run_longer_than_s,
        stale_after_s,
    }
}
