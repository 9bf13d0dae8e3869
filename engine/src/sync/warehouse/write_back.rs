//! The write-back of a warehouse-diff run: what the destination acknowledged goes to the
//! delivery journal the moment it says so (as in local mode), into a journal of its own
//! (`<state>/journal-warehouse/`, per snapshot table) that is never applied to the local
//! snapshot. After delivery the journal is replayed into the snapshot table through the
//! plugin's `write-back` (upserts by key, deletes by key: idempotent), the rest of its ops
//! (refusals, progress, changelog headers) into the state, and it is emptied. A run killed
//! before that leaves the journal; the next run of the sync replays it first, so nothing
//! acknowledged is lost and at most the batches in flight at the kill are sent again.

use super::table::{fingerprint_text, snapshot_table};
use crate::domain::JournalOp;
use crate::host::WarehouseInstance;
use crate::state::{StateStore, SyncMeta};
use crate::sync::commit::journal::{read_frame, Journal};
use crate::sync::prepare::PreparedSync;
use crate::sync::run::Abort;
use crate::workspace::Workspace;
use backflow_plugin_sdk::warehouse::WriteBack;
use backflow_plugin_sdk::{BatchBuilder, Column};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Journal ops per `write-back` call.
const WRITE_BACK_OPS: usize = 4096;

/// The columns of the rows a journal holds, written beside it before the first
/// acknowledgement, so a journal left by a killed run can be written back without its plan.
#[derive(Serialize, Deserialize)]
struct JournalColumns {
    /// The delivered row's fields; key fields under the model's key column names.
    columns: Vec<Column>,
    /// The model's key columns.
    keys: Vec<Column>,
}

fn journal_dir(ws: &Workspace) -> PathBuf {
    ws.state_dir.join("journal-warehouse")
}

fn journal_name(p: &PreparedSync) -> String {
    let t = snapshot_table(p);
    format!("{}.{}", t.schema, t.table)
}

fn columns_path(ws: &Workspace, p: &PreparedSync) -> PathBuf {
    Journal::path(&journal_dir(ws), &journal_name(p)).with_extension("journal.columns")
}

/// Opens the sync's warehouse journal (what an interrupted run left stays in it).
pub(crate) fn open_journal(ws: &Workspace, p: &PreparedSync) -> Result<Journal, Abort> {
    Journal::open(&journal_dir(ws), &journal_name(p))
        .map_err(Abort::io("opening the warehouse delivery journal"))
}

/// Writes down the columns of the rows this run will journal (its plan's destination
/// fields, key fields renamed to the model's key columns).
pub(crate) fn record_columns(
    ws: &Workspace,
    p: &PreparedSync,
    columns: &[Column],
    key_columns: &[Column],
) -> Result<(), Abort> {
    let rename = |c: &Column| -> Column {
        let name = key_columns
            .iter()
            .position(|k| k.name == c.name)
            .and_then(|i| p.model.primary_key.get(i))
            .cloned()
            .unwrap_or_else(|| c.name.clone());
        Column { name, ..c.clone() }
    };
    let recorded = JournalColumns {
        columns: columns.iter().map(rename).collect(),
        keys: p
            .model
            .primary_key
            .iter()
            .zip(key_columns)
            .map(|(name, k)| Column {
                name: name.clone(),
                ..k.clone()
            })
            .collect(),
    };
    let path = columns_path(ws, p);
    let json = serde_json::to_vec(&recorded).unwrap_or_default();
    std::fs::write(&path, json).map_err(Abort::io(format!("writing {}", path.display())))
}

/// Writes back what the journal holds to the snapshot table, applies its other ops to the
/// state, and empties it. Returns the rows written back.
pub(crate) async fn replay(
    wh: &mut WarehouseInstance,
    ws: &Workspace,
    state: &StateStore,
    p: &PreparedSync,
    meta: &SyncMeta,
    journal: &mut Journal,
) -> Result<u64, Abort> {
    if journal.is_empty() {
        return Ok(0);
    }
    let path = columns_path(ws, p);
    let recorded: JournalColumns = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            Abort::Commit(format!(
                "the warehouse delivery journal {} has rows but {} is missing or unreadable; nothing was written back",
                journal.file().display(),
                path.display()
            ))
        })?;
    let io = Abort::io(format!(
        "reading the warehouse delivery journal {}",
        journal.file().display()
    ));
    let file = std::fs::File::open(journal.file()).map_err(&io)?;
    let mut input = std::io::BufReader::with_capacity(1 << 20, file);
    let table = snapshot_table(p);
    let mut written = 0u64;
    loop {
        let mut ops = Vec::new();
        while ops.len() < WRITE_BACK_OPS {
            match read_frame(&mut input).map_err(&io)? {
                Some(op) => ops.push(op),
                None => break,
            }
        }
        if ops.is_empty() {
            break;
        }
        let mut delivered = BatchBuilder::new(recorded.columns.clone());
        let mut removed = BatchBuilder::new(recorded.keys.clone());
        let mut fingerprints = Vec::new();
        let mut others = Vec::new();
        for op in ops {
            match op {
                JournalOp::Upsert { fp, row, .. } => {
                    delivered.push_encoded_row(&row);
                    fingerprints.push(Some(fingerprint_text(&fp)));
                }
                JournalOp::Delete { key } => removed.push_encoded_row(&key),
                other => others.push(other),
            }
        }
        let rows = u64::from(delivered.len()) + u64::from(removed.len());
        if rows > 0 {
            let call = WriteBack {
                snapshot: table.clone(),
                delivered: delivered.finish(),
                fingerprints,
                removed: removed.finish(),
            };
            wh.write_back(call).await.map_err(|e| {
                Abort::Commit(format!(
                    "writing acknowledged rows back to the snapshot table {}.{} through source {}: {e}; they stay journaled and are written back by the next run",
                    table.schema, table.table, p.source.name
                ))
            })?;
            written += rows;
        }
        if !others.is_empty() {
            state.apply_part(&p.state_key, meta, &others, 0)?;
        }
    }
    journal
        .clear()
        .map_err(Abort::io("clearing the warehouse delivery journal"))?;
    Ok(written)
}
