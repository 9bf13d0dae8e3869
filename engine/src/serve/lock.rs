//! One service per workspace state: `serve.lock` in the state directory, held with an OS file
//! lock for the life of the process (released by the kernel even after a SIGKILL).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The held `serve.lock` of a state directory: while this value lives, no other
/// `backflow serve` can serve the same state. Dropping it (or the process dying) releases it.
pub struct InstanceLock {
    _file: File,
    /// Where the lock file is: `serve.lock` in the state directory.
    pub path: PathBuf,
}

/// Why `backflow serve` could not take the state directory's service lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another service already holds the lock on this state directory.
    #[error("another `backflow serve` already serves the state in {dir} ({holder}); stop it first, or give this workspace its own [workspace] state_dir")]
    Held {
        /// The state directory that is already served.
        dir: PathBuf,
        /// Who holds it, as the holder wrote into the lock file ("pid 123, listening on
        /// 127.0.0.1:8080"), or that a process is starting and has not written it yet.
        holder: String,
    },
    /// The state directory or the lock file could not be created, opened, locked or written.
    #[error("cannot create the service lock {path}: {source}")]
    Io {
        /// The lock file's path.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}

impl InstanceLock {
    /// Takes the lock, or says who holds it.
    pub fn acquire(state_dir: &Path, listen: &str) -> Result<InstanceLock, LockError> {
        let path = state_dir.join("serve.lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = if holder.trim().is_empty() {
                    "a process that is starting".to_string()
                } else {
                    holder.trim().to_string()
                };
                return Err(LockError::Held {
                    dir: state_dir.to_path_buf(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for the next one's message.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "pid {}, listening on {listen}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(InstanceLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_state_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstanceLock::acquire(dir.path(), "127.0.0.1:1").unwrap();
        let e = InstanceLock::acquire(dir.path(), "127.0.0.1:2")
            .err()
            .unwrap();
        assert!(
            e.to_string().contains(&format!(
                "pid {}, listening on 127.0.0.1:1",
                std::process::id()
            )),
            "{e}"
        );
        drop(first);
        InstanceLock::acquire(dir.path(), "127.0.0.1:2").unwrap();
    }
}
