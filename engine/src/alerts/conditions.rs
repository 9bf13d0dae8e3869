//! What a finished run says about each condition a route watches (pure): the run outcomes
//! (`failed`, `partial`, `blocked`, `awaiting_approval`) and the thresholds of
//! [`AlertConditions`](crate::workspace::AlertConditions).

use super::episode::Observation;
use crate::domain::{RunRecord, RunStatus};
use crate::workspace::{Alert, AlertOutcome, RowCountMeasure};

/// A condition an alert route watches; its name is part of the `alert_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// A run outcome named in `on`.
    Outcome(AlertOutcome),
    /// Too many rows rejected (`rejected_rows_over`, `rejected_percent_over`).
    RejectedRows,
    /// A row count far from its recent median (`row_count_deviation_percent`).
    RowCountDeviation,
    /// A run longer than `run_longer_than`.
    LongRun,
    /// No successful run within `stale_after`.
    Stale,
}

impl Condition {
    /// The condition's name, as posted (`outcome`) and in the `alert_id`.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Outcome(o) => o.as_str(),
            Condition::RejectedRows => "rejected_rows",
            Condition::RowCountDeviation => "row_count_deviation",
            Condition::LongRun => "long_run",
            Condition::Stale => "stale",
        }
    }
}

/// Whether the run got as far as a plan (its counts mean something).
fn planned(status: RunStatus) -> bool {
    matches!(
        status,
        RunStatus::Succeeded
            | RunStatus::Partial
            | RunStatus::Blocked
            | RunStatus::AwaitingApproval
            | RunStatus::Rejected
    )
}

/// What `run` says about a run outcome, for a route reporting `partial` from `min_rejected`.
fn outcome(o: AlertOutcome, run: &RunRecord, min_rejected: u64) -> Observation {
    use RunStatus as S;
    let holds = match o {
        AlertOutcome::Failed => run.status == S::Failed,
        AlertOutcome::Partial => run.status == S::Partial && run.failed.total() >= min_rejected,
        AlertOutcome::Blocked => run.status == S::Blocked,
        AlertOutcome::AwaitingApproval => run.status == S::AwaitingApproval,
    };
    // A run that stopped early says nothing about what comes after where it stopped.
    let judged = match o {
        AlertOutcome::Failed => !matches!(run.status, S::Running | S::Interrupted),
        AlertOutcome::Partial => matches!(run.status, S::Succeeded | S::Partial),
        AlertOutcome::Blocked | AlertOutcome::AwaitingApproval => planned(run.status),
    };
    if holds {
        Observation::Active(run.error.clone().unwrap_or_else(|| match run.status {
            S::Partial => format!(
                "delivered {} rows; the destination rejected {}",
                run.delivered.total(),
                run.failed.total()
            ),
            other => other.as_str().to_string(),
        }))
    } else if judged {
        Observation::Inactive
    } else {
        Observation::Unknown
    }
}

/// The median of `values` (the mean of the two middle ones for an even count).
pub fn median(values: &[u64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_unstable();
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2] as f64),
        _ => Some((v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0),
    }
}

/// How far `value` is from `median`, in percent of the median (infinite from a median of 0).
pub fn deviation_percent(value: u64, median: f64) -> f64 {
    let diff = (value as f64 - median).abs();
    if diff == 0.0 {
        0.0
    } else if median == 0.0 {
        f64::INFINITY
    } else {
        diff / median * 100.0
    }
}

/// The count a row-count deviation watches, of one run.
pub fn measured(run: &RunRecord, measure: RowCountMeasure) -> u64 {
    match measure {
        RowCountMeasure::ModelRows => run.model_rows,
        RowCountMeasure::RowsToSend => run.planned.total(),
    }
}

/// Every condition `alert` watches, and what `run` says about each. `baseline` holds the
/// watched count of the sync's last successful runs before this one, newest first.
pub fn observe(alert: &Alert, run: &RunRecord, baseline: &[u64]) -> Vec<(Condition, Observation)> {
    let mut out: Vec<(Condition, Observation)> = alert
        .on
        .iter()
        .map(|o| {
            (
                Condition::Outcome(*o),
                outcome(*o, run, alert.partial_min_rejected),
            )
        })
        .collect();
    let c = &alert.conditions;
    let delivered = matches!(run.status, RunStatus::Succeeded | RunStatus::Partial);
    if c.rejected_rows_over.is_some() || c.rejected_percent_over.is_some() {
        let rejected = run.failed.total();
        let percent = match run.planned.total() {
            0 => 0.0,
            planned => rejected as f64 / planned as f64 * 100.0,
        };
        let over = c.rejected_rows_over.is_some_and(|max| rejected > max)
            || c.rejected_percent_over.is_some_and(|max| percent > max);
        let seen = match (delivered, over) {
            (false, _) => Observation::Unknown,
            (true, true) => Observation::Active(format!(
                "the destination rejected {rejected} of {} planned rows ({percent:.1}%)",
                run.planned.total()
            )),
            (true, false) => Observation::Inactive,
        };
        out.push((Condition::RejectedRows, seen));
    }
    if let Some(d) = &c.row_count_deviation {
        let window = &baseline[..baseline.len().min(d.baseline_runs as usize)];
        let seen = match median(window) {
            Some(m) if planned(run.status) && window.len() as u64 == d.baseline_runs => {
                let value = measured(run, d.measure);
                let off = deviation_percent(value, m);
                if off > d.percent {
                    Observation::Active(format!(
                        "{} = {value}, {off:.0}% away from the median {m} of the last {} successful runs (more than {}%)",
                        d.measure.as_str(),
                        window.len(),
                        d.percent
                    ))
                } else {
                    Observation::Inactive
                }
            }
            _ => Observation::Unknown,
        };
        out.push((Condition::RowCountDeviation, seen));
    }
    if let Some(limit) = c.run_longer_than_s {
        let seconds = run.duration_ms / 1000;
        let seen = match run.status {
            RunStatus::Running => Observation::Unknown,
            _ if seconds > limit => {
                Observation::Active(format!("the run took {seconds} s, longer than {limit} s"))
            }
            _ => Observation::Inactive,
        };
        out.push((Condition::LongRun, seen));
    }
    if c.stale_after_s.is_some() && delivered {
        // Only a success ends staleness; the service's watch starts it (see `stale`).
        out.push((Condition::Stale, Observation::Inactive));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::{AlertConditions, Origin, RowCountDeviation};

    fn run(status: RunStatus, model_rows: u64) -> RunRecord {
        let mut r: RunRecord = serde_json::from_value(serde_json::json!({
            "run_id": "r", "sync": "s", "trigger": "t", "user": "u", "started_at": "", "finished_at": "", "duration_ms": 0,
            "status": "succeeded", "planned": {"added": 0, "changed": 0, "removed": 0}, "delivered": {"added": 0, "changed": 0, "removed": 0},
            "failed": {"added": 0, "changed": 0, "removed": 0}, "plugins": {"source": "", "destination": ""}, "config_hash": "", "error": null, "rejected": []
        }))
        .unwrap();
        r.status = status;
        r.model_rows = model_rows;
        r
    }

    fn route(conditions: AlertConditions) -> Alert {
        Alert {
            url: "http://127.0.0.1:1/".into(),
            on: AlertOutcome::ALL.to_vec(),
            partial_min_rejected: 1,
            syncs: vec![],
            destinations: vec![],
            grants: Default::default(),
            conditions,
            origin: Origin {
                file: "backflow.toml".into(),
                key: "alerts[0]".into(),
            },
        }
    }

    fn seen(obs: &[(Condition, Observation)], c: Condition) -> Observation {
        obs.iter()
            .find(|(k, _)| *k == c)
            .map(|(_, o)| o.clone())
            .unwrap()
    }

    #[test]
    fn medians_and_deviations() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5, 1, 3]), Some(3.0));
        assert_eq!(median(&[4, 1, 3, 100]), Some(3.5));
        assert_eq!(deviation_percent(150, 100.0), 50.0);
        assert_eq!(deviation_percent(50, 100.0), 50.0);
        assert_eq!(deviation_percent(0, 0.0), 0.0);
        assert!(deviation_percent(1, 0.0).is_infinite());
    }

    #[test]
    fn a_row_count_far_from_the_median_of_enough_successful_runs_fires() {
        let alert = route(AlertConditions {
            row_count_deviation: Some(RowCountDeviation {
                percent: 50.0,
                baseline_runs: 3,
                measure: RowCountMeasure::ModelRows,
            }),
            ..Default::default()
        });
        let c = Condition::RowCountDeviation;
        let far = run(RunStatus::Succeeded, 1000);
        assert!(
            matches!(seen(&observe(&alert, &far, &[100, 90, 110, 5]), c), Observation::Active(m) if m.contains("median 100"))
        );
        assert_eq!(
            seen(
                &observe(&alert, &run(RunStatus::Succeeded, 120), &[100, 90, 110]),
                c
            ),
            Observation::Inactive
        );
        // Too little history, or a run that never got to count: not judged.
        assert_eq!(
            seen(&observe(&alert, &far, &[100, 90]), c),
            Observation::Unknown
        );
        assert_eq!(
            seen(
                &observe(&alert, &run(RunStatus::Failed, 0), &[100, 90, 110]),
                c
            ),
            Observation::Unknown
        );
    }

    #[test]
    fn outcomes_are_judged_only_by_runs_that_got_that_far() {
        let alert = route(AlertConditions::default());
        let failed = Condition::Outcome(AlertOutcome::Failed);
        let blocked = Condition::Outcome(AlertOutcome::Blocked);
        let f = observe(&alert, &run(RunStatus::Failed, 0), &[]);
        assert!(matches!(seen(&f, failed), Observation::Active(_)));
        assert_eq!(seen(&f, blocked), Observation::Unknown);
        let ok = observe(&alert, &run(RunStatus::Succeeded, 3), &[]);
        assert_eq!(seen(&ok, failed), Observation::Inactive);
        assert_eq!(seen(&ok, blocked), Observation::Inactive);
        let cut = observe(&alert, &run(RunStatus::Interrupted, 3), &[]);
        assert_eq!(seen(&cut, failed), Observation::Unknown);
    }

    #[test]
    fn a_long_run_fires_and_only_a_success_ends_staleness() {
        let alert = route(AlertConditions {
            run_longer_than_s: Some(60),
            stale_after_s: Some(3600),
            ..Default::default()
        });
        let mut slow = run(RunStatus::Failed, 0);
        slow.duration_ms = 61_000;
        let obs = observe(&alert, &slow, &[]);
        assert!(matches!(
            seen(&obs, Condition::LongRun),
            Observation::Active(_)
        ));
        assert!(
            obs.iter().all(|(c, _)| *c != Condition::Stale),
            "a failure does not end staleness"
        );
        let ok = observe(&alert, &run(RunStatus::Succeeded, 1), &[]);
        assert_eq!(seen(&ok, Condition::LongRun), Observation::Inactive);
        assert_eq!(seen(&ok, Condition::Stale), Observation::Inactive);
    }

    #[test]
    fn rejected_rows_over_a_count_or_a_percentage() {
        let alert = route(AlertConditions {
            rejected_rows_over: Some(10),
            rejected_percent_over: Some(5.0),
            ..Default::default()
        });
        let mut r = run(RunStatus::Partial, 100);
        r.planned.added = 100;
        r.failed.added = 6;
        assert!(matches!(
            seen(&observe(&alert, &r, &[]), Condition::RejectedRows),
            Observation::Active(_)
        ));
        r.failed.added = 5;
        assert_eq!(
            seen(&observe(&alert, &r, &[]), Condition::RejectedRows),
            Observation::Inactive
        );
    }
}
