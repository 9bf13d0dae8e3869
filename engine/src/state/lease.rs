//! Per-sync leases: two runs of one sync never overlap, in one process or in several.
//!
//! A lease is an exclusive `flock` on `leases/<sync>.lock` in the state directory, held for
//! the run's lifetime and released by the OS when the process exits, however it exits. The
//! file names the holder (run id, start time, process id) so that a refused run can say who
//! holds it. A file that still names a holder when its lock is free was left by a process
//! that died mid-run: the new holder learns that run's id to mark it interrupted.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Who holds a lease, as written in its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// The run holding it.
    pub run_id: String,
    /// When that run started (RFC 3339).
    pub started_at: String,
    /// The process it runs in.
    pub pid: u32,
}

/// A lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another run of the sync holds it.
    #[error("sync {sync} is already running since {since}, run ID {run_id}: wait for it to finish (`backflow runs show {run_id}`)")]
    Busy {
        /// The sync (its state key).
        sync: String,
        /// The run holding the lease.
        run_id: String,
        /// When that run started.
        since: String,
    },
    /// The lease file could not be created, locked or written.
    #[error("sync {sync}: cannot use the lease file {path}: {message}")]
    Io {
        /// The sync (its state key).
        sync: String,
        /// The lease file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// A held lease; dropping it releases the sync for the next run.
#[derive(Debug)]
pub struct SyncLease {
    file: File,
    /// A run of this sync that held the lease when its process died.
    pub interrupted_run: Option<String>,
}

impl SyncLease {
    /// Takes the lease of `key` (a sync's state key) for `holder`, or says who holds it.
    pub fn acquire(dir: &Path, key: &str, holder: &LeaseHolder) -> Result<SyncLease, LeaseError> {
        let path = dir.join("leases").join(file_name(key));
        let io = |e: std::io::Error| LeaseError::Io {
            sync: key.to_string(),
            path: path.clone(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(path.parent().unwrap_or(dir)).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let current = read_holder(&mut file);
                let (run_id, since) = current
                    .map(|h| (h.run_id, h.started_at))
                    .unwrap_or_else(|| ("(unknown)".into(), "(unknown)".into()));
                return Err(LeaseError::Busy {
                    sync: key.to_string(),
                    run_id,
                    since,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let interrupted_run = read_holder(&mut file).map(|h| h.run_id);
        let json = serde_json::to_vec(holder).map_err(|e| io(std::io::Error::other(e)))?;
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(&json).map_err(io)?;
        Ok(SyncLease {
            file,
            interrupted_run,
        })
    }
}

impl Drop for SyncLease {
    fn drop(&mut self) {
        // A finished run leaves no holder behind; the lock goes with the file handle.
        let _ = self.file.set_len(0);
    }
}

fn read_holder(file: &mut File) -> Option<LeaseHolder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// A file-safe name for a state key (sync names may hold any character).
fn file_name(key: &str) -> String {
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{safe}-{:016x}.lock",
        xxhash_rust::xxh3::xxh3_64(key.as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(run_id: &str) -> LeaseHolder {
        LeaseHolder {
            run_id: run_id.into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            pid: std::process::id(),
        }
    }

    #[test]
    fn a_second_holder_is_told_who_holds_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let first = SyncLease::acquire(dir.path(), "s", &holder("RUN1")).unwrap();
        let e = SyncLease::acquire(dir.path(), "s", &holder("RUN2")).unwrap_err();
        assert_eq!(e.to_string(), "sync s is already running since 2026-01-01T00:00:00Z, run ID RUN1: wait for it to finish (`backflow runs show RUN1`)");
        // Another sync (or the same sync's drafts) is not held up.
        SyncLease::acquire(dir.path(), "draft/s", &holder("RUN3")).unwrap();
        drop(first);
        let again = SyncLease::acquire(dir.path(), "s", &holder("RUN4")).unwrap();
        assert_eq!(
            again.interrupted_run, None,
            "a finished run leaves no holder"
        );
    }

    #[test]
    fn a_holder_left_by_a_dead_process_is_reported_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let lease = SyncLease::acquire(dir.path(), "s", &holder("RUN1")).unwrap();
        // A killed process releases the lock but leaves the file as it was.
        let file = lease.file.try_clone().unwrap();
        std::mem::forget(lease);
        file.unlock().unwrap();
        let next = SyncLease::acquire(dir.path(), "s", &holder("RUN2")).unwrap();
        assert_eq!(next.interrupted_run.as_deref(), Some("RUN1"));
    }
}
