//! `backflow state …`: the state as a whole (`backup FILE`: a consistent copy while the
//! service runs; restoring is stopping the service and putting the copy in place, see the
//! README's "State: backup, restore, retention").

use super::args::StateCommand;
use super::session::open_app;
use std::path::Path;
use std::process::ExitCode;

/// Runs one `state` subcommand.
pub(crate) fn run(
    workspace: &Path,
    user: Option<&str>,
    command: StateCommand,
) -> anyhow::Result<ExitCode> {
    let (app, actor) = open_app(workspace, user)?;
    match command {
        StateCommand::Backup { file, json } => {
            let report = app.backup_state(&actor, &file)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "state backed up to {}: {} tables, {} entries",
                    report.file.display(),
                    report.tables,
                    report.entries
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
