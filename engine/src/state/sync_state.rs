//! What the store keeps per sync, seen from outside: its [`SyncMeta`] (table `sync_meta`: sync
//! → JSON), the reads of its snapshot, and its reset when the target changes. Commits of
//! delivered rows are in `commit.rs`.

use super::changelog::{changelog_def, changelog_table};
use super::pending::{pending_def, pending_table};
use super::snapshot::{self, SNAPSHOT_ROWS};
use super::snapshot_read::SnapshotReader;
use super::{StateError, StateOp, StateStore};
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

/// sync name → JSON-encoded [`SyncMeta`]: what the snapshot of that sync is valid for.
pub(super) const SYNC_META: TableDefinition<&str, &[u8]> = TableDefinition::new("sync_meta");

/// What a sync's snapshot is valid for. If any of it changes, the snapshot is dropped: keys
/// of another primary key, or rows delivered to another destination, say nothing about what
/// the new target holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncMeta {
    /// The primary key's columns.
    pub primary_key: Vec<String>,
    /// The destination's name.
    pub destination: String,
    /// The destination's plugin.
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

impl StateStore {
    /// What a sync's snapshot is valid for; `None` before its first commit.
    pub fn sync_meta(&self, sync: &str) -> Result<Option<SyncMeta>, StateError> {
        let doing = self.doing(StateOp::ReadSyncMeta);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let table = txn.open_table(SYNC_META).map_err(|e| doing.err(e))?;
        let value = table.get(sync).map_err(|e| doing.err(e))?;
        value
            .map(|v| {
                serde_json::from_slice(v.value())
                    .map_err(|e| doing.corrupt(format!("unreadable sync metadata: {e}")))
            })
            .transpose()
    }

    /// Drops a sync's snapshot and pending rows and records what the new snapshot is for.
    pub fn reset_snapshot(&self, sync: &str, meta: &SyncMeta) -> Result<(), StateError> {
        let doing = self.doing(StateOp::ResetSnapshot);
        let txn = self.db.begin_write().map_err(|e| doing.err(e))?;
        let (base, delta) = (snapshot::base_table(sync), snapshot::delta_table(sync));
        for table in [&base, &delta] {
            txn.delete_table(snapshot::def(table))
                .map_err(|e| doing.err(e))?;
        }
        txn.delete_table(pending_def(&pending_table(sync)))
            .map_err(|e| doing.err(e))?;
        txn.open_table(SNAPSHOT_ROWS)
            .map_err(|e| doing.err(e))?
            .remove(sync)
            .map_err(|e| doing.err(e))?;
        // Changelogs are of rows under the old key or destination: undoing them now would be wrong.
        let changelog = changelog_table(sync);
        txn.delete_table(changelog_def(&changelog))
            .map_err(|e| doing.err(e))?;
        {
            let mut table = txn.open_table(SYNC_META).map_err(|e| doing.err(e))?;
            let json = doing.encode(meta)?;
            table
                .insert(sync, json.as_slice())
                .map_err(|e| doing.err(e))?;
        }
        txn.commit().map_err(|e| doing.err(e))
    }

    /// Reads a sync's snapshot in one read transaction.
    fn read_snapshot<T>(
        &self,
        sync: &str,
        read: impl FnOnce(&SnapshotReader) -> Result<T, redb::Error>,
    ) -> Result<T, StateError> {
        let doing = self.doing(StateOp::ReadSnapshot);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let reader = SnapshotReader::open(&txn, sync).map_err(|e| doing.err(e))?;
        read(&reader).map_err(|e| doing.err(e))
    }

    /// Rows in a sync's snapshot.
    pub fn snapshot_len(&self, sync: &str) -> Result<u64, StateError> {
        self.read_snapshot(sync, |snapshot| snapshot.len())
    }

    /// Entries in a sync's snapshot delta (tombstones included): where commits went.
    #[cfg(test)]
    pub(crate) fn snapshot_delta_len(&self, sync: &str) -> u64 {
        use redb::ReadableTableMetadata;
        self.read_table(
            StateOp::ReadSnapshot,
            snapshot::def(&snapshot::delta_table(sync)),
            || 0,
            |t, _| Ok(t.len().unwrap_or(0)),
        )
        .unwrap_or(0)
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
        let doing = self.doing(StateOp::ReadSnapshot);
        let txn = self.db.begin_read().map_err(|e| doing.err(e))?;
        let reader = SnapshotReader::open(&txn, sync).map_err(|e| doing.err(e))?;
        reader
            .chunk_into(after, limit, keys, entries)
            .map_err(|e| doing.err(e))
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
}
