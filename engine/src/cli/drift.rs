//! `backflow sync drift` (what the destination holds against what was sent) and `backflow
//! sync reconcile` (a run restoring it).

use super::exit::exit_code;
use super::output::print_run;
use backflow::app::App;
use backflow::authz::Actor;
use backflow::sync::{DriftOptions, DriftReport};
use std::process::ExitCode;

/// `sync drift`: the report, as text or JSON. Drift found is not an error: the exit code is 0
/// whenever the report could be made.
pub(crate) async fn drift(
    app: &App,
    actor: &Actor,
    name: &str,
    sample: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let report = app.drift(actor, name, DriftOptions { sample }).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_drift(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// `sync reconcile`: the run record of the reconcile.
pub(crate) async fn reconcile(
    app: &App,
    actor: &Actor,
    name: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let record = app.reconcile(actor, name).await?;
    if json {
        println!("{}", serde_json::to_string(&record)?);
    } else {
        print_run(&record);
    }
    Ok(exit_code(&[record.status], false))
}

fn examples(keys: &[String]) -> String {
    if keys.is_empty() {
        String::new()
    } else {
        format!("  e.g. {}", keys.join(", "))
    }
}

/// The report as text: counts per kind, the fields that differ, examples, notes.
pub(crate) fn print_drift(r: &DriftReport) {
    println!(
        "drift of {} (destination {}): {} delivered rows, {} checked",
        r.sync, r.destination, r.snapshot_rows, r.checked
    );
    println!("  in sync                   {:>8}", r.in_sync);
    println!(
        "  missing                   {:>8}{}",
        r.missing,
        examples(&r.examples.missing)
    );
    let differing: Vec<String> = r.examples.differing.iter().map(|d| d.key.clone()).collect();
    println!(
        "  differing                 {:>8}{}",
        r.differing,
        examples(&differing)
    );
    for (field, rows) in &r.fields {
        println!("    field {field:<19} {rows:>8}");
    }
    println!(
        "  deleted, still present    {:>8}  ({} deleted rows checked){}",
        r.deleted_present,
        r.deletes_checked,
        examples(&r.examples.deleted_present)
    );
    for row in &r.examples.differing {
        for f in &row.fields {
            let found = f
                .found
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "(absent)".into());
            println!(
                "  row {}: {}: sent {}, found {found}",
                row.key, f.field, f.sent
            );
        }
    }
    for note in &r.notes {
        println!("note: {note}");
    }
    if r.total() == 0 {
        println!("no drift");
    } else {
        println!(
            "{} rows drifted; `backflow sync reconcile {}` restores them",
            r.total(),
            r.sync
        );
    }
}
