//! The UI's pages as maud templates: markup only (every value is escaped by maud), no
//! decisions beyond showing what the viewer's role allows.

use super::viewer::Viewer;
use crate::app::SyncSummary;
use crate::authz::{allowed, Action};
use crate::domain::{RunRecord, RunStatus};
use crate::governance::{ChangeRequest, ChangeStatus, RunGate};
use crate::state::AuditEntry;
use crate::sync::PlanReport;
use axum::http::StatusCode;
use maud::{html, Markup, PreEscaped, DOCTYPE};

pub(super) mod drift;

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 24px;display:flex;gap:20px;align-items:center}
header a{color:#cfd8ea;text-decoration:none}header a:hover{color:#fff}header .who{margin-left:auto;color:#cfd8ea}
header form{display:inline}main{padding:16px 24px;max-width:1280px}
table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0 18px}th,td{border-bottom:1px solid #e3e6ec;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#eef1f6;font-weight:600}code,pre{font:12px ui-monospace,Menlo,monospace}pre{white-space:pre-wrap;margin:0}
.status{padding:1px 7px;border-radius:9px;font-size:12px;background:#e3e6ec}.succeeded,.published,.approved{background:#d4f2dc}.failed,.rejected,.blocked{background:#fbd9d9}
.partial,.awaiting_approval,.pending,.waiting,.interrupted,.awaiting_publish{background:#fbefc9}.refused,.removed{background:#fbd9d9}.serving{background:#d4f2dc}.running{background:#d9e7fb}
button,.button{background:#2957c7;color:#fff;border:0;border-radius:4px;padding:5px 12px;font-size:13px;cursor:pointer;text-decoration:none;display:inline-block}
button.secondary,.button.secondary{background:#5b6478}button.danger{background:#b3261e}
.error{background:#fbd9d9;padding:8px 12px;border-radius:4px}.note{color:#5b6478}
.diff td{font:12px ui-monospace,Menlo,monospace;white-space:pre-wrap;width:50%}.del{background:#fde8e8}.add{background:#e3f7e8}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:12px}.card{background:#fff;padding:10px 14px;border:1px solid #e3e6ec;border-radius:6px}
input[type=text],input[type=password],textarea{padding:5px;border:1px solid #b9c0cc;border-radius:4px;font:inherit}
";

pub(super) fn layout(v: Option<&Viewer>, title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · backflow" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "backflow" }
                    @if let Some(v) = v {
                        a href="/ui" { "Syncs" }
                        a href="/ui/approvals" { "Awaiting approval" }
                        a href="/ui/changes" { "Changes" }
                        a href="/ui/audit" { "Audit log" }
                        a href="/ui/plugins" { "Plugins" }
                        span.who { "signed in as " strong #whoami { (v.actor.user) } " (" (v.actor.role.as_str()) ")" }
                        form method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            button.secondary type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
    .into_string()
}

/// A page of the signed-in UI (for pages defined in their own files).
pub(super) fn page(v: &Viewer, title: &str, body: Markup) -> String {
    layout(Some(v), title, body)
}

/// A status badge (for pages defined in their own files).
pub(super) fn status_badge(s: &str) -> Markup {
    status(s)
}

pub(super) fn status(s: &str) -> Markup {
    html! { span class=(format!("status {s}")) { (s.replace('_', " ")) } }
}

/// A URL path segment for a name or id (names are plain words, but nothing is assumed).
pub fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn csrf(v: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.csrf); }
}

pub fn error(code: StatusCode, message: &str) -> String {
    layout(
        None,
        &format!(
            "{} {}",
            code.as_u16(),
            code.canonical_reason().unwrap_or("")
        ),
        html! {
            p.error #error { (message) }
            p { a href="/ui" { "Back to the syncs" } }
        },
    )
}

pub fn login(problem: Option<&str>) -> String {
    layout(
        None,
        "Sign in",
        html! {
            @if let Some(p) = problem { p.error #error { (p) } }
            p.note { "Sign in with an API token (" code { "backflow token create" } "). The session lasts eight hours." }
            form method="post" action="/ui/login" {
                input #token type="password" name="token" size="80" placeholder="bft_…" autocomplete="off";
                " "
                button #signin type="submit" { "Sign in" }
            }
        },
    )
}

/// Rows delivered per run, oldest to newest, as a small inline SVG.
fn sparkline(values: &[u64]) -> Markup {
    let (w, h) = (120.0, 24.0);
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                h - 2.0 - (*v as f64 / max) * (h - 4.0)
            )
        })
        .collect();
    html! {
        svg width="120" height="24" viewBox="0 0 120 24" role="img" aria-label=(format!("rows delivered in the last {} runs", values.len())) {
            @if values.len() > 1 { polyline fill="none" stroke="#2957c7" stroke-width="1.5" points=(points.join(" ")); }
            @else if values.len() == 1 { circle cx="2" cy=(format!("{:.1}", h - 2.0 - (values[0] as f64 / max) * (h - 4.0))) r="2" fill="#2957c7"; }
        }
    }
}

pub fn syncs(v: &Viewer, rows: &[(SyncSummary, Vec<u64>)]) -> String {
    let can_run = allowed(&v.actor, Action::RunSync);
    layout(
        Some(v),
        "Syncs",
        html! {
            table #syncs {
                tr { th { "Sync" } th { "Model" } th { "Destination" } th { "Mode" } th { "Schedule" } th { "Health" } th { "Last run" } th { "Next run" } th { "Rows delivered per run" } @if can_run { th { "" } } }
                @for (s, delivered) in rows {
                    tr id=(format!("sync-{}", s.name)) {
                        td { a href=(format!("/ui/syncs/{}", path_segment(&s.name))) { (s.name) } }
                        td { (s.model) } td { (s.destination) } td { (s.mode.as_str()) }
                        td { @if let Some(p) = &s.schedule { code { (p) } @if let Some(tz) = &s.timezone { " " span.note { (tz) } } } @else if !s.after.is_empty() { "after " (s.after.join(", ")) } @else { span.note { "manual" } } }
                        td.health { (status(s.health.as_str())) @if let Some(since) = &s.health_since { " " span.note { "since " (since) } } }
                        td { @if let Some(r) = &s.last_run { (status(r.status.as_str())) " " a href=(format!("/ui/runs/{}", path_segment(&r.run_id))) { (r.started_at) } } @else { span.note { "never" } } }
                        td { (s.next_run.as_deref().unwrap_or("–")) }
                        td { (sparkline(delivered)) }
                        @if can_run {
                            td {
                                a.button.run-now href=(format!("/ui/syncs/{}/confirm", path_segment(&s.name))) { "Run now" } " "
                                a.button.secondary.full-resync href=(format!("/ui/syncs/{}/confirm?full_resync=true", path_segment(&s.name))) { "Full resync" }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn counts_row(label: &str, c: &crate::domain::OpCounts) -> Markup {
    html! { tr { th { (label) } td { (c.added) } td { (c.changed) } td { (c.removed) } } }
}

pub fn sync_history(
    v: &Viewer,
    s: &SyncSummary,
    runs: &[RunRecord],
    next: Option<&str>,
    running: bool,
    queued: bool,
) -> String {
    layout(
        Some(v),
        &format!("Sync {}", s.name),
        html! {
            p { "Model " strong { (s.model) } " → destination " strong { (s.destination) } ", mode " (s.mode.as_str()) "."
                @if running { " " (status("running")) } @if queued { " a follow-up run is queued." } }
            @if allowed(&v.actor, Action::RunSync) {
                p { a.button.run-now href=(format!("/ui/syncs/{}/confirm", path_segment(&s.name))) { "Run now" } " "
                    a.button.secondary.full-resync href=(format!("/ui/syncs/{}/confirm?full_resync=true", path_segment(&s.name))) { "Full resync" } }
            }
            @if allowed(&v.actor, Action::TestRow) { (test_row_form(v, &s.name)) }
            form method="get" action=(format!("/ui/syncs/{}/rows", path_segment(&s.name))) {
                "Row history: " input type="text" name="key" placeholder="primary key"; " " button.secondary type="submit" { "Look up" }
            }
            p { a.button.secondary.drift href=(format!("/ui/syncs/{}/drift", path_segment(&s.name))) { "Check drift" }
                " " span.note { "compares what the destination holds with what backflow sent" } }
            table #runs {
                tr { th { "Run" } th { "Status" } th { "Trigger" } th { "By" } th { "Started" } th { "Duration" } th { "Delivered" } th { "Failed" } }
                @for r in runs {
                    tr {
                        td { a href=(format!("/ui/runs/{}", path_segment(&r.run_id))) { code { (r.run_id) } } }
                        td { (status(r.status.as_str())) } td.trigger { (r.trigger) } td.user { (r.user) } td { (r.started_at) }
                        td { (r.duration_ms) " ms" } td { (r.delivered.total()) } td { (r.failed.total()) }
                    }
                }
            }
            @if runs.is_empty() { p.note { "No runs yet." } }
            @if let Some(n) = next { p { a href=(format!("/ui/syncs/{}?before={}", path_segment(&s.name), path_segment(n))) { "Older runs →" } } }
        },
    )
}

/// The "Test one row" form of a sync's page.
fn test_row_form(v: &Viewer, sync: &str) -> Markup {
    html! {
        form #test-row method="post" action=(format!("/ui/syncs/{}/test", path_segment(sync))) {
            (csrf(v))
            "Test one row: " input type="text" name="key" placeholder="primary key (empty: the first row)";
            " " button.secondary type="submit" { "Send one row" }
        }
    }
}

fn samples(value: &serde_json::Value) -> Markup {
    html! {
        @if let Some(map) = value.as_object() {
            @for (change, rows) in map {
                @if let Some(rows) = rows.as_array().filter(|r| !r.is_empty()) {
                    h3 { (change) }
                    table.samples {
                        @for row in rows {
                            @if let (Some(before), Some(after)) = (row.get("before"), row.get("after")) {
                                tr { td.del { pre { (before.to_string()) } } td.add { pre { (after.to_string()) } } }
                            } @else {
                                tr { td colspan="2" { pre { (row.to_string()) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn confirm_run(v: &Viewer, name: &str, full_resync: bool, plan: &PlanReport) -> String {
    let what = if full_resync {
        "Full resync"
    } else {
        "Run now"
    };
    layout(
        Some(v),
        &format!("{what}: {name}"),
        html! {
            p { "A dry run now (nothing sent yet): " strong #dry-run { (plan.planned.added) " to add, " (plan.planned.changed) " to change, " (plan.planned.removed) " to remove" }
                " of " (plan.model_rows) " model rows." }
            @if plan.diff.cleared_deletes > 0 {
                p #cleared-deletes { (plan.diff.cleared_deletes) " rows whose delete the destination refused will be dropped from the state, not sent again." }
            }
            @if plan.blocked { p.error { "A failing quality check would block this run." } }
            form method="post" action=(format!("/ui/syncs/{}/runs", path_segment(name))) {
                (csrf(v))
                @if full_resync { input type="hidden" name="full_resync" value="true"; }
                button #confirm type="submit" { "Confirm: " (what) }
                " " a.button.secondary href="/ui" { "Cancel" }
            }
            (samples(&plan.samples))
        },
    )
}

pub fn run_detail(v: &Viewer, r: &RunRecord, gate: Option<&RunGate>) -> String {
    layout(
        Some(v),
        &format!("Run {}", r.run_id),
        html! {
            p { (status(r.status.as_str())) " sync " a href=(format!("/ui/syncs/{}", path_segment(&r.sync))) { (r.sync) }
                ", triggered by " strong #run-user { (r.user) } " (" span #run-trigger { (r.trigger) } ")"
                @if r.full_resync { ", full resync" } "." }
            @if let Some(e) = &r.error { p.error { (e) } }
            div.grid {
                div.card { strong { "Timings" } br; "started " (r.started_at) br; "finished " (r.finished_at) br;
                    "prepare " (r.timings.prepare_ms) " ms · plan " (r.timings.plan_ms) " ms · checks " (r.timings.check_ms) " ms · deliver " (r.timings.deliver_ms) " ms" }
                div.card { strong { "Rows" } br; "model " (r.model_rows) " · snapshot " (r.snapshot_rows) br;
                    "diff: +" (r.diff.added) " ~" (r.diff.changed) " −" (r.diff.removed) " =" (r.diff.unchanged) }
                div.card { strong { "Plugins" } br; "source " code { (crate::governance::short(&r.plugins.source)) } br; "destination " code { (crate::governance::short(&r.plugins.destination)) }
                    @for (name, hash) in &r.plugins.checks { br; "check " (name) " " code { (crate::governance::short(hash)) } } }
            }
            table #counts { tr { th { "" } th { "added" } th { "changed" } th { "removed" } } (counts_row("planned", &r.planned)) (counts_row("delivered", &r.delivered)) (counts_row("failed", &r.failed)) }
            (check_table(&r.checks))
            @if !r.rejected.is_empty() {
                h2 { "Rejected rows" }
                table #rejected { tr { th { "Key" } th { "Change" } th { "Destination's answer" } } @for x in &r.rejected { tr { td { code { (x.key) } } td { (x.change) } td { (x.error) } } } }
            }
            p { a #run-requests href=(format!("/ui/runs/{}/requests", path_segment(&r.run_id))) { "Requests sent to the destination (delivery debugger)" } }
            @if let Some(g) = gate { (gate_section(v, r, g)) }
            @if allowed(&v.actor, Action::UndoRun) && !r.draft && r.delivered.total() > 0 {
                p { a.button.secondary #undo-run href=(format!("/ui/runs/{}/undo", path_segment(&r.run_id))) { "Undo this run…" } }
            }
        },
    )
}

/// The checks' verdicts on a run or on an undo's plan.
fn check_table(checks: &[crate::domain::CheckReport]) -> Markup {
    html! {
        @if !checks.is_empty() {
            h2 { "Quality checks" }
            table #checks { tr { th { "Check" } th { "Severity" } th { "Verdict" } th { "Message" } th { "Sample rows" } }
                @for c in checks { tr { td { (c.name) } td { (format!("{:?}", c.severity).to_lowercase()) } td { (status(c.verdict.as_str())) } td { (c.message) } td { @for s in &c.samples { pre { (s) } } } } } }
        }
    }
}

pub fn confirm_undo(v: &Viewer, u: &crate::sync::UndoReport) -> String {
    layout(
        Some(v),
        &format!("Undo run {}", u.run_id),
        html! {
            p { "The inverse of this run on sync " strong { (u.sync) } " (nothing sent yet): " strong #undo-plan { (u.planned.added) " to insert back, " (u.planned.changed) " to update back, " (u.planned.removed) " to delete" } "." }
            @if u.conflicts > 0 {
                p.error { (u.conflicts) " rows were changed by a later run and are left alone" @if u.forced { " — forced: they are undone too" } ": " (u.conflict_keys.join(", ")) }
            }
            @for b in &u.blocking {
                p.error.blocking { "Blocked by check " strong { (b.check) } " (" (b.configured_at) "): " (b.message) ". " (b.remedy) }
            }
            @if !u.blocked {
                form method="post" action=(format!("/ui/runs/{}/undo", path_segment(&u.run_id))) {
                    (csrf(v))
                    @if u.forced { input type="hidden" name="force" value="true"; }
                    button.danger #confirm-undo type="submit" { "Confirm: undo this run" }
                    " " a.button.secondary href=(format!("/ui/runs/{}", path_segment(&u.run_id))) { "Cancel" }
                }
            }
            (check_table(&u.checks))
            (samples(&u.samples))
        },
    )
}

pub fn row_history(
    v: &Viewer,
    sync: &str,
    key: &str,
    h: Option<&crate::app::RowHistory>,
) -> String {
    layout(
        Some(v),
        &format!("Row history · {sync}"),
        html! {
            form method="get" action=(format!("/ui/syncs/{}/rows", path_segment(sync))) {
                input #row-key type="text" name="key" value=(key) placeholder="primary key (42, or 42|eu)";
                " " button.secondary type="submit" { "Look up" }
            }
            @if let Some(h) = h {
                h2 { "Now" }
                p { "In the destination from us: " @if let Some(c) = &h.current { code #row-current { (c.to_string()) } } @else { span.note { "nothing" } } }
                @if let Some(p) = &h.pending { p.error { "Waiting to be retried: " (serde_json::to_string(p).unwrap_or_default()) } }
                h2 { "Runs that touched it" }
                table #row-events {
                    tr { th { "Run" } th { "At" } th { "By" } th { "Operation" } th { "Before" } th { "Sent" } th { "Answer" } }
                    @for e in &h.runs {
                        tr { td { a href=(format!("/ui/runs/{}", path_segment(&e.run_id))) { code { (e.run_id) } } } td { (e.started_at) } td { (e.user) } td { (e.operation) }
                            td { @if let Some(b) = &e.before { code { (b.to_string()) } } } td { @if let Some(x) = &e.sent { code { (x.to_string()) } } } td { (e.answer) } }
                    }
                }
            }
        },
    )
}

fn gate_section(v: &Viewer, r: &RunRecord, g: &RunGate) -> Markup {
    html! {
        h2 { "Approval " (status(g.status.as_str())) }
        p { "Requested by " (g.requested_by) " at " (g.requested_at) "; expires " (g.expires_at) ". Plan: "
            (g.planned.added) " to add, " (g.planned.changed) " to change, " (g.planned.removed) " to remove." }
        ul { @for req in &g.requirements { li { (crate::governance::describe_requirement(req)) } } }
        @if !g.approvals.is_empty() { p { "Approved by: " @for a in &g.approvals { (a.user) " " } } }
        (samples(&g.samples))
        @if g.status == crate::governance::GateStatus::Waiting && r.status == RunStatus::AwaitingApproval && allowed(&v.actor, Action::ApproveRun) {
            form method="post" action=(format!("/ui/runs/{}/approve", path_segment(&r.run_id))) {
                (csrf(v))
                input type="text" name="comment" placeholder="comment (optional)" size="50";
                " " button #approve-run type="submit" { "Approve" }
            }
        }
        (close_held_forms(v, r, g))
    }
}

/// Reject (an approver) and cancel (whoever started the run, or an admin) a held run.
fn close_held_forms(v: &Viewer, r: &RunRecord, g: &RunGate) -> Markup {
    use crate::governance::GateStatus;
    let open = matches!(g.status, GateStatus::Waiting | GateStatus::Approved)
        && matches!(r.status, RunStatus::AwaitingApproval | RunStatus::Approved);
    let may_cancel = if g.requested_by == v.actor.user {
        allowed(&v.actor, Action::RunSync)
    } else {
        allowed(&v.actor, Action::CancelRun)
    };
    html! {
        @if open && allowed(&v.actor, Action::RejectRun) {
            form method="post" action=(format!("/ui/runs/{}/reject", path_segment(&r.run_id))) {
                (csrf(v))
                input type="text" name="comment" placeholder="why (optional)" size="50";
                " " button #reject-run type="submit" { "Reject" }
            }
        }
        @if open && may_cancel {
            form method="post" action=(format!("/ui/runs/{}/cancel", path_segment(&r.run_id))) {
                (csrf(v))
                button #cancel-run type="submit" { "Cancel this run" }
            }
        }
    }
}

pub fn approvals(v: &Viewer, waiting: &[(RunRecord, RunGate)]) -> String {
    layout(
        Some(v),
        "Runs awaiting approval",
        html! {
            @if waiting.is_empty() { p.note #none-waiting { "No run is waiting for approval." } }
            @for (r, g) in waiting {
                div.card.held id=(format!("held-{}", r.run_id)) {
                    h3 { a href=(format!("/ui/runs/{}", path_segment(&r.run_id))) { (r.sync) " · " (r.run_id) } }
                    (gate_section(v, r, g))
                }
            }
        },
    )
}

pub fn changes(v: &Viewer, list: &[ChangeRequest]) -> String {
    layout(
        Some(v),
        "Change requests",
        html! {
            table #changes {
                tr { th { "#" } th { "Author" } th { "Message" } th { "Status" } th { "Created" } }
                @for c in list {
                    tr { td { a href=(format!("/ui/changes/{}", c.id)) { "#" (c.id) } } td { (c.author) } td { (c.message) } td { (status(c.status.as_str())) } td { (c.created_at) } }
                }
            }
            @if list.is_empty() { p.note { "No change requests. Submit one with " code { "backflow change submit" } "." } }
        },
    )
}

/// A unified diff as two columns: removed lines left, added right, context on both.
fn side_by_side(diff: &str) -> Markup {
    let mut rows: Vec<(Option<String>, Option<String>, &'static str)> = Vec::new();
    let (mut dels, mut adds): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let flush = |rows: &mut Vec<(Option<String>, Option<String>, &'static str)>,
                 dels: &mut Vec<String>,
                 adds: &mut Vec<String>| {
        for i in 0..dels.len().max(adds.len()) {
            rows.push((dels.get(i).cloned(), adds.get(i).cloned(), "change"));
        }
        dels.clear();
        adds.clear();
    };
    for line in diff.lines() {
        if line.starts_with("+++") || line.starts_with("---") {
            flush(&mut rows, &mut dels, &mut adds);
            rows.push((Some(line.to_string()), None, "file"));
        } else if let Some(l) = line.strip_prefix('-') {
            dels.push(l.to_string());
        } else if let Some(l) = line.strip_prefix('+') {
            adds.push(l.to_string());
        } else {
            flush(&mut rows, &mut dels, &mut adds);
            let l = line.strip_prefix(' ').unwrap_or(line).to_string();
            rows.push((Some(l.clone()), Some(l), "same"));
        }
    }
    flush(&mut rows, &mut dels, &mut adds);
    html! {
        table.diff #diff {
            tr { th { "published" } th { "this change" } }
            @for (left, right, kind) in rows {
                @if kind == "file" { tr { td colspan="2" { strong { (left.unwrap_or_default()) } } } }
                @else if kind == "same" { tr { td { (left.unwrap_or_default()) } td { (right.unwrap_or_default()) } } }
                @else { tr { td class=(if left.is_some() { "del" } else { "" }) { (left.unwrap_or_default()) } td class=(if right.is_some() { "add" } else { "" }) { (right.unwrap_or_default()) } } }
            }
        }
    }
}

pub fn change_detail(v: &Viewer, c: &ChangeRequest) -> String {
    let can_review = allowed(&v.actor, Action::ApproveChange)
        && c.author != v.actor.user
        && c.status == ChangeStatus::Pending;
    let can_publish =
        allowed(&v.actor, Action::PublishChange) && c.status == ChangeStatus::Approved;
    layout(
        Some(v),
        &format!("Change #{}", c.id),
        html! {
            p { (status(c.status.as_str())) " by " strong { (c.author) } " (" (c.author_role.as_str()) ") at " (c.created_at) }
            p { em { (c.message) } }
            h2 { "Policy decisions" }
            table #policies { tr { th { "Policy" } th { "Decision" } }
                @for p in &c.policies { tr { td { (p.policy) } td { code { (serde_json::to_string(&p.decision).unwrap_or_default()) } } } } }
            h2 { "Requirements" }
            ul #requirements { @for r in &c.requirements { li { (crate::governance::describe_requirement(r)) } } }
            h2 { "Reviews" }
            table #reviews { tr { th { "Who" } th { "Role" } th { "Verdict" } th { "Comment" } th { "At" } }
                @for r in &c.reviews { tr { td { (r.user) } td { (r.role.as_str()) } td { (status(&r.verdict)) } td { (r.comment.as_deref().unwrap_or("")) } td { (r.at) } } } }
            @if can_review {
                form #review method="post" action=(format!("/ui/changes/{}/review", c.id)) {
                    (csrf(v))
                    textarea name="comment" rows="2" cols="60" placeholder="comment (optional)" {}
                    br;
                    button #approve-change type="submit" name="verdict" value="approve" { "Approve" } " "
                    button.danger #reject-change type="submit" name="verdict" value="reject" { "Reject" }
                }
            }
            @if can_publish {
                form method="post" action=(format!("/ui/changes/{}/publish", c.id)) { (csrf(v)) button #publish type="submit" { "Publish" } }
            }
            h2 { "Dry-run counts per affected sync" }
            table #impact { tr { th { "Sync" } th { "Destination" } th { "Add" } th { "Change" } th { "Remove" } th { "" } }
                @for s in &c.diff.syncs { tr { td { (s.impact.sync_name) } td { (s.impact.destination) } td { (s.impact.added) } td { (s.impact.changed) } td { (s.impact.removed) } td { (s.error.as_deref().unwrap_or("")) } } } }
            (plugin_builds(&c.diff.plugins))
            h2 { "Configuration" }
            (side_by_side(&c.diff.text))
        },
    )
}

/// The plugins whose build a change makes differ from the published one.
fn plugin_builds(plugins: &[crate::governance::PluginBuildChange]) -> Markup {
    let short = crate::governance::short;
    html! {
        @if !plugins.is_empty() {
            h2 { "Plugin builds" }
            table #plugin-builds { tr { th { "Plugin" } th { "Published" } th { "This change" } th { "Spec" } }
                @for p in plugins { tr {
                    td { (p.reference) }
                    td { @match &p.old_hash { Some(h) => { code { (short(h)) } @if let Some(size) = p.old_size { " (" (size) " bytes)" } } None => { "not published" } } }
                    td { code { (short(&p.new_hash)) } " (" (p.new_size) " bytes)" }
                    td { @if p.spec_changes.is_empty() { "same spec" } @else { (p.spec_changes.join("; ")) } }
                } } }
        }
    }
}

/// What the audit page shows besides its entries.
pub struct AuditView<'a> {
    /// The hash chain's check, if asked for: where it breaks (`None`: it verifies).
    pub chain: Option<Option<u64>>,
    /// The sequence number the next (older) page starts before, if there is one.
    pub next_before: Option<u64>,
    /// The user filter.
    pub user: &'a str,
    /// The action filter.
    pub action: &'a str,
}

pub fn audit(v: &Viewer, entries: &[AuditEntry], view: AuditView<'_>) -> String {
    let (user, action) = (view.user, view.action);
    let query = |extra: &str| {
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        url.append_pair("user", user).append_pair("action", action);
        format!("/ui/audit?{}{extra}", url.finish())
    };
    layout(
        Some(v),
        "Audit log",
        html! {
            @match view.chain {
                None => { p #chain { "The hash chain is checked on request: " a href=(query("&verify=1")) { "verify it" } "." } }
                Some(None) => { p #chain { (status("succeeded")) " hash chain verified: no entry was edited or removed." } }
                Some(Some(seq)) => { p.error #chain { "The hash chain breaks at entry " (seq) ": the log was changed outside backflow." } }
            }
            form method="get" action="/ui/audit" {
                input type="text" name="user" value=(user) placeholder="user";
                " " input type="text" name="action" value=(action) placeholder="action (run., change.approve…)";
                " " button.secondary type="submit" { "Filter" }
            }
            table #audit {
                tr { th { "#" } th { "At" } th { "User" } th { "Action" } th { "Target" } th { "Detail" } }
                @for e in entries {
                    tr { td { (e.seq) } td { (e.at) } td.user { (e.event.user) } td.action { (e.event.action) } td { (e.event.target) } td { code { (e.event.detail.to_string()) } } }
                }
            }
            @if let Some(before) = view.next_before {
                p { a #older href=(query(&format!("&before={before}"))) { "Older entries" } }
            }
        },
    )
}
