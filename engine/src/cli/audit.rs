//! `backflow audit`: the audit log, and checking its hash chain (`--verify`).

use super::session::open_app;
use backflow::app::AuditLog;
use backflow::governance as gov;
use std::path::Path;
use std::process::ExitCode;

/// Prints the audit log, or with `verify` checks its hash chain (exit code 1 when broken).
pub(crate) fn run(
    workspace: &Path,
    user: Option<&str>,
    json: bool,
    verify: bool,
) -> anyhow::Result<ExitCode> {
    let (app, actor) = open_app(workspace, user)?;
    audit(&app.audit(&actor)?, json, verify)
}

/// Prints or verifies the log the application layer returned.
fn audit(log: &AuditLog, json: bool, verify: bool) -> anyhow::Result<ExitCode> {
    let entries = &log.entries;
    if verify {
        if let Some(seq) = log.broken_at {
            println!("audit log entry {seq} does not match its hash chain: the log was edited outside backflow");
            return Ok(ExitCode::FAILURE);
        }
        println!("audit log verified: {} entries", entries.len());
        return Ok(ExitCode::SUCCESS);
    }
    if json {
        println!("{}", serde_json::to_string(&entries)?);
    } else {
        for e in entries {
            println!(
                "{:>5} {} {:<14} {:<22} {:<28} {}",
                e.seq,
                e.at,
                e.event.user,
                e.event.action,
                e.event.target,
                e.event.config_hash.as_deref().map(gov::short).unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
