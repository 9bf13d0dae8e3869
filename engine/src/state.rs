//! Durable state in redb: run history (and, as the engine grows, snapshots, drafts and
//! approvals). The file carries a format version; a file written by a newer or unknown
//! layout is refused rather than read.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Layout version of the state file. Bump on any incompatible change to tables or records.
pub const FORMAT_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// run id (a ULID, so keys sort by start time) → JSON-encoded [`RunRecord`].
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open state file {path}: {message}")]
    Storage { path: PathBuf, message: String },
    #[error("state file {path} has format version {found}, but this backflow understands only version {FORMAT_VERSION}; use a newer backflow (or move the file aside to start over)")]
    UnknownFormat { path: PathBuf, found: u64 },
    #[error("state file {path} is in use by another backflow process")]
    Locked { path: PathBuf },
}

#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {message}")]
pub struct StateError {
    path: PathBuf,
    message: String,
}

/// Rows per operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
}

impl OpCounts {
    pub fn total(&self) -> u64 {
        self.added + self.changed + self.removed
    }
}

/// A row the destination refused, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRow {
    /// The primary key, rendered as text (`1` or `1|eu` for composite keys).
    pub key: String,
    pub change: String,
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every planned row was delivered.
    Succeeded,
    /// The run finished but the destination rejected some rows.
    Partial,
    /// The run stopped early; see `error`.
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
        }
    }
}

/// One run of a sync, as stored and as printed by `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub sync: String,
    pub trigger: String,
    pub user: String,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    /// Time spent reading the model and building the plan, and delivering it.
    #[serde(default)]
    pub timings: Timings,
    pub status: RunStatus,
    pub planned: OpCounts,
    pub delivered: OpCounts,
    pub failed: OpCounts,
    /// Content hashes (SHA-256) of the plugins used.
    pub plugins: PluginHashes,
    /// Hash of the sync's effective configuration.
    pub config_hash: String,
    pub error: Option<String>,
    /// Rejected rows (at most [`MAX_REJECTED_KEPT`] are kept in the record).
    pub rejected: Vec<RejectedRow>,
}

/// How many rejected rows a run record keeps.
pub const MAX_REJECTED_KEPT: usize = 1000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timings {
    pub plan_ms: u64,
    pub deliver_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginHashes {
    pub source: String,
    pub destination: String,
}

pub struct StateStore {
    db: Database,
    path: PathBuf,
}

impl StateStore {
    /// Opens (creating if needed) `state.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<StateStore, OpenError> {
        let path = dir.join("state.redb");
        let storage = |message: String| OpenError::Storage { path: path.clone(), message };
        std::fs::create_dir_all(dir).map_err(|e| storage(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => OpenError::Locked { path: path.clone() },
            other => storage(other.to_string()),
        })?;
        let txn = db.begin_write().map_err(|e| storage(e.to_string()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| storage(e.to_string()))?;
            let found = meta.get("format_version").map_err(|e| storage(e.to_string()))?.map(|v| v.value());
            match found {
                None => {
                    meta.insert("format_version", FORMAT_VERSION).map_err(|e| storage(e.to_string()))?;
                }
                Some(FORMAT_VERSION) => {}
                Some(found) => return Err(OpenError::UnknownFormat { path: path.clone(), found }),
            }
            txn.open_table(RUNS).map_err(|e| storage(e.to_string()))?;
        }
        txn.commit().map_err(|e| storage(e.to_string()))?;
        Ok(StateStore { db, path })
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        StateError { path: self.path.clone(), message: e.to_string() }
    }

    pub fn record_run(&self, run: &RunRecord) -> Result<(), StateError> {
        let json = serde_json::to_vec(run).map_err(|e| self.err(e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut runs = txn.open_table(RUNS).map_err(|e| self.err(e))?;
            runs.insert(run.run_id.as_str(), json.as_slice()).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Runs, newest first, optionally of one sync.
    pub fn runs(&self, sync: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let runs = txn.open_table(RUNS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in runs.iter().map_err(|e| self.err(e))?.rev() {
            let (_, value) = entry.map_err(|e| self.err(e))?;
            let run: RunRecord = serde_json::from_slice(value.value()).map_err(|e| self.err(format!("unreadable run record: {e}")))?;
            if sync.is_none_or(|s| s == run.sync) {
                out.push(run);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let runs = txn.open_table(RUNS).map_err(|e| self.err(e))?;
        let value = runs.get(run_id).map_err(|e| self.err(e))?;
        value
            .map(|v| serde_json::from_slice(v.value()).map_err(|e| self.err(format!("unreadable run record: {e}"))))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_format_versions() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateStore::open(dir.path()).unwrap());
        {
            let db = Database::create(dir.path().join("state.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("format_version", FORMAT_VERSION + 1).unwrap();
            txn.commit().unwrap();
        }
        match StateStore::open(dir.path()) {
            Err(OpenError::UnknownFormat { found, .. }) => assert_eq!(found, FORMAT_VERSION + 1),
            other => panic!("expected UnknownFormat, got {:?}", other.err()),
        }
    }
}
