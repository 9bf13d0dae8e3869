//! How a run ended: one enum, mapped to the status stored in run history.

use super::run::Abort;
use crate::domain::RunStatus;

/// The result of one run of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every planned row was delivered (or nothing needed sending).
    Succeeded,
    /// Delivery finished, but the destination refused some rows.
    Partial {
        /// How many rows the destination rejected (kept pending, planned again next run).
        rejected_rows: u64,
    },
    /// A quality check failed: nothing was written.
    Blocked(String),
    /// An approval policy holds the plan for a person: nothing was written.
    AwaitingApproval(String),
    /// An approval policy rejected the run: nothing was written.
    Rejected(String),
    /// The run stopped early; what was acknowledged before is kept.
    Failed(String),
    /// The process running it stopped before it finished; what was acknowledged is kept.
    Interrupted(String),
    /// The plan is the one this run (held for approval) waits with: the run is not kept.
    FoldedInto(String),
}

impl RunOutcome {
    /// The outcome of a run that reached delivery: failed if delivery or its commit stopped
    /// it, partial if rows were refused, succeeded otherwise.
    pub fn after_delivery(result: Result<(), Abort>, rejected_rows: u64) -> RunOutcome {
        match result {
            Err(e) => RunOutcome::Failed(e.to_string()),
            Ok(()) if rejected_rows > 0 => RunOutcome::Partial { rejected_rows },
            Ok(()) => RunOutcome::Succeeded,
        }
    }

    /// The status stored in run history for this outcome.
    pub fn status(&self) -> RunStatus {
        match self {
            RunOutcome::Succeeded => RunStatus::Succeeded,
            RunOutcome::Partial { .. } => RunStatus::Partial,
            RunOutcome::Blocked(_) => RunStatus::Blocked,
            RunOutcome::AwaitingApproval(_) => RunStatus::AwaitingApproval,
            RunOutcome::Rejected(_) => RunStatus::Rejected,
            RunOutcome::Failed(_) => RunStatus::Failed,
            RunOutcome::Interrupted(_) => RunStatus::Interrupted,
            RunOutcome::FoldedInto(_) => RunStatus::AwaitingApproval,
        }
    }

    /// The message stored as the run's `error` (none for a run that delivered everything it
    /// could: rejected rows are listed separately).
    pub fn into_error(self) -> Option<String> {
        match self {
            RunOutcome::Succeeded | RunOutcome::Partial { .. } => None,
            RunOutcome::Blocked(m)
            | RunOutcome::AwaitingApproval(m)
            | RunOutcome::Rejected(m)
            | RunOutcome::Failed(m)
            | RunOutcome::Interrupted(m) => Some(m),
            RunOutcome::FoldedInto(held) => Some(format!(
                "the plan is the one run {held} waits with for approval; nothing was sent"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_results_map_to_outcomes() {
        assert_eq!(RunOutcome::after_delivery(Ok(()), 0), RunOutcome::Succeeded);
        assert_eq!(
            RunOutcome::after_delivery(Ok(()), 3),
            RunOutcome::Partial { rejected_rows: 3 }
        );
        // A stop wins over refused rows: the run did not deliver everything it planned.
        assert_eq!(
            RunOutcome::after_delivery(Err(Abort::Destination("boom".into())), 3),
            RunOutcome::Failed("boom".into())
        );
    }

    #[test]
    fn every_outcome_has_its_status_and_error() {
        let cases = [
            (RunOutcome::Succeeded, RunStatus::Succeeded, None),
            (
                RunOutcome::Partial { rejected_rows: 1 },
                RunStatus::Partial,
                None,
            ),
            (
                RunOutcome::Blocked("b".into()),
                RunStatus::Blocked,
                Some("b"),
            ),
            (
                RunOutcome::AwaitingApproval("a".into()),
                RunStatus::AwaitingApproval,
                Some("a"),
            ),
            (
                RunOutcome::Rejected("r".into()),
                RunStatus::Rejected,
                Some("r"),
            ),
            (RunOutcome::Failed("f".into()), RunStatus::Failed, Some("f")),
            (
                RunOutcome::Interrupted("i".into()),
                RunStatus::Interrupted,
                Some("i"),
            ),
        ];
        for (outcome, status, error) in cases {
            assert_eq!(outcome.status(), status);
            assert_eq!(outcome.into_error().as_deref(), error);
        }
    }
}
