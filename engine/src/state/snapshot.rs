//! A sync's snapshot: per primary key, the fingerprint and the mapped row last delivered.
//!
//! It is kept in two tables, and every read sees the second laid over the first:
//! - `snapshot/NAME`, the base: encoded key → 16-byte fingerprint ‖ encoded row;
//! - `snapshot-delta/NAME`, the delta: the same, or an empty value for a row deleted since
//!   the base was last written.
//!
//! Why a delta: redb copies a B-tree leaf on write, so a commit of rows scattered over a large
//! snapshot (10,000 updates among a million rows) wrote nearly one 4 KiB leaf per row, about
//! 40 MB written and synced for 10,000 rows, 230–420 ms of the change run (BENCHMARKS.md,
//! issue 15). In the delta the same rows fill a few hundred leaves. Only small commits go to
//! the delta: at most a quarter of its bound ([`delta_bound`]: an eighth of the base, at least
//! 4,096 entries; so a 32nd of a base of 32,768 rows or more, and up to 1,024 rows below
//! that, an empty base included), and only while the delta stays within the bound. Any other
//! commit folds the delta into the base first and writes into the base: a commit of more rows
//! than a 32nd of a large base touches most of its leaves anyway, and an initial load,
//! replayed in chunks, would otherwise write the tail of each chunk twice (once to the delta,
//! once more in the next chunk's fold). So a read of a snapshot of more than 32,768 rows meets at most one delta
//! entry per eight base entries, and a fold writes each base leaf once however many runs
//! changed rows in it. Measured on the issue-15 workload: a
//! commit of 10,309 scattered updates took 48–190 ms into the delta (growing with it) against
//! 228–302 ms into the base, and the fold of 124k entries 233–241 ms, once per 12 such runs.
//!
//! The number of rows is kept per sync in `snapshot_rows`, written by every commit, so counting
//! the snapshot never walks the delta.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

/// sync name → rows in its snapshot (base and delta together). Absent for a snapshot written
/// before the delta existed (format 3), which has no delta: its base's length is its size.
pub(super) const SNAPSHOT_ROWS: TableDefinition<&str, u64> = TableDefinition::new("snapshot_rows");

/// The delta's smallest bound, so a small snapshot is not folded at every commit. Unit tests
/// use a small one, so that the property test's few rows go through every path: into the
/// base, into the delta, and folds.
const DELTA_MIN_BOUND: u64 = if cfg!(test) { 16 } else { 4096 };

pub(super) fn base_table(sync: &str) -> String {
    format!("snapshot/{sync}")
}
pub(super) fn delta_table(sync: &str) -> String {
    format!("snapshot-delta/{sync}")
}
pub(super) fn def(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// Most entries the delta of a snapshot whose base holds `base_rows` entries may hold.
pub(super) fn delta_bound(base_rows: u64) -> u64 {
    (base_rows / 8).max(DELTA_MIN_BOUND)
}

/// Whether a commit of `changes` row changes goes to a delta of `delta_rows` entries over a
/// base of `base_rows` (see the module's documentation).
pub(super) fn goes_to_delta(changes: u64, delta_rows: u64, base_rows: u64) -> bool {
    let bound = delta_bound(base_rows);
    changes <= bound / 4 && delta_rows + changes <= bound
}

/// The stored value of `key` (fingerprint ‖ row), the delta's over the base's.
fn lookup<B, D>(base: Option<&B>, delta: Option<&D>, key: &[u8]) -> Result<Option<Vec<u8>>, redb::StorageError>
where
    B: ReadableTable<&'static [u8], &'static [u8]>,
    D: ReadableTable<&'static [u8], &'static [u8]>,
{
    if let Some(value) = delta.map(|d| d.get(key)).transpose()?.flatten() {
        return Ok(Some(value.value()).filter(|v| !v.is_empty()).map(<[u8]>::to_vec));
    }
    Ok(base.map(|b| b.get(key)).transpose()?.flatten().map(|v| v.value().to_vec()))
}

/// A sync's snapshot as one read transaction sees it.
pub(super) struct SnapshotReader {
    base: Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    delta: Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    rows: Option<u64>,
}

/// Opens a table for reading; one no write has created yet reads as `None`.
fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(txn: &ReadTransaction, definition: TableDefinition<'_, K, V>) -> Result<Option<redb::ReadOnlyTable<K, V>>, redb::TableError> {
    match txn.open_table(definition) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl SnapshotReader {
    pub(super) fn open(txn: &ReadTransaction, sync: &str) -> Result<SnapshotReader, redb::Error> {
        let rows = match open_read(txn, SNAPSHOT_ROWS)? {
            Some(table) => table.get(sync)?.map(|v| v.value()),
            None => None,
        };
        Ok(SnapshotReader { base: open_read(txn, def(&base_table(sync)))?, delta: open_read(txn, def(&delta_table(sync)))?, rows })
    }

    /// Rows in the snapshot.
    pub(super) fn len(&self) -> Result<u64, redb::Error> {
        match (self.rows, &self.base) {
            (Some(rows), _) => Ok(rows),
            (None, Some(base)) => Ok(base.len()?),
            (None, None) => Ok(0),
        }
    }

    /// The stored value of `key`: fingerprint ‖ row.
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
        Ok(lookup(self.base.as_ref(), self.delta.as_ref(), key)?)
    }

    /// Up to `limit` entries with keys strictly after `after`, in key order: each key is
    /// appended to `keys` and (its end in `keys`, its fingerprint) to `entries`. Returns where
    /// the next chunk starts (the last key looked at, which may be of a deleted row), or `None`
    /// after the last entry. A chunk may be empty and still not the last.
    pub(super) fn chunk_into(&self, after: Option<&[u8]>, limit: usize, keys: &mut Vec<u8>, entries: &mut Vec<(usize, [u8; 16])>) -> Result<Option<Vec<u8>>, String> {
        let err = |e: redb::StorageError| e.to_string();
        let (mut base_range, mut delta_range) = (open_range(self.base.as_ref(), after).map_err(err)?, open_range(self.delta.as_ref(), after).map_err(err)?);
        let (mut base, mut delta) = (next_entry(&mut base_range).map_err(err)?, next_entry(&mut delta_range).map_err(err)?);
        let mut last = Vec::new();
        for _ in 0..limit.max(1) {
            // The smaller key next; of equal keys the delta's entry stands, the base's is passed.
            let (from_delta, pass_base) = match (&base, &delta) {
                (None, None) => return Ok(None),
                (Some(_), None) => (false, false),
                (None, Some(_)) => (true, false),
                (Some((b, _)), Some((d, _))) => match d.value().cmp(b.value()) {
                    std::cmp::Ordering::Less => (true, false),
                    std::cmp::Ordering::Equal => (true, true),
                    std::cmp::Ordering::Greater => (false, false),
                },
            };
            if pass_base {
                base = next_entry(&mut base_range).map_err(err)?;
            }
            let entry = if from_delta {
                std::mem::replace(&mut delta, next_entry(&mut delta_range).map_err(err)?)
            } else {
                std::mem::replace(&mut base, next_entry(&mut base_range).map_err(err)?)
            };
            let Some((k, v)) = entry else { return Ok(None) };
            let (k, v) = (k.value(), v.value());
            last.clear();
            last.extend_from_slice(k);
            if v.is_empty() {
                continue; // deleted since the base was written
            }
            let fp: [u8; 16] = v.get(..16).and_then(|f| f.try_into().ok()).ok_or("corrupt snapshot entry")?;
            keys.extend_from_slice(k);
            entries.push((keys.len(), fp));
        }
        Ok((base.is_some() || delta.is_some()).then_some(last))
    }
}

type SnapshotRange<'a> = redb::Range<'a, &'static [u8], &'static [u8]>;
type SnapshotEntry<'a> = (redb::AccessGuard<'a, &'static [u8]>, redb::AccessGuard<'a, &'static [u8]>);

/// The entries of `table` after `after` (all of them for `None`); no table, no entries.
fn open_range<'a>(table: Option<&'a redb::ReadOnlyTable<&'static [u8], &'static [u8]>>, after: Option<&[u8]>) -> Result<Option<SnapshotRange<'a>>, redb::StorageError> {
    let Some(table) = table else { return Ok(None) };
    let range = match after {
        Some(k) => table.range::<&[u8]>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))?,
        None => table.range::<&[u8]>(..)?,
    };
    Ok(Some(range))
}

fn next_entry<'a>(range: &mut Option<SnapshotRange<'a>>) -> Result<Option<SnapshotEntry<'a>>, redb::StorageError> {
    range.as_mut().and_then(Iterator::next).transpose()
}

/// A sync's snapshot open in a write transaction, for one commit of acknowledged rows.
pub(super) struct SnapshotWriter<'txn> {
    base: redb::Table<'txn, &'static [u8], &'static [u8]>,
    delta: redb::Table<'txn, &'static [u8], &'static [u8]>,
    /// Whether this commit writes into the delta (or into the base, the delta being empty).
    into_delta: bool,
    rows: u64,
}

impl<'txn> SnapshotWriter<'txn> {
    /// Opens a sync's snapshot for a commit of up to `changes` row changes. Unless they go to
    /// the delta ([`goes_to_delta`]), the delta is folded into the base first and they go to
    /// the base.
    pub(super) fn open(txn: &'txn WriteTransaction, sync: &str, changes: u64) -> Result<SnapshotWriter<'txn>, redb::Error> {
        let mut base = txn.open_table(def(&base_table(sync)))?;
        let delta_name = delta_table(sync);
        let mut delta = txn.open_table(def(&delta_name))?;
        let (base_rows, delta_rows) = (base.len()?, delta.len()?);
        let rows = match txn.open_table(SNAPSHOT_ROWS)?.get(sync)? {
            Some(rows) => rows.value(),
            None => base_rows,
        };
        let into_delta = goes_to_delta(changes, delta_rows, base_rows);
        if !into_delta && delta_rows > 0 {
            let started = std::time::Instant::now();
            for entry in delta.iter()? {
                let (key, value) = entry?;
                if value.value().is_empty() {
                    base.remove(key.value())?;
                } else {
                    base.insert(key.value(), value.value())?;
                }
            }
            drop(delta);
            txn.delete_table(def(&delta_name))?;
            delta = txn.open_table(def(&delta_name))?;
            tracing::debug!(sync, rows = delta_rows, ms = started.elapsed().as_millis() as u64, "snapshot delta folded into its base");
        }
        Ok(SnapshotWriter { base, delta, into_delta, rows })
    }

    /// Sets `key`'s entry to `value` (fingerprint ‖ row); returns the entry before.
    pub(super) fn upsert(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
        let before = if self.into_delta {
            match self.delta.insert(key, value)? {
                Some(before) => Some(before.value().to_vec()).filter(|v| !v.is_empty()),
                None => self.base.get(key)?.map(|v| v.value().to_vec()),
            }
        } else {
            self.base.insert(key, value)?.map(|v| v.value().to_vec())
        };
        self.rows += u64::from(before.is_none());
        Ok(before)
    }

    /// Removes `key`'s entry; returns it.
    pub(super) fn delete(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
        let before = if self.into_delta {
            let before = lookup(Some(&self.base), Some(&self.delta), key)?;
            if before.is_some() {
                self.delta.insert(key, &[][..])?;
            }
            before
        } else {
            self.base.remove(key)?.map(|v| v.value().to_vec())
        };
        self.rows = self.rows.saturating_sub(u64::from(before.is_some()));
        Ok(before)
    }

    /// Records the snapshot's size; call once, after the commit's last change.
    pub(super) fn finish(self, txn: &WriteTransaction, sync: &str) -> Result<(), redb::Error> {
        txn.open_table(SNAPSHOT_ROWS)?.insert(sync, self.rows)?;
        Ok(())
    }
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
        SyncMeta { primary_key: vec!["id".into()], destination: "d".into(), destination_plugin: "p".into(), key_types: vec![] }
    }

    /// Every entry, walked in chunks of `limit` as the plan's cursor walks them.
    fn walk(state: &StateStore, limit: usize) -> Vec<(Vec<u8>, [u8; 16])> {
        let (mut after, mut out) = (None, Vec::new());
        loop {
            let (mut keys, mut entries) = (Vec::new(), Vec::new());
            let next = state.snapshot_chunk_into("s", after.as_deref(), limit, &mut keys, &mut entries).unwrap();
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
        open_read(&txn, def(&delta_table("s"))).unwrap().map_or(0, |t| t.len().unwrap())
    }

    /// A commit: upserts (key, fingerprint byte) and deletes (key, `None`) of keys 0..=255.
    fn commit() -> impl Strategy<Value = Vec<(u8, Option<u8>)>> {
        prop::collection::vec((any::<u8>(), prop::option::weighted(0.8, any::<u8>())), 0..40)
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
                let base_len = state.read_table(def(&base_table("s")), || 0, |t| Ok(t.len().unwrap())).unwrap();
                prop_assert!(delta_len(&state) <= delta_bound(base_len), "the delta stays within its bound");
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
        let upserts = |keys: std::ops::Range<u32>, n: u8| -> Vec<JournalOp> { keys.map(|k| JournalOp::Upsert { key: key(k), fp: [n; 16], row: vec![n] }).collect() };
        state.apply("s", &meta(), &upserts(0..40_000, 1)).unwrap();
        assert_eq!(delta_len(&state), 0, "a load goes to the base");
        // The bound is an eighth of the base, 5,000; a commit of up to 1,250 goes to the delta.
        for start in [0, 1250, 2500] {
            state.apply("s", &meta(), &upserts(start..start + 1250, 2)).unwrap();
        }
        state.apply("s", &meta(), &[JournalOp::Delete { key: key(10) }, JournalOp::Delete { key: b"absent".to_vec() }]).unwrap();
        assert_eq!(delta_len(&state), 3750, "updates, one turned into a tombstone; nothing for a row that was not there");
        assert_eq!(state.snapshot_len("s").unwrap(), 39_999);
        state.apply("s", &meta(), &upserts(3750..5000, 3)).unwrap();
        assert_eq!(delta_len(&state), 5000, "up to the bound");
        state.apply("s", &meta(), &upserts(5000..5001, 3)).unwrap();
        assert_eq!(delta_len(&state), 0, "one more would pass the bound: folded first");
        assert_eq!(state.snapshot_len("s").unwrap(), 39_999);
        let entries = state.snapshot_entries("s", &[&key(9), &key(10), &key(3749), &key(3750), &key(39_999)]).unwrap();
        let fps: Vec<Option<u8>> = entries.iter().map(|e| e.as_ref().map(|d| d.fp[0])).collect();
        assert_eq!(fps, [Some(2), None, Some(2), Some(3), Some(1)]);
        assert_eq!(walk(&state, 16_384).len(), 39_999);

        state.apply("s", &meta(), &upserts(0..10, 4)).unwrap();
        assert_eq!(delta_len(&state), 10);
        state.apply("s", &meta(), &upserts(10..1261, 4)).unwrap();
        assert_eq!(delta_len(&state), 0, "a commit of more than a quarter of the bound goes to the base, the delta folded first");
        let entries = state.snapshot_entries("s", &[&key(0), &key(1260), &key(1261)]).unwrap();
        assert_eq!(entries.iter().map(|e| e.as_ref().map(|d| d.fp[0])).collect::<Vec<_>>(), [Some(4), Some(4), Some(2)]);

        // A chunk of a large commit (a journal replayed in chunks) goes where the whole would.
        state.apply("s", &meta(), &upserts(0..10, 5)).unwrap();
        assert_eq!(delta_len(&state), 10);
        state.apply_part("s", &meta(), &upserts(10..20, 5), 1251).unwrap();
        assert_eq!(delta_len(&state), 0, "folded, and the chunk written to the base");
        assert_eq!(state.snapshot_entries("s", &[&key(19)]).unwrap()[0].as_ref().map(|d| d.fp[0]), Some(5));
    }

    #[test]
    fn only_small_commits_go_to_the_delta() {
        assert!(goes_to_delta(31_250, 0, 1_000_000) && !goes_to_delta(31_251, 0, 1_000_000), "a 32nd of the base");
        assert!(goes_to_delta(10_000, 115_000, 1_000_000) && !goes_to_delta(10_000, 115_001, 1_000_000), "within an eighth");
        // An initial load, replayed in chunks: a commit's last, shorter chunk goes to the base too.
        assert!(!goes_to_delta(26_357, 0, 262_144));
    }

    /// A version 3 file (a snapshot in one table, no recorded size) opens as version 4 and
    /// reads the same; commits then keep its size.
    #[test]
    fn a_version_3_snapshot_reads_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = redb::Database::create(dir.path().join("state.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(super::super::META).unwrap().insert("format_version", 3u64).unwrap();
            let mut base = txn.open_table(def(&base_table("s"))).unwrap();
            for k in 0..10u8 {
                let mut value = vec![k; 16];
                value.push(k);
                base.insert(&[b'k', k][..], value.as_slice()).unwrap();
            }
            drop(base);
            txn.commit().unwrap();
        }
        let state = StateStore::open(dir.path()).unwrap();
        assert_eq!(state.snapshot_len("s").unwrap(), 10);
        assert_eq!(walk(&state, 3).len(), 10);
        state.apply("s", &meta(), &[JournalOp::Delete { key: vec![b'k', 4] }, JournalOp::Upsert { key: vec![b'k', 99], fp: [1; 16], row: vec![] }]).unwrap();
        assert_eq!(state.snapshot_len("s").unwrap(), 10);
        assert_eq!(state.snapshot_rows("s", &[&[b'k', 4], &[b'k', 5]]).unwrap(), [None, Some(vec![5])]);
    }
}
