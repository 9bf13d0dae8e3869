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
//!
//! This file holds the tables' names and the delta's policy; reading is in `snapshot_read.rs`,
//! writing (and the migration of per-row bases) in `snapshot_write.rs`.

use super::block;
use redb::{ReadableTable, TableDefinition};

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
pub(super) fn delta_row(value: &[u8]) -> Option<&[u8]> {
    Some(value).filter(|v| !v.is_empty())
}

/// The stored value of `key` in the base: in the first block whose last key is `key` or
/// after it.
pub(super) fn base_get<B: ReadableTable<&'static [u8], &'static [u8]>>(
    base: &B,
    key: &[u8],
) -> Result<Option<Vec<u8>>, redb::StorageError> {
    let Some(entry) = base.range::<&[u8]>(key..)?.next() else {
        return Ok(None);
    };
    let (_, block) = entry?;
    Ok(block::find(block.value(), key)?.map(<[u8]>::to_vec))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JournalOp;
    use crate::state::testing::{delta_len, meta, walk};
    use crate::state::StateStore;

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
}
