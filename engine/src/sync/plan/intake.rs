//! The plan's intake: model rows as the source reads them.
//!
//! While rows arrive in key order (a model ordered by a non-negative integer primary key,
//! say `ORDER BY id`), each one is merged with the snapshot at once: the diff runs while the
//! source reads, and nothing is held in memory or sorted. (The keys of unchanged rows still
//! go to a file as they are merged, in case of a fall back.)
//!
//! From the first row out of key order on, rows go to a [`ModelSpill`] instead. The rows
//! merged so far are taken back into that spill: added and changed ones from the plan files,
//! unchanged ones from the snapshot (an unchanged row is the row last delivered, so only its
//! key was written). The plan files are emptied, and the merge starts over from the sorted
//! spill once the model is read. The result is the same plan either way; only the cost
//! differs. The source is read once in both cases.
//!
//! Finding the disorder midway costs more than sorting from the start (the merging done so
//! far is thrown away), so a run records whether its rows came out of key order (`RunRecord::out_of_key_order`) and
//! the sync's next run sorts from the start if it did ([`PlanOptions::sort_first`]). Removals
//! found while merging are looked up only once the merge is known to stand: a model whose
//! first row has a high key "removes" every snapshot key below it until the next row shows
//! the order is not kept.

use super::built::PlanOptions;
use super::cursor::SnapshotCursor;
use super::file::{key_text, PlanReader};
use super::merge::{Merge, RowRef};
use super::spill::{Fingerprint, ModelSpill, DEFAULT_MEMORY_BUDGET};
use super::writer::{read_key, PlanWriter};
use crate::domain::Change;
use crate::state::StateStore;
use crate::sync::progress::Progress;
use crate::sync::read::ModelSink;
use crate::sync::run::Abort;
use std::path::Path;

/// Where rows go now.
enum Mode<'a> {
    /// Every row so far came in key order: merged as it arrives.
    Merging(Merge<SnapshotCursor<'a>>),
    /// A row came out of order: everything is sorted before the merge.
    Sorting(ModelSpill),
}

/// Model rows in, plan steps out; see the module docs.
pub(crate) struct Intake<'a> {
    writer: PlanWriter<'a>,
    mode: Mode<'a>,
    state: &'a StateStore,
    sync: &'a str,
    use_snapshot: bool,
    full_resync: bool,
    keep_unchanged: bool,
    tmp_dir: &'a Path,
    /// Model rows taken in.
    pub(crate) rows: u64,
    /// The key of the last row taken in.
    last_key: Vec<u8>,
    /// Whether a row came out of key order (whether the intake merged or sorted).
    pub(crate) out_of_order: bool,
}

impl<'a> Intake<'a> {
    /// `keep_unchanged`: whether the plan keeps unchanged rows (whole-model checks read them).
    /// With `options.sort_first`, rows are sorted from the start.
    pub(crate) fn new(
        mut writer: PlanWriter<'a>,
        state: &'a StateStore,
        sync: &'a str,
        use_snapshot: bool,
        options: PlanOptions,
        keep_unchanged: bool,
        tmp_dir: &'a Path,
    ) -> std::io::Result<Intake<'a>> {
        let full_resync = options.full_resync;
        let mode = if options.sort_first {
            writer.write_unchanged = keep_unchanged;
            Mode::Sorting(ModelSpill::new(tmp_dir, DEFAULT_MEMORY_BUDGET)?)
        } else {
            // While merging, unchanged rows are written too (their keys only, unless a check
            // reads them): a fall back to sorting takes them back (see the module docs).
            // Removals are looked up only once the merge is known to stand.
            writer.write_unchanged = keep_unchanged;
            if !keep_unchanged {
                writer.unchanged_keys = Some(std::io::BufWriter::with_capacity(
                    1 << 16,
                    tempfile::tempfile_in(tmp_dir)?,
                ));
            }
            writer.deferred_removals = Some(std::io::BufWriter::with_capacity(
                1 << 16,
                tempfile::tempfile_in(tmp_dir)?,
            ));
            Mode::Merging(Merge::new(
                SnapshotCursor::new(state, sync, use_snapshot),
                full_resync,
            ))
        };
        Ok(Intake {
            writer,
            mode,
            state,
            sync,
            use_snapshot,
            full_resync,
            keep_unchanged,
            tmp_dir,
            rows: 0,
            last_key: Vec::new(),
            out_of_order: false,
        })
    }

    fn io(&self) -> impl Fn(std::io::Error) -> Abort {
        Abort::io(format!("writing plan files in {}", self.tmp_dir.display()))
    }

    /// Switches to sorting: the rows merged so far go back from the plan files into a
    /// spill, and the plan starts over empty.
    fn fall_back_to_sorting(&mut self) -> Result<(), Abort> {
        tracing::debug!(sync = %self.sync, after_rows = self.rows, "model rows are not in key order: sorting them before the diff");
        self.writer.flush()?;
        let mut spill = ModelSpill::new(self.tmp_dir, DEFAULT_MEMORY_BUDGET).map_err(self.io())?;
        let unchanged = if self.writer.write_unchanged {
            Some(Change::Unchanged)
        } else {
            None
        };
        for change in [Change::Added, Change::Changed]
            .into_iter()
            .chain(unchanged)
        {
            let file = self.writer.file(change);
            std::io::Seek::rewind(&mut &*file).map_err(self.io())?;
            let mut frames = PlanReader::new(file);
            while let Some(row) = frames.next().map_err(self.io())? {
                spill.push(&row.key, row.fp, &row.row).map_err(self.io())?;
            }
        }
        if let Some(keys) = self.writer.unchanged_keys.take() {
            // Unchanged rows are what the snapshot holds for their keys: read back from there.
            let mut file = keys
                .into_inner()
                .map_err(|e| e.into_error())
                .map_err(self.io())?;
            std::io::Seek::rewind(&mut file).map_err(self.io())?;
            let mut keys = std::io::BufReader::with_capacity(1 << 16, file);
            let mut group: Vec<(Vec<u8>, Fingerprint)> = Vec::new();
            while let Some(key) = read_key(&mut keys).map_err(self.io())? {
                let mut fp = [0u8; 16];
                std::io::Read::read_exact(&mut keys, &mut fp).map_err(self.io())?;
                group.push((key, fp));
                if group.len() >= 1024 {
                    self.take_back_unchanged(&mut group, &mut spill)?;
                }
            }
            self.take_back_unchanged(&mut group, &mut spill)?;
        }
        self.writer.restart().map_err(self.io())?;
        self.writer.write_unchanged = self.keep_unchanged;
        self.mode = Mode::Sorting(spill);
        Ok(())
    }

    /// Puts unchanged rows (key, fingerprint when merged) back into the spill, from the
    /// snapshot, and empties `group`.
    fn take_back_unchanged(
        &self,
        group: &mut Vec<(Vec<u8>, Fingerprint)>,
        spill: &mut ModelSpill,
    ) -> Result<(), Abort> {
        if group.is_empty() {
            return Ok(());
        }
        let keys: Vec<&[u8]> = group.iter().map(|(k, _)| k.as_slice()).collect();
        let rows = self.state.snapshot_entries(self.sync, &keys)?;
        for ((key, fp), row) in group.iter().zip(rows) {
            // Another process committed a run of this sync meanwhile (`sync plan` does not
            // hold the sync's lease): this plan no longer stands.
            let row = row
                .filter(|row| row.fp == *fp)
                .ok_or_else(|| Abort::SnapshotMoved {
                    sync: self.sync.to_string(),
                    key: key_text(key),
                })?;
            spill.push(key, row.fp, &row.row).map_err(self.io())?;
        }
        group.clear();
        Ok(())
    }

    /// After the last row: finishes the merge (first sorting the spill, if it came to that)
    /// and returns the written plan.
    pub(crate) fn finish(self) -> Result<PlanWriter<'a>, Abort> {
        let Intake {
            mut writer,
            mode,
            state,
            sync,
            use_snapshot,
            full_resync,
            rows,
            tmp_dir,
            ..
        } = self;
        let io = Abort::io(format!("writing plan files in {}", tmp_dir.display()));
        match mode {
            Mode::Merging(merge) => {
                merge.finish(&mut |step| writer.step(step))?;
                writer.resolve_removed()?;
            }
            Mode::Sorting(spill) => {
                let mut sorted = spill.into_sorted().map_err(&io)?;
                let mut merge =
                    Merge::new(SnapshotCursor::new(state, sync, use_snapshot), full_resync);
                let mut progress = Progress::new("planned", rows);
                while let Some(entry) = sorted.next_entry().map_err(&io)? {
                    merge.entry(
                        RowRef {
                            key: &entry.key,
                            fp: entry.fp,
                            row: &entry.row,
                        },
                        &mut |step| writer.step(step),
                    )?;
                    progress.advance(1);
                }
                merge.finish(&mut |step| writer.step(step))?;
                progress.finish();
            }
        }
        writer.flush()?;
        Ok(writer)
    }
}

impl ModelSink for Intake<'_> {
    fn push(&mut self, key: &[u8], fp: Fingerprint, row: &[u8]) -> Result<(), Abort> {
        self.rows += 1;
        // Equal keys stay in order: the merge (or the sort) reports them as duplicates.
        if !self.out_of_order && key < self.last_key.as_slice() {
            self.out_of_order = true;
            if matches!(self.mode, Mode::Merging(_)) {
                self.fall_back_to_sorting()?;
            }
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        match &mut self.mode {
            Mode::Merging(merge) => {
                let writer = &mut self.writer;
                merge.entry(RowRef { key, fp, row }, &mut |step| writer.step(step))
            }
            Mode::Sorting(spill) => spill
                .push(key, fp, row)
                .map_err(Abort::io("writing the plan")),
        }
    }
}

/// The plan must not depend on the order the model's rows arrive in: merged as they come
/// (in key order), or sorted after a fall back at any row, it has the same changes, counts
/// and fingerprint.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ChangelogHeader, DiffCounts, JournalOp};
    use crate::state::SyncMeta;
    use backflow_plugin_sdk::codec::{write_int, write_row_header};
    use proptest::prelude::*;

    fn key(n: u16) -> Vec<u8> {
        let mut k = Vec::new();
        write_row_header(&mut k, 1);
        write_int(&mut k, i64::from(n));
        k
    }

    /// A state whose snapshot holds `rows` (key, version): fingerprint `[version; 16]`.
    fn state_with(rows: &[(u16, u8)]) -> (tempfile::TempDir, StateStore) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let meta = SyncMeta {
            primary_key: vec!["id".into()],
            destination: "d".into(),
            destination_plugin: "p".into(),
            key_types: vec![],
        };
        let mut ops = vec![JournalOp::Begin(ChangelogHeader {
            run_id: "R1".into(),
            mode: "mirror".into(),
            columns: vec![],
            key_columns: vec![],
            undo_of: None,
        })];
        ops.extend(rows.iter().map(|&(k, v)| JournalOp::Upsert {
            key: key(k),
            fp: [v; 16],
            row: vec![v],
        }));
        state.apply("s", &meta, &ops).unwrap();
        (dir, state)
    }

    /// What a plan came to: counts, fingerprint, duplicates, every file's frames, whether
    /// the intake sorted, and the duplicated keys it gives as examples.
    type Outcome = (
        DiffCounts,
        u128,
        u64,
        Vec<Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>>,
        bool,
        Vec<Vec<u8>>,
    );

    fn plan(
        state: &StateStore,
        model: &[(u16, u8)],
        keep_unchanged: bool,
        full_resync: bool,
        sort_first: bool,
    ) -> Outcome {
        let tmp = tempfile::tempdir().unwrap();
        let files = [(); 4].map(|_| tempfile::tempfile().unwrap());
        let writer = PlanWriter::new(state, "s", &files, Default::default(), tmp.path());
        let options = PlanOptions {
            full_resync,
            sort_first,
        };
        let mut intake = Intake::new(
            writer,
            state,
            "s",
            true,
            options,
            keep_unchanged,
            tmp.path(),
        )
        .unwrap();
        for &(k, v) in model {
            intake.push(&key(k), [v; 16], &[v]).unwrap();
        }
        let sorted = intake.out_of_order;
        let writer = intake.finish().unwrap();
        let frames = files
            .iter()
            .map(|f| {
                let mut f = f;
                std::io::Seek::rewind(&mut f).unwrap();
                let mut reader = PlanReader::new(f);
                let mut out = Vec::new();
                while let Some(r) = reader.next().unwrap() {
                    out.push((r.key, r.row, r.before));
                }
                out
            })
            .collect();
        let samples = writer.duplicate_samples.iter().cloned().collect();
        (
            writer.diff,
            writer.fingerprint.digest128(),
            writer.duplicates,
            frames,
            sorted,
            samples,
        )
    }

    #[test]
    fn rows_in_key_order_are_diffed_as_they_come_and_one_out_of_order_at_the_end_sorts_them() {
        let (_dir, state) = state_with(&[(1, 1), (2, 1), (4, 1), (300, 1)]);
        let in_order: Vec<(u16, u8)> = vec![(1, 1), (2, 2), (3, 1), (300, 1), (1000, 1)];
        let merged = plan(&state, &in_order, false, false, false);
        assert!(
            !merged.4,
            "in key order (1 < 2 < 3 < 300 < 1000 as encoded keys): no sort"
        );
        assert_eq!(
            (
                merged.0.added,
                merged.0.changed,
                merged.0.removed,
                merged.0.unchanged
            ),
            (2, 1, 1, 2)
        );
        assert!(
            merged.3[Change::Unchanged as usize].is_empty(),
            "unchanged rows are dropped when no check reads them"
        );
        assert_eq!(
            merged.3[Change::Changed as usize],
            vec![(key(2), vec![2], vec![1])],
            "a change carries the row before"
        );
        assert_eq!(
            merged.3[Change::Removed as usize],
            vec![(key(4), vec![], vec![1])]
        );

        let mut late = in_order.clone();
        late.rotate_left(1); // key 1 comes last
        let sorted = plan(&state, &late, false, false, false);
        assert!(sorted.4, "key 1 after key 1000: sorted");
        assert_eq!(
            (sorted.0, sorted.1, sorted.2, sorted.3),
            (merged.0, merged.1, merged.2, merged.3)
        );
    }

    /// A fall back takes unchanged rows back from the snapshot: if a run of the sync
    /// changed one of them meanwhile (`sync plan` holds no lease), the plan stops instead of
    /// planning the new row as unchanged.
    #[test]
    fn a_fall_back_stops_if_the_snapshot_changed_meanwhile() {
        let (_dir, state) = state_with(&[(1, 1), (2, 1)]);
        let tmp = tempfile::tempdir().unwrap();
        let files = [(); 4].map(|_| tempfile::tempfile().unwrap());
        let writer = PlanWriter::new(&state, "s", &files, Default::default(), tmp.path());
        let mut intake = Intake::new(
            writer,
            &state,
            "s",
            true,
            PlanOptions::default(),
            false,
            tmp.path(),
        )
        .unwrap();
        intake.push(&key(1), [1; 16], &[1]).unwrap();
        intake.push(&key(2), [1; 16], &[1]).unwrap();
        let meta = SyncMeta {
            primary_key: vec!["id".into()],
            destination: "d".into(),
            destination_plugin: "p".into(),
            key_types: vec![],
        };
        state
            .apply(
                "s",
                &meta,
                &[JournalOp::Upsert {
                    key: key(2),
                    fp: [7; 16],
                    row: vec![7],
                }],
            )
            .unwrap();
        let Err(e) = intake.push(&key(0), [1; 16], &[1]) else {
            panic!("the fall back must notice")
        };
        assert!(
            e.to_string().contains("changed while the plan was made"),
            "{e}"
        );
    }

    #[test]
    fn a_repeated_key_is_a_duplicate_whether_merged_or_sorted() {
        let (_dir, state) = state_with(&[]);
        assert_eq!(
            plan(&state, &[(1, 1), (1, 2), (2, 1)], false, false, false).2,
            1
        );
        assert_eq!(
            plan(&state, &[(2, 1), (1, 1), (2, 2)], false, false, false).2,
            1
        );
        assert_eq!(
            plan(&state, &[(2, 1), (2, 2), (1, 1)], false, false, false).2,
            1
        );
    }

    proptest! {
        // Each case writes a state file (redb, synced to disk) and three plans, so these run
        // 256 cases unless PROPTEST_CASES says otherwise: at 1024 they took 7 s on an idle
        // machine and 50 s each right after a build, when every sync waits for the disk.
        #![proptest_config(ProptestConfig::with_cases(crate::proptest_cases::cases_or(256)))]

        /// Repeated keys are counted, and given as examples, the same way whatever the order
        /// (merged until the first row out of order, or sorted from the start).
        #[test]
        fn duplicates_do_not_depend_on_the_order_rows_arrive_in(
            model in proptest::collection::vec((0u16..12, 0u8..3), 0..40),
            snapshot in proptest::collection::btree_map(0u16..12, 0u8..3, 0..8),
        ) {
            let snapshot: Vec<(u16, u8)> = snapshot.into_iter().collect();
            let (_dir, state) = state_with(&snapshot);
            let mut in_order = model.clone();
            in_order.sort_by_key(|&(k, _)| k);
            let merged = plan(&state, &in_order, false, false, false);
            let either = plan(&state, &model, false, false, false);
            let sorted_first = plan(&state, &model, false, false, true);
            let mut distinct = in_order.iter().map(|&(k, _)| k).collect::<Vec<_>>();
            distinct.dedup();
            prop_assert_eq!(merged.2, (in_order.len() - distinct.len()) as u64);
            prop_assert_eq!((merged.2, &merged.5), (either.2, &either.5));
            prop_assert_eq!((merged.2, &merged.5), (sorted_first.2, &sorted_first.5));
            prop_assert!(merged.5.len() <= 5);
        }

        #[test]
        fn the_plan_does_not_depend_on_the_order_rows_arrive_in(
            snapshot in proptest::collection::btree_map(0u16..400, 0u8..3, 0..60),
            model in proptest::collection::btree_map(0u16..400, 0u8..3, 0..60),
            order in proptest::collection::vec(any::<u32>(), 60),
            keep_unchanged in any::<bool>(),
            full_resync in any::<bool>(),
        ) {
            let snapshot: Vec<(u16, u8)> = snapshot.into_iter().collect();
            let (_dir, state) = state_with(&snapshot);
            let in_order: Vec<(u16, u8)> = model.into_iter().collect();
            let mut shuffled = in_order.clone();
            shuffled.sort_by_key(|&(k, _)| order[k as usize % order.len()].wrapping_add(u32::from(k)));
            let merged = plan(&state, &in_order, keep_unchanged, full_resync, false);
            let either = plan(&state, &shuffled, keep_unchanged, full_resync, false);
            let sorted_first = plan(&state, &shuffled, keep_unchanged, full_resync, true);
            prop_assert!(!merged.4);
            prop_assert_eq!(either.4, sorted_first.4, "out of order, whether merged first or sorted");
            prop_assert_eq!((merged.0, merged.1, merged.2, &merged.3), (either.0, either.1, either.2, &either.3));
            prop_assert_eq!((merged.0, merged.1, merged.2, &merged.3), (sorted_first.0, sorted_first.1, sorted_first.2, &sorted_first.3));
            prop_assert_eq!(merged.0.added + merged.0.changed + merged.0.unchanged, in_order.len() as u64);
            if !keep_unchanged {
                prop_assert!(merged.3[Change::Unchanged as usize].is_empty() && either.3[Change::Unchanged as usize].is_empty());
            }
        }
    }
}
