//! Durability: per-shard segment logs, checkpoints into sled, and recovery at start.
//!
//! - `backend`: `StorageBackend` (real data folder or simulation) and the opened `Storage`.
//! - `checkpoint`: the durable state store (sled, fsynced) behind `CheckpointStore`.
//! - `checkpointer`: a shard's changed entries as a checkpoint batch, written off the shard.
//! - `events`: the durable event log (global sequence, retention, readers, live feed).
//! - `error`: `StorageError` and `RecoveryError`, typed and named by folder, shard, record.
//! - `log`: the segment write-ahead log with real fdatasync group commit, behind `LogDir`.
//! - `pages`: transparent huge pages off while recovery builds the engines (`SmallPages`).
//! - `record`: the checksummed, versioned record format.
//! - `wal`: a shard's handle to its log writer (`ShardLog`) and `Durability`.
//! - `recovery`: checkpoint + replay, shard-count changes, then the repairs.
//! - `repair`: what a crash between the shards of one hold or order cut in two, made whole.

pub mod backend;
pub mod checkpoint;
pub mod checkpointer;
pub mod error;
pub mod events;
pub mod log;
mod pages;
pub mod record;
pub mod recovery;
mod repair;
pub mod wal;

pub use backend::{Storage, StorageBackend};
pub use error::{RecoveryError, StorageError};
pub use wal::{Durability, ShardLog};
