//! Printing that several commands share: a run record (`sync run`, `runs show`, `runs
//! approve`, `runs undo`), check reports, and text from outside made safe for a terminal.

use backflow::domain::{CheckReport, OpCounts, RunRecord, Severity};

/// Text from outside (a destination's answer, a plugin's message) made safe for a terminal:
/// control characters (escape sequences that could recolour, retitle or clear the screen)
/// are shown escaped, e.g. `\u{1b}`.
pub(crate) fn shown(text: &str) -> String {
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

/// A run record: its counts, checks, error, rejected rows and what it undid.
pub(crate) fn print_run(r: &RunRecord) {
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

/// What an undo leaves alone (or sets back with `--force`): rows a later run changed, and
/// updates of records backflow never delivered.
pub(crate) fn print_left_alone(conflicts: u64, keys: &[String], forced: bool, without_before: u64) {
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

/// One line per quality check, with up to five sample rows each.
pub(crate) fn print_checks(checks: &[CheckReport]) {
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
