//! The compiled-component cache on disk, and why its entries can be trusted.
//!
//! A `.cwasm` file is machine code: wasmtime loads it with an `unsafe` deserialize that
//! checks its header, not what the code does. A file dropped into the cache (a tampered
//! entry, one copied from another machine or cache) would run outside the sandbox. So each
//! entry carries a keyed hash (HMAC-SHA256) of its file name and contents, under a secret
//! only this cache's owner can read (`cache.key`, mode 0600, made on first use). An entry
//! whose tag does not match is not loaded: the plugin is compiled again and the entry
//! rewritten. The bytes checked are the bytes deserialized (read once, into memory).

use anyhow::Context as _;
use hmac::Mac;
use std::path::{Path, PathBuf};

/// The name of the secret in the cache directory.
const KEY_FILE: &str = "cache.key";
/// Bytes of the secret and of an entry's tag.
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 32;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// A cache directory and its secret.
pub(super) struct CompiledCache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
}

/// Why a cache entry is not used.
#[derive(Debug, thiserror::Error)]
pub(super) enum EntryRefused {
    /// Not there, or not readable.
    #[error("cannot read it: {0}")]
    Unreadable(std::io::Error),
    /// Its tag does not match its contents under this cache's secret.
    #[error("it was not written by this cache (its keyed hash does not match): tampered with or copied from elsewhere")]
    NotAuthentic,
}

impl CompiledCache {
    /// The cache in `dir` (created if missing), with its secret (made if missing). A secret
    /// others may read or write is replaced: entries made under it are no longer trusted.
    pub(super) fn open(dir: &Path) -> anyhow::Result<CompiledCache> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating cache directory {}", dir.display()))?;
        let key = read_or_make_key(&dir.join(KEY_FILE))?;
        Ok(CompiledCache {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// The entry for a plugin whose bytes hash to `hash`, compiled by an engine whose
    /// compatibility is `engine_key`.
    pub(super) fn entry(&self, hash: &str, engine_key: u64) -> PathBuf {
        self.dir.join(format!("{hash}-{engine_key:016x}.cwasm"))
    }

    fn tag(&self, file: &Path, compiled: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        let name = file
            .file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or_default();
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name);
        mac.update(compiled);
        mac
    }

    /// The compiled code of `file`, if its tag is this cache's.
    pub(super) fn read(&self, file: &Path) -> Result<Vec<u8>, EntryRefused> {
        let mut bytes = std::fs::read(file).map_err(EntryRefused::Unreadable)?;
        if bytes.len() < TAG_LEN {
            return Err(EntryRefused::NotAuthentic);
        }
        let compiled = bytes.split_off(TAG_LEN);
        self.tag(file, &compiled)
            .verify_slice(&bytes)
            .map_err(|_| EntryRefused::NotAuthentic)?;
        Ok(compiled)
    }

    /// Writes `compiled` as `file` with its tag (atomically: a temporary file renamed).
    pub(super) fn write(&self, file: &Path, compiled: &[u8]) -> std::io::Result<()> {
        let tag = self.tag(file, compiled).finalize().into_bytes();
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        let written = (|| {
            let mut content = Vec::with_capacity(TAG_LEN + compiled.len());
            content.extend_from_slice(&tag);
            content.extend_from_slice(compiled);
            std::fs::write(&tmp, content)?;
            std::fs::rename(&tmp, file)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

/// The cache's secret: read from `path` when only its owner may read and write it, else made
/// anew and written there with mode 0600 (atomically: two processes starting at once agree).
fn read_or_make_key(path: &Path) -> anyhow::Result<[u8; KEY_LEN]> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::metadata(path) {
        let private = meta.permissions().mode() & 0o077 == 0;
        let bytes = std::fs::read(path).unwrap_or_default();
        if let (true, Ok(key)) = (private, <[u8; KEY_LEN]>::try_from(bytes.as_slice())) {
            return Ok(key);
        }
        tracing::warn!(file = %path.display(), "the compiled-code cache's secret is readable by others or damaged; making a new one (cached plugins compile again)");
        std::fs::remove_file(path)
            .with_context(|| format!("replacing the cache secret {}", path.display()))?;
    }
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key)
        .map_err(|e| anyhow::anyhow!("no randomness for the cache secret: {e}"))?;
    // A name of this call's own: threads of one process (tests, a service) may race here too.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{call}", std::process::id()));
    let made = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::Write::write_all(&mut file, &key)?;
        file.sync_all()?;
        // A hard link fails if another process made the key first: then use theirs.
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match made {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the cache secret {}", path.display()))?;
            <[u8; KEY_LEN]>::try_from(bytes.as_slice())
                .map_err(|_| anyhow::anyhow!("the cache secret {} is damaged", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("writing the cache secret {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_only_unchanged_under_its_name_and_its_cache_key() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::open(dir.path()).unwrap();
        let file = cache.entry("abc", 7);
        cache.write(&file, b"machine code").unwrap();
        assert_eq!(cache.read(&file).unwrap(), b"machine code");
        // The same cache opened again keeps its secret.
        let again = CompiledCache::open(dir.path()).unwrap();
        assert_eq!(again.read(&file).unwrap(), b"machine code");
        // A flipped byte.
        let mut bytes = std::fs::read(&file).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        assert!(matches!(cache.read(&file), Err(EntryRefused::NotAuthentic)));
        // A valid entry under another name (another plugin's hash).
        cache.write(&file, b"machine code").unwrap();
        let renamed = cache.entry("def", 7);
        std::fs::copy(&file, &renamed).unwrap();
        assert!(matches!(
            cache.read(&renamed),
            Err(EntryRefused::NotAuthentic)
        ));
        // An entry of another cache.
        let other_dir = tempfile::tempdir().unwrap();
        let other = CompiledCache::open(other_dir.path()).unwrap();
        let foreign = other.entry("abc", 7);
        std::fs::copy(&file, &foreign).unwrap();
        assert!(matches!(
            other.read(&foreign),
            Err(EntryRefused::NotAuthentic)
        ));
        assert!(matches!(
            cache.read(&cache.entry("zzz", 1)),
            Err(EntryRefused::Unreadable(_))
        ));
    }

    #[test]
    fn the_secret_is_owner_only_and_replaced_when_others_could_read_it() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::open(dir.path()).unwrap();
        let key_file = dir.path().join(KEY_FILE);
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let file = cache.entry("abc", 7);
        cache.write(&file, b"code").unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let reopened = CompiledCache::open(dir.path()).unwrap();
        assert!(matches!(
            reopened.read(&file),
            Err(EntryRefused::NotAuthentic)
        ));
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
