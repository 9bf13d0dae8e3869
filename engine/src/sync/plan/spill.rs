//! The streaming diff: model rows (key, fingerprint, mapped row) against the snapshot of
//! what was last delivered, into added / changed / removed.
//!
//! Memory stays bounded whatever the model's size: rows (with their key and fingerprint) are
//! kept in memory up to a budget; beyond it they are sorted and written out as a run. The runs are merged by key and walked in step with the
//! snapshot (redb iterates it in key order), so neither side is ever held whole. The same
//! merge finds duplicate keys, which sit next to each other once sorted.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Entries (key + fingerprint + offsets) held in memory before a sorted run is spilled.
pub const DEFAULT_MEMORY_BUDGET: usize = 64 * 1024 * 1024;

pub use crate::domain::Fingerprint;
use crate::sync::run::Abort;

pub use crate::sync::read::{fingerprint, fingerprint_of_signed};

#[derive(Clone, Copy)]
struct Entry {
    /// Start of the key in the arena; the row follows the key.
    off: u32,
    key_len: u32,
    row_len: u32,
    fp: Fingerprint,
}

impl Entry {
    fn key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.off as usize..(self.off + self.key_len) as usize]
    }
    fn row<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        let start = (self.off + self.key_len) as usize;
        &arena[start..start + self.row_len as usize]
    }
}

/// Collects model rows; see the module docs. Rows travel with their keys, in memory while
/// they fit the budget and in sorted run files beyond it, so reading them back is
/// sequential.
pub struct ModelSpill {
    dir: PathBuf,
    arena: Vec<u8>,
    entries: Vec<Entry>,
    runs: Vec<File>,
    budget: usize,
    /// Model rows pushed so far, in memory and in spilled runs together.
    pub count: u64,
}

impl ModelSpill {
    /// An empty spill whose sorted runs go to temporary files in `dir` (the state
    /// directory's `tmp`) once the rows held exceed `budget` bytes (at least 1 KiB).
    pub fn new(dir: &Path, budget: usize) -> std::io::Result<ModelSpill> {
        Ok(ModelSpill {
            dir: dir.to_path_buf(),
            arena: Vec::new(),
            entries: Vec::new(),
            runs: Vec::new(),
            budget: budget.max(1024),
            count: 0,
        })
    }

    /// Adds one model row: its encoded primary key, its fingerprint and the encoded mapped
    /// row. Spills a sorted run to disk when the memory budget is reached.
    pub fn push(&mut self, key: &[u8], fp: Fingerprint, row: &[u8]) -> std::io::Result<()> {
        self.entries.push(Entry {
            off: self.arena.len() as u32,
            key_len: key.len() as u32,
            row_len: row.len() as u32,
            fp,
        });
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(row);
        self.count += 1;
        if self.arena.len() + self.entries.len() * std::mem::size_of::<Entry>() >= self.budget
            || self.arena.len() > (u32::MAX / 2) as usize
        {
            self.spill_run()?;
        }
        Ok(())
    }

    fn spill_run(&mut self) -> std::io::Result<()> {
        sort_entries(&self.arena, &mut self.entries);
        let mut out = BufWriter::with_capacity(1 << 20, tempfile::tempfile_in(&self.dir)?);
        for e in &self.entries {
            write_entry(&mut out, e.key(&self.arena), &e.fp, e.row(&self.arena))?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        self.runs.push(file);
        self.entries.clear();
        self.arena.clear();
        Ok(())
    }

    /// Finishes collecting; returns the entries in key order.
    pub fn into_sorted(mut self) -> std::io::Result<SortedModel> {
        let source = if self.runs.is_empty() {
            sort_entries(&self.arena, &mut self.entries);
            Source::Memory {
                arena: std::mem::take(&mut self.arena),
                entries: std::mem::take(&mut self.entries).into_iter(),
            }
        } else {
            if !self.entries.is_empty() {
                self.spill_run()?;
            }
            let mut heap = BinaryHeap::new();
            let mut readers = Vec::new();
            for (i, run) in std::mem::take(&mut self.runs).into_iter().enumerate() {
                let mut r = BufReader::with_capacity(256 * 1024, run);
                std::io::Seek::rewind(r.get_mut())?;
                if let Some(item) = read_entry(&mut r)? {
                    heap.push(HeapItem { item, run: i });
                }
                readers.push(r);
            }
            Source::Merge { heap, readers }
        };
        Ok(SortedModel { source })
    }
}

fn sort_entries(arena: &[u8], entries: &mut [Entry]) {
    entries.sort_unstable_by(|a, b| a.key(arena).cmp(b.key(arena)));
}

fn write_entry(
    out: &mut impl Write,
    key: &[u8],
    fp: &Fingerprint,
    row: &[u8],
) -> std::io::Result<()> {
    out.write_all(&(key.len() as u32).to_le_bytes())?;
    out.write_all(key)?;
    out.write_all(fp)?;
    out.write_all(&(row.len() as u32).to_le_bytes())?;
    out.write_all(row)
}

/// One model row as the merge yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// The encoded primary key (the order the diff walks in, and the snapshot's key).
    pub key: Vec<u8>,
    /// The row's fingerprint, compared with the snapshot's to tell changed from unchanged.
    pub fp: Fingerprint,
    /// The encoded mapped row, as it would be sent (empty for a [`ModelEntry::key_only`]).
    pub row: Vec<u8>,
}

impl ModelEntry {
    /// An entry standing for a snapshot key that has no model row.
    pub fn key_only(key: Vec<u8>) -> ModelEntry {
        ModelEntry {
            key,
            fp: [0; 16],
            row: Vec::new(),
        }
    }
}

fn read_entry(r: &mut impl Read) -> std::io::Result<Option<ModelEntry>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let key = super::file::read_exactly(r, u32::from_le_bytes(len))?;
    let mut fp = [0u8; 16];
    r.read_exact(&mut fp)?;
    r.read_exact(&mut len)?;
    let row = super::file::read_exactly(r, u32::from_le_bytes(len))?;
    Ok(Some(ModelEntry { key, fp, row }))
}

struct HeapItem {
    item: ModelEntry,
    run: usize,
}

impl PartialEq for HeapItem {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for HeapItem {}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapItem {
    /// Reversed: BinaryHeap is a max-heap and we want the smallest key first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .item
            .key
            .cmp(&self.item.key)
            .then(other.run.cmp(&self.run))
    }
}

enum Source {
    Memory {
        arena: Vec<u8>,
        entries: std::vec::IntoIter<Entry>,
    },
    Merge {
        heap: BinaryHeap<HeapItem>,
        readers: Vec<BufReader<File>>,
    },
}

/// Model entries in key order.
pub struct SortedModel {
    source: Source,
}

impl SortedModel {
    /// The next model row in key order (duplicate keys come out next to each other), or
    /// `None` once every row was read.
    pub fn next_entry(&mut self) -> std::io::Result<Option<ModelEntry>> {
        match &mut self.source {
            Source::Memory { arena, entries } => Ok(entries.next().map(|e| ModelEntry {
                key: e.key(arena).to_vec(),
                fp: e.fp,
                row: e.row(arena).to_vec(),
            })),
            Source::Merge { heap, readers } => {
                let Some(HeapItem { item, run }) = heap.pop() else {
                    return Ok(None);
                };
                if let Some(next) = read_entry(&mut readers[run])? {
                    heap.push(HeapItem { item: next, run });
                }
                Ok(Some(item))
            }
        }
    }
}

impl crate::sync::read::ModelSink for ModelSpill {
    fn push(&mut self, key: &[u8], fp: Fingerprint, row: &[u8]) -> Result<(), Abort> {
        ModelSpill::push(self, key, fp, row).map_err(Abort::io("writing the plan"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-shot fingerprint must equal the streaming one stored in existing snapshots,
    /// or an upgrade would re-send every row. XXH3 changes algorithm at 16, 128 and 240
    /// bytes of input, and its streaming state buffers 256 bytes and works in 1024-byte
    /// blocks: lengths around all of those.
    #[test]
    fn the_one_shot_fingerprint_equals_the_streaming_one_at_every_length() {
        let bytes: Vec<u8> = (0..2000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for sig_len in [0, 1, 3, 15, 16, 17, 64, 130, 255, 256, 257, 700] {
            for row_len in (0..600).chain([1023, 1024, 1025, 1280]) {
                let (sig, row) = (&bytes[..sig_len], &bytes[sig_len..sig_len + row_len]);
                assert_eq!(
                    fingerprint_of_signed(&bytes[..sig_len + row_len]),
                    fingerprint(sig, row),
                    "signature {sig_len} bytes, row {row_len}"
                );
            }
        }
    }

    fn collect(budget: usize, keys: &[u32]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = ModelSpill::new(dir.path(), budget).unwrap();
        for k in keys {
            let key = k.to_be_bytes();
            spill
                .push(&key, fingerprint(b"", &key), format!("row{k}").as_bytes())
                .unwrap();
        }
        let mut sorted = spill.into_sorted().unwrap();
        let mut out = Vec::new();
        while let Some(e) = sorted.next_entry().unwrap() {
            out.push((e.key, e.row));
        }
        out
    }

    #[test]
    fn sorts_in_memory_and_through_spilled_runs_alike() {
        let keys: Vec<u32> = (0..5000u32)
            .map(|i| i.wrapping_mul(2_654_435_761) % 100_000)
            .collect();
        let in_memory = collect(1 << 30, &keys);
        let spilled = collect(2048, &keys);
        assert_eq!(in_memory, spilled);
        assert_eq!(in_memory.len(), keys.len());
        assert!(in_memory.windows(2).all(|w| w[0].0 <= w[1].0));
        let k = in_memory[10].0.clone();
        let n = u32::from_be_bytes(k.try_into().unwrap());
        assert_eq!(in_memory[10].1, format!("row{n}").into_bytes());
    }
}
