//! The sled database behind every shard: key layout and the operations on it.
//!
//! One sled tree holds everything, so that a snapshot and the removal of the log behind
//! it are one atomic batch. Keys:
//! - `L` shard(u32) seq(u64): a write-ahead record of one shard, in order;
//! - `S` shard(u32) chunk(u32): a chunk of a shard's snapshot;
//! - `T` shard(u32): the snapshot's header (which log sequence it covers, how many chunks);
//! - `M shards`: the number of shards that wrote the log.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record;

/// Largest snapshot chunk: sled keeps values whole in memory while writing them.
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 << 20;

const TREE: &str = "stockd";
const META_SHARDS: &[u8] = b"Mshards";

/// A storage failure; the service answers UNAVAILABLE for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("storage write failed: injected fault ({0} exists)")]
    Injected(PathBuf),
}

impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        StorageError::Io(e.to_string())
    }
}

/// Header of a stored snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Every log record of the shard with a lower sequence number is in the snapshot.
    pub covers_seq: u64,
    pub chunks: u32,
    pub bytes: u64,
}

pub fn log_key(shard: u32, seq: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = b'L';
    k[1..5].copy_from_slice(&shard.to_be_bytes());
    k[5..13].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn log_seq(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[5..13].try_into().expect("log keys are 13 bytes"))
}

fn shard_prefix(tag: u8, shard: u32) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[0] = tag;
    k[1..5].copy_from_slice(&shard.to_be_bytes());
    k
}

fn chunk_key(shard: u32, chunk: u32) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'S';
    k[1..5].copy_from_slice(&shard.to_be_bytes());
    k[5..9].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// The opened database.
#[derive(Clone)]
pub struct Store {
    pub db: sled::Db,
    pub tree: sled::Tree,
    pub path: PathBuf,
}

impl Store {
    /// Opens (or creates) the database under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, String> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create data folder {}: {e}", data_dir.display()))?;
        let path = data_dir.join("sled");
        let db = sled::Config::new()
            .path(&path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let tree = db
            .open_tree(TREE)
            .map_err(|e| format!("cannot open tree in {}: {e}", path.display()))?;
        Ok(Store { db, tree, path })
    }

    /// The shard count that wrote the log, if any was written.
    pub fn shards(&self) -> Result<Option<u32>, String> {
        let v = self.tree.get(META_SHARDS).map_err(|e| e.to_string())?;
        Ok(v.map(|v| u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4]))))
    }

    /// Records the shard count (alone, for a fresh folder).
    pub fn set_shards(&self, shards: u32) -> Result<(), String> {
        self.tree
            .insert(META_SHARDS, &shards.to_be_bytes())
            .map_err(|e| e.to_string())?;
        self.db.flush().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Reads a shard's snapshot, checked. `Ok(None)`: the shard has none.
    pub fn read_snapshot(&self, shard: u32) -> Result<Option<(SnapshotHeader, Vec<u8>)>, String> {
        let where_ =
            |what: &str| format!("{}: snapshot of shard {shard}: {what}", self.path.display());
        let Some(header) = self
            .tree
            .get(shard_prefix(b'T', shard))
            .map_err(|e| where_(&e.to_string()))?
        else {
            return Ok(None);
        };
        let header: SnapshotHeader =
            record::decode(&header).map_err(|e| where_(&format!("header: {e}")))?;
        let mut bytes = Vec::with_capacity(header.bytes as usize);
        for chunk in 0..header.chunks {
            let part = self
                .tree
                .get(chunk_key(shard, chunk))
                .map_err(|e| where_(&e.to_string()))?
                .ok_or_else(|| where_(&format!("chunk {chunk} is missing")))?;
            bytes.extend_from_slice(&part);
        }
        record::check(&bytes).map_err(|e| where_(&e.to_string()))?;
        Ok(Some((header, bytes)))
    }

    /// Adds `payload` (an encoded record) to `batch` as the snapshot of `shard` covering
    /// the log below `covers_seq`. Returns the number of chunks.
    pub fn put_snapshot(
        batch: &mut sled::Batch,
        shard: u32,
        covers_seq: u64,
        payload: &[u8],
    ) -> u32 {
        record::check(payload).expect("a snapshot is checked right before it is written");
        let mut chunks = 0u32;
        for (i, chunk) in payload.chunks(SNAPSHOT_CHUNK_BYTES).enumerate() {
            batch.insert(&chunk_key(shard, i as u32), chunk);
            chunks += 1;
        }
        let header = SnapshotHeader {
            covers_seq,
            chunks,
            bytes: payload.len() as u64,
        };
        batch.insert(&shard_prefix(b'T', shard), record::encode(&header));
        chunks
    }

    /// The batch that stores a snapshot of `shard` covering the log below `covers_seq`,
    /// and removes that log and the chunks of any older, longer snapshot.
    pub fn snapshot_batch(
        &self,
        shard: u32,
        covers_seq: u64,
        payload: &[u8],
    ) -> Result<sled::Batch, StorageError> {
        let mut batch = sled::Batch::default();
        let chunks = Self::put_snapshot(&mut batch, shard, covers_seq, payload);
        for key in self.tree.scan_prefix(shard_prefix(b'S', shard)).keys() {
            let key = key?;
            let index = u32::from_be_bytes(key[5..9].try_into().expect("chunk keys are 9 bytes"));
            if index >= chunks {
                batch.remove(key);
            }
        }
        for key in self
            .tree
            .range(log_key(shard, 0)..log_key(shard, covers_seq))
            .keys()
        {
            batch.remove(key?);
        }
        Ok(batch)
    }

    /// Every log record of a shard, in order: (sequence, bytes).
    pub fn log(&self, shard: u32) -> impl Iterator<Item = Result<(u64, sled::IVec), String>> + '_ {
        self.tree
            .scan_prefix(shard_prefix(b'L', shard))
            .map(|item| {
                item.map(|(k, v)| (log_seq(&k), v))
                    .map_err(|e| e.to_string())
            })
    }

    /// Removes everything of shards `0..shards` (after their state moved to a new layout).
    pub fn clear_shards_batch(&self, shards: u32, batch: &mut sled::Batch) -> Result<(), String> {
        for shard in 0..shards {
            for tag in [b'L', b'S', b'T'] {
                for key in self.tree.scan_prefix(shard_prefix(tag, shard)).keys() {
                    batch.remove(key.map_err(|e| e.to_string())?);
                }
            }
        }
        Ok(())
    }

    pub fn shards_entry(shards: u32, batch: &mut sled::Batch) {
        batch.insert(META_SHARDS, &shards.to_be_bytes());
    }
}
