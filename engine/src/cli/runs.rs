//! `backflow runs …`: run history, one run with its rejected rows, approving, rejecting or
//! cancelling a held run, and undoing a run.

use super::args::RunsCommand;
use super::exit::exit_code;
use super::output::{print_checks, print_left_alone, print_run, shown};
use super::session::open_app;
use backflow::app::{App, RunApproval};
use backflow::authz::Actor;
use backflow::domain::RunRecord;
use std::path::Path;
use std::process::ExitCode;

/// `backflow runs` without a subcommand: which runs to list, and how.
pub(crate) struct Listing {
    /// Only runs of this sync.
    pub(crate) sync: Option<String>,
    /// At most this many runs, newest first.
    pub(crate) limit: usize,
    /// Print JSON.
    pub(crate) json: bool,
}

/// Runs `backflow runs`: the listing, or one of its subcommands.
pub(crate) async fn run(
    workspace: &Path,
    user: Option<&str>,
    listing: Listing,
    command: Option<RunsCommand>,
) -> anyhow::Result<ExitCode> {
    let (app, actor) = open_app(workspace, user)?;
    match command {
        Some(RunsCommand::Approve { id, comment, json }) => {
            approve(&app, &actor, &id, comment.as_deref(), json).await
        }
        Some(RunsCommand::Undo {
            id,
            yes,
            force,
            json,
        }) => undo(&app, &actor, &id, yes, force, json).await,
        Some(RunsCommand::Reject { id, comment, json }) => {
            let run = app.reject_run(&actor, &id, comment.as_deref())?;
            print_closed(&run, json)
        }
        Some(RunsCommand::Cancel { id, json }) => {
            let run = app.cancel_run(&actor, &id)?;
            print_closed(&run, json)
        }
        Some(RunsCommand::Requests { id, failed, json }) => {
            let listed = app.run_requests(&actor, &id, failed)?;
            super::debugger::print_requests(&listed, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(RunsCommand::Request { id, number, json }) => {
            let request = app.run_request(&actor, &id, number)?;
            super::debugger::print_request(&request, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(RunsCommand::Show { id, json }) => {
            show(&app, &actor, &id, json)?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let runs = app.runs(&actor, listing.sync.as_deref(), listing.limit)?;
            print_runs(&runs, listing.json)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `runs approve`: records the approval; once the run needs no more, it is delivered and
/// printed like any run.
async fn approve(
    app: &App,
    actor: &Actor,
    id: &str,
    comment: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match app.approve_run(actor, id, comment).await? {
        RunApproval::NeedsMore(_) => {
            println!("approval of run {id} recorded; it still needs more approvals");
            Ok(ExitCode::SUCCESS)
        }
        RunApproval::Queued(run_id) => {
            println!("run {id} approved; run {run_id} delivers its plan");
            Ok(ExitCode::SUCCESS)
        }
        RunApproval::Released(record) => {
            if json {
                println!("{}", serde_json::to_string(&record)?);
            } else {
                print_run(&record);
            }
            Ok(exit_code(&[record.status], false))
        }
    }
}

/// `runs undo`: without `--yes`, what the undo would send; with it, the undo's run.
async fn undo(
    app: &App,
    actor: &Actor,
    id: &str,
    yes: bool,
    force: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if !yes {
        let report = app.plan_undo(actor, id, force).await?;
        print_undo_report(&report, json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let record = app.undo_run(actor, id, force).await?;
    if json {
        println!("{}", serde_json::to_string(&record)?);
    } else {
        print_run(&record);
    }
    Ok(exit_code(&[record.status], false))
}

/// A held run just rejected or cancelled.
fn print_closed(run: &RunRecord, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(run)?);
    } else {
        println!(
            "run {} of {} is {}: {}",
            run.run_id,
            run.sync,
            run.status.as_str(),
            run.error.as_deref().unwrap_or("nothing was sent")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `runs show`: one run, with a line per rejected row.
fn show(app: &App, actor: &Actor, id: &str, json: bool) -> anyhow::Result<()> {
    let run = app.run_record(actor, id)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&run)?);
    } else {
        print_run(&run);
        for r in &run.rejected {
            println!(
                "  rejected {} ({}): {}",
                shown(&r.key),
                r.change,
                shown(&r.error)
            );
        }
    }
    Ok(())
}

/// The run history as a table.
fn print_runs(runs: &[RunRecord], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        println!(
            "{:<28} {:<24} {:<10} {:>9} {:>9} STARTED",
            "RUN", "SYNC", "STATUS", "DELIVERED", "FAILED"
        );
        for r in runs {
            println!(
                "{:<28} {:<24} {:<10} {:>9} {:>9} {}",
                r.run_id,
                r.sync,
                r.status.as_str(),
                r.delivered.total(),
                r.failed.total(),
                r.started_at
            );
        }
    }
    Ok(())
}

/// What an undo would send, with sample rows, and the command that sends it.
fn print_undo_report(r: &backflow::sync::UndoReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!("undo of run {} of {} would send:", r.run_id, r.sync);
    println!(
        "  insert {:>8}  (rows the run deleted, with their values before)",
        r.planned.added
    );
    println!(
        "  update {:>8}  (rows the run changed, back to their values before)",
        r.planned.changed
    );
    println!("  delete {:>8}  (rows the run added)", r.planned.removed);
    print_left_alone(r.conflicts, &r.conflict_keys, r.forced, r.without_before);
    for (change, label) in [
        ("added", "insert"),
        ("changed", "update"),
        ("removed", "delete"),
    ] {
        if let Some(rows) = r
            .samples
            .get(change)
            .and_then(|v| v.as_array())
            .filter(|a| !a.is_empty())
        {
            println!("  {label}, e.g.:");
            for row in rows {
                println!("      {row}");
            }
        }
    }
    print_checks(&r.checks);
    if r.blocked {
        for b in &r.blocking {
            println!(
                "the undo would be BLOCKED by check {} ({}): {}",
                b.check,
                b.configured_at,
                shown(&b.message)
            );
            println!("  {}", b.remedy);
        }
        return Ok(());
    }
    println!(
        "run `backflow runs undo {} --yes{}` to send it",
        r.run_id,
        if r.forced { " --force" } else { "" }
    );
    Ok(())
}
