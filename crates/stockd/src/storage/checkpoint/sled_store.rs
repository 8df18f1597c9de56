//! The real checkpoint store: one sled tree, one atomic batch per checkpoint, and the
//! fsyncs that sled itself does not do.
//!
//! sled's `flush` ends in `sync_file_range`, which writes the pages but neither the file's
//! metadata nor the disk's volatile cache: a power cut can still lose the checkpoint. So
//! after the flush every file in the folder (`db`, `conf`, `blobs/*`, `snap.*`) is opened
//! and `sync_all`ed, then the folders themselves (new blob and snapshot names). Only then
//! does `apply` return, and only then may the log below the checkpoint be recycled.
//!
//! sled writes `conf` (its parameters and a CRC) in two writes, only when it creates the
//! folder, and never fsyncs it; a torn `conf` makes it refuse the folder. So `open` fsyncs
//! everything right after sled created it, before any checkpoint is written, and a `conf`
//! that is a torn write of the one sled would write for our parameters (a prefix of it, or
//! it with zeroed bytes) is rewritten whole before sled reads it. Any other `conf` is
//! reported, not guessed at.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::layout::{self, RawBatch, RawKv};
use super::{ApplyStats, CheckpointBatch, CheckpointError, CheckpointStore, PageVisitor, Scope};

/// The sled tree holding every checkpoint key (one tree, so one batch is atomic).
const TREE_NAME: &str = "checkpoint";

/// sled's page cache. Checkpoints are written once and read at start, so the cache only
/// serves the old-value reads of `apply`: 128 MiB keeps the hot part of a few million
/// entries without taking the memory the shards need.
const SLED_CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// Deepest folder level walked for fsync: the sled folder (0) and `blobs/` (1).
const SYNC_DEPTH_MAX: usize = 1;

/// Locks that serialize the calls on one scope, striped by scope: the shards of one
/// generation (fewer than this many) never share one, so they load and checkpoint at once.
const SCOPE_LOCK_STRIPES: usize = 64;

/// The name of sled's parameters file in its folder.
const CONF_FILE: &str = "conf";

/// The checkpoint store on sled.
pub struct SledCheckpointStore {
    kv: SledKv,
    /// Serialize the calls on one scope: an apply reads the pages it rewrites; a load must
    /// see one checkpoint. Layout records are single atomic writes and need none.
    locks: Vec<Mutex<()>>,
    conf_repaired: bool,
}

struct SledKv {
    db: sled::Db,
    tree: sled::Tree,
    folder: PathBuf,
    /// Set when a write, flush or fsync failed: sled may hold part of the batch in memory
    /// and the page cache may have dropped dirty pages, so no later write is trusted.
    poisoned: AtomicBool,
}

/// Files and folders fsynced by one walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Synced {
    files: u32,
    dirs: u32,
}

fn io_error(folder: &Path, doing: &str, error: impl ToString) -> CheckpointError {
    CheckpointError::Io {
        folder: folder.to_path_buf(),
        doing: doing.to_string(),
        error: error.to_string(),
    }
}

impl SledCheckpointStore {
    /// Opens (or creates) the store in `folder`, a folder of its own, and makes what sled
    /// created there durable before anything is written.
    pub fn open(folder: &Path) -> Result<SledCheckpointStore, CheckpointError> {
        fs::create_dir_all(folder).map_err(|e| io_error(folder, "creating the folder", e))?;
        let config = sled::Config::new()
            .path(folder)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(SLED_CACHE_BYTES);
        let conf_repaired = guard_conf(folder, &config)?;
        let db = config
            .open()
            .map_err(|e| io_error(folder, "opening sled", e))?;
        let tree = db
            .open_tree(TREE_NAME)
            .map_err(|e| io_error(folder, "opening the checkpoint tree", e))?;
        db.flush()
            .map_err(|e| io_error(folder, "flushing sled", e))?;
        sync_folder(folder).map_err(|e| io_error(folder, "fsyncing after open", e))?;
        if let Some(parent) = folder.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent).map_err(|e| io_error(folder, "fsyncing the parent folder", e))?;
        }
        Ok(SledCheckpointStore {
            kv: SledKv {
                db,
                tree,
                folder: folder.to_path_buf(),
                poisoned: AtomicBool::new(false),
            },
            locks: (0..SCOPE_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            conf_repaired,
        })
    }

    /// The folder, named in every error.
    pub fn folder(&self) -> &Path {
        &self.kv.folder
    }

    /// Whether `open` found a torn `conf` and rewrote it (log it as a repair).
    pub fn conf_repaired(&self) -> bool {
        self.conf_repaired
    }

    /// The sled tree, for damage tests that write under the framing.
    #[cfg(test)]
    pub(crate) fn raw_tree(&self) -> &sled::Tree {
        &self.kv.tree
    }

    fn serialized(&self, scope: Scope) -> MutexGuard<'_, ()> {
        let stripe = (scope.generation as usize)
            .wrapping_mul(31)
            .wrapping_add(scope.shard as usize)
            % SCOPE_LOCK_STRIPES;
        // A panic inside a call (an assertion) leaves sled whole: its batch is atomic.
        self.locks[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl CheckpointStore for SledCheckpointStore {
    fn apply(&self, batch: &CheckpointBatch) -> Result<ApplyStats, CheckpointError> {
        let _serial = self.serialized(batch.scope);
        layout::apply(&self.kv, batch)
    }

    fn load_each(
        &self,
        scope: Scope,
        visitor: &mut dyn PageVisitor,
    ) -> Result<Option<u64>, CheckpointError> {
        let _serial = self.serialized(scope);
        layout::load_each(&self.kv, scope, visitor)
    }

    fn scopes(&self) -> Result<Vec<Scope>, CheckpointError> {
        layout::scopes(&self.kv)
    }

    fn remove_scope(&self, scope: Scope) -> Result<ApplyStats, CheckpointError> {
        let _serial = self.serialized(scope);
        layout::remove_scope(&self.kv, scope)
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, CheckpointError> {
        layout::get_meta(&self.kv, name)
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<ApplyStats, CheckpointError> {
        layout::put_meta(&self.kv, name, value)
    }
}

impl RawKv for SledKv {
    fn folder(&self) -> &Path {
        &self.folder
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, CheckpointError> {
        self.tree
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| io_error(&self.folder, "reading", e))
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), CheckpointError> {
        for item in self.tree.scan_prefix(prefix) {
            let (key, value) = item.map_err(|e| io_error(&self.folder, "scanning", e))?;
            if !visit(&key, &value) {
                break;
            }
        }
        Ok(())
    }

    fn commit(&self, raw: RawBatch) -> Result<ApplyStats, CheckpointError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(CheckpointError::Poisoned {
                folder: self.folder.clone(),
            });
        }
        let committed = self.write_durably(raw);
        if committed.is_err() {
            self.poisoned.store(true, Ordering::Release);
        }
        committed
    }
}

impl SledKv {
    /// One atomic batch, sled's flush, then the fsyncs.
    fn write_durably(&self, raw: RawBatch) -> Result<ApplyStats, CheckpointError> {
        let mut batch = sled::Batch::default();
        for (key, value) in raw.puts {
            batch.insert(key, value);
        }
        for key in raw.removes {
            batch.remove(key);
        }
        let mut stats = ApplyStats::default();
        let started = Instant::now();
        self.tree
            .apply_batch(batch)
            .map_err(|e| io_error(&self.folder, "writing the checkpoint batch", e))?;
        stats.write = started.elapsed();
        let flushing = Instant::now();
        self.db
            .flush()
            .map_err(|e| io_error(&self.folder, "flushing sled", e))?;
        stats.flush = flushing.elapsed();
        let syncing = Instant::now();
        let synced = sync_folder(&self.folder)
            .map_err(|e| io_error(&self.folder, "fsyncing sled's files", e))?;
        stats.sync = syncing.elapsed();
        stats.files_synced = synced.files;
        stats.dirs_synced = synced.dirs;
        Ok(stats)
    }
}

/// fsyncs every file of the sled folder and of its subfolders, then the folders.
fn sync_folder(folder: &Path) -> io::Result<Synced> {
    let mut synced = Synced::default();
    sync_tree(folder, 0, &mut synced)?;
    Ok(synced)
}

fn sync_tree(dir: &Path, depth: usize, synced: &mut Synced) -> io::Result<()> {
    for item in fs::read_dir(dir)? {
        let item = item?;
        let kind = item.file_type()?;
        let path = item.path();
        if kind.is_dir() {
            if depth < SYNC_DEPTH_MAX {
                sync_tree(&path, depth + 1, synced)?;
            }
        } else if kind.is_file() {
            // sled removes old blobs and snapshots on its own threads: one gone between
            // the listing and the open needs no sync.
            match File::open(&path) {
                Ok(file) => file.sync_all()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            synced.files += 1;
        }
    }
    sync_dir(dir)?;
    synced.dirs += 1;
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The bytes sled writes to `conf` for `config` (sled 0.34 `StorageParameters`): three
/// lines, then the CRC32 (IEEE) of them, little-endian.
fn expected_conf(config: &sled::Config) -> Vec<u8> {
    let text = format!(
        "segment_size: {}\nuse_compression: {}\nversion: {}.{}\n",
        config.segment_size, config.use_compression, config.version.0, config.version.1
    );
    let mut bytes = text.into_bytes();
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Before sled reads `conf`: rewrites a torn one whole. Returns whether it did.
fn guard_conf(folder: &Path, config: &sled::Config) -> Result<bool, CheckpointError> {
    let path = folder.join(CONF_FILE);
    let found = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_error(folder, "reading sled's conf", e)),
    };
    let expected = expected_conf(config);
    if found == expected {
        return Ok(false);
    }
    let torn = found.len() <= expected.len()
        && found.iter().zip(&expected).all(|(f, e)| f == e || *f == 0);
    if !torn {
        return Err(CheckpointError::ConfDamaged {
            folder: folder.to_path_buf(),
            what: format!(
                "{} bytes {:?}, expected {:?}",
                found.len(),
                String::from_utf8_lossy(&found),
                String::from_utf8_lossy(&expected)
            ),
        });
    }
    let tmp = folder.join("conf.tmp");
    let rewrite = || -> io::Result<()> {
        let mut out = File::create(&tmp)?;
        out.write_all(&expected)?;
        out.sync_all()?;
        drop(out);
        fs::rename(&tmp, &path)?;
        sync_dir(folder)
    };
    rewrite().map_err(|e| io_error(folder, "rewriting a torn conf", e))?;
    Ok(true)
}

#[cfg(test)]
pub(crate) fn expected_conf_for_tests(folder: &Path) -> Vec<u8> {
    expected_conf(&sled::Config::new().path(folder))
}
