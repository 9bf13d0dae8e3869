//! What delivery records: journal operations, changelog entries and what was delivered of a
//! row, as the commit path and the state store exchange them.

use serde::{Deserialize, Serialize};

/// A row fingerprint: xxh3-128 of the mapped row and the destination field names.
pub type Fingerprint = [u8; 16];

/// What the destination did with one row, as journaled and then applied to the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalOp {
    /// The destination has this row with these values (added or changed, acknowledged).
    Upsert {
        /// The row's encoded primary key, as the snapshot is keyed.
        key: Vec<u8>,
        /// The fingerprint of the values delivered.
        fp: Fingerprint,
        /// The encoded row delivered, the snapshot entry's new value.
        row: Vec<u8>,
    },
    /// The destination deleted this row.
    Delete {
        /// The deleted row's encoded primary key.
        key: Vec<u8>,
    },
    /// The destination refused this row; it stays pending and is retried by later runs.
    Reject {
        /// The refused row's encoded primary key.
        key: Vec<u8>,
        /// The row's change (`added`, `changed`, `removed`).
        change: String,
        /// The destination's answer.
        error: String,
        /// The run it was refused in (kept with the pending row).
        run_id: String,
    },
    /// The ops after this one were delivered by this run: their changelog entries (values
    /// sent, values before) are kept under its ID.
    Begin(ChangelogHeader),
    /// What the run had delivered and seen refused so far, counting the ops before this one:
    /// committed with them, so a killed run's record gets its true counts back.
    Progress(RunProgress),
}

/// A run's delivered and refused rows so far, as journaled after each acknowledged batch and
/// kept in the state until the run's record is final.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProgress {
    /// The run.
    pub run_id: String,
    /// Rows the destination acknowledged.
    pub delivered: crate::domain::OpCounts,
    /// Rows the destination refused.
    pub failed: crate::domain::OpCounts,
}

/// What a run's changelog needs to be read back: the run, the mode it sent in and the
/// destination fields of its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangelogHeader {
    /// The run whose changelog this is.
    pub run_id: String,
    /// The sync's mode for this run (`mirror` for an undo).
    pub mode: String,
    /// The destination fields of the rows the run sent, in their encoded order.
    pub columns: Vec<backflow_plugin_sdk::Column>,
    /// The primary key's fields, to read keys back (`runs undo` takes them as text).
    pub key_columns: Vec<backflow_plugin_sdk::Column>,
    /// The run this one undid, if it was an undo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_of: Option<String>,
}

/// A snapshot entry: the row's fingerprint and the encoded row the destination has from us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The fingerprint of the row as delivered, compared with the model's to find changes.
    pub fp: Fingerprint,
    /// The encoded row as delivered: the values an undo puts back, a history's `before`.
    pub row: Vec<u8>,
}

impl Delivered {
    /// From the stored form: 16 bytes of fingerprint, then the row.
    pub fn from_stored(v: &[u8]) -> Option<Delivered> {
        Some(Delivered {
            fp: v.get(..16)?.try_into().ok()?,
            row: v[16..].to_vec(),
        })
    }
}

/// What one run did to one row, as its changelog keeps it. The values sent are kept as
/// their fingerprint only: they are what the snapshot held after the run, so they are the
/// `before` of the next run that touched the row, or the snapshot entry now (see
/// `rows history`). That keeps the changelog of an initial load to a few bytes per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowChange {
    /// The row was new to the destination (no snapshot entry before).
    Inserted {
        /// The fingerprint of the values sent.
        sent: Fingerprint,
    },
    /// The row replaced what the destination had from us.
    Updated {
        /// The snapshot entry the row replaced.
        before: Delivered,
        /// The fingerprint of the values sent.
        sent: Fingerprint,
    },
    /// The row was deleted; `before` is what the destination had.
    Deleted {
        /// The snapshot entry the delete removed.
        before: Delivered,
    },
}

impl RowChange {
    /// The change as a run's changelog shows it: `inserted`, `updated` or `deleted`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RowChange::Inserted { .. } => "inserted",
            RowChange::Updated { .. } => "updated",
            RowChange::Deleted { .. } => "deleted",
        }
    }

    /// The fingerprint of the snapshot entry this change left (`None` after a delete).
    pub fn sent(&self) -> Option<Fingerprint> {
        match self {
            RowChange::Inserted { sent } | RowChange::Updated { sent, .. } => Some(*sent),
            RowChange::Deleted { .. } => None,
        }
    }

    /// The snapshot entry before this change (`None` before an insert).
    pub fn before(&self) -> Option<&Delivered> {
        match self {
            RowChange::Updated { before, .. } | RowChange::Deleted { before } => Some(before),
            RowChange::Inserted { .. } => None,
        }
    }

    /// Stored form: a kind byte (1 inserted, 2 updated, 3 deleted), then the entry before
    /// (length-prefixed: fingerprint and row), then the 16-byte fingerprint sent.
    pub fn encode(&self) -> Vec<u8> {
        let kind = match self {
            RowChange::Inserted { .. } => 1u8,
            RowChange::Updated { .. } => 2,
            RowChange::Deleted { .. } => 3,
        };
        let mut out = vec![kind];
        if let Some(b) = self.before() {
            out.extend_from_slice(&((b.row.len() + 16) as u32).to_le_bytes());
            out.extend_from_slice(&b.fp);
            out.extend_from_slice(&b.row);
        }
        if let Some(fp) = self.sent() {
            out.extend_from_slice(&fp);
        }
        out
    }

    /// Reads back the stored form [`RowChange::encode`] writes; `None` if it is malformed.
    pub fn decode(v: &[u8]) -> Option<RowChange> {
        let (kind, rest) = v.split_first()?;
        let before = |rest: &[u8]| -> Option<(Delivered, usize)> {
            let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            Some((Delivered::from_stored(rest.get(4..4 + len)?)?, 4 + len))
        };
        let fp = |rest: &[u8]| -> Option<Fingerprint> {
            (rest.len() == 16).then(|| rest.try_into().ok()).flatten()
        };
        match kind {
            1 => Some(RowChange::Inserted { sent: fp(rest)? }),
            2 => {
                let (before, used) = before(rest)?;
                Some(RowChange::Updated {
                    before,
                    sent: fp(&rest[used..])?,
                })
            }
            3 => {
                let (before, used) = before(rest)?;
                (used == rest.len()).then_some(RowChange::Deleted { before })
            }
            _ => None,
        }
    }
}

/// The current time as RFC 3339 (UTC), as records and the audit log write it.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
