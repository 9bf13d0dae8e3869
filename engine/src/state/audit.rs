//! The audit log: the `audit` table (sequence number → JSON [`AuditEntry`]), append-only,
//! each entry hash-chained to the one before it. Entries are appended with the governance
//! records they are about (`governance_records.rs`); read here.

use super::error::Doing;
use super::{StateError, StateOp, StateStore};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

/// sequence number → JSON [`AuditEntry`]. Append-only: nothing updates or removes entries.
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Something that happened, to be appended to the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Who did it.
    pub user: String,
    /// `change.submit`, `change.approve`, `change.reject`, `change.publish`, `run.start`,
    /// `run.awaiting_approval`, `run.approve`.
    pub action: String,
    /// What it is about: a change request id, a sync and run id.
    pub target: String,
    /// The configuration the action concerns (SHA-256 of its files).
    pub config_hash: Option<String>,
    /// Anything else worth keeping about it.
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// An audit log entry: the event, when, and a hash chain over every entry before it (so an
/// edit to the file outside backflow shows up in `backflow audit --verify`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its place in the log, from 1.
    pub seq: u64,
    /// When it was appended (RFC 3339).
    pub at: String,
    /// What happened.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// The previous entry's hash (empty for the first).
    pub prev_hash: String,
    /// SHA-256 of this entry's content and `prev_hash`.
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

/// Appends `events` to the audit log in `txn`, chained to its last entry; returns the
/// entries written.
pub(super) fn append(
    txn: &WriteTransaction,
    events: Vec<AuditEvent>,
    doing: &Doing,
) -> Result<Vec<AuditEntry>, StateError> {
    let mut written = Vec::new();
    let mut audit = txn.open_table(AUDIT).map_err(|e| doing.err(e))?;
    let last = audit
        .last()
        .map_err(|e| doing.err(e))?
        .map(|(k, v)| (k.value(), v.value().to_vec()));
    let (mut seq, mut prev_hash) = match last {
        // An unreadable last entry must not silently restart the hash chain.
        Some((k, v)) => (
            k,
            serde_json::from_slice::<AuditEntry>(&v)
                .map_err(|e| doing.corrupt(format!("audit log entry {k} is unreadable: {e}")))?
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
            .insert(seq, doing.encode(&entry)?.as_slice())
            .map_err(|e| doing.err(e))?;
        prev_hash = hash;
        written.push(entry);
    }
    Ok(written)
}

impl StateStore {
    /// The audit log, oldest first.
    pub fn audit_log(&self) -> Result<Vec<AuditEntry>, StateError> {
        let doing = self.doing(StateOp::ReadAudit);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let t = txn.open_table(AUDIT).map_err(|e| doing.err(e))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(|e| doing.err(e))? {
            let (_, v) = entry.map_err(|e| doing.err(e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| doing.corrupt(e))?);
        }
        Ok(out)
    }
}
