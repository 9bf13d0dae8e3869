//! Run changelogs: what each run did to each row (values before, fingerprint sent), for
//! `runs undo` and `rows history`. Written by [`StateStore::apply`] in the snapshot's own
//! transaction; read and pruned here.

use super::error::{Failure, StateErrorKind};
use super::{StateError, StateOp, StateStore};
use redb::{ReadableTable, TableDefinition};

/// The table `changelog/NAME`: (run ID, encoded primary key) → `RowChange` (the entry
/// before, the fingerprint sent); (run ID, empty key) → JSON `ChangelogHeader`; and
/// (run ID, [`BLOCK_PREFIX`] + 8-byte sequence number) → a block of rows the run inserted
/// (see [`InsertBlock`]), and (run ID, [`BLOCK_RANGE_PREFIX`] + the same number) → the
/// smallest and largest key in that block, so one key is looked up without reading every
/// block. Pruned to the last `[state] keep_changelog_runs` runs of the sync.
pub(super) fn changelog_table(sync: &str) -> String {
    format!("changelog/{sync}")
}
/// The definition of a changelog table named `name` (see [`changelog_table`]).
pub(super) fn changelog_def(
    name: &str,
) -> TableDefinition<'_, (&'static str, &'static [u8]), &'static [u8]> {
    TableDefinition::new(name)
}

/// A page of a run's changelog: (encoded key, change) entries, and where the next page
/// starts (`None` after the last).
pub type ChangelogPage = (Vec<(Vec<u8>, crate::domain::RowChange)>, Option<Vec<u8>>);

impl StateStore {
    /// The header of a run's changelog, if the run delivered anything and is still retained.
    pub fn changelog_header(
        &self,
        sync: &str,
        run_id: &str,
    ) -> Result<Option<crate::domain::ChangelogHeader>, StateError> {
        self.read_table(
            StateOp::ReadChangelog,
            changelog_def(&changelog_table(sync)),
            || None,
            |table, doing| {
                let value = table.get((run_id, &[][..])).map_err(|e| doing.err(e))?;
                value
                    .map(|v| {
                        serde_json::from_slice(v.value())
                            .map_err(|e| doing.corrupt(format!("unreadable changelog header: {e}")))
                    })
                    .transpose()
            },
        )
    }

    /// Changelog entries of a run from where `after` left off (`None`: from the start): at
    /// least `limit` of them unless the run has fewer left: whole blocks of inserted rows
    /// first (each in the order the destination acknowledged its rows), then the other
    /// entries in key order. Returns the entries and where to go on from (`None` when the
    /// run has no more).
    pub fn changelog_chunk(
        &self,
        sync: &str,
        run_id: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ChangelogPage, StateError> {
        let limit = limit.max(1);
        self.read_table(
            StateOp::ReadChangelog,
            changelog_def(&changelog_table(sync)),
            || (Vec::new(), None),
            |table, doing| {
                let start = after.unwrap_or(&[]);
                let mut out = Vec::new();
                let mut last = None;
                for entry in table.range((run_id, start)..).map_err(|e| doing.err(e))? {
                    let (k, v) = entry.map_err(|e| doing.err(e))?;
                    let (run, key) = k.value();
                    if run != run_id || out.len() >= limit {
                        break;
                    }
                    last = Some(key.to_vec());
                    if key.is_empty() || Some(key) == after {
                        continue;
                    }
                    if key[0] == BLOCK_RANGE_PREFIX {
                        continue;
                    }
                    if key[0] == BLOCK_PREFIX {
                        let rows = decode_block(v.value()).ok_or_else(|| {
                            doing.corrupt(format!("corrupt changelog block of run {run_id}"))
                        })?;
                        out.extend(
                            rows.into_iter().map(|(key, sent)| {
                                (key, crate::domain::RowChange::Inserted { sent })
                            }),
                        );
                        continue;
                    }
                    let change = crate::domain::RowChange::decode(v.value())
                        .ok_or_else(|| doing.corrupt("corrupt changelog entry"))?;
                    out.push((key.to_vec(), change));
                }
                let more = if out.len() >= limit { last } else { None };
                Ok((out, more))
            },
        )
    }

    /// What each of `run_ids` did to one key (`None` where it did not touch it).
    pub fn changelog_entries(
        &self,
        sync: &str,
        run_ids: &[&str],
        key: &[u8],
    ) -> Result<Vec<Option<crate::domain::RowChange>>, StateError> {
        self.read_table(
            StateOp::ReadChangelog,
            changelog_def(&changelog_table(sync)),
            || vec![None; run_ids.len()],
            |table, doing| {
                run_ids
                    .iter()
                    .map(|run| {
                        if let Some(v) = table.get((*run, key)).map_err(|e| doing.err(e))? {
                            return Ok(crate::domain::RowChange::decode(v.value()));
                        }
                        // Not changed on its own: maybe inserted, in one of the run's blocks whose
                        // key range holds it.
                        let corrupt =
                            || doing.corrupt(format!("corrupt changelog block of run {run}"));
                        for range in table
                            .range(
                                (*run, &[BLOCK_RANGE_PREFIX][..])
                                    ..(*run, &[BLOCK_RANGE_PREFIX + 1][..]),
                            )
                            .map_err(|e| doing.err(e))?
                        {
                            let (k, v) = range.map_err(|e| doing.err(e))?;
                            let (smallest, largest) =
                                decode_range(v.value()).ok_or_else(corrupt)?;
                            if key < smallest || key > largest {
                                continue;
                            }
                            let mut block_key = k.value().1.to_vec();
                            block_key[0] = BLOCK_PREFIX;
                            let Some(block) = table
                                .get((*run, block_key.as_slice()))
                                .map_err(|e| doing.err(e))?
                            else {
                                continue;
                            };
                            if let Some(sent) =
                                find_in_block(block.value(), key).ok_or_else(corrupt)?
                            {
                                return Ok(Some(crate::domain::RowChange::Inserted { sent }));
                            }
                        }
                        Ok(None)
                    })
                    .collect()
            },
        )
    }

    /// Keeps the changelogs of the newest `keep` runs of a sync that have one; drops older ones.
    pub fn prune_changelog(&self, sync: &str, keep: u64) -> Result<(), StateError> {
        let doing = self.doing(StateOp::PruneChangelog);
        let name = changelog_table(sync);
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        {
            let mut table = match txn.open_table(changelog_def(&name)) {
                Ok(t) => t,
                Err(e) => return Err(doing.err(e)),
            };
            // Runs with a changelog, oldest first (run IDs are ULIDs: they sort by time).
            let mut runs: Vec<String> = Vec::new();
            loop {
                let from = runs.last().map(|r| format!("{r}\u{0}")).unwrap_or_default();
                let next = table
                    .range((from.as_str(), &[][..])..)
                    .map_err(|e| doing.err(e))?
                    .next();
                match next {
                    Some(entry) => {
                        runs.push(entry.map_err(|e| doing.err(e))?.0.value().0.to_string())
                    }
                    None => break,
                }
            }
            let excess = runs
                .len()
                .saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX));
            for run in &runs[..excess] {
                let end = format!("{run}\u{0}");
                table
                    .retain_in((run.as_str(), &[][..])..(end.as_str(), &[][..]), |_, _| {
                        false
                    })
                    .map_err(|e| doing.err(e))?;
            }
        }
        txn.commit().map_err(|e| doing.err(e))
    }
}

/// Changelog keys of insert blocks start with this byte. No encoded primary key does (keys
/// are MessagePack arrays: 0x90 and up), and the header's key is empty, so a run's blocks
/// sort between its header and its other entries.
pub(super) const BLOCK_PREFIX: u8 = 0x00;
/// Changelog keys of a block's key range: this byte, then the block's sequence number.
pub(super) const BLOCK_RANGE_PREFIX: u8 = 0x01;

/// Rows per block: large enough that the B-tree insert is paid once per thousands of rows,
/// small enough that `rows history` reads little to find one key (the blocks whose key range
/// holds it, usually one: rows are acknowledged in about key order).
pub(super) const BLOCK_ROWS: u32 = 4096;

/// Why an insert block could not be written.
#[derive(Debug, thiserror::Error)]
pub(super) enum FlushError {
    /// The changelog table could not be read or written.
    #[error(transparent)]
    Storage(#[from] redb::StorageError),
    /// The run's last block has a key this code does not write.
    #[error("corrupt changelog block key in run {run}")]
    CorruptBlockKey { run: String },
}

impl Failure for FlushError {
    fn kind(&self) -> StateErrorKind {
        match self {
            FlushError::Storage(e) => e.kind(),
            FlushError::CorruptBlockKey { .. } => StateErrorKind::Corrupt,
        }
    }
}

/// The rows a run inserted, kept as blocks of (key, fingerprint sent) instead of one entry
/// each: an initial sync inserts every row, and a B-tree insert per row cost about as much
/// as the snapshot's own (1.5 s per million rows, docs/benchmarks-history.md). Stored form: the row
/// count (u32 LE), then per row the key's length (u32 LE), the key and the 16-byte
/// fingerprint. A run sends each key once (one journal holds one run's acknowledgements,
/// each row once), so a key of a run is in one block or has one entry of its own, never
/// both; a journal applied twice logs nothing the second time (see [`StateStore::apply`]).
#[derive(Default)]
pub(super) struct InsertBlock {
    rows: u32,
    bytes: Vec<u8>,
    /// The smallest and largest key in the block.
    smallest: Vec<u8>,
    largest: Vec<u8>,
    /// The run's next block number, once known in this transaction.
    next: Option<u64>,
}

impl InsertBlock {
    pub(super) fn push(&mut self, key: &[u8], sent: &crate::domain::Fingerprint) {
        let first = self.rows == 0;
        if first {
            self.bytes.clear();
            self.bytes.extend_from_slice(&[0; 4]);
        }
        if first || key < self.smallest.as_slice() {
            self.smallest.clear();
            self.smallest.extend_from_slice(key);
        }
        if first || key > self.largest.as_slice() {
            self.largest.clear();
            self.largest.extend_from_slice(key);
        }
        self.rows += 1;
        put_prefixed(&mut self.bytes, key);
        self.bytes.extend_from_slice(sent);
    }

    pub(super) fn is_full(&self) -> bool {
        self.rows >= BLOCK_ROWS
    }

    /// Writes the block (if it has rows) as the run's next one, with its key range, and
    /// empties it. A run's last block with a key not written by this code (not 9 bytes, or
    /// the largest number) is an error rather than a reason to overwrite a block.
    pub(super) fn flush(
        &mut self,
        changelog: &mut redb::Table<(&'static str, &'static [u8]), &'static [u8]>,
        run: &str,
    ) -> Result<(), FlushError> {
        if self.rows == 0 {
            return Ok(());
        }
        let corrupt = || FlushError::CorruptBlockKey {
            run: run.to_string(),
        };
        let seq = match self.next {
            Some(seq) => seq,
            None => {
                let last = changelog
                    .range((run, &[BLOCK_PREFIX][..])..(run, &[BLOCK_PREFIX + 1][..]))?
                    .next_back()
                    .transpose()?;
                match last {
                    None => 0,
                    Some((k, _)) => {
                        let n: [u8; 8] = k
                            .value()
                            .1
                            .get(1..)
                            .and_then(|b| b.try_into().ok())
                            .ok_or_else(corrupt)?;
                        u64::from_be_bytes(n).checked_add(1).ok_or_else(corrupt)?
                    }
                }
            }
        };
        self.bytes[..4].copy_from_slice(&self.rows.to_le_bytes());
        let mut key = [BLOCK_PREFIX; 9];
        key[1..].copy_from_slice(&seq.to_be_bytes());
        changelog.insert((run, &key[..]), self.bytes.as_slice())?;
        key[0] = BLOCK_RANGE_PREFIX;
        let mut range = Vec::with_capacity(8 + self.smallest.len() + self.largest.len());
        put_prefixed(&mut range, &self.smallest);
        put_prefixed(&mut range, &self.largest);
        changelog.insert((run, &key[..]), range.as_slice())?;
        self.next = seq.checked_add(1);
        self.rows = 0;
        Ok(())
    }

    /// For the next run in the same transaction: its block numbers are its own.
    pub(super) fn start_run(&mut self) {
        self.rows = 0;
        self.next = None;
    }
}

/// The (key, fingerprint) rows of a stored block; `None` if it is malformed.
fn decode_block(v: &[u8]) -> Option<Vec<(Vec<u8>, crate::domain::Fingerprint)>> {
    let mut rows = Vec::new();
    walk_block(v, |key, fp| {
        rows.push((key.to_vec(), fp));
        false
    })?;
    Some(rows)
}

/// The fingerprint a block holds for `key`: `Some(None)` if it has no such row, `None` if
/// the block is malformed.
fn find_in_block(v: &[u8], key: &[u8]) -> Option<Option<crate::domain::Fingerprint>> {
    let mut found = None;
    walk_block(v, |k, fp| {
        if k == key {
            found = Some(fp);
        }
        found.is_some()
    })?;
    Some(found)
}

/// The (smallest, largest) key of a stored block range; `None` if it is malformed.
fn decode_range(mut v: &[u8]) -> Option<(&[u8], &[u8])> {
    let smallest = take_prefixed(&mut v)?;
    let largest = take_prefixed(&mut v)?;
    v.is_empty().then_some((smallest, largest))
}

/// Appends `bytes` after their length (u32 LE): how blocks and ranges store keys.
fn put_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Takes what [`put_prefixed`] wrote off the front of `rest`; `None` if it is cut short.
fn take_prefixed<'v>(rest: &mut &'v [u8]) -> Option<&'v [u8]> {
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let bytes = rest.get(4..4 + len)?;
    *rest = &rest[4 + len..];
    Some(bytes)
}

/// Calls `visit` with each row of a block until it returns true; `None` if the block is
/// malformed (before the row that stopped the walk).
fn walk_block(
    v: &[u8],
    mut visit: impl FnMut(&[u8], crate::domain::Fingerprint) -> bool,
) -> Option<()> {
    let count = u32::from_le_bytes(v.get(..4)?.try_into().ok()?);
    let mut rest = &v[4..];
    for _ in 0..count {
        let key = take_prefixed(&mut rest)?;
        let fp: crate::domain::Fingerprint = rest.get(..16)?.try_into().ok()?;
        rest = &rest[16..];
        if visit(key, fp) {
            return Some(());
        }
    }
    rest.is_empty().then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Delivered, JournalOp, RowChange};
    use crate::state::testing::{delivered, header, meta, upsert};

    #[test]
    fn the_changelog_keeps_values_before_and_sent_and_survives_a_second_replay() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let meta = meta();
        state
            .apply("s", &meta, &[header("R1"), upsert("a", 1), upsert("b", 2)])
            .unwrap();
        let second = [
            header("R2"),
            upsert("a", 3),
            JournalOp::Delete { key: b"b".to_vec() },
        ];
        state.apply("s", &meta, &second).unwrap();
        // The same journal applied again (a crash between commit and truncation).
        state.apply("s", &meta, &second).unwrap();
        let r2 = state.changelog_chunk("s", "R2", None, 10).unwrap().0;
        assert_eq!(
            r2,
            vec![
                (
                    b"a".to_vec(),
                    RowChange::Updated {
                        before: delivered(1),
                        sent: [3; 16]
                    }
                ),
                (
                    b"b".to_vec(),
                    RowChange::Deleted {
                        before: delivered(2)
                    }
                ),
            ]
        );
        let (r1, more) = state.changelog_chunk("s", "R1", None, 10).unwrap();
        assert_eq!(
            r1,
            vec![
                (b"a".to_vec(), RowChange::Inserted { sent: [1; 16] }),
                (b"b".to_vec(), RowChange::Inserted { sent: [2; 16] })
            ]
        );
        assert_eq!(more, None, "R1 has no more entries");
        assert_eq!(
            state.changelog_header("s", "R2").unwrap().unwrap().run_id,
            "R2"
        );
        assert_eq!(
            state
                .changelog_entries("s", &["R2", "R1", "R0"], b"a")
                .unwrap()[1],
            Some(RowChange::Inserted { sent: [1; 16] })
        );

        state.prune_changelog("s", 1).unwrap();
        assert!(
            state.changelog_header("s", "R1").unwrap().is_none()
                && state
                    .changelog_chunk("s", "R1", None, 10)
                    .unwrap()
                    .0
                    .is_empty()
        );
        assert_eq!(
            state.changelog_chunk("s", "R2", None, 10).unwrap().0.len(),
            2
        );
    }

    /// Inserted rows are logged in blocks: every one is read back once, in pages of any
    /// size, found by key, and a journal applied twice adds nothing; an entry of version 2
    /// (one per inserted row) still reads beside them.
    #[test]
    fn inserted_rows_are_logged_in_blocks_and_read_back_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let meta = meta();
        let key = |i: u32| format!("k{i:05}");
        let first: Vec<JournalOp> = std::iter::once(header("R1"))
            .chain((0..5000).map(|i| upsert(&key(i), (i % 7) as u8)))
            .collect();
        // The same run goes on in another transaction (a journal committed midway).
        let second: Vec<JournalOp> = std::iter::once(header("R1"))
            .chain((5000..6000).map(|i| upsert(&key(i), 1)))
            .collect();
        state.apply("s", &meta, &first).unwrap();
        state.apply("s", &meta, &second).unwrap();
        // Applied again: every row is already as it says, nothing is logged twice.
        state.apply("s", &meta, &second).unwrap();
        state.apply("s", &meta, &first).unwrap();
        state
            .apply("s", &meta, &[header("R2"), upsert(&key(0), 9)])
            .unwrap();
        {
            // An entry as version 2 wrote it, one per inserted row.
            let txn = state.db.begin_write().unwrap();
            let name = changelog_table("s");
            let mut table = txn.open_table(changelog_def(&name)).unwrap();
            table
                .insert(
                    ("R1", &b"legacy"[..]),
                    RowChange::Inserted { sent: [8; 16] }.encode().as_slice(),
                )
                .unwrap();
            drop(table);
            txn.commit().unwrap();
        }
        for page in [1, 999, 4096, 100_000] {
            let (mut after, mut seen) = (None, Vec::new());
            loop {
                let (rows, more) = state
                    .changelog_chunk("s", "R1", after.as_deref(), page)
                    .unwrap();
                seen.extend(rows);
                match more {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen.len(), 6001, "pages of {page}");
            let mut keys: Vec<&[u8]> = seen.iter().map(|(k, _)| k.as_slice()).collect();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), 6001, "each row once, pages of {page}");
            assert!(seen
                .iter()
                .all(|(_, c)| matches!(c, RowChange::Inserted { .. })));
        }
        let r2 = state.changelog_chunk("s", "R2", None, 10).unwrap();
        assert_eq!(
            r2,
            (
                vec![(
                    key(0).into_bytes(),
                    RowChange::Updated {
                        before: delivered(0),
                        sent: [9; 16]
                    }
                )],
                None
            )
        );
        let found = state
            .changelog_entries("s", &["R1"], key(4321).as_bytes())
            .unwrap();
        assert_eq!(
            found,
            vec![Some(RowChange::Inserted {
                sent: [(4321 % 7) as u8; 16]
            })]
        );
        assert_eq!(
            state.changelog_entries("s", &["R1"], b"legacy").unwrap(),
            vec![Some(RowChange::Inserted { sent: [8; 16] })]
        );
        assert_eq!(
            state.changelog_entries("s", &["R1"], b"k99999").unwrap(),
            vec![None]
        );
        assert_eq!(
            state
                .changelog_entries("s", &["R1"], key(5999).as_bytes())
                .unwrap(),
            vec![Some(RowChange::Inserted { sent: [1; 16] })],
            "the last block"
        );
        assert_eq!(
            state
                .changelog_entries("s", &["R2", "R1"], key(0).as_bytes())
                .unwrap()[1],
            Some(RowChange::Inserted { sent: [0; 16] }),
            "the first block"
        );
    }

    #[test]
    fn row_changes_round_trip_their_stored_form() {
        for change in [
            RowChange::Inserted { sent: [1; 16] },
            RowChange::Updated {
                before: delivered(1),
                sent: [2; 16],
            },
            RowChange::Updated {
                before: Delivered {
                    fp: [2; 16],
                    row: vec![],
                },
                sent: [3; 16],
            },
            RowChange::Deleted {
                before: delivered(9),
            },
        ] {
            assert_eq!(RowChange::decode(&change.encode()), Some(change));
        }
        assert_eq!(
            RowChange::decode(&[2, 1, 0]),
            None,
            "a truncated entry is refused, not misread"
        );
    }
}
