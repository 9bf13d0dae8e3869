//! Pending rows: per sync, the table `pending/NAME` (encoded primary key → JSON
//! [`PendingRow`]), the rows the destination refused and no later run has delivered. Written
//! by commits (`commit.rs`); read here.

use super::{StateError, StateOp, StateStore};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// The name of a sync's pending rows table.
pub(super) fn pending_table(sync: &str) -> String {
    format!("pending/{sync}")
}

/// The definition of a pending rows table named `name` (see [`pending_table`]).
pub(super) fn pending_def(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// A row the destination refused, kept until a later run delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRow {
    /// The change refused: `added`, `changed` or `removed`.
    pub change: String,
    /// What the destination said.
    pub error: String,
    /// The run it was refused in.
    pub run_id: String,
}

const UNREADABLE: &str = "unreadable pending row";

impl StateStore {
    /// The pending (refused, not yet delivered) entry of one key, if any.
    pub fn pending_row(&self, sync: &str, key: &[u8]) -> Result<Option<PendingRow>, StateError> {
        self.read_table(
            StateOp::ReadPending,
            pending_def(&pending_table(sync)),
            || None,
            |table, doing| {
                let value = table.get(key).map_err(|e| doing.err(e))?;
                value
                    .map(|v| {
                        serde_json::from_slice(v.value())
                            .map_err(|e| doing.corrupt(format!("{UNREADABLE}: {e}")))
                    })
                    .transpose()
            },
        )
    }

    /// The keys of the pending rows of one change (`added`, `changed`, `removed`).
    pub fn pending_keys(&self, sync: &str, change: &str) -> Result<Vec<Vec<u8>>, StateError> {
        self.read_table(
            StateOp::ReadPending,
            pending_def(&pending_table(sync)),
            Vec::new,
            |table, doing| {
                let mut out = Vec::new();
                for entry in table.iter().map_err(|e| doing.err(e))? {
                    let (k, v) = entry.map_err(|e| doing.err(e))?;
                    let row: PendingRow = serde_json::from_slice(v.value())
                        .map_err(|e| doing.corrupt(format!("{UNREADABLE}: {e}")))?;
                    if row.change == change {
                        out.push(k.value().to_vec());
                    }
                }
                Ok(out)
            },
        )
    }

    /// Rows the destination refused and no later run has delivered: (encoded key, row).
    pub fn pending(
        &self,
        sync: &str,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, PendingRow)>, StateError> {
        self.read_table(
            StateOp::ReadPending,
            pending_def(&pending_table(sync)),
            Vec::new,
            |table, doing| {
                let mut out = Vec::new();
                for entry in table.iter().map_err(|e| doing.err(e))?.take(limit) {
                    let (k, v) = entry.map_err(|e| doing.err(e))?;
                    let row: PendingRow = serde_json::from_slice(v.value())
                        .map_err(|e| doing.corrupt(format!("{UNREADABLE}: {e}")))?;
                    out.push((k.value().to_vec(), row));
                }
                Ok(out)
            },
        )
    }
}
