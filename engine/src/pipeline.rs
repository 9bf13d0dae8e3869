//! Running a sync: prepare (resolve and check plugins and config), plan (read the model
//! through the source into an on-disk plan), deliver (send the plan through the destination
//! in batches, with retries), record (run history).
//!
//! Nothing is sent before the whole plan exists: the source is read to the end first, so a
//! source failure or a bad key stops the run before the first write. The plan lives in a
//! temporary file, so memory stays bounded whatever the model's size.

use crate::config::{Connector, Model, Sync, SyncMode, Workspace};
use crate::host::{expect_kind, CallError, DestinationInstance, Plugin, PluginHost, SourceInstance};
use crate::journal::{Journal, JournalOp};
use crate::host::{CheckChange, CheckInstance, CheckSummary};
use crate::state::{CheckReport, DiffCounts, OpCounts, PluginHashes, RejectedRow, RunRecord, RunStatus, StateStore, SyncMeta, Timings, MAX_REJECTED_KEPT};
use backflow_plugin_sdk::codec::{read_array_len, read_value, value_len, write_row_header};
use backflow_plugin_sdk::{Batch, BatchBuilder, Column, Operation, PluginError, PluginKind, RowOutcome, SyncContext};
use sha2::{Digest, Sha256};
use futures::StreamExt;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::time::{Duration, Instant};

/// Consecutive empty batches after which a source is deemed stuck.
const MAX_EMPTY_BATCHES: u32 = 1000;
/// Longest destination message kept per rejected row.
const MAX_ERROR_CHARS: usize = 2000;
/// Rows asked of the source per call.
const SOURCE_BATCH_ROWS: u32 = 8192;
/// Default rows per destination call when neither the sync nor the destination says.
const DEFAULT_BATCH_SIZE: u32 = 500;
/// Attempts per batch for retryable failures before its rows count as failed.
const MAX_ATTEMPTS: u32 = 5;
/// Apply the delivery journal to the snapshot when it grows past this or this much time has
/// passed, so a crash re-reads little and memory stays small.
const JOURNAL_APPLY_BYTES: u64 = 32 * 1024 * 1024;
const JOURNAL_APPLY_INTERVAL: Duration = Duration::from_secs(2);
/// Journal ops per redb transaction when applying (each commit is one fsync).
const JOURNAL_APPLY_CHUNK: usize = 250_000;
/// The native destination used to measure the Wasm boundary's cost.
pub const BUILTIN_NOOP: &str = "builtin:noop";

/// Who started a run and why.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub trigger: String,
    pub user: String,
    /// A run held for approval and since approved (`runs approve`): if this run's plan is
    /// exactly that one, it goes ahead without asking the policies again.
    pub approved_run: Option<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            trigger: "manual".into(),
            user: std::env::var("BACKFLOW_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "unknown".into()),
            approved_run: None,
        }
    }
}

/// A problem found before a run could start (bad config, missing or wrong plugin).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PrepareError(pub String);

/// Everything a run needs, resolved and checked.
pub struct PreparedSync {
    pub sync: Sync,
    pub model: Model,
    pub source: Connector,
    pub destination: Connector,
    pub source_plugin: Plugin,
    /// `None` for the built-in native no-op destination.
    pub destination_plugin: Option<Plugin>,
    pub batch_size: u32,
    pub config_hash: String,
    /// The sync's quality checks with their plugins.
    pub checks: Vec<(crate::config::Check, Plugin)>,
}

/// Resolves plugins, checks their kinds and configs and the sync's mode against the
/// destination's operations. Every problem names the file and key to fix.
pub async fn prepare(host: &PluginHost, ws: &Workspace, sync_name: &str) -> Result<PreparedSync, PrepareError> {
    let sync = ws.sync(sync_name).map_err(PrepareError)?.clone();
    let model = ws.models[&sync.model].clone();
    let source = ws.sources[&model.source].clone();
    let destination = ws.destinations[&sync.destination].clone();

    let source_plugin = load_checked(host, ws, &source, PluginKind::Source).await?;

    let (destination_plugin, operations, max_batch) = if destination.plugin == BUILTIN_NOOP {
        (None, vec![Operation::Insert, Operation::Update, Operation::Delete, Operation::Append], 0)
    } else {
        let p = load_checked(host, ws, &destination, PluginKind::Destination).await?;
        let ops = p.spec.operations.clone();
        let max = p.spec.max_batch_size;
        (Some(p), ops, max)
    };
    // What the mode sends is defined once, by `operation_for`; the destination must do all of it.
    let mut needed: Vec<Operation> = Vec::new();
    for op in [Change::Added, Change::Changed, Change::Removed].into_iter().filter_map(|c| operation_for(sync.mode, c)) {
        if !needed.contains(&op) {
            needed.push(op);
        }
    }
    let missing: Vec<&str> = needed.iter().filter(|op| !operations.contains(op)).map(|op| op.as_str()).collect();
    if !missing.is_empty() {
        return Err(PrepareError(format!(
            "{}: {}: mode {} needs the destination to {}, which {} does not support (it supports: {})",
            sync.origin.file.display(),
            sync.origin.key("mode"),
            sync.mode.as_str(),
            missing.join(" and "),
            destination.name,
            operations.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut batch_size = sync.batch_size.unwrap_or(if max_batch == 0 { DEFAULT_BATCH_SIZE } else { max_batch.min(DEFAULT_BATCH_SIZE) });
    if max_batch > 0 && batch_size > max_batch {
        return Err(PrepareError(format!(
            "{}: {}: {batch_size} is above the destination's limit of {max_batch} rows per batch",
            sync.origin.file.display(),
            sync.origin.key("batch_size")
        )));
    }
    batch_size = batch_size.max(1);

    let mut checks = Vec::new();
    for check in &sync.checks {
        let c = &check.connector;
        let plugin = load_checked(host, ws, c, PluginKind::QualityCheck).await?;
        checks.push((check.clone(), plugin));
    }

    let config_hash = {
        let mut h = Sha256::new();
        for part in [
            format!("{:?}|{:?}|{:?}|{:?}", sync.mode, sync.mapping, sync.batch_size, sync.destination),
            format!("{:?}|{:?}|{:?}", model.query, model.primary_key, model.source),
            source.config_json.clone(),
            destination.config_json.clone(),
            sync.checks.iter().map(|c| format!("{}|{:?}|{}|{}", c.name, c.severity, c.connector.plugin, c.connector.config_json)).collect::<Vec<_>>().join(";"),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    };
    Ok(PreparedSync { sync, model, source, destination, source_plugin, destination_plugin, batch_size, config_hash, checks })
}

/// Resolves a connector's plugin; errors name the file and its `plugin` key.
async fn load_plugin(host: &PluginHost, ws: &Workspace, c: &Connector) -> Result<Plugin, PrepareError> {
    let plugin = crate::plugins::resolve(host, &ws.root, &ws.plugins_dir, &c.plugin)
        .await
        .map_err(|e| PrepareError(format!("{}: {}: {e:#}", c.origin.file.display(), c.origin.key("plugin"))))?;
    Workspace::check_pin(&ws.plugin_pins, &c.plugin, &plugin).map_err(|e| PrepareError(format!("{}: {}: {e}", c.origin.file.display(), c.origin.key("plugin"))))?;
    Ok(plugin)
}

/// Resolves a connector's plugin, checks it is of `kind` and that it accepts the config.
pub(crate) async fn load_checked(host: &PluginHost, ws: &Workspace, c: &Connector, kind: PluginKind) -> Result<Plugin, PrepareError> {
    let plugin = load_plugin(host, ws, c).await?;
    expect_kind(&plugin, kind).map_err(|e| PrepareError(format!("{}: {}: {e}", c.origin.file.display(), c.origin.key("plugin"))))?;
    check_plugin_config(host, &plugin, c).await?;
    Ok(plugin)
}

async fn check_plugin_config(host: &PluginHost, plugin: &Plugin, c: &Connector) -> Result<(), PrepareError> {
    let errors = host
        .check_config(plugin, &c.config_json, c.limits)
        .await
        .map_err(|e| PrepareError(format!("{}: {}: checking the config failed: {e}", c.origin.file.display(), c.origin.key("config"))))?;
    if errors.is_empty() {
        return Ok(());
    }
    Err(PrepareError(
        errors
            .iter()
            .map(|e| {
                let key = if e.field.is_empty() { c.origin.key("config") } else { c.origin.key(&format!("config.{}", e.field)) };
                format!("{}: {key}: {}", c.origin.file.display(), e.message)
            })
            .collect::<Vec<_>>()
            .join("\n"),
    ))
}

/// How a sync's model columns become destination fields.
struct Projection {
    /// For each destination column, the model column it comes from.
    source_index: Vec<usize>,
    key_index: Vec<usize>,
    columns: Vec<Column>,
    /// Destination fields of the primary key columns.
    key_columns: Vec<Column>,
    /// Destination field names, hashed into every fingerprint.
    signature: Vec<u8>,
    source_width: usize,
}

impl Projection {
    fn new(p: &PreparedSync, model_columns: &[Column]) -> Result<Projection, String> {
        let names: Vec<&str> = model_columns.iter().map(|c| c.name.as_str()).collect();
        let find = |name: &str| names.iter().position(|n| *n == name);
        let listing = names.join(", ");
        let mut key_index = Vec::new();
        for k in &p.model.primary_key {
            key_index.push(find(k).ok_or_else(|| {
                format!("{}: {}: model {} has no column {k:?} (columns: {listing})", p.model.origin.file.display(), p.model.origin.key("primary_key"), p.model.name)
            })?);
        }
        let mapping: Vec<(String, String)> =
            if p.sync.mapping.is_empty() { names.iter().map(|n| (n.to_string(), n.to_string())).collect() } else { p.sync.mapping.clone() };
        let mut source_index = Vec::new();
        let mut columns = Vec::new();
        for (from, to) in &mapping {
            let i = find(from).ok_or_else(|| {
                format!("{}: {}: model {} has no column {from:?} (columns: {listing})", p.sync.origin.file.display(), p.sync.origin.key(&format!("mapping.{from}")), p.model.name)
            })?;
            source_index.push(i);
            columns.push(Column { name: to.clone(), value_type: model_columns[i].value_type, nullable: model_columns[i].nullable });
        }
        let key_columns = key_index
            .iter()
            .map(|&i| {
                let name = mapping.iter().find(|(from, _)| *from == names[i]).map(|(_, to)| to.clone()).unwrap_or_else(|| names[i].to_string());
                Column { name, value_type: model_columns[i].value_type, nullable: false }
            })
            .collect();
        let signature = columns.iter().flat_map(|c| c.name.bytes().chain([0])).collect();
        Ok(Projection { source_index, key_index, columns, key_columns, signature, source_width: model_columns.len() })
    }
}

/// Reasons a run stops early.
#[derive(Debug)]
pub struct Abort(pub String);

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Counters and rejected rows gathered during a run.
#[derive(Default)]
struct Tally {
    planned: OpCounts,
    delivered: OpCounts,
    failed: OpCounts,
    rejected: Vec<RejectedRow>,
    timings: Timings,
    /// A quality check stopped the run.
    blocked: bool,
    /// An approval policy held (`AwaitingApproval`) or rejected the run.
    gated: Option<RunStatus>,
}

/// How a run treats the snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Re-send every model row: rows in the snapshot count as changed even when unchanged.
    pub full_resync: bool,
}

/// The change a planned row represents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Changed,
    Removed,
    /// Rows equal to the snapshot; planned only for quality checks, never sent.
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Changed => "changed",
            Change::Removed => "removed",
            Change::Unchanged => "unchanged",
        }
    }
}

fn bump(c: &mut OpCounts, change: Change, n: u64) {
    match change {
        Change::Added => c.added += n,
        Change::Changed => c.changed += n,
        Change::Removed => c.removed += n,
        Change::Unchanged => {}
    }
}

/// The destination operation a mode uses for a change, or `None` if the mode skips it.
pub fn operation_for(mode: SyncMode, change: Change) -> Option<Operation> {
    use Change::*;
    match (mode, change) {
        (SyncMode::Upsert, Added) | (SyncMode::Insert, Added) | (SyncMode::Mirror, Added) => Some(Operation::Insert),
        (SyncMode::Upsert, Changed) | (SyncMode::Mirror, Changed) => Some(Operation::Update),
        // `update` never creates: rows new to backflow are sent as updates of records the
        // destination is expected to have; it rejects those it does not.
        (SyncMode::Update, Added | Changed) => Some(Operation::Update),
        (SyncMode::Mirror, Removed) => Some(Operation::Delete),
        (SyncMode::Append, Added) => Some(Operation::Append),
        _ => None,
    }
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
    /// xxh3-128 over every planned change (kind, key, row fingerprint), in key order: two
    /// plans with the same fingerprint send the same rows. What a run approval covers.
    pub fingerprint: String,
    /// One file per [`Change`]; the unchanged file stays empty unless the sync has checks.
    files: [std::fs::File; 4],
}

impl Plan {
    fn file(&self, change: Change) -> &std::fs::File {
        &self.files[change as usize]
    }

    /// Reads the planned rows of one change, in key order.
    fn rows(&self, change: Change) -> std::io::Result<PlanReader<'_>> {
        let mut f = self.file(change);
        f.rewind()?;
        Ok(PlanReader::new(f))
    }

    /// What `mode` sends of this plan, per change.
    pub fn planned(&self, mode: SyncMode) -> OpCounts {
        let mut planned = OpCounts::default();
        for (change, n) in [(Change::Added, self.diff.added), (Change::Changed, self.diff.changed), (Change::Removed, self.diff.removed)] {
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
fn row_json(columns: &[Column], row: &[u8]) -> serde_json::Value {
    let mut rest = row;
    let Ok(n) = read_array_len(&mut rest) else { return serde_json::Value::Null };
    let values: Vec<_> = (0..n).map_while(|_| read_value(&mut rest).ok()).collect();
    if values.len() == columns.len() {
        serde_json::Value::Object(columns.iter().zip(values).map(|(c, v)| (c.name.clone(), v.to_json())).collect())
    } else {
        serde_json::Value::Array(values.iter().map(|v| v.to_json()).collect())
    }
}

/// What a sync's snapshot must match to stay valid.
fn sync_meta(p: &PreparedSync) -> SyncMeta {
    SyncMeta {
        primary_key: p.model.primary_key.clone(),
        destination: p.destination.name.clone(),
        destination_plugin: p.destination_plugin.as_ref().map(|d| d.spec.name.clone()).unwrap_or_else(|| BUILTIN_NOOP.into()),
    }
}

/// Whether the stored snapshot belongs to this sync's current key and destination.
fn snapshot_is_valid(state: &StateStore, p: &PreparedSync) -> Result<bool, Abort> {
    let meta = state.sync_meta(&p.sync.name).map_err(|e| Abort(e.to_string()))?;
    Ok(match meta {
        None => state.snapshot_len(&p.sync.name).map_err(|e| Abort(e.to_string()))? == 0,
        Some(m) => m == sync_meta(p),
    })
}

/// Reads the model and diffs it against the snapshot. Writes nothing to state.
pub async fn build_plan(host: &PluginHost, ws: &Workspace, state: &StateStore, p: &PreparedSync, options: PlanOptions) -> Result<Plan, Abort> {
    let tmp_dir = ws.state_dir.join("tmp");
    std::fs::create_dir_all(&tmp_dir).map_err(|e| Abort(format!("creating {}: {e}", tmp_dir.display())))?;
    let io = |e: std::io::Error| Abort(format!("writing plan files in {}: {e}", tmp_dir.display()));
    let source = SourceInstance::open(host, &p.source_plugin, &p.source.grants, p.source.limits, &p.source.config_json, &p.model.query)
        .await
        .map_err(|e| Abort(open_error(p, &p.source, &e)))?;
    let projection = match Projection::new(p, source.columns()) {
        Ok(pr) => pr,
        Err(e) => {
            source.close().await;
            return Err(Abort(e));
        }
    };
    let mut spill = crate::diff::ModelSpill::new(&tmp_dir, crate::diff::DEFAULT_MEMORY_BUDGET).map_err(io)?;
    read_model(spawn_reader(source), p, &projection, &mut spill).await?;
    let model_rows = spill.count;

    let use_snapshot = snapshot_is_valid(state, p)?;
    if !use_snapshot {
        tracing::warn!(sync = %p.sync.name, "the primary key or destination changed since the last delivery: the old snapshot is ignored and every row is planned as added");
    }
    let snapshot_rows = if use_snapshot { state.snapshot_len(&p.sync.name).map_err(|e| Abort(e.to_string()))? } else { 0 };
    let files = [
        tempfile::tempfile_in(&tmp_dir).map_err(io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(io)?,
        tempfile::tempfile_in(&tmp_dir).map_err(io)?,
    ];
    // Whole-model checks (uniqueness, freshness) need the rows that did not change too.
    let keep_unchanged = !p.checks.is_empty();
    let mut writers: Vec<BufWriter<&std::fs::File>> = files.iter().map(|f| BufWriter::with_capacity(1 << 20, f)).collect();
    let mut sorted = spill.into_sorted().map_err(io)?;
    let mut diff = DiffCounts::default();
    let mut fingerprint = xxhash_rust::xxh3::Xxh3::new();
    let mut mark = |change: u8, key: &[u8], fp: &[u8]| {
        fingerprint.update(&[change]);
        fingerprint.update(&(key.len() as u32).to_be_bytes());
        fingerprint.update(key);
        fingerprint.update(fp);
    };
    let mut snapshot = SnapshotCursor::new(state, &p.sync.name, use_snapshot);
    // Changed and removed rows need their last delivered values; those are fetched in groups.
    let mut waiting: Vec<(Change, crate::diff::ModelEntry)> = Vec::new();
    let mut duplicates = 0u64;
    let mut duplicate_samples: Vec<String> = Vec::new();
    let mut previous: Option<Vec<u8>> = None;
    while let Some(entry) = sorted.next_entry().map_err(io)? {
        if previous.as_deref() == Some(entry.key.as_slice()) {
            duplicates += 1;
            if duplicate_samples.len() < 5 {
                duplicate_samples.push(key_text(&entry.key));
            }
            continue;
        }
        // Snapshot keys before this one are gone from the model.
        while let Some(s) = snapshot.peek()? {
            if s.0.as_slice() >= entry.key.as_slice() {
                break;
            }
            let (key, _) = snapshot.next()?.expect("peeked");
            diff.removed += 1;
            mark(b'r', &key, &[]);
            waiting.push((Change::Removed, crate::diff::ModelEntry::key_only(key)));
        }
        let in_snapshot = match snapshot.peek()? {
            Some(s) if s.0 == entry.key => {
                let (_, fp) = snapshot.next()?.expect("peeked");
                Some(fp)
            }
            _ => None,
        };
        match in_snapshot {
            None => {
                diff.added += 1;
                mark(b'a', &entry.key, &entry.fp);
                write_frame(&mut writers[Change::Added as usize], &entry.key, &entry.fp, &entry.row, &[]).map_err(io)?;
            }
            Some(fp) if fp == entry.fp && !options.full_resync => {
                diff.unchanged += 1;
                if keep_unchanged {
                    write_frame(&mut writers[Change::Unchanged as usize], &entry.key, &entry.fp, &entry.row, &[]).map_err(io)?;
                }
            }
            Some(_) => {
                diff.changed += 1;
                mark(b'c', &entry.key, &entry.fp);
                waiting.push((Change::Changed, entry.clone()));
            }
        }
        if waiting.len() >= 1024 {
            flush_waiting(state, &p.sync.name, &mut waiting, &mut writers).map_err(Abort)?;
        }
        previous = Some(entry.key);
    }
    while let Some((key, _)) = snapshot.next()? {
        diff.removed += 1;
        mark(b'r', &key, &[]);
        waiting.push((Change::Removed, crate::diff::ModelEntry::key_only(key)));
        if waiting.len() >= 1024 {
            flush_waiting(state, &p.sync.name, &mut waiting, &mut writers).map_err(Abort)?;
        }
    }
    flush_waiting(state, &p.sync.name, &mut waiting, &mut writers).map_err(Abort)?;
    for w in &mut writers {
        w.flush().map_err(io)?;
    }
    drop(writers);
    if duplicates > 0 {
        return Err(Abort(format!(
            "model {} has {duplicates} duplicate primary key{} ({}), e.g. {}; nothing was sent",
            p.model.name,
            if duplicates == 1 { "" } else { "s" },
            p.model.primary_key.join(", "),
            duplicate_samples.join(", ")
        )));
    }
    let fingerprint = format!("{:032x}", fingerprint.digest128());
    Ok(Plan { columns: projection.columns.clone(), key_columns: projection.key_columns.clone(), model_rows, snapshot_rows, diff, fingerprint, files })
}

fn flush_waiting(state: &StateStore, sync: &str, waiting: &mut Vec<(Change, crate::diff::ModelEntry)>, writers: &mut [BufWriter<&std::fs::File>]) -> Result<(), String> {
    if waiting.is_empty() {
        return Ok(());
    }
    let keys: Vec<&[u8]> = waiting.iter().map(|(_, e)| e.key.as_slice()).collect();
    let befores = state.snapshot_rows(sync, &keys).map_err(|e| e.to_string())?;
    for ((change, entry), before) in waiting.drain(..).zip(befores) {
        let before = before.unwrap_or_default();
        write_frame(&mut writers[change as usize], &entry.key, &entry.fp, &entry.row, &before).map_err(|e| format!("writing plan files: {e}"))?;
    }
    Ok(())
}

/// Walks a sync's snapshot in key order, a chunk at a time.
struct SnapshotCursor<'a> {
    state: &'a StateStore,
    sync: &'a str,
    chunk: std::collections::VecDeque<(Vec<u8>, [u8; 16])>,
    last: Option<Vec<u8>>,
    done: bool,
}

impl<'a> SnapshotCursor<'a> {
    fn new(state: &'a StateStore, sync: &'a str, enabled: bool) -> SnapshotCursor<'a> {
        SnapshotCursor { state, sync, chunk: Default::default(), last: None, done: !enabled }
    }

    fn fill(&mut self) -> Result<(), Abort> {
        if self.chunk.is_empty() && !self.done {
            let next = self.state.snapshot_chunk(self.sync, self.last.as_deref(), 16_384).map_err(|e| Abort(e.to_string()))?;
            if next.is_empty() {
                self.done = true;
            }
            if let Some((k, _)) = next.last() {
                self.last = Some(k.clone());
            }
            self.chunk.extend(next);
        }
        Ok(())
    }

    fn peek(&mut self) -> Result<Option<&(Vec<u8>, [u8; 16])>, Abort> {
        self.fill()?;
        Ok(self.chunk.front())
    }

    fn next(&mut self) -> Result<Option<(Vec<u8>, [u8; 16])>, Abort> {
        self.fill()?;
        Ok(self.chunk.pop_front())
    }
}

fn write_frame(out: &mut impl Write, key: &[u8], fp: &[u8; 16], row: &[u8], before: &[u8]) -> std::io::Result<()> {
    out.write_all(&(key.len() as u32).to_le_bytes())?;
    out.write_all(key)?;
    out.write_all(fp)?;
    out.write_all(&(row.len() as u32).to_le_bytes())?;
    out.write_all(row)?;
    out.write_all(&(before.len() as u32).to_le_bytes())?;
    out.write_all(before)
}

/// Runs a sync end to end and records it. Returns the record even when the run failed; an
/// `Err` means the run could not start (nothing was read or written, nothing recorded).
pub async fn run_sync(host: &PluginHost, ws: &Workspace, state: &StateStore, sync_name: &str, options: &RunOptions) -> Result<RunRecord, PrepareError> {
    run_sync_with(host, ws, state, sync_name, options, PlanOptions::default()).await
}

pub async fn run_sync_with(host: &PluginHost, ws: &Workspace, state: &StateStore, sync_name: &str, options: &RunOptions, plan_options: PlanOptions) -> Result<RunRecord, PrepareError> {
    let started_at = now_rfc3339();
    let clock = Instant::now();
    let prepared = prepare(host, ws, sync_name).await?;
    let run_id = ulid::Ulid::new().to_string();
    let mut record = RunRecord {
        run_id: run_id.clone(),
        sync: sync_name.to_string(),
        trigger: options.trigger.clone(),
        user: options.user.clone(),
        started_at,
        finished_at: String::new(),
        duration_ms: 0,
        timings: Timings::default(),
        status: RunStatus::Running,
        full_resync: plan_options.full_resync,
        model_rows: 0,
        snapshot_rows: 0,
        diff: DiffCounts::default(),
        planned: OpCounts::default(),
        delivered: OpCounts::default(),
        failed: OpCounts::default(),
        plugins: PluginHashes {
            source: prepared.source_plugin.hash.clone(),
            destination: prepared.destination_plugin.as_ref().map(|p| p.hash.clone()).unwrap_or_else(|| BUILTIN_NOOP.into()),
        },
        config_hash: prepared.config_hash.clone(),
        error: None,
        checks: Vec::new(),
        rejected: Vec::new(),
    };
    let state_err = |e: crate::state::StateError| PrepareError(e.to_string());
    // Runs of this sync left `running` by a process that died.
    for mut old in state.runs(Some(sync_name), usize::MAX).map_err(state_err)?.into_iter().filter(|r| r.status == RunStatus::Running) {
        old.status = RunStatus::Interrupted;
        old.error = Some("the process running this sync stopped before the run finished; rows it had delivered were kept".into());
        state.record_run(&old).map_err(state_err)?;
    }
    state.record_run(&record).map_err(state_err)?;
    tracing::info!(sync = sync_name, run_id, "run started");
    let mut tally = Tally::default();
    let start = crate::state::AuditEvent {
        user: options.user.clone(),
        action: "run.start".into(),
        target: format!("{sync_name} run {run_id}"),
        config_hash: Some(prepared.config_hash.clone()),
        detail: serde_json::json!({"trigger": options.trigger, "approved_run": options.approved_run}),
    };
    state.write_governance(vec![], vec![start]).map_err(state_err)?;
    let outcome = execute(host, ws, state, &prepared, &run_id, plan_options, options, &mut tally, &mut record).await;
    record.status = match &outcome {
        Err(_) if tally.gated.is_some() => tally.gated.expect("checked"),
        Err(_) if tally.blocked => RunStatus::Blocked,
        Err(_) => RunStatus::Failed,
        Ok(()) if tally.failed.total() > 0 => RunStatus::Partial,
        Ok(()) => RunStatus::Succeeded,
    };
    record.finished_at = now_rfc3339();
    record.duration_ms = clock.elapsed().as_millis() as u64;
    record.timings = tally.timings;
    record.planned = tally.planned;
    record.delivered = tally.delivered;
    record.failed = tally.failed;
    record.error = outcome.err().map(|a| a.0);
    record.rejected = tally.rejected;
    state.record_run(&record).map_err(state_err)?;
    tracing::info!(sync = sync_name, run_id = record.run_id, status = record.status.as_str(), delivered = record.delivered.total(), failed = record.failed.total(), "run finished");
    Ok(record)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Applies what an interrupted run had delivered (its journal) to the snapshot.
fn recover_journal(state: &StateStore, journal: &mut Journal, sync: &str, meta: &SyncMeta) -> Result<(), Abort> {
    if journal.is_empty() {
        return Ok(());
    }
    let applied = journal.replay(JOURNAL_APPLY_CHUNK, |ops| state.apply(sync, meta, &ops)).map_err(|e| Abort(e.to_string()))?;
    journal.clear().map_err(|e| Abort(format!("clearing the delivery journal: {e}")))?;
    tracing::info!(sync, rows = applied, "recorded deliveries of an interrupted run from its journal");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    host: &PluginHost,
    ws: &Workspace,
    state: &StateStore,
    p: &PreparedSync,
    run_id: &str,
    options: PlanOptions,
    run_options: &RunOptions,
    tally: &mut Tally,
    record: &mut RunRecord,
) -> Result<(), Abort> {
    let meta = sync_meta(p);
    let mut journal = Journal::open(&ws.state_dir.join("journal"), &p.sync.name).map_err(|e| Abort(format!("opening the delivery journal: {e}")))?;
    // A journal left by a killed run belongs to the snapshot it was written against.
    if let Some(old_meta) = state.sync_meta(&p.sync.name).map_err(|e| Abort(e.to_string()))? {
        recover_journal(state, &mut journal, &p.sync.name, &old_meta)?;
    } else {
        recover_journal(state, &mut journal, &p.sync.name, &meta)?;
    }
    // Record what the snapshot is for before the first acknowledgement is journaled, so a
    // journal left by a killed first run is never applied to another key or destination.
    if !snapshot_is_valid(state, p)? || state.sync_meta(&p.sync.name).map_err(|e| Abort(e.to_string()))?.is_none() {
        state.reset_snapshot(&p.sync.name, &meta).map_err(|e| Abort(e.to_string()))?;
    }

    let plan_started = Instant::now();
    let plan = build_plan(host, ws, state, p, options).await?;
    tally.timings.plan_ms = plan_started.elapsed().as_millis() as u64;
    record.model_rows = plan.model_rows;
    record.snapshot_rows = plan.snapshot_rows;
    record.diff = plan.diff;
    tally.planned = plan.planned(p.sync.mode);
    tracing::debug!(model_rows = plan.model_rows, added = plan.diff.added, changed = plan.diff.changed, removed = plan.diff.removed, ms = tally.timings.plan_ms, "plan complete");

    // Quality gates: every check runs, on the whole plan, before the first write.
    record.checks = run_checks(host, p, &plan, tally.planned).await;
    let blocking: Vec<&CheckReport> = record.checks.iter().filter(|c| c.blocks()).collect();
    if !blocking.is_empty() {
        tally.blocked = true;
        tally.planned = OpCounts::default();
        return Err(Abort(format!(
            "blocked by {}: nothing was sent",
            blocking.iter().map(|c| format!("check {:?} ({}: {})", c.name, c.verdict, c.message)).collect::<Vec<_>>().join("; ")
        )));
    }
    for warning in record.checks.iter().filter(|c| c.verdict != "pass") {
        tracing::warn!(sync = %p.sync.name, check = %warning.name, verdict = %warning.verdict, "{}", warning.message);
    }
    if tally.planned.total() == 0 {
        return Ok(());
    }

    // The run-time gate: approval policies see the plan's size and may hold it for a person.
    if !ws.governance.policies.is_empty() {
        let mut samples = serde_json::Map::new();
        for (name, change) in [("added", Change::Added), ("changed", Change::Changed), ("removed", Change::Removed)] {
            samples.insert(name.into(), serde_json::Value::Array(plan.samples(change, 5).unwrap_or_default()));
        }
        let decision = crate::governance::gate_run(
            host,
            ws,
            state,
            run_id,
            &p.sync,
            tally.planned,
            &plan.fingerprint,
            serde_json::Value::Object(samples),
            &p.config_hash,
            options.full_resync,
            &run_options.user,
            run_options.approved_run.as_deref(),
        )
        .await
        .map_err(Abort)?;
        match decision {
            crate::governance::GateDecision::Proceed => {}
            crate::governance::GateDecision::Await(message) => {
                tally.gated = Some(RunStatus::AwaitingApproval);
                return Err(Abort(format!("{message}; nothing was sent")));
            }
            crate::governance::GateDecision::Reject(reason) => {
                tally.gated = Some(RunStatus::Rejected);
                tally.planned = OpCounts::default();
                return Err(Abort(format!("rejected by approval policy: {reason}; nothing was sent")));
            }
        }
    }

    let deliver_started = Instant::now();
    let context = SyncContext { sync_name: p.sync.name.clone(), primary_key: primary_key_fields(p), run_id: run_id.to_string() };
    // One writer (one plugin instance, one store) per request in flight.
    let mut idle: Vec<Writer> = Vec::new();
    for _ in 0..p.sync.max_in_flight {
        idle.push(match &p.destination_plugin {
            None => Writer::Noop,
            Some(plugin) => Writer::Wasm(
                DestinationInstance::open(host, plugin, &p.destination.grants, p.destination.limits, &p.destination.config_json, &context)
                    .await
                    .map_err(|e| Abort(open_error(p, &p.destination, &e)))?,
            ),
        });
    }
    let mut delivery = Delivery { journal: &mut journal, state, meta: &meta, p, run_id, last_apply: Instant::now() };
    let pacer = tokio::sync::Mutex::new(Pacer::new(effective_rate_limit(p)));
    let deadline = p.sync.time_budget_s.map(|s| deliver_started + Duration::from_secs(s));
    let mut progress = Progress::new("delivered", tally.planned.total());
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut stop: Option<Abort> = None;
    // Deletes first, then updates, then inserts (each group finished before the next): a key
    // that moved between rows never exists twice in the destination.
    'changes: for change in [Change::Removed, Change::Changed, Change::Added] {
        let Some(op) = operation_for(p.sync.mode, change) else { continue };
        let (columns, event_ids) = match (change, op) {
            (Change::Removed, _) => (plan.key_columns.clone(), false),
            (_, Operation::Append) => {
                let mut c = plan.columns.clone();
                c.push(Column { name: p.sync.event_id_field.clone(), value_type: backflow_plugin_sdk::ValueType::Text, nullable: false });
                (c, true)
            }
            _ => (plan.columns.clone(), false),
        };
        let mut reader = match plan.rows(change) {
            Ok(r) => r,
            Err(e) => {
                stop = Some(Abort(format!("reading the plan: {e}")));
                break 'changes;
            }
        };
        loop {
            let mut rows = Vec::with_capacity(p.batch_size as usize);
            while rows.len() < p.batch_size as usize {
                match reader.next() {
                    Ok(Some(mut row)) => {
                        row.payload = if change == Change::Removed {
                            row.key.clone()
                        } else if event_ids {
                            with_event_id(&row.row, &p.sync.name, &row.key)
                        } else {
                            row.row.clone()
                        };
                        rows.push(row);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        stop = Some(Abort(format!("reading the plan: {e}")));
                        break 'changes;
                    }
                }
            }
            if rows.is_empty() {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let left = tally.planned.total() - tally.delivered.total() - tally.failed.total();
                stop = Some(Abort(format!(
                    "stopped after the time budget of {} s ({}); {left} planned rows were not sent and go with the next run",
                    p.sync.time_budget_s.unwrap_or(0),
                    p.sync.origin.key("time_budget_s")
                )));
                break 'changes;
            }
            // Wait for a free writer, recording what finished meanwhile.
            while idle.is_empty() {
                let done = in_flight.next().await.expect("a writer is busy");
                if let Err(e) = settle(done, &mut idle, &mut delivery, tally, &mut progress) {
                    stop = Some(e);
                    break 'changes;
                }
            }
            let mut writer = idle.pop().expect("a writer is idle");
            let (pacer, columns) = (&pacer, columns.clone());
            in_flight.push(async move {
                let sent = send(&mut writer, pacer, p, op, change, &columns, rows).await;
                (writer, sent)
            });
        }
        // Finish this change before starting the next.
        while let Some(done) = in_flight.next().await {
            if let Err(e) = settle(done, &mut idle, &mut delivery, tally, &mut progress) {
                stop = Some(e);
                break 'changes;
            }
        }
    }
    // Batches still in flight after a stop: let them end and record what they delivered.
    while let Some(done) = in_flight.next().await {
        if let Err(e) = settle(done, &mut idle, &mut delivery, tally, &mut progress) {
            tracing::warn!(sync = %p.sync.name, "{e}");
        }
    }
    drop(in_flight);
    let mut finish = Ok(());
    for writer in idle {
        if let Err(e) = writer.finish().await {
            finish = Err(e);
        }
    }
    let result = match stop {
        Some(e) => Err(e),
        None => Ok(()),
    };
    // Whatever was acknowledged is recorded, even when the run stops early.
    let recorded = recover_journal(state, &mut journal, &p.sync.name, &meta);
    match (result, recorded) {
        (Err(run), Err(journal)) => return Err(Abort(format!("{run}; and recording the acknowledged rows failed: {journal}"))),
        (Err(run), Ok(())) => return Err(run),
        (Ok(()), Err(journal)) => return Err(journal),
        (Ok(()), Ok(())) => {}
    }
    finish.map_err(|e| Abort(format!("destination {} failed to finish: {e}", p.destination.name)))?;
    tally.timings.deliver_ms = deliver_started.elapsed().as_millis() as u64;
    tracing::debug!(rows = tally.delivered.total(), ms = tally.timings.deliver_ms, "delivery complete");
    Ok(())
}

/// Rows per batch shown to quality checks.
const CHECK_BATCH_ROWS: usize = 4096;

/// Runs every check of the sync over the plan. A check that cannot run (trap, timeout, out
/// of memory, error) reports verdict `error`, which blocks like a failure: checks fail closed.
pub async fn run_checks(host: &PluginHost, p: &PreparedSync, plan: &Plan, planned: OpCounts) -> Vec<CheckReport> {
    if p.checks.is_empty() {
        return Vec::new();
    }
    let summary = CheckSummary {
        sync_name: &p.sync.name,
        columns: &plan.columns,
        snapshot_rows: plan.snapshot_rows,
        model_rows: plan.model_rows,
        added: planned.added,
        changed: planned.changed,
        removed: planned.removed,
    };
    let mut reports: Vec<CheckReport> = p
        .checks
        .iter()
        .map(|(c, plugin)| CheckReport {
            name: c.name.clone(),
            plugin: plugin.spec.name.clone(),
            severity: c.severity,
            verdict: "error".into(),
            message: String::new(),
            samples: Vec::new(),
        })
        .collect();
    // Each check runs on its own task, owning its store; batches fan out to all of them.
    type Feed = tokio::sync::mpsc::Sender<(CheckChange, Batch, Option<Batch>)>;
    let mut feeds: Vec<Option<Feed>> = Vec::new();
    let mut tasks = Vec::new();
    for (i, (c, plugin)) in p.checks.iter().enumerate() {
        let cfg = &c.connector;
        match CheckInstance::open(host, plugin, &cfg.grants, cfg.limits, &cfg.config_json, &summary).await {
            Ok(mut inst) => {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<(CheckChange, Batch, Option<Batch>)>(2);
                feeds.push(Some(tx));
                tasks.push((
                    i,
                    tokio::spawn(async move {
                        while let Some((kind, after, before)) = rx.recv().await {
                            inst.observe(kind, after, before).await.map_err(|e| format!("the check failed: {e}"))?;
                        }
                        inst.finish().await.map_err(|e| format!("the check failed: {e}"))
                    }),
                ));
            }
            Err(e) => {
                reports[i].message = format!("the check could not start: {e}");
                feeds.push(None);
            }
        }
    }
    let mut read_error = None;
    let streams = [(Change::Added, CheckChange::Added), (Change::Changed, CheckChange::Changed), (Change::Removed, CheckChange::Removed), (Change::Unchanged, CheckChange::Unchanged)];
    'streams: for (change, kind) in streams {
        // Changes the mode does not send are still model rows: whole-model checks see them
        // as unchanged. Removals the mode does not send are not shown at all.
        let kind = match (change, operation_for(p.sync.mode, change)) {
            (Change::Removed, None) => continue,
            (Change::Added | Change::Changed, None) => CheckChange::Unchanged,
            _ => kind,
        };
        let mut reader = match plan.rows(change) {
            Ok(r) => r,
            Err(e) => {
                read_error = Some(format!("reading the plan: {e}"));
                break 'streams;
            }
        };
        loop {
            let mut rows = Vec::with_capacity(CHECK_BATCH_ROWS);
            while rows.len() < CHECK_BATCH_ROWS {
                match reader.next() {
                    Ok(Some(row)) => rows.push(row),
                    Ok(None) => break,
                    Err(e) => {
                        read_error = Some(format!("reading the plan: {e}"));
                        break 'streams;
                    }
                }
            }
            if rows.is_empty() {
                break;
            }
            let (after, before) = check_batches(plan, change, &rows);
            for feed in feeds.iter_mut() {
                // A check whose task ended early (it failed) is no longer fed.
                if let Some(tx) = feed {
                    if tx.send((kind, after.clone(), before.clone())).await.is_err() {
                        *feed = None;
                    }
                }
            }
        }
    }
    drop(feeds);
    for (i, task) in tasks {
        match task.await {
            Ok(Ok(outcome)) if read_error.is_none() => {
                reports[i].verdict = outcome.verdict.into();
                reports[i].message = outcome.message;
                reports[i].samples = outcome.samples.into_iter().take(20).collect();
            }
            Ok(Ok(_)) => reports[i].message = read_error.clone().unwrap_or_default(),
            Ok(Err(e)) => reports[i].message = e,
            Err(e) => reports[i].message = format!("the check task failed: {e}"),
        }
    }
    reports
}

/// The batches a check sees for planned rows: removals carry the key fields; changes carry
/// the last delivered values as `before` when they have the current shape.
fn check_batches(plan: &Plan, change: Change, rows: &[PlannedRow]) -> (Batch, Option<Batch>) {
    let build = |columns: &[Column], pick: &dyn Fn(&PlannedRow) -> &[u8]| {
        let mut b = BatchBuilder::with_capacity(columns.to_vec(), rows.iter().map(|r| pick(r).len()).sum::<usize>() + 8);
        for r in rows {
            b.push_encoded_row(pick(r));
        }
        b.finish()
    };
    match change {
        Change::Removed => (build(&plan.key_columns, &|r| &r.key), None),
        Change::Changed => {
            let width_ok = rows.iter().all(|r| {
                let mut rest = r.before.as_slice();
                read_array_len(&mut rest).ok() == Some(plan.columns.len())
            });
            let before = width_ok.then(|| build(&plan.columns, &|r| &r.before));
            (build(&plan.columns, &|r| &r.row), before)
        }
        Change::Added | Change::Unchanged => (build(&plan.columns, &|r| &r.row), None),
    }
}

/// Appends a stable event id (derived from the sync and the row's key) to an encoded row.
fn with_event_id(row: &[u8], sync: &str, key: &[u8]) -> Vec<u8> {
    let mut rest = row;
    let n = read_array_len(&mut rest).unwrap_or(0);
    let mut out = Vec::with_capacity(row.len() + 40);
    write_row_header(&mut out, n as u32 + 1);
    out.extend_from_slice(rest);
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(sync.as_bytes());
    h.update(&[0]);
    h.update(key);
    backflow_plugin_sdk::codec::write_text(&mut out, &format!("{:032x}", h.digest128()));
    out
}

/// Why a plugin could not open, naming the file and key to fix for config errors: the
/// model's `query` for a source's `query` field, the connector's `config.FIELD` otherwise.
fn open_error(p: &PreparedSync, connector: &Connector, e: &CallError) -> String {
    connector_error(&p.model, connector, std::ptr::eq(connector, &p.source), e)
}

/// [`open_error`] for a connector that is (`is_source`) or is not the model's source.
pub(crate) fn connector_error(model: &Model, connector: &Connector, is_source: bool, e: &CallError) -> String {
    let what = if is_source { format!("source {} could not open model {}", connector.name, model.name) } else { format!("destination {} could not open", connector.name) };
    match e {
        CallError::Plugin(PluginError::BadConfig(c)) if c.field == "query" && is_source => {
            format!("{what}: {}: {}: {}", model.origin.file.display(), model.origin.key("query"), c.message)
        }
        CallError::Plugin(PluginError::BadConfig(c)) => {
            let key = if c.field.is_empty() { connector.origin.key("config") } else { connector.origin.key(&format!("config.{}", c.field)) };
            format!("{what}: {}: {key}: {}", connector.origin.file.display(), c.message)
        }
        other => format!("{what}: {other}"),
    }
}

fn primary_key_fields(p: &PreparedSync) -> Vec<String> {
    p.model
        .primary_key
        .iter()
        .map(|k| p.sync.mapping.iter().find(|(from, _)| from == k).map(|(_, to)| to.clone()).unwrap_or_else(|| k.clone()))
        .collect()
}

/// Batches the source reads ahead, on their own task: the guest parses the next batch while
/// the host projects and spills the previous one.
type SourceBatches = tokio::sync::mpsc::Receiver<Result<Batch, CallError>>;

/// Moves the source onto its own task, which reads until the model ends, an error occurs or
/// the receiver is dropped, then closes the source.
fn spawn_reader(mut source: SourceInstance) -> SourceBatches {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            match source.next_batch(SOURCE_BATCH_ROWS).await {
                Ok(Some(batch)) => {
                    if tx.send(Ok(batch)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
        source.close().await;
    });
    rx
}

/// Reads every batch from the source, projects rows to destination fields, checks keys, and
/// spills (key, fingerprint, row) for the diff.
async fn read_model(mut batches: SourceBatches, p: &PreparedSync, projection: &Projection, spill: &mut crate::diff::ModelSpill) -> Result<(), Abort> {
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(projection.source_width);
    let mut row_buf = Vec::with_capacity(256);
    let mut key_buf = Vec::with_capacity(64);
    let mut null_keys: Vec<u64> = Vec::new();
    let mut null_count = 0u64;
    let mut row_number: u64 = 0;
    let mut empty_batches = 0u32;
    let mut progress = Progress::new("read", 0);
    loop {
        let batch = match batches.recv().await {
            None => break,
            Some(batch) => batch.map_err(|e| Abort(format!("source {} failed reading model {} after {row_number} rows: {e}", p.source.name, p.model.name)))?,
        };
        if batch.row_count == 0 {
            empty_batches += 1;
            if empty_batches > MAX_EMPTY_BATCHES {
                return Err(Abort(format!("source {} returned {MAX_EMPTY_BATCHES} empty batches in a row; a source signals the end with none", p.source.name)));
            }
            continue;
        }
        empty_batches = 0;
        let payload = batch.payload.as_slice();
        let mut rest = payload;
        let count = read_array_len(&mut rest).map_err(|e| Abort(format!("source {} sent a malformed batch: {e}", p.source.name)))?;
        if count != batch.row_count as usize || batch.columns.len() != projection.source_width {
            return Err(Abort(format!("source {} sent a batch whose shape does not match its declared columns", p.source.name)));
        }
        let mut pos = payload.len() - rest.len();
        for _ in 0..count {
            row_number += 1;
            let mut r = &payload[pos..];
            let width = read_array_len(&mut r).map_err(|e| Abort(format!("model {} row {row_number}: {e}", p.model.name)))?;
            if width != projection.source_width {
                return Err(Abort(format!("model {} row {row_number}: {width} values for {} columns", p.model.name, projection.source_width)));
            }
            pos = payload.len() - r.len();
            spans.clear();
            for _ in 0..width {
                let len = value_len(&payload[pos..]).map_err(|e| Abort(format!("model {} row {row_number}: {e}", p.model.name)))?;
                spans.push((pos, pos + len));
                pos += len;
            }
            key_buf.clear();
            write_row_header(&mut key_buf, projection.key_index.len() as u32);
            let mut null_key = false;
            for &k in &projection.key_index {
                let (a, b) = spans[k];
                null_key |= payload[a] == 0xc0;
                // Keys are compared as bytes: re-encode them canonically, so the same value
                // is the same key whichever MessagePack width a plugin chose.
                let mut cell = &payload[a..b];
                match backflow_plugin_sdk::codec::read_value(&mut cell) {
                    Ok(v) => backflow_plugin_sdk::codec::write_value(&mut key_buf, &v),
                    Err(e) => return Err(Abort(format!("model {} row {row_number}: primary key: {e}", p.model.name))),
                }
            }
            if null_key {
                null_count += 1;
                if null_keys.len() < 5 {
                    null_keys.push(row_number);
                }
                continue;
            }
            row_buf.clear();
            write_row_header(&mut row_buf, projection.source_index.len() as u32);
            for &i in &projection.source_index {
                let (a, b) = spans[i];
                row_buf.extend_from_slice(&payload[a..b]);
            }
            let fp = crate::diff::fingerprint(&projection.signature, &row_buf);
            spill.push(&key_buf, fp, &row_buf).map_err(|e| Abort(format!("writing the plan: {e}")))?;
        }
        progress.advance(count as u64);
    }
    if null_count > 0 {
        return Err(Abort(format!(
            "model {} has {null_count} row{} with a NULL primary key ({}), e.g. rows {}; nothing was sent",
            p.model.name,
            if null_count == 1 { "" } else { "s" },
            p.model.primary_key.join(", "),
            null_keys.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// One planned row: its encoded key (a MessagePack array), fingerprint, mapped row, the last
/// delivered row (for changes and removals), and what is sent.
struct PlannedRow {
    key: Vec<u8>,
    fp: [u8; 16],
    row: Vec<u8>,
    before: Vec<u8>,
    payload: Vec<u8>,
}

/// Renders an encoded key: `42`, or `42|eu` for composite keys.
pub fn key_text(key: &[u8]) -> String {
    let mut rest = key;
    let n = read_array_len(&mut rest).unwrap_or(0);
    (0..n).map(|_| read_value(&mut rest).map(|v| v.to_string()).unwrap_or_else(|_| "?".into())).collect::<Vec<_>>().join("|")
}

impl PlannedRow {
    fn key_text(&self) -> String {
        key_text(&self.key)
    }
}

struct PlanReader<'a> {
    input: BufReader<&'a std::fs::File>,
}

impl<'a> PlanReader<'a> {
    fn new(file: &'a std::fs::File) -> PlanReader<'a> {
        PlanReader { input: BufReader::with_capacity(1 << 20, file) }
    }

    fn bytes(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        self.input.read_exact(&mut buf)?;
        Ok(Some(buf))
    }

    fn next(&mut self) -> std::io::Result<Option<PlannedRow>> {
        let Some(key) = self.bytes()? else { return Ok(None) };
        let truncated = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "plan file truncated");
        let mut fp = [0u8; 16];
        self.input.read_exact(&mut fp)?;
        let row = self.bytes()?.ok_or_else(truncated)?;
        let before = self.bytes()?.ok_or_else(truncated)?;
        Ok(Some(PlannedRow { key, fp, row, before, payload: Vec::new() }))
    }
}

enum Writer {
    Wasm(DestinationInstance),
    /// Native no-op, to measure what the Wasm boundary costs.
    Noop,
}

impl Writer {
    async fn write(&mut self, op: Operation, batch: Batch) -> Result<Vec<RowOutcome>, CallError> {
        match self {
            Writer::Wasm(d) => d.write(op, batch).await,
            Writer::Noop => Ok(vec![RowOutcome::Accepted; batch.row_count as usize]),
        }
    }

    async fn finish(self) -> Result<(), CallError> {
        match self {
            Writer::Wasm(d) => d.finish().await,
            Writer::Noop => Ok(()),
        }
    }
}

/// Whether a destination refused every row of a batch with the same message: a verdict on
/// the batch, not on its rows.
fn refused_as_a_whole(outcomes: &[RowOutcome]) -> bool {
    match outcomes.first() {
        Some(RowOutcome::Rejected(first)) => outcomes.iter().all(|o| matches!(o, RowOutcome::Rejected(m) if m == first)),
        _ => false,
    }
}

fn build_batch(columns: &[Column], rows: &[PlannedRow]) -> Batch {
    let bytes: usize = rows.iter().map(|r| r.payload.len()).sum();
    let mut b = BatchBuilder::with_capacity(columns.to_vec(), bytes + 8);
    for r in rows {
        b.push_encoded_row(&r.payload);
    }
    b.finish()
}

/// The sync's own rate limit, or else the one its destination declares.
fn effective_rate_limit(p: &PreparedSync) -> crate::config::RateLimit {
    let own = p.sync.rate_limit;
    if own.requests_per_second.is_some() || own.rows_per_second.is_some() {
        return own;
    }
    match p.destination_plugin.as_ref().and_then(|d| d.spec.default_rate_limit) {
        Some(d) => crate::config::RateLimit { requests_per_second: d.requests_per_second, rows_per_second: d.rows_per_second },
        None => own,
    }
}

/// Spaces requests so a sync never exceeds its rate limit: each request may start only
/// after the previous one's share of a second (and of the row budget) has passed.
pub struct Pacer {
    per_request: Option<Duration>,
    per_row: Option<Duration>,
    next: Instant,
}

impl Pacer {
    pub fn new(limit: crate::config::RateLimit) -> Pacer {
        Pacer {
            per_request: limit.requests_per_second.map(|r| Duration::from_secs_f64(1.0 / r)),
            per_row: limit.rows_per_second.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Instant::now(),
        }
    }

    /// Waits until a request of `rows` rows may go.
    pub async fn wait(&mut self, rows: usize) {
        if self.per_request.is_none() && self.per_row.is_none() {
            return;
        }
        let now = Instant::now();
        if self.next > now {
            tokio::time::sleep_until(self.next.into()).await;
        }
        let start = self.next.max(now);
        let by_requests = self.per_request.unwrap_or_default();
        let by_rows = self.per_row.map(|d| d * rows as u32).unwrap_or_default();
        self.next = start + by_requests.max(by_rows);
    }
}

/// What sending one batch came to: rows acknowledged (as journal ops), rows refused with
/// the destination's reason, and whether the run must stop.
struct Sent {
    change: Change,
    acked: Vec<JournalOp>,
    rejected: Vec<(PlannedRow, String)>,
    result: Result<(), Abort>,
}

/// Sends one batch through `writer`, retrying retryable failures with exponential backoff,
/// halving batches refused as a whole and isolating rows the destination names as bad.
/// Touches no shared state but the pacer, so several run at once (`max_in_flight`).
async fn send(writer: &mut Writer, pacer: &tokio::sync::Mutex<Pacer>, p: &PreparedSync, op: Operation, change: Change, columns: &[Column], rows: Vec<PlannedRow>) -> Sent {
    // Groups of rows still to send; a batch refused as a whole is split into halves.
    let mut groups: Vec<Vec<PlannedRow>> = vec![rows];
    let mut pending = Vec::new();
    let mut attempt = 0u32;
    let mut last_error = String::new();
    let mut acked: Vec<JournalOp> = Vec::new();
    let mut rejected: Vec<(PlannedRow, String)> = Vec::new();
        let result = loop {
            if pending.is_empty() {
                match groups.pop() {
                    Some(group) => {
                        pending = group;
                        attempt = 0;
                        continue;
                    }
                    None => break Ok(()),
                }
            }
            if attempt >= MAX_ATTEMPTS {
                for row in pending.drain(..) {
                    rejected.push((row, format!("gave up after {MAX_ATTEMPTS} attempts: {last_error}")));
                }
                break Ok(());
            }
            attempt += 1;
            pacer.lock().await.wait(pending.len()).await;
            let batch = build_batch(columns, &pending);
            match writer.write(op, batch).await {
                Ok(outcomes) if pending.len() > 1 && refused_as_a_whole(&outcomes) => {
                    // Every row refused for one reason: the destination could not say which
                    // rows are bad (a 4xx for a JSON array, say). Halve the batch until the
                    // bad rows stand alone, so the good ones still go through.
                    let right = pending.split_off(pending.len() / 2);
                    groups.push(right);
                    groups.push(std::mem::take(&mut pending));
                }
                Ok(outcomes) => {
                    let mut retry = Vec::new();
                    for (row, outcome) in pending.into_iter().zip(outcomes) {
                        match outcome {
                            RowOutcome::Accepted => acked.push(match change {
                                Change::Removed => JournalOp::Delete { key: row.key },
                                _ => JournalOp::Upsert { key: row.key, fp: row.fp, row: row.row },
                            }),
                            RowOutcome::Rejected(m) => rejected.push((row, m)),
                            RowOutcome::Retryable(m) => {
                                last_error = m;
                                retry.push(row);
                            }
                        }
                    }
                    pending = retry;
                    if !pending.is_empty() && attempt < MAX_ATTEMPTS {
                        backoff(attempt, None).await;
                    }
                }
                Err(CallError::Plugin(PluginError::BadRow(bad))) if (bad.row_index as usize) < pending.len() => {
                    let row = pending.remove(bad.row_index as usize);
                    rejected.push((row, bad.message));
                    attempt -= 1;
                }
                Err(CallError::Plugin(e @ (PluginError::Retryable { .. } | PluginError::RateLimited { .. }))) => {
                    let retry_after = match &e {
                        PluginError::RateLimited { retry_after_ms, .. } => retry_after_ms.map(Duration::from_millis),
                        _ => None,
                    };
                    tracing::warn!(destination = %p.destination.name, attempt, "retrying batch: {e}");
                    last_error = e.to_string();
                    if attempt < MAX_ATTEMPTS {
                        backoff(attempt, retry_after).await;
                    }
                }
                Err(CallError::Plugin(PluginError::BadConfig(c))) => {
                    let key = if c.field.is_empty() { p.destination.origin.key("config") } else { p.destination.origin.key(&format!("config.{}", c.field)) };
                    break Err(Abort(format!("destination {}: {}: {key}: {}", p.destination.name, p.destination.origin.file.display(), c.message)));
                }
                Err(e) => break Err(Abort(format!("destination {} failed: {e}", p.destination.name))),
            }
        };
    Sent { change, acked, rejected, result }
}

/// Takes a finished send: its writer is free again and its rows are recorded.
fn settle(done: (Writer, Sent), idle: &mut Vec<Writer>, delivery: &mut Delivery<'_>, tally: &mut Tally, progress: &mut Progress) -> Result<(), Abort> {
    let (writer, sent) = done;
    idle.push(writer);
    let n = (sent.acked.len() + sent.rejected.len()) as u64;
    delivery.record(sent, tally)?;
    progress.advance(n);
    Ok(())
}

/// Journals what the destination acknowledged and keeps the run's counts.
struct Delivery<'a> {
    journal: &'a mut Journal,
    state: &'a StateStore,
    meta: &'a SyncMeta,
    p: &'a PreparedSync,
    run_id: &'a str,
    last_apply: Instant,
}

impl Delivery<'_> {
    /// Records a sent batch: acknowledged rows go to the journal in one write (durable
    /// against a crash of this process from then on), refused rows to the pending list.
    fn record(&mut self, sent: Sent, tally: &mut Tally) -> Result<(), Abort> {
        let p = self.p;
        let Sent { change, mut acked, rejected, result } = sent;
        bump(&mut tally.delivered, change, acked.len() as u64);
        for (row, mut error) in rejected {
            if error.len() > MAX_ERROR_CHARS {
                let cut = (0..=MAX_ERROR_CHARS).rev().find(|i| error.is_char_boundary(*i)).unwrap_or(0);
                error.truncate(cut);
                error.push('…');
            }
            bump(&mut tally.failed, change, 1);
            if tally.rejected.len() < MAX_REJECTED_KEPT {
                tally.rejected.push(RejectedRow { key: row.key_text(), change: change.as_str().into(), error: error.clone() });
            }
            acked.push(JournalOp::Reject { key: row.key, change: change.as_str().into(), error, run_id: self.run_id.to_string() });
        }
        // One write: acknowledged rows are durable against a crash of this process from here.
        self.journal.append(&acked).map_err(|e| Abort(format!("writing the delivery journal: {e}")))?;
        if self.journal.len() > JOURNAL_APPLY_BYTES || self.last_apply.elapsed() > JOURNAL_APPLY_INTERVAL {
            recover_journal(self.state, self.journal, &p.sync.name, self.meta)?;
            self.last_apply = Instant::now();
        }
        result
    }
}

async fn backoff(attempt: u32, retry_after: Option<Duration>) {
    let exp = Duration::from_millis(200u64.saturating_mul(1 << attempt.min(6)));
    let jitter = Duration::from_millis(u64::from(ulid::Ulid::new().random() as u16 % 100));
    let wait = retry_after.unwrap_or(exp + jitter).min(Duration::from_secs(60));
    tokio::time::sleep(wait).await;
}

/// Logs progress at most every two seconds.
struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    last: Instant,
    started: Instant,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Progress {
        Progress { what, total, done: 0, last: Instant::now(), started: Instant::now() }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed() >= Duration::from_secs(2) {
            self.last = Instant::now();
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            if self.total > 0 {
                tracing::info!("{} {}/{} rows ({rate:.0} rows/s)", self.what, self.done, self.total);
            } else {
                tracing::info!("{} {} rows ({rate:.0} rows/s)", self.what, self.done);
            }
        }
    }
}

/// A dry run's result: what a run would do now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanReport {
    pub sync: String,
    pub mode: SyncMode,
    pub full_resync: bool,
    pub model_rows: u64,
    pub snapshot_rows: u64,
    pub diff: DiffCounts,
    /// What the mode would send, per change.
    pub planned: OpCounts,
    /// The destination operation per change (`null` where the mode sends nothing).
    pub operations: serde_json::Value,
    /// Sample rows per change: rows for added, before/after for changed, before for removed.
    pub samples: serde_json::Value,
    /// Quality check results on this plan.
    pub checks: Vec<CheckReport>,
    /// Whether a check would block the run.
    pub blocked: bool,
}

/// Plans a sync without sending or recording anything.
pub async fn plan_sync(host: &PluginHost, ws: &Workspace, state: &StateStore, sync_name: &str, options: PlanOptions, samples: usize) -> Result<PlanReport, String> {
    let p = prepare(host, ws, sync_name).await.map_err(|e| e.0)?;
    let plan = build_plan(host, ws, state, &p, options).await.map_err(|e| e.0)?;
    let mut operations = serde_json::Map::new();
    let mut sample_map = serde_json::Map::new();
    let planned = plan.planned(p.sync.mode);
    let checks = run_checks(host, &p, &plan, planned).await;
    for change in [Change::Added, Change::Changed, Change::Removed] {
        let op = operation_for(p.sync.mode, change);
        operations.insert(change.as_str().into(), op.map(|o| serde_json::Value::String(o.as_str().into())).unwrap_or(serde_json::Value::Null));
        sample_map.insert(change.as_str().into(), serde_json::Value::Array(plan.samples(change, samples).map_err(|e| format!("reading the plan: {e}"))?));
    }
    Ok(PlanReport {
        sync: sync_name.into(),
        mode: p.sync.mode,
        full_resync: options.full_resync,
        model_rows: plan.model_rows,
        snapshot_rows: plan.snapshot_rows,
        diff: plan.diff,
        planned,
        operations: serde_json::Value::Object(operations),
        samples: serde_json::Value::Object(sample_map),
        blocked: checks.iter().any(|c| c.blocks()),
        checks,
    })
}

/// The destination's answer to one test row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestReport {
    pub sync: String,
    pub key: String,
    pub operation: Operation,
    pub row: serde_json::Value,
    /// `accepted`, `rejected` or `retryable`, or `error` when the call itself failed.
    pub outcome: String,
    pub message: Option<String>,
}

/// Sends the model row with primary key `key` (as text, `1` or `1|eu`) to the destination as
/// an added row, and reports the answer. Neither the snapshot nor run history change.
pub async fn test_row(host: &PluginHost, ws: &Workspace, sync_name: &str, key: &str) -> Result<TestReport, String> {
    let p = prepare(host, ws, sync_name).await.map_err(|e| e.0)?;
    let tmp_dir = ws.state_dir.join("tmp");
    std::fs::create_dir_all(&tmp_dir).map_err(|e| format!("creating {}: {e}", tmp_dir.display()))?;
    let source = SourceInstance::open(host, &p.source_plugin, &p.source.grants, p.source.limits, &p.source.config_json, &p.model.query)
        .await
        .map_err(|e| open_error(&p, &p.source, &e))?;
    let projection = Projection::new(&p, source.columns());
    let projection = match projection {
        Ok(pr) => pr,
        Err(e) => {
            source.close().await;
            return Err(e);
        }
    };
    let mut spill = crate::diff::ModelSpill::new(&tmp_dir, crate::diff::DEFAULT_MEMORY_BUDGET).map_err(|e| e.to_string())?;
    read_model(spawn_reader(source), &p, &projection, &mut spill).await.map_err(|e| e.0)?;
    let mut sorted = spill.into_sorted().map_err(|e| e.to_string())?;
    let mut found = None;
    while let Some(entry) = sorted.next_entry().map_err(|e| e.to_string())? {
        if key_text(&entry.key) == key {
            found = Some((entry.row, entry.key));
            break;
        }
    }
    let (row, encoded_key) = found.ok_or_else(|| format!("model {} has no row with {} = {key}", p.model.name, p.model.primary_key.join("|")))?;
    let op = operation_for(p.sync.mode, Change::Added).unwrap_or(Operation::Insert);
    let mut columns = projection.columns.clone();
    let payload = if op == Operation::Append {
        columns.push(Column { name: p.sync.event_id_field.clone(), value_type: backflow_plugin_sdk::ValueType::Text, nullable: false });
        with_event_id(&row, &p.sync.name, &encoded_key)
    } else {
        row.clone()
    };
    let context = SyncContext { sync_name: p.sync.name.clone(), primary_key: primary_key_fields(&p), run_id: "test".into() };
    let mut writer = match &p.destination_plugin {
        None => Writer::Noop,
        Some(plugin) => Writer::Wasm(
            DestinationInstance::open(host, plugin, &p.destination.grants, p.destination.limits, &p.destination.config_json, &context)
                .await
                .map_err(|e| open_error(&p, &p.destination, &e))?,
        ),
    };
    let mut b = BatchBuilder::new(columns.clone());
    b.push_encoded_row(&payload);
    let answer = writer.write(op, b.finish()).await;
    let _ = writer.finish().await;
    let (outcome, message) = match answer {
        Ok(mut outcomes) => match outcomes.pop() {
            Some(RowOutcome::Accepted) => ("accepted", None),
            Some(RowOutcome::Rejected(m)) => ("rejected", Some(m)),
            Some(RowOutcome::Retryable(m)) => ("retryable", Some(m)),
            None => ("error", Some("the destination returned no outcome".to_string())),
        },
        Err(e) => ("error", Some(e.to_string())),
    };
    Ok(TestReport { sync: sync_name.into(), key: key.into(), operation: op, row: row_json(&columns, &payload), outcome: outcome.into(), message })
}
