//! Stage 7: commit. Acknowledged rows are journaled the moment the destination says so
//! (one `write` per batch, durable against a crash of the process), and the journal is
//! committed to the snapshot in durable transactions every few seconds and at the end of the
//! run. Only acknowledged rows ever reach the snapshot.
//!
//! The periodic commits run on a thread of their own, beside the delivery: the journal's
//! frames so far are sealed into a file of their own (see [`Journal::seal`]) and applied from
//! there while new acknowledgements go to a fresh journal. One sealed file at a time; a run
//! that starts applies a sealed file left by a crash before the journal, in that order.

pub mod journal;

use super::plan::PlannedRow;
use super::prepare::PreparedSync;
use super::run::{Abort, Tally};
use crate::domain::{
    bump, truncate_message, Change, ChangelogHeader, JournalOp, RejectedRow, RunProgress,
    MAX_REJECTED_KEPT,
};
use crate::state::{StateError, StateStore, SyncMeta};
use crate::workspace::Workspace;
use journal::{Journal, ReplayError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What sending one batch came to, handed to the [`Committer`]: rows acknowledged (as
/// journal ops), rows refused with the destination's reason, and whether the run must stop.
pub(crate) struct Sent {
    pub(crate) change: Change,
    pub(crate) acked: Vec<JournalOp>,
    pub(crate) rejected: Vec<(PlannedRow, String)>,
    pub(crate) result: Result<(), Abort>,
}

/// Why a journal file could not be committed to the snapshot.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    /// The journal's frames could not be counted.
    #[error("reading the journal {}: {source}", path.display())]
    Count {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Reading the journal or applying it to the snapshot failed.
    #[error("{0}")]
    Replay(ReplayError<StateError>),
    /// The committed sealed file could not be removed.
    #[error("removing the committed journal {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The commit thread died (a bug); the sealed file stays for the next run.
    #[error("{THREAD_PANICKED}")]
    ThreadPanicked,
}

/// Longest destination message kept per rejected row.
const MAX_ERROR_CHARS: usize = 2000;

/// Commit the delivery journal to the snapshot when it grows past this or this much time has
/// passed (and the previous commit is done), so a crash re-reads little and memory stays
/// small. Small commits also keep the run fast: a large sync's commits follow one another on
/// the commit thread, and the last one waits at the end of the run. With 32 MiB (about
/// 285,000 rows of issue 15's workload) the initial sync of a million rows took 3.8-4.2 s
/// against 2.8-3.8 s with 4 MiB (about 36,000 rows; five alternating runs each, the same CPU
/// time, so the larger commits made the delivery wait rather than work; the last commit at
/// the end of the run also went from about 250 ms to 70 ms).
const JOURNAL_APPLY_BYTES: u64 = 4 * 1024 * 1024;
const JOURNAL_APPLY_INTERVAL: Duration = Duration::from_secs(2);

/// Journal ops per redb transaction when committing (each commit is one fsync). They are held
/// in memory while applied, on the commit thread beside the delivery: 65,536 put the initial
/// sync of issue 15 at 140-151 MB peak RSS, 32,768 at 126-131 MB, for about the same time.
const JOURNAL_APPLY_CHUNK: usize = 32_768;

/// Opens the sync's delivery journal before a run. A journal left by a killed run is first
/// committed against the snapshot it was written for; then the snapshot is reset if it
/// belongs to another key or destination, and what it is for is recorded before the first
/// acknowledgement is journaled (so a journal left by a killed first run is never applied
/// to another key or destination).
pub(crate) fn open_journal(
    ws: &Workspace,
    state: &StateStore,
    p: &PreparedSync,
    meta: &SyncMeta,
) -> Result<Journal, Abort> {
    let stored = state.sync_meta(&p.state_key)?;
    let (journal, applied) = recover_journal(
        &ws.state_dir.join("journal"),
        state,
        &p.state_key,
        stored.as_ref().unwrap_or(meta),
    )?;
    if applied > 0 {
        tracing::info!(sync = %p.sync.name, rows = applied, "recorded deliveries of an interrupted run from its journal");
    }
    if stored.is_none() || !super::plan::snapshot_is_valid(state, p)? {
        state.reset_snapshot(&p.state_key, meta)?;
    }
    Ok(journal)
}

/// Commits to the snapshot what a run killed mid-delivery left in a sync's journal (with the
/// snapshot's stored meta: what the journal was written for), so that its rows and its
/// counts are in the state. The caller holds the sync's lease. Returns the ops committed.
pub(crate) fn commit_left_journal(
    state_dir: &Path,
    state: &StateStore,
    sync: &str,
) -> Result<u64, Abort> {
    let dir = state_dir.join("journal");
    if !Journal::path(&dir, sync).exists() && !Journal::sealed_path(&dir, sync).exists() {
        return Ok(0);
    }
    match state.sync_meta(sync)? {
        // No meta: nothing was ever acknowledged for the sync, so no journal has rows.
        None => Ok(0),
        Some(meta) => recover_journal(&dir, state, sync, &meta).map(|(_, applied)| applied),
    }
}

/// Opens a sync's journal after committing what an interrupted run left: its sealed file
/// first (older frames), then the journal. Returns the journal and the rows committed.
fn recover_journal(
    dir: &Path,
    state: &StateStore,
    sync: &str,
    meta: &SyncMeta,
) -> Result<(Journal, u64), Abort> {
    let mut journal =
        Journal::open(dir, sync).map_err(Abort::io("opening the delivery journal"))?;
    let sealed = Journal::sealed_path(dir, sync);
    let mut applied = 0;
    if sealed.exists() {
        applied += commit_sealed(state, &sealed, sync, meta, None)
            .map_err(|e| Abort::Commit(e.to_string()))?;
    }
    applied += commit_journal(state, &mut journal, sync, meta, None)?;
    Ok((journal, applied))
}

/// Commits a journal to the snapshot and empties it; returns the rows committed.
fn commit_journal(
    state: &StateStore,
    journal: &mut Journal,
    sync: &str,
    meta: &SyncMeta,
    run_rows: Option<u64>,
) -> Result<u64, Abort> {
    if journal.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let applied = apply_file(state, journal.file(), sync, meta, run_rows)
        .map_err(|e| Abort::Commit(e.to_string()))?;
    journal
        .clear()
        .map_err(Abort::io("clearing the delivery journal"))?;
    tracing::debug!(
        sync,
        rows = applied,
        ms = started.elapsed().as_millis() as u64,
        "journal committed to the snapshot"
    );
    Ok(applied)
}

/// Applies a journal file to the snapshot, a chunk per transaction; returns the ops.
///
/// Each chunk goes with the size of the change it belongs to, by which the snapshot decides
/// where it goes (its small delta or its base): during a run, the rows the run planned
/// (`run_rows`: every commit of a large run goes to the base, however few rows it carries);
/// for a journal left by an interrupted run, the file's own frames, counted first.
fn apply_file(
    state: &StateStore,
    path: &Path,
    sync: &str,
    meta: &SyncMeta,
    run_rows: Option<u64>,
) -> Result<u64, CommitError> {
    let size = match run_rows {
        Some(rows) => rows,
        None => journal::frame_count(path).map_err(|source| CommitError::Count {
            path: path.to_path_buf(),
            source,
        })?,
    };
    journal::replay_file(path, JOURNAL_APPLY_CHUNK, |ops| {
        state.apply_part(sync, meta, &ops, size)
    })
    .map_err(CommitError::Replay)
}

/// Commits a sealed journal file to the snapshot, then removes it; returns the rows.
fn commit_sealed(
    state: &StateStore,
    sealed: &Path,
    sync: &str,
    meta: &SyncMeta,
    run_rows: Option<u64>,
) -> Result<u64, CommitError> {
    let started = Instant::now();
    let applied = apply_file(state, sealed, sync, meta, run_rows)?;
    std::fs::remove_file(sealed).map_err(|source| CommitError::Remove {
        path: sealed.to_path_buf(),
        source,
    })?;
    tracing::debug!(
        sync,
        rows = applied,
        ms = started.elapsed().as_millis() as u64,
        "sealed journal committed to the snapshot"
    );
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
    /// The rows the run planned: the size of the change its commits belong to.
    planned_rows: u64,
    last_commit: Instant,
    /// Opens every stretch of the journal, so the snapshot commit knows whose changelog the
    /// acknowledged rows go to; `None` keeps no changelog (`keep_changelog_runs = 0`).
    header: Option<ChangelogHeader>,
    /// Whether the journal holds the header since it was last emptied.
    announced: bool,
    /// The thread that commits sealed journals, started by the first.
    committer: Option<CommitThread>,
    /// A warehouse-diff run: the journal is written back to the source database after
    /// delivery (`sync::warehouse::write_back`), never committed to the local snapshot.
    write_back: bool,
}

/// One thread per run commits the sealed journals, one at a time. It lives as long as the
/// run rather than one per commit: its allocator heap then serves every commit with the
/// pages the first one touched (a thread per commit faulted in and zeroed fresh pages each
/// time, about 4% of an initial sync's CPU).
struct CommitThread {
    sealed: std::sync::mpsc::Sender<PathBuf>,
    done: std::sync::mpsc::Receiver<Result<u64, CommitError>>,
    thread: std::thread::JoinHandle<()>,
    /// Whether a sealed journal was sent and its result not yet received.
    busy: bool,
    /// A result received by [`CommitThread::is_busy`], until it is reported.
    finished: Option<Result<u64, CommitError>>,
}

const THREAD_PANICKED: &str = "the commit thread panicked; the next run applies the journal again";

impl CommitThread {
    /// Starts the thread; it runs `commit` on each sealed journal it is given.
    fn start(
        mut commit: impl FnMut(&Path) -> Result<u64, CommitError> + Send + 'static,
    ) -> std::io::Result<CommitThread> {
        let (sealed, to_commit) = std::sync::mpsc::channel::<PathBuf>();
        let (report, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("backflow-commit".into())
            .spawn(move || {
                for path in to_commit {
                    if report.send(commit(&path)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(CommitThread {
            sealed,
            done,
            thread,
            busy: false,
            finished: None,
        })
    }

    fn is_busy(&mut self) -> bool {
        if self.busy {
            match self.done.try_recv() {
                Ok(result) => self.finished = Some(result),
                // The thread is gone without a result: it panicked, and the next wait says so
                // (the run stops, and the next run applies the sealed file).
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.finished = Some(Err(CommitError::ThreadPanicked))
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => return true,
            }
            self.busy = false;
        }
        false
    }

    /// Waits for the commit under way, if any; its result, or the previous unreported one.
    fn wait(&mut self) -> Option<Result<u64, CommitError>> {
        if self.busy {
            self.busy = false;
            // A closed channel: the thread is gone with the sealed file (a panic).
            return Some(
                self.done
                    .recv()
                    .map_err(|_| CommitError::ThreadPanicked)
                    .and_then(|r| r),
            );
        }
        self.finished.take()
    }

    fn commit(&mut self, sealed: PathBuf) -> Result<(), CommitError> {
        self.sealed
            .send(sealed)
            .map_err(|_| CommitError::ThreadPanicked)?;
        self.busy = true;
        Ok(())
    }
}

impl<'a> Committer<'a> {
    pub fn new(
        journal: &'a mut Journal,
        state: &'a StateStore,
        meta: &'a SyncMeta,
        p: &'a PreparedSync,
        run_id: &'a str,
        planned_rows: u64,
        header: Option<ChangelogHeader>,
    ) -> Committer<'a> {
        Committer {
            journal,
            state,
            meta,
            p,
            run_id,
            planned_rows,
            last_commit: Instant::now(),
            header,
            announced: false,
            committer: None,
            write_back: false,
        }
    }

    /// Leaves the journal to the warehouse write-back: nothing is committed to the local
    /// snapshot.
    pub(crate) fn for_write_back(mut self) -> Self {
        self.write_back = true;
        self
    }

    /// Records a sent batch: acknowledged rows go to the journal in one write (durable
    /// against a crash of this process from then on), refused rows to the pending list.
    /// Returns the batch's own result (whether the run must stop).
    pub fn record(&mut self, sent: Sent, tally: &mut Tally) -> Result<(), Abort> {
        let Sent {
            change,
            mut acked,
            rejected,
            result,
        } = sent;
        bump(&mut tally.delivered, change, acked.len() as u64);
        for (row, error) in rejected {
            let error = truncate_message(error, MAX_ERROR_CHARS);
            bump(&mut tally.failed, change, 1);
            if tally.rejected.len() < MAX_REJECTED_KEPT {
                tally.rejected.push(RejectedRow {
                    key: row.key_text(),
                    change: change.as_str().into(),
                    error: error.clone(),
                });
            }
            acked.push(JournalOp::Reject {
                key: row.key,
                change: change.as_str().into(),
                error,
                run_id: self.run_id.to_string(),
            });
        }
        if !acked.is_empty() {
            // The run's counts so far go with its rows: committed together, so that a killed
            // run's record gets them back (`StateStore::interrupt_run`).
            acked.push(JournalOp::Progress(RunProgress {
                run_id: self.run_id.to_string(),
                delivered: tally.delivered,
                failed: tally.failed,
            }));
        }
        let announcing = !self.announced && !acked.is_empty();
        if let Some(header) = self.header.as_ref().filter(|_| announcing) {
            acked.insert(0, JournalOp::Begin(header.clone()));
        }
        // One write: acknowledged rows are durable against a crash of this process from here.
        // A failed write leaves nothing of itself (see `Journal::append`), the header
        // included: only a written header counts as announced.
        self.journal.append(&acked).map_err(|source| Abort::Io {
            what: format!(
                "writing the delivery journal {}",
                self.journal.file().display()
            ),
            source,
        })?;
        self.announced |= announcing && self.header.is_some();
        if self.journal.len() > JOURNAL_APPLY_BYTES
            || self.last_commit.elapsed() > JOURNAL_APPLY_INTERVAL
        {
            self.commit_in_background()?;
        }
        result
    }

    /// Seals the journal and commits it on a thread of its own, unless the previous commit
    /// is still going (then the journal keeps growing until it is done).
    fn commit_in_background(&mut self) -> Result<(), Abort> {
        if self.write_back {
            return Ok(());
        }
        if self.committer.as_mut().is_some_and(CommitThread::is_busy) || self.journal.is_empty() {
            return Ok(());
        }
        self.wait_for_commit()?;
        let sealed = self
            .journal
            .seal()
            .map_err(Abort::io("sealing the delivery journal"))?;
        // The fresh journal needs its own header before its first rows.
        self.announced = false;
        self.last_commit = Instant::now();
        if self.committer.is_none() {
            let (state, sync, meta, rows) = (
                self.state.clone(),
                self.p.state_key.clone(),
                self.meta.clone(),
                self.planned_rows,
            );
            let thread = CommitThread::start(move |sealed| {
                commit_sealed(&state, sealed, &sync, &meta, Some(rows))
            });
            self.committer = Some(thread.map_err(Abort::io("starting the journal commit"))?);
        }
        if let Some(committer) = self.committer.as_mut() {
            committer
                .commit(sealed)
                .map_err(|e| Abort::Commit(format!("committing the delivery journal: {e}")))?;
        }
        Ok(())
    }

    /// Waits for the commit on its own thread, if any, and reports how it went.
    fn wait_for_commit(&mut self) -> Result<(), Abort> {
        match self.committer.as_mut().and_then(CommitThread::wait) {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(Abort::Commit(format!(
                "committing the delivery journal: {e}"
            ))),
        }
    }

    /// Commits every acknowledged row journaled so far to the snapshot, durably.
    pub fn commit_acknowledged(&mut self) -> Result<(), Abort> {
        if self.write_back {
            return Ok(());
        }
        let background = self.wait_for_commit();
        // Older frames first: a sealed file whose commit failed is committed here, or the
        // journal waits for the next run, which applies them in order.
        let sealed = self.journal.sealed_file();
        if sealed.exists() {
            commit_sealed(
                self.state,
                &sealed,
                &self.p.state_key,
                self.meta,
                Some(self.planned_rows),
            )
            .map_err(|e| match &background {
                Err(first) => Abort::Commit(format!("{first}; and again: {e}")),
                Ok(()) => Abort::Commit(format!("committing the delivery journal: {e}")),
            })?;
        } else {
            background?;
        }
        commit_journal(
            self.state,
            self.journal,
            &self.p.state_key,
            self.meta,
            Some(self.planned_rows),
        )?;
        self.announced = false;
        self.last_commit = Instant::now();
        Ok(())
    }
}

impl Drop for Committer<'_> {
    /// The commit thread never outlives its run (a later run of the sync would apply the same
    /// sealed file beside it): closing its channel ends it after the commit under way.
    fn drop(&mut self) {
        if let Some(CommitThread { sealed, thread, .. }) = self.committer.take() {
            drop(sealed);
            let _ = thread.join();
        }
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

#[cfg(test)]
mod recovery_tests {
    use super::*;

    /// A commit thread that panicked counts as finished, with an error: a run polling it
    /// stops at its next commit instead of waiting on it (and growing its journal) forever.
    #[test]
    fn a_panicked_commit_thread_is_reported() {
        let mut thread = CommitThread::start(|sealed| {
            if sealed.ends_with("bad") {
                panic!("injected")
            } else {
                Ok(7)
            }
        })
        .unwrap();
        thread.commit("good".into()).unwrap();
        assert!(matches!(thread.wait(), Some(Ok(7))));
        assert!(thread.wait().is_none(), "reported once");
        thread.commit("bad".into()).unwrap();
        while thread.is_busy() {
            std::thread::yield_now();
        }
        assert!(matches!(thread.wait(), Some(Err(e)) if e.to_string().contains("panicked")));
        assert!(
            thread.commit("good".into()).is_err(),
            "no thread left to commit"
        );
    }

    /// A crash while a sealed journal was being committed leaves it and the journal after
    /// it: the next run applies both, the older first, so the newer value of a row wins.
    #[test]
    fn a_sealed_journal_and_the_journal_after_it_are_applied_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(&dir.path().join("state")).unwrap();
        let meta = SyncMeta {
            primary_key: vec!["id".into()],
            destination: "d".into(),
            destination_plugin: "p".into(),
            key_types: vec![],
        };
        let journal_dir = dir.path().join("journal");
        let upsert = |key: &str, n: u8| JournalOp::Upsert {
            key: key.as_bytes().to_vec(),
            fp: [n; 16],
            row: vec![n],
        };
        let mut journal = Journal::open(&journal_dir, "s").unwrap();
        journal.append(&[upsert("a", 1), upsert("b", 1)]).unwrap();
        let sealed = journal.seal().unwrap();
        assert!(journal.seal().is_err(), "one sealed file at a time");
        journal
            .append(&[
                upsert("a", 2),
                JournalOp::Delete { key: b"b".to_vec() },
                upsert("c", 2),
            ])
            .unwrap();
        drop(journal);

        let (journal, applied) = recover_journal(&journal_dir, &state, "s", &meta).unwrap();
        assert_eq!(applied, 5);
        assert!(journal.is_empty() && !sealed.exists());
        let rows = state.snapshot_entries("s", &[b"a", b"b", b"c"]).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| r.as_ref().map(|d| d.fp[0]))
                .collect::<Vec<_>>(),
            vec![Some(2), None, Some(2)]
        );
    }

    /// A run's commits are judged by the run's size, not their own: a large run commits in
    /// small pieces (a few MiB each), and none of them may go to the snapshot's delta, to be
    /// folded into the base again a few commits later. A journal left by an interrupted run
    /// is judged by its own frames.
    #[test]
    fn a_small_commit_of_a_large_run_goes_to_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(&dir.path().join("state")).unwrap();
        let meta = SyncMeta {
            primary_key: vec!["id".into()],
            destination: "d".into(),
            destination_plugin: "p".into(),
            key_types: vec![],
        };
        let upsert = |k: u32| JournalOp::Upsert {
            key: k.to_be_bytes().to_vec(),
            fp: [1; 16],
            row: vec![1],
        };
        state
            .apply("s", &meta, &(0..40_000).map(upsert).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(state.snapshot_delta_len("s"), 0);
        let mut journal = Journal::open(&dir.path().join("journal"), "s").unwrap();

        journal
            .append(&(50_000..50_100).map(upsert).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(
            commit_journal(&state, &mut journal, "s", &meta, Some(1_000_000)).unwrap(),
            100
        );
        assert_eq!(
            state.snapshot_delta_len("s"),
            0,
            "part of a run of a million rows: into the base"
        );

        journal
            .append(&(60_000..60_100).map(upsert).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(
            commit_journal(&state, &mut journal, "s", &meta, Some(100)).unwrap(),
            100
        );
        assert_eq!(
            state.snapshot_delta_len("s"),
            100,
            "a run of 100 rows: into the delta"
        );

        journal
            .append(&(70_000..70_100).map(upsert).collect::<Vec<_>>())
            .unwrap();
        drop(journal);
        let (_, applied) =
            recover_journal(&dir.path().join("journal"), &state, "s", &meta).unwrap();
        assert_eq!(applied, 100);
        assert_eq!(
            state.snapshot_delta_len("s"),
            200,
            "left by a run: judged by its own 100 frames"
        );
        assert_eq!(state.snapshot_len("s").unwrap(), 40_300);
    }
}
