//! The drift page of a sync: what its destination holds against what backflow sent.

use super::{layout, path_segment, Viewer};
use crate::authz::{allowed, Action};
use crate::sync::DriftReport;
use maud::html;

/// The drift report of a sync, with the fields that differ and examples of each kind.
pub fn drift(v: &Viewer, r: &DriftReport) -> String {
    let sync = path_segment(&r.sync);
    layout(
        Some(v),
        &format!("Drift of {}", r.sync),
        html! {
            p { "Destination " strong { (r.destination) } ": " (r.snapshot_rows) " delivered rows, " (r.checked) " checked. "
                a href=(format!("/ui/syncs/{sync}")) { "Back to the sync" } }
            table #drift {
                tr { th { "Kind" } th { "Rows" } th { "Examples (keys)" } }
                tr.in-sync { td { "in sync" } td { (r.in_sync) } td {} }
                tr.missing { td { "missing at the destination" } td { (r.missing) } td { (r.examples.missing.join(", ")) } }
                tr.differing { td { "fields differ" } td { (r.differing) }
                    td { (r.examples.differing.iter().map(|d| d.key.clone()).collect::<Vec<_>>().join(", ")) } }
                tr.deleted-present { td { "deleted by backflow, still present" } td { (r.deleted_present) }
                    td { (r.examples.deleted_present.join(", ")) } }
            }
            @if !r.fields.is_empty() {
                table #drift-fields {
                    tr { th { "Field" } th { "Rows differing" } }
                    @for (field, rows) in &r.fields { tr { td { code { (field) } } td { (rows) } } }
                }
            }
            @if !r.examples.differing.is_empty() {
                table #drift-rows {
                    tr { th { "Key" } th { "Field" } th { "Sent" } th { "Found" } }
                    @for row in &r.examples.differing {
                        @for f in &row.fields {
                            tr { td { code { (row.key) } } td { code { (f.field) } } td { code { (f.sent) } }
                                td { code { (f.found.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "(absent)".into())) } } }
                        }
                    }
                }
            }
            @for note in &r.notes { p.note { (note) } }
            @if r.total() > 0 && allowed(&v.actor, Action::RunSync) {
                p.note { "To restore what drifted, run " code { "backflow sync reconcile " (r.sync) } " (it goes through checks and approvals like any run)." }
            }
        },
    )
}
