//! The parts of contract 0.3.0 that issues 39 and 40 use, as plain Rust types: a source's
//! `warehouse` interface (the diff computed in the source database, the write-back of what
//! was delivered, sync logs) and a destination's read-back (`writer.read`). The engine and
//! plugins both use these; each side converts them to and from its generated WIT types in
//! one place.

use crate::check::ChangeKind;
use crate::codec::Batch;
use crate::spec::Operation;

/// Where one sync's snapshot lives in the source database (names chosen by the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTable {
    pub schema: String,
    pub table: String,
}

/// A cursor read's window: rows whose `column` moved past `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorWindow {
    pub column: String,
    /// The last successful run's highest cursor minus the overlap; `None` for the first run.
    pub since: Option<String>,
}

/// What a warehouse diff compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffRequest {
    pub query: String,
    pub key_columns: Vec<String>,
    pub snapshot: SnapshotTable,
    /// Only rows whose cursor moved; `None` for a full diff (the only one that finds removals).
    pub cursor: Option<CursorWindow>,
    /// Every model row counts as changed.
    pub full_resync: bool,
}

/// One batch of a warehouse diff.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeBatch {
    pub kind: ChangeKind,
    /// Model rows (added, changed, unchanged) or key columns only (removed).
    pub rows: Batch,
    /// For `Changed`: the last delivered values, same columns and order as `rows`.
    pub before: Option<Batch>,
    /// One fingerprint per row of `rows` (empty for removed).
    pub fingerprints: Vec<String>,
}

/// The counts of a whole warehouse diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiffCounts {
    /// `None` for a cursor run.
    pub model_rows: Option<u64>,
    pub snapshot_rows: u64,
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
}

/// What a write-back records: the acknowledged rows and the deleted keys.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteBack {
    pub snapshot: SnapshotTable,
    /// Model columns, key included, of the rows the destination acknowledged.
    pub delivered: Batch,
    /// One per row of `delivered`; `None` asks the plugin to compute it from the values.
    pub fingerprints: Vec<Option<String>>,
    /// Key columns of the rows deleted at the destination.
    pub removed: Batch,
}

/// One run of a sync, for the warehouse's `runs` log table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLog {
    pub run_id: String,
    pub sync_name: String,
    pub status: String,
    pub trigger: String,
    pub user: String,
    pub started_at: String,
    pub finished_at: String,
    pub planned: u64,
    pub delivered: u64,
    pub failed: u64,
    pub error: Option<String>,
}

/// One row's fate in a run, for the warehouse's `changelog` log table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeLog {
    pub run_id: String,
    /// The row's key as JSON text.
    pub key: String,
    pub operation: Operation,
    pub status: String,
    pub error: Option<String>,
    pub at: String,
}

/// What a destination holds for one key asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// No record with this key.
    Absent,
    /// The record's fields are this row of [`ReadResult::rows`].
    Present(u32),
}

/// A destination's answer to a read-back.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadResult {
    /// The records found (destination field names).
    pub rows: Batch,
    /// Which cells of `rows` are present (see [`present_bit`]); `None` when all are.
    pub present: Option<Vec<u8>>,
    /// One per key asked for, in order.
    pub held: Vec<Held>,
}

/// Whether cell (`row`, `column`) of a batch with `columns` columns is present in a
/// `row-batch.present` bitmap (row-major, least significant bit first). Bits past the
/// bitmap's end read as present.
pub fn present_bit(bitmap: &[u8], columns: usize, row: usize, column: usize) -> bool {
    let bit = row * columns + column;
    bitmap
        .get(bit / 8)
        .is_none_or(|byte| byte & (1 << (bit % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_bits_are_row_major_lsb_first() {
        // 2 rows x 3 columns; cell (1, 0) = bit 3 and cell (0, 2) = bit 2 absent.
        let bitmap = [0b1111_0011u8];
        assert!(present_bit(&bitmap, 3, 0, 0));
        assert!(!present_bit(&bitmap, 3, 0, 2));
        assert!(!present_bit(&bitmap, 3, 1, 0));
        assert!(present_bit(&bitmap, 3, 1, 1));
        assert!(present_bit(&[], 3, 5, 2), "beyond the bitmap: present");
    }
}
