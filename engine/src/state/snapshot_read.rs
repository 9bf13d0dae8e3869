//! Reading a sync's snapshot: [`SnapshotReader`] sees the delta laid over the base, by key
//! and in chunks of key order (the diff's walk), the base's blocks read without copying.

use super::block;
use super::error::{Failure, StateErrorKind};
use super::snapshot::{base_get, base_table, def, delta_row, delta_table, SNAPSHOT_ROWS};
use redb::{ReadTransaction, TableDefinition};

/// A sync's snapshot as one read transaction sees it.
pub(super) struct SnapshotReader {
    base: Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    delta: Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    rows: u64,
}

/// Opens a table for reading; one no write has created yet reads as `None`.
pub(super) fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
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
    ) -> Result<Option<Vec<u8>>, ChunkError> {
        let mut base = BaseCursor::open(self.base.as_ref(), after)?;
        let mut delta_range = open_range(self.delta.as_ref(), after)?;
        let mut delta = next_entry(&mut delta_range)?;
        let mut last = Vec::new();
        // Appends a live entry to the chunk and notes its key as the last looked at.
        let mut take = |k: &[u8], v: &[u8]| -> Result<(), ChunkError> {
            last.clear();
            last.extend_from_slice(k);
            if v.is_empty() {
                return Ok(()); // deleted since the base was written
            }
            let fp: [u8; 16] = v
                .get(..16)
                .and_then(|f| f.try_into().ok())
                .ok_or(ChunkError::CorruptEntry)?;
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
                let Some((k, v)) = std::mem::replace(&mut delta, next_entry(&mut delta_range)?)
                else {
                    return Ok(None);
                };
                if base.entry().is_some_and(|(b, _)| b == k.value()) {
                    base.advance()?;
                }
                take(k.value(), v.value())?;
            } else {
                if let Some((k, v)) = base.entry() {
                    take(k, v)?;
                }
                base.advance()?;
            }
        }
        Ok((base.entry().is_some() || delta.is_some()).then_some(last))
    }
}

/// Why a chunk of the snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ChunkError {
    /// The tables could not be read.
    #[error(transparent)]
    Storage(#[from] redb::StorageError),
    /// An entry too short to hold a fingerprint.
    #[error("corrupt snapshot entry")]
    CorruptEntry,
}

impl Failure for ChunkError {
    fn kind(&self) -> StateErrorKind {
        match self {
            ChunkError::Storage(e) => e.kind(),
            ChunkError::CorruptEntry => StateErrorKind::Corrupt,
        }
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

#[cfg(test)]
mod tests {
    use super::super::snapshot::delta_bound;
    use crate::domain::JournalOp;
    use crate::state::testing::{delta_len, meta, walk};
    use crate::state::StateStore;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A commit: upserts (key, fingerprint byte) and deletes (key, `None`) of keys 0..=255.
    fn commit() -> impl Strategy<Value = Vec<(u8, Option<u8>)>> {
        prop::collection::vec(
            (any::<u8>(), prop::option::weighted(0.8, any::<u8>())),
            0..40,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: crate::proptest_cases::cases_or(256),
            ..ProptestConfig::default()
        })]

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
}
