//! Printing for the command line: tables and summaries of what the application layer
//! returns. Nothing here decides anything; `--json` prints the same records as JSON.

use backflow::app::{RunResult, SyncSummary};
use backflow::domain::{CheckReport, OpCounts, RunRecord, Severity};
use backflow::host::Plugin;
use backflow::sync::PlanReport;

pub fn print_plugin(plugin: &Plugin, json: bool) -> anyhow::Result<()> {
    let schema: serde_json::Value = serde_json::from_str(&plugin.spec.config_schema)
        .unwrap_or(serde_json::Value::String(plugin.spec.config_schema.clone()));
    let info = serde_json::json!({
        "file": plugin.path,
        "name": plugin.spec.name,
        "version": plugin.spec.version,
        "kind": plugin.spec.kind,
        "description": plugin.spec.description,
        "wit": format!("backflow:plugin@{}", plugin.contract),
        "row_encoding": plugin.row_encoding.as_str(),
        "sha256": plugin.hash,
        "operations": plugin.spec.operations,
        "max_batch_size": plugin.spec.max_batch_size,
        "default_rate_limit": plugin.spec.default_rate_limit,
        "config_schema": schema,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!(
            "{} {} ({} plugin)",
            plugin.spec.name, plugin.spec.version, plugin.spec.kind
        );
        println!("  {}", plugin.spec.description);
        println!("  file:      {}", plugin.path.display());
        println!(
            "  contract:  backflow:plugin@{} ({} rows)",
            plugin.contract,
            plugin.row_encoding.as_str()
        );
        println!("  sha256:    {}", plugin.hash);
        if plugin.spec.kind == backflow_plugin_sdk::PluginKind::Destination {
            println!(
                "  operations: {}",
                plugin
                    .spec
                    .operations
                    .iter()
                    .map(|o| o.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let max = if plugin.spec.max_batch_size == 0 {
                "unlimited".to_string()
            } else {
                plugin.spec.max_batch_size.to_string()
            };
            println!("  max batch:  {max}");
        }
        println!(
            "  config schema:\n{}",
            indent(&serde_json::to_string_pretty(&schema)?, 4)
        );
    }
    Ok(())
}

pub fn print_conformance(report: &backflow::conformance::Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    match (&report.plugin, report.kind, &report.contract) {
        (Some(name), Some(kind), Some(contract)) => {
            println!(
                "{name} ({} plugin, contract {contract}, {} rows): {}",
                kind.as_str(),
                report.row_encoding.as_deref().unwrap_or("?"),
                report.file
            )
        }
        _ => println!("{}", report.file),
    }
    for check in &report.checks {
        if check.detail.is_empty() {
            println!("  {:<4} {}", check.outcome.label(), check.name);
        } else {
            println!(
                "  {:<4} {}: {}",
                check.outcome.label(),
                check.name,
                check.detail
            );
        }
    }
    let failed = report
        .checks
        .iter()
        .filter(|c| c.outcome == backflow::conformance::Outcome::Fail)
        .count();
    if failed == 0 {
        println!("conforms: {} checks, none failed", report.checks.len());
    } else {
        println!(
            "does not conform: {failed} of {} checks failed",
            report.checks.len()
        );
    }
    Ok(())
}

pub fn print_plugin_list(scan: &backflow::plugins::Scan, json: bool) -> anyhow::Result<()> {
    if json {
        let plugins: Vec<_> = scan
            .plugins
            .iter()
            .map(|p| serde_json::json!({"name": p.spec.name, "version": p.spec.version, "kind": p.spec.kind, "contract": p.contract.to_string(), "row_encoding": p.row_encoding.as_str(), "file": p.path, "sha256": p.hash}))
            .collect();
        let problems: Vec<_> = scan
            .problems
            .iter()
            .map(|(f, m)| serde_json::json!({"file": f, "error": m}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"plugins": plugins, "problems": problems})
            )?
        );
    } else {
        println!(
            "{:<20} {:<16} {:<9} {:<9} FILE",
            "NAME", "KIND", "VERSION", "CONTRACT"
        );
        for p in &scan.plugins {
            println!(
                "{:<20} {:<16} {:<9} {:<9} {}",
                p.spec.name,
                p.spec.kind.as_str(),
                p.spec.version,
                p.contract.to_string(),
                p.path.display()
            );
        }
        for (file, problem) in &scan.problems {
            eprintln!("skipped {}: {problem}", file.display());
        }
    }
    Ok(())
}

pub fn print_sync_list(syncs: &[SyncSummary], json: bool) -> anyhow::Result<()> {
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

pub fn print_plan(report: &PlanReport, json: bool) -> anyhow::Result<()> {
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
pub fn print_run_summary(results: &[RunResult], json: bool) -> anyhow::Result<()> {
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

pub fn print_runs(runs: &[RunRecord], json: bool) -> anyhow::Result<()> {
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

pub fn print_preview(p: &backflow::preview::ModelPreview) {
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

/// Text from outside (a destination's answer, a plugin's message) made safe for a terminal:
/// control characters (escape sequences that could recolour, retitle or clear the screen)
/// are shown escaped, e.g. `\u{1b}`.
pub fn shown(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub fn print_run(r: &RunRecord) {
    println!(
        "run {} of {}: {} in {} ms",
        r.run_id,
        r.sync,
        r.status.as_str(),
        r.duration_ms
    );
    println!(
        "  model {} rows, snapshot {} rows; diff: added {}, changed {}, removed {}, unchanged {}{}",
        r.model_rows,
        r.snapshot_rows,
        r.diff.added,
        r.diff.changed,
        r.diff.removed,
        r.diff.unchanged,
        if r.full_resync { " (full resync)" } else { "" }
    );
    if r.diff.cleared_deletes > 0 {
        println!("  full resync: dropped {} rows whose delete the destination had refused (not sent again)", r.diff.cleared_deletes);
    }
    let line = |label: &str, c: &OpCounts| {
        println!(
            "  {label:<10} added {:>8}  changed {:>8}  removed {:>8}",
            c.added, c.changed, c.removed
        )
    };
    line("planned", &r.planned);
    line("delivered", &r.delivered);
    line("failed", &r.failed);
    print_checks(&r.checks);
    if let Some(e) = &r.error {
        println!("  error: {}", shown(e));
    }
    if !r.rejected.is_empty() {
        println!(
            "  {} rejected rows (see `backflow runs show {}`)",
            r.failed.total(),
            r.run_id
        );
    }
    if let Some(u) = &r.undo {
        println!(
            "  undo of run {}{}",
            u.run_id,
            if u.forced { " (forced)" } else { "" }
        );
        print_left_alone(u.conflicts, &u.conflict_keys, u.forced, u.without_before);
    }
}

fn print_left_alone(conflicts: u64, keys: &[String], forced: bool, without_before: u64) {
    if conflicts > 0 {
        let what = if forced {
            "set back anyway (--force)"
        } else {
            "left alone (--force sets them back)"
        };
        println!(
            "  {conflicts} rows were changed by a later run: {what}; e.g. {}",
            keys.join(", ")
        );
    }
    if without_before > 0 {
        println!("  {without_before} rows were sent as updates of records backflow had never delivered: nothing to go back to, left alone");
    }
}

pub fn print_undo_report(r: &backflow::sync::UndoReport, json: bool) -> anyhow::Result<()> {
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
    println!(
        "run `backflow runs undo {} --yes{}` to send it",
        r.run_id,
        if r.forced { " --force" } else { "" }
    );
    Ok(())
}

pub fn print_row_history(h: &backflow::app::RowHistory, json: bool) -> anyhow::Result<()> {
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

pub fn print_checks(checks: &[CheckReport]) {
    for c in checks {
        let severity = match c.severity {
            Severity::Fail => "fail",
            Severity::Warn => "warn",
        };
        println!(
            "  check {:<28} {:<5} (severity {severity}): {}",
            c.name,
            c.verdict,
            shown(&c.message)
        );
        for sample in c.samples.iter().take(5) {
            println!("      {}", shown(sample));
        }
    }
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
