//! The plan of a warehouse-diff run: the differ's change batches, projected to destination
//! fields exactly as a local run projects model rows, written into the same plan files
//! (one per change, same frames), so checks, approvals and delivery see no difference.
//!
//! A frame's fingerprint is the database's (128 bits, 32 hex digits such as `md5`): it goes
//! into the journal with the acknowledged row and back to the snapshot table. A changed
//! row's `before` is the row last delivered, as the write-back stored it; a removed row
//! carries its key only.

use super::table::{fingerprint_bytes, mapping_changed, snapshot_table};
use crate::domain::{Change, DiffCounts, Fingerprint};
use crate::host::WarehouseInstance;
use crate::sync::plan::file::write_frame;
use crate::sync::plan::{Plan, PlanOptions};
use crate::sync::prepare::PreparedSync;
use crate::sync::read::{ModelSink, Projection, RowProjector, SOURCE_BATCH_ROWS};
use crate::sync::run::Abort;
use crate::workspace::Workspace;
use backflow_plugin_sdk::codec::{read_array_len, read_value, value_len, write_row_header};
use backflow_plugin_sdk::warehouse::{ChangeBatch, DiffRequest};
use backflow_plugin_sdk::{Batch, ChangeKind, CodecError};
use std::io::{BufWriter, Write};

/// Collects the projected rows of one batch (key and mapped row), in order.
#[derive(Default)]
struct Collected {
    rows: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ModelSink for Collected {
    fn push(&mut self, key: &[u8], _fp: Fingerprint, row: &[u8]) -> Result<(), Abort> {
        self.rows.push((key.to_vec(), row.to_vec()));
        Ok(())
    }
}

/// The encoded rows of a batch, one slice each.
fn raw_rows(batch: &Batch) -> Result<Vec<&[u8]>, CodecError> {
    let payload = batch.payload.as_slice();
    let mut rest = payload;
    let count = read_array_len(&mut rest)?;
    let mut rows = Vec::with_capacity(count.min(payload.len()));
    for _ in 0..count {
        let start = payload.len() - rest.len();
        let width = read_array_len(&mut rest)?;
        for _ in 0..width {
            let n = value_len(rest)?;
            rest = rest
                .get(n..)
                .ok_or_else(|| CodecError("a row runs past its batch".into()))?;
        }
        rows.push(&payload[start..payload.len() - rest.len()]);
    }
    Ok(rows)
}

/// A removed row's key columns, encoded canonically as the local plan keys rows.
fn canonical_key(raw: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut rest = raw;
    let n = read_array_len(&mut rest)?;
    let mut key = Vec::with_capacity(raw.len());
    write_row_header(&mut key, n as u32);
    for _ in 0..n {
        let v = read_value(&mut rest)?;
        backflow_plugin_sdk::codec::write_value(&mut key, &v);
    }
    Ok(key)
}

/// Asks the source database for the diff and writes it into plan files. Writes nothing to
/// the warehouse (the differ reads; a missing snapshot table reads as empty).
pub(crate) async fn build_plan(
    wh: &mut WarehouseInstance,
    ws: &Workspace,
    p: &PreparedSync,
    options: PlanOptions,
) -> Result<Plan, Abort> {
    let tmp_dir = ws.state_dir.join("tmp");
    std::fs::create_dir_all(&tmp_dir)
        .map_err(Abort::io(format!("creating {}", tmp_dir.display())))?;
    let io = Abort::io(format!("writing plan files in {}", tmp_dir.display()));
    let table = snapshot_table(p);
    let mapping_changed = mapping_changed(ws, p);
    let request = DiffRequest {
        query: p.model.query.clone(),
        key_columns: p.model.primary_key.clone(),
        snapshot: table.clone(),
        cursor: None,
        // A changed mapping re-sends every row, as the local fingerprints (which cover the
        // destination fields) would.
        full_resync: options.full_resync || mapping_changed,
    };
    let source_error = |e: crate::host::CallError| {
        Abort::Source(format!(
            "source {} computing the diff of model {} against {}.{}: {e}",
            p.source.name, p.model.name, table.schema, table.table
        ))
    };
    // Whole-model checks (uniqueness, freshness) need the rows that did not change too.
    let include_unchanged = !p.checks.is_empty();
    let columns = wh
        .open_differ(&request, include_unchanged)
        .await
        .map_err(source_error)?;
    let projection = Projection::new(p, &columns).map_err(|e| Abort::Model(e.to_string()))?;
    let counts = wh.counts().await.map_err(source_error)?;
    let files = [
        tempfile::tempfile_in(&tmp_dir).map_err(&io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(&io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(&io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(&io)?,
    ];
    let mut frames = Frames::default();
    let mut projector = RowProjector::new(p, &projection);
    {
        let mut writers: Vec<BufWriter<&std::fs::File>> = files
            .iter()
            .map(|f| BufWriter::with_capacity(1 << 20, f))
            .collect();
        while let Some(batch) = wh
            .next_batch(SOURCE_BATCH_ROWS)
            .await
            .map_err(source_error)?
        {
            frames
                .write(&batch, &mut projector, &mut writers)
                .map_err(|e| match e {
                    FrameError::Abort(a) => a,
                    FrameError::Codec(e) => Abort::Source(format!(
                        "source {} sent a malformed change batch: {e}",
                        p.source.name
                    )),
                    FrameError::Io(e) => io(e),
                })?;
        }
        for w in &mut writers {
            w.flush().map_err(&io)?;
        }
    }
    if !include_unchanged {
        // Not read, but counted: the model's rows less those added and changed.
        frames.diff.unchanged = counts
            .model_rows
            .unwrap_or(0)
            .saturating_sub(frames.diff.added + frames.diff.changed);
    }
    let key_types = projector.finish()?;
    let key_types = key_types
        .iter()
        .map(|t| t.map(|(name, _)| name.to_string()))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    tracing::debug!(sync = %p.sync.name, added = counts.added, changed = counts.changed, removed = counts.removed, "warehouse diff read");
    Ok(Plan {
        columns: projection.columns.clone(),
        key_columns: projection.key_columns.clone(),
        model_rows: counts.model_rows.unwrap_or(0),
        snapshot_rows: counts.snapshot_rows,
        diff: frames.diff,
        fingerprint: format!("{:032x}", frames.fingerprint.digest128()),
        files,
        key_types,
        cleared_deletes: Vec::new(),
        out_of_key_order: false,
    })
}

/// Covers one planned change by the plan's fingerprint (kind, key, row fingerprint), as
/// the local plan writer does.
fn mark(h: &mut xxhash_rust::xxh3::Xxh3, change: u8, key: &[u8], fp: &[u8]) {
    h.update(&[change]);
    h.update(&(key.len() as u32).to_be_bytes());
    h.update(key);
    h.update(fp);
}

/// What writing a change batch into the plan files can fail on.
enum FrameError {
    Abort(Abort),
    Codec(CodecError),
    Io(std::io::Error),
}

impl From<Abort> for FrameError {
    fn from(e: Abort) -> Self {
        FrameError::Abort(e)
    }
}

impl From<CodecError> for FrameError {
    fn from(e: CodecError) -> Self {
        FrameError::Codec(e)
    }
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// The diff's counts and the plan's fingerprint, as change batches are written.
#[derive(Default)]
struct Frames {
    diff: DiffCounts,
    fingerprint: xxhash_rust::xxh3::Xxh3,
}

impl Frames {
    /// Writes one change batch into the plan file of its change.
    fn write(
        &mut self,
        batch: &ChangeBatch,
        projector: &mut RowProjector<'_>,
        writers: &mut [BufWriter<&std::fs::File>],
    ) -> Result<(), FrameError> {
        let change = match batch.kind {
            ChangeKind::Added => Change::Added,
            ChangeKind::Changed => Change::Changed,
            ChangeKind::Removed => Change::Removed,
            ChangeKind::Unchanged => Change::Unchanged,
        };
        let out = &mut writers[change as usize];
        if change == Change::Removed {
            for raw in raw_rows(&batch.rows)? {
                let key = canonical_key(raw)?;
                self.diff.removed += 1;
                mark(&mut self.fingerprint, b'r', &key, &[]);
                write_frame(out, &key, &[0; 16], &[], &[])?;
            }
            return Ok(());
        }
        let mut collected = Collected::default();
        projector.batch(&batch.rows, &mut collected)?;
        let befores = match &batch.before {
            Some(b) => raw_rows(b)?,
            None => Vec::new(),
        };
        if collected.rows.len() != batch.fingerprints.len() {
            // Rows with a NULL key are left out by the projector; the run stops on them
            // once the diff is read (`RowProjector::finish`), naming them.
            return Ok(());
        }
        for (i, (key, row)) in collected.rows.iter().enumerate() {
            let fp = fingerprint_bytes(&batch.fingerprints[i]);
            let before = befores.get(i).copied().unwrap_or_default();
            match change {
                Change::Added => self.diff.added += 1,
                Change::Changed => self.diff.changed += 1,
                _ => self.diff.unchanged += 1,
            }
            if change != Change::Unchanged {
                let tag = if change == Change::Added { b'a' } else { b'c' };
                mark(&mut self.fingerprint, tag, key, &fp);
            }
            write_frame(out, key, &fp, row, before)?;
        }
        Ok(())
    }
}
