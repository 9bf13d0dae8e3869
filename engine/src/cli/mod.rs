//! The command line's commands, one module per command group. Each opens the workspace
//! through the application layer (`backflow::app`), calls it, and prints what it returns;
//! nothing here decides anything. `--json` prints the same records as JSON.
//!
//! This module only dispatches a parsed command to its group and reports failures; what
//! several groups print (a run record, check reports) is in [`output`], the exit codes of
//! runs in [`exit`], opening the workspace in [`session`].

pub(crate) mod args;
mod audit;
mod change;
mod debugger;
mod drift;
mod exit;
mod init;
mod model;
mod output;
mod plugin;
mod receiver;
mod rows;
mod runs;
mod serve;
mod session;
mod state;
mod sync;
mod token;

use args::{Cli, Command};
use backflow::app::AppError;
use std::process::ExitCode;

/// Runs one parsed command line; its exit code on success.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli {
        workspace,
        user,
        command,
        ..
    } = cli;
    let user = user.as_deref();
    match command {
        Command::Init {
            dir,
            plugins,
            force,
        } => init::init(&dir, plugins, force),
        Command::Receiver(args) => receiver::run(args).await,
        Command::Serve {
            listen,
            shutdown_grace_s,
            exposure,
        } => serve::run(&workspace, listen, shutdown_grace_s, exposure).await,
        Command::Token { command } => token::run(&workspace, user, command),
        Command::State { command } => state::run(&workspace, user, command),
        Command::Plugin { command } => plugin::run(&workspace, user, command).await,
        Command::Sync { command } => sync::run(&workspace, user, command).await,
        Command::Model { command } => model::run(&workspace, user, command).await,
        Command::Diff { json, format } => change::diff(&workspace, user, json, format).await,
        Command::Change { command } => change::run(&workspace, user, command).await,
        Command::Audit { json, verify } => audit::run(&workspace, user, json, verify),
        Command::Rows { command } => rows::run(&workspace, user, command),
        Command::Runs {
            sync,
            limit,
            json,
            command,
        } => {
            let listing = runs::Listing { sync, limit, json };
            runs::run(&workspace, user, listing, command).await
        }
    }
}

/// Prints a failed command's error: with `--json`, as one `{"error", "kind"}` object on
/// stdout; otherwise as `error: …` on stderr.
pub(crate) fn report_failure(e: &anyhow::Error, json: bool) {
    if json {
        // With --json, every failure is one JSON object on stdout.
        let kind = e
            .downcast_ref::<AppError>()
            .map(error_kind)
            .unwrap_or("failed");
        println!(
            "{}",
            serde_json::json!({"error": format!("{e:#}"), "kind": kind})
        );
    } else {
        eprintln!("error: {e:#}");
    }
}

/// The kind of an application error, as `--json` reports it.
fn error_kind(e: &AppError) -> &'static str {
    match e {
        AppError::Unauthenticated(_) => "unauthenticated",
        AppError::Denied(_) => "denied",
        AppError::NotFound(_) => "not_found",
        AppError::Invalid(_) => "invalid",
        AppError::Refused(_) => "refused",
        AppError::Failed(_) => "failed",
    }
}
