//! `backflow rows history`: what backflow delivered of one row, run by run.

use super::args::RowsCommand;
use super::output::shown;
use super::session::open_app;
use std::path::Path;
use std::process::ExitCode;

/// Runs one `rows` subcommand.
pub(crate) fn run(
    workspace: &Path,
    user: Option<&str>,
    command: RowsCommand,
) -> anyhow::Result<ExitCode> {
    let RowsCommand::History {
        sync,
        key,
        draft,
        json,
    } = command;
    let (app, actor) = open_app(workspace, user)?;
    print_row_history(&app.row_history(&actor, &sync, &key, draft)?, json)?;
    Ok(ExitCode::SUCCESS)
}

/// The row's current value at the destination, what is pending, and every retained run
/// that touched it.
fn print_row_history(h: &backflow::app::RowHistory, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(h)?);
        return Ok(());
    }
    println!("row {} of {}", h.key, h.sync);
    match &h.current {
        Some(row) => println!("  the destination has from us: {row}"),
        None => println!("  the destination has nothing from us for this key"),
    }
    if let Some(p) = &h.pending {
        println!(
            "  pending ({}, refused by run {}): {}",
            p.change,
            p.run_id,
            shown(&p.error)
        );
    }
    if h.runs.is_empty() {
        println!("  no retained run touched it");
    }
    for e in &h.runs {
        println!(
            "  {} run {} ({}, by {}): {} — {}",
            e.started_at,
            e.run_id,
            e.trigger,
            e.user,
            e.operation,
            shown(&e.answer)
        );
        if let Some(before) = &e.before {
            println!("      before: {before}");
        }
        if let Some(sent) = &e.sent {
            println!("      sent:   {sent}");
        }
    }
    Ok(())
}
