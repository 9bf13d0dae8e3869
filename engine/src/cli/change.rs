//! `backflow change …` (submit the working copy as a change request, review it, publish it)
//! and `backflow diff` (what the working copy changes against the published configuration).

use super::args::{ChangeCommand, ReportFormat};
use super::session::open_app;
use backflow::app::App;
use backflow::authz::Actor;
use backflow::governance::{self as gov, ChangeRequest, ConfigDiff};
use std::path::Path;
use std::process::ExitCode;

/// Runs one `change` subcommand.
pub(crate) async fn run(
    workspace: &Path,
    user: Option<&str>,
    command: ChangeCommand,
) -> anyhow::Result<ExitCode> {
    let (app, actor) = open_app(workspace, user)?;
    change(&app, &actor, command).await
}

/// `backflow diff`: the configuration diff, with dry-run counts for every affected sync.
pub(crate) async fn diff(
    workspace: &Path,
    user: Option<&str>,
    json: bool,
    format: Option<ReportFormat>,
) -> anyhow::Result<ExitCode> {
    let (app, actor) = open_app(workspace, user)?;
    let diff = app.diff(&actor).await?;
    match resolve_format(json, format) {
        ReportFormat::Json => println!("{}", serde_json::to_string(&diff)?),
        ReportFormat::Markdown => print!("{}", gov::report_markdown::diff_markdown(&diff)),
        ReportFormat::Text => print_diff(&diff),
    }
    Ok(ExitCode::SUCCESS)
}

/// `--json` is `--format json`.
fn resolve_format(json: bool, format: Option<ReportFormat>) -> ReportFormat {
    if json {
        ReportFormat::Json
    } else {
        format.unwrap_or(ReportFormat::Text)
    }
}

/// One `change` subcommand, with the workspace open.
async fn change(app: &App, who: &Actor, command: ChangeCommand) -> anyhow::Result<ExitCode> {
    match command {
        ChangeCommand::Submit { message, json } => {
            let change = app.submit_change(who, &message).await?;
            if json {
                println!("{}", serde_json::to_string(&change)?);
            } else {
                print_change(&change, false);
            }
        }
        ChangeCommand::List { json } => {
            let changes = app.list_changes(who, 100)?;
            if json {
                let summary: Vec<serde_json::Value> = changes
                    .iter()
                    .map(|c| serde_json::json!({"id": c.id, "author": c.author, "status": c.status, "message": c.message, "created_at": c.created_at, "config_hash": c.config_hash}))
                    .collect();
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!(
                    "{:<5} {:<10} {:<14} {:<26} MESSAGE",
                    "ID", "STATUS", "AUTHOR", "CREATED"
                );
                for c in changes {
                    println!(
                        "{:<5} {:<10} {:<14} {:<26} {}",
                        c.id,
                        c.status.as_str(),
                        c.author,
                        c.created_at,
                        c.message
                    );
                }
            }
        }
        ChangeCommand::Show { id, json, format } => {
            let change = app.change(who, id)?;
            match resolve_format(json, format) {
                ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&change)?),
                ReportFormat::Markdown => {
                    print!("{}", gov::report_markdown::change_markdown(&change))
                }
                ReportFormat::Text => print_change(&change, true),
            }
        }
        ChangeCommand::Verify { published, json } => {
            let verification = app.verify_change(who, published).await?;
            if json {
                println!("{}", serde_json::to_string(&verification)?);
            } else if verification.verified {
                println!("{}", verification.describe());
            } else {
                eprintln!("{}", verification.describe());
            }
            if !verification.verified {
                return Ok(ExitCode::FAILURE);
            }
        }
        ChangeCommand::Approve { id, comment } => {
            let change = app.review_change(who, id, true, comment.as_deref())?;
            println!(
                "{} approved change #{id}: now {}",
                who.user,
                change.status.as_str()
            );
            print_unmet(&change);
        }
        ChangeCommand::Reject { id, comment } => {
            let change = app.review_change(who, id, false, Some(&comment))?;
            println!(
                "{} rejected change #{id}: now {}",
                who.user,
                change.status.as_str()
            );
        }
        ChangeCommand::Publish { id } => {
            let change = app.publish_change(who, id).await?;
            println!(
                "published change #{id} (configuration {}); runs now use it",
                gov::short(&change.config_hash)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The approvals a change still needs, one line each.
fn print_unmet(change: &ChangeRequest) {
    for r in change.unmet() {
        println!("  still needs {}", gov::describe_requirement(r));
    }
}

/// A change request: its status, policies, reviews and diff summary (`full`: the whole
/// diff text too).
fn print_change(c: &ChangeRequest, full: bool) {
    println!(
        "change #{} by {} ({}): {}",
        c.id,
        c.author,
        c.author_role.as_str(),
        c.status.as_str()
    );
    if !c.message.is_empty() {
        println!("  {}", c.message);
    }
    println!(
        "  configuration {} (against {})",
        gov::short(&c.config_hash),
        c.base_hash
            .as_deref()
            .map(gov::short)
            .unwrap_or("nothing published")
    );
    for v in &c.policies {
        println!(
            "  policy {}: {}",
            v.policy,
            serde_json::to_string(&v.decision).unwrap_or_default()
        );
    }
    print_unmet(c);
    for r in &c.reviews {
        println!(
            "  {} by {} ({}) at {}{}",
            r.verdict,
            r.user,
            r.role.as_str(),
            r.at,
            r.comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        );
    }
    print_diff_summary(&c.diff);
    if full {
        print!("{}", c.diff.text);
    }
}

/// One line per changed entity, per plugin build and per affected sync (with its dry-run
/// counts).
fn print_diff_summary(diff: &ConfigDiff) {
    for e in &diff.entities {
        println!("  {:<9} {} {}", e.change, e.kind, e.name);
    }
    for p in &diff.plugins {
        println!("  plugin build {}", p.describe());
    }
    for s in &diff.syncs {
        let i = &s.impact;
        match &s.error {
            Some(err) => println!("  sync {}: cannot plan: {err}", i.sync_name),
            None => println!(
                "  sync {} ({} to {}): would add {}, change {}, remove {}{}",
                i.sync_name,
                i.mode,
                i.destination,
                i.added,
                i.changed,
                i.removed,
                if i.column_labels.is_empty() {
                    String::new()
                } else {
                    format!("; labels {}", i.column_labels.join(", "))
                }
            ),
        }
    }
}

/// `backflow diff` as text: the summary and the diff, or that nothing changed.
fn print_diff(diff: &ConfigDiff) {
    if diff.is_empty() {
        println!(
            "the working copy matches the published configuration ({})",
            diff.published_hash
                .as_deref()
                .map(gov::short)
                .unwrap_or("nothing published")
        );
        return;
    }
    println!(
        "working copy {} against published {}:",
        gov::short(&diff.working_hash),
        diff.published_hash
            .as_deref()
            .map(gov::short)
            .unwrap_or("(nothing published)")
    );
    print_diff_summary(diff);
    print!("{}", diff.text);
}
