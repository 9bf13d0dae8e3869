//! Final run records a full disk kept out of the state, when a CLI process is about to exit:
//! tried once more, then saved beside the state for the next start to write (see
//! `sync/unrecorded.rs`), so that nothing about the run is silently lost.

use super::App;
use crate::domain::RunRecord;
use std::path::PathBuf;

impl App {
    /// The final run records the state had no room for, after one more try to write them,
    /// each with where it was saved for the next start to write (or why it could not be).
    pub fn save_unwritten_runs(&self) -> Vec<(RunRecord, Result<PathBuf, std::io::Error>)> {
        self.state
            .unwritten_runs()
            .into_iter()
            .map(|run| {
                let saved = crate::sync::save_unrecorded(self.state_dir(), &run);
                (run, saved)
            })
            .collect()
    }
}
