//! One service per workspace state: `serve.lock` in the state directory, held with an OS file
//! lock for the life of the process (released by the kernel even after a SIGKILL).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

pub struct InstanceLock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another `backflow serve` already serves the state in {dir} ({holder}); stop it first, or give this workspace its own [workspace] state_dir")]
    Held { dir: PathBuf, holder: String },
    #[error("cannot create the service lock {path}: {source}")]
    Io {
        path: PathBuf,
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
