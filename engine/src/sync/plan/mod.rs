//! Stage 3: the plan. The model's rows are merged, key by key, with the snapshot of what was
//! last delivered into one file per change (added, changed, removed, unchanged): as they
//! are read when they come in key order, else once sorted ([`intake`]). Memory stays
//! bounded whatever the model's size. Writes nothing to state.

mod built;
mod cursor;
pub mod file;
mod intake;
mod merge;
pub mod spill;
pub mod undo;
mod writer;

use super::prepare::{open_error, PreparedSync};
use super::read::{read_model, spawn_reader, KeyType, Projection};
use super::run::Abort;
use crate::domain::{Change, BUILTIN_NOOP};
use crate::host::{PluginHost, SourceInstance};
use crate::state::{StateStore, SyncMeta};
use crate::workspace::Workspace;
use intake::Intake;
use writer::PlanWriter;

pub(crate) use built::{row_json, sent_json};
pub use built::{Plan, PlanOptions};
pub use file::key_text;
pub(crate) use file::{Payload, PlannedRow};

/// What a sync's snapshot must match to stay valid.
pub(crate) fn sync_meta(p: &PreparedSync) -> SyncMeta {
    SyncMeta {
        primary_key: p.model.primary_key.clone(),
        destination: p.destination.name.clone(),
        destination_plugin: p
            .destination_plugin
            .as_ref()
            .map(|d| d.spec.name.clone())
            .unwrap_or_else(|| BUILTIN_NOOP.into()),
        key_types: Vec::new(),
    }
}

/// Stops a run whose key values changed type since the last delivery: `1` and `"1"` are
/// different keys, so the plan would remove every delivered row and add it again.
pub(crate) fn check_key_types(
    p: &PreparedSync,
    stored: &[String],
    now: &[KeyType],
) -> Result<(), Abort> {
    for ((column, before), now) in p.model.primary_key.iter().zip(stored).zip(now) {
        if let Some((now_type, row)) = now {
            if !before.is_empty() && before != now_type {
                return Err(Abort::Model(format!(
                    "model {} primary key column {column:?} held {before} values in the rows delivered so far, and now holds {now_type} values (first at row {row}); \
                     the same key as another type is another row, so this run would delete and re-add every row. Declare the column's type in the source \
                     (the file source: config.columns = {{ {column} = \"{before}\" }}; PostgreSQL: cast it in the query); nothing was sent",
                    p.model.name
                )));
            }
        }
    }
    Ok(())
}

/// Whether the stored snapshot belongs to this sync's current key and destination.
pub(crate) fn snapshot_is_valid(state: &StateStore, p: &PreparedSync) -> Result<bool, Abort> {
    let meta = state.sync_meta(&p.state_key)?;
    Ok(match meta {
        None => state.snapshot_len(&p.state_key)? == 0,
        Some(m) => m.same_target(&sync_meta(p)),
    })
}

/// The keys whose delete the destination refused, for a full resync (`full_resync`) of a
/// valid snapshot: it gives up on them, otherwise a row the destination will never delete
/// (an object someone protected) is sent again by every run, forever.
fn refused_deletes(
    state: &StateStore,
    p: &PreparedSync,
    full_resync: bool,
) -> Result<std::collections::HashSet<Vec<u8>>, Abort> {
    if !full_resync {
        return Ok(Default::default());
    }
    let keys = state.pending_keys(&p.state_key, Change::Removed.as_str())?;
    Ok(keys.into_iter().collect())
}

/// Reads the model and diffs it against the snapshot. Writes nothing to state.
pub async fn build_plan(
    host: &PluginHost,
    ws: &Workspace,
    state: &StateStore,
    p: &PreparedSync,
    options: PlanOptions,
) -> Result<Plan, Abort> {
    let tmp_dir = ws.state_dir.join("tmp");
    std::fs::create_dir_all(&tmp_dir)
        .map_err(Abort::io(format!("creating {}", tmp_dir.display())))?;
    let io = Abort::io(format!("writing plan files in {}", tmp_dir.display()));
    let use_snapshot = snapshot_is_valid(state, p)?;
    if !use_snapshot {
        tracing::warn!(sync = %p.sync.name, "the primary key or destination changed since the last delivery: the old snapshot is ignored and every row is planned as added");
    }
    let snapshot_rows = if use_snapshot {
        state.snapshot_len(&p.state_key)?
    } else {
        0
    };
    let source = SourceInstance::open(
        host,
        &p.source_plugin,
        &p.source.grants,
        p.source.limits,
        &p.source.config_json,
        &p.model.query,
    )
    .await
    .map_err(|e| Abort::Source(open_error(p, &p.source, &e)))?;
    let projection = match Projection::new(p, source.columns()) {
        Ok(pr) => pr,
        Err(e) => {
            source.close().await;
            return Err(Abort::Model(e.to_string()));
        }
    };
    let files = [
        tempfile::tempfile_in(&tmp_dir).map_err(&io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(&io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(&io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(&io)?,
    ];
    let refused_deletes = refused_deletes(state, p, options.full_resync && use_snapshot)?;
    let writer = PlanWriter::new(state, &p.state_key, &files, refused_deletes, &tmp_dir);
    // Whole-model checks (uniqueness, freshness) need the rows that did not change too.
    let keep_unchanged = !p.checks.is_empty();
    let mut intake = Intake::new(
        writer,
        state,
        &p.state_key,
        use_snapshot,
        options,
        keep_unchanged,
        &tmp_dir,
    )
    .map_err(&io)?;
    let key_types = read_model(spawn_reader(source), p, &projection, &mut intake).await?;
    let stored_meta = state.sync_meta(&p.state_key)?;
    if let Some(stored) = stored_meta
        .as_ref()
        .filter(|m| m.same_target(&sync_meta(p)))
    {
        check_key_types(p, &stored.key_types, &key_types)?;
    }
    let model_rows = intake.rows;
    let out_of_key_order = intake.out_of_order;
    tracing::debug!(sync = %p.sync.name, rows = model_rows, out_of_key_order, diffed_while_reading = !out_of_key_order && !options.sort_first, "model read");
    // The writer borrows the files: its results are taken out in a block of their own.
    let (diff, fingerprint, duplicates, duplicate_samples, cleared_deletes) = {
        let w = intake.finish()?;
        (
            w.diff,
            w.fingerprint,
            w.duplicates,
            w.duplicate_samples,
            w.cleared_deletes,
        )
    };
    if duplicates > 0 {
        return Err(Abort::Model(format!(
            "model {} has {duplicates} duplicate primary key{} ({}), e.g. {}; nothing was sent",
            p.model.name,
            if duplicates == 1 { "" } else { "s" },
            p.model.primary_key.join(", "),
            duplicate_samples
                .iter()
                .map(|key| key_text(key))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let fingerprint = format!("{:032x}", fingerprint.digest128());
    // Known only when every key column had a value (an empty model leaves the recorded ones).
    let key_types = key_types
        .iter()
        .map(|t| t.map(|(name, _)| name.to_string()))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    Ok(Plan {
        columns: projection.columns.clone(),
        key_columns: projection.key_columns.clone(),
        model_rows,
        snapshot_rows,
        diff,
        fingerprint,
        files,
        key_types,
        cleared_deletes,
        out_of_key_order,
    })
}
