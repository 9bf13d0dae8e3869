//! Running a sync: prepare (resolve and check plugins and config), plan (read the model
//! through the source into an on-disk plan), deliver (send the plan through the destination
//! in batches, with retries), record (run history).
//!
//! Nothing is sent before the whole plan exists: the source is read to the end first, so a
//! source failure or a bad key stops the run before the first write. The plan lives in a
//! temporary file, so memory stays bounded whatever the model's size.

use crate::config::{Connector, Model, Sync, SyncMode, Workspace};
use crate::host::{expect_kind, CallError, DestinationInstance, Plugin, PluginHost, SourceInstance};
use crate::state::{OpCounts, PluginHashes, Timings, RejectedRow, RunRecord, RunStatus, StateStore, MAX_REJECTED_KEPT};
use backflow_plugin_sdk::codec::{read_array_len, read_value, value_len, write_row_header};
use backflow_plugin_sdk::{Batch, BatchBuilder, Column, Operation, PluginError, PluginKind, RowOutcome, SyncContext};
use sha2::{Digest, Sha256};
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::time::{Duration, Instant};

/// Rows asked of the source per call.
const SOURCE_BATCH_ROWS: u32 = 8192;
/// Default rows per destination call when neither the sync nor the destination says.
const DEFAULT_BATCH_SIZE: u32 = 500;
/// Attempts per batch for retryable failures before its rows count as failed.
const MAX_ATTEMPTS: u32 = 5;
/// The native destination used to measure the Wasm boundary's cost.
pub const BUILTIN_NOOP: &str = "builtin:noop";

/// Who started a run and why.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub trigger: String,
    pub user: String,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { trigger: "manual".into(), user: std::env::var("BACKFLOW_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "unknown".into()) }
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
}

/// Resolves plugins, checks their kinds and configs and the sync's mode against the
/// destination's operations. Every problem names the file and key to fix.
pub async fn prepare(host: &PluginHost, ws: &Workspace, sync_name: &str) -> Result<PreparedSync, PrepareError> {
    let sync = ws.sync(sync_name).map_err(PrepareError)?.clone();
    let model = ws.models[&sync.model].clone();
    let source = ws.sources[&model.source].clone();
    let destination = ws.destinations[&sync.destination].clone();

    let load = |c: &Connector| {
        let c = c.clone();
        async move {
            crate::plugins::resolve(host, &ws.root, &ws.plugins_dir, &c.plugin)
                .await
                .map_err(|e| PrepareError(format!("{}: {}: {e:#}", c.origin.file.display(), c.origin.key("plugin"))))
        }
    };
    let source_plugin = load(&source).await?;
    expect_kind(&source_plugin, PluginKind::Source).map_err(|e| PrepareError(format!("{}: {}: {e}", source.origin.file.display(), source.origin.key("plugin"))))?;
    check_plugin_config(host, &source_plugin, &source).await?;

    let (destination_plugin, operations, max_batch) = if destination.plugin == BUILTIN_NOOP {
        (None, vec![Operation::Insert, Operation::Update, Operation::Delete, Operation::Append], 0)
    } else {
        let p = load(&destination).await?;
        expect_kind(&p, PluginKind::Destination)
            .map_err(|e| PrepareError(format!("{}: {}: {e}", destination.origin.file.display(), destination.origin.key("plugin"))))?;
        check_plugin_config(host, &p, &destination).await?;
        let ops = p.spec.operations.clone();
        let max = p.spec.max_batch_size;
        (Some(p), ops, max)
    };
    let missing: Vec<&str> = sync.mode.operations().iter().filter(|op| !operations.contains(op)).map(|op| op.as_str()).collect();
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

    let config_hash = {
        let mut h = Sha256::new();
        for part in [
            format!("{:?}|{:?}|{:?}|{:?}", sync.mode, sync.mapping, sync.batch_size, sync.destination),
            format!("{:?}|{:?}|{:?}", model.query, model.primary_key, model.source),
            source.config_json.clone(),
            destination.config_json.clone(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    };
    Ok(PreparedSync { sync, model, source, destination, source_plugin, destination_plugin, batch_size, config_hash })
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
        Ok(Projection { source_index, key_index, columns, source_width: model_columns.len() })
    }
}

/// Reasons a run stops early.
#[derive(Debug)]
struct Abort(String);

/// Counters and rejected rows gathered during a run.
#[derive(Default)]
struct Tally {
    planned: OpCounts,
    delivered: OpCounts,
    failed: OpCounts,
    rejected: Vec<RejectedRow>,
    timings: Timings,
}

/// Runs a sync end to end and records it. Returns the record even when the run failed; an
/// `Err` means the run could not start (nothing was read or written, nothing recorded).
pub async fn run_sync(host: &PluginHost, ws: &Workspace, state: &StateStore, sync_name: &str, options: &RunOptions) -> Result<RunRecord, PrepareError> {
    let started_at = now_rfc3339();
    let clock = Instant::now();
    let prepared = prepare(host, ws, sync_name).await?;
    let run_id = ulid::Ulid::new().to_string();
    tracing::info!(sync = sync_name, run_id, "run started");
    let mut tally = Tally::default();
    let outcome = execute(host, ws, &prepared, &run_id, &mut tally).await;
    let status = match &outcome {
        Err(_) => RunStatus::Failed,
        Ok(()) if tally.failed.total() > 0 => RunStatus::Partial,
        Ok(()) => RunStatus::Succeeded,
    };
    let record = RunRecord {
        run_id,
        sync: sync_name.to_string(),
        trigger: options.trigger.clone(),
        user: options.user.clone(),
        started_at,
        finished_at: now_rfc3339(),
        duration_ms: clock.elapsed().as_millis() as u64,
        timings: tally.timings,
        status,
        planned: tally.planned,
        delivered: tally.delivered,
        failed: tally.failed,
        plugins: PluginHashes {
            source: prepared.source_plugin.hash.clone(),
            destination: prepared.destination_plugin.as_ref().map(|p| p.hash.clone()).unwrap_or_else(|| BUILTIN_NOOP.into()),
        },
        config_hash: prepared.config_hash.clone(),
        error: outcome.err().map(|a| a.0),
        rejected: tally.rejected,
    };
    state.record_run(&record).map_err(|e| PrepareError(e.to_string()))?;
    tracing::info!(sync = sync_name, run_id = record.run_id, status = record.status.as_str(), delivered = record.delivered.total(), failed = record.failed.total(), "run finished");
    Ok(record)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

async fn execute(host: &PluginHost, ws: &Workspace, p: &PreparedSync, run_id: &str, tally: &mut Tally) -> Result<(), Abort> {
    // Plan: read the whole model into a temporary file before anything is sent.
    let tmp_dir = ws.state_dir.join("tmp");
    std::fs::create_dir_all(&tmp_dir).map_err(|e| Abort(format!("creating {}: {e}", tmp_dir.display())))?;
    let mut plan_file = tempfile::tempfile_in(&tmp_dir).map_err(|e| Abort(format!("creating a plan file in {}: {e}", tmp_dir.display())))?;
    let plan_started = Instant::now();
    let projection = {
        let mut source = SourceInstance::open(host, &p.source_plugin, &p.source.grants, p.source.limits, &p.source.config_json, &p.model.query)
            .await
            .map_err(|e| Abort(format!("source {} could not open model {}: {e}", p.source.name, p.model.name)))?;
        let projection = Projection::new(p, source.columns()).map_err(Abort)?;
        let result = plan(&mut source, p, &projection, &mut plan_file, tally).await;
        source.close().await;
        result?;
        projection
    };
    tally.timings.plan_ms = plan_started.elapsed().as_millis() as u64;
    tracing::debug!(rows = tally.planned.added, ms = tally.timings.plan_ms, "plan complete");
    let deliver_started = Instant::now();
    let op = match p.sync.mode {
        SyncMode::Update => None,
        SyncMode::Append => Some(Operation::Append),
        SyncMode::Upsert | SyncMode::Insert | SyncMode::Mirror => Some(Operation::Insert),
    };
    let Some(op) = op else {
        // Without a snapshot every row is new, and `update` sends only changes.
        tally.planned = OpCounts::default();
        return Ok(());
    };
    if tally.planned.added == 0 {
        return Ok(());
    }

    // Deliver.
    plan_file.rewind().map_err(|e| Abort(format!("reading the plan file: {e}")))?;
    let context = SyncContext { sync_name: p.sync.name.clone(), primary_key: primary_key_fields(p), run_id: run_id.to_string() };
    let mut writer = match &p.destination_plugin {
        None => Writer::Noop,
        Some(plugin) => Writer::Wasm(
            DestinationInstance::open(host, plugin, &p.destination.grants, p.destination.limits, &p.destination.config_json, &context)
                .await
                .map_err(|e| Abort(format!("destination {} could not open: {e}", p.destination.name)))?,
        ),
    };
    let mut reader = PlanReader::new(&plan_file);
    let mut progress = Progress::new("delivered", tally.planned.added);
    loop {
        let mut rows = Vec::with_capacity(p.batch_size as usize);
        while rows.len() < p.batch_size as usize {
            match reader.next().map_err(|e| Abort(format!("reading the plan file: {e}")))? {
                Some(row) => rows.push(row),
                None => break,
            }
        }
        if rows.is_empty() {
            break;
        }
        let n = rows.len() as u64;
        deliver(&mut writer, op, &projection.columns, rows, p, tally).await?;
        progress.advance(n);
    }
    writer.finish().await.map_err(|e| Abort(format!("destination {} failed to finish: {e}", p.destination.name)))?;
    tally.timings.deliver_ms = deliver_started.elapsed().as_millis() as u64;
    tracing::debug!(rows = tally.delivered.added, ms = tally.timings.deliver_ms, "delivery complete");
    Ok(())
}

fn primary_key_fields(p: &PreparedSync) -> Vec<String> {
    p.model
        .primary_key
        .iter()
        .map(|k| p.sync.mapping.iter().find(|(from, _)| from == k).map(|(_, to)| to.clone()).unwrap_or_else(|| k.clone()))
        .collect()
}

/// Reads every batch from the source, projects rows to destination fields, checks keys, and
/// appends `[key][row]` frames to the plan file.
async fn plan(source: &mut SourceInstance, p: &PreparedSync, projection: &Projection, file: &mut std::fs::File, tally: &mut Tally) -> Result<(), Abort> {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(projection.source_width);
    let mut row_buf = Vec::with_capacity(256);
    let mut key_buf = Vec::with_capacity(64);
    let mut null_keys: Vec<u64> = Vec::new();
    let mut row_number: u64 = 0;
    let mut progress = Progress::new("read", 0);
    loop {
        let batch = source
            .next_batch(SOURCE_BATCH_ROWS)
            .await
            .map_err(|e| Abort(format!("source {} failed reading model {} after {row_number} rows: {e}", p.source.name, p.model.name)))?;
        let Some(batch) = batch else { break };
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
            for &k in &projection.key_index {
                let (a, b) = spans[k];
                if payload[a] == 0xc0 {
                    if null_keys.len() < 10 {
                        null_keys.push(row_number);
                    }
                }
                key_buf.extend_from_slice(&payload[a..b]);
            }
            row_buf.clear();
            write_row_header(&mut row_buf, projection.source_index.len() as u32);
            for &i in &projection.source_index {
                let (a, b) = spans[i];
                row_buf.extend_from_slice(&payload[a..b]);
            }
            let io = |e: std::io::Error| Abort(format!("writing the plan file: {e}"));
            out.write_all(&(key_buf.len() as u32).to_le_bytes()).map_err(io)?;
            out.write_all(&key_buf).map_err(io)?;
            out.write_all(&(row_buf.len() as u32).to_le_bytes()).map_err(io)?;
            out.write_all(&row_buf).map_err(io)?;
            tally.planned.added += 1;
        }
        progress.advance(count as u64);
    }
    out.flush().map_err(|e| Abort(format!("writing the plan file: {e}")))?;
    if !null_keys.is_empty() {
        tally.planned = OpCounts::default();
        return Err(Abort(format!(
            "model {} has rows with a NULL primary key ({}) at rows {}; nothing was sent",
            p.model.name,
            p.model.primary_key.join(", "),
            null_keys.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// One planned row: its encoded key (a MessagePack array) and its encoded mapped row.
struct PlannedRow {
    key: Vec<u8>,
    row: Vec<u8>,
}

impl PlannedRow {
    /// The key as text: `42`, or `42|eu` for composite keys.
    fn key_text(&self) -> String {
        let mut rest = self.key.as_slice();
        let n = read_array_len(&mut rest).unwrap_or(0);
        (0..n).map(|_| read_value(&mut rest).map(|v| v.to_string()).unwrap_or_else(|_| "?".into())).collect::<Vec<_>>().join("|")
    }
}

struct PlanReader<'a> {
    input: BufReader<&'a std::fs::File>,
}

impl<'a> PlanReader<'a> {
    fn new(file: &'a std::fs::File) -> PlanReader<'a> {
        PlanReader { input: BufReader::with_capacity(1 << 20, file) }
    }

    fn frame(&mut self) -> std::io::Result<Option<Vec<u8>>> {
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
        let Some(key) = self.frame()? else { return Ok(None) };
        let row = self.frame()?.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "plan file truncated"))?;
        Ok(Some(PlannedRow { key, row }))
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

fn build_batch(columns: &[Column], rows: &[PlannedRow]) -> Batch {
    let bytes: usize = rows.iter().map(|r| r.row.len()).sum();
    let mut b = BatchBuilder::with_capacity(columns.to_vec(), bytes + 8);
    for r in rows {
        b.push_encoded_row(&r.row);
    }
    b.finish()
}

/// Sends one batch, retrying retryable failures with exponential backoff, isolating rows the
/// destination names as bad, and counting every row as delivered or failed.
async fn deliver(writer: &mut Writer, op: Operation, columns: &[Column], rows: Vec<PlannedRow>, p: &PreparedSync, tally: &mut Tally) -> Result<(), Abort> {
    let change = "added";
    let mut pending = rows;
    let mut attempt = 0u32;
    let mut last_error = String::new();
    while !pending.is_empty() {
        if attempt >= MAX_ATTEMPTS {
            for row in &pending {
                reject(tally, row, change, format!("gave up after {MAX_ATTEMPTS} attempts: {last_error}"));
            }
            return Ok(());
        }
        attempt += 1;
        let batch = build_batch(columns, &pending);
        match writer.write(op, batch).await {
            Ok(outcomes) => {
                let mut retry = Vec::new();
                for (row, outcome) in pending.into_iter().zip(outcomes) {
                    match outcome {
                        RowOutcome::Accepted => tally.delivered.added += 1,
                        RowOutcome::Rejected(m) => reject(tally, &row, change, m),
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
                reject(tally, &row, change, bad.message);
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
                return Err(Abort(format!("destination {}: {}: {key}: {}", p.destination.name, p.destination.origin.file.display(), c.message)));
            }
            Err(e) => return Err(Abort(format!("destination {} failed: {e}", p.destination.name))),
        }
    }
    Ok(())
}

fn reject(tally: &mut Tally, row: &PlannedRow, change: &str, error: String) {
    tally.failed.added += 1;
    if tally.rejected.len() < MAX_REJECTED_KEPT {
        tally.rejected.push(RejectedRow { key: row.key_text(), change: change.into(), error });
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
