//! The open database, reopened after an I/O failure. redb fails every later operation of a
//! database whose write failed (a full disk: "Previous I/O error occurred") until it is
//! closed; a service would then answer nothing and record nothing until restarted. The
//! first transaction that meets such a failure opens the file afresh (what was committed
//! is intact; the failed transaction is gone) and goes on with the new handle.

use redb::{
    ConcurrencyMode, Database, ReadTransaction, StorageError, TransactionError, WriteTransaction,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// redb page cache size. It bounds what the state holds in memory while a run commits a
/// million acknowledged rows: with 64 MiB the issue-15 initial sync peaked at 175-184 MB
/// RSS, with 32 MiB at 130-131 MB, with 16 MiB at 97-98 MB; run times were the same within
/// this machine's noise at 32 and 64 MiB, while 16 MiB made the no-change rerun about
/// 0.1-0.4 s slower (issue 15, session 8 in docs/benchmarks-history.md).
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Opens (creating if needed) the database file with backflow's settings.
pub(super) fn database(path: &Path) -> Result<Database, redb::DatabaseError> {
    // redb's page cache defaults to 1 GiB; the diff walks the whole snapshot once per run,
    // so a large cache would only hold pages that are not read again. Keep memory bounded.
    // Multi-writer: other backflow processes (the CLI beside a service, a second run) open
    // the same file; reads never wait, write transactions take turns.
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(path)
}

/// The state's database handle, replaced when an I/O failure poisoned it.
pub(super) struct Db {
    current: RwLock<Arc<Database>>,
    path: PathBuf,
}

impl Db {
    pub(super) fn new(db: Database, path: &Path) -> Db {
        Db {
            current: RwLock::new(Arc::new(db)),
            path: path.to_path_buf(),
        }
    }

    fn current(&self) -> Arc<Database> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Begins a read transaction.
    pub(super) fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        use redb::ReadableDatabase;
        self.retrying(|db| db.begin_read())
    }

    /// Begins a write transaction.
    pub(super) fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        self.retrying(|db| db.begin_write())
    }

    fn retrying<T>(
        &self,
        begin: impl Fn(&Database) -> Result<T, TransactionError>,
    ) -> Result<T, TransactionError> {
        let db = self.current();
        match begin(&db) {
            Err(TransactionError::Storage(StorageError::PreviousIo)) => {
                self.reopen(&db)?;
                begin(&self.current())
            }
            other => other,
        }
    }

    /// Opens the file afresh in place of `failed` (unless another thread already did).
    fn reopen(&self, failed: &Arc<Database>) -> Result<(), TransactionError> {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !Arc::ptr_eq(&current, failed) {
            return Ok(());
        }
        let db = database(&self.path).map_err(|e| {
            TransactionError::Storage(StorageError::Io(std::io::Error::other(format!(
                "reopening after an I/O error: {e}"
            ))))
        })?;
        tracing::warn!(
            path = %self.path.display(),
            "state file reopened after an I/O error (a full disk?)"
        );
        *current = Arc::new(db);
        Ok(())
    }
}
