//! `write = "if_empty"` at delivery: before a batch of updates goes out, the destination is
//! read back for its keys (`writer.read`, contract 0.3.0), and each `if_empty` field is left
//! out of a row (an absent cell) where the destination already holds a value for it (not
//! absent, not null, not an empty string). A row the destination does not hold sends every
//! field. Inserts are not read: a row new to backflow is sent whole (but an update-mode
//! sync's new rows are updates of records the destination holds, so they are read).

use super::writer::Writer;
use crate::sync::field_rules::PayloadRules;
use crate::sync::plan::{Payload, PlannedRow};
use crate::sync::prepare::{primary_key_fields, PreparedSync};
use crate::workspace::WriteRule;
use backflow_plugin_sdk::warehouse::{present_bit, Held};
use backflow_plugin_sdk::{Batch, BatchBuilder, Column, PluginError, Value, ValueType};
use std::collections::HashMap;

/// Reading the destination back for `if_empty` failed: the batch's rows are not sent.
#[derive(Debug, thiserror::Error)]
#[error("write = \"if_empty\" needs what destination {destination} holds for these rows, and reading it back failed: {reason}; the rows were not sent")]
pub(crate) struct Unread {
    /// The destination's name.
    pub(crate) destination: String,
    /// Why the read failed.
    pub(crate) reason: String,
}

/// Tries of the read before the batch's rows are refused for this run.
const TRIES: u32 = 4;

/// Whether a batch with `columns` has `if_empty` fields, so its rows are read back first.
pub(crate) fn reads_back(p: &PreparedSync, columns: &[Column]) -> bool {
    columns
        .iter()
        .any(|c| p.sync.field_rules.rule(&c.name).1 == WriteRule::IfEmpty)
}

/// Leaves out of `rows` (updates, with `columns`) the `if_empty` fields the destination
/// already holds a value for. An error (the read failed) says why the rows cannot be sent
/// now: sending them would overwrite what `if_empty` protects.
pub(crate) async fn leave_out_filled(
    writer: &mut Writer,
    p: &PreparedSync,
    columns: &[Column],
    rows: &mut [PlannedRow],
) -> Result<(), Unread> {
    let fields: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| p.sync.field_rules.rule(&c.name).1 == WriteRule::IfEmpty)
        .map(|(i, _)| i)
        .collect();
    if fields.is_empty() || rows.is_empty() {
        return Ok(());
    }
    let key_columns: Vec<Column> = primary_key_fields(p)
        .iter()
        .map(|k| {
            columns
                .iter()
                .find(|c| &c.name == k)
                .cloned()
                .unwrap_or_else(|| Column::new(k.clone(), ValueType::Any))
        })
        .collect();
    let mut keys = BatchBuilder::new(key_columns);
    for row in rows.iter() {
        keys.push_encoded_row(&row.key);
    }
    let keys = keys.finish();
    let why = |reason: String| Unread {
        destination: p.destination.name.clone(),
        reason,
    };
    let mut attempt = 0;
    let answer = loop {
        attempt += 1;
        match writer.read(keys.clone()).await {
            Ok(Some(answer)) => break answer,
            Ok(None) => return Ok(()),
            Err(crate::host::CallError::Plugin(
                e @ (PluginError::Retryable { .. } | PluginError::RateLimited { .. }),
            )) if attempt < TRIES => {
                tracing::warn!(destination = %p.destination.name, attempt, "reading back for if_empty: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(500 << attempt)).await;
            }
            Err(e) => return Err(why(e.to_string())),
        }
    };
    if answer.held.len() != rows.len() {
        return Err(why(format!(
            "{} answers for {} keys",
            answer.held.len(),
            rows.len()
        )));
    }
    let records = records_of(&answer.rows, answer.present.as_deref())
        .map_err(|e| why(format!("its answer is undecodable: {e}")))?;
    for (row, held) in rows.iter_mut().zip(&answer.held) {
        let Held::Present(i) = held else { continue };
        let Some(record) = records.get(*i as usize) else {
            continue;
        };
        let filled: Vec<usize> = fields
            .iter()
            .copied()
            .filter(|f| record.get(&columns[*f].name).is_some_and(|v| !is_empty(v)))
            .collect();
        if filled.is_empty() {
            continue;
        }
        let mut present = row
            .present
            .clone()
            .unwrap_or_else(|| vec![true; columns.len()]);
        for f in filled {
            if let Some(cell) = present.get_mut(f) {
                *cell = false;
            }
        }
        row.payload = Payload::Built(PayloadRules::payload(&row.row, &present));
        row.present = Some(present);
    }
    Ok(())
}

/// The fields of one read-back record: name → value, absent fields left out.
pub(crate) type Record = HashMap<String, Value>;

/// The records of a read-back batch, by row, absent cells left out.
pub(crate) fn records_of(
    rows: &Batch,
    present: Option<&[u8]>,
) -> Result<Vec<Record>, backflow_plugin_sdk::CodecError> {
    let width = rows.columns.len();
    let decoded = rows.decode()?;
    Ok(decoded
        .into_iter()
        .enumerate()
        .map(|(r, values)| {
            rows.columns
                .iter()
                .zip(values)
                .enumerate()
                .filter(|(c, _)| present.is_none_or(|bits| present_bit(bits, width, r, *c)))
                .map(|(_, (col, v))| (col.name.clone(), v))
                .collect()
        })
        .collect())
}

/// Whether a destination value counts as no value (`write = "if_empty"`): null or "".
pub(crate) fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Text(t) => t.is_empty(),
        _ => false,
    }
}
