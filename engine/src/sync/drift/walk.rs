//! The drift walk: the snapshot in key batches, each read back from the destination and
//! compared; then the deletes of the kept changelogs. Findings go to a handler (a reconcile
//! plans them).

use super::compare;
use super::read_back::ReadBack;
use super::report::{DifferingRow, DriftError, DriftOptions, DriftReport};
use crate::domain::{Delivered, RowChange};
use crate::host::{PluginHost, SourceInstance};
use crate::state::StateStore;
use crate::sync::plan::{key_text, snapshot_is_valid};
use crate::sync::prepare::{open_error, PreparedSync};
use crate::sync::read::Projection;
use crate::workspace::{NullRule, Workspace, WriteRule};
use backflow_plugin_sdk::codec::{read_array_len, read_value};
use backflow_plugin_sdk::warehouse::Held;
use backflow_plugin_sdk::{BatchBuilder, Column, Value};
use std::collections::BTreeMap;

/// Keys shown per kind of drift in a report.
const EXAMPLES: usize = 20;

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
    report.record_metrics();
    Ok(report)
}

/// The destination's columns of the sync (after the mapping) and of its key.
pub(crate) async fn columns(
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
    if crate::sync::warehouse::in_warehouse(p) {
        // The engine keeps no snapshot of this sync: an empty one would read as "no drift".
        return Err(DriftError::Run(crate::sync::warehouse::no_reconcile(p)));
    }
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
    // `write = "if_empty"` and `"on_insert"` fields: where the destination holds a value,
    // its value wins (it was never meant to be overwritten). `null = "skip"` fields: a null
    // in the model was never sent, so whatever the destination holds is not drift.
    let rules = &p.sync.field_rules.fields;
    let if_empty: Vec<String> = rules
        .values()
        .filter(|r| matches!(r.write, WriteRule::IfEmpty | WriteRule::OnInsert))
        .map(|r| r.to.clone())
        .collect();
    let skip_null: Vec<String> = rules
        .values()
        .filter(|r| r.null == NullRule::Skip)
        .map(|r| r.to.clone())
        .collect();
    let compared = Compared {
        columns: &columns,
        key_columns: &key_columns,
        if_empty: &if_empty,
        skip_null: &skip_null,
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
    /// `null = "skip"` fields (not compared where the model's value is null).
    skip_null: &'a [String],
}

/// Reads one batch of delivered keys back and compares each with what was sent.
async fn compare_batch(
    reader: &mut ReadBack,
    Compared {
        columns,
        key_columns,
        if_empty,
        skip_null,
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
    let found = compare::records_of(&answer.rows, answer.present.as_deref()).map_err(|e| {
        DriftError::Destination(format!("the destination's answer is undecodable: {e}"))
    })?;
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
        let mut destination_wins: Vec<String> = if_empty
            .iter()
            .filter(|f| record.get(*f).is_some_and(|v| !compare::is_empty(v)))
            .cloned()
            .collect();
        destination_wins.extend(
            columns
                .iter()
                .zip(&values)
                .filter(|(c, v)| matches!(v, Value::Null) && skip_null.contains(&c.name))
                .map(|(c, _)| c.name.clone()),
        );
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
