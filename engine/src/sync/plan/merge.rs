//! The heart of the diff: the sorted model merged with the snapshot, key by key, into one
//! [`Step`] per key. Pure logic over two sorted sequences (no files, no state), so its rules
//! are unit-tested here: a key only in the model is added, only in the snapshot removed, in
//! both with another fingerprint changed (or with the same one under a full resync), and a
//! repeated model key is a duplicate.
//!
//! Rows are borrowed, not owned: a million-row rerun merges a million rows, and an allocation
//! (and a free) per row and per snapshot key was a tenth of its time. Whoever keeps a step
//! (a changed row waiting for its values before) copies it.

use super::spill::Fingerprint;
use crate::sync::run::Abort;

/// One model row as the merge sees it: its encoded key, fingerprint and mapped row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowRef<'r> {
    pub key: &'r [u8],
    pub fp: Fingerprint,
    pub row: &'r [u8],
}

/// What the merge decided for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step<'r> {
    Added(RowRef<'r>),
    Changed(RowRef<'r>),
    Unchanged(RowRef<'r>),
    /// A snapshot key the model no longer has.
    Removed(&'r [u8]),
    /// A model key seen before: the model's primary key is not unique.
    Duplicate(&'r [u8]),
}

/// The snapshot's (key, fingerprint) pairs in key order.
pub(crate) trait SnapshotKeys {
    /// The next pair, without taking it.
    fn peek(&mut self) -> Result<Option<(&[u8], Fingerprint)>, Abort>;
    /// Takes the pair [`Self::peek`] gave.
    fn advance(&mut self);
}

/// Merges model entries, fed in key order, with a snapshot.
pub(crate) struct Merge<S> {
    snapshot: S,
    /// The last model key merged (its buffer reused: one allocation fewer per row).
    previous: Option<Vec<u8>>,
    full_resync: bool,
}

impl<S: SnapshotKeys> Merge<S> {
    /// `full_resync`: a row equal to its snapshot entry counts as changed (it is sent again).
    pub(crate) fn new(snapshot: S, full_resync: bool) -> Merge<S> {
        Merge {
            snapshot,
            previous: None,
            full_resync,
        }
    }

    /// The steps for the next model entry: removals of the snapshot keys before it, then its own.
    pub(crate) fn entry(
        &mut self,
        entry: RowRef<'_>,
        emit: &mut impl FnMut(Step<'_>) -> Result<(), Abort>,
    ) -> Result<(), Abort> {
        if self.previous.as_deref() == Some(entry.key) {
            return emit(Step::Duplicate(entry.key));
        }
        let in_snapshot = loop {
            match self.snapshot.peek()? {
                Some((key, _)) if key < entry.key => {
                    emit(Step::Removed(key))?;
                    self.snapshot.advance();
                }
                Some((key, fp)) if key == entry.key => {
                    self.snapshot.advance();
                    break Some(fp);
                }
                _ => break None,
            }
        };
        let previous = self.previous.get_or_insert_with(Vec::new);
        previous.clear();
        previous.extend_from_slice(entry.key);
        emit(match in_snapshot {
            None => Step::Added(entry),
            Some(fp) if fp == entry.fp && !self.full_resync => Step::Unchanged(entry),
            Some(_) => Step::Changed(entry),
        })
    }

    /// After the last model entry: every snapshot key left is removed.
    pub(crate) fn finish(
        mut self,
        emit: &mut impl FnMut(Step<'_>) -> Result<(), Abort>,
    ) -> Result<(), Abort> {
        while let Some((key, _)) = self.snapshot.peek()? {
            emit(Step::Removed(key))?;
            self.snapshot.advance();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    struct Snapshot(VecDeque<(Vec<u8>, Fingerprint)>);

    impl SnapshotKeys for Snapshot {
        fn peek(&mut self) -> Result<Option<(&[u8], Fingerprint)>, Abort> {
            Ok(self.0.front().map(|(k, fp)| (k.as_slice(), *fp)))
        }
        fn advance(&mut self) {
            self.0.pop_front();
        }
    }

    fn fp(n: u8) -> Fingerprint {
        [n; 16]
    }

    /// Runs the merge and renders each step as `kind:key`.
    fn merge(model: &[(&str, u8)], snapshot: &[(&str, u8)], full_resync: bool) -> Vec<String> {
        let snapshot = Snapshot(
            snapshot
                .iter()
                .map(|(k, n)| (k.as_bytes().to_vec(), fp(*n)))
                .collect(),
        );
        let mut merge = Merge::new(snapshot, full_resync);
        let mut steps = Vec::new();
        let mut emit = |s: Step| {
            steps.push(match s {
                Step::Added(e) => format!("added:{}", String::from_utf8_lossy(e.key)),
                Step::Changed(e) => format!("changed:{}", String::from_utf8_lossy(e.key)),
                Step::Unchanged(e) => format!("unchanged:{}", String::from_utf8_lossy(e.key)),
                Step::Removed(k) => format!("removed:{}", String::from_utf8_lossy(k)),
                Step::Duplicate(k) => format!("duplicate:{}", String::from_utf8_lossy(k)),
            });
            Ok(())
        };
        for (k, n) in model {
            merge
                .entry(
                    RowRef {
                        key: k.as_bytes(),
                        fp: fp(*n),
                        row: &[*n],
                    },
                    &mut emit,
                )
                .unwrap();
        }
        merge.finish(&mut emit).unwrap();
        steps
    }

    #[test]
    fn classifies_every_key_once_in_key_order() {
        let steps = merge(
            &[("a", 1), ("b", 2), ("d", 4), ("f", 6)],
            &[("a", 1), ("c", 3), ("d", 9), ("e", 5), ("g", 7)],
            false,
        );
        assert_eq!(
            steps,
            [
                "unchanged:a",
                "added:b",
                "removed:c",
                "changed:d",
                "removed:e",
                "added:f",
                "removed:g"
            ]
        );
    }

    #[test]
    fn an_empty_snapshot_adds_everything_and_an_empty_model_removes_everything() {
        assert_eq!(
            merge(&[("a", 1), ("b", 2)], &[], false),
            ["added:a", "added:b"]
        );
        assert_eq!(
            merge(&[], &[("a", 1), ("b", 2)], false),
            ["removed:a", "removed:b"]
        );
        assert!(merge(&[], &[], false).is_empty());
    }

    #[test]
    fn a_full_resync_sends_unchanged_rows_as_changed() {
        assert_eq!(
            merge(&[("a", 1), ("b", 2)], &[("a", 1)], true),
            ["changed:a", "added:b"]
        );
    }

    #[test]
    fn a_repeated_model_key_is_a_duplicate_and_not_planned_twice() {
        assert_eq!(
            merge(&[("a", 1), ("a", 2), ("b", 2)], &[("a", 1)], false),
            ["unchanged:a", "duplicate:a", "added:b"]
        );
    }

    #[test]
    fn keys_compare_as_bytes_not_as_text() {
        // "a" < "a\0" < "b": a key that is a prefix of another sorts first.
        let steps = merge(&[("a", 1), ("a\0", 2)], &[("a\0", 2), ("b", 3)], false);
        assert_eq!(steps, ["added:a", "unchanged:a\0", "removed:b"]);
    }
}
