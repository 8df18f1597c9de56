//! The errors of the storage layer and of recovery: what failed, where, and (for
//! recovery) which shard and which record.
//!
//! `StorageError` is an operating error of a running server too: the shards answer
//! UNAVAILABLE with it, so it is `Clone` (one failed flush fails every reply of its
//! batches) and keeps its causes behind an `Arc`. `RecoveryError` stops the start; its
//! messages name the data folder, the shard and the record, so an operator can find
//! the damage.

use std::path::PathBuf;
use std::sync::Arc;

use super::record::RecordError;

/// A storage failure. At run time the service answers UNAVAILABLE for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The data folder, the database or its snapshot folder cannot be created or opened.
    #[error("cannot {action} {}: {source}", path.display())]
    Open {
        /// What was tried, e.g. "create data folder" or "open".
        action: &'static str,
        path: PathBuf,
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// A sled tree cannot be opened.
    #[error("cannot open tree {tree} in {}: {source}", path.display())]
    OpenTree {
        tree: &'static str,
        path: PathBuf,
        source: Arc<sled::Error>,
    },
    /// A file or folder cannot be read, written, synced, renamed or removed.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    /// sled failed to read, write or flush.
    #[error("storage I/O failed: {0}")]
    Io(Arc<sled::Error>),
    /// A stored file or layout record is damaged: it does not check or decode.
    #[error("{}: {what} is damaged: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        /// What is damaged, e.g. "layout record" or "snapshot".
        what: &'static str,
        reason: String,
    },
    /// The write-ahead log writer thread is gone (it only stops at shutdown).
    #[error("storage I/O failed: the write-ahead log writer has stopped")]
    WriterStopped,
    /// A test's fault file exists: every write fails.
    #[error("storage write failed: injected fault ({} exists)", .0.display())]
    Injected(PathBuf),
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        StorageError::Io(Arc::new(e))
    }
}

impl StorageError {
    /// A failed operation on a file or folder.
    pub fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::File {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// Why recovery refused to start: the state on disk cannot be rebuilt without losing or
/// inventing an acknowledged change.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A shard's snapshot does not decode or does not restore into an engine.
    #[error("{}: snapshot of shard {shard}: {reason}", path.display())]
    Snapshot {
        path: PathBuf,
        shard: u32,
        reason: String,
    },
    /// A record before the end of a shard's log is damaged; later records depend on it.
    #[error(
        "{}: shard {shard} log record {record} is damaged ({source}) and later records depend on it; \
         refusing to start rather than lose acknowledged changes",
        path.display()
    )]
    DamagedRecord {
        path: PathBuf,
        shard: u32,
        record: u64,
        source: RecordError,
    },
    /// A shard's log misses records between its snapshot and its end.
    #[error("{}: shard {shard} log jumps from record {expected} to {found}", path.display())]
    Gap {
        path: PathBuf,
        shard: u32,
        expected: u64,
        found: u64,
    },
    /// A record decodes but the engine refuses it: the log and the code disagree.
    #[error("{}: shard {shard} log record {record} does not replay: {source}", path.display())]
    Replay {
        path: PathBuf,
        shard: u32,
        record: u64,
        source: stockd_domain::Error,
    },
    /// The state, merged and split for a new shard count, does not restore.
    #[error("re-splitting the state into {shards} shards: shard {shard}: {reason}")]
    Split {
        shards: u32,
        shard: u32,
        reason: String,
    },
    /// A recovered shard breaks the engine's own invariants.
    #[error("shard {shard} is inconsistent after recovery: {reason}")]
    Inconsistent { shard: u32, reason: String },
    /// A hold cut between shards by a crash could not be released.
    #[error("repair of hold {hold_ref:?}: {source}")]
    Repair {
        hold_ref: String,
        source: stockd_domain::Error,
    },
    /// Replaying a shard panicked (a bug: replay asserts what it reads).
    #[error("replay of shard {shard} panicked")]
    Panicked { shard: u32 },
}
