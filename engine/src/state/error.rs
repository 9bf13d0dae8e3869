//! The state store's error: which operation failed ([`StateOp`]), what happened
//! ([`StateErrorKind`]), and the message; and how redb's errors are classified into it.

use std::fmt;
use std::path::{Path, PathBuf};

/// What the state store was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateOp {
    /// Storing a run record (and pruning its sync's oldest runs).
    RecordRun,
    /// Reading run history.
    ReadRuns,
    /// Writing governance records and appending their audit entries.
    WriteGovernance,
    /// Reading the audit log.
    ReadAudit,
    /// Reading governance records (published configuration, change requests, held runs).
    ReadGovernance,
    /// Reading what a sync's snapshot is valid for.
    ReadSyncMeta,
    /// Dropping a sync's snapshot for a new target.
    ResetSnapshot,
    /// Committing acknowledged rows to a sync's snapshot, pending rows and changelog.
    Commit,
    /// Reading a sync's snapshot.
    ReadSnapshot,
    /// Reading a sync's pending (refused) rows.
    ReadPending,
    /// Reading a run's changelog.
    ReadChangelog,
    /// Dropping the changelogs of old runs.
    PruneChangelog,
    /// Creating or revoking an API token.
    WriteToken,
    /// Reading API tokens.
    ReadTokens,
    /// Reading a sync's schedule mark.
    ReadScheduleMark,
    /// Recording a sync's schedule mark.
    WriteScheduleMark,
    /// Reading the users' stable ids.
    ReadUserIds,
    /// Giving users ids, or retiring them.
    WriteUserIds,
    /// Reading an alert episode.
    ReadAlertEpisodes,
    /// Recording an alert episode.
    WriteAlertEpisodes,
    /// Reading the delivery debugger's requests.
    ReadDebugRequests,
    /// Storing or pruning the delivery debugger's requests.
    WriteDebugRequests,
}

impl fmt::Display for StateOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StateOp::RecordRun => "recording a run",
            StateOp::ReadRuns => "reading run history",
            StateOp::WriteGovernance => "writing governance records",
            StateOp::ReadAudit => "reading the audit log",
            StateOp::ReadGovernance => "reading governance records",
            StateOp::ReadSyncMeta => "reading sync metadata",
            StateOp::ResetSnapshot => "resetting a snapshot",
            StateOp::Commit => "committing delivered rows",
            StateOp::ReadSnapshot => "reading a snapshot",
            StateOp::ReadPending => "reading pending rows",
            StateOp::ReadChangelog => "reading a changelog",
            StateOp::PruneChangelog => "pruning changelogs",
            StateOp::WriteToken => "writing an API token",
            StateOp::ReadTokens => "reading API tokens",
            StateOp::ReadScheduleMark => "reading a schedule mark",
            StateOp::WriteScheduleMark => "writing a schedule mark",
            StateOp::ReadUserIds => "reading user ids",
            StateOp::WriteUserIds => "writing user ids",
            StateOp::ReadAlertEpisodes => "reading an alert episode",
            StateOp::WriteAlertEpisodes => "recording an alert episode",
            StateOp::ReadDebugRequests => "reading a run's captured requests",
            StateOp::WriteDebugRequests => "storing captured requests",
        })
    }
}

/// What went wrong, as far as a caller acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateErrorKind {
    /// The disk (or the user's quota) is full.
    NoSpace,
    /// Reading or writing the file failed otherwise.
    Io,
    /// A record or a block does not decode: the file was damaged, or written by a bug.
    Corrupt,
    /// Anything else: a record that does not encode, redb refusing an operation, no
    /// randomness for a token.
    Other,
}

/// A state store operation failed. Displays as `state file PATH: MESSAGE`.
#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {message}")]
pub struct StateError {
    path: PathBuf,
    op: StateOp,
    kind: StateErrorKind,
    message: String,
}

impl StateError {
    /// The operation that failed.
    pub fn op(&self) -> StateOp {
        self.op
    }

    /// What happened.
    pub fn kind(&self) -> StateErrorKind {
        self.kind
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What happened, in words (the display without the file).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the disk (or quota) is full: retrying before space is freed fails again.
    pub fn is_no_space(&self) -> bool {
        self.kind == StateErrorKind::NoSpace
    }

    /// Whether the file holds something that does not decode.
    pub fn is_corrupt(&self) -> bool {
        self.kind == StateErrorKind::Corrupt
    }
}

/// An operation of the store on its file, building its errors: `doing.err(e)` for a redb
/// error, `doing.corrupt(...)` for a record that does not decode.
pub(super) struct Doing<'a> {
    pub(super) path: &'a Path,
    pub(super) op: StateOp,
}

impl Doing<'_> {
    fn error(&self, kind: StateErrorKind, message: String) -> StateError {
        StateError {
            path: self.path.to_path_buf(),
            op: self.op,
            kind,
            message,
        }
    }

    /// An error of the storage (redb, or a typed error of this module's files).
    pub(super) fn err(&self, e: impl Failure) -> StateError {
        self.error(e.kind(), e.to_string())
    }

    /// A stored record or block that does not decode.
    pub(super) fn corrupt(&self, message: impl fmt::Display) -> StateError {
        self.error(StateErrorKind::Corrupt, message.to_string())
    }

    /// Anything else (see [`StateErrorKind::Other`]).
    pub(super) fn other(&self, message: impl fmt::Display) -> StateError {
        self.error(StateErrorKind::Other, message.to_string())
    }

    /// `value` as the JSON it is stored as.
    pub(super) fn encode<T: serde::Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<Vec<u8>, StateError> {
        serde_json::to_vec(value).map_err(|e| self.other(e))
    }
}

/// An error from the storage, classified for [`StateError::kind`].
pub(super) trait Failure: fmt::Display {
    /// What happened.
    fn kind(&self) -> StateErrorKind;
}

fn io_kind(e: &std::io::Error) -> StateErrorKind {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => StateErrorKind::NoSpace,
        _ => StateErrorKind::Io,
    }
}

impl Failure for redb::StorageError {
    fn kind(&self) -> StateErrorKind {
        match self {
            redb::StorageError::Io(e) => io_kind(e),
            redb::StorageError::PreviousIo => StateErrorKind::Io,
            redb::StorageError::Corrupted(_) => StateErrorKind::Corrupt,
            _ => StateErrorKind::Other,
        }
    }
}

impl Failure for redb::TableError {
    fn kind(&self) -> StateErrorKind {
        match self {
            redb::TableError::Storage(e) => e.kind(),
            _ => StateErrorKind::Other,
        }
    }
}

impl Failure for redb::TransactionError {
    fn kind(&self) -> StateErrorKind {
        match self {
            redb::TransactionError::Storage(e) => e.kind(),
            _ => StateErrorKind::Other,
        }
    }
}

impl Failure for redb::CommitError {
    fn kind(&self) -> StateErrorKind {
        match self {
            redb::CommitError::Storage(e) => e.kind(),
            _ => StateErrorKind::Other,
        }
    }
}

impl Failure for redb::Error {
    fn kind(&self) -> StateErrorKind {
        match self {
            redb::Error::Io(e) => io_kind(e),
            redb::Error::PreviousIo => StateErrorKind::Io,
            redb::Error::Corrupted(_) => StateErrorKind::Corrupt,
            _ => StateErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_apart_and_the_display_is_unchanged() {
        let doing = Doing {
            path: Path::new("/x/state.redb"),
            op: StateOp::Commit,
        };
        let full = redb::StorageError::Io(std::io::Error::from(std::io::ErrorKind::StorageFull));
        let e = doing.err(full);
        assert!(e.is_no_space() && e.op() == StateOp::Commit);
        assert_eq!(
            e.to_string(),
            format!("state file /x/state.redb: {}", e.message())
        );
        let e = doing.err(redb::StorageError::Corrupted("x".into()));
        assert_eq!(e.kind(), StateErrorKind::Corrupt);
        assert_eq!(
            doing.corrupt("unreadable run record: y").to_string(),
            "state file /x/state.redb: unreadable run record: y"
        );
    }
}
