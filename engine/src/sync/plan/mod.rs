//! Stage 3: the plan. The model's rows are merged, key by key, with the snapshot of what was
//! last delivered into one file per change (added, changed, removed, unchanged): as they
//! are read when they come in key order, else once sorted ([`intake`]). Memory stays
//! bounded whatever the model's size. Writes nothing to state.

pub mod file;
mod intake;
mod merge;
pub mod spill;
pub mod undo;

use super::prepare::{open_error, PreparedSync};
use super::read::{read_model, spawn_reader, KeyType, Projection};
use super::Abort;
use crate::domain::{bump, operation_for, Change, DiffCounts, OpCounts, BUILTIN_NOOP};
use crate::host::{PluginHost, SourceInstance};
use crate::state::{StateStore, SyncMeta};
use crate::workspace::{SyncMode, Workspace};
use backflow_plugin_sdk::codec::{read_array_len, read_value};
use backflow_plugin_sdk::Column;
use file::{write_frame, PlanReader};
use intake::Intake;
use merge::{SnapshotKeys, Step};
use spill::ModelEntry;
use std::io::{BufWriter, Seek, Write};

pub use file::key_text;
pub(crate) use file::{Payload, PlannedRow};

/// How a run treats the snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Re-send every model row: rows in the snapshot count as changed even when unchanged.
    pub full_resync: bool,
    /// Sort the model's rows before the diff from the start, without first trying to diff
    /// them as they are read (the last run found them out of key order).
    pub sort_first: bool,
}

/// A computed plan: the diff of the model against the snapshot, on disk.
pub struct Plan {
    /// Destination fields of added and changed rows.
    pub columns: Vec<Column>,
    /// Destination fields of the primary key (what a delete carries).
    pub key_columns: Vec<Column>,
    pub model_rows: u64,
    pub snapshot_rows: u64,
    pub diff: DiffCounts,
    /// xxh3-128 over every planned change (kind, key, row fingerprint), in plan order (key
    /// order; an undo's, its changelog's order): two plans with the same fingerprint send
    /// the same rows. What a run approval covers.
    pub fingerprint: String,
    /// The type of each key column's values in this model (empty for an undo's plan).
    pub key_types: Vec<String>,
    /// A full resync: the keys of `diff.cleared_deletes`, to drop from the state once the
    /// run goes ahead.
    pub cleared_deletes: Vec<Vec<u8>>,
    /// Whether the model's rows came out of key order (so they were sorted before the diff,
    /// unless the run sorted from the start anyway).
    pub out_of_key_order: bool,
    /// One file per [`Change`]; the unchanged file stays empty unless the sync has checks.
    files: [std::fs::File; 4],
}

impl Plan {
    fn file(&self, change: Change) -> &std::fs::File {
        &self.files[change as usize]
    }

    /// Reads the planned rows of one change, in plan order (key order; an undo's rows come
    /// in its changelog's order, see `StateStore::changelog_chunk`).
    pub(crate) fn rows(&self, change: Change) -> std::io::Result<PlanReader<'_>> {
        let mut f = self.file(change);
        f.rewind()?;
        Ok(PlanReader::new(f))
    }

    /// What `mode` sends of this plan, per change.
    pub fn planned(&self, mode: SyncMode) -> OpCounts {
        let mut planned = OpCounts::default();
        for (change, n) in [
            (Change::Added, self.diff.added),
            (Change::Changed, self.diff.changed),
            (Change::Removed, self.diff.removed),
        ] {
            if operation_for(mode, change).is_some() {
                bump(&mut planned, change, n);
            }
        }
        planned
    }

    /// Up to `n` planned rows of a change, as JSON objects (before/after for changes).
    pub fn samples(&self, change: Change, n: usize) -> std::io::Result<Vec<serde_json::Value>> {
        let mut reader = self.rows(change)?;
        let mut out = Vec::new();
        while out.len() < n {
            let Some(row) = reader.next()? else { break };
            out.push(match change {
                Change::Added => row_json(&self.columns, &row.row),
                Change::Changed => serde_json::json!({"key": row.key_text(), "before": row_json(&self.columns, &row.before), "after": row_json(&self.columns, &row.row)}),
                Change::Removed => serde_json::json!({"key": row.key_text(), "before": row_json(&self.columns, &row.before)}),
                Change::Unchanged => row_json(&self.columns, &row.row),
            });
        }
        Ok(out)
    }
}

/// Decodes an encoded row into a JSON object with the given field names (best effort: a row
/// of another shape, such as one delivered under an older mapping, shows as an array).
pub(crate) fn row_json(columns: &[Column], row: &[u8]) -> serde_json::Value {
    let mut rest = row;
    let Ok(n) = read_array_len(&mut rest) else {
        return serde_json::Value::Null;
    };
    let values: Vec<_> = (0..n.min(rest.len()))
        .map_while(|_| read_value(&mut rest).ok())
        .collect();
    if values.len() == columns.len() {
        serde_json::Value::Object(
            columns
                .iter()
                .zip(values)
                .map(|(c, v)| (c.name.clone(), v.to_json()))
                .collect(),
        )
    } else {
        serde_json::Value::Array(values.iter().map(|v| v.to_json()).collect())
    }
}

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
                return Err(Abort(format!(
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
    let meta = state
        .sync_meta(&p.state_key)
        .map_err(|e| Abort(e.to_string()))?;
    Ok(match meta {
        None => {
            state
                .snapshot_len(&p.state_key)
                .map_err(|e| Abort(e.to_string()))?
                == 0
        }
        Some(m) => m.same_target(&sync_meta(p)),
    })
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
        .map_err(|e| Abort(format!("creating {}: {e}", tmp_dir.display())))?;
    let io = |e: std::io::Error| Abort(format!("writing plan files in {}: {e}", tmp_dir.display()));
    let use_snapshot = snapshot_is_valid(state, p)?;
    if !use_snapshot {
        tracing::warn!(sync = %p.sync.name, "the primary key or destination changed since the last delivery: the old snapshot is ignored and every row is planned as added");
    }
    let snapshot_rows = if use_snapshot {
        state
            .snapshot_len(&p.state_key)
            .map_err(|e| Abort(e.to_string()))?
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
    .map_err(|e| Abort(open_error(p, &p.source, &e)))?;
    let projection = match Projection::new(p, source.columns()) {
        Ok(pr) => pr,
        Err(e) => {
            source.close().await;
            return Err(Abort(e));
        }
    };
    let files = [
        tempfile::tempfile_in(&tmp_dir).map_err(io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(io)?,
    ];
    // A full resync gives up on deletes the destination refused: otherwise a row it will
    // never delete (an object someone protected) is sent again by every run, forever.
    let refused_deletes: std::collections::HashSet<Vec<u8>> = if options.full_resync && use_snapshot
    {
        state
            .pending_keys(&p.state_key, Change::Removed.as_str())
            .map_err(|e| Abort(e.to_string()))?
            .into_iter()
            .collect()
    } else {
        Default::default()
    };
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
    .map_err(io)?;
    let key_types = read_model(spawn_reader(source), p, &projection, &mut intake).await?;
    let stored_meta = state
        .sync_meta(&p.state_key)
        .map_err(|e| Abort(e.to_string()))?;
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
        return Err(Abort(format!(
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

/// What the merge's steps become: one plan file per change, the diff's counts, and the
/// plan's fingerprint. Changed and removed rows need their last delivered values; those are
/// fetched from the state in groups.
pub(crate) struct PlanWriter<'a> {
    state: &'a StateStore,
    sync: &'a str,
    files: &'a [std::fs::File; 4],
    writers: Vec<BufWriter<&'a std::fs::File>>,
    tmp_dir: &'a std::path::Path,
    pub(crate) diff: DiffCounts,
    pub(crate) fingerprint: xxhash_rust::xxh3::Xxh3,
    waiting: Vec<(Change, ModelEntry)>,
    refused_deletes: std::collections::HashSet<Vec<u8>>,
    pub(crate) cleared_deletes: Vec<Vec<u8>>,
    pub(crate) duplicates: u64,
    /// The five smallest duplicated keys: the same examples whether the rows were merged as
    /// they came or sorted first (the first five met would depend on the arrival order).
    pub(crate) duplicate_samples: std::collections::BTreeSet<Vec<u8>>,
    /// Whether unchanged rows are written to their file.
    pub(crate) write_unchanged: bool,
    /// While set (and `write_unchanged` is not), the keys of unchanged rows go here
    /// (length-prefixed, then the fingerprint): while merging, in case of a fall back to
    /// sorting, which takes their rows back from the snapshot (an unchanged row is the row
    /// last delivered). A key costs a fraction of its row to write.
    pub(crate) unchanged_keys: Option<BufWriter<std::fs::File>>,
    /// While set, removed keys go here (length-prefixed) instead of being looked up at once:
    /// the intake may still fall back to sorting, and then every removal so far is void (a
    /// model whose first row has a high key "removes" every key below it until the next row
    /// shows the order is not kept). Looked up once the merge is over: [`Self::resolve_removed`].
    pub(crate) deferred_removals: Option<BufWriter<std::fs::File>>,
}

impl<'a> PlanWriter<'a> {
    fn new(
        state: &'a StateStore,
        sync: &'a str,
        files: &'a [std::fs::File; 4],
        refused_deletes: std::collections::HashSet<Vec<u8>>,
        tmp_dir: &'a std::path::Path,
    ) -> PlanWriter<'a> {
        PlanWriter {
            state,
            sync,
            files,
            writers: files
                .iter()
                .map(|f| BufWriter::with_capacity(1 << 20, f))
                .collect(),
            tmp_dir,
            diff: DiffCounts::default(),
            fingerprint: xxhash_rust::xxh3::Xxh3::new(),
            waiting: Vec::new(),
            refused_deletes,
            cleared_deletes: Vec::new(),
            duplicates: 0,
            duplicate_samples: Default::default(),
            write_unchanged: false,
            unchanged_keys: None,
            deferred_removals: None,
        }
    }

    fn io(&self) -> impl Fn(std::io::Error) -> Abort + '_ {
        move |e| {
            Abort(format!(
                "writing plan files in {}: {e}",
                self.tmp_dir.display()
            ))
        }
    }

    pub(crate) fn file(&self, change: Change) -> &'a std::fs::File {
        &self.files[change as usize]
    }

    /// Covers one planned change by the plan's fingerprint (kind, key, row fingerprint).
    fn mark(&mut self, change: u8, key: &[u8], fp: &[u8]) {
        self.fingerprint.update(&[change]);
        self.fingerprint.update(&(key.len() as u32).to_be_bytes());
        self.fingerprint.update(key);
        self.fingerprint.update(fp);
    }

    pub(crate) fn step(&mut self, step: Step<'_>) -> Result<(), Abort> {
        match step {
            Step::Duplicate(key) => {
                self.duplicates += 1;
                if self.duplicate_samples.len() < 5
                    || self
                        .duplicate_samples
                        .last()
                        .is_some_and(|last| key < last.as_slice())
                {
                    self.duplicate_samples.insert(key.to_vec());
                    if self.duplicate_samples.len() > 5 {
                        self.duplicate_samples.pop_last();
                    }
                }
                return Ok(());
            }
            Step::Removed(key) if self.refused_deletes.contains(key) => {
                self.diff.cleared_deletes += 1;
                self.mark(b'x', key, &[]);
                self.cleared_deletes.push(key.to_vec());
                return Ok(());
            }
            Step::Removed(key) => {
                self.diff.removed += 1;
                self.mark(b'r', key, &[]);
                match &mut self.deferred_removals {
                    Some(out) => write_key(out, key).map_err(|e| {
                        Abort(format!(
                            "writing plan files in {}: {e}",
                            self.tmp_dir.display()
                        ))
                    })?,
                    None => self
                        .waiting
                        .push((Change::Removed, ModelEntry::key_only(key.to_vec()))),
                }
            }
            Step::Added(entry) => {
                self.diff.added += 1;
                self.mark(b'a', entry.key, &entry.fp);
                write_frame(
                    &mut self.writers[Change::Added as usize],
                    entry.key,
                    &entry.fp,
                    entry.row,
                    &[],
                )
                .map_err(self.io())?;
            }
            Step::Unchanged(entry) => {
                self.diff.unchanged += 1;
                if self.write_unchanged {
                    write_frame(
                        &mut self.writers[Change::Unchanged as usize],
                        entry.key,
                        &entry.fp,
                        entry.row,
                        &[],
                    )
                    .map_err(self.io())?;
                } else if let Some(out) = &mut self.unchanged_keys {
                    let written = write_key(out, entry.key).and_then(|()| out.write_all(&entry.fp));
                    written.map_err(|e| {
                        Abort(format!(
                            "writing plan files in {}: {e}",
                            self.tmp_dir.display()
                        ))
                    })?;
                }
            }
            Step::Changed(entry) => {
                self.diff.changed += 1;
                self.mark(b'c', entry.key, &entry.fp);
                self.waiting.push((
                    Change::Changed,
                    ModelEntry {
                        key: entry.key.to_vec(),
                        fp: entry.fp,
                        row: entry.row.to_vec(),
                    },
                ));
            }
        }
        if self.waiting.len() >= 1024 {
            flush_waiting(self.state, self.sync, &mut self.waiting, &mut self.writers)
                .map_err(Abort)?;
        }
        Ok(())
    }

    /// Writes out everything planned so far.
    pub(crate) fn flush(&mut self) -> Result<(), Abort> {
        flush_waiting(self.state, self.sync, &mut self.waiting, &mut self.writers)
            .map_err(Abort)?;
        for w in &mut self.writers {
            w.flush().map_err(|e| {
                Abort(format!(
                    "writing plan files in {}: {e}",
                    self.tmp_dir.display()
                ))
            })?;
        }
        Ok(())
    }

    /// Looks up the last delivered values of the deferred removals and writes their frames
    /// (in key order, as they were deferred); removals are looked up at once from then on.
    pub(crate) fn resolve_removed(&mut self) -> Result<(), Abort> {
        let Some(deferred) = self.deferred_removals.take() else {
            return Ok(());
        };
        let io = |e: std::io::Error| {
            Abort(format!(
                "writing plan files in {}: {e}",
                self.tmp_dir.display()
            ))
        };
        let mut file = deferred.into_inner().map_err(|e| io(e.into_error()))?;
        file.rewind().map_err(io)?;
        let mut keys = std::io::BufReader::with_capacity(1 << 20, file);
        while let Some(key) = read_key(&mut keys).map_err(io)? {
            self.waiting
                .push((Change::Removed, ModelEntry::key_only(key)));
            if self.waiting.len() >= 1024 {
                flush_waiting(self.state, self.sync, &mut self.waiting, &mut self.writers)
                    .map_err(Abort)?;
            }
        }
        Ok(())
    }

    /// Forgets every change planned so far, for a merge that starts over from sorted rows:
    /// the files are emptied and the counts zeroed; deferred removals and kept unchanged keys
    /// are dropped (a sorted merge is final: removals are looked up as they come).
    /// Duplicates found stay found (the rows repeated were not planned, so a second merge
    /// would not see them again).
    pub(crate) fn restart(&mut self) -> std::io::Result<()> {
        for w in &mut self.writers {
            w.flush()?;
            w.get_ref().set_len(0)?;
            std::io::Seek::rewind(w.get_mut())?;
        }
        self.waiting.clear();
        self.deferred_removals = None;
        self.unchanged_keys = None;
        self.diff = DiffCounts::default();
        self.fingerprint = xxhash_rust::xxh3::Xxh3::new();
        self.cleared_deletes.clear();
        Ok(())
    }
}

/// Appends a length-prefixed key to a file of keys.
pub(crate) fn write_key(out: &mut impl Write, key: &[u8]) -> std::io::Result<()> {
    out.write_all(&(key.len() as u32).to_le_bytes())?;
    out.write_all(key)
}

/// The next key of a file written by [`write_key`], or `None` at its end.
pub(crate) fn read_key(keys: &mut impl std::io::Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match keys.read_exact(&mut len) {
        Ok(()) => file::read_exactly(keys, u32::from_le_bytes(len)).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn flush_waiting(
    state: &StateStore,
    sync: &str,
    waiting: &mut Vec<(Change, ModelEntry)>,
    writers: &mut [BufWriter<&std::fs::File>],
) -> Result<(), String> {
    if waiting.is_empty() {
        return Ok(());
    }
    let keys: Vec<&[u8]> = waiting.iter().map(|(_, e)| e.key.as_slice()).collect();
    let befores = state
        .snapshot_rows(sync, &keys)
        .map_err(|e| e.to_string())?;
    for ((change, entry), before) in waiting.drain(..).zip(befores) {
        let before = before.unwrap_or_default();
        write_frame(
            &mut writers[change as usize],
            &entry.key,
            &entry.fp,
            &entry.row,
            &before,
        )
        .map_err(|e| format!("writing plan files: {e}"))?;
    }
    Ok(())
}

/// Walks a sync's snapshot in key order, a chunk at a time. A chunk's keys sit in one
/// buffer, reused from chunk to chunk (no allocation per key).
pub(crate) struct SnapshotCursor<'a> {
    state: &'a StateStore,
    sync: &'a str,
    /// The chunk's keys, one after another.
    keys: Vec<u8>,
    /// Each key's end in `keys`, and its fingerprint.
    entries: Vec<(usize, [u8; 16])>,
    /// The next entry of the chunk.
    at: usize,
    /// Where the next chunk starts: after the last key the previous one looked at.
    after: Option<Vec<u8>>,
    done: bool,
}

/// Snapshot entries read per state transaction.
const SNAPSHOT_CHUNK: usize = 16_384;

impl<'a> SnapshotCursor<'a> {
    /// `enabled: false` reads as an empty snapshot (one that no longer matches the sync).
    pub(crate) fn new(state: &'a StateStore, sync: &'a str, enabled: bool) -> SnapshotCursor<'a> {
        SnapshotCursor {
            state,
            sync,
            keys: Vec::new(),
            entries: Vec::new(),
            at: 0,
            after: None,
            done: !enabled,
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.entries[i - 1].0 };
        &self.keys[start..self.entries[i].0]
    }

    fn fill(&mut self) -> Result<(), Abort> {
        // A chunk can be empty without being the last (every row in it deleted since the
        // snapshot's base was written): read on until one has entries or the snapshot ends.
        while self.at >= self.entries.len() && !self.done {
            self.keys.clear();
            self.entries.clear();
            self.at = 0;
            let read = self.state.snapshot_chunk_into(
                self.sync,
                self.after.as_deref(),
                SNAPSHOT_CHUNK,
                &mut self.keys,
                &mut self.entries,
            );
            self.after = read.map_err(|e| Abort(e.to_string()))?;
            self.done = self.after.is_none();
        }
        Ok(())
    }
}

impl SnapshotKeys for SnapshotCursor<'_> {
    fn peek(&mut self) -> Result<Option<(&[u8], [u8; 16])>, Abort> {
        self.fill()?;
        Ok((self.at < self.entries.len()).then(|| (self.key(self.at), self.entries[self.at].1)))
    }

    fn advance(&mut self) {
        self.at += 1;
    }
}
