//! Durable state in redb: run history, snapshots and pending rows per sync, change requests,
//! held runs, the audit log; and the per-sync leases that keep two runs of a sync apart.
//!
//! Many processes share the file (redb's multi-writer mode): a `backflow runs` or an API read
//! in one process is never blocked by a run delivering in another; write transactions are
//! short and take turns. The file carries a format version; an older layout is migrated on
//! open, a newer or unknown one refused rather than read.
//!
//! Why ~750 lines: one store, one transaction discipline; the record types and tables belong
//! together. Leases live in `lease.rs`, reading run changelogs in `changelog.rs` (they are
//! written by [`StateStore::apply`] with the snapshot), the snapshot's two tables (a base and
//! a delta laid over it) in `snapshot.rs`, and the blocks its base is stored in in `block.rs`.

mod block;
mod changelog;
mod lease;
mod snapshot;
mod tokens;

pub use lease::{LeaseError, LeaseHolder, SyncLease};
pub use tokens::{parse_token, ApiToken, NewToken, TokenRejected};

pub use crate::domain::{
    CheckReport, DiffCounts, OpCounts, PluginHashes, RejectedRow, RunRecord, RunStatus, Timings,
    MAX_REJECTED_KEPT,
};
use redb::{
    ConcurrencyMode, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableHandle,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Layout version of the state file. Bump on any incompatible change to tables or records,
/// and migrate the previous version in [`StateStore::open`].
/// - 1: the first layout;
/// - 2: adds `runs_by_sync`, the history index (built from `runs` on migration);
/// - 3: a run's changelog keeps the rows it inserted in blocks (see `changelog::InsertBlock`);
///   entries of version 2 are still read as they are, so the migration only records 3;
/// - 4: a snapshot is a base and a delta, and its size is kept in `snapshot_rows` (see
///   `snapshot.rs`). An older backflow must refuse the file: it would read the base without
///   the delta;
/// - 5: a snapshot's base is stored in blocks of consecutive rows (`snapshot-blocks/NAME`,
///   see `block.rs`) instead of one entry per row (`snapshot/NAME`); the migration rewrites
///   every per-row base into blocks, recording the size of a version 3 snapshot as it goes.
pub const FORMAT_VERSION: u64 = 5;

/// Longest run error message kept in history, and longest check message and sample.
const MAX_RUN_ERROR_BYTES: usize = 16 * 1024;
const MAX_CHECK_MESSAGE_BYTES: usize = 4 * 1024;
const MAX_CHECK_SAMPLE_BYTES: usize = 1024;

/// redb page cache size. It bounds what the state holds in memory while a run commits a
/// million acknowledged rows: with 64 MiB the issue-15 initial sync peaked at 175-184 MB
/// RSS, with 32 MiB at 130-131 MB, with 16 MiB at 97-98 MB; run times were the same within
/// this machine's noise at 32 and 64 MiB, while 16 MiB made the no-change rerun about
/// 0.1-0.4 s slower (issue 15, session 8 in docs/benchmarks-history.md).
const CACHE_BYTES: usize = 32 * 1024 * 1024;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// run id (a ULID, so keys sort by start time) → JSON-encoded [`RunRecord`].
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
/// (history key, run id) → nothing: each sync's runs in start order, so the last run of a
/// sync or its retention never reads the whole history. The history key is the sync's name,
/// or `draft/NAME` for draft runs.
const RUNS_BY_SYNC: TableDefinition<(&str, &str), ()> = TableDefinition::new("runs_by_sync");
/// sync name → JSON-encoded [`SyncMeta`]: what the snapshot of that sync is valid for.
const SYNC_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sync_meta");

/// "current" → JSON [`crate::governance::Published`]: the configuration runs use.
const PUBLISHED: TableDefinition<&str, &[u8]> = TableDefinition::new("published");
/// change request id → JSON [`crate::governance::ChangeRequest`].
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// run id → JSON [`crate::governance::RunGate`]: runs held for approval.
const RUN_GATES: TableDefinition<&str, &[u8]> = TableDefinition::new("run_gates");
/// sequence number → JSON [`AuditEntry`]. Append-only: nothing updates or removes entries.
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

// Per-sync tables (named after the sync):
// - `snapshot-blocks/NAME` and `snapshot-delta/NAME`: encoded primary key → 16-byte
//   fingerprint followed by the encoded mapped row last delivered (needed to send deletes and
//   to undo a run), in blocks and per key; see `snapshot.rs`;
// - `pending/NAME`: encoded primary key → JSON [`PendingRow`], rows the destination refused.
fn pending_table(sync: &str) -> String {
    format!("pending/{sync}")
}

/// What a sync's snapshot is valid for. If any of it changes, the snapshot is dropped: keys
/// of another primary key, or rows delivered to another destination, say nothing about what
/// the new target holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMeta {
    pub primary_key: Vec<String>,
    pub destination: String,
    pub destination_plugin: String,
    /// The type of each key column's values in the rows delivered (`integer`, `text`…).
    /// Not part of validity: a change stops the run instead (see `sync::plan`), because
    /// keys of another type would turn into "remove everything, add everything".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_types: Vec<String>,
}

impl SyncMeta {
    /// Whether a snapshot recorded under `self` is valid for `other` (key types aside).
    pub fn same_target(&self, other: &SyncMeta) -> bool {
        self.primary_key == other.primary_key
            && self.destination == other.destination
            && self.destination_plugin == other.destination_plugin
    }
}

/// A row the destination refused, kept until a later run delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRow {
    pub change: String,
    pub error: String,
    pub run_id: String,
}

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

/// Something that happened, to be appended to the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvent {
    pub user: String,
    /// `change.submit`, `change.approve`, `change.reject`, `change.publish`, `run.start`,
    /// `run.awaiting_approval`, `run.approve`.
    pub action: String,
    /// What it is about: a change request id, a sync and run id.
    pub target: String,
    /// The configuration the action concerns (SHA-256 of its files).
    pub config_hash: Option<String>,
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// An audit log entry: the event, when, and a hash chain over every entry before it (so an
/// edit to the file outside backflow shows up in `backflow audit --verify`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: String,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditEntry {
    fn compute_hash(seq: u64, at: &str, event: &AuditEvent, prev_hash: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(prev_hash.as_bytes());
        h.update(seq.to_be_bytes());
        h.update(at.as_bytes());
        h.update(serde_json::to_vec(event).unwrap_or_default());
        format!("{:x}", h.finalize())
    }

    /// Whether this entry's hash matches its content and the previous entry's hash.
    pub fn verifies(&self, prev_hash: &str) -> bool {
        self.prev_hash == prev_hash
            && self.hash == AuditEntry::compute_hash(self.seq, &self.at, &self.event, prev_hash)
    }
}

/// Above every run id (ULIDs are upper-case Crockford base32), to bound index ranges.
const HIGHEST_RUN_ID: &str = "~";

/// Where a run is filed in the history index: its sync, or `draft/SYNC` for a draft run.
pub fn history_key(run: &RunRecord) -> String {
    if run.draft {
        draft_key(&run.sync)
    } else {
        run.sync.clone()
    }
}

/// The state key of a sync's draft runs: their snapshot, pending rows, journal, lease and
/// history are kept apart from the published sync's under it.
pub fn draft_key(sync: &str) -> String {
    format!("draft/{sync}")
}

/// A run record with its messages cut to bounded sizes, as stored.
fn bounded(run: &RunRecord) -> RunRecord {
    use crate::domain::truncate_message;
    let mut run = run.clone();
    run.error = run.error.map(|e| truncate_message(e, MAX_RUN_ERROR_BYTES));
    for check in &mut run.checks {
        check.message =
            truncate_message(std::mem::take(&mut check.message), MAX_CHECK_MESSAGE_BYTES);
        for sample in &mut check.samples {
            *sample = truncate_message(std::mem::take(sample), MAX_CHECK_SAMPLE_BYTES);
        }
    }
    run
}

/// A governance record to write (see [`StateStore::write_governance`]).
pub enum GovernanceDoc<'a> {
    Published(serde_json::Value),
    Change(u64, serde_json::Value),
    RunGate(&'a str, serde_json::Value),
}

/// The state file, open. Cloning is cheap and shares the open database (a run commits its
/// journal on a thread of its own with a clone).
#[derive(Clone)]
pub struct StateStore {
    db: std::sync::Arc<Database>,
    path: PathBuf,
}

impl StateStore {
    /// Opens (creating if needed) `state.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<StateStore, OpenError> {
        let path = dir.join("state.redb");
        let storage = |message: String| OpenError::Storage {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| storage(e.to_string()))?;
        // redb's page cache defaults to 1 GiB; the diff walks the whole snapshot once per run,
        // so a large cache would only hold pages that are not read again. Keep memory bounded.
        // Multi-writer: other backflow processes (the CLI beside a service, a second run) open
        // the same file; reads never wait, write transactions take turns.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen
                | redb::DatabaseError::LockProtocolMismatch => {
                    OpenError::Locked { path: path.clone() }
                }
                other => storage(other.to_string()),
            })?;
        let txn = db.begin_write().map_err(|e| storage(e.to_string()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| storage(e.to_string()))?;
            let found = meta
                .get("format_version")
                .map_err(|e| storage(e.to_string()))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert("format_version", FORMAT_VERSION)
                        .map_err(|e| storage(e.to_string()))?;
                }
                Some(FORMAT_VERSION) => {}
                Some(found @ 1..=4) => {
                    if found == 1 {
                        // 1 → 2: index the existing history by sync.
                        let runs = txn.open_table(RUNS).map_err(|e| storage(e.to_string()))?;
                        let mut index = txn
                            .open_table(RUNS_BY_SYNC)
                            .map_err(|e| storage(e.to_string()))?;
                        for entry in runs.iter().map_err(|e| storage(e.to_string()))? {
                            let (id, value) = entry.map_err(|e| storage(e.to_string()))?;
                            let run: RunRecord =
                                serde_json::from_slice(value.value()).map_err(|e| {
                                    storage(format!("run {} is unreadable: {e}", id.value()))
                                })?;
                            index
                                .insert((history_key(&run).as_str(), id.value()), ())
                                .map_err(|e| storage(e.to_string()))?;
                        }
                    }
                    // 2 → 3: insert blocks are new; a version 2 changelog reads as it is.
                    // 3 → 4: a version 3 snapshot is a base without a delta and without a
                    // recorded size. 4 → 5: every per-row base is rewritten into blocks (and
                    // the size of a version 3 one recorded).
                    let per_row: Vec<String> = txn
                        .list_tables()
                        .map_err(|e| storage(e.to_string()))?
                        .filter_map(|table| {
                            table
                                .name()
                                .strip_prefix(snapshot::PER_ROW_BASE_PREFIX)
                                .map(str::to_string)
                        })
                        .collect();
                    for sync in per_row {
                        let started = std::time::Instant::now();
                        let rows = snapshot::migrate_per_row_base(&txn, &sync).map_err(|e| {
                            storage(format!(
                                "migrating the snapshot of sync {sync} to blocks: {e}"
                            ))
                        })?;
                        tracing::info!(sync, rows, ms = started.elapsed().as_millis() as u64, "snapshot rewritten into blocks (state format {found} to {FORMAT_VERSION})");
                    }
                    meta.insert("format_version", FORMAT_VERSION)
                        .map_err(|e| storage(e.to_string()))?;
                }
                Some(found) => {
                    return Err(OpenError::UnknownFormat {
                        path: path.clone(),
                        found,
                    })
                }
            }
            txn.open_table(RUNS).map_err(|e| storage(e.to_string()))?;
            txn.open_table(RUNS_BY_SYNC)
                .map_err(|e| storage(e.to_string()))?;
            txn.open_table(PUBLISHED)
                .map_err(|e| storage(e.to_string()))?;
            txn.open_table(CHANGES)
                .map_err(|e| storage(e.to_string()))?;
            txn.open_table(RUN_GATES)
                .map_err(|e| storage(e.to_string()))?;
            txn.open_table(AUDIT).map_err(|e| storage(e.to_string()))?;
            txn.open_table(SYNC_META)
                .map_err(|e| storage(e.to_string()))?;
            txn.open_table(snapshot::SNAPSHOT_ROWS)
                .map_err(|e| storage(e.to_string()))?;
        }
        txn.commit().map_err(|e| storage(e.to_string()))?;
        Ok(StateStore {
            db: std::sync::Arc::new(db),
            path,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        StateError {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Writes governance records and appends audit events in one transaction: a decision
    /// and its audit entry are durable together or not at all.
    pub fn write_governance(
        &self,
        docs: Vec<GovernanceDoc<'_>>,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditEntry>, StateError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut written = Vec::new();
        {
            for doc in docs {
                match doc {
                    GovernanceDoc::Published(v) => {
                        let mut t = txn.open_table(PUBLISHED).map_err(|e| self.err(e))?;
                        t.insert(
                            "current",
                            serde_json::to_vec(&v).map_err(|e| self.err(e))?.as_slice(),
                        )
                        .map_err(|e| self.err(e))?;
                    }
                    GovernanceDoc::Change(id, v) => {
                        let mut t = txn.open_table(CHANGES).map_err(|e| self.err(e))?;
                        t.insert(
                            id,
                            serde_json::to_vec(&v).map_err(|e| self.err(e))?.as_slice(),
                        )
                        .map_err(|e| self.err(e))?;
                    }
                    GovernanceDoc::RunGate(id, v) => {
                        let mut t = txn.open_table(RUN_GATES).map_err(|e| self.err(e))?;
                        t.insert(
                            id,
                            serde_json::to_vec(&v).map_err(|e| self.err(e))?.as_slice(),
                        )
                        .map_err(|e| self.err(e))?;
                    }
                }
            }
            let mut audit = txn.open_table(AUDIT).map_err(|e| self.err(e))?;
            let last = audit
                .last()
                .map_err(|e| self.err(e))?
                .map(|(k, v)| (k.value(), v.value().to_vec()));
            let (mut seq, mut prev_hash) = match last {
                // An unreadable last entry must not silently restart the hash chain.
                Some((k, v)) => (
                    k,
                    serde_json::from_slice::<AuditEntry>(&v)
                        .map_err(|e| self.err(format!("audit log entry {k} is unreadable: {e}")))?
                        .hash,
                ),
                None => (0, String::new()),
            };
            for event in events {
                seq += 1;
                let at = crate::domain::now_rfc3339();
                let hash = AuditEntry::compute_hash(seq, &at, &event, &prev_hash);
                let entry = AuditEntry {
                    seq,
                    at,
                    event,
                    prev_hash: prev_hash.clone(),
                    hash: hash.clone(),
                };
                audit
                    .insert(
                        seq,
                        serde_json::to_vec(&entry)
                            .map_err(|e| self.err(e))?
                            .as_slice(),
                    )
                    .map_err(|e| self.err(e))?;
                prev_hash = hash;
                written.push(entry);
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(written)
    }

    /// The audit log, oldest first.
    pub fn audit_log(&self) -> Result<Vec<AuditEntry>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(AUDIT).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(|e| self.err(e))? {
            let (_, v) = entry.map_err(|e| self.err(e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| self.err(e))?);
        }
        Ok(out)
    }

    pub fn published<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(PUBLISHED).map_err(|e| self.err(e))?;
        let v = t.get("current").map_err(|e| self.err(e))?;
        v.map(|v| serde_json::from_slice(v.value()).map_err(|e| self.err(e)))
            .transpose()
    }

    pub fn change<T: serde::de::DeserializeOwned>(&self, id: u64) -> Result<Option<T>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(CHANGES).map_err(|e| self.err(e))?;
        let v = t.get(id).map_err(|e| self.err(e))?;
        v.map(|v| serde_json::from_slice(v.value()).map_err(|e| self.err(e)))
            .transpose()
    }

    /// Change requests, newest first.
    pub fn changes<T: serde::de::DeserializeOwned>(
        &self,
        limit: usize,
    ) -> Result<Vec<T>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(CHANGES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(|e| self.err(e))?.rev().take(limit) {
            let (_, v) = entry.map_err(|e| self.err(e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| self.err(e))?);
        }
        Ok(out)
    }

    /// The id the next change request gets.
    pub fn next_change_id(&self) -> Result<u64, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(CHANGES).map_err(|e| self.err(e))?;
        let last = t.last().map_err(|e| self.err(e))?.map(|(k, _)| k.value());
        Ok(last.map_or(1, |k| k + 1))
    }

    pub fn run_gate<T: serde::de::DeserializeOwned>(
        &self,
        run_id: &str,
    ) -> Result<Option<T>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(RUN_GATES).map_err(|e| self.err(e))?;
        let v = t.get(run_id).map_err(|e| self.err(e))?;
        v.map(|v| serde_json::from_slice(v.value()).map_err(|e| self.err(e)))
            .transpose()
    }

    /// Stores a run record (new, or updated as the run goes). When a run has finished, the
    /// oldest runs of its sync beyond `keep_runs` are pruned in the same transaction.
    pub fn record_run(&self, run: &RunRecord, keep_runs: u64) -> Result<(), StateError> {
        let run = bounded(run);
        let json = serde_json::to_vec(&run).map_err(|e| self.err(e))?;
        let key = history_key(&run);
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut runs = txn.open_table(RUNS).map_err(|e| self.err(e))?;
            let mut index = txn.open_table(RUNS_BY_SYNC).map_err(|e| self.err(e))?;
            runs.insert(run.run_id.as_str(), json.as_slice())
                .map_err(|e| self.err(e))?;
            index
                .insert((key.as_str(), run.run_id.as_str()), ())
                .map_err(|e| self.err(e))?;
            if run.status != RunStatus::Running {
                let ids: Vec<String> = index
                    .range((key.as_str(), "")..=(key.as_str(), HIGHEST_RUN_ID))
                    .map_err(|e| self.err(e))?
                    .map(|entry| entry.map(|(k, _)| k.value().1.to_string()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| self.err(e))?;
                let excess = ids
                    .len()
                    .saturating_sub(usize::try_from(keep_runs.max(1)).unwrap_or(usize::MAX));
                for id in &ids[..excess] {
                    index
                        .remove((key.as_str(), id.as_str()))
                        .map_err(|e| self.err(e))?;
                    runs.remove(id.as_str()).map_err(|e| self.err(e))?;
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Runs, newest first: of one history key (a sync's name, or `draft/NAME` for its draft
    /// runs), or of every sync.
    pub fn runs(&self, sync: Option<&str>, limit: usize) -> Result<Vec<RunRecord>, StateError> {
        self.runs_page(sync, None, None, limit)
    }

    /// A page of history, newest first: optionally one history key and one status, and only
    /// runs started before the run `before` (the previous page's last id).
    pub fn runs_page(
        &self,
        sync: Option<&str>,
        status: Option<RunStatus>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let runs = txn.open_table(RUNS).map_err(|e| self.err(e))?;
        let index = txn.open_table(RUNS_BY_SYNC).map_err(|e| self.err(e))?;
        let read = |value: &[u8]| {
            serde_json::from_slice::<RunRecord>(value)
                .map_err(|e| self.err(format!("unreadable run record: {e}")))
        };
        // Stored records, newest first: through the sync's index, or the whole history.
        let records: Box<dyn Iterator<Item = Result<Option<RunRecord>, StateError>>> = match sync {
            Some(sync) => {
                let range = match before {
                    Some(b) => index.range((sync, "")..(sync, b)),
                    None => index.range((sync, "")..=(sync, HIGHEST_RUN_ID)),
                }
                .map_err(|e| self.err(e))?;
                Box::new(range.rev().map(|entry| {
                    let (k, _) = entry.map_err(|e| self.err(e))?;
                    runs.get(k.value().1)
                        .map_err(|e| self.err(e))?
                        .map(|v| read(v.value()))
                        .transpose()
                }))
            }
            None => {
                let range = match before {
                    Some(b) => runs.range(..b),
                    None => runs.range::<&str>(..),
                }
                .map_err(|e| self.err(e))?;
                Box::new(range.rev().map(|entry| {
                    entry
                        .map_err(|e| self.err(e))
                        .and_then(|(_, v)| read(v.value()).map(Some))
                }))
            }
        };
        let mut out = Vec::new();
        for record in records {
            match record? {
                Some(run) if status.is_none_or(|s| run.status == s) => out.push(run),
                _ => continue,
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let runs = txn.open_table(RUNS).map_err(|e| self.err(e))?;
        let value = runs.get(run_id).map_err(|e| self.err(e))?;
        value
            .map(|v| {
                serde_json::from_slice(v.value())
                    .map_err(|e| self.err(format!("unreadable run record: {e}")))
            })
            .transpose()
    }
}

impl StateStore {
    pub fn sync_meta(&self, sync: &str) -> Result<Option<SyncMeta>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(SYNC_META).map_err(|e| self.err(e))?;
        let value = table.get(sync).map_err(|e| self.err(e))?;
        value
            .map(|v| {
                serde_json::from_slice(v.value())
                    .map_err(|e| self.err(format!("unreadable sync metadata: {e}")))
            })
            .transpose()
    }

    /// Drops a sync's snapshot and pending rows and records what the new snapshot is for.
    pub fn reset_snapshot(&self, sync: &str, meta: &SyncMeta) -> Result<(), StateError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let (base, delta, pending) = (
            snapshot::base_table(sync),
            snapshot::delta_table(sync),
            pending_table(sync),
        );
        for table in [&base, &delta, &pending] {
            txn.delete_table(snapshot::def(table))
                .map_err(|e| self.err(e))?;
        }
        txn.open_table(snapshot::SNAPSHOT_ROWS)
            .map_err(|e| self.err(e))?
            .remove(sync)
            .map_err(|e| self.err(e))?;
        // Changelogs are of rows under the old key or destination: undoing them now would be wrong.
        let changelog = changelog::changelog_table(sync);
        txn.delete_table(changelog::changelog_def(&changelog))
            .map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(SYNC_META).map_err(|e| self.err(e))?;
            let json = serde_json::to_vec(meta).map_err(|e| self.err(e))?;
            table
                .insert(sync, json.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Reads a sync's snapshot in one read transaction.
    fn read_snapshot<T>(
        &self,
        sync: &str,
        read: impl FnOnce(&snapshot::SnapshotReader) -> Result<T, redb::Error>,
    ) -> Result<T, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let reader = snapshot::SnapshotReader::open(&txn, sync).map_err(|e| self.err(e))?;
        read(&reader).map_err(|e| self.err(e))
    }

    /// Rows in a sync's snapshot.
    pub fn snapshot_len(&self, sync: &str) -> Result<u64, StateError> {
        self.read_snapshot(sync, |snapshot| snapshot.len())
    }

    /// Entries in a sync's snapshot delta (tombstones included): where commits went.
    #[cfg(test)]
    pub(crate) fn snapshot_delta_len(&self, sync: &str) -> u64 {
        self.read_table(
            snapshot::def(&snapshot::delta_table(sync)),
            || 0,
            |t| Ok(t.len().unwrap_or(0)),
        )
        .unwrap_or(0)
    }

    /// Reads one per-sync table in its own read transaction; a table no write has created
    /// yet (a sync that never delivered) reads as `empty()`.
    fn read_table<K: redb::Key + 'static, V: redb::Value + 'static, T>(
        &self,
        definition: TableDefinition<'_, K, V>,
        empty: impl FnOnce() -> T,
        read: impl FnOnce(redb::ReadOnlyTable<K, V>) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        match txn.open_table(definition) {
            Ok(table) => read(table),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(empty()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Up to `limit` snapshot entries with keys strictly after `after`, in key order, appended
    /// to `keys` (the keys one after another) and `entries` (each key's end in `keys`, and its
    /// fingerprint): two buffers the caller reuses, instead of an allocation per key. The
    /// diff walks the snapshot in such chunks. Returns where the next chunk starts, `None`
    /// after the last; a chunk may be empty and still not the last (rows deleted since the
    /// snapshot's base was written are looked at and passed).
    pub fn snapshot_chunk_into(
        &self,
        sync: &str,
        after: Option<&[u8]>,
        limit: usize,
        keys: &mut Vec<u8>,
        entries: &mut Vec<(usize, [u8; 16])>,
    ) -> Result<Option<Vec<u8>>, StateError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let reader = snapshot::SnapshotReader::open(&txn, sync).map_err(|e| self.err(e))?;
        reader
            .chunk_into(after, limit, keys, entries)
            .map_err(|e| self.err(e))
    }

    /// The last delivered rows for several keys, in one read transaction.
    pub fn snapshot_rows(
        &self,
        sync: &str,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<Vec<u8>>>, StateError> {
        self.read_snapshot(sync, |snapshot| {
            keys.iter()
                .map(|k| {
                    Ok(snapshot
                        .get(k)?
                        .map(|v| v.get(16..).unwrap_or_default().to_vec()))
                })
                .collect()
        })
    }

    /// Applies journal ops to a sync's snapshot and pending rows in one durable transaction.
    pub fn apply(
        &self,
        sync: &str,
        meta: &SyncMeta,
        ops: &[crate::domain::JournalOp],
    ) -> Result<(), StateError> {
        self.apply_part(sync, meta, ops, 0)
    }

    /// Like [`StateStore::apply`], for `ops` that are one chunk of a commit of `commit_ops`
    /// ops (a journal replayed in chunks): the snapshot decides by the whole commit's size
    /// whether it goes to its delta, so a large commit does not send its chunks there.
    pub fn apply_part(
        &self,
        sync: &str,
        meta: &SyncMeta,
        ops: &[crate::domain::JournalOp],
        commit_ops: u64,
    ) -> Result<(), StateError> {
        use crate::domain::{Delivered, JournalOp, RowChange};
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let pending_name = pending_table(sync);
            let changelog_name = changelog::changelog_table(sync);
            let changes = (ops
                .iter()
                .filter(|op| matches!(op, JournalOp::Upsert { .. } | JournalOp::Delete { .. }))
                .count() as u64)
                .max(commit_ops);
            let mut snap =
                snapshot::SnapshotWriter::open(&txn, sync, changes).map_err(|e| self.err(e))?;
            let mut pending = txn
                .open_table(TableDefinition::<&[u8], &[u8]>::new(&pending_name))
                .map_err(|e| self.err(e))?;
            let mut changelog = txn
                .open_table(changelog::changelog_def(&changelog_name))
                .map_err(|e| self.err(e))?;
            // Most runs have no refused rows at all: then a delivered row has no pending entry
            // to clear, and a lookup per row is saved.
            let mut any_pending = pending.len().map_err(|e| self.err(e))? > 0;
            let mut value = Vec::new();
            // Rows the current run inserted, logged a block at a time.
            let mut inserted = changelog::InsertBlock::default();
            // The run whose deliveries follow (a journal from before changelogs has none).
            let mut run: Option<String> = None;
            // Keeps the first changelog entry of a (run, key): replaying a journal twice (a
            // crash between commit and truncation) must not turn "before" into "sent".
            let log =
                |changelog: &mut redb::Table<(&'static str, &'static [u8]), &'static [u8]>,
                 run: &str,
                 key: &[u8],
                 change: RowChange|
                 -> Result<(), redb::Error> {
                    let encoded = change.encode();
                    let previous = changelog
                        .insert((run, key), encoded.as_slice())?
                        .map(|g| g.value().to_vec());
                    if let Some(previous) = previous {
                        changelog.insert((run, key), previous.as_slice())?;
                    }
                    Ok(())
                };
            for op in ops {
                match op {
                    JournalOp::Begin(header) => {
                        if let Some(run) = &run {
                            inserted
                                .flush(&mut changelog, run)
                                .map_err(|e| self.err(e))?;
                        }
                        inserted.start_run();
                        let json = serde_json::to_vec(header).map_err(|e| self.err(e))?;
                        changelog
                            .insert((header.run_id.as_str(), &[][..]), json.as_slice())
                            .map_err(|e| self.err(e))?;
                        run = Some(header.run_id.clone());
                    }
                    JournalOp::Upsert { key, fp, row } => {
                        value.clear();
                        value.extend_from_slice(fp);
                        value.extend_from_slice(row);
                        let stored = snap.upsert(key, &value).map_err(|e| self.err(e))?;
                        // An entry left exactly as it was is not logged: that is this journal
                        // applied again (a crash between commit and truncation: the first
                        // entry, maybe in an insert block, stands), or a full resync sending a
                        // row again unchanged, which leaves nothing to undo.
                        let unchanged = stored.as_deref() == Some(value.as_slice());
                        let before = stored.and_then(|v| Delivered::from_stored(&v));
                        match (&run, before) {
                            (Some(_), _) if unchanged => {}
                            (Some(run), None) => {
                                inserted.push(key, fp);
                                if inserted.is_full() {
                                    inserted
                                        .flush(&mut changelog, run)
                                        .map_err(|e| self.err(e))?;
                                }
                            }
                            (Some(run), Some(before)) => log(
                                &mut changelog,
                                run,
                                key,
                                RowChange::Updated { before, sent: *fp },
                            )
                            .map_err(|e| self.err(e))?,
                            (None, _) => {}
                        }
                        if any_pending {
                            pending.remove(key.as_slice()).map_err(|e| self.err(e))?;
                        }
                    }
                    JournalOp::Delete { key } => {
                        let before = snap
                            .delete(key)
                            .map_err(|e| self.err(e))?
                            .and_then(|v| Delivered::from_stored(&v));
                        if let (Some(run), Some(before)) = (&run, before) {
                            log(&mut changelog, run, key, RowChange::Deleted { before })
                                .map_err(|e| self.err(e))?;
                        }
                        if any_pending {
                            pending.remove(key.as_slice()).map_err(|e| self.err(e))?;
                        }
                    }
                    JournalOp::Reject {
                        key,
                        change,
                        error,
                        run_id,
                    } => {
                        let row = PendingRow {
                            change: change.clone(),
                            error: error.clone(),
                            run_id: run_id.clone(),
                        };
                        let json = serde_json::to_vec(&row).map_err(|e| self.err(e))?;
                        pending
                            .insert(key.as_slice(), json.as_slice())
                            .map_err(|e| self.err(e))?;
                        any_pending = true;
                    }
                }
            }
            if let Some(run) = &run {
                inserted
                    .flush(&mut changelog, run)
                    .map_err(|e| self.err(e))?;
            }
            snap.finish(&txn, sync).map_err(|e| self.err(e))?;
            let mut metas = txn.open_table(SYNC_META).map_err(|e| self.err(e))?;
            // A commit that does not know the key types (replaying a journal before the plan)
            // keeps the recorded ones.
            let mut meta = meta.clone();
            if meta.key_types.is_empty() {
                let stored = metas
                    .get(sync)
                    .map_err(|e| self.err(e))?
                    .and_then(|v| serde_json::from_slice::<SyncMeta>(v.value()).ok());
                if let Some(stored) = stored.filter(|m| m.same_target(&meta)) {
                    meta.key_types = stored.key_types;
                }
            }
            let json = serde_json::to_vec(&meta).map_err(|e| self.err(e))?;
            metas
                .insert(sync, json.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Full snapshot entries (fingerprint and row) for several keys, in one read transaction.
    pub fn snapshot_entries(
        &self,
        sync: &str,
        keys: &[&[u8]],
    ) -> Result<Vec<Option<crate::domain::Delivered>>, StateError> {
        self.read_snapshot(sync, |snapshot| {
            keys.iter()
                .map(|k| {
                    Ok(snapshot
                        .get(k)?
                        .and_then(|v| crate::domain::Delivered::from_stored(&v)))
                })
                .collect()
        })
    }

    /// The pending (refused, not yet delivered) entry of one key, if any.
    pub fn pending_row(&self, sync: &str, key: &[u8]) -> Result<Option<PendingRow>, StateError> {
        self.read_table(
            TableDefinition::<&[u8], &[u8]>::new(&pending_table(sync)),
            || None,
            |table| {
                let value = table.get(key).map_err(|e| self.err(e))?;
                value
                    .map(|v| {
                        serde_json::from_slice(v.value())
                            .map_err(|e| self.err(format!("unreadable pending row: {e}")))
                    })
                    .transpose()
            },
        )
    }

    /// The keys of the pending rows of one change (`added`, `changed`, `removed`).
    pub fn pending_keys(&self, sync: &str, change: &str) -> Result<Vec<Vec<u8>>, StateError> {
        self.read_table(
            TableDefinition::<&[u8], &[u8]>::new(&pending_table(sync)),
            Vec::new,
            |table| {
                let mut out = Vec::new();
                for entry in table.iter().map_err(|e| self.err(e))? {
                    let (k, v) = entry.map_err(|e| self.err(e))?;
                    let row: PendingRow = serde_json::from_slice(v.value())
                        .map_err(|e| self.err(format!("unreadable pending row: {e}")))?;
                    if row.change == change {
                        out.push(k.value().to_vec());
                    }
                }
                Ok(out)
            },
        )
    }

    /// Rows the destination refused and no later run has delivered: (encoded key, row).
    pub fn pending(
        &self,
        sync: &str,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, PendingRow)>, StateError> {
        self.read_table(
            TableDefinition::<&[u8], &[u8]>::new(&pending_table(sync)),
            || Vec::new(),
            |table| {
                let mut out = Vec::new();
                for entry in table.iter().map_err(|e| self.err(e))?.take(limit) {
                    let (k, v) = entry.map_err(|e| self.err(e))?;
                    let row: PendingRow = serde_json::from_slice(v.value())
                        .map_err(|e| self.err(format!("unreadable pending row: {e}")))?;
                    out.push((k.value().to_vec(), row));
                }
                Ok(out)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ChangelogHeader, Delivered, JournalOp, RowChange};

    fn header(run: &str) -> JournalOp {
        JournalOp::Begin(ChangelogHeader {
            run_id: run.into(),
            mode: "mirror".into(),
            columns: vec![],
            key_columns: vec![],
            undo_of: None,
        })
    }

    fn upsert(key: &str, n: u8) -> JournalOp {
        JournalOp::Upsert {
            key: key.as_bytes().to_vec(),
            fp: [n; 16],
            row: vec![n],
        }
    }

    fn delivered(n: u8) -> Delivered {
        Delivered {
            fp: [n; 16],
            row: vec![n],
        }
    }

    #[test]
    fn the_changelog_keeps_values_before_and_sent_and_survives_a_second_replay() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let meta = SyncMeta {
            primary_key: vec!["id".into()],
            destination: "d".into(),
            destination_plugin: "p".into(),
            key_types: vec![],
        };
        state
            .apply("s", &meta, &[header("R1"), upsert("a", 1), upsert("b", 2)])
            .unwrap();
        let second = [
            header("R2"),
            upsert("a", 3),
            JournalOp::Delete { key: b"b".to_vec() },
        ];
        state.apply("s", &meta, &second).unwrap();
        // The same journal applied again (a crash between commit and truncation).
        state.apply("s", &meta, &second).unwrap();
        let r2 = state.changelog_chunk("s", "R2", None, 10).unwrap().0;
        assert_eq!(
            r2,
            vec![
                (
                    b"a".to_vec(),
                    RowChange::Updated {
                        before: delivered(1),
                        sent: [3; 16]
                    }
                ),
                (
                    b"b".to_vec(),
                    RowChange::Deleted {
                        before: delivered(2)
                    }
                ),
            ]
        );
        let (r1, more) = state.changelog_chunk("s", "R1", None, 10).unwrap();
        assert_eq!(
            r1,
            vec![
                (b"a".to_vec(), RowChange::Inserted { sent: [1; 16] }),
                (b"b".to_vec(), RowChange::Inserted { sent: [2; 16] })
            ]
        );
        assert_eq!(more, None, "R1 has no more entries");
        assert_eq!(
            state.changelog_header("s", "R2").unwrap().unwrap().run_id,
            "R2"
        );
        assert_eq!(
            state
                .changelog_entries("s", &["R2", "R1", "R0"], b"a")
                .unwrap()[1],
            Some(RowChange::Inserted { sent: [1; 16] })
        );

        state.prune_changelog("s", 1).unwrap();
        assert!(
            state.changelog_header("s", "R1").unwrap().is_none()
                && state
                    .changelog_chunk("s", "R1", None, 10)
                    .unwrap()
                    .0
                    .is_empty()
        );
        assert_eq!(
            state.changelog_chunk("s", "R2", None, 10).unwrap().0.len(),
            2
        );
    }

    /// Inserted rows are logged in blocks: every one is read back once, in pages of any
    /// size, found by key, and a journal applied twice adds nothing; an entry of version 2
    /// (one per inserted row) still reads beside them.
    #[test]
    fn inserted_rows_are_logged_in_blocks_and_read_back_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        let meta = SyncMeta {
            primary_key: vec!["id".into()],
            destination: "d".into(),
            destination_plugin: "p".into(),
            key_types: vec![],
        };
        let key = |i: u32| format!("k{i:05}");
        let first: Vec<JournalOp> = std::iter::once(header("R1"))
            .chain((0..5000).map(|i| upsert(&key(i), (i % 7) as u8)))
            .collect();
        // The same run goes on in another transaction (a journal committed midway).
        let second: Vec<JournalOp> = std::iter::once(header("R1"))
            .chain((5000..6000).map(|i| upsert(&key(i), 1)))
            .collect();
        state.apply("s", &meta, &first).unwrap();
        state.apply("s", &meta, &second).unwrap();
        // Applied again: every row is already as it says, nothing is logged twice.
        state.apply("s", &meta, &second).unwrap();
        state.apply("s", &meta, &first).unwrap();
        state
            .apply("s", &meta, &[header("R2"), upsert(&key(0), 9)])
            .unwrap();
        {
            // An entry as version 2 wrote it, one per inserted row.
            let txn = state.db.begin_write().unwrap();
            let name = changelog::changelog_table("s");
            let mut table = txn.open_table(changelog::changelog_def(&name)).unwrap();
            table
                .insert(
                    ("R1", &b"legacy"[..]),
                    RowChange::Inserted { sent: [8; 16] }.encode().as_slice(),
                )
                .unwrap();
            drop(table);
            txn.commit().unwrap();
        }
        for page in [1, 999, 4096, 100_000] {
            let (mut after, mut seen) = (None, Vec::new());
            loop {
                let (rows, more) = state
                    .changelog_chunk("s", "R1", after.as_deref(), page)
                    .unwrap();
                seen.extend(rows);
                match more {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen.len(), 6001, "pages of {page}");
            let mut keys: Vec<&[u8]> = seen.iter().map(|(k, _)| k.as_slice()).collect();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), 6001, "each row once, pages of {page}");
            assert!(seen
                .iter()
                .all(|(_, c)| matches!(c, RowChange::Inserted { .. })));
        }
        let r2 = state.changelog_chunk("s", "R2", None, 10).unwrap();
        assert_eq!(
            r2,
            (
                vec![(
                    key(0).into_bytes(),
                    RowChange::Updated {
                        before: delivered(0),
                        sent: [9; 16]
                    }
                )],
                None
            )
        );
        let found = state
            .changelog_entries("s", &["R1"], key(4321).as_bytes())
            .unwrap();
        assert_eq!(
            found,
            vec![Some(RowChange::Inserted {
                sent: [(4321 % 7) as u8; 16]
            })]
        );
        assert_eq!(
            state.changelog_entries("s", &["R1"], b"legacy").unwrap(),
            vec![Some(RowChange::Inserted { sent: [8; 16] })]
        );
        assert_eq!(
            state.changelog_entries("s", &["R1"], b"k99999").unwrap(),
            vec![None]
        );
        assert_eq!(
            state
                .changelog_entries("s", &["R1"], key(5999).as_bytes())
                .unwrap(),
            vec![Some(RowChange::Inserted { sent: [1; 16] })],
            "the last block"
        );
        assert_eq!(
            state
                .changelog_entries("s", &["R2", "R1"], key(0).as_bytes())
                .unwrap()[1],
            Some(RowChange::Inserted { sent: [0; 16] }),
            "the first block"
        );
    }

    #[test]
    fn row_changes_round_trip_their_stored_form() {
        for change in [
            RowChange::Inserted { sent: [1; 16] },
            RowChange::Updated {
                before: delivered(1),
                sent: [2; 16],
            },
            RowChange::Updated {
                before: Delivered {
                    fp: [2; 16],
                    row: vec![],
                },
                sent: [3; 16],
            },
            RowChange::Deleted {
                before: delivered(9),
            },
        ] {
            assert_eq!(RowChange::decode(&change.encode()), Some(change));
        }
        assert_eq!(
            RowChange::decode(&[2, 1, 0]),
            None,
            "a truncated entry is refused, not misread"
        );
    }

    #[test]
    fn refuses_unknown_format_versions() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateStore::open(dir.path()).unwrap());
        {
            let db = Database::create(dir.path().join("state.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format_version", FORMAT_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        match StateStore::open(dir.path()) {
            Err(OpenError::UnknownFormat { found, .. }) => assert_eq!(found, FORMAT_VERSION + 1),
            other => panic!("expected UnknownFormat, got {:?}", other.err()),
        }
    }
}

#[cfg(test)]
mod migration_tests {
    use super::*;

    fn run(id: &str, sync: &str) -> RunRecord {
        let json = serde_json::json!({
            "run_id": id, "sync": sync, "trigger": "t", "user": "u", "started_at": "", "finished_at": "", "duration_ms": 0,
            "status": "succeeded", "planned": {"added": 0, "changed": 0, "removed": 0}, "delivered": {"added": 0, "changed": 0, "removed": 0},
            "failed": {"added": 0, "changed": 0, "removed": 0}, "plugins": {"source": "", "destination": ""}, "config_hash": "", "error": null, "rejected": []
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_version_1_file_gets_its_history_indexed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join("state.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format_version", 1u64)
                .unwrap();
            let mut runs = txn.open_table(RUNS).unwrap();
            for (id, sync) in [("01A", "a"), ("01B", "b"), ("01C", "a")] {
                runs.insert(id, serde_json::to_vec(&run(id, sync)).unwrap().as_slice())
                    .unwrap();
            }
            drop(runs);
            txn.commit().unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        let ids: Vec<String> = store
            .runs(Some("a"), 10)
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(ids, ["01C", "01A"]);
    }

    #[test]
    fn finished_runs_prune_their_own_sync_only_and_messages_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.record_run(&run("01A", "other"), 1).unwrap();
        for id in ["01B", "01C", "01D"] {
            let mut r = run(id, "s");
            r.error = Some("x".repeat(100_000));
            store.record_run(&r, 2).unwrap();
        }
        let kept = store.runs(Some("s"), 10).unwrap();
        assert_eq!(
            kept.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
            ["01D", "01C"]
        );
        assert!(kept[0].error.as_ref().unwrap().len() <= MAX_RUN_ERROR_BYTES + 3);
        assert_eq!(store.runs(Some("other"), 10).unwrap().len(), 1);
        assert!(store.run("01B").unwrap().is_none());
    }
}
