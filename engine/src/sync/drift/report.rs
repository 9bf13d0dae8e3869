//! What a drift report holds ([`DriftReport`]), what it is asked for ([`DriftOptions`]) and
//! why it may not be made ([`DriftError`]).

use super::compare::FieldDrift;
use crate::sync::prepare::PrepareError;
use std::collections::BTreeMap;

/// Why a drift report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// The sync could not be prepared (unknown, invalid, plugins missing).
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The destination's plugin cannot read back.
    #[error("sync {sync}: destination {destination} (plugin {plugin}) cannot read back what it holds: its plugin does not declare the read-back capability (contract 0.3.0), so drift cannot be measured")]
    CannotRead {
        /// The sync.
        sync: String,
        /// The destination's name.
        destination: String,
        /// The destination's plugin.
        plugin: String,
    },
    /// The snapshot is of another key or destination.
    #[error("sync {0}: the primary key or destination changed since the last delivery, so the snapshot says nothing about what the destination holds; run the sync first")]
    StaleSnapshot(String),
    /// The model's columns could not be read or mapped.
    #[error("{0}")]
    Model(String),
    /// The destination failed to open or to answer a read.
    #[error("{0}")]
    Destination(String),
    /// The state could not be read (or, for a reconcile, the plan written).
    #[error(transparent)]
    Run(#[from] crate::sync::run::Abort),
}

impl From<crate::state::StateError> for DriftError {
    fn from(e: crate::state::StateError) -> Self {
        DriftError::Run(e.into())
    }
}

/// What part of the snapshot a report checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct DriftOptions {
    /// Check about this many keys, spread evenly over the snapshot; all when `None`.
    pub sample: Option<u64>,
}

/// One row whose fields differ.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DifferingRow {
    /// The row's key, as text (`42`, or `42|eu`).
    pub key: String,
    /// The fields that differ.
    pub fields: Vec<FieldDrift>,
}

/// The first rows of each kind of drift.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DriftExamples {
    /// Keys of rows missing at the destination.
    pub missing: Vec<String>,
    /// Rows whose fields differ, with the fields.
    pub differing: Vec<DifferingRow>,
    /// Keys of rows backflow deleted that the destination still holds.
    pub deleted_present: Vec<String>,
}

/// A drift report: counts of each kind of drift, the fields that differ, examples.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DriftReport {
    /// The sync.
    pub sync: String,
    /// Its destination.
    pub destination: String,
    /// Rows in the snapshot (what backflow believes the destination holds).
    pub snapshot_rows: u64,
    /// Snapshot rows checked (all of them, or the sample).
    pub checked: u64,
    /// The sample asked for, if any.
    pub sample: Option<u64>,
    /// Checked rows the destination holds as sent.
    pub in_sync: u64,
    /// Checked rows missing at the destination.
    pub missing: u64,
    /// Checked rows whose fields differ.
    pub differing: u64,
    /// Differing rows per field (destination field name → rows).
    pub fields: BTreeMap<String, u64>,
    /// Rows deleted by runs whose changelog is kept that the destination still holds.
    pub deleted_present: u64,
    /// Deleted rows checked (from the changelogs kept).
    pub deletes_checked: u64,
    /// Runs whose changelog was searched for deletes.
    pub changelog_runs: u64,
    /// Examples of each kind (at most 20 each).
    pub examples: DriftExamples,
    /// What the report does and does not detect.
    pub notes: Vec<String>,
}

impl DriftReport {
    /// Rows drifted, of every kind.
    pub fn total(&self) -> u64 {
        self.missing + self.differing + self.deleted_present
    }
}

impl DriftReport {
    /// Sets the sync's `backflow_drift_rows` gauges to this report's counts.
    pub fn record_metrics(&self) {
        crate::metrics::record_drift(
            &self.sync,
            self.missing,
            self.differing,
            self.deleted_present,
        );
    }
}
