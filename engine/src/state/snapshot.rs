//! A sync's snapshot: per primary key, the fingerprint and the mapped row last delivered.
//!
//! It is kept in two tables, and every read sees the second laid over the first:
//! - `snapshot-blocks/NAME`, the base: entries (encoded key → 16-byte fingerprint ‖ encoded
//!   row) in blocks of consecutive keys, each block filed under its last key (see
//!   `block.rs`; since format 5: one redb entry per row made every delivered row a B-tree
//!   insert);
//! - `snapshot-delta/NAME`, the delta: one entry per key, the same value, or an empty value for
//!   a row deleted since the base was last written.
//!
//! Why a delta: redb copies a B-tree leaf on write, and a base block is rewritten whole, so a
//! commit of rows scattered over a large snapshot (10,000 updates among a million rows) would
//! rewrite nearly one block per row, about 40 MB written and synced for 10,000 rows, 230–420 ms
//! of the change run (docs/benchmarks-history.md). In the delta the same rows fill a few hundred
//! leaves. Only small commits go to the delta: at most a quarter of its bound ([`delta_bound`]:
//! an eighth of the snapshot, at least 4,096 entries; so a 32nd of a snapshot of 32,768 rows or
//! more, and up to 1,024 rows below that, an empty one included), and only while the delta
//! stays within the bound (the bound of the snapshot as it would be if every change of the
//! commit were a delete, so that the bound holds after the commit too). Any other commit folds the delta into the base first and writes into
//! the base: a commit of more rows than a 32nd of a large snapshot touches most of its blocks
//! anyway, and an initial load, replayed in chunks, would otherwise write the tail of each
//! chunk twice (once to the delta, once more in the next chunk's fold). So a read of a snapshot
//! of more than 32,768 rows meets at most one delta entry per eight base entries, and a fold
//! writes each base block once however many runs changed rows in it. Measured on the issue-15
//! workload (per-row base, session 13): a commit of 10,309 scattered updates took 48–190 ms
//! into the delta (growing with it) against 228–302 ms into the base, and the fold of 124k
//! entries 233–241 ms, once per 12 such runs.
//!
//! The number of rows is kept per sync in `snapshot_rows`, written by every commit, so counting
//! the snapshot never walks it.

use super::block::{self, EditBlock};
use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};

/// sync name → rows in its snapshot (base and delta together). Absent: no snapshot.
pub(super) const SNAPSHOT_ROWS: TableDefinition<&str, u64> = TableDefinition::new("snapshot_rows");

/// The delta's smallest bound, so a small snapshot is not folded at every commit. Unit tests
/// use a small one, so that the property test's few rows go through every path: into the
/// base, into the delta, and folds.
const DELTA_MIN_BOUND: u64 = if cfg!(test) { 16 } else { 4096 };

pub(super) fn base_table(sync: &str) -> String {
    format!("snapshot-blocks/{sync}")
}
pub(super) fn delta_table(sync: &str) -> String {
    format!("snapshot-delta/{sync}")
}
/// The base of format 4 and before: one entry per row. Read only to migrate it.
pub(super) const PER_ROW_BASE_PREFIX: &str = "snapshot/";
pub(super) fn def(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// Most entries the delta of a snapshot of `rows` rows may hold.
pub(super) fn delta_bound(rows: u64) -> u64 {
    (rows / 8).max(DELTA_MIN_BOUND)
}

/// Whether a commit of `changes` row changes goes to a delta of `delta_rows` entries over a
/// snapshot of `rows` rows (see the module's documentation).
pub(super) fn goes_to_delta(changes: u64, delta_rows: u64, rows: u64) -> bool {
    // The delta must still be within its bound after the commit, when deletes may have made
    // the snapshot (and so the bound) smaller: judged as if every change were a delete.
    changes <= delta_bound(rows) / 4
        && delta_rows + changes <= delta_bound(rows.saturating_sub(changes))
}

/// A delta entry's value as the row's stored value; `None` for an empty one, a row deleted
/// since the base was written.
fn delta_row(value: &[u8]) -> Option<&[u8]> {
    Some(value).filter(|v| !v.is_empty())
}

/// The stored value of `key` in the base: in the first block whose last key is `key` or
/// after it.
fn base_get<B: ReadableTable<&'static [u8], &'static [u8]>>(
    base: &B,
    key: &[u8],
) -> Result<Option<Vec<u8>>, redb::StorageError> {
    let Some(entry) = base.range::<&[u8]>(key..)?.next() else {
        return Ok(None);
    };
    let (_, block) = entry?;
    Ok(block::find(block.value(), key)?.map(<[u8]>::to_vec))
}

/// A sync's snapshot as one read transaction sees it.
pub(super) struct SnapshotReader {
    base: Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    delta: Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    rows: u64,
}

/// Opens a table for reading; one no write has created yet reads as `None`.
fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    definition: TableDefinition<'_, K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, redb::TableError> {
    match txn.open_table(definition) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl SnapshotReader {
    pub(super) fn open(txn: &ReadTransaction, sync: &str) -> Result<SnapshotReader, redb::Error> {
        let rows = match open_read(txn, SNAPSHOT_ROWS)? {
            Some(table) => table.get(sync)?.map_or(0, |v| v.value()),
            None => 0,
        };
        Ok(SnapshotReader {
            base: open_read(txn, def(&base_table(sync)))?,
            delta: open_read(txn, def(&delta_table(sync)))?,
            rows,
        })
    }

    /// Rows in the snapshot.
    pub(super) fn len(&self) -> Result<u64, redb::Error> {
        Ok(self.rows)
    }

    /// The stored value of `key`: fingerprint ‖ row.
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
        if let Some(value) = self
            .delta
            .as_ref()
            .map(|d| d.get(key))
            .transpose()?
            .flatten()
        {
            return Ok(delta_row(value.value()).map(<[u8]>::to_vec));
        }
        Ok(self
            .base
            .as_ref()
            .map(|b| base_get(b, key))
            .transpose()?
            .flatten())
    }

    /// Up to `limit` entries with keys strictly after `after`, in key order: each key is
    /// appended to `keys` and (its end in `keys`, its fingerprint) to `entries`. Returns where
    /// the next chunk starts (the last key looked at, which may be of a deleted row), or `None`
    /// after the last entry. A chunk may be empty and still not the last.
    pub(super) fn chunk_into(
        &self,
        after: Option<&[u8]>,
        limit: usize,
        keys: &mut Vec<u8>,
        entries: &mut Vec<(usize, [u8; 16])>,
    ) -> Result<Option<Vec<u8>>, String> {
        let err = |e: redb::StorageError| e.to_string();
        let mut base = BaseCursor::open(self.base.as_ref(), after).map_err(err)?;
        let mut delta_range = open_range(self.delta.as_ref(), after).map_err(err)?;
        let mut delta = next_entry(&mut delta_range).map_err(err)?;
        let mut last = Vec::new();
        // Appends a live entry to the chunk and notes its key as the last looked at.
        let mut take = |k: &[u8], v: &[u8]| -> Result<(), String> {
            last.clear();
            last.extend_from_slice(k);
            if v.is_empty() {
                return Ok(()); // deleted since the base was written
            }
            let fp: [u8; 16] = v
                .get(..16)
                .and_then(|f| f.try_into().ok())
                .ok_or("corrupt snapshot entry")?;
            keys.extend_from_slice(k);
            entries.push((keys.len(), fp));
            Ok(())
        };
        for _ in 0..limit.max(1) {
            // The smaller key next; of equal keys the delta's entry stands, the base's is passed.
            let from_delta = match (base.entry(), &delta) {
                (None, None) => return Ok(None),
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((b, _)), Some((d, _))) => d.value() <= b,
            };
            if from_delta {
                let Some((k, v)) =
                    std::mem::replace(&mut delta, next_entry(&mut delta_range).map_err(err)?)
                else {
                    return Ok(None);
                };
                if base.entry().is_some_and(|(b, _)| b == k.value()) {
                    base.advance().map_err(err)?;
                }
                take(k.value(), v.value())?;
            } else {
                if let Some((k, v)) = base.entry() {
                    take(k, v)?;
                }
                base.advance().map_err(err)?;
            }
        }
        Ok((base.entry().is_some() || delta.is_some()).then_some(last))
    }
}

type SnapshotRange<'a> = redb::Range<'a, &'static [u8], &'static [u8]>;
type SnapshotEntry<'a> = (
    redb::AccessGuard<'a, &'static [u8]>,
    redb::AccessGuard<'a, &'static [u8]>,
);

/// The entries of `table` after `after` (all of them for `None`); no table, no entries.
fn open_range<'a>(
    table: Option<&'a redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    after: Option<&[u8]>,
) -> Result<Option<SnapshotRange<'a>>, redb::StorageError> {
    let Some(table) = table else { return Ok(None) };
    let range = match after {
        Some(k) => {
            table.range::<&[u8]>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))?
        }
        None => table.range::<&[u8]>(..)?,
    };
    Ok(Some(range))
}

fn next_entry<'a>(
    range: &mut Option<SnapshotRange<'a>>,
) -> Result<Option<SnapshotEntry<'a>>, redb::StorageError> {
    range.as_mut().and_then(Iterator::next).transpose()
}

/// The base's entries in key order, walked block by block without copying them.
struct BaseCursor<'a> {
    blocks: Option<SnapshotRange<'a>>,
    block: Option<redb::AccessGuard<'a, &'static [u8]>>,
    /// The current entry in `block`: its key's and its value's place, and where the next
    /// entry starts. `None` after the last entry.
    current: Option<(std::ops::Range<usize>, std::ops::Range<usize>, usize)>,
}

impl<'a> BaseCursor<'a> {
    /// At the first entry after `after` (the first of all for `None`).
    fn open(
        table: Option<&'a redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
        after: Option<&[u8]>,
    ) -> Result<BaseCursor<'a>, redb::StorageError> {
        // The block that may hold `after` is the first whose last key is `after` or later.
        let blocks = match (table, after) {
            (None, _) => None,
            (Some(table), Some(after)) => Some(table.range::<&[u8]>(after..)?),
            (Some(table), None) => Some(table.range::<&[u8]>(..)?),
        };
        let mut cursor = BaseCursor {
            blocks,
            block: None,
            current: None,
        };
        cursor.next_block()?;
        if let Some(after) = after {
            while cursor.entry().is_some_and(|(k, _)| k <= after) {
                cursor.advance()?;
            }
        }
        Ok(cursor)
    }

    fn next_block(&mut self) -> Result<(), redb::StorageError> {
        loop {
            self.current = None;
            self.block = None;
            let Some((_, block)) = self.blocks.as_mut().and_then(Iterator::next).transpose()?
            else {
                return Ok(());
            };
            if !block.value().is_empty() {
                self.current = Some(block::entry_at(block.value(), 0)?);
                self.block = Some(block);
                return Ok(());
            }
        }
    }

    /// The current entry: key, value.
    fn entry(&self) -> Option<(&[u8], &[u8])> {
        let (key, value, _) = self.current.as_ref()?;
        let bytes = self.block.as_ref()?.value();
        Some((&bytes[key.clone()], &bytes[value.clone()]))
    }

    fn advance(&mut self) -> Result<(), redb::StorageError> {
        let (Some((_, _, next)), Some(block)) = (&self.current, &self.block) else {
            return Ok(());
        };
        let (next, bytes) = (*next, block.value());
        if next < bytes.len() {
            self.current = Some(block::entry_at(bytes, next)?);
            Ok(())
        } else {
            self.next_block()
        }
    }
}

/// The base block a commit is editing, and which keys belong in it.
struct OpenBlock {
    block: EditBlock,
    /// Keys after this one belong in the block (`None`: from the first key on).
    after: Option<Vec<u8>>,
    /// Keys up to this one belong in the block (`None`: every key after `after`: the last
    /// block).
    upto: Option<Vec<u8>>,
    /// The key the block is filed under in the table now (`None`: not filed).
    filed_as: Option<Vec<u8>>,
    changed: bool,
}

impl OpenBlock {
    fn holds(&self, key: &[u8]) -> bool {
        self.after.as_deref().is_none_or(|after| key > after)
            && self.upto.as_deref().is_none_or(|upto| key <= upto)
    }
}

/// A snapshot's base open in a write transaction. Rows are edited in one block held in memory,
/// written back when an edit falls outside it, when it fills, and at the end: deliveries come
/// mostly in key order, so most blocks are read and written once per commit.
struct BaseWriter<'txn> {
    table: redb::Table<'txn, &'static [u8], &'static [u8]>,
    open: Option<OpenBlock>,
}

impl<'txn> BaseWriter<'txn> {
    /// The stored value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
        match &self.open {
            Some(open) if open.holds(key) => {
                Ok(block::find(open.block.bytes(), key)?.map(<[u8]>::to_vec))
            }
            _ => Ok(base_get(&self.table, key)?),
        }
    }

    /// The block `key` belongs in, open.
    fn open_for(&mut self, key: &[u8]) -> Result<OpenBlock, redb::Error> {
        match self.open.take() {
            Some(open) if open.holds(key) => return Ok(open),
            other => self.write_back(other)?,
        }
        // The first block whose last key is `key` or later holds it; past every block, the
        // last block takes it.
        let at_or_after = match self.table.range::<&[u8]>(key..)?.next() {
            Some(entry) => {
                let (last, bytes) = entry?;
                Some((last.value().to_vec(), EditBlock::from_bytes(bytes.value())?))
            }
            None => None,
        };
        let (filed_as, block, upto) = match at_or_after {
            Some((last, block)) => (Some(last.clone()), block, Some(last)),
            None => match self.table.last()? {
                Some((last, bytes)) => (
                    Some(last.value().to_vec()),
                    EditBlock::from_bytes(bytes.value())?,
                    None,
                ),
                None => (None, EditBlock::default(), None),
            },
        };
        let after = match &filed_as {
            Some(filed_as) => match self
                .table
                .range::<&[u8]>(..filed_as.as_slice())?
                .next_back()
            {
                Some(entry) => Some(entry?.0.value().to_vec()),
                None => None,
            },
            None => None,
        };
        Ok(OpenBlock {
            block,
            after,
            upto,
            filed_as,
            changed: false,
        })
    }

    /// Files a block's bytes under its last key `last` (`None`: the block is empty, and is
    /// removed), in place of the entry it was filed under.
    fn file(
        &mut self,
        filed_as: Option<Vec<u8>>,
        last: Option<&[u8]>,
        bytes: &[u8],
    ) -> Result<(), redb::Error> {
        if let Some(filed_as) = filed_as.filter(|f| Some(f.as_slice()) != last) {
            self.table.remove(filed_as.as_slice())?;
        }
        if let Some(last) = last {
            self.table.insert(last, bytes)?;
        }
        Ok(())
    }

    fn write_back(&mut self, open: Option<OpenBlock>) -> Result<(), redb::Error> {
        match open {
            Some(open) if open.changed => {
                self.file(open.filed_as, open.block.last_key(), open.block.bytes())
            }
            _ => Ok(()),
        }
    }

    /// Files an open block's entries as they are and leaves it empty, holding the keys after
    /// its last.
    fn file_and_empty(&mut self, open: &mut OpenBlock) -> Result<(), redb::Error> {
        let last = open.block.last_key().map(<[u8]>::to_vec);
        let bytes = open.block.take();
        self.file(open.filed_as.take(), last.as_deref(), &bytes)?;
        if last.is_some() {
            open.after = last;
        }
        open.changed = false;
        Ok(())
    }

    fn upsert(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
        let mut open = self.open_for(key)?;
        // A block loaded in key order is filed when the next entry would not fit it, and the
        // next entries start a new one.
        if open.block.appends(key)
            && open.block.len_bytes() > 0
            && open.block.len_bytes() + block::entry_len(key, value) > block::TARGET_BYTES
        {
            self.file_and_empty(&mut open)?;
        }
        let (before, _) = open.block.upsert(key, value)?;
        open.changed = true;
        // One grown by inserts in its middle is split in two.
        if open.block.len_bytes() > block::MAX_BYTES {
            if let Some(front) = open.block.split_front()? {
                let front_last = block::last_key(&front)?.map(<[u8]>::to_vec);
                // The key the whole was filed under (its last key when it was read) may now
                // fall in the front half, entries having been appended after it: that entry
                // goes, or a lookup of a front key would find the stale whole first.
                let replaced = if open.filed_as.as_deref() <= front_last.as_deref() {
                    open.filed_as.take()
                } else {
                    None
                };
                self.file(replaced, front_last.as_deref(), &front)?;
                open.after = front_last;
            }
        }
        self.open = Some(open);
        Ok(before)
    }

    fn remove(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
        let mut open = self.open_for(key)?;
        let before = open.block.remove(key)?;
        open.changed |= before.is_some();
        self.open = Some(open);
        Ok(before)
    }

    fn finish(&mut self) -> Result<(), redb::Error> {
        let open = self.open.take();
        self.write_back(open)
    }
}

/// A sync's snapshot open in a write transaction, for one commit of acknowledged rows.
pub(super) struct SnapshotWriter<'txn> {
    base: BaseWriter<'txn>,
    delta: redb::Table<'txn, &'static [u8], &'static [u8]>,
    /// Whether this commit writes into the delta (or into the base, the delta being empty).
    into_delta: bool,
    rows: u64,
}

impl<'txn> SnapshotWriter<'txn> {
    /// Opens a sync's snapshot for a commit of up to `changes` row changes. Unless they go to
    /// the delta ([`goes_to_delta`]), the delta is folded into the base first and they go to
    /// the base.
    pub(super) fn open(
        txn: &'txn WriteTransaction,
        sync: &str,
        changes: u64,
    ) -> Result<SnapshotWriter<'txn>, redb::Error> {
        let mut base = BaseWriter {
            table: txn.open_table(def(&base_table(sync)))?,
            open: None,
        };
        let delta_name = delta_table(sync);
        let mut delta = txn.open_table(def(&delta_name))?;
        let delta_rows = delta.len()?;
        let rows = txn
            .open_table(SNAPSHOT_ROWS)?
            .get(sync)?
            .map_or(0, |v| v.value());
        let into_delta = goes_to_delta(changes, delta_rows, rows);
        if !into_delta && delta_rows > 0 {
            let started = std::time::Instant::now();
            for entry in delta.iter()? {
                let (key, value) = entry?;
                match delta_row(value.value()) {
                    Some(row) => base.upsert(key.value(), row)?,
                    None => base.remove(key.value())?,
                };
            }
            drop(delta);
            txn.delete_table(def(&delta_name))?;
            delta = txn.open_table(def(&delta_name))?;
            tracing::debug!(
                sync,
                rows = delta_rows,
                ms = started.elapsed().as_millis() as u64,
                "snapshot delta folded into its base"
            );
        }
        Ok(SnapshotWriter {
            base,
            delta,
            into_delta,
            rows,
        })
    }

    /// Sets `key`'s entry to `value` (fingerprint ‖ row); returns the entry before.
    pub(super) fn upsert(
        &mut self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, redb::Error> {
        let before = if self.into_delta {
            match self.delta.insert(key, value)? {
                Some(before) => delta_row(before.value()).map(<[u8]>::to_vec),
                None => self.base.get(key)?,
            }
        } else {
            self.base.upsert(key, value)?
        };
        self.rows += u64::from(before.is_none());
        Ok(before)
    }

    /// Removes `key`'s entry; returns it.
    pub(super) fn delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
        let before = if self.into_delta {
            let before = match self.delta.get(key)? {
                Some(value) => delta_row(value.value()).map(<[u8]>::to_vec),
                None => self.base.get(key)?,
            };
            if before.is_some() {
                self.delta.insert(key, &[][..])?;
            }
            before
        } else {
            self.base.remove(key)?
        };
        self.rows = self.rows.saturating_sub(u64::from(before.is_some()));
        Ok(before)
    }

    /// Writes back what is held in memory and records the snapshot's size; call once, after
    /// the commit's last change.
    pub(super) fn finish(mut self, txn: &WriteTransaction, sync: &str) -> Result<(), redb::Error> {
        self.base.finish()?;
        txn.open_table(SNAPSHOT_ROWS)?.insert(sync, self.rows)?;
        Ok(())
    }
}

/// Rewrites the per-row base of format 4 and before (`snapshot/NAME`) into blocks, and
/// deletes it. A snapshot of format 3 has no recorded size (and no delta): it is recorded
/// from the rows rewritten.
pub(super) fn migrate_per_row_base(txn: &WriteTransaction, sync: &str) -> Result<u64, redb::Error> {
    let old_name = format!("{PER_ROW_BASE_PREFIX}{sync}");
    let mut base = BaseWriter {
        table: txn.open_table(def(&base_table(sync)))?,
        open: None,
    };
    let mut rows = 0u64;
    {
        let old = txn.open_table(def(&old_name))?;
        for entry in old.iter()? {
            let (key, value) = entry?;
            base.upsert(key.value(), value.value())?;
            rows += 1;
        }
    }
    base.finish()?;
    txn.delete_table(def(&old_name))?;
    let mut counts = txn.open_table(SNAPSHOT_ROWS)?;
    if counts.get(sync)?.is_none() {
        counts.insert(sync, rows)?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::super::{StateStore, SyncMeta};
    use super::*;
    use crate::domain::JournalOp;
    use proptest::prelude::*;
    use redb::ReadableDatabase;
    use std::collections::BTreeMap;

    fn meta() -> SyncMeta {
        SyncMeta {
            primary_key: vec!["id".into()],
            destination: "d".into(),
            destination_plugin: "p".into(),
            key_types: vec![],
        }
    }

    /// Every entry, walked in chunks of `limit` as the plan's cursor walks them.
    fn walk(state: &StateStore, limit: usize) -> Vec<(Vec<u8>, [u8; 16])> {
        let (mut after, mut out) = (None, Vec::new());
        loop {
            let (mut keys, mut entries) = (Vec::new(), Vec::new());
            let next = state
                .snapshot_chunk_into("s", after.as_deref(), limit, &mut keys, &mut entries)
                .unwrap();
            let mut start = 0;
            for (end, fp) in entries {
                out.push((keys[start..end].to_vec(), fp));
                start = end;
            }
            match next {
                Some(next) => after = Some(next),
                None => return out,
            }
        }
    }

    fn delta_len(state: &StateStore) -> u64 {
        let txn = state.db.begin_read().unwrap();
        open_read(&txn, def(&delta_table("s")))
            .unwrap()
            .map_or(0, |t| t.len().unwrap())
    }

    /// A commit: upserts (key, fingerprint byte) and deletes (key, `None`) of keys 0..=255.
    fn commit() -> impl Strategy<Value = Vec<(u8, Option<u8>)>> {
        prop::collection::vec(
            (any::<u8>(), prop::option::weighted(0.8, any::<u8>())),
            0..40,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever the commits, and whether they went to the base, to the delta or folded it,
        /// the snapshot reads as a map given the same changes: by key, by chunks of any size,
        /// and counted; and every commit sees the entry before it as the map had it.
        #[test]
        fn reads_as_the_changes_applied_to_a_map(
            initial in 0usize..6000,
            commits in prop::collection::vec(commit(), 1..12),
            limit in 1usize..70,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let state = StateStore::open(dir.path()).unwrap();
            let key = |k: u32| format!("k{k:05}").into_bytes();
            let mut model: BTreeMap<Vec<u8>, [u8; 16]> = BTreeMap::new();
            // A first load large enough to go to the base, above the delta's smallest bound.
            let load: Vec<JournalOp> = (0..initial as u32).map(|k| JournalOp::Upsert { key: key(k * 3), fp: [7; 16], row: vec![1] }).collect();
            state.apply("s", &meta(), &load).unwrap();
            for op in &load {
                if let JournalOp::Upsert { key, fp, .. } = op {
                    model.insert(key.clone(), *fp);
                }
            }
            for changes in commits {
                let ops: Vec<JournalOp> = changes
                    .iter()
                    .map(|(k, v)| match v {
                        Some(n) => JournalOp::Upsert { key: key(u32::from(*k) * 11), fp: [*n; 16], row: vec![*n, 2] },
                        None => JournalOp::Delete { key: key(u32::from(*k) * 11) },
                    })
                    .collect();
                let keys: Vec<&[u8]> = ops.iter().map(|op| match op { JournalOp::Upsert { key, .. } | JournalOp::Delete { key } => key.as_slice(), _ => unreachable!() }).collect();
                let before = state.snapshot_entries("s", &keys).unwrap();
                for (key, before) in keys.iter().zip(&before) {
                    prop_assert_eq!(before.as_ref().map(|d| d.fp), model.get(*key).copied());
                }
                state.apply("s", &meta(), &ops).unwrap();
                for (k, v) in changes {
                    match v {
                        Some(n) => model.insert(key(u32::from(k) * 11), [n; 16]),
                        None => model.remove(&key(u32::from(k) * 11)),
                    };
                }
                let rows = state.snapshot_len("s").unwrap();
                prop_assert!(delta_len(&state) <= delta_bound(rows), "the delta stays within its bound");
            }
            prop_assert_eq!(state.snapshot_len("s").unwrap(), model.len() as u64);
            let expected: Vec<(Vec<u8>, [u8; 16])> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
            prop_assert_eq!(walk(&state, limit), expected.clone());
            prop_assert_eq!(walk(&state, 100_000), expected);
            let rows = state.snapshot_rows("s", &[key(0).as_slice(), key(3).as_slice()]).unwrap();
            prop_assert_eq!(rows[0].is_some(), model.contains_key(&key(0)));
            prop_assert_eq!(rows[1].is_some(), model.contains_key(&key(3)));
        }
    }

    /// Small commits to a large snapshot go to the delta until it would pass its bound; then
    /// the commit folds it into the base, which reads the same. A larger commit goes to the
    /// base, folding the delta first.
    #[test]
    fn the_delta_takes_small_commits_and_is_folded_at_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let key = |k: u32| format!("k{k:06}").into_bytes();
        let upserts = |keys: std::ops::Range<u32>, n: u8| -> Vec<JournalOp> {
            keys.map(|k| JournalOp::Upsert {
                key: key(k),
                fp: [n; 16],
                row: vec![n],
            })
            .collect()
        };
        state.apply("s", &meta(), &upserts(0..40_008, 1)).unwrap();
        assert_eq!(delta_len(&state), 0, "a load goes to the base");
        // The bound is an eighth of the snapshot (40,007 rows after the delete below), 5,000; a
        // commit of up to 1,250 goes to the delta.
        for start in [0, 1250, 2500] {
            state
                .apply("s", &meta(), &upserts(start..start + 1250, 2))
                .unwrap();
        }
        state
            .apply(
                "s",
                &meta(),
                &[
                    JournalOp::Delete { key: key(10) },
                    JournalOp::Delete {
                        key: b"absent".to_vec(),
                    },
                ],
            )
            .unwrap();
        assert_eq!(
            delta_len(&state),
            3750,
            "updates, one turned into a tombstone; nothing for a row that was not there"
        );
        assert_eq!(state.snapshot_len("s").unwrap(), 40_007);
        // Up to the bound of the snapshot as it would be if all 1,094 changes were deletes:
        // (40,007 - 1,094) / 8 = 4,864.
        state.apply("s", &meta(), &upserts(3750..4844, 3)).unwrap();
        assert_eq!(delta_len(&state), 4844, "up to the bound");
        state.apply("s", &meta(), &upserts(5000..5200, 3)).unwrap();
        assert_eq!(
            delta_len(&state),
            0,
            "200 more would pass the bound: folded first"
        );
        assert_eq!(state.snapshot_len("s").unwrap(), 40_007);
        let entries = state
            .snapshot_entries(
                "s",
                &[&key(9), &key(10), &key(3749), &key(3750), &key(39_999)],
            )
            .unwrap();
        let fps: Vec<Option<u8>> = entries
            .iter()
            .map(|e| e.as_ref().map(|d| d.fp[0]))
            .collect();
        assert_eq!(fps, [Some(2), None, Some(2), Some(3), Some(1)]);
        assert_eq!(walk(&state, 16_384).len(), 40_007);

        state.apply("s", &meta(), &upserts(0..10, 4)).unwrap();
        assert_eq!(delta_len(&state), 10);
        state.apply("s", &meta(), &upserts(10..1261, 4)).unwrap();
        assert_eq!(
            delta_len(&state),
            0,
            "a commit of more than a quarter of the bound goes to the base, the delta folded first"
        );
        let entries = state
            .snapshot_entries("s", &[&key(0), &key(1260), &key(1261)])
            .unwrap();
        assert_eq!(
            entries
                .iter()
                .map(|e| e.as_ref().map(|d| d.fp[0]))
                .collect::<Vec<_>>(),
            [Some(4), Some(4), Some(2)]
        );

        // A chunk of a large commit (a journal replayed in chunks) goes where the whole would.
        state.apply("s", &meta(), &upserts(0..10, 5)).unwrap();
        assert_eq!(delta_len(&state), 10);
        state
            .apply_part("s", &meta(), &upserts(10..20, 5), 1251)
            .unwrap();
        assert_eq!(
            delta_len(&state),
            0,
            "folded, and the chunk written to the base"
        );
        assert_eq!(
            state.snapshot_entries("s", &[&key(19)]).unwrap()[0]
                .as_ref()
                .map(|d| d.fp[0]),
            Some(5)
        );
    }

    /// Deletes into the delta make the snapshot, and so the delta's bound, smaller: a commit
    /// goes to the delta only if the bound still holds after it (found in review: 16 entries
    /// in the delta of a 160-row snapshot, 4 deletes more, left 20 entries over a bound of 19).
    #[test]
    fn deletes_into_the_delta_do_not_leave_it_over_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let key = |k: u32| format!("k{k:05}").into_bytes();
        let upsert = |k: u32| JournalOp::Upsert {
            key: key(k),
            fp: [1; 16],
            row: vec![],
        };
        state
            .apply(
                "s",
                &meta(),
                &(0..144).map(|k| upsert(k * 3)).collect::<Vec<_>>(),
            )
            .unwrap();
        for commit in 0..4 {
            state
                .apply(
                    "s",
                    &meta(),
                    &(0..4)
                        .map(|k| upsert(commit * 12 + k * 3 + 1))
                        .collect::<Vec<_>>(),
                )
                .unwrap();
        }
        assert_eq!(
            (delta_len(&state), state.snapshot_len("s").unwrap()),
            (16, 160)
        );
        state
            .apply(
                "s",
                &meta(),
                &[0, 33, 66, 99].map(|k| JournalOp::Delete { key: key(k) }),
            )
            .unwrap();
        let rows = state.snapshot_len("s").unwrap();
        assert_eq!(rows, 156);
        assert!(
            delta_len(&state) <= delta_bound(rows),
            "{} entries over a bound of {}",
            delta_len(&state),
            delta_bound(rows)
        );
    }

    #[test]
    fn only_small_commits_go_to_the_delta() {
        assert!(
            goes_to_delta(31_250, 0, 1_000_000) && !goes_to_delta(31_251, 0, 1_000_000),
            "a 32nd of the base"
        );
        // Within an eighth of the snapshot as it would be after 10,000 deletes: 123,750.
        assert!(
            goes_to_delta(10_000, 113_750, 1_000_000) && !goes_to_delta(10_000, 113_751, 1_000_000),
            "within an eighth"
        );
        // An initial load, replayed in chunks: a commit's last, shorter chunk goes to the base too.
        assert!(!goes_to_delta(26_357, 0, 262_144));
    }

    /// Files of versions 3 and 4 (a snapshot's base one entry per row; version 3 with no
    /// recorded size and no delta) open as version 5: the base rewritten into blocks, the
    /// delta kept, and the snapshot reading the same. Commits then keep its size.
    #[test]
    fn per_row_snapshots_of_versions_3_and_4_are_rewritten_into_blocks() {
        for version in [3u64, 4] {
            let dir = tempfile::tempdir().unwrap();
            let key = |k: u32| format!("k{k:05}").into_bytes();
            {
                let db = redb::Database::create(dir.path().join("state.redb")).unwrap();
                let txn = db.begin_write().unwrap();
                txn.open_table(super::super::META)
                    .unwrap()
                    .insert("format_version", version)
                    .unwrap();
                for sync in ["s", "draft/s"] {
                    let mut base = txn
                        .open_table(def(&format!("{PER_ROW_BASE_PREFIX}{sync}")))
                        .unwrap();
                    for k in 0..1000u32 {
                        let mut value = vec![(k % 251) as u8; 16];
                        value.extend_from_slice(&k.to_be_bytes());
                        base.insert(key(k).as_slice(), value.as_slice()).unwrap();
                    }
                }
                if version == 4 {
                    // A delta: one row updated, one deleted, one added; 1000 rows in all.
                    let mut delta = txn.open_table(def(&delta_table("s"))).unwrap();
                    delta.insert(key(5).as_slice(), &[9u8; 17][..]).unwrap();
                    delta.insert(key(6).as_slice(), &[][..]).unwrap();
                    delta.insert(key(5000).as_slice(), &[8u8; 16][..]).unwrap();
                    txn.open_table(SNAPSHOT_ROWS)
                        .unwrap()
                        .insert("s", 1000)
                        .unwrap();
                }
                txn.commit().unwrap();
            }
            let state = StateStore::open(dir.path()).unwrap();
            {
                let txn = state.db.begin_read().unwrap();
                let tables: Vec<String> = txn
                    .list_tables()
                    .unwrap()
                    .map(|t| redb::TableHandle::name(&t).to_string())
                    .collect();
                assert!(
                    !tables.iter().any(|t| t.starts_with(PER_ROW_BASE_PREFIX)),
                    "version {version}: per-row bases are gone: {tables:?}"
                );
                let blocks = txn
                    .open_table(def(&base_table("s")))
                    .unwrap()
                    .len()
                    .unwrap();
                assert!((6..=8).contains(&blocks), "version {version}: 1000 entries of 28 bytes make 7 blocks of about 4 KiB, not {blocks}");
            }
            assert_eq!(state.snapshot_len("s").unwrap(), 1000, "version {version}");
            assert_eq!(
                state.snapshot_len("draft/s").unwrap(),
                1000,
                "version {version}"
            );
            let walked = walk(&state, 7);
            assert_eq!(walked.len(), 1000, "version {version}");
            assert_eq!(walk(&state, 100_000), walked);
            let entries = state
                .snapshot_entries("s", &[&key(0), &key(5), &key(6), &key(999), &key(5000)])
                .unwrap();
            let fps: Vec<Option<u8>> = entries
                .iter()
                .map(|e| e.as_ref().map(|d| d.fp[0]))
                .collect();
            let expected = if version == 4 {
                [Some(0), Some(9), None, Some((999 % 251) as u8), Some(8)]
            } else {
                [Some(0), Some(5), Some(6), Some((999 % 251) as u8), None]
            };
            assert_eq!(fps, expected, "version {version}");
            state
                .apply(
                    "s",
                    &meta(),
                    &[
                        JournalOp::Delete { key: key(4) },
                        JournalOp::Upsert {
                            key: key(99_999),
                            fp: [1; 16],
                            row: vec![],
                        },
                    ],
                )
                .unwrap();
            assert_eq!(state.snapshot_len("s").unwrap(), 1000, "version {version}");
            assert_eq!(
                state.snapshot_rows("s", &[&key(4), &key(7)]).unwrap(),
                [None, Some(7u32.to_be_bytes().to_vec())],
                "version {version}"
            );
        }
    }

    /// A load in key order fills blocks to about their target; updates scattered over them and
    /// inserts in their middle split them; deletes empty them; and each step reads as a map.
    #[test]
    fn blocks_fill_split_and_empty_as_rows_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let key = |k: u32| format!("k{k:06}").into_bytes();
        let blocks = || {
            state
                .read_table(def(&base_table("s")), || 0, |t| Ok(t.len().unwrap()))
                .unwrap()
        };
        let upsert = |k: u32, n: u8, len: usize| JournalOp::Upsert {
            key: key(k),
            fp: [n; 16],
            row: vec![n; len],
        };
        state
            .apply(
                "s",
                &meta(),
                &(0..20_000)
                    .step_by(2)
                    .map(|k| upsert(k, 1, 100))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let loaded = blocks();
        // 10,000 entries of 125 bytes: 31 to a block that fits a 4 KiB page.
        assert!(
            (320..=330).contains(&loaded),
            "{loaded} blocks after the load"
        );
        // The odd keys in between, in one commit large enough for the base: each block doubles.
        state
            .apply(
                "s",
                &meta(),
                &(1..20_000)
                    .step_by(2)
                    .map(|k| upsert(k, 2, 100))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let grown = blocks();
        assert!(
            grown > loaded * 3 / 2 && grown < loaded * 4,
            "{grown} blocks after filling in"
        );
        assert_eq!(state.snapshot_len("s").unwrap(), 20_000);
        let fps: Vec<u8> = walk(&state, 999).iter().map(|(_, fp)| fp[0]).collect();
        assert_eq!(
            fps,
            (0..20_000)
                .map(|k| if k % 2 == 0 { 1 } else { 2 })
                .collect::<Vec<u8>>()
        );
        // Everything but the first and last thousand deleted: the emptied blocks are gone.
        state
            .apply(
                "s",
                &meta(),
                &(1000..19_000)
                    .map(|k| JournalOp::Delete { key: key(k) })
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        assert_eq!(state.snapshot_len("s").unwrap(), 2000);
        assert!(blocks() <= grown / 5, "{} blocks left of {grown}", blocks());
        let walked: Vec<Vec<u8>> = walk(&state, 3).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            walked,
            (0..1000).chain(19_000..20_000).map(key).collect::<Vec<_>>()
        );
        // Keys before the first block and after the last.
        let ends = [
            JournalOp::Upsert {
                key: b"a".to_vec(),
                fp: [3; 16],
                row: vec![],
            },
            JournalOp::Upsert {
                key: b"z".to_vec(),
                fp: [4; 16],
                row: vec![],
            },
        ];
        state.apply_part("s", &meta(), &ends, 100_000).unwrap();
        assert_eq!(delta_len(&state), 0, "into the base");
        let ends = state
            .snapshot_entries("s", &[b"a", b"z", &key(999), &key(1000)])
            .unwrap();
        assert_eq!(
            ends.iter()
                .map(|e| e.as_ref().map(|d| d.fp[0]))
                .collect::<Vec<_>>(),
            [Some(3), Some(4), Some(2), None]
        );
    }
}
