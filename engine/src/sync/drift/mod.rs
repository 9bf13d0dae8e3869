//! Drift: what the destination holds now against what backflow sent (the snapshot). The
//! snapshot is walked in key order, one batch of keys at a time (bounded memory, whatever its
//! size), each batch read back from the destination (`writer.read`, contract 0.3.0, paced by
//! the sync's rate limit) and compared field by field under the destination's field names:
//!
//! - **missing**: a row backflow delivered that the destination does not have;
//! - **differing**: a row whose fields differ from what was sent (each field named);
//! - **deleted but present**: a row a run deleted that the destination still holds. The
//!   snapshot keeps no tombstones, so these come from the changelogs still kept (`[state]
//!   keep_changelog_runs`): deletes of older runs are not detected, and the report says so.
//!
//! Read-only: nothing is written to the destination or the state. A reconcile
//! ([`reconcile`]) walks the same way and turns each finding into a planned row.

pub(crate) mod compare;
mod read_back;
pub mod reconcile;
mod report;
mod walk;

pub use compare::FieldDrift;
pub use report::{DifferingRow, DriftError, DriftExamples, DriftOptions, DriftReport};
pub use walk::drift_report;
