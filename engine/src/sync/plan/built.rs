//! The plan a run builds ([`Plan`]: one file per change, the diff's counts and the plan's
//! fingerprint) and the options it is built with ([`PlanOptions`]).

use super::file::PlanReader;
use crate::domain::{bump, operation_for, Change, DiffCounts, OpCounts};
use crate::sync::field_rules::PayloadRules;
use crate::workspace::FieldRules;
use crate::workspace::SyncMode;
use backflow_plugin_sdk::codec::{read_array_len, read_value};
use backflow_plugin_sdk::Column;
use std::io::Seek;

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
    /// Rows the model returned (0 for an undo's plan, which reads no model).
    pub model_rows: u64,
    /// Rows in the sync's snapshot when planning (0 when the snapshot was ignored because
    /// the primary key or destination changed since the last delivery).
    pub snapshot_rows: u64,
    /// How many rows each change holds: added, changed, removed, unchanged (and, for a full
    /// resync, refused deletes cleared from the state).
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
    pub(crate) files: [std::fs::File; 4],
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

    /// Up to `n` planned rows of a change, as JSON objects (before/after for changes), as
    /// they will be sent: the fields the sync's field rules leave out are not in them.
    pub fn samples(
        &self,
        change: Change,
        n: usize,
        rules: &FieldRules,
    ) -> std::io::Result<Vec<serde_json::Value>> {
        let mut reader = self.rows(change)?;
        let mut out = Vec::new();
        while out.len() < n {
            let Some(row) = reader.next()? else { break };
            let sent = || {
                let (columns, keys) = (&self.columns, &self.key_columns);
                sent_json(rules, columns, keys, change, &row.row, &row.before)
            };
            out.push(match change {
                Change::Added => sent(),
                Change::Changed => serde_json::json!({"key": row.key_text(), "before": row_json(&self.columns, &row.before), "after": sent()}),
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

/// A planned (or delivered) row as the JSON object its payload was: the fields `rules` leave
/// out of a row of `change` (with `before`, the snapshot's row, for a change) are not in it.
/// What plans, dry runs, approval samples and `rows history` show.
pub(crate) fn sent_json(
    rules: &FieldRules,
    columns: &[Column],
    key_columns: &[Column],
    change: Change,
    row: &[u8],
    before: &[u8],
) -> serde_json::Value {
    let mut sent = row_json(columns, row);
    let present = PayloadRules::new(rules, columns, key_columns).present(change, row, before);
    if let (Some(present), serde_json::Value::Object(fields)) = (present, &mut sent) {
        for (c, present) in columns.iter().zip(present) {
            if !present {
                fields.remove(&c.name);
            }
        }
    }
    sent
}
