//! `backflow model preview`: a model's schema and first rows, read through its source.

use super::args::ModelCommand;
use super::session::open_app;
use std::path::Path;
use std::process::ExitCode;

/// Runs one `model` subcommand.
pub(crate) async fn run(
    workspace: &Path,
    user: Option<&str>,
    command: ModelCommand,
) -> anyhow::Result<ExitCode> {
    let ModelCommand::Preview { name, limit, json } = command;
    let (app, actor) = open_app(workspace, user)?;
    let preview = app.preview_model(&actor, &name, limit).await?;
    if json {
        println!("{}", serde_json::to_string(&preview)?);
    } else {
        print_preview(&preview);
    }
    Ok(ExitCode::SUCCESS)
}

/// The model's columns (the key marked) and rows, with a warning when the query does not
/// return the primary key.
fn print_preview(p: &backflow::preview::ModelPreview) {
    println!(
        "model {} (source {}, primary key {})",
        p.model,
        p.source,
        p.primary_key.join(", ")
    );
    for c in &p.columns {
        let key = if p.primary_key.contains(&c.name) {
            "  (key)"
        } else {
            ""
        };
        println!("  {:<24} {}{key}", c.name, c.value_type);
    }
    if !p.missing_key_columns.is_empty() {
        println!("warning: the query does not return primary key column(s) {}; syncs of this model will refuse it", p.missing_key_columns.join(", "));
    }
    println!("{} row(s):", p.rows.len());
    for row in &p.rows {
        println!("  {}", serde_json::Value::Object(row.clone()));
    }
}
