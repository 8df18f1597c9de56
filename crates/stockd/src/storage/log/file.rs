//! The few file operations the log needs, as traits, so tests can run it on a simulated disk.
//!
//! `FsDir`/`FsFile` are the real implementation: `sync_data` is `fdatasync`, and
//! `sync_dir` opens the directory and calls `fsync` on it, which makes creates, renames
//! and removes in it durable. `write_durable_at` goes through `O_DIRECT | O_DSYNC`
//! (`direct`) where the filesystem allows it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::direct::Direct;

/// Size of the zero buffer `allocate` writes with: bounds its memory and the length of
/// one write call.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// One open file of a log.
pub trait LogFile: Send {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`. Not durable until `sync_data` returns.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes every write so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Writes all of `buf` at `offset` and makes every write so far durable: `write_at`
    /// then `sync_data`, or one synchronous direct write where the file supports it. An
    /// error names the step that failed: "write" or "sync".
    fn write_durable_at(
        &mut self,
        offset: u64,
        buf: &[u8],
    ) -> Result<(), (&'static str, io::Error)> {
        self.write_at(offset, buf).map_err(|e| ("write", e))?;
        self.sync_data().map_err(|e| ("sync", e))
    }
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file has no bytes yet.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Writes zeros from the current end up to `len`, so the blocks are allocated and a
    /// later `fdatasync` of a write into them needs no metadata update. Not synced.
    fn allocate(&mut self, len: u64) -> io::Result<()>;
}

/// The directory of one log. Names are plain file names, never paths.
pub trait LogDir: Send {
    type File: LogFile;
    /// Creates a new, empty file; fails if the name exists. Durable after `sync_dir`.
    fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Self::File>;
    /// Renames a file, replacing nothing. Durable after `sync_dir`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file. Durable after `sync_dir`.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// The names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Makes every create, rename and remove so far durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// A file's full name for error messages and reports.
    fn describe(&self, name: &str) -> String;
}

/// A log directory on the real filesystem.
#[derive(Clone, Debug)]
pub struct FsDir {
    path: PathBuf,
}

impl FsDir {
    /// Opens (creating if needed) the directory of one log. A new directory is made
    /// durable in its parent before this returns.
    pub fn open(path: impl AsRef<Path>) -> io::Result<FsDir> {
        let path = path.as_ref().to_path_buf();
        if !path.is_dir() {
            fs::create_dir_all(&path)?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(FsDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl LogDir for FsDir {
    type File = FsFile;

    fn create(&self, name: &str) -> io::Result<FsFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path.join(name))?;
        Ok(FsFile::new(file, self.path.join(name)))
    }

    fn open(&self, name: &str) -> io::Result<FsFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path.join(name))?;
        Ok(FsFile::new(file, self.path.join(name)))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let to = self.path.join(to);
        if to.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", to.display()),
            ));
        }
        fs::rename(self.path.join(from), to)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path.join(name))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }

    fn describe(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }
}

/// An open segment file on the real filesystem.
pub struct FsFile {
    file: File,
    path: PathBuf,
    direct: DirectState,
}

/// Whether the file's direct descriptor was opened yet (on the first durable write).
enum DirectState {
    Untried,
    Unsupported,
    Open(Box<Direct>),
}

impl std::fmt::Debug for FsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsFile").field("path", &self.path).finish()
    }
}

impl FsFile {
    fn new(file: File, path: PathBuf) -> FsFile {
        FsFile {
            file,
            path,
            direct: DirectState::Untried,
        }
    }

    fn direct(&mut self) -> Option<&mut Direct> {
        if matches!(self.direct, DirectState::Untried) {
            self.direct = match Direct::open(&self.file) {
                Some(d) => DirectState::Open(Box::new(d)),
                None => DirectState::Unsupported,
            };
        }
        match &mut self.direct {
            DirectState::Open(d) => Some(d),
            _ => None,
        }
    }
}

#[cfg(test)]
impl FsFile {
    /// Opens the direct descriptor whatever `--log-direct-io` says; whether it could.
    pub(crate) fn force_direct(&mut self) -> bool {
        self.direct = match Direct::open_always(&self.file) {
            Some(d) => DirectState::Open(Box::new(d)),
            None => DirectState::Unsupported,
        };
        matches!(self.direct, DirectState::Open(_))
    }
}

impl LogFile for FsFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if let DirectState::Open(d) = &mut self.direct {
            d.forget_tail();
        }
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn write_durable_at(
        &mut self,
        offset: u64,
        buf: &[u8],
    ) -> Result<(), (&'static str, io::Error)> {
        if let Some(direct) = self.direct()
            && direct.write(offset, buf).map_err(|e| ("write", e))?
        {
            return Ok(());
        }
        self.write_at(offset, buf).map_err(|e| ("write", e))?;
        self.sync_data().map_err(|e| ("sync", e))
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut at = self.len()?;
        while at < len {
            let n = (len - at).min(ZERO_CHUNK_BYTES as u64) as usize;
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
}
