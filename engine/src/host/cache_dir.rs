//! Where compiled plugins are cached, and how the cache stays bounded (issue 41).
//!
//! One cache per user, shared by every workspace, `serve` and `plugin conformance`: a plugin
//! compiled once (6-8 s for a JavaScript or Python component) is not compiled again by the
//! next command or workspace. Entries are keyed by the plugin's content hash and the engine's
//! compatibility (wasmtime version, target, settings; see `compiled_cache.rs`, which also
//! keeps them authentic with a keyed hash).
//!
//! The directory is `$BACKFLOW_CACHE_DIR`, else `$XDG_CACHE_HOME/backflow/compiled`, else
//! `~/.cache/backflow/compiled`. Its `.cwasm` entries are kept under
//! `$BACKFLOW_CACHE_MAX_MB` (default 2048) megabytes: after a write, the least recently used
//! entries (a read touches an entry) are removed until the rest fit; the entry just written
//! always stays.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Overrides the cache directory.
pub const CACHE_DIR_ENV: &str = "BACKFLOW_CACHE_DIR";
/// The cache's size bound in megabytes.
pub const CACHE_MAX_MB_ENV: &str = "BACKFLOW_CACHE_MAX_MB";
/// The bound when `BACKFLOW_CACHE_MAX_MB` is not set (or not a number).
const DEFAULT_MAX_MB: u64 = 2048;

/// The per-user cache directory (see the module docs); `None` when neither
/// `BACKFLOW_CACHE_DIR`, `XDG_CACHE_HOME` nor `HOME` is set.
pub fn user_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var(CACHE_DIR_ENV) {
        return Some(dir);
    }
    let base = var("XDG_CACHE_HOME").or_else(|| var("HOME").map(|h| h.join(".cache")))?;
    Some(base.join("backflow").join("compiled"))
}

/// The cache's size bound in bytes.
pub(super) fn max_bytes() -> u64 {
    std::env::var(CACHE_MAX_MB_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_MAX_MB)
        .saturating_mul(1 << 20)
}

/// Marks `entry` as just used (its modification time), for the LRU order.
pub(super) fn touch(entry: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(entry) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Removes the least recently used `.cwasm` entries of `dir` until they take at most
/// `max_bytes`, never `keep`. Returns the entries removed.
pub(super) fn evict(dir: &Path, max_bytes: u64, keep: &Path) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut entries: Vec<(SystemTime, u64, PathBuf)> = read
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    entries.sort();
    let mut removed = Vec::new();
    for (_, len, path) in entries {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            total = total.saturating_sub(len);
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(dir: &Path, name: &str, len: usize, age_s: u64) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; len]).unwrap();
        let file = std::fs::File::options().append(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age_s))
            .unwrap();
        path
    }

    #[test]
    fn the_least_recently_used_entries_go_first_and_the_new_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let oldest = entry(dir.path(), "a.cwasm", 100, 300);
        let older = entry(dir.path(), "b.cwasm", 100, 200);
        let recent = entry(dir.path(), "c.cwasm", 100, 100);
        let new = entry(dir.path(), "d.cwasm", 100, 400); // written now, but old mtime
        let key = entry(dir.path(), "cache.key", 32, 500);
        touch(&older); // read just now: most recently used
        let removed = evict(dir.path(), 250, &new);
        assert_eq!(removed, vec![oldest.clone(), recent.clone()]);
        assert!(older.exists() && new.exists() && key.exists());
        assert!(
            evict(dir.path(), 250, &new).is_empty(),
            "already under the bound"
        );
    }
}
