//! Final run records that could not be written to the state (a full disk) when the process
//! that ran them exits (a CLI run): each is saved beside the state as a small file,
//! `unrecorded/RUN_ID.json`, and the next process to start on this state writes it in place
//! of the `running` record left behind ([`recover`](super::recover)), so the run reads
//! `failed` with the disk's error and its true counts, not `interrupted`. When even that file
//! cannot be written, the run is marked `interrupted` with the counts its journal kept.

use crate::domain::RunRecord;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The folder of saved final records, in the state directory.
fn folder(state_dir: &Path) -> PathBuf {
    state_dir.join("unrecorded")
}

/// Saves `record` (owner-only: it may quote rows); returns the file.
pub fn save_unrecorded(state_dir: &Path, record: &RunRecord) -> std::io::Result<PathBuf> {
    let dir = folder(state_dir);
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{}.json", record.run_id));
    let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(&file)?;
    out.write_all(&bytes)?;
    out.sync_all()?;
    Ok(file)
}

/// The saved final record of `run_id`, if one was saved and reads.
pub(crate) fn saved_record(state_dir: &Path, run_id: &str) -> Option<RunRecord> {
    let file = folder(state_dir).join(format!("{run_id}.json"));
    let bytes = std::fs::read(&file).ok()?;
    match serde_json::from_slice::<RunRecord>(&bytes) {
        Ok(record) if record.run_id == run_id => Some(record),
        Ok(_) | Err(_) => {
            tracing::warn!(file = %file.display(), "an unreadable saved run record is ignored");
            None
        }
    }
}

/// Removes the saved final record of `run_id` (written to the state now).
pub(crate) fn forget_saved(state_dir: &Path, run_id: &str) {
    let _ = std::fs::remove_file(folder(state_dir).join(format!("{run_id}.json")));
}
