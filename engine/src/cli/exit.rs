//! The exit codes of commands that run syncs (`sync run`, `runs approve`, `runs undo`).

use backflow::domain::RunStatus;
use std::process::ExitCode;

/// The exit code for runs: 1 if any failed or did not start, 3 if one was blocked or
/// rejected, 4 if one awaits approval, 2 if one was partial, 0 otherwise.
pub(crate) fn exit_code(statuses: &[RunStatus], not_started: bool) -> ExitCode {
    let any = |s: RunStatus| statuses.contains(&s);
    if not_started
        || any(RunStatus::Failed)
        || any(RunStatus::Running)
        || any(RunStatus::Interrupted)
    {
        ExitCode::FAILURE
    } else if any(RunStatus::Blocked) || any(RunStatus::Rejected) {
        ExitCode::from(3)
    } else if any(RunStatus::AwaitingApproval) {
        ExitCode::from(4)
    } else if any(RunStatus::Partial) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
