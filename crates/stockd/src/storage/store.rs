//! The data folder: the write-ahead log in sled, snapshots as files, and their layout.
//!
//! - sled tree `log`: `generation(u32) shard(u32) seq(u64)` → a write-ahead record of one
//!   shard;
//! - sled tree `meta`: the current generation and its shard count;
//! - `snapshots/g{generation}-s{shard}.snapshot`: a shard's snapshot, written to a
//!   temporary file, synced and renamed into place, so it is whole or absent. Snapshots
//!   are files rather than sled values so that writing megabytes of them never delays the
//!   log's group commit.
//!
//! A generation is one shard layout. Changing the shard count writes the new layout under
//! the next generation, then flips `meta` with one insert, then removes the old one, so a
//! crash at any point leaves one whole layout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use super::error::StorageError;
use super::record;

const META: &[u8] = b"meta";

/// Header of a stored snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Every log record of the shard with a lower sequence number is in the snapshot.
    pub covers_seq: u64,
    /// Length of the snapshot record after the header.
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

/// The opened database.
#[derive(Clone)]
pub struct Store {
    pub db: sled::Db,
    pub log: sled::Tree,
    pub meta: sled::Tree,
    /// The sled folder (named in error messages).
    pub path: PathBuf,
    /// The folder of snapshot files.
    pub snapshot_dir: PathBuf,
}

impl Store {
    /// Opens (or creates) the database under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StorageError> {
        let open_err = |action, path: &Path, source: Arc<dyn std::error::Error + Send + Sync>| {
            StorageError::Open {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        std::fs::create_dir_all(data_dir)
            .map_err(|e| open_err("create data folder", data_dir, Arc::new(e)))?;
        let path = data_dir.join("sled");
        let db = sled::Config::new()
            .path(&path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| open_err("open", &path, Arc::new(e)))?;
        let open = |tree: &'static str| {
            db.open_tree(tree).map_err(|e| StorageError::OpenTree {
                tree,
                path: path.clone(),
                source: Arc::new(e),
            })
        };
        let snapshot_dir = data_dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir)
            .map_err(|e| open_err("create", &snapshot_dir, Arc::new(e)))?;
        Ok(Store {
            log: open("log")?,
            meta: open("meta")?,
            db: db.clone(),
            path,
            snapshot_dir,
        })
    }

    /// The layout in use, if anything was ever written.
    pub fn meta(&self) -> Result<Option<Meta>, StorageError> {
        let Some(v) = self.meta.get(META)? else {
            return Ok(None);
        };
        record::decode(&v)
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                path: self.path.clone(),
                what: "layout record",
                reason: e.to_string(),
            })
    }

    /// Records the layout in use and makes it durable.
    pub fn set_meta(&self, meta: Meta) -> Result<(), StorageError> {
        self.meta.insert(META, record::encode(&meta))?;
        self.db.flush()?;
        Ok(())
    }

    /// The file of a shard's snapshot.
    pub fn snapshot_file(&self, generation: u32, shard: u32) -> PathBuf {
        self.snapshot_dir
            .join(format!("g{generation}-s{shard}.snapshot"))
    }

    /// Reads a shard's snapshot, checked. `Ok(None)`: the shard has none.
    pub fn read_snapshot(
        &self,
        generation: u32,
        shard: u32,
    ) -> Result<Option<(SnapshotHeader, Vec<u8>)>, StorageError> {
        let file = self.snapshot_file(generation, shard);
        let damaged = |reason: String| StorageError::Corrupt {
            path: file.clone(),
            what: "snapshot",
            reason,
        };
        let bytes = match std::fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::file(&file, e)),
        };
        let short = || damaged("shorter than its header".into());
        if bytes.len() < 4 {
            return Err(short());
        }
        let header_len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
        let body = bytes.get(4 + header_len..).ok_or_else(short)?;
        let header: SnapshotHeader = record::decode(&bytes[4..4 + header_len])
            .map_err(|e| damaged(format!("header: {e}")))?;
        if body.len() as u64 != header.bytes {
            return Err(damaged(format!(
                "holds {} bytes where its header says {}",
                body.len(),
                header.bytes
            )));
        }
        record::check(body).map_err(|e| damaged(e.to_string()))?;
        Ok(Some((header, body.to_vec())))
    }

    /// Stores `payload` (an encoded record) as the snapshot of `shard` covering the log
    /// below `covers_seq`: written to a temporary file, synced, renamed over the old one.
    /// The log it covers is removed separately by `trim_log`, once this returned.
    pub fn write_snapshot(
        &self,
        generation: u32,
        shard: u32,
        covers_seq: u64,
        payload: &[u8],
    ) -> Result<(), StorageError> {
        use std::io::Write;
        record::check(payload).expect("a snapshot is checked right before it is written");
        let header = record::encode(&SnapshotHeader {
            covers_seq,
            bytes: payload.len() as u64,
        });
        let file = self.snapshot_file(generation, shard);
        let tmp = file.with_extension("snapshot.tmp");
        let io = |e: std::io::Error| StorageError::file(&tmp, e);
        let mut out = std::fs::File::create(&tmp).map_err(io)?;
        out.write_all(&(header.len() as u32).to_le_bytes())
            .map_err(io)?;
        out.write_all(&header).map_err(io)?;
        out.write_all(payload).map_err(io)?;
        out.sync_all().map_err(io)?;
        drop(out);
        std::fs::rename(&tmp, &file).map_err(io)?;
        std::fs::File::open(&self.snapshot_dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
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
    ) -> impl Iterator<Item = Result<(u64, sled::IVec), StorageError>> + '_ {
        self.log
            .scan_prefix(log_prefix(generation, shard))
            .map(|item| item.map(|(k, v)| (log_seq(&k), v)).map_err(Into::into))
    }

    /// Removes one log record (a damaged tail record that was never acknowledged).
    pub fn remove_log_record(
        &self,
        generation: u32,
        shard: u32,
        seq: u64,
    ) -> Result<(), StorageError> {
        self.log.remove(log_key(generation, shard, seq))?;
        Ok(())
    }

    /// Removes everything of a generation (after a newer one replaced it).
    pub fn remove_generation(&self, generation: u32) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for key in self.log.scan_prefix(generation.to_be_bytes()).keys() {
            batch.remove(key?);
        }
        self.log.apply_batch(batch)?;
        let prefix = format!("g{generation}-");
        let entries = std::fs::read_dir(&self.snapshot_dir)
            .map_err(|e| StorageError::file(&self.snapshot_dir, e))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                std::fs::remove_file(entry.path())
                    .map_err(|e| StorageError::file(entry.path(), e))?;
            }
        }
        Ok(())
    }
}
