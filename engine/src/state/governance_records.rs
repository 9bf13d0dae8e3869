//! Governance records: the published configuration (`published`), change requests
//! (`changes`) and runs held for approval (`run_gates`), stored as JSON the governance module
//! reads back. Written in one transaction with their audit entries (`audit.rs`).

use super::audit::{self, AuditEntry, AuditEvent};
use super::{StateError, StateOp, StateStore};
use redb::{ReadableTable, TableDefinition};

/// "current" → JSON [`crate::governance::Published`]: the configuration runs use.
pub(super) const PUBLISHED: TableDefinition<&str, &[u8]> = TableDefinition::new("published");
/// change request id → JSON [`crate::governance::ChangeRequest`].
pub(super) const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// run id → JSON [`crate::governance::RunGate`]: runs held for approval.
pub(super) const RUN_GATES: TableDefinition<&str, &[u8]> = TableDefinition::new("run_gates");

/// A governance record to write (see [`StateStore::write_governance`]).
pub enum GovernanceDoc<'a> {
    /// The configuration runs use from now on.
    Published(serde_json::Value),
    /// A change request, by id.
    Change(u64, serde_json::Value),
    /// A run held for approval, by run id.
    RunGate(&'a str, serde_json::Value),
}

impl StateStore {
    /// Writes governance records and appends audit events in one transaction: a decision
    /// and its audit entry are durable together or not at all.
    pub fn write_governance(
        &self,
        docs: Vec<GovernanceDoc<'_>>,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditEntry>, StateError> {
        let doing = self.doing(StateOp::WriteGovernance);
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        for doc in docs {
            match doc {
                GovernanceDoc::Published(v) => {
                    let mut t = txn.open_table(PUBLISHED).map_err(|e| doing.err(e))?;
                    t.insert("current", doing.encode(&v)?.as_slice())
                        .map_err(|e| doing.err(e))?;
                }
                GovernanceDoc::Change(id, v) => {
                    let mut t = txn.open_table(CHANGES).map_err(|e| doing.err(e))?;
                    t.insert(id, doing.encode(&v)?.as_slice())
                        .map_err(|e| doing.err(e))?;
                }
                GovernanceDoc::RunGate(id, v) => {
                    let mut t = txn.open_table(RUN_GATES).map_err(|e| doing.err(e))?;
                    t.insert(id, doing.encode(&v)?.as_slice())
                        .map_err(|e| doing.err(e))?;
                }
            }
        }
        let written = audit::append(&txn, events, &doing)?;
        txn.commit().map_err(|e| doing.err(e))?;
        Ok(written)
    }

    /// The published configuration, if any has been published.
    pub fn published<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>, StateError> {
        let doing = self.doing(StateOp::ReadGovernance);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let t = txn.open_table(PUBLISHED).map_err(|e| doing.err(e))?;
        let v = t.get("current").map_err(|e| doing.err(e))?;
        v.map(|v| serde_json::from_slice(v.value()).map_err(|e| doing.corrupt(e)))
            .transpose()
    }

    /// One change request.
    pub fn change<T: serde::de::DeserializeOwned>(&self, id: u64) -> Result<Option<T>, StateError> {
        let doing = self.doing(StateOp::ReadGovernance);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let t = txn.open_table(CHANGES).map_err(|e| doing.err(e))?;
        let v = t.get(id).map_err(|e| doing.err(e))?;
        v.map(|v| serde_json::from_slice(v.value()).map_err(|e| doing.corrupt(e)))
            .transpose()
    }

    /// Change requests, newest first.
    pub fn changes<T: serde::de::DeserializeOwned>(
        &self,
        limit: usize,
    ) -> Result<Vec<T>, StateError> {
        let doing = self.doing(StateOp::ReadGovernance);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let t = txn.open_table(CHANGES).map_err(|e| doing.err(e))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(|e| doing.err(e))?.rev().take(limit) {
            let (_, v) = entry.map_err(|e| doing.err(e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| doing.corrupt(e))?);
        }
        Ok(out)
    }

    /// The id the next change request gets.
    pub fn next_change_id(&self) -> Result<u64, StateError> {
        let doing = self.doing(StateOp::ReadGovernance);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let t = txn.open_table(CHANGES).map_err(|e| doing.err(e))?;
        let last = t.last().map_err(|e| doing.err(e))?.map(|(k, _)| k.value());
        Ok(last.map_or(1, |k| k + 1))
    }

    /// The approval gate of a held run, if it has one.
    pub fn run_gate<T: serde::de::DeserializeOwned>(
        &self,
        run_id: &str,
    ) -> Result<Option<T>, StateError> {
        let doing = self.doing(StateOp::ReadGovernance);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let t = txn.open_table(RUN_GATES).map_err(|e| doing.err(e))?;
        let v = t.get(run_id).map_err(|e| doing.err(e))?;
        v.map(|v| serde_json::from_slice(v.value()).map_err(|e| doing.corrupt(e)))
            .transpose()
    }
}
