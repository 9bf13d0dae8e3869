//! The delivery journal: what a destination acknowledged, written the moment it says so.
//!
//! Committing every acknowledged batch to redb with an fsync would cost a disk flush per
//! batch. Instead each acknowledged batch is appended to this per-sync file in one `write`
//! (no fsync): the bytes are in the kernel's page cache as soon as `write` returns, so they
//! survive a crash or `kill -9` of the process. Every few seconds, and at the end of a run, the
//! journal is applied to the snapshot in one durable redb transaction and truncated. A run
//! that starts and finds a non-empty journal applies it first. Applying is idempotent, so a
//! crash between the commit and the truncation is harmless.
//!
//! Each frame carries a checksum; a torn last frame (only possible if the machine itself
//! stops mid-write) is ignored, and its rows are re-sent by the next run.
//!
//! A write that fails part-way (a full disk: `write` takes what fits and then answers
//! ENOSPC) would leave a torn frame in the middle of the file once a later write succeeds,
//! and replay stops at the first torn frame, so every frame after it would be lost. The
//! journal therefore cuts a failed write back to the last whole frame before it accepts
//! another; if even that fails, it refuses every later write.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

pub use crate::domain::JournalOp;

/// One sync's delivery journal file, open for appending.
pub struct Journal {
    file: File,
    path: PathBuf,
    written: u64,
    /// Set when a failed write could not be cut back: the file may end in a torn frame, so
    /// nothing may be appended after it.
    broken: Option<String>,
    /// Tests: fail the next write after this many bytes, as a full disk does.
    #[cfg(test)]
    disk_full_after: Option<usize>,
}

fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

impl Journal {
    /// The journal file of a sync (names are made file-safe).
    pub fn path(dir: &Path, sync: &str) -> PathBuf {
        let safe: String = sync
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let hash = xxhash_rust::xxh3::xxh3_64(sync.as_bytes());
        dir.join(format!("{safe}-{hash:016x}.journal"))
    }

    /// Opens (creating it and `dir` if needed) the journal of `sync` in `dir` for appending;
    /// whatever an interrupted run left in it stays, to be replayed.
    pub fn open(dir: &Path, sync: &str) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let path = Journal::path(dir, sync);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        Ok(Journal {
            file,
            path,
            written,
            broken: None,
            #[cfg(test)]
            disk_full_after: None,
        })
    }

    /// Bytes written since the last [`Journal::clear`].
    pub fn len(&self) -> u64 {
        self.written
    }

    /// Whether nothing was written since the last [`Journal::clear`] (no acknowledged rows
    /// wait to be committed to the snapshot).
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Appends ops in a single write.
    pub fn append(&mut self, ops: &[JournalOp]) -> std::io::Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut payload = Vec::new();
        for op in ops {
            payload.clear();
            match op {
                JournalOp::Upsert { key, fp, row } => {
                    payload.push(1);
                    put(&mut payload, key);
                    payload.extend_from_slice(fp);
                    put(&mut payload, row);
                }
                JournalOp::Delete { key } => {
                    payload.push(2);
                    put(&mut payload, key);
                }
                JournalOp::Reject {
                    key,
                    change,
                    error,
                    run_id,
                } => {
                    payload.push(3);
                    put(&mut payload, key);
                    put(&mut payload, change.as_bytes());
                    put(&mut payload, error.as_bytes());
                    put(&mut payload, run_id.as_bytes());
                }
                JournalOp::Begin(header) => {
                    payload.push(4);
                    // Serializing plain strings and columns cannot fail.
                    put(
                        &mut payload,
                        &serde_json::to_vec(header).unwrap_or_default(),
                    );
                }
                JournalOp::Progress(progress) => {
                    payload.push(5);
                    // Serializing a string and counts cannot fail.
                    put(
                        &mut payload,
                        &serde_json::to_vec(progress).unwrap_or_default(),
                    );
                }
            }
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
            buf.extend_from_slice(&payload);
        }
        if let Some(why) = &self.broken {
            return Err(std::io::Error::other(format!("an earlier write failed and could not be undone ({why}); nothing more is journaled")));
        }
        if let Err(error) = self.write_frames(&buf) {
            // Part of the buffer may be in the file: cut it back to the last whole frame.
            if let Err(cut) = self.file.set_len(self.written) {
                self.broken = Some(format!("{error}; cutting it back: {cut}"));
            }
            return Err(error);
        }
        self.written += buf.len() as u64;
        Ok(())
    }

    fn write_frames(&mut self, buf: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(room) = self.disk_full_after.take() {
            self.file.write_all(&buf[..room.min(buf.len())])?;
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.file.write_all(buf)
    }

    /// The sealed part of a sync's journal: frames older than the journal's, being (or to
    /// be) committed on their own while the journal takes new ones.
    pub fn sealed_path(dir: &Path, sync: &str) -> PathBuf {
        Journal::path(dir, sync).with_extension("journal.sealed")
    }

    /// Hands the journal's frames over to a sealed file (which must not exist) and starts
    /// an empty journal; returns the sealed file's path. A crash after this leaves both
    /// files; [`replay_file`] of the sealed one, then of the journal, restores the order.
    pub fn seal(&mut self) -> std::io::Result<PathBuf> {
        if let Some(why) = &self.broken {
            return Err(std::io::Error::other(format!(
                "an earlier write failed and could not be undone ({why})"
            )));
        }
        let sealed = self.sealed_file();
        if sealed.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists: its frames are not committed yet",
                    sealed.display()
                ),
            ));
        }
        std::fs::rename(&self.path, &sealed)?;
        match OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            Ok(file) => self.file = file,
            Err(e) => {
                // Keep appending where the frames are, in order: put the file back.
                if let Err(back) = std::fs::rename(&sealed, &self.path) {
                    self.broken = Some(format!(
                        "starting a new journal: {e}; putting the old one back: {back}"
                    ));
                }
                return Err(e);
            }
        }
        self.written = 0;
        Ok(sealed)
    }

    /// The path [`Journal::seal`] moves the frames to.
    pub fn sealed_file(&self) -> PathBuf {
        self.path.with_extension("journal.sealed")
    }

    /// Empties the journal (after its contents were committed durably).
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.written = 0;
        self.broken = None;
        Ok(())
    }

    /// Reads the journal in chunks of at most `chunk` ops, calling `apply` for each.
    /// Stops silently at a torn or corrupt frame.
    pub fn replay<E>(
        &self,
        chunk: usize,
        apply: impl FnMut(Vec<JournalOp>) -> Result<(), E>,
    ) -> Result<u64, ReplayError<E>> {
        replay_file(&self.path, chunk, apply)
    }

    /// The journal's file.
    pub fn file(&self) -> &Path {
        &self.path
    }
}

/// How many frames a journal file holds, from their headers alone (a torn last frame counts
/// too): the size of a commit before it is replayed in chunks, so the snapshot can decide
/// where the whole commit goes (see `state::snapshot`).
pub fn frame_count(path: &Path) -> std::io::Result<u64> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut head = [0u8; 12];
    let mut frames = 0;
    while read_full(&mut r, &mut head)? {
        r.seek_relative(i64::from(u32::from_le_bytes([
            head[0], head[1], head[2], head[3],
        ])))?;
        frames += 1;
    }
    Ok(frames)
}

/// Reads a journal file in chunks of at most `chunk` ops, calling `apply` for each. Stops
/// silently at a torn or corrupt frame. A chunk after the first starts with the last
/// changelog header (`Begin`) read before it, so its rows still belong to their run (each
/// chunk is applied on its own; applying a header twice is harmless).
pub fn replay_file<E>(
    path: &Path,
    chunk: usize,
    mut apply: impl FnMut(Vec<JournalOp>) -> Result<(), E>,
) -> Result<u64, ReplayError<E>> {
    let file = File::open(path).map_err(ReplayError::Io)?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut ops = Vec::new();
    let mut total = 0u64;
    let mut header: Option<JournalOp> = None;
    // Whether `ops` holds nothing but the repeated header.
    let mut only_header = false;
    while let Some(op) = read_frame(&mut r).map_err(ReplayError::Io)? {
        if matches!(op, JournalOp::Begin(_)) {
            header = Some(op.clone());
        }
        ops.push(op);
        only_header = false;
        total += 1;
        if ops.len() >= chunk {
            apply(std::mem::take(&mut ops)).map_err(ReplayError::Apply)?;
            if let Some(h) = &header {
                ops.push(h.clone());
                only_header = true;
            }
        }
    }
    if only_header {
        return Ok(total);
    }
    if !ops.is_empty() {
        apply(ops).map_err(ReplayError::Apply)?;
    }
    Ok(total)
}

#[derive(Debug)]
/// Why a journal could not be replayed: reading it, or applying its ops (`E`).
pub enum ReplayError<E> {
    /// The journal file could not be opened or read.
    Io(std::io::Error),
    /// Applying a chunk of ops (committing them to the state) failed.
    Apply(E),
}

impl<E: std::fmt::Display> std::fmt::Display for ReplayError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::Io(e) => write!(f, "reading the delivery journal: {e}"),
            ReplayError::Apply(e) => write!(f, "applying the delivery journal: {e}"),
        }
    }
}

pub(crate) fn read_frame(r: &mut impl Read) -> std::io::Result<Option<JournalOp>> {
    let mut head = [0u8; 12];
    if !read_full(r, &mut head)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
    let sum = u64::from_le_bytes(head[4..].try_into().unwrap());
    if len > 1 << 30 {
        return Ok(None);
    }
    // A frame cut short reads as an empty payload: torn, below.
    let payload = match crate::sync::plan::file::read_exactly(r, len as u32) {
        Ok(payload) => payload,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Vec::new(),
        Err(e) => return Err(e),
    };
    if payload.len() != len || xxhash_rust::xxh3::xxh3_64(&payload) != sum {
        tracing::warn!("the delivery journal ends in a torn or corrupt frame; the rows after it will be sent again");
        return Ok(None);
    }
    Ok(parse(&payload))
}

/// Like `read_exact`, but `Ok(false)` at end of file (including a partial read).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    Ok(true)
}

/// Reads length-prefixed fields from a frame payload.
struct Fields<'a> {
    p: &'a [u8],
    pos: usize,
}

impl Fields<'_> {
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(self.p.get(self.pos..self.pos + 4)?.try_into().ok()?) as usize;
        let out = self.p.get(self.pos + 4..self.pos + 4 + len)?.to_vec();
        self.pos += 4 + len;
        Some(out)
    }

    fn fixed<const N: usize>(&mut self) -> Option<[u8; N]> {
        let out = self.p.get(self.pos..self.pos + N)?.try_into().ok()?;
        self.pos += N;
        Some(out)
    }

    fn text(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?).ok()
    }
}

fn parse(p: &[u8]) -> Option<JournalOp> {
    let mut f = Fields { p, pos: 1 };
    match p.first()? {
        1 => Some(JournalOp::Upsert {
            key: f.bytes()?,
            fp: f.fixed()?,
            row: f.bytes()?,
        }),
        2 => Some(JournalOp::Delete { key: f.bytes()? }),
        3 => Some(JournalOp::Reject {
            key: f.bytes()?,
            change: f.text()?,
            error: f.text()?,
            run_id: f.text()?,
        }),
        4 => Some(JournalOp::Begin(serde_json::from_slice(&f.bytes()?).ok()?)),
        5 => Some(JournalOp::Progress(
            serde_json::from_slice(&f.bytes()?).ok()?,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), "my sync").unwrap();
        let header = crate::domain::ChangelogHeader {
            run_id: "r".into(),
            mode: "mirror".into(),
            columns: vec![],
            key_columns: vec![],
            undo_of: Some("q".into()),
        };
        let ops = vec![
            JournalOp::Begin(header),
            JournalOp::Upsert {
                key: b"k1".to_vec(),
                fp: [7; 16],
                row: b"row".to_vec(),
            },
            JournalOp::Delete {
                key: b"k2".to_vec(),
            },
            JournalOp::Reject {
                key: b"k3".to_vec(),
                change: "added".into(),
                error: "HTTP 422".into(),
                run_id: "r".into(),
            },
        ];
        j.append(&ops).unwrap();
        assert_eq!(frame_count(j.file()).unwrap(), 4);
        // Simulate a write torn by a machine crash: half a frame at the end.
        let path = Journal::path(dir.path(), "my sync");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[20, 0, 0, 0, 1, 2, 3]).unwrap();
        assert_eq!(
            frame_count(j.file()).unwrap(),
            4,
            "half a frame's header is no frame"
        );
        let mut seen = Vec::new();
        let n = j.replay(100, |chunk| -> Result<(), ()> {
            seen.extend(chunk);
            Ok(())
        });
        assert_eq!(n.unwrap(), 4);
        assert_eq!(seen, ops);
        j.clear().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn every_chunk_of_a_replay_starts_with_its_runs_header() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), "s").unwrap();
        let header = JournalOp::Begin(crate::domain::ChangelogHeader {
            run_id: "r".into(),
            mode: "mirror".into(),
            columns: vec![],
            key_columns: vec![],
            undo_of: None,
        });
        let op = |k: &str| JournalOp::Upsert {
            key: k.as_bytes().to_vec(),
            fp: [1; 16],
            row: vec![],
        };
        j.append(&[header.clone(), op("a"), op("b"), op("c"), op("d")])
            .unwrap();
        let mut chunks = Vec::new();
        let total = j.replay(2, |chunk| -> Result<(), ()> {
            chunks.push(chunk);
            Ok(())
        });
        assert_eq!(total.unwrap(), 5);
        assert_eq!(
            chunks,
            vec![
                vec![header.clone(), op("a")],
                vec![header.clone(), op("b")],
                vec![header.clone(), op("c")],
                vec![header.clone(), op("d")]
            ]
        );
    }

    #[test]
    fn a_write_cut_short_by_a_full_disk_does_not_hide_the_frames_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), "s").unwrap();
        let op = |k: &str| JournalOp::Upsert {
            key: k.as_bytes().to_vec(),
            fp: [1; 16],
            row: b"row".to_vec(),
        };
        j.append(&[op("a")]).unwrap();
        // The disk fills up in the middle of the second batch's frames…
        j.disk_full_after = Some(30);
        let error = j.append(&[op("b"), op("c")]).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28));
        // …and has room again for the batches still in flight.
        j.append(&[op("d")]).unwrap();
        let mut seen = Vec::new();
        j.replay(10, |chunk| -> Result<(), ()> {
            seen.extend(chunk);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![op("a"), op("d")],
            "the failed batch is left out (it is sent again); the one after it is kept"
        );
    }
}

/// Fuzzing by property (issue 16): a journal file of any content replays to the ops of its
/// valid frames and never panics. Cases: `PROPTEST_CASES` (256 by default).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_replay_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let dir = tempfile::tempdir().unwrap();
            let j = Journal::open(dir.path(), "s").unwrap();
            std::fs::write(Journal::path(dir.path(), "s"), &bytes).unwrap();
            let _ = j.replay(7, |_ops| -> Result<(), ()> { Ok(()) });
        }

        #[test]
        fn valid_frames_then_garbage_replay_the_valid_frames(keys in proptest::collection::vec("[a-z]{1,8}", 1..20), garbage in proptest::collection::vec(any::<u8>(), 0..40)) {
            let dir = tempfile::tempdir().unwrap();
            let mut j = Journal::open(dir.path(), "s").unwrap();
            let ops: Vec<JournalOp> = keys.iter().map(|k| JournalOp::Upsert { key: k.as_bytes().to_vec(), fp: [1; 16], row: k.as_bytes().to_vec() }).collect();
            j.append(&ops).unwrap();
            let mut f = OpenOptions::new().append(true).open(Journal::path(dir.path(), "s")).unwrap();
            f.write_all(&garbage).unwrap();
            let mut seen = Vec::new();
            let _ = j.replay(5, |chunk| -> Result<(), ()> { seen.extend(chunk); Ok(()) });
            prop_assert!(seen.len() >= ops.len() && seen[..ops.len()] == ops[..]);
        }
    }
}
