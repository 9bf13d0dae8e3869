//! Durable state in redb: run history, snapshots and pending rows per sync, change requests,
//! held runs, the audit log; and the per-sync leases that keep two runs of a sync apart.
//!
//! Many processes share the file (redb's multi-writer mode): a `backflow runs` or an API read
//! in one process is never blocked by a run delivering in another; write transactions are
//! short and take turns. Each write operation is one transaction: what it writes is durable
//! together or not at all. The file carries a format version ([`FORMAT_VERSION`], `meta`
//! table); an older layout is migrated on open, a newer or unknown one refused rather than
//! read (`open.rs`).
//!
//! Tables (JSON values unless said otherwise):
//! - `meta`: `format_version` → u64;
//! - `runs`: run id (a ULID, sorting by start time) → [`RunRecord`]; `runs_by_sync`: (history
//!   key, run id) → nothing, each sync's runs in order (`runs.rs`);
//! - `audit`: sequence number → [`AuditEntry`], append-only and hash-chained (`audit.rs`);
//! - `published`, `changes`, `run_gates`: the governance records (`governance_records.rs`);
//! - `sync_meta`: sync → [`SyncMeta`]; `snapshot_rows`: sync → u64 (`sync_state.rs`);
//! - per sync NAME: `snapshot-blocks/NAME` and `snapshot-delta/NAME`, the snapshot
//!   (`snapshot.rs`, binary); `pending/NAME`, refused rows (`pending.rs`); `changelog/NAME`,
//!   what each run did to each row (`changelog.rs`, binary);
//! - `api_tokens`, `schedule_marks` (`tokens.rs`);
//! - `runs_running`, `run_progress`: runs in flight and their committed counts
//!   (`progress.rs`).
//! - `alert_episodes`: (route, sync, condition) → its latest [`AlertEpisode`] (`alert_episodes.rs`).
//! - `debug_requests`: (run id, request number) → a captured request; `debug_runs`: run id →
//!   [`DebugRun`], what the delivery debugger kept of it (`debug_requests.rs`).
//!
//! Commits of delivered rows are in `commit.rs`. Every failure is a [`StateError`] naming
//! its operation ([`StateOp`], `error.rs`). Leases are files beside the state (`lease.rs`).

mod alert_episodes;
mod audit;
mod backup;
mod block;
mod changelog;
mod commit;
mod db;
mod debug_requests;
mod error;
mod governance_records;
mod lease;
mod open;
mod pending;
mod progress;
mod runs;
mod snapshot;
mod snapshot_read;
mod snapshot_write;
mod sync_state;
#[cfg(test)]
mod testing;
mod tokens;
mod users;

pub use alert_episodes::AlertEpisode;
pub use audit::{AuditAnchor, AuditEntry, AuditEvent};
pub use backup::{BackupError, BackupReport};
pub use changelog::ChangelogPage;
pub use debug_requests::DebugRun;
pub use error::{StateError, StateErrorKind, StateOp};
pub use governance_records::GovernanceDoc;
pub use lease::{LeaseError, LeaseHolder, SyncLease};
pub use open::{OpenError, FORMAT_VERSION};
pub use pending::PendingRow;
pub use runs::{draft_key, history_key};
pub use sync_state::SyncMeta;
pub use tokens::{parse_token, ApiToken, NewToken, TokenRejected, DEFAULT_TOKEN_LIFETIME};
pub use users::UserId;

pub use crate::domain::{
    CheckReport, DiffCounts, OpCounts, PluginHashes, RejectedRow, RunRecord, RunStatus, Timings,
    MAX_REJECTED_KEPT,
};
use redb::TableDefinition;
use std::path::PathBuf;

/// The state file, open ([`StateStore::open`]). Cloning is cheap and shares the open
/// database (a run commits its journal on a thread of its own with a clone).
#[derive(Clone)]
pub struct StateStore {
    db: std::sync::Arc<db::Db>,
    path: PathBuf,
    /// Final run records that a full disk kept from being written (see `runs.rs`).
    deferred: std::sync::Arc<std::sync::Mutex<Vec<(RunRecord, u64)>>>,
}

impl StateStore {
    /// The errors of one operation on this file.
    fn doing(&self, op: StateOp) -> error::Doing<'_> {
        error::Doing {
            path: &self.path,
            op,
        }
    }

    /// Reads one table in its own read transaction; a table no write has created yet (a sync
    /// that never delivered) reads as `empty()`. `read` gets the operation's errors.
    fn read_table<K: redb::Key + 'static, V: redb::Value + 'static, T>(
        &self,
        op: StateOp,
        definition: TableDefinition<'_, K, V>,
        empty: impl FnOnce() -> T,
        read: impl FnOnce(redb::ReadOnlyTable<K, V>, &error::Doing) -> Result<T, StateError>,
    ) -> Result<T, StateError> {
        let doing = self.doing(op);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        match txn.open_table(definition) {
            Ok(table) => read(table, &doing),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(empty()),
            Err(e) => Err(doing.err(e)),
        }
    }
}
