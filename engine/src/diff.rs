//! The streaming diff: model rows (key, fingerprint, mapped row) against the snapshot of
//! what was last delivered, into added / changed / removed.
//!
//! Memory stays bounded whatever the model's size: rows go to a spill file as they arrive;
//! only (key, fingerprint, offset) entries are kept, and when they exceed the budget they are
//! sorted and written out as a run. The runs are merged by key and walked in step with the
//! snapshot (redb iterates it in key order), so neither side is ever held whole. The same
//! merge finds duplicate keys, which sit next to each other once sorted.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Entries (key + fingerprint + offsets) held in memory before a sorted run is spilled.
pub const DEFAULT_MEMORY_BUDGET: usize = 64 * 1024 * 1024;

pub type Fingerprint = [u8; 16];

/// Fingerprint of a mapped row: covers the destination field names too, so a changed mapping
/// changes every fingerprint (every row must be re-sent with the new shape).
pub fn fingerprint(mapping_signature: &[u8], row: &[u8]) -> Fingerprint {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(mapping_signature);
    h.update(row);
    h.digest128().to_le_bytes()
}

#[derive(Clone, Copy)]
struct Entry {
    key_off: u32,
    key_len: u32,
    fp: Fingerprint,
    row_off: u64,
    row_len: u32,
}

/// Collects model rows; see the module docs.
pub struct ModelSpill {
    dir: PathBuf,
    rows: BufWriter<File>,
    rows_len: u64,
    arena: Vec<u8>,
    entries: Vec<Entry>,
    runs: Vec<File>,
    budget: usize,
    pub count: u64,
}

impl ModelSpill {
    pub fn new(dir: &Path, budget: usize) -> std::io::Result<ModelSpill> {
        Ok(ModelSpill {
            dir: dir.to_path_buf(),
            rows: BufWriter::with_capacity(1 << 20, tempfile::tempfile_in(dir)?),
            rows_len: 0,
            arena: Vec::new(),
            entries: Vec::new(),
            runs: Vec::new(),
            budget: budget.max(1024),
            count: 0,
        })
    }

    pub fn push(&mut self, key: &[u8], fp: Fingerprint, row: &[u8]) -> std::io::Result<()> {
        self.rows.write_all(row)?;
        self.entries.push(Entry { key_off: self.arena.len() as u32, key_len: key.len() as u32, fp, row_off: self.rows_len, row_len: row.len() as u32 });
        self.arena.extend_from_slice(key);
        self.rows_len += row.len() as u64;
        self.count += 1;
        if self.arena.len() + self.entries.len() * std::mem::size_of::<Entry>() >= self.budget || self.arena.len() > u32::MAX as usize / 2 {
            self.spill_run()?;
        }
        Ok(())
    }

    fn spill_run(&mut self) -> std::io::Result<()> {
        sort_entries(&self.arena, &mut self.entries);
        let mut out = BufWriter::with_capacity(1 << 20, tempfile::tempfile_in(&self.dir)?);
        for e in &self.entries {
            write_entry(&mut out, &self.arena[e.key_off as usize..(e.key_off + e.key_len) as usize], e)?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        self.runs.push(file);
        self.entries.clear();
        self.arena.clear();
        Ok(())
    }

    /// Finishes collecting; returns the entries in key order.
    pub fn into_sorted(mut self) -> std::io::Result<SortedModel> {
        self.rows.flush()?;
        let source = if self.runs.is_empty() {
            sort_entries(&self.arena, &mut self.entries);
            Source::Memory { arena: std::mem::take(&mut self.arena), entries: std::mem::take(&mut self.entries).into_iter() }
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
        let rows = self.rows.into_inner().map_err(|e| e.into_error())?;
        Ok(SortedModel { rows, source })
    }
}

fn sort_entries(arena: &[u8], entries: &mut [Entry]) {
    entries.sort_unstable_by(|a, b| arena[a.key_off as usize..(a.key_off + a.key_len) as usize].cmp(&arena[b.key_off as usize..(b.key_off + b.key_len) as usize]));
}

fn write_entry(out: &mut impl Write, key: &[u8], e: &Entry) -> std::io::Result<()> {
    out.write_all(&(key.len() as u32).to_le_bytes())?;
    out.write_all(key)?;
    out.write_all(&e.fp)?;
    out.write_all(&e.row_off.to_le_bytes())?;
    out.write_all(&e.row_len.to_le_bytes())
}

/// One model row as the merge yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    pub key: Vec<u8>,
    pub fp: Fingerprint,
    row_off: u64,
    row_len: u32,
}

impl ModelEntry {
    /// An entry standing for a snapshot key that has no model row.
    pub fn key_only(key: Vec<u8>) -> ModelEntry {
        ModelEntry { key, fp: [0; 16], row_off: 0, row_len: 0 }
    }
}

fn read_entry(r: &mut impl Read) -> std::io::Result<Option<ModelEntry>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut key = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut key)?;
    let mut fp = [0u8; 16];
    r.read_exact(&mut fp)?;
    let mut off = [0u8; 8];
    r.read_exact(&mut off)?;
    let mut rl = [0u8; 4];
    r.read_exact(&mut rl)?;
    Ok(Some(ModelEntry { key, fp, row_off: u64::from_le_bytes(off), row_len: u32::from_le_bytes(rl) }))
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
        other.item.key.cmp(&self.item.key).then(other.run.cmp(&self.run))
    }
}

enum Source {
    Memory { arena: Vec<u8>, entries: std::vec::IntoIter<Entry> },
    Merge { heap: BinaryHeap<HeapItem>, readers: Vec<BufReader<File>> },
}

/// Model entries in key order, plus access to their rows.
pub struct SortedModel {
    rows: File,
    source: Source,
}

impl SortedModel {
    pub fn next_entry(&mut self) -> std::io::Result<Option<ModelEntry>> {
        match &mut self.source {
            Source::Memory { arena, entries } => Ok(entries.next().map(|e| ModelEntry {
                key: arena[e.key_off as usize..(e.key_off + e.key_len) as usize].to_vec(),
                fp: e.fp,
                row_off: e.row_off,
                row_len: e.row_len,
            })),
            Source::Merge { heap, readers } => {
                let Some(HeapItem { item, run }) = heap.pop() else { return Ok(None) };
                if let Some(next) = read_entry(&mut readers[run])? {
                    heap.push(HeapItem { item: next, run });
                }
                Ok(Some(item))
            }
        }
    }

    /// The mapped row of an entry.
    pub fn row(&self, entry: &ModelEntry) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; entry.row_len as usize];
        self.rows.read_exact_at(&mut buf, entry.row_off)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(budget: usize, keys: &[u32]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = ModelSpill::new(dir.path(), budget).unwrap();
        for k in keys {
            let key = k.to_be_bytes();
            spill.push(&key, fingerprint(b"", &key), format!("row{k}").as_bytes()).unwrap();
        }
        let mut sorted = spill.into_sorted().unwrap();
        let mut out = Vec::new();
        while let Some(e) = sorted.next_entry().unwrap() {
            let row = sorted.row(&e).unwrap();
            out.push((e.key, row));
        }
        out
    }

    #[test]
    fn sorts_in_memory_and_through_spilled_runs_alike() {
        let keys: Vec<u32> = (0..5000u32).map(|i| i.wrapping_mul(2_654_435_761) % 100_000).collect();
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
