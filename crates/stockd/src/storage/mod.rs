//! Durability: the write-ahead log in sled, snapshots, and recovery at start.
//!
//! - `record`: the checksummed, versioned record format.
//! - `store`: the sled key layout.
//! - `wal`: the writer thread and its group commit.
//! - `recovery`: snapshot + replay, shard-count changes, repairs after a crash.

pub mod log;
pub mod record;
pub mod recovery;
pub mod store;
pub mod wal;

pub use store::{StorageError, Store};
pub use wal::{Durability, Wal};
