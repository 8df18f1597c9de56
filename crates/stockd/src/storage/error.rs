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

use super::checkpoint::CheckpointError;
use super::log::LogError;

/// A storage failure. At run time the service answers UNAVAILABLE for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// A file or folder cannot be read, written, synced, renamed or removed.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    /// The segment log refused or failed (full disk, I/O error, damage).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The checkpoint store refused or failed; its message names the folder.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A stored layout record is damaged: it does not check or decode.
    #[error("{}: {what} is damaged: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        /// What is damaged, e.g. "layout record".
        what: &'static str,
        reason: String,
    },
    /// The data folder was written by a stockd before the segment log (sled `log` tree).
    #[error(
        "{} holds data of an older stockd format (sled write-ahead log), which this \
         version does not read; move it away to start empty",
        .0.display()
    )]
    OldFormat(PathBuf),
    /// A checkpoint delta holds more entries than one atomic batch may.
    #[error(
        "a checkpoint of {entries} entries exceeds the {max} one atomic batch may hold; the log is kept"
    )]
    CheckpointTooLarge { entries: usize, max: usize },
    /// A checkpoint waited too long for the log to be durable up to the LSN it covers.
    #[error("the log did not become durable up to LSN {0} in time for a checkpoint")]
    NotDurable(u64),
    /// The write-ahead log writer thread is gone (it only stops at shutdown).
    #[error("storage I/O failed: the write-ahead log writer has stopped")]
    WriterStopped,
    /// A test's fault file exists: every write fails.
    #[error("storage write failed: injected fault ({} exists)", .0.display())]
    Injected(PathBuf),
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
    /// A shard's checkpoint entries do not decode or do not restore into an engine.
    #[error("{}: checkpoint of shard {shard}: {reason}", path.display())]
    Checkpoint {
        path: PathBuf,
        shard: u32,
        reason: String,
    },
    /// A log cannot be read back: damage before its end names the file and offset.
    #[error(
        "{}: log {log}: {source}; refusing to start rather than lose acknowledged changes",
        path.display()
    )]
    Log {
        path: PathBuf,
        log: u32,
        source: LogError,
    },
    /// A shared log's record is not where it belongs: no tag, a shard of another log, or
    /// a sequence that skips or repeats one.
    #[error(
        "{}: log {log} record {lsn}: {reason}; refusing to start rather than lose acknowledged changes",
        path.display()
    )]
    Misplaced {
        path: PathBuf,
        log: u32,
        lsn: u64,
        reason: String,
    },
    /// A shard's records after its checkpoint are not all in its log.
    #[error(
        "{}: shard {shard}: its checkpoint covers record {covered}, but the log's next record of it is {found}; refusing to start rather than lose acknowledged changes",
        path.display()
    )]
    Missing {
        path: PathBuf,
        shard: u32,
        covered: u64,
        found: u64,
    },
    /// A log record passed the log's checksum but does not decode.
    #[error("{}: shard {shard} log record {lsn} does not decode: {reason}", path.display())]
    DamagedRecord {
        path: PathBuf,
        shard: u32,
        lsn: u64,
        reason: String,
    },
    /// A record decodes but the engine refuses it: the log and the code disagree.
    #[error("{}: shard {shard} log record {lsn} does not replay: {source}", path.display())]
    Replay {
        path: PathBuf,
        shard: u32,
        lsn: u64,
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
