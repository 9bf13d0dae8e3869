//! Helpers the unit tests of `state/` share: records and journal ops to commit, and ways to
//! look at what a commit left.

use super::snapshot::{def, delta_table};
use super::snapshot_read::open_read;
use super::{RunRecord, StateStore, SyncMeta};
use crate::domain::{ChangelogHeader, Delivered, JournalOp};
use redb::ReadableTableMetadata;

/// What the tests' sync `s` is valid for.
pub(super) fn meta() -> SyncMeta {
    SyncMeta {
        primary_key: vec!["id".into()],
        destination: "d".into(),
        destination_plugin: "p".into(),
        key_types: vec![],
    }
}

/// A finished run of `sync`.
pub(super) fn run(id: &str, sync: &str) -> RunRecord {
    let json = serde_json::json!({
        "run_id": id, "sync": sync, "trigger": "t", "user": "u", "started_at": "", "finished_at": "", "duration_ms": 0,
        "status": "succeeded", "planned": {"added": 0, "changed": 0, "removed": 0}, "delivered": {"added": 0, "changed": 0, "removed": 0},
        "failed": {"added": 0, "changed": 0, "removed": 0}, "plugins": {"source": "", "destination": ""}, "config_hash": "", "error": null, "rejected": []
    });
    serde_json::from_value(json).unwrap()
}

/// The start of run `run`'s deliveries in a journal.
pub(super) fn header(run: &str) -> JournalOp {
    JournalOp::Begin(ChangelogHeader {
        run_id: run.into(),
        mode: "mirror".into(),
        columns: vec![],
        key_columns: vec![],
        undo_of: None,
    })
}

/// A delivered row: fingerprint `[n; 16]`, row `[n]`.
pub(super) fn upsert(key: &str, n: u8) -> JournalOp {
    JournalOp::Upsert {
        key: key.as_bytes().to_vec(),
        fp: [n; 16],
        row: vec![n],
    }
}

/// What [`upsert`] stores.
pub(super) fn delivered(n: u8) -> Delivered {
    Delivered {
        fp: [n; 16],
        row: vec![n],
    }
}

/// Every entry of sync `s`'s snapshot, walked in chunks of `limit` as the plan's cursor
/// walks them.
pub(super) fn walk(state: &StateStore, limit: usize) -> Vec<(Vec<u8>, [u8; 16])> {
    let (mut after, mut out) = (None, Vec::new());
    loop {
        let (mut keys, mut entries) = (Vec::new(), Vec::new());
        let next = state
            .snapshot_chunk_into("s", after.as_deref(), limit, &mut keys, &mut entries)
            .unwrap();
        let mut start = 0;
        for (end, fp) in entries {
            out.push((keys[start..end].to_vec(), fp));
            start = end;
        }
        match next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

/// Entries in sync `s`'s snapshot delta.
pub(super) fn delta_len(state: &StateStore) -> u64 {
    let txn = state.db.begin_read().unwrap();
    open_read(&txn, def(&delta_table("s")))
        .unwrap()
        .map_or(0, |t| t.len().unwrap())
}
