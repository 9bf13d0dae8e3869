//! The plan of a reconcile: a drift walk whose findings become planned rows. A row missing
//! at the destination is planned as added (sent again as delivered), a row whose fields
//! differ as changed (its delivered values applied again), a row a run deleted that the
//! destination still holds as removed (deleted again). The sync's mode decides what is sent
//! of each, as for any run (only `mirror` sends deletes; `update` sends no inserts).
//!
//! The result is an ordinary [`Plan`], so a reconcile goes through checks (purpose
//! `reconcile`), the approval gate, delivery, the journal and history like any run. What it
//! commits is what the snapshot already says, so the snapshot does not move.

use super::report::{DriftError, DriftOptions, DriftReport};
use super::walk::{columns, walk, Finding};
use crate::domain::{Change, DiffCounts};
use crate::host::PluginHost;
use crate::state::StateStore;
use crate::sync::plan::file::write_frame;
use crate::sync::plan::Plan;
use crate::sync::prepare::PreparedSync;
use crate::sync::run::Abort;
use crate::workspace::Workspace;
use std::io::{BufWriter, Write};

/// A reconcile's plan, and the drift it was made from.
pub struct ReconcilePlan {
    /// What to send: `added` rows missing at the destination, `changed` rows whose fields
    /// differ, `removed` rows to delete again.
    pub plan: Plan,
    /// The drift found.
    pub report: DriftReport,
}

/// Measures the drift of the prepared sync and plans what restores what was sent.
pub(crate) async fn plan_reconcile(
    host: &PluginHost,
    ws: &Workspace,
    state: &StateStore,
    p: &PreparedSync,
) -> Result<ReconcilePlan, DriftError> {
    let tmp_dir = ws.state_dir.join("tmp");
    let io = Abort::io(format!("writing plan files in {}", tmp_dir.display()));
    std::fs::create_dir_all(&tmp_dir).map_err(&io)?;
    let files = [
        tempfile::tempfile_in(&tmp_dir).map_err(&io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(&io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(&io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(&io)?,
    ];
    let mut diff = DiffCounts::default();
    let mut fingerprint = xxhash_rust::xxh3::Xxh3::new();
    let report = {
        let mut writers: Vec<BufWriter<&std::fs::File>> = files
            .iter()
            .map(|f| BufWriter::with_capacity(1 << 20, f))
            .collect();
        let mut on = |finding: Finding<'_>| -> Result<(), Abort> {
            let (change, key, fp, row, before): (Change, &[u8], [u8; 16], &[u8], &[u8]) =
                match finding {
                    Finding::Missing { key, sent } => (Change::Added, key, sent.fp, &sent.row, &[]),
                    Finding::Differs { key, sent } => {
                        (Change::Changed, key, sent.fp, &sent.row, &sent.row)
                    }
                    Finding::StillPresent { key, before } => {
                        (Change::Removed, key, [0u8; 16], &[], before)
                    }
                };
            fingerprint.update(&[change as u8]);
            fingerprint.update(&(key.len() as u32).to_be_bytes());
            fingerprint.update(key);
            fingerprint.update(&fp);
            match change {
                Change::Added => diff.added += 1,
                Change::Changed => diff.changed += 1,
                _ => diff.removed += 1,
            }
            write_frame(&mut writers[change as usize], key, &fp, row, before).map_err(&io)
        };
        let report = walk(host, ws, state, p, DriftOptions::default(), &mut on).await?;
        for w in &mut writers {
            w.flush().map_err(&io)?;
        }
        report
    };
    let (columns, key_columns) = columns(host, p).await?;
    let plan = Plan {
        columns,
        key_columns,
        model_rows: 0,
        snapshot_rows: report.snapshot_rows,
        diff,
        fingerprint: format!("{:032x}", fingerprint.digest128()),
        files,
        key_types: Vec::new(),
        cleared_deletes: Vec::new(),
        out_of_key_order: false,
    };
    Ok(ReconcilePlan { plan, report })
}

/// The plan of a reconcile: the drift found, as planned rows; the drift counts go to the
/// metrics.
pub(crate) async fn plan_reconcile_run(
    host: &PluginHost,
    ws: &Workspace,
    state: &StateStore,
    p: &PreparedSync,
) -> Result<Plan, Abort> {
    match plan_reconcile(host, ws, state, p).await {
        Ok(r) => {
            r.report.record_metrics();
            Ok(r.plan)
        }
        Err(DriftError::Run(abort)) => Err(abort),
        Err(e) => Err(Abort::Destination(format!("measuring drift: {e}"))),
    }
}
