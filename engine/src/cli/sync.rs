//! `backflow sync …`: list the syncs, run them, plan a run (a dry run) and send one row as
//! a test.

use super::args::SyncCommand;
use super::exit::exit_code;
use super::output::{print_checks, print_run};
use super::session::open_app;
use anyhow::bail;
use backflow::app::{App, RunRequest, RunResult, SyncSummary};
use backflow::authz::Actor;
use backflow::domain::{RunRecord, RunStatus};
use backflow::sync::PlanReport;
use std::path::Path;
use std::process::ExitCode;

/// Runs one `sync` subcommand.
pub(crate) async fn run(
    workspace: &Path,
    user: Option<&str>,
    command: SyncCommand,
) -> anyhow::Result<ExitCode> {
    let (app, actor) = match open_app(workspace, user) {
        Ok(opened) => opened,
        Err(e) => {
            record_unloadable(workspace, user, &command, &e);
            return Err(e);
        }
    };
    match command {
        SyncCommand::List { json } => {
            let syncs = app.list_syncs(&actor)?;
            print_sync_list(&syncs, json)?;
            Ok(ExitCode::SUCCESS)
        }
        SyncCommand::Plan {
            name,
            json,
            samples,
            full_resync,
            draft,
        } => {
            let report = app.plan(&actor, &name, full_resync, draft, samples).await?;
            print_plan(&report, json)?;
            Ok(ExitCode::SUCCESS)
        }
        SyncCommand::Test {
            name,
            row,
            json,
            draft,
        } => test_row(&app, &actor, &name, row.as_deref(), json, draft).await,
        SyncCommand::Run {
            names,
            all,
            json,
            full_resync,
            draft,
        } => {
            let names: Vec<String> = if all { app.working_sync_names() } else { names };
            let request = RunRequest {
                full_resync,
                draft,
                trigger: String::new(),
                ..RunRequest::default()
            };
            run_syncs(&app, &actor, &names, &request, json).await
        }
        SyncCommand::Drift { name, sample, json } => {
            super::drift::drift(&app, &actor, &name, sample, json).await
        }
        SyncCommand::Reconcile { name, json } => {
            super::drift::reconcile(&app, &actor, &name, json).await
        }
    }
}

/// `sync run NAME…` of a workspace that does not load: a failed run of each named sync is
/// recorded (phase `prepare`, with the reason), as the service records one, and said.
fn record_unloadable(
    workspace: &Path,
    user: Option<&str>,
    command: &SyncCommand,
    e: &anyhow::Error,
) {
    let SyncCommand::Run {
        names,
        full_resync,
        draft: false,
        ..
    } = command
    else {
        return;
    };
    let error = format!("{e:#}");
    for record in backflow::app::record_runs_of_unloadable_workspace(
        workspace,
        names,
        user,
        *full_resync,
        &error,
    ) {
        eprintln!(
            "sync {}: recorded as failed run {} (phase prepare)",
            record.sync, record.run_id
        );
    }
}

/// `sync test`: sends one row and shows the destination's answer; fails unless accepted.
async fn test_row(
    app: &App,
    actor: &Actor,
    name: &str,
    row: Option<&str>,
    json: bool,
    draft: bool,
) -> anyhow::Result<ExitCode> {
    let report = app.test_row(actor, name, row, draft).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "sent {} {} to {}: {}",
            report.operation, report.row, report.sync, report.outcome
        );
        if let Some(m) = &report.message {
            println!("  {m}");
        }
        for request in &report.requests {
            println!();
            super::debugger::print_full(request);
        }
    }
    Ok(if report.outcome == "accepted" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `sync run`: one sync prints its run record, several a summary line each; the exit code
/// says how the runs went.
async fn run_syncs(
    app: &App,
    actor: &Actor,
    names: &[String],
    request: &RunRequest,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut results = app.run(actor, names, request).await?;
    report_unwritten(app);
    if results.len() == 1 {
        let record = match results.pop() {
            Some(RunResult::Ran(record)) => record,
            Some(RunResult::NotStarted { error, .. }) => bail!("{error}"),
            None => bail!("no sync ran"),
        };
        if json {
            println!("{}", serde_json::to_string(&record)?);
        } else {
            print_run(&record);
        }
        return Ok(exit_code(&[record.status], false));
    }
    print_run_summary(&results, json)?;
    let statuses: Vec<RunStatus> = results
        .iter()
        .filter_map(|r| {
            if let RunResult::Ran(r) = r {
                Some(r.status)
            } else {
                None
            }
        })
        .collect();
    Ok(exit_code(
        &statuses,
        results
            .iter()
            .any(|r| matches!(r, RunResult::NotStarted { .. })),
    ))
}

/// Says what became of final run records the state had no room for (a full disk): this
/// process exits, so they are saved for the next start to write, or lost.
fn report_unwritten(app: &App) {
    for (run, saved) in app.save_unwritten_runs() {
        let what = format!(
            "run {} of sync {} ended {}, but the state had no room for its final record (no space left on device in {})",
            run.run_id,
            run.sync,
            run.status.as_str(),
            app.state_dir().display()
        );
        match saved {
            Ok(file) => eprintln!(
                "{what}: it is saved in {} and the next backflow command or service start on this workspace writes it (free some space first); until then the history shows the run as running",
                file.display()
            ),
            Err(e) => eprintln!(
                "{what}, and saving it beside the state failed too ({e}): the record is lost. The next backflow command or service start marks the run interrupted, with the rows its journal recorded as delivered"
            ),
        }
    }
}

/// `sync list`: each sync with its schedule, next run and last run.
fn print_sync_list(syncs: &[SyncSummary], json: bool) -> anyhow::Result<()> {
    if json {
        let list: Vec<_> = syncs
            .iter()
            .map(|s| {
                let last = &s.last_run;
                serde_json::json!({
                    "name": s.name, "model": s.model, "destination": s.destination, "mode": s.mode,
                    "last_run": last.as_ref().map(|r| serde_json::json!({"run_id": r.run_id, "status": r.status, "started_at": r.started_at})),
                    "schedule": s.schedule, "timezone": s.timezone, "after": s.after, "next_run": s.next_run,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{:<24} {:<20} {:<20} {:<8} {:<36} {:<22} LAST RUN",
            "SYNC", "MODEL", "DESTINATION", "MODE", "SCHEDULE", "NEXT RUN"
        );
        for s in syncs {
            let last = s.last_run.as_ref();
            let last = last
                .map(|r| format!("{} {}", r.status.as_str(), r.started_at))
                .unwrap_or_else(|| "never".into());
            let schedule = match (&s.schedule, &s.timezone) {
                (Some(p), Some(tz)) if tz != "UTC" => format!("{p} ({tz})"),
                (Some(p), _) => p.clone(),
                (None, _) if !s.after.is_empty() => format!("after {}", s.after.join(", ")),
                (None, _) => "manual".into(),
            };
            let next = s.next_run.clone().unwrap_or_else(|| "-".into());
            println!(
                "{:<24} {:<20} {:<20} {:<8} {schedule:<36} {next:<22} {last}",
                s.name,
                s.model,
                s.destination,
                s.mode.as_str()
            );
        }
    }
    Ok(())
}

/// `sync plan`: the diff, what a run would send, the checks and sample rows.
fn print_plan(report: &PlanReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "plan for {} (mode {}): {} model rows, {} in snapshot",
            report.sync,
            report.mode.as_str(),
            report.model_rows,
            report.snapshot_rows
        );
        println!(
            "  diff       added {:>8}  changed {:>8}  removed {:>8}  unchanged {:>8}",
            report.diff.added, report.diff.changed, report.diff.removed, report.diff.unchanged
        );
        if report.diff.cleared_deletes > 0 {
            println!("  full resync: {} rows whose delete the destination refused would be dropped from the state, not sent again", report.diff.cleared_deletes);
        }
        println!(
            "  would send added {:>8}  changed {:>8}  removed {:>8}",
            report.planned.added, report.planned.changed, report.planned.removed
        );
        print_checks(&report.checks);
        if report.blocked {
            println!("  a run now would be BLOCKED by a failing check");
        }
        for change in ["added", "changed", "removed"] {
            let rows = report.samples[change]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if rows.is_empty() {
                continue;
            }
            let op = report.operations[change]
                .as_str()
                .unwrap_or("not sent in this mode");
            println!("  {change} ({op}):");
            for r in rows {
                println!("    {r}");
            }
        }
    }
    Ok(())
}

/// One line per sync run together (`sync run A B` or `--all`).
fn print_run_summary(results: &[RunResult], json: bool) -> anyhow::Result<()> {
    let records: Vec<&RunRecord> = results
        .iter()
        .filter_map(|r| {
            if let RunResult::Ran(r) = r {
                Some(r.as_ref())
            } else {
                None
            }
        })
        .collect();
    let not_started: Vec<(String, String)> = results
        .iter()
        .filter_map(|r| {
            if let RunResult::NotStarted { sync, error } = r {
                Some((sync.clone(), error.clone()))
            } else {
                None
            }
        })
        .collect();
    if json {
        let mut out: Vec<serde_json::Value> = records
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?;
        out.extend(not_started.iter().map(
            |(name, e)| serde_json::json!({"sync": name, "status": "not_started", "error": e}),
        ));
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{:<24} {:<12} {:>9} {:>9} {:>9}  ERROR",
            "SYNC", "STATUS", "PLANNED", "DELIVERED", "FAILED"
        );
        for r in &records {
            println!(
                "{:<24} {:<12} {:>9} {:>9} {:>9}  {}",
                r.sync,
                r.status.as_str(),
                r.planned.total(),
                r.delivered.total(),
                r.failed.total(),
                r.error.as_deref().unwrap_or("")
            );
        }
        for (name, e) in &not_started {
            println!(
                "{name:<24} {:<12} {:>9} {:>9} {:>9}  {}",
                "not started",
                "-",
                "-",
                "-",
                e.replace('\n', "; ")
            );
        }
    }
    Ok(())
}
