//! Drift: what the destination holds now against what backflow sent (the snapshot). The
//! snapshot is walked in key order, one batch of keys at a time (bounded memory, whatever its
//! size), each batch read back from the destination (`writer.read`, contract 0.3.0, paced by
//! the sync's rate limit) and compared field by field under the destination's field names:
//!
//! - **missing**: a row backflow delivered that the destination does not have;
//! - **differing**: a row whose fields differ from what was sent (each field named);
//! - **deleted but present**: a row a run deleted that the destination still holds. The
//!   snapshot keeps no tombstones, so these come from the changelogs still kept (`[state]
//!   keep_changelog_runs`): deletes of older runs are not detected, and the report says so.
//!
//! Read-only: nothing is written to the destination or the state. A reconcile
//! ([`reconcile`]) walks the same way and turns each finding into a planned row.

pub(crate) mod compare;
mod read_back;
pub mod reconcile;

pub use compare::FieldDrift;

use crate::domain::{Delivered, RowChange};
use crate::host::{PluginHost, SourceInstance};
use crate::state::StateStore;
use crate::sync::plan::{key_text, snapshot_is_valid};
use crate::sync::prepare::{open_error, PrepareError, PreparedSync};
use crate::sync::read::Projection;
use crate::workspace::Workspace;
use backflow_plugin_sdk::codec::{read_array_len, read_value};
use backflow_plugin_sdk::warehouse::Held;
use backflow_plugin_sdk::{BatchBuilder, Column, Value};
use read_back::ReadBack;
use std::collections::BTreeMap;

/// Keys shown per kind of drift in a report.
const EXAMPLES: usize = 20;

/// Why a drift report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// The sync could not be prepared (unknown, invalid, plugins missing).
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The destination's plugin cannot read back.
    #[error("sync {sync}: destination {destination} (plugin {plugin}) cannot read back what it holds: its plugin does not declare the read-back capability (contract 0.3.0), so drift cannot be measured")]
    CannotRead {
        /// The sync.
        sync: String,
        /// The destination's name.
        destination: String,
        /// The destination's plugin.
        plugin: String,
    },
    /// The snapshot is of another key or destination.
    #[error("sync {0}: the primary key or destination changed since the last delivery, so the snapshot says nothing about what the destination holds; run the sync first")]
    StaleSnapshot(String),
    /// The model's columns could not be read or mapped.
    #[error("{0}")]
    Model(String),
    /// The destination failed to open or to answer a read.
    #[error("{0}")]
    Destination(String),
    /// The state could not be read (or, for a reconcile, the plan written).
    #[error(transparent)]
    Run(#[from] crate::sync::run::Abort),
}

impl From<crate::state::StateError> for DriftError {
    fn from(e: crate::state::StateError) -> Self {
        DriftError::Run(e.into())
    }
}

/// What part of the snapshot a report checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct DriftOptions {
    /// Check about this many keys, spread evenly over the snapshot; all when `None`.
    pub sample: Option<u64>,
}

/// One row whose fields differ.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DifferingRow {
    /// The row's key, as text (`42`, or `42|eu`).
    pub key: String,
    /// The fields that differ.
    pub fields: Vec<FieldDrift>,
}

/// The first rows of each kind of drift.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DriftExamples {
    /// Keys of rows missing at the destination.
    pub missing: Vec<String>,
    /// Rows whose fields differ, with the fields.
    pub differing: Vec<DifferingRow>,
    /// Keys of rows backflow deleted that the destination still holds.
    pub deleted_present: Vec<String>,
}

/// A drift report: counts of each kind of drift, the fields that differ, examples.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DriftReport {
    /// The sync.
    pub sync: String,
    /// Its destination.
    pub destination: String,
    /// Rows in the snapshot (what backflow believes the destination holds).
    pub snapshot_rows: u64,
    /// Snapshot rows checked (all of them, or the sample).
    pub checked: u64,
    /// The sample asked for, if any.
    pub sample: Option<u64>,
    /// Checked rows the destination holds as sent.
    pub in_sync: u64,
    /// Checked rows missing at the destination.
    pub missing: u64,
    /// Checked rows whose fields differ.
    pub differing: u64,
    /// Differing rows per field (destination field name → rows).
    pub fields: BTreeMap<String, u64>,
    /// Rows deleted by runs whose changelog is kept that the destination still holds.
    pub deleted_present: u64,
    /// Deleted rows checked (from the changelogs kept).
    pub deletes_checked: u64,
    /// Runs whose changelog was searched for deletes.
    pub changelog_runs: u64,
    /// Examples of each kind (at most 20 each).
    pub examples: DriftExamples,
    /// What the report does and does not detect.
    pub notes: Vec<String>,
}

impl DriftReport {
    /// Rows drifted, of every kind.
    pub fn total(&self) -> u64 {
        self.missing + self.differing + self.deleted_present
    }
}

/// One finding of a drift walk, for a reconcile to plan.
pub(crate) enum Finding<'a> {
    /// Delivered, missing at the destination.
    Missing { key: &'a [u8], sent: &'a Delivered },
    /// Delivered, some fields differ.
    Differs { key: &'a [u8], sent: &'a Delivered },
    /// Deleted by a run, still at the destination (`before`: the row before the delete).
    StillPresent { key: &'a [u8], before: &'a [u8] },
}

/// What a finding handler does with it (a reconcile writes plan frames).
pub(crate) type OnFinding<'f> =
    dyn FnMut(Finding<'_>) -> Result<(), crate::sync::run::Abort> + Send + 'f;

/// Measures the drift of a sync: reads the destination back for the snapshot's keys (all, or
/// a sample) and compares. Read-only.
pub async fn drift_report(
    host: &crate::plugins::Registry,
    ws: &Workspace,
    state: &StateStore,
    sync: &str,
    options: DriftOptions,
) -> Result<DriftReport, DriftError> {
    let p = crate::sync::prepare::prepare(host, ws, sync).await?;
    let report = walk(host, ws, state, &p, options, &mut |_| Ok(())).await?;
    crate::metrics::record_drift(&report);
    Ok(report)
}

/// The destination's columns of the sync (after the mapping) and of its key.
async fn columns(
    host: &PluginHost,
    p: &PreparedSync,
) -> Result<(Vec<Column>, Vec<Column>), DriftError> {
    let source = SourceInstance::open(
        host,
        &p.source_plugin,
        &p.source.grants,
        p.source.limits,
        &p.source.config_json,
        &p.model.query,
    )
    .await
    .map_err(|e| DriftError::Model(open_error(p, &p.source, &e)))?;
    let projection = Projection::new(p, source.columns());
    source.close().await;
    let projection = projection.map_err(|e| DriftError::Model(e.to_string()))?;
    Ok((projection.columns, projection.key_columns))
}

/// Decodes an encoded row (a MessagePack array of values).
pub(crate) fn decode_row(row: &[u8]) -> Option<Vec<Value>> {
    let mut rest = row;
    let n = read_array_len(&mut rest).ok()?;
    (0..n.min(rest.len()))
        .map(|_| read_value(&mut rest).ok())
        .collect()
}

/// Walks the snapshot (and the kept changelogs' deletes), reading the destination back,
/// counting drift into a report and handing each finding to `on`.
pub(crate) async fn walk(
    host: &PluginHost,
    ws: &Workspace,
    state: &StateStore,
    p: &PreparedSync,
    options: DriftOptions,
    on: &mut OnFinding<'_>,
) -> Result<DriftReport, DriftError> {
    if !snapshot_is_valid(state, p)? {
        return Err(DriftError::StaleSnapshot(p.sync.name.clone()));
    }
    let mut reader = ReadBack::open(host, p, "drift").await?;
    let result = walk_with(&mut reader, host, ws, state, p, options, on).await;
    reader.close().await;
    result
}

async fn walk_with(
    reader: &mut ReadBack,
    host: &PluginHost,
    ws: &Workspace,
    state: &StateStore,
    p: &PreparedSync,
    options: DriftOptions,
    on: &mut OnFinding<'_>,
) -> Result<DriftReport, DriftError> {
    let (columns, key_columns) = columns(host, p).await?;
    // `write = "if_empty"` fields: where the destination holds a value, its value wins.
    let if_empty: Vec<String> = p
        .sync
        .field_rules
        .if_empty_fields()
        .map(|r| r.to.clone())
        .collect();
    let compared = Compared {
        columns: &columns,
        key_columns: &key_columns,
        if_empty: &if_empty,
    };
    let snapshot_rows = state.snapshot_len(&p.state_key)?;
    let mut report = DriftReport {
        sync: p.sync.name.clone(),
        destination: p.destination.name.clone(),
        snapshot_rows,
        sample: options.sample,
        ..Default::default()
    };
    let batch = (p.batch_size as usize).clamp(1, 500);
    // A sample takes every `stride`-th key: spread over the whole key range.
    let stride = match options.sample {
        Some(n) if n > 0 && n < snapshot_rows => snapshot_rows.div_ceil(n),
        _ => 1,
    };
    let limit = options.sample.unwrap_or(u64::MAX);
    let (mut after, mut seen) = (None::<Vec<u8>>, 0u64);
    let (mut key_buf, mut entries) = (Vec::new(), Vec::new());
    loop {
        key_buf.clear();
        entries.clear();
        let next = state.snapshot_chunk_into(
            &p.state_key,
            after.as_deref(),
            batch,
            &mut key_buf,
            &mut entries,
        )?;
        let mut start = 0;
        let mut keys: Vec<&[u8]> = Vec::with_capacity(entries.len());
        for (end, _) in &entries {
            if seen % stride == 0 && report.checked + (keys.len() as u64) < limit {
                keys.push(&key_buf[start..*end]);
            }
            seen += 1;
            start = *end;
        }
        if !keys.is_empty() {
            let sent = state.snapshot_entries(&p.state_key, &keys)?;
            compare_batch(reader, &compared, &keys, &sent, &mut report, on).await?;
        }
        match next {
            Some(n) if report.checked < limit => after = Some(n),
            _ => break,
        }
    }
    deleted_still_present(reader, ws, state, p, &key_columns, &mut report, on).await?;
    report.notes.push(match options.sample {
        Some(n) if n < snapshot_rows => format!(
            "a sample of {} of {snapshot_rows} delivered rows (every {stride}th key) was compared",
            report.checked
        ),
        _ => format!("all {} delivered rows were compared", report.checked),
    });
    report.notes.push(format!(
        "rows deleted by the last {} runs with a kept changelog ([state] keep_changelog_runs = {}) were checked; deletes by older runs are not detected (the snapshot keeps no record of deleted rows)",
        report.changelog_runs, ws.keep_changelog_runs
    ));
    Ok(report)
}

/// What a batch is compared on: the sync's destination fields, its key's, and its
/// `if_empty` fields (not compared where the destination holds a value).
struct Compared<'a> {
    columns: &'a [Column],
    key_columns: &'a [Column],
    if_empty: &'a [String],
}

/// Reads one batch of delivered keys back and compares each with what was sent.
async fn compare_batch(
    reader: &mut ReadBack,
    Compared {
        columns,
        key_columns,
        if_empty,
    }: &Compared<'_>,
    keys: &[&[u8]],
    sent: &[Option<Delivered>],
    report: &mut DriftReport,
    on: &mut OnFinding<'_>,
) -> Result<(), DriftError> {
    let mut builder = BatchBuilder::new(key_columns.to_vec());
    for key in keys {
        builder.push_encoded_row(key);
    }
    let answer = reader.read(builder.finish()).await?;
    let found = compare::records_of(&answer.rows, answer.present.as_deref())
        .map_err(DriftError::Destination)?;
    for ((key, sent), held) in keys.iter().zip(sent).zip(&answer.held) {
        // Gone from the snapshot between the chunk and this read (a run committed): skip.
        let Some(sent) = sent else { continue };
        report.checked += 1;
        let record = match held {
            Held::Absent => None,
            Held::Present(i) => Some(found.get(*i as usize).ok_or_else(|| {
                DriftError::Destination(format!(
                    "the destination's answer names record {i}, and holds {} records",
                    found.len()
                ))
            })?),
        };
        let Some(record) = record else {
            report.missing += 1;
            if report.examples.missing.len() < EXAMPLES {
                report.examples.missing.push(key_text(key));
            }
            on(Finding::Missing { key, sent })?;
            continue;
        };
        let values = decode_row(&sent.row).filter(|v| v.len() == columns.len());
        let Some(values) = values else {
            return Err(DriftError::Model(format!(
                "the row {} was delivered with other fields than the sync maps now; run the sync first, then measure drift",
                key_text(key)
            )));
        };
        let destination_wins: Vec<String> = if_empty
            .iter()
            .filter(|f| record.get(*f).is_some_and(|v| !compare::is_empty(v)))
            .cloned()
            .collect();
        let fields = compare::differing_fields(columns, &values, record, &destination_wins);
        if fields.is_empty() {
            report.in_sync += 1;
            continue;
        }
        report.differing += 1;
        for f in &fields {
            *report.fields.entry(f.field.clone()).or_default() += 1;
        }
        if report.examples.differing.len() < EXAMPLES {
            report.examples.differing.push(DifferingRow {
                key: key_text(key),
                fields: fields.clone(),
            });
        }
        on(Finding::Differs { key, sent })?;
    }
    Ok(())
}

/// Checks the rows deleted by runs whose changelog is kept (and not delivered again since):
/// those the destination still holds are counted.
async fn deleted_still_present(
    reader: &mut ReadBack,
    ws: &Workspace,
    state: &StateStore,
    p: &PreparedSync,
    key_columns: &[Column],
    report: &mut DriftReport,
    on: &mut OnFinding<'_>,
) -> Result<(), DriftError> {
    // Newest run first: the newest delete of a key is the one kept.
    let mut deleted: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let runs = state.runs(Some(&p.sync.name), 10_000)?;
    for run in &runs {
        if report.changelog_runs >= ws.keep_changelog_runs {
            break;
        }
        if state.changelog_header(&p.state_key, &run.run_id)?.is_none() {
            continue;
        }
        report.changelog_runs += 1;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let (chunk, more) =
                state.changelog_chunk(&p.state_key, &run.run_id, after.as_deref(), 4096)?;
            for (key, change) in chunk {
                if let RowChange::Deleted { before } = change {
                    deleted.entry(key).or_insert(before.row);
                }
            }
            match more {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    let batch = (p.batch_size as usize).clamp(1, 500);
    let all: Vec<(Vec<u8>, Vec<u8>)> = deleted.into_iter().collect();
    for chunk in all.chunks(batch) {
        let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| k.as_slice()).collect();
        // Delivered again since: in the snapshot, compared there.
        let now = state.snapshot_entries(&p.state_key, &keys)?;
        let gone: Vec<&(Vec<u8>, Vec<u8>)> = chunk
            .iter()
            .zip(now)
            .filter(|(_, now)| now.is_none())
            .map(|(d, _)| d)
            .collect();
        if gone.is_empty() {
            continue;
        }
        let mut builder = BatchBuilder::new(key_columns.to_vec());
        for (key, _) in &gone {
            builder.push_encoded_row(key);
        }
        let answer = reader.read(builder.finish()).await?;
        for ((key, before), held) in gone.iter().zip(&answer.held) {
            report.deletes_checked += 1;
            if let Held::Present(_) = held {
                report.deleted_present += 1;
                if report.examples.deleted_present.len() < EXAMPLES {
                    report.examples.deleted_present.push(key_text(key));
                }
                on(Finding::StillPresent { key, before })?;
            }
        }
    }
    Ok(())
}
