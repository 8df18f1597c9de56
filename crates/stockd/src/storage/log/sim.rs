//! A simulated disk for tests, so that a power cut is a test case and not a hope.
//!
//! Every file keeps its durable content apart from the writes not yet synced, and every
//! directory keeps its durable names apart from the creates, renames and removes not yet
//! followed by `sync_dir`. `crash` loses what was not synced, or keeps a torn prefix of
//! it chosen by a seeded RNG. Faults make writes or syncs fail from a point on, and
//! `flip` damages durable bytes.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::file::{LogDir, LogFile};

/// Granularity of a torn write in `CrashMode::TornSectors`.
pub const SECTOR_BYTES: u64 = 512;

/// What a crash keeps of the writes and directory operations that were not synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced write and directory operation is lost.
    DropUnsynced,
    /// A random prefix (in issue order) of each file's unsynced writes survives, cut at
    /// any byte; a random prefix of each directory's unsynced operations survives.
    TornBytes,
    /// As `TornBytes`, but the cut falls on a `SECTOR_BYTES` boundary of the file.
    TornSectors,
    /// Exactly this many bytes of each file's unsynced writes survive (for tests that
    /// need one particular cut); unsynced directory operations are lost.
    KeepBytes(u64),
}

/// Which operations fail, and with what.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Writes and allocations fail with this kind (e.g. `StorageFull` for ENOSPC).
    pub write: Option<io::ErrorKind>,
    /// `sync_data` and `sync_dir` fail with this kind (e.g. `Other` for EIO).
    pub sync: Option<io::ErrorKind>,
    /// Only after this many more successful writes do write faults start.
    pub writes_before_fault: u64,
}

#[derive(Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Unsynced writes in issue order; `current` already has them applied.
    pending: Vec<(u64, Vec<u8>)>,
}

#[derive(Default)]
struct Dir {
    durable: BTreeMap<String, usize>,
    current: BTreeMap<String, usize>,
    /// Unsynced operations in issue order; `current` already has them applied.
    pending: Vec<DirOp>,
}

#[derive(Clone)]
enum DirOp {
    Link(String, usize),
    Unlink(String),
}

struct State {
    rng: u64,
    boot: u64,
    inodes: Vec<Inode>,
    dirs: BTreeMap<String, Dir>,
    faults: Faults,
    syncs: u64,
    /// Mutating operations left before the power goes (every later one fails).
    ops_left: Option<u64>,
}

/// A simulated disk holding any number of log directories. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

/// One directory of a `SimDisk`.
pub struct SimDir {
    disk: SimDisk,
    name: String,
    boot: u64,
}

/// An open file of a `SimDisk`. Handles from before a crash fail with EIO.
pub struct SimFile {
    disk: SimDisk,
    inode: usize,
    boot: u64,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn apply(content: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if content.len() < end {
        content.resize(end, 0);
    }
    content[offset as usize..end].copy_from_slice(bytes);
}

fn stale() -> io::Error {
    io::Error::other("simulated handle from before a crash")
}

impl SimDisk {
    pub fn new(seed: u64) -> SimDisk {
        let state = State {
            rng: seed,
            boot: 0,
            inodes: Vec::new(),
            dirs: BTreeMap::new(),
            faults: Faults::default(),
            syncs: 0,
            ops_left: None,
        };
        SimDisk {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("sim disk lock")
    }

    /// A handle on the directory `name`, created if absent (directories themselves are
    /// always durable: the log's parent is set up once, outside the simulation).
    pub fn dir(&self, name: &str) -> SimDir {
        let mut state = self.lock();
        state.dirs.entry(name.to_owned()).or_default();
        SimDir {
            disk: self.clone(),
            name: name.to_owned(),
            boot: state.boot,
        }
    }

    /// A random number from the disk's seeded RNG, for tests that want the same stream.
    pub fn random(&self) -> u64 {
        splitmix64(&mut self.lock().rng)
    }

    /// Sets the faults in force from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Lets `ops` more mutating operations (writes, syncs, creates, renames, removes)
    /// succeed, then fails every one with EIO until `crash`: a power cut at any point,
    /// even inside a rollover or a recycling.
    pub fn power_off_after(&self, ops: u64) {
        self.lock().ops_left = Some(ops);
    }

    /// How many `sync_data` and `sync_dir` calls succeeded so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Cuts the power: unsynced state is lost or torn per `mode`, faults are cleared and
    /// every handle opened before fails from now on.
    pub fn crash(&self, mode: CrashMode) {
        let mut guard = self.lock();
        let state = &mut *guard;
        state.boot += 1;
        state.faults = Faults::default();
        state.ops_left = None;
        for inode in &mut state.inodes {
            let pending = std::mem::take(&mut inode.pending);
            let total: u64 = pending.iter().map(|(_, b)| b.len() as u64).sum();
            let keep = match mode {
                CrashMode::DropUnsynced => 0,
                CrashMode::KeepBytes(n) => n.min(total),
                _ => splitmix64(&mut state.rng) % (total + 1),
            };
            let mut left = keep;
            for (offset, bytes) in pending {
                if left == 0 {
                    break;
                }
                let mut n = left.min(bytes.len() as u64);
                left -= n;
                if mode == CrashMode::TornSectors && n < bytes.len() as u64 {
                    let end = (offset + n) / SECTOR_BYTES * SECTOR_BYTES;
                    n = end.saturating_sub(offset);
                }
                apply(&mut inode.durable, offset, &bytes[..n as usize]);
            }
            inode.current = inode.durable.clone();
        }
        for dir in state.dirs.values_mut() {
            let pending = std::mem::take(&mut dir.pending);
            let keep = match mode {
                CrashMode::DropUnsynced | CrashMode::KeepBytes(_) => 0,
                _ => splitmix64(&mut state.rng) % (pending.len() as u64 + 1),
            };
            for op in pending.into_iter().take(keep as usize) {
                match op {
                    DirOp::Link(name, inode) => dir.durable.insert(name, inode),
                    DirOp::Unlink(name) => dir.durable.remove(&name),
                };
            }
            dir.current = dir.durable.clone();
        }
    }

    /// Flips bits of a file's bytes, durable and current alike: damage, not a torn write.
    pub fn flip(&self, dir: &str, name: &str, offset: u64, mask: u8) {
        let mut state = self.lock();
        let inode = state.dirs[dir].current[name];
        let file = &mut state.inodes[inode];
        file.durable[offset as usize] ^= mask;
        file.current[offset as usize] ^= mask;
    }

    /// Shortens a file, durable and current alike (a lost end of file).
    pub fn truncate(&self, dir: &str, name: &str, len: u64) {
        let mut state = self.lock();
        let inode = state.dirs[dir].current[name];
        let file = &mut state.inodes[inode];
        file.durable.truncate(len as usize);
        file.current.truncate(len as usize);
    }

    /// The current names in a directory, sorted.
    pub fn names(&self, dir: &str) -> Vec<String> {
        self.lock().dirs[dir].current.keys().cloned().collect()
    }
}

impl State {
    fn tick(&mut self) -> io::Result<()> {
        match &mut self.ops_left {
            Some(0) => Err(io::Error::other("simulated power cut")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn check_write(&mut self) -> io::Result<()> {
        self.tick()?;
        match self.faults.write {
            Some(kind) if self.faults.writes_before_fault == 0 => {
                Err(io::Error::new(kind, "simulated write fault"))
            }
            Some(_) => {
                self.faults.writes_before_fault -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn check_sync(&mut self) -> io::Result<()> {
        self.tick()?;
        match self.faults.sync {
            Some(kind) => Err(io::Error::new(kind, "simulated sync fault")),
            None => {
                self.syncs += 1;
                Ok(())
            }
        }
    }
}

impl SimDir {
    fn with<T>(&self, f: impl FnOnce(&mut State, &str) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.disk.lock();
        if state.boot != self.boot {
            return Err(stale());
        }
        f(&mut state, &self.name)
    }

    fn file(&self, inode: usize) -> SimFile {
        SimFile {
            disk: self.disk.clone(),
            inode,
            boot: self.boot,
        }
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name} not found"))
}

impl LogDir for SimDir {
    type File = SimFile;

    fn create(&self, name: &str) -> io::Result<SimFile> {
        let inode = self.with(|state, dir| {
            if state.dirs[dir].current.contains_key(name) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    name.to_owned(),
                ));
            }
            state.check_write()?;
            state.inodes.push(Inode::default());
            let inode = state.inodes.len() - 1;
            let d = state.dirs.get_mut(dir).expect("dir exists");
            d.current.insert(name.to_owned(), inode);
            d.pending.push(DirOp::Link(name.to_owned(), inode));
            Ok(inode)
        })?;
        Ok(self.file(inode))
    }

    fn open(&self, name: &str) -> io::Result<SimFile> {
        let inode = self.with(|state, dir| {
            state.dirs[dir]
                .current
                .get(name)
                .copied()
                .ok_or_else(|| not_found(name))
        })?;
        Ok(self.file(inode))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.with(|state, dir| {
            state.tick()?;
            let d = state.dirs.get_mut(dir).expect("dir exists");
            if d.current.contains_key(to) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, to.to_owned()));
            }
            let inode = d.current.remove(from).ok_or_else(|| not_found(from))?;
            d.current.insert(to.to_owned(), inode);
            // One rename is atomic: a crash keeps both of its halves or neither.
            d.pending.push(DirOp::Link(to.to_owned(), inode));
            let last = d.pending.len() - 1;
            d.pending.insert(last, DirOp::Unlink(from.to_owned()));
            Ok(())
        })
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.with(|state, dir| {
            state.tick()?;
            let d = state.dirs.get_mut(dir).expect("dir exists");
            d.current.remove(name).ok_or_else(|| not_found(name))?;
            d.pending.push(DirOp::Unlink(name.to_owned()));
            Ok(())
        })
    }

    fn list(&self) -> io::Result<Vec<String>> {
        self.with(|state, dir| Ok(state.dirs[dir].current.keys().cloned().collect()))
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.with(|state, dir| {
            state.check_sync()?;
            let d = state.dirs.get_mut(dir).expect("dir exists");
            d.pending.clear();
            d.durable = d.current.clone();
            Ok(())
        })
    }

    fn describe(&self, name: &str) -> String {
        format!("sim:{}/{}", self.name, name)
    }
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.disk.lock();
        if state.boot != self.boot {
            return Err(stale());
        }
        f(&mut state)
    }

    fn write(&mut self, offset: u64, bytes: Vec<u8>) -> io::Result<()> {
        let inode = self.inode;
        self.with(|state| {
            state.check_write()?;
            let file = &mut state.inodes[inode];
            apply(&mut file.current, offset, &bytes);
            file.pending.push((offset, bytes));
            Ok(())
        })
    }
}

impl LogFile for SimFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.with(|state| {
            let content = &state.inodes[self.inode].current;
            let end = offset as usize + buf.len();
            let bytes = content
                .get(offset as usize..end)
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
            buf.copy_from_slice(bytes);
            Ok(())
        })
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write(offset, buf.to_vec())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let inode = self.inode;
        self.with(|state| {
            state.check_sync()?;
            let file = &mut state.inodes[inode];
            file.pending.clear();
            file.durable = file.current.clone();
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|state| Ok(state.inodes[self.inode].current.len() as u64))
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        let at = self.len()?;
        if at < len {
            self.write(at, vec![0u8; (len - at) as usize])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_and_names_are_lost_in_a_crash() {
        let disk = SimDisk::new(1);
        let dir = disk.dir("a");
        let mut f = dir.create("x").unwrap();
        f.write_at(0, b"durable").unwrap();
        f.sync_data().unwrap();
        dir.sync_dir().unwrap();
        f.write_at(0, b"PENDING").unwrap();
        dir.create("y").unwrap();
        disk.crash(CrashMode::DropUnsynced);
        assert!(f.write_at(0, b"z").is_err(), "old handles are dead");
        let dir = disk.dir("a");
        assert_eq!(dir.list().unwrap(), vec!["x".to_owned()]);
        let mut buf = [0u8; 7];
        dir.open("x").unwrap().read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"durable");
    }

    #[test]
    fn torn_crash_keeps_a_prefix_of_pending_writes() {
        for seed in 0..50 {
            let disk = SimDisk::new(seed);
            let dir = disk.dir("a");
            let mut f = dir.create("x").unwrap();
            f.allocate(2048).unwrap();
            f.sync_data().unwrap();
            dir.sync_dir().unwrap();
            f.write_at(0, &[1u8; 1024]).unwrap();
            f.write_at(1024, &[2u8; 1024]).unwrap();
            disk.crash(CrashMode::TornBytes);
            let mut buf = vec![0u8; 2048];
            disk.dir("a")
                .open("x")
                .unwrap()
                .read_at(0, &mut buf)
                .unwrap();
            let kept = buf.iter().take_while(|&&b| b != 0).count();
            assert!(
                buf[kept..].iter().all(|&b| b == 0),
                "seed {seed}: not a prefix"
            );
        }
    }

    #[test]
    fn faults_fail_writes_and_syncs() {
        let disk = SimDisk::new(1);
        let dir = disk.dir("a");
        let mut f = dir.create("x").unwrap();
        disk.set_faults(Faults {
            write: Some(io::ErrorKind::StorageFull),
            writes_before_fault: 1,
            ..Faults::default()
        });
        f.write_at(0, b"ok").unwrap();
        let e = f.write_at(0, b"no").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        disk.set_faults(Faults {
            sync: Some(io::ErrorKind::Other),
            ..Faults::default()
        });
        assert!(f.sync_data().is_err());
    }
}
