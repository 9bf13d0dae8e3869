//! A change request (or the working copy's diff) as one Markdown comment, for the pull
//! request that carries the configuration: the plugin builds that change, per affected sync
//! the dry-run counts with a few before/after samples, check verdicts, policy decisions, the
//! requirements still open and the configuration diff. Reviewers who live in pull requests
//! see what `change show` shows.

use super::change::{short, ChangeRequest};
use super::diff::ConfigDiff;
use super::policies::describe_requirement;
use std::fmt::Write;

/// Sample rows shown per change of a sync (the change keeps a few more at most).
const SAMPLES_SHOWN: usize = 3;

/// Text made safe for one Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The report of a submitted change request.
pub fn change_markdown(c: &ChangeRequest) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## backflow change #{}: {}\n",
        c.id,
        cell(if c.message.is_empty() {
            "(no message)"
        } else {
            &c.message
        })
    );
    let _ = writeln!(
        out,
        "**Status:** {} · **author:** {} ({}) · **configuration** `{}` against `{}`\n",
        c.status,
        c.author,
        c.author_role.as_str(),
        short(&c.config_hash),
        c.base_hash
            .as_deref()
            .map(short)
            .unwrap_or("nothing published")
    );
    let unmet = c.unmet();
    out.push_str("### Requirements still open\n\n");
    if unmet.is_empty() {
        out.push_str("None: every requirement is met.\n\n");
    } else {
        for r in unmet {
            let _ = writeln!(out, "- [ ] {}", describe_requirement(r));
        }
        out.push('\n');
    }
    out.push_str("### Policy decisions\n\n");
    if c.policies.is_empty() {
        out.push_str("No approval policy is configured.\n\n");
    } else {
        out.push_str("| Policy | Decision |\n|---|---|\n");
        for v in &c.policies {
            let decision = serde_json::to_string(&v.decision).unwrap_or_default();
            let _ = writeln!(out, "| {} | `{}` |", cell(&v.policy), cell(&decision));
        }
        out.push('\n');
    }
    if !c.reviews.is_empty() {
        out.push_str("### Reviews\n\n");
        for r in &c.reviews {
            let _ = writeln!(
                out,
                "- {} by {} ({}){}",
                r.verdict,
                r.user,
                r.role.as_str(),
                r.comment
                    .as_deref()
                    .map(|c| format!(": {}", cell(c)))
                    .unwrap_or_default()
            );
        }
        out.push('\n');
    }
    diff_sections(&mut out, &c.diff);
    out
}

/// The report of the working copy against the published configuration (`backflow diff`).
pub fn diff_markdown(d: &ConfigDiff) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## backflow diff: working copy `{}` against published `{}`\n",
        short(&d.working_hash),
        d.published_hash.as_deref().map(short).unwrap_or("nothing")
    );
    if d.is_empty() {
        out.push_str("The working copy and its plugins match the published configuration.\n");
        return out;
    }
    diff_sections(&mut out, d);
    out
}

/// What changed: entities, plugin builds, syncs (counts, samples, checks), the file diff.
fn diff_sections(out: &mut String, d: &ConfigDiff) {
    if !d.entities.is_empty() {
        out.push_str("### What changes\n\n");
        for e in &d.entities {
            let _ = writeln!(out, "- {} {} `{}`", e.change, e.kind, e.name);
        }
        out.push('\n');
    }
    if !d.plugins.is_empty() {
        out.push_str(
            "### Plugin builds\n\n| Plugin | Published | This change | Spec |\n|---|---|---|---|\n",
        );
        for p in &d.plugins {
            let old = match (&p.old_hash, p.old_size) {
                (Some(h), Some(size)) => format!("`{}` ({size} bytes)", short(h)),
                (Some(h), None) => format!("`{}`", short(h)),
                (None, _) => "not published".to_string(),
            };
            let spec = if p.spec_changes.is_empty() {
                "same spec".to_string()
            } else {
                p.spec_changes.join("; ")
            };
            let _ = writeln!(
                out,
                "| {} | {old} | `{}` ({} bytes) | {} |",
                cell(&p.reference),
                short(&p.new_hash),
                p.new_size,
                cell(&spec)
            );
        }
        out.push('\n');
    }
    sync_sections(out, d);
    if !d.text.is_empty() {
        // A fence longer than any backtick run in the diff keeps it one code block.
        let fence = "`".repeat(longest_backtick_run(&d.text).max(2) + 1);
        let _ = writeln!(
            out,
            "### Configuration diff\n\n{fence}diff\n{}{fence}",
            d.text
        );
        if !d.text.ends_with('\n') {
            out.push('\n');
        }
    }
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

/// Per affected sync: its dry-run counts, then its samples and check verdicts.
fn sync_sections(out: &mut String, d: &ConfigDiff) {
    if d.syncs.is_empty() {
        return;
    }
    out.push_str("### Affected syncs (dry run against the current state)\n\n| Sync | Mode | Destination | Added | Changed | Removed |\n|---|---|---|---|---|---|\n");
    for s in &d.syncs {
        let i = &s.impact;
        match &s.error {
            Some(e) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | cannot plan: {} | | |",
                    cell(&i.sync_name),
                    i.mode,
                    cell(&i.destination),
                    cell(e)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    cell(&i.sync_name),
                    i.mode,
                    cell(&i.destination),
                    i.added,
                    i.changed,
                    i.removed
                );
            }
        }
    }
    out.push('\n');
    for s in &d.syncs {
        let samples = sample_lines(&s.samples);
        if !samples.is_empty() {
            let _ = writeln!(
                out,
                "<details><summary>Samples of sync {}</summary>\n\n```json",
                s.impact.sync_name
            );
            for line in samples {
                let _ = writeln!(out, "{line}");
            }
            out.push_str("```\n\n</details>\n\n");
        }
        if !s.checks.is_empty() {
            let _ = writeln!(
                out,
                "Checks of sync {}:\n\n| Check | Severity | Verdict | Message |\n|---|---|---|---|",
                s.impact.sync_name
            );
            for c in &s.checks {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    cell(&c.name),
                    label(&c.severity),
                    label(&c.verdict),
                    cell(&c.message)
                );
            }
            out.push('\n');
        }
    }
}

/// `added: {…}`, `changed: {"key":…,"before":…,"after":…}`, `removed: {…}` lines.
fn sample_lines(samples: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for change in ["added", "changed", "removed"] {
        let Some(rows) = samples.get(change).and_then(|v| v.as_array()) else {
            continue;
        };
        for row in rows.iter().take(SAMPLES_SHOWN) {
            out.push(format!("{change}: {row}"));
        }
    }
    out
}

fn label<T: serde::Serialize + std::fmt::Debug>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::diff::SyncPlanCounts;
    use super::*;
    use backflow_plugin_sdk::SyncImpact;

    #[test]
    fn a_diff_report_holds_counts_samples_and_the_diff_in_one_block() {
        let diff = ConfigDiff {
            published_hash: Some("aaaaaaaaaaaaaaaa".into()),
            working_hash: "bbbbbbbbbbbbbbbb".into(),
            entities: vec![super::super::diff::EntityChange {
                kind: "syncs".into(),
                name: "to_crm".into(),
                change: super::super::diff::EntityChangeKind::Modified,
            }],
            syncs: vec![SyncPlanCounts {
                impact: SyncImpact {
                    sync_name: "to_crm".into(),
                    destination: "crm".into(),
                    mode: "upsert".into(),
                    added: 2,
                    changed: 1,
                    removed: 0,
                    column_labels: vec![],
                },
                error: None,
                samples: serde_json::json!({
                    "added": [{"id": "1"}],
                    "changed": [{"key": "2", "before": {"plan": "free"}, "after": {"plan": "pro"}}],
                    "removed": []
                }),
                checks: vec![],
            }],
            text: "--- published/a\n+++ working/a\n-x = \"```\"\n".into(),
            removed_labels: vec![],
            changed_grants: vec![],
            plugins: vec![],
        };
        let md = diff_markdown(&diff);
        assert!(md.contains("| to_crm | upsert | crm | 2 | 1 | 0 |"), "{md}");
        assert!(md.contains("added: {\"id\":\"1\"}"), "{md}");
        let changed = md.lines().find(|l| l.starts_with("changed: ")).unwrap();
        assert!(
            changed.contains(r#""before":{"plan":"free"}"#)
                && changed.contains(r#""after":{"plan":"pro"}"#),
            "{md}"
        );
        assert!(md.contains("````diff\n--- published/a"), "{md}");
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
