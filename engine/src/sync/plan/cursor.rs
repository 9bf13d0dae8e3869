//! Walks a sync's snapshot in key order for the merge ([`SnapshotCursor`]).

use super::merge::SnapshotKeys;
use crate::state::StateStore;
use crate::sync::run::Abort;

/// Walks a sync's snapshot in key order, a chunk at a time. A chunk's keys sit in one
/// buffer, reused from chunk to chunk (no allocation per key).
pub(crate) struct SnapshotCursor<'a> {
    state: &'a StateStore,
    sync: &'a str,
    /// The chunk's keys, one after another.
    keys: Vec<u8>,
    /// Each key's end in `keys`, and its fingerprint.
    entries: Vec<(usize, [u8; 16])>,
    /// The next entry of the chunk.
    at: usize,
    /// Where the next chunk starts: after the last key the previous one looked at.
    after: Option<Vec<u8>>,
    done: bool,
}

/// Snapshot entries read per state transaction.
const SNAPSHOT_CHUNK: usize = 16_384;

impl<'a> SnapshotCursor<'a> {
    /// `enabled: false` reads as an empty snapshot (one that no longer matches the sync).
    pub(crate) fn new(state: &'a StateStore, sync: &'a str, enabled: bool) -> SnapshotCursor<'a> {
        SnapshotCursor {
            state,
            sync,
            keys: Vec::new(),
            entries: Vec::new(),
            at: 0,
            after: None,
            done: !enabled,
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.entries[i - 1].0 };
        &self.keys[start..self.entries[i].0]
    }

    fn fill(&mut self) -> Result<(), Abort> {
        // A chunk can be empty without being the last (every row in it deleted since the
        // snapshot's base was written): read on until one has entries or the snapshot ends.
        while self.at >= self.entries.len() && !self.done {
            self.keys.clear();
            self.entries.clear();
            self.at = 0;
            let read = self.state.snapshot_chunk_into(
                self.sync,
                self.after.as_deref(),
                SNAPSHOT_CHUNK,
                &mut self.keys,
                &mut self.entries,
            );
            self.after = read?;
            self.done = self.after.is_none();
        }
        Ok(())
    }
}

impl SnapshotKeys for SnapshotCursor<'_> {
    fn peek(&mut self) -> Result<Option<(&[u8], [u8; 16])>, Abort> {
        self.fill()?;
        Ok((self.at < self.entries.len()).then(|| (self.key(self.at), self.entries[self.at].1)))
    }

    fn advance(&mut self) {
        self.at += 1;
    }
}
