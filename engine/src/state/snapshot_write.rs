//! Writing a sync's snapshot in a commit ([`SnapshotWriter`]): into the delta, or into the
//! base's blocks (one held open in memory at a time), folding the delta first; and the
//! rewrite of a per-row base of format 4 and before into blocks.

use super::block::{self, EditBlock};
use super::snapshot::{
    base_get, base_table, def, delta_row, delta_table, goes_to_delta, PER_ROW_BASE_PREFIX,
    SNAPSHOT_ROWS,
};
use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

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
    use super::*;
    use crate::domain::JournalOp;
    use crate::state::testing::{delta_len, meta, walk};
    use crate::state::StateStore;

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
                txn.open_table(crate::state::open::META)
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
                .read_table(
                    crate::state::StateOp::ReadSnapshot,
                    def(&base_table("s")),
                    || 0,
                    |t, _| Ok(t.len().unwrap()),
                )
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
