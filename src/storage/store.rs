//! The sled database behind every shard: key layout and the operations on it.
//!
//! Two trees keep small hot records apart from large cold ones: sled rewrites a leaf page
//! whole, so a log record inserted beside megabyte snapshot chunks would copy them.
//! - `log`: `generation(u32) shard(u32) seq(u64)` → a write-ahead record of one shard;
//! - `snapshots`: `generation(u32) 'T' shard(u32)` → the snapshot header (which log
//!   sequence it covers, how many chunks), and `generation(u32) 'S' shard(u32) chunk(u32)`
//!   → a chunk of the snapshot;
//! - `snapshots` also holds `meta`: the current generation and its shard count.
//!
//! A generation is one shard layout. Changing the shard count writes the new layout under
//! the next generation, then flips `meta` with one insert, then removes the old one, so a
//! crash at any point leaves one whole layout.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record;

/// Largest snapshot chunk stored as one sled value.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

const META: &[u8] = b"meta";

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

/// The layout in use.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    pub generation: u32,
    pub shards: u32,
}

fn log_prefix(generation: u32, shard: u32) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[0..4].copy_from_slice(&generation.to_be_bytes());
    k[4..8].copy_from_slice(&shard.to_be_bytes());
    k
}

/// The key of a log record.
pub fn log_key(generation: u32, shard: u32, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[0..8].copy_from_slice(&log_prefix(generation, shard));
    k[8..16].copy_from_slice(&seq.to_be_bytes());
    k
}

fn log_seq(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[8..16].try_into().expect("log keys are 16 bytes"))
}

fn header_key(generation: u32, shard: u32) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0..4].copy_from_slice(&generation.to_be_bytes());
    k[4] = b'T';
    k[5..9].copy_from_slice(&shard.to_be_bytes());
    k
}

fn chunk_prefix(generation: u32, shard: u32) -> [u8; 9] {
    let mut k = header_key(generation, shard);
    k[4] = b'S';
    k
}

fn chunk_key(generation: u32, shard: u32, chunk: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0..9].copy_from_slice(&chunk_prefix(generation, shard));
    k[9..13].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// The opened database.
#[derive(Clone)]
pub struct Store {
    pub db: sled::Db,
    pub log: sled::Tree,
    pub snapshots: sled::Tree,
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
        let open = |name: &str| {
            db.open_tree(name)
                .map_err(|e| format!("cannot open tree {name} in {}: {e}", path.display()))
        };
        Ok(Store {
            log: open("log")?,
            snapshots: open("snapshots")?,
            db: db.clone(),
            path,
        })
    }

    /// The layout in use, if anything was ever written.
    pub fn meta(&self) -> Result<Option<Meta>, String> {
        let Some(v) = self.snapshots.get(META).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        record::decode(&v)
            .map(Some)
            .map_err(|e| format!("{}: layout record: {e}", self.path.display()))
    }

    /// Records the layout in use and makes it durable.
    pub fn set_meta(&self, meta: Meta) -> Result<(), String> {
        self.snapshots
            .insert(META, record::encode(&meta))
            .map_err(|e| e.to_string())?;
        self.db.flush().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Reads a shard's snapshot, checked. `Ok(None)`: the shard has none.
    pub fn read_snapshot(
        &self,
        generation: u32,
        shard: u32,
    ) -> Result<Option<(SnapshotHeader, Vec<u8>)>, String> {
        let where_ =
            |what: &str| format!("{}: snapshot of shard {shard}: {what}", self.path.display());
        let Some(header) = self
            .snapshots
            .get(header_key(generation, shard))
            .map_err(|e| where_(&e.to_string()))?
        else {
            return Ok(None);
        };
        let header: SnapshotHeader =
            record::decode(&header).map_err(|e| where_(&format!("header: {e}")))?;
        let mut bytes = Vec::with_capacity(header.bytes as usize);
        for chunk in 0..header.chunks {
            let part = self
                .snapshots
                .get(chunk_key(generation, shard, chunk))
                .map_err(|e| where_(&e.to_string()))?
                .ok_or_else(|| where_(&format!("chunk {chunk} is missing")))?;
            bytes.extend_from_slice(&part);
        }
        record::check(&bytes).map_err(|e| where_(&e.to_string()))?;
        Ok(Some((header, bytes)))
    }

    /// Stores `payload` (an encoded record) as the snapshot of `shard` covering the log
    /// below `covers_seq`, replacing any older one in one batch. The log it covers is
    /// removed separately by `trim_log`, after this is durable.
    pub fn write_snapshot(
        &self,
        generation: u32,
        shard: u32,
        covers_seq: u64,
        payload: &[u8],
    ) -> Result<(), StorageError> {
        record::check(payload).expect("a snapshot is checked right before it is written");
        let mut batch = sled::Batch::default();
        let mut chunks = 0u32;
        for (i, chunk) in payload.chunks(SNAPSHOT_CHUNK_BYTES).enumerate() {
            batch.insert(&chunk_key(generation, shard, i as u32), chunk);
            chunks += 1;
        }
        for key in self
            .snapshots
            .scan_prefix(chunk_prefix(generation, shard))
            .keys()
        {
            let key = key?;
            let index = u32::from_be_bytes(key[9..13].try_into().expect("chunk keys are 13 bytes"));
            if index >= chunks {
                batch.remove(key);
            }
        }
        let header = SnapshotHeader {
            covers_seq,
            chunks,
            bytes: payload.len() as u64,
        };
        batch.insert(&header_key(generation, shard), record::encode(&header));
        self.snapshots.apply_batch(batch)?;
        Ok(())
    }

    /// Removes a shard's log records below `covers_seq` (a durable snapshot covers them).
    pub fn trim_log(
        &self,
        generation: u32,
        shard: u32,
        covers_seq: u64,
    ) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for key in self
            .log
            .range(log_key(generation, shard, 0)..log_key(generation, shard, covers_seq))
            .keys()
        {
            batch.remove(key?);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }

    /// Every log record of a shard, in order: (sequence, bytes).
    pub fn read_log(
        &self,
        generation: u32,
        shard: u32,
    ) -> impl Iterator<Item = Result<(u64, sled::IVec), String>> + '_ {
        self.log
            .scan_prefix(log_prefix(generation, shard))
            .map(|item| {
                item.map(|(k, v)| (log_seq(&k), v))
                    .map_err(|e| e.to_string())
            })
    }

    /// Removes one log record (a damaged tail record that was never acknowledged).
    pub fn remove_log_record(&self, generation: u32, shard: u32, seq: u64) -> Result<(), String> {
        self.log
            .remove(log_key(generation, shard, seq))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Removes everything of a generation (after a newer one replaced it).
    pub fn remove_generation(&self, generation: u32) -> Result<(), String> {
        let prefix = generation.to_be_bytes();
        for tree in [&self.log, &self.snapshots] {
            let mut batch = sled::Batch::default();
            for key in tree.scan_prefix(prefix).keys() {
                batch.remove(key.map_err(|e| e.to_string())?);
            }
            tree.apply_batch(batch).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
