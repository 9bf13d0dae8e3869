//! The audit log: the `audit` table (sequence number → JSON [`AuditEntry`]), append-only,
//! each entry hash-chained to the one before it. Entries are appended with the governance
//! records they are about (`governance_records.rs`); read, a page at a time, and pruned
//! here. Pruning removes the oldest entries and keeps the last removed one's sequence number
//! and hash as the chain's anchor (`audit_anchor`), so the kept log still verifies from its
//! first entry; the newest entry is never pruned (the next one chains to it).

use super::error::Doing;
use super::{StateError, StateOp, StateStore};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

/// sequence number → JSON [`AuditEntry`]. Append-only: nothing updates entries; only
/// [`StateStore::prune_audit`] removes the oldest.
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// `anchor` → JSON [`AuditAnchor`]: the last entry pruned from the log.
const AUDIT_ANCHOR: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_anchor");

/// The last entry pruned from the audit log: the first kept entry chains to its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnchor {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
    /// When it was appended (RFC 3339).
    pub at: String,
}

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
    /// The audit log's anchor: the last entry pruned, if any was (the first kept entry's
    /// `prev_hash` must be its hash).
    pub fn audit_anchor(&self) -> Result<Option<AuditAnchor>, StateError> {
        self.read_table(
            StateOp::ReadAudit,
            AUDIT_ANCHOR,
            || None,
            |table, doing| {
                let value = table.get("anchor").map_err(|e| doing.err(e))?;
                value
                    .map(|v| {
                        serde_json::from_slice(v.value())
                            .map_err(|e| doing.corrupt(format!("unreadable audit anchor: {e}")))
                    })
                    .transpose()
            },
        )
    }

    /// Entries newest first, after sequence number `after` and before `before` (`None`: no
    /// bound), that `keep` selects, at most `limit`; reads no more of the log than it needs.
    pub fn audit_page(
        &self,
        after: Option<u64>,
        before: Option<u64>,
        limit: usize,
        keep: impl Fn(&AuditEntry) -> bool,
    ) -> Result<Vec<AuditEntry>, StateError> {
        let doing = self.doing(StateOp::ReadAudit);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let t = txn.open_table(AUDIT).map_err(|e| doing.err(e))?;
        let mut out = Vec::new();
        for entry in t
            .range(after.map_or(0, |a| a.saturating_add(1))..before.unwrap_or(u64::MAX))
            .map_err(|e| doing.err(e))?
            .rev()
        {
            if out.len() >= limit {
                break;
            }
            let (_, v) = entry.map_err(|e| doing.err(e))?;
            let entry: AuditEntry =
                serde_json::from_slice(v.value()).map_err(|e| doing.corrupt(e))?;
            if keep(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Removes the entries appended before `cutoff` (RFC 3339, compared as text: every entry
    /// is written in UTC), except the newest entry, and records the last removed one as the
    /// anchor, in one transaction. Returns how many were removed.
    pub fn prune_audit(&self, cutoff: &str) -> Result<u64, StateError> {
        let doing = self.doing(StateOp::WriteGovernance);
        // Most calls find nothing to do: look before taking a write transaction.
        let oldest = self.audit_page_oldest()?;
        if oldest.is_none_or(|at| at.as_str() >= cutoff) {
            return Ok(0);
        }
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        let removed = {
            let mut audit = txn.open_table(AUDIT).map_err(|e| doing.err(e))?;
            let newest = audit
                .last()
                .map_err(|e| doing.err(e))?
                .map(|(k, _)| k.value());
            let mut last: Option<AuditEntry> = None;
            let mut removed = 0;
            loop {
                let Some((seq, entry)) = audit
                    .first()
                    .map_err(|e| doing.err(e))?
                    .map(|(k, v)| (k.value(), v.value().to_vec()))
                else {
                    break;
                };
                if Some(seq) == newest {
                    break;
                }
                let entry: AuditEntry =
                    serde_json::from_slice(&entry).map_err(|e| doing.corrupt(e))?;
                if entry.at.as_str() >= cutoff {
                    break;
                }
                audit.remove(seq).map_err(|e| doing.err(e))?;
                removed += 1;
                last = Some(entry);
            }
            if let Some(last) = last {
                let anchor = AuditAnchor {
                    seq: last.seq,
                    hash: last.hash,
                    at: last.at,
                };
                let mut table = txn.open_table(AUDIT_ANCHOR).map_err(|e| doing.err(e))?;
                table
                    .insert("anchor", doing.encode(&anchor)?.as_slice())
                    .map_err(|e| doing.err(e))?;
            }
            removed
        };
        txn.commit().map_err(|e| doing.err(e))?;
        Ok(removed)
    }

    /// When the oldest kept entry was appended.
    fn audit_page_oldest(&self) -> Result<Option<String>, StateError> {
        let doing = self.doing(StateOp::ReadAudit);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let t = txn.open_table(AUDIT).map_err(|e| doing.err(e))?;
        let first = t.first().map_err(|e| doing.err(e))?;
        first
            .map(|(_, v)| {
                serde_json::from_slice::<AuditEntry>(v.value())
                    .map(|e| e.at)
                    .map_err(|e| doing.corrupt(e))
            })
            .transpose()
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> AuditEvent {
        AuditEvent {
            user: "u".into(),
            action: "change.submit".into(),
            target: format!("change {n}"),
            config_hash: None,
            detail: serde_json::Value::Null,
        }
    }

    #[test]
    fn pruning_keeps_the_chain_verifiable_from_the_first_kept_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        for n in 0..5 {
            store.write_governance(vec![], vec![event(n)]).unwrap();
        }
        // Everything is older than a cutoff in the future, but the newest entry stays.
        assert_eq!(store.prune_audit("9999-01-01T00:00:00Z").unwrap(), 4);
        assert_eq!(store.prune_audit("9999-01-01T00:00:00Z").unwrap(), 0);
        let anchor = store.audit_anchor().unwrap().unwrap();
        assert_eq!(anchor.seq, 4);
        store.write_governance(vec![], vec![event(5)]).unwrap();
        let log = store.audit_log().unwrap();
        assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
        let mut prev = anchor.hash;
        for e in &log {
            assert!(e.verifies(&prev), "entry {} verifies", e.seq);
            prev = e.hash.clone();
        }
        let page = store.audit_page(None, Some(6), 10, |_| true).unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
        assert_eq!(store.prune_audit("2000-01-01T00:00:00Z").unwrap(), 0);
    }
}
