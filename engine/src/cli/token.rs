//! `backflow token …`: API tokens for `backflow serve` (create, list, revoke).

use super::args::TokenCommand;
use super::session::open_app;
use backflow::app::App;
use backflow::authz::Actor;
use std::path::Path;
use std::process::ExitCode;

/// Runs one `token` subcommand.
pub(crate) fn run(
    workspace: &Path,
    user: Option<&str>,
    command: TokenCommand,
) -> anyhow::Result<ExitCode> {
    let (app, actor) = open_app(workspace, user)?;
    match command {
        TokenCommand::Create {
            for_user,
            name,
            expires_in,
            json,
        } => {
            let lifetime = backflow::app::parse_lifetime(&expires_in)?;
            create(&app, &actor, for_user.as_deref(), &name, lifetime, json)?
        }
        TokenCommand::List { json } => list(&app, &actor, json)?,
        TokenCommand::Revoke { id } => {
            let t = app.revoke_token(&actor, &id)?;
            println!("revoked token {} of {}", t.id, t.user);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates a token and prints its secret (the only time it is shown).
fn create(
    app: &App,
    actor: &Actor,
    for_user: Option<&str>,
    name: &str,
    lifetime: std::time::Duration,
    json: bool,
) -> anyhow::Result<()> {
    let new = app.create_token(actor, for_user, name, Some(lifetime))?;
    let expires = new.record.expires_at.as_deref().unwrap_or("never");
    if json {
        println!(
            "{}",
            serde_json::json!({"token": new.secret_text, "id": new.record.id, "user": new.record.user, "name": new.record.name, "expires_at": expires})
        );
    } else {
        eprintln!(
            "token {} for {} ({}), expires {expires}; it is shown once, keep it secret:",
            new.record.id, new.record.user, new.record.name
        );
        println!("{}", new.secret_text);
    }
    Ok(())
}

/// The tokens the actor may see, as a table or JSON.
fn list(app: &App, actor: &Actor, json: bool) -> anyhow::Result<()> {
    let tokens = app.list_tokens(actor)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&tokens)?);
        return Ok(());
    }
    println!(
        "{:<28} {:<16} {:<16} {:<22} {:<22} {:<22} STATUS",
        "ID", "USER", "NAME", "CREATED", "EXPIRES", "LAST USED"
    );
    let now = jiff::Timestamp::now();
    for t in tokens {
        let expired = t
            .expires_at
            .as_deref()
            .and_then(|at| at.parse::<jiff::Timestamp>().ok())
            .is_some_and(|at| at <= now);
        let status = match (&t.revoked_at, &t.revoked_by) {
            (Some(at), by) => {
                format!("revoked {at} by {}", by.as_deref().unwrap_or("?"))
            }
            _ if expired => "expired".into(),
            _ => "active".into(),
        };
        println!(
            "{:<28} {:<16} {:<16} {:<22} {:<22} {:<22} {status}",
            t.id,
            t.user,
            t.name,
            t.created_at,
            t.expires_at.as_deref().unwrap_or("at first use + 90d"),
            t.last_used_at.as_deref().unwrap_or("never"),
        );
    }
    Ok(())
}
