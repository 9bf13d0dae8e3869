//! What a sync's snapshot table is called and holds: its name ([`snapshot_table`]), the
//! fingerprints kept in it ([`fingerprint_bytes`], [`fingerprint_text`]), and the mapping
//! its rows were delivered with ([`mapping_changed`], [`record_mapping`]).

use crate::domain::Fingerprint;
use crate::sync::prepare::PreparedSync;
use crate::sync::run::Abort;
use crate::workspace::Workspace;
use backflow_plugin_sdk::warehouse::SnapshotTable;
use std::path::PathBuf;

/// The snapshot table of a sync's state key: `<state key, file-safe>_<hash>` in the model's
/// `diff_schema`, the hash covering the state key, primary key and destination.
pub(crate) fn snapshot_table(p: &PreparedSync) -> SnapshotTable {
    let safe: String = p
        .state_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let identity = format!(
        "{}\0{}\0{}",
        p.state_key,
        p.model.primary_key.join("\0"),
        p.destination.name
    );
    let hash = xxhash_rust::xxh3::xxh3_64(identity.as_bytes());
    SnapshotTable {
        schema: p.model.diff_schema.clone(),
        table: format!("{safe}_{hash:016x}"),
    }
}

/// The fingerprint of a frame from the database's: its 32 hex digits as 16 bytes, or a
/// hash of any other text.
pub(crate) fn fingerprint_bytes(text: &str) -> Fingerprint {
    let mut out = [0u8; 16];
    let hex = text.as_bytes();
    if hex.len() == 32 {
        let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let parsed = (0..16).all(|i| match (digit(hex[2 * i]), digit(hex[2 * i + 1])) {
            (Some(a), Some(b)) => {
                out[i] = a << 4 | b;
                true
            }
            _ => false,
        });
        if parsed {
            return out;
        }
    }
    xxhash_rust::xxh3::xxh3_128(hex).to_le_bytes()
}

/// The database's fingerprint text back from a frame's 16 bytes (lowercase hex).
pub(crate) fn fingerprint_text(fp: &Fingerprint) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

fn mapping_path(ws: &Workspace, p: &PreparedSync) -> PathBuf {
    let t = snapshot_table(p);
    ws.state_dir
        .join("journal-warehouse")
        .join(format!("{}.{}.mapping", t.schema, t.table))
}

fn mapping_signature(p: &PreparedSync) -> String {
    let text = format!("{:?}", p.sync.mapping);
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
}

/// Whether the sync's mapping changed since its rows were last written back in full.
pub(crate) fn mapping_changed(ws: &Workspace, p: &PreparedSync) -> bool {
    match std::fs::read_to_string(mapping_path(ws, p)) {
        Ok(recorded) => recorded.trim() != mapping_signature(p),
        Err(_) => false,
    }
}

/// Records the mapping whose rows the snapshot table now holds (after a complete run).
pub(crate) fn record_mapping(ws: &Workspace, p: &PreparedSync) -> Result<(), Abort> {
    let path = mapping_path(ws, p);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Abort::io(format!("creating {}", dir.display())))?;
    }
    std::fs::write(&path, mapping_signature(p))
        .map_err(Abort::io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_fingerprints_round_trip_and_others_are_hashed() {
        let md5 = "0123456789abcdef0123456789abcdef";
        assert_eq!(fingerprint_text(&fingerprint_bytes(md5)), md5);
        let other = fingerprint_bytes("not hex at all");
        assert_eq!(other, fingerprint_bytes("not hex at all"));
        assert_ne!(fingerprint_text(&other), "not hex at all");
    }
}
