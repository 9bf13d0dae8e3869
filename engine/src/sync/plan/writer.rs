//! Writes the merge's steps into the plan files ([`PlanWriter`]), fetching the last
//! delivered values of changed and removed rows from the state in groups; and the files of
//! keys the intake keeps aside ([`write_key`], [`read_key`]).

use super::file::{read_exactly, write_frame};
use super::merge::Step;
use super::spill::ModelEntry;
use crate::domain::{Change, DiffCounts};
use crate::state::StateStore;
use crate::sync::run::Abort;
use std::io::{BufWriter, Seek, Write};

/// What the merge's steps become: one plan file per change, the diff's counts, and the
/// plan's fingerprint. Changed and removed rows need their last delivered values; those are
/// fetched from the state in groups.
pub(crate) struct PlanWriter<'a> {
    state: &'a StateStore,
    sync: &'a str,
    files: &'a [std::fs::File; 4],
    writers: Vec<BufWriter<&'a std::fs::File>>,
    tmp_dir: &'a std::path::Path,
    pub(crate) diff: DiffCounts,
    pub(crate) fingerprint: xxhash_rust::xxh3::Xxh3,
    waiting: Vec<(Change, ModelEntry)>,
    refused_deletes: std::collections::HashSet<Vec<u8>>,
    pub(crate) cleared_deletes: Vec<Vec<u8>>,
    pub(crate) duplicates: u64,
    /// The five smallest duplicated keys: the same examples whether the rows were merged as
    /// they came or sorted first (the first five met would depend on the arrival order).
    pub(crate) duplicate_samples: std::collections::BTreeSet<Vec<u8>>,
    /// Whether unchanged rows are written to their file.
    pub(crate) write_unchanged: bool,
    /// While set (and `write_unchanged` is not), the keys of unchanged rows go here
    /// (length-prefixed, then the fingerprint): while merging, in case of a fall back to
    /// sorting, which takes their rows back from the snapshot (an unchanged row is the row
    /// last delivered). A key costs a fraction of its row to write.
    pub(crate) unchanged_keys: Option<BufWriter<std::fs::File>>,
    /// While set, removed keys go here (length-prefixed) instead of being looked up at once:
    /// the intake may still fall back to sorting, and then every removal so far is void (a
    /// model whose first row has a high key "removes" every key below it until the next row
    /// shows the order is not kept). Looked up once the merge is over: [`Self::resolve_removed`].
    pub(crate) deferred_removals: Option<BufWriter<std::fs::File>>,
}

impl<'a> PlanWriter<'a> {
    /// A writer into `files` (one per change), fetching last delivered values from `state`.
    pub(crate) fn new(
        state: &'a StateStore,
        sync: &'a str,
        files: &'a [std::fs::File; 4],
        refused_deletes: std::collections::HashSet<Vec<u8>>,
        tmp_dir: &'a std::path::Path,
    ) -> PlanWriter<'a> {
        PlanWriter {
            state,
            sync,
            files,
            writers: files
                .iter()
                .map(|f| BufWriter::with_capacity(1 << 20, f))
                .collect(),
            tmp_dir,
            diff: DiffCounts::default(),
            fingerprint: xxhash_rust::xxh3::Xxh3::new(),
            waiting: Vec::new(),
            refused_deletes,
            cleared_deletes: Vec::new(),
            duplicates: 0,
            duplicate_samples: Default::default(),
            write_unchanged: false,
            unchanged_keys: None,
            deferred_removals: None,
        }
    }

    pub(crate) fn file(&self, change: Change) -> &'a std::fs::File {
        &self.files[change as usize]
    }

    /// Covers one planned change by the plan's fingerprint (kind, key, row fingerprint).
    fn mark(&mut self, change: u8, key: &[u8], fp: &[u8]) {
        self.fingerprint.update(&[change]);
        self.fingerprint.update(&(key.len() as u32).to_be_bytes());
        self.fingerprint.update(key);
        self.fingerprint.update(fp);
    }

    pub(crate) fn step(&mut self, step: Step<'_>) -> Result<(), Abort> {
        match step {
            Step::Duplicate(key) => {
                self.duplicates += 1;
                if self.duplicate_samples.len() < 5
                    || self
                        .duplicate_samples
                        .last()
                        .is_some_and(|last| key < last.as_slice())
                {
                    self.duplicate_samples.insert(key.to_vec());
                    if self.duplicate_samples.len() > 5 {
                        self.duplicate_samples.pop_last();
                    }
                }
                return Ok(());
            }
            Step::Removed(key) if self.refused_deletes.contains(key) => {
                self.diff.cleared_deletes += 1;
                self.mark(b'x', key, &[]);
                self.cleared_deletes.push(key.to_vec());
                return Ok(());
            }
            Step::Removed(key) => {
                self.diff.removed += 1;
                self.mark(b'r', key, &[]);
                match &mut self.deferred_removals {
                    Some(out) => write_key(out, key).map_err(plan_io(self.tmp_dir))?,
                    None => self
                        .waiting
                        .push((Change::Removed, ModelEntry::key_only(key.to_vec()))),
                }
            }
            Step::Added(entry) => {
                self.diff.added += 1;
                self.mark(b'a', entry.key, &entry.fp);
                write_frame(
                    &mut self.writers[Change::Added as usize],
                    entry.key,
                    &entry.fp,
                    entry.row,
                    &[],
                )
                .map_err(plan_io(self.tmp_dir))?;
            }
            Step::Unchanged(entry) => {
                self.diff.unchanged += 1;
                if self.write_unchanged {
                    write_frame(
                        &mut self.writers[Change::Unchanged as usize],
                        entry.key,
                        &entry.fp,
                        entry.row,
                        &[],
                    )
                    .map_err(plan_io(self.tmp_dir))?;
                } else if let Some(out) = &mut self.unchanged_keys {
                    let written = write_key(out, entry.key).and_then(|()| out.write_all(&entry.fp));
                    written.map_err(plan_io(self.tmp_dir))?;
                }
            }
            Step::Changed(entry) => {
                self.diff.changed += 1;
                self.mark(b'c', entry.key, &entry.fp);
                self.waiting.push((
                    Change::Changed,
                    ModelEntry {
                        key: entry.key.to_vec(),
                        fp: entry.fp,
                        row: entry.row.to_vec(),
                    },
                ));
            }
        }
        if self.waiting.len() >= 1024 {
            flush_waiting(self.state, self.sync, &mut self.waiting, &mut self.writers)?;
        }
        Ok(())
    }

    /// Writes out everything planned so far.
    pub(crate) fn flush(&mut self) -> Result<(), Abort> {
        flush_waiting(self.state, self.sync, &mut self.waiting, &mut self.writers)?;
        for w in &mut self.writers {
            w.flush().map_err(plan_io(self.tmp_dir))?;
        }
        Ok(())
    }

    /// Looks up the last delivered values of the deferred removals and writes their frames
    /// (in key order, as they were deferred); removals are looked up at once from then on.
    pub(crate) fn resolve_removed(&mut self) -> Result<(), Abort> {
        let Some(deferred) = self.deferred_removals.take() else {
            return Ok(());
        };
        let io = plan_io(self.tmp_dir);
        let mut file = deferred.into_inner().map_err(|e| io(e.into_error()))?;
        file.rewind().map_err(&io)?;
        let mut keys = std::io::BufReader::with_capacity(1 << 20, file);
        while let Some(key) = read_key(&mut keys).map_err(&io)? {
            self.waiting
                .push((Change::Removed, ModelEntry::key_only(key)));
            if self.waiting.len() >= 1024 {
                flush_waiting(self.state, self.sync, &mut self.waiting, &mut self.writers)?;
            }
        }
        Ok(())
    }

    /// Forgets every change planned so far, for a merge that starts over from sorted rows:
    /// the files are emptied and the counts zeroed; deferred removals and kept unchanged keys
    /// are dropped (a sorted merge is final: removals are looked up as they come).
    /// Duplicates found stay found (the rows repeated were not planned, so a second merge
    /// would not see them again).
    pub(crate) fn restart(&mut self) -> std::io::Result<()> {
        for w in &mut self.writers {
            w.flush()?;
            w.get_ref().set_len(0)?;
            std::io::Seek::rewind(w.get_mut())?;
        }
        self.waiting.clear();
        self.deferred_removals = None;
        self.unchanged_keys = None;
        self.diff = DiffCounts::default();
        self.fingerprint = xxhash_rust::xxh3::Xxh3::new();
        self.cleared_deletes.clear();
        Ok(())
    }
}

/// Appends a length-prefixed key to a file of keys.
pub(crate) fn write_key(out: &mut impl Write, key: &[u8]) -> std::io::Result<()> {
    out.write_all(&(key.len() as u32).to_le_bytes())?;
    out.write_all(key)
}

/// The next key of a file written by [`write_key`], or `None` at its end.
pub(crate) fn read_key(keys: &mut impl std::io::Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match keys.read_exact(&mut len) {
        Ok(()) => read_exactly(keys, u32::from_le_bytes(len)).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes the changed and removed rows waiting for their last delivered values.
pub(crate) fn flush_waiting(
    state: &StateStore,
    sync: &str,
    waiting: &mut Vec<(Change, ModelEntry)>,
    writers: &mut [BufWriter<&std::fs::File>],
) -> Result<(), Abort> {
    if waiting.is_empty() {
        return Ok(());
    }
    let keys: Vec<&[u8]> = waiting.iter().map(|(_, e)| e.key.as_slice()).collect();
    let befores = state.snapshot_rows(sync, &keys)?;
    for ((change, entry), before) in waiting.drain(..).zip(befores) {
        let before = before.unwrap_or_default();
        write_frame(
            &mut writers[change as usize],
            &entry.key,
            &entry.fp,
            &entry.row,
            &before,
        )
        .map_err(Abort::io("writing plan files"))?;
    }
    Ok(())
}

/// A failure writing the plan files in `tmp_dir`.
fn plan_io(tmp_dir: &std::path::Path) -> impl Fn(std::io::Error) -> Abort {
    Abort::io(format!("writing plan files in {}", tmp_dir.display()))
}
