//! The domain's shared vocabulary: roles, sync modes, grants and limits, changes and the
//! operations they become, run records and their counts. A leaf module: the host, the state,
//! governance, the sync path and the application layer all import it, and it imports none of
//! them, so those modules never need each other for a type.

use backflow_plugin_sdk::Operation;
use serde::{Deserialize, Serialize};

mod debug;
mod delivery;
mod grants;
mod run;

pub use debug::*;
pub use delivery::*;
pub use grants::*;
pub use run::*;

// ---- Sync definitions' value types ----

/// A sync's pace towards its destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Most destination write calls (batches) per second; `None` for no cap.
    pub requests_per_second: Option<f64>,
    /// Most rows sent per second, across batches; `None` for no cap.
    pub rows_per_second: Option<f64>,
}

/// How a sync treats the diff. See the README for each mode's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Added rows are inserted, changed rows updated, removed rows left alone. The default.
    Upsert,
    /// Added and changed rows are sent as updates: never creates records in the destination.
    Update,
    /// Only added rows are sent, as inserts.
    Insert,
    /// The destination follows the model: inserts, updates and deletes of removed rows.
    Mirror,
    /// Added rows are appended as events, once each, with a stable `event_id`.
    Append,
}

impl SyncMode {
    /// The mode a sync's `mode = "..."` names, or `None` for an unknown one.
    pub fn parse(s: &str) -> Option<SyncMode> {
        Some(match s {
            "upsert" => SyncMode::Upsert,
            "update" => SyncMode::Update,
            "insert" => SyncMode::Insert,
            "mirror" => SyncMode::Mirror,
            "append" => SyncMode::Append,
            _ => return None,
        })
    }

    /// The mode as configured and recorded (`upsert`, `mirror`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Upsert => "upsert",
            SyncMode::Update => "update",
            SyncMode::Insert => "insert",
            SyncMode::Mirror => "mirror",
            SyncMode::Append => "append",
        }
    }
}

/// The user the service's own runs (schedules, `after`) are recorded under.
pub const SERVICE_USER: &str = "backflow-serve";

// ---- Roles ----

/// A workspace role. The same type policies see: it is part of the plugin contract, so it is
/// defined once, in the SDK.
pub use backflow_plugin_sdk::Role;

/// The longest a run approval request may stay open (one year; the config refuses more).
pub const MAX_TTL_MINUTES: u64 = 525_600;

// ---- Changes and operations ----

/// The change a planned row represents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The row's key is not in the snapshot: new to the destination.
    Added,
    /// The row differs from its snapshot entry (or a full resync re-sends it).
    Changed,
    /// The row's key is in the snapshot but gone from the model.
    Removed,
    /// Rows equal to the snapshot; planned only for quality checks, never sent.
    Unchanged,
}

impl Change {
    /// The change as counted, recorded and shown: `added`, `changed`, `removed`, `unchanged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Changed => "changed",
            Change::Removed => "removed",
            Change::Unchanged => "unchanged",
        }
    }
}

/// Adds `n` rows of `change` to the counts (unchanged rows are not counted).
pub fn bump(c: &mut OpCounts, change: Change, n: u64) {
    match change {
        Change::Added => c.added += n,
        Change::Changed => c.changed += n,
        Change::Removed => c.removed += n,
        Change::Unchanged => {}
    }
}

/// The destination operation a mode uses for a change, or `None` if the mode skips it.
pub fn operation_for(mode: SyncMode, change: Change) -> Option<Operation> {
    use Change::*;
    match (mode, change) {
        (SyncMode::Upsert, Added) | (SyncMode::Insert, Added) | (SyncMode::Mirror, Added) => {
            Some(Operation::Insert)
        }
        (SyncMode::Upsert, Changed) | (SyncMode::Mirror, Changed) => Some(Operation::Update),
        // `update` never creates: rows new to backflow are sent as updates of records the
        // destination is expected to have; it rejects those it does not.
        (SyncMode::Update, Added | Changed) => Some(Operation::Update),
        (SyncMode::Mirror, Removed) => Some(Operation::Delete),
        (SyncMode::Append, Added) => Some(Operation::Append),
        _ => None,
    }
}

/// The native destination used to measure the Wasm boundary's cost.
pub const BUILTIN_NOOP: &str = "builtin:noop";
