//! The plan of an undo: the inverse of one run, read from its changelog instead of a model.
//! The run's inserts become deletes, its updates become updates back to the values before,
//! its deletes become inserts of the values before. A row a later run changed (the snapshot
//! no longer holds what this run left) is a conflict: left alone unless forced. A row already
//! back to its values before (an undo interrupted midway) needs nothing, so an interrupted
//! undo is finished by running it again.
//!
//! The result is an ordinary [`Plan`], so an undo goes through checks, the approval gate,
//! delivery, the journal and history like any run. It is delivered with the operations of
//! `mirror` mode (added → insert, changed → update, removed → delete).

use super::built::Plan;
use super::file::{key_text, write_frame};
use crate::domain::{Change, DiffCounts, RowChange};
use crate::state::StateStore;
use crate::sync::prepare::PreparedSync;
use crate::sync::run::Abort;
use crate::workspace::SyncMode;
use std::io::{BufWriter, Write};

/// Which run to undo, and whether to overwrite rows later runs changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UndoTarget {
    /// The id of the run to undo; its changelog must still be kept.
    pub run_id: String,
    /// Overwrite rows a later run changed (conflicts) instead of leaving them alone.
    #[serde(default)]
    pub force: bool,
}

/// Rows read from the changelog per state transaction.
const CHUNK: usize = 4096;
/// Keys of conflicting or skipped rows kept for the report.
const SAMPLES: usize = 20;

/// An undo's plan and what it leaves out.
pub struct UndoPlan {
    /// The inverse plan, delivered with `mirror` mode's operations: `added` rows are the
    /// run's deletes inserted back, `changed` its updates reverted, `removed` its inserts deleted.
    pub plan: Plan,
    /// Rows a later run changed: left alone (or, forced, overwritten anyway).
    pub conflicts: u64,
    /// The keys of the first conflicting rows (at most 20), as text.
    pub conflict_keys: Vec<String>,
    /// Rows the run sent as updates of records backflow had never delivered (`update` mode):
    /// there is no "before" to go back to, so they are left as they are.
    pub without_before: u64,
    /// Rows already back to their values before the run (an undo that was interrupted).
    pub already_undone: u64,
}

/// Plans the inverse of `target` for the sync whose state is kept under `state_key`.
pub(crate) fn plan_undo(
    state: &StateStore,
    state_key: &str,
    sync_name: &str,
    tmp_dir: &std::path::Path,
    target: &UndoTarget,
) -> Result<UndoPlan, Abort> {
    let run = &target.run_id;
    let header = state.changelog_header(state_key, run)?.ok_or_else(|| {
        Abort::Undo(format!(
            "run {run} of sync {sync_name} has no changelog: it delivered nothing, or it is older than the last [state] keep_changelog_runs runs of the sync"
        ))
    })?;
    let mode = SyncMode::parse(&header.mode).unwrap_or(SyncMode::Upsert);
    if mode == SyncMode::Append {
        return Err(Abort::Undo(format!("run {run} of sync {sync_name} sent events (mode = \"append\"); an event cannot be taken back")));
    }
    let io = Abort::io(format!("writing plan files in {}", tmp_dir.display()));
    std::fs::create_dir_all(tmp_dir).map_err(&io)?;
    let files = [
        tempfile::tempfile_in(tmp_dir).map_err(&io)?,
        tempfile::tempfile_in(tmp_dir).map_err(&io)?,
        tempfile::tempfile_in(tmp_dir).map_err(&io)?,
        tempfile::tempfile_in(tmp_dir).map_err(&io)?,
    ];
    let mut writers: Vec<BufWriter<&std::fs::File>> = files
        .iter()
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .collect();
    let mut diff = DiffCounts::default();
    let mut fingerprint = xxhash_rust::xxh3::Xxh3::new();
    let (mut conflicts, mut conflict_keys, mut without_before, mut already_undone) =
        (0u64, Vec::new(), 0u64, 0u64);
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (chunk, more) = state.changelog_chunk(state_key, run, after.as_deref(), CHUNK)?;
        let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| k.as_slice()).collect();
        let current = state.snapshot_entries(state_key, &keys)?;
        for ((key, change), now) in chunk.iter().zip(current) {
            let now_fp = now.as_ref().map(|d| d.fp);
            // Already back to the values before (an earlier undo that was interrupted): done.
            if now_fp == change.before().map(|d| d.fp) {
                already_undone += 1;
                continue;
            }
            // What the destination has from us now, if not what this run left: a later run changed it.
            if now_fp != change.sent() {
                conflicts += 1;
                if conflict_keys.len() < SAMPLES {
                    conflict_keys.push(key_text(key));
                }
                if !target.force {
                    continue;
                }
            }
            let now_row = now.map(|d| d.row).unwrap_or_default();
            let (inverse, frame) = match change {
                RowChange::Inserted { .. } if mode == SyncMode::Update => {
                    without_before += 1;
                    continue;
                }
                RowChange::Inserted { .. } => (Change::Removed, ([0u8; 16], Vec::new(), now_row)),
                RowChange::Updated { before, .. } => {
                    (Change::Changed, (before.fp, before.row.clone(), now_row))
                }
                RowChange::Deleted { before } => {
                    (Change::Added, (before.fp, before.row.clone(), Vec::new()))
                }
            };
            let (fp, row, before) = frame;
            fingerprint.update(&[inverse as u8]);
            fingerprint.update(&(key.len() as u32).to_be_bytes());
            fingerprint.update(key);
            fingerprint.update(&fp);
            match inverse {
                Change::Added => diff.added += 1,
                Change::Changed => diff.changed += 1,
                _ => diff.removed += 1,
            }
            write_frame(&mut writers[inverse as usize], key, &fp, &row, &before).map_err(&io)?;
        }
        match more {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    for w in &mut writers {
        w.flush().map_err(&io)?;
    }
    drop(writers);
    let snapshot_rows = state.snapshot_len(state_key)?;
    let plan = Plan {
        columns: header.columns,
        key_columns: header.key_columns,
        model_rows: 0,
        snapshot_rows,
        diff,
        fingerprint: format!("{:032x}", fingerprint.digest128()),
        files,
        key_types: Vec::new(),
        cleared_deletes: Vec::new(),
        out_of_key_order: false,
    };
    Ok(UndoPlan {
        plan,
        conflicts,
        conflict_keys,
        without_before,
        already_undone,
    })
}
/// An undo needs the destination to do each inverse operation it plans.
pub(crate) fn check_undo_operations(p: &PreparedSync, diff: &DiffCounts) -> Result<(), Abort> {
    use backflow_plugin_sdk::Operation;
    let supports = |op: Operation| {
        p.destination_plugin
            .as_ref()
            .is_none_or(|d| d.spec.operations.contains(&op))
    };
    for (n, op, what) in [
        (
            diff.removed,
            Operation::Delete,
            "delete the rows the run added",
        ),
        (diff.changed, Operation::Update, "update rows back"),
        (
            diff.added,
            Operation::Insert,
            "insert again the rows the run deleted",
        ),
    ] {
        if n > 0 && !supports(op) {
            return Err(Abort::Undo(format!(
                "undoing this run needs destination {} to {what} ({n} rows), but its plugin does not support {op}; only a destination that supports insert, update and delete (what mode = \"mirror\" needs) can be undone",
                p.destination.name
            )));
        }
    }
    Ok(())
}

/// The plan of an undo, checked against what the destination can do; what it leaves alone
/// goes into the run record.
pub(crate) fn plan_undo_run(
    ws: &crate::workspace::Workspace,
    state: &crate::state::StateStore,
    p: &crate::sync::prepare::PreparedSync,
    target: &UndoTarget,
    record: &mut crate::domain::RunRecord,
) -> Result<crate::sync::plan::Plan, crate::sync::run::Abort> {
    let undo = plan_undo(
        state,
        &p.state_key,
        &p.sync.name,
        &ws.state_dir.join("tmp"),
        target,
    )?;
    if let Some(summary) = &mut record.undo {
        summary.conflicts = undo.conflicts;
        summary.conflict_keys = undo.conflict_keys.clone();
        summary.without_before = undo.without_before;
    }
    check_undo_operations(p, &undo.plan.diff)?;
    Ok(undo.plan)
}
