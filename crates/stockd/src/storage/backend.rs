//! Where the data lives: the real data folder, or a simulated disk and store for tests.
//!
//! `StorageBackend` is what `ServerConfig` carries; `Storage` is the opened form: the
//! checkpoint store behind `Arc<dyn CheckpointStore>` and a factory of per-shard log
//! directories. `AnyDir` lets the rest of the server stay free of the `LogDir` generic.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checkpoint::{CheckpointStore, SimStore, SledCheckpointStore};
use super::error::StorageError;
use super::log::sim::{SimDir, SimFile};
use super::log::{FsDir, FsFile, LogConfig, LogDir, LogFile};

/// Which storage a server uses.
#[derive(Clone, Default)]
pub enum StorageBackend {
    /// `data/log/g{generation}-l{log}/` segment logs and `data/checkpoints` (sled).
    #[default]
    Real,
    /// A simulated disk for the logs and a simulated checkpoint store (power-cut tests).
    Sim {
        disk: super::log::sim::SimDisk,
        store: Arc<SimStore>,
    },
}

impl std::fmt::Debug for StorageBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageBackend::Real => f.write_str("Real"),
            StorageBackend::Sim { .. } => f.write_str("Sim"),
        }
    }
}

/// The opened storage of one server.
#[derive(Clone)]
pub struct Storage {
    pub checkpoints: Arc<dyn CheckpointStore>,
    logs: Logs,
    /// The data folder (named in messages; unused by the simulation).
    pub data_dir: PathBuf,
    /// The sizes of every shard's log.
    pub log_config: LogConfig,
}

#[derive(Clone)]
enum Logs {
    Fs(PathBuf),
    Sim(super::log::sim::SimDisk),
}

/// The folder name of one log (shared by the shards `s` with `s % logs == log`) within `data/log`.
pub fn log_dir_name(generation: u32, log: u32) -> String {
    format!("g{generation}-l{log}")
}

impl Storage {
    /// Opens the backend. The real one refuses a data folder of the older format.
    pub fn open(
        backend: &StorageBackend,
        data_dir: &Path,
        log_config: LogConfig,
    ) -> Result<Storage, StorageError> {
        match backend {
            StorageBackend::Real => {
                let old = data_dir.join("sled");
                if old.exists() {
                    return Err(StorageError::OldFormat(old));
                }
                std::fs::create_dir_all(data_dir).map_err(|e| StorageError::file(data_dir, e))?;
                let store = SledCheckpointStore::open(&data_dir.join("checkpoints"))?;
                Ok(Storage {
                    checkpoints: Arc::new(store),
                    logs: Logs::Fs(data_dir.join("log")),
                    data_dir: data_dir.to_path_buf(),
                    log_config,
                })
            }
            StorageBackend::Sim { disk, store } => Ok(Storage {
                checkpoints: store.clone(),
                logs: Logs::Sim(disk.clone()),
                data_dir: data_dir.to_path_buf(),
                log_config,
            }),
        }
    }

    /// The directory of one log of one generation, created if absent.
    pub fn log_dir(&self, generation: u32, log: u32) -> Result<AnyDir, StorageError> {
        let name = log_dir_name(generation, log);
        match &self.logs {
            Logs::Fs(root) => {
                let path = root.join(&name);
                FsDir::open(&path)
                    .map(AnyDir::Fs)
                    .map_err(|e| StorageError::file(path, e))
            }
            Logs::Sim(disk) => Ok(AnyDir::Sim(disk.dir(&name))),
        }
    }

    /// The event log's directory (`data/events`, not tied to a generation), created if absent.
    pub fn events_dir(&self) -> Result<AnyDir, StorageError> {
        match &self.logs {
            Logs::Fs(_) => {
                let path = self.data_dir.join("events");
                FsDir::open(&path)
                    .map(AnyDir::Fs)
                    .map_err(|e| StorageError::file(path, e))
            }
            Logs::Sim(disk) => Ok(AnyDir::Sim(disk.dir("events"))),
        }
    }

    /// Removes every file of one log (after a newer generation replaced it).
    pub fn remove_log(&self, generation: u32, log: u32) -> Result<(), StorageError> {
        let dir = self.log_dir(generation, log)?;
        let fail = |e: io::Error| StorageError::file(dir.describe(""), e);
        for name in dir.list().map_err(fail)? {
            dir.remove(&name).map_err(fail)?;
        }
        dir.sync_dir().map_err(fail)?;
        if let AnyDir::Fs(fs) = &dir {
            std::fs::remove_dir(fs.path()).map_err(fail)?;
        }
        Ok(())
    }
}

/// A log directory on either backend.
pub enum AnyDir {
    Fs(FsDir),
    Sim(SimDir),
}

/// A log file on either backend.
pub enum AnyFile {
    Fs(FsFile),
    Sim(SimFile),
}

macro_rules! both {
    ($self:expr, $x:ident => $e:expr) => {
        match $self {
            AnyFile::Fs($x) => $e,
            AnyFile::Sim($x) => $e,
        }
    };
}

impl LogFile for AnyFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        both!(self, f => f.read_at(offset, buf))
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        both!(self, f => f.write_at(offset, buf))
    }
    fn sync_data(&mut self) -> io::Result<()> {
        both!(self, f => f.sync_data())
    }
    fn write_durable_at(
        &mut self,
        offset: u64,
        buf: &[u8],
    ) -> Result<(), (&'static str, io::Error)> {
        both!(self, f => f.write_durable_at(offset, buf))
    }
    fn len(&self) -> io::Result<u64> {
        both!(self, f => f.len())
    }
    fn allocate(&mut self, len: u64) -> io::Result<()> {
        both!(self, f => f.allocate(len))
    }
}

macro_rules! dir {
    ($self:expr, $x:ident => $e:expr) => {
        match $self {
            AnyDir::Fs($x) => $e,
            AnyDir::Sim($x) => $e,
        }
    };
}

impl LogDir for AnyDir {
    type File = AnyFile;
    fn create(&self, name: &str) -> io::Result<AnyFile> {
        match self {
            AnyDir::Fs(d) => d.create(name).map(AnyFile::Fs),
            AnyDir::Sim(d) => d.create(name).map(AnyFile::Sim),
        }
    }
    fn open(&self, name: &str) -> io::Result<AnyFile> {
        match self {
            AnyDir::Fs(d) => d.open(name).map(AnyFile::Fs),
            AnyDir::Sim(d) => d.open(name).map(AnyFile::Sim),
        }
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        dir!(self, d => d.rename(from, to))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        dir!(self, d => d.remove(name))
    }
    fn list(&self) -> io::Result<Vec<String>> {
        dir!(self, d => d.list())
    }
    fn sync_dir(&self) -> io::Result<()> {
        dir!(self, d => d.sync_dir())
    }
    fn describe(&self, name: &str) -> String {
        dir!(self, d => d.describe(name))
    }
}
