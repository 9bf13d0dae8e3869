//! Stage 7: commit. Acknowledged rows are journaled the moment the destination says so
//! (one `write` per batch, durable against a crash of the process), and the journal is
//! committed to the snapshot in durable transactions every few seconds and at the end of the
//! run. Only acknowledged rows ever reach the snapshot.

pub mod journal;

use super::deliver::send::Sent;
use super::prepare::PreparedSync;
use super::{Abort, Tally};
use crate::config::Workspace;
use crate::domain::{bump, truncate_message, ChangelogHeader, JournalOp, RejectedRow, MAX_REJECTED_KEPT};
use crate::state::{StateStore, SyncMeta};
use journal::Journal;
use std::time::{Duration, Instant};

/// Longest destination message kept per rejected row.
const MAX_ERROR_CHARS: usize = 2000;

/// Commit the delivery journal to the snapshot when it grows past this or this much time has
/// passed, so a crash re-reads little and memory stays small.
const JOURNAL_APPLY_BYTES: u64 = 32 * 1024 * 1024;
const JOURNAL_APPLY_INTERVAL: Duration = Duration::from_secs(2);

/// Journal ops per redb transaction when committing (each commit is one fsync).
const JOURNAL_APPLY_CHUNK: usize = 250_000;

/// Opens the sync's delivery journal before a run. A journal left by a killed run is first
/// committed against the snapshot it was written for; then the snapshot is reset if it
/// belongs to another key or destination, and what it is for is recorded before the first
/// acknowledgement is journaled (so a journal left by a killed first run is never applied
/// to another key or destination).
pub(crate) fn open_journal(ws: &Workspace, state: &StateStore, p: &PreparedSync, meta: &SyncMeta) -> Result<Journal, Abort> {
    let mut journal = Journal::open(&ws.state_dir.join("journal"), &p.state_key).map_err(|e| Abort(format!("opening the delivery journal: {e}")))?;
    let stored = state.sync_meta(&p.state_key).map_err(|e| Abort(e.to_string()))?;
    if !journal.is_empty() {
        let applied = commit_journal(state, &mut journal, &p.state_key, stored.as_ref().unwrap_or(meta))?;
        tracing::info!(sync = %p.sync.name, rows = applied, "recorded deliveries of an interrupted run from its journal");
    }
    if stored.is_none() || !super::plan::snapshot_is_valid(state, p)? {
        state.reset_snapshot(&p.state_key, meta).map_err(|e| Abort(e.to_string()))?;
    }
    Ok(journal)
}

/// Commits a journal to the snapshot and empties it; returns the rows committed.
fn commit_journal(state: &StateStore, journal: &mut Journal, sync: &str, meta: &SyncMeta) -> Result<u64, Abort> {
    if journal.is_empty() {
        return Ok(0);
    }
    let applied = journal.replay(JOURNAL_APPLY_CHUNK, |ops| state.apply(sync, meta, &ops)).map_err(|e| Abort(e.to_string()))?;
    journal.clear().map_err(|e| Abort(format!("clearing the delivery journal: {e}")))?;
    Ok(applied)
}

/// Journals what the destination acknowledged during delivery, keeps the run's counts, and
/// commits the journal to the snapshot.
pub(crate) struct Committer<'a> {
    journal: &'a mut Journal,
    state: &'a StateStore,
    meta: &'a SyncMeta,
    p: &'a PreparedSync,
    run_id: &'a str,
    last_commit: Instant,
    /// Opens every stretch of the journal, so the snapshot commit knows whose changelog the
    /// acknowledged rows go to; `None` keeps no changelog (`keep_changelog_runs = 0`).
    header: Option<ChangelogHeader>,
    /// Whether the journal holds the header since it was last emptied.
    announced: bool,
}

impl<'a> Committer<'a> {
    pub fn new(journal: &'a mut Journal, state: &'a StateStore, meta: &'a SyncMeta, p: &'a PreparedSync, run_id: &'a str, header: Option<ChangelogHeader>) -> Committer<'a> {
        Committer { journal, state, meta, p, run_id, last_commit: Instant::now(), header, announced: false }
    }

    /// Records a sent batch: acknowledged rows go to the journal in one write (durable
    /// against a crash of this process from then on), refused rows to the pending list.
    /// Returns the batch's own result (whether the run must stop).
    pub fn record(&mut self, sent: Sent, tally: &mut Tally) -> Result<(), Abort> {
        let Sent { change, mut acked, rejected, result } = sent;
        bump(&mut tally.delivered, change, acked.len() as u64);
        for (row, error) in rejected {
            let error = truncate_message(error, MAX_ERROR_CHARS);
            bump(&mut tally.failed, change, 1);
            if tally.rejected.len() < MAX_REJECTED_KEPT {
                tally.rejected.push(RejectedRow { key: row.key_text(), change: change.as_str().into(), error: error.clone() });
            }
            acked.push(JournalOp::Reject { key: row.key, change: change.as_str().into(), error, run_id: self.run_id.to_string() });
        }
        let announcing = !self.announced && !acked.is_empty();
        if let Some(header) = self.header.as_ref().filter(|_| announcing) {
            acked.insert(0, JournalOp::Begin(header.clone()));
        }
        // One write: acknowledged rows are durable against a crash of this process from here.
        // A failed write leaves nothing of itself (see `Journal::append`), the header
        // included: only a written header counts as announced.
        self.journal.append(&acked).map_err(|e| Abort(format!("writing the delivery journal: {e}")))?;
        self.announced |= announcing && self.header.is_some();
        if self.journal.len() > JOURNAL_APPLY_BYTES || self.last_commit.elapsed() > JOURNAL_APPLY_INTERVAL {
            self.commit_acknowledged()?;
        }
        result
    }

    /// Commits every acknowledged row journaled so far to the snapshot, durably.
    pub fn commit_acknowledged(&mut self) -> Result<(), Abort> {
        commit_journal(self.state, self.journal, &self.p.state_key, self.meta)?;
        self.announced = false;
        self.last_commit = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::truncate_message;

    #[test]
    fn truncates_on_a_character_boundary() {
        assert_eq!(truncate_message("short".into(), 10), "short");
        assert_eq!(truncate_message("abcdef".into(), 3), "abc…");
        // 'é' is two bytes: a cut inside it moves back to the boundary before it.
        assert_eq!(truncate_message("aé".into(), 2), "a…");
    }
}
