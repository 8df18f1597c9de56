//! Durability: the write-ahead log in sled, snapshots, and recovery at start.
//!
//! - `checkpoint`: the durable state store (sled, fsynced) behind `CheckpointStore`.
//! - `error`: `StorageError` and `RecoveryError`, typed and named by folder, shard, record.
//! - `log`: the segment write-ahead log with real fdatasync group commit, behind `LogDir`.
//! - `record`: the checksummed, versioned record format.
//! - `store`: the sled key layout.
//! - `wal`: the writer thread and its group commit.
//! - `recovery`: snapshot + replay, shard-count changes, repairs after a crash.

pub mod checkpoint;
pub mod error;
pub mod log;
pub mod record;
pub mod recovery;
pub mod store;
pub mod wal;

pub use error::{RecoveryError, StorageError};
pub use store::Store;
pub use wal::{Durability, Wal};
