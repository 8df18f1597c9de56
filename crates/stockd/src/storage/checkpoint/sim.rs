//! A simulated checkpoint store, so that a power cut is a test case and not a hope.
//!
//! It holds the same keys and framed bytes as the sled store (the work of `apply` and
//! `load` is shared, in `layout`), in two maps: what a reader sees (`visible`) and what a
//! power cut keeps (`durable`). A batch becomes durable exactly when `apply` returns `Ok`.
//! Faults, injected one at a time for the next write:
//! - `CrashDuringApply`: the process dies inside the write; the batch is wholly durable
//!   or wholly absent (chosen by the seed), never partial, and the store is dead;
//! - `DiskFull`: the write fails before anything is applied; the store goes on;
//! - `SyncFails`: the batch is visible but its fsync fails; it may or may not survive a
//!   power cut (chosen by the seed at `crash`), and the store refuses further writes,
//!   as the sled store does after a failed fsync.
//!
//! `crash` returns a new store over what is durable. Bytes can be damaged "on disk"
//! (`damage_*`) to test that loads find it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::layout::{self, RawBatch, RawKv};
use super::{ApplyStats, CheckpointBatch, CheckpointError, CheckpointStore, PageVisitor, Scope};

/// A fault for the next write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    CrashDuringApply,
    DiskFull,
    SyncFails,
}

type Bytes = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
struct SimState {
    visible: Bytes,
    durable: Bytes,
    /// A batch whose fsync failed: visible, durable or not.
    unsynced: Option<RawBatch>,
    fault: Option<Fault>,
    /// Writes that succeed before `fault` strikes.
    fault_after: u64,
    crashed: bool,
    /// A write or fsync failed: writes are refused until `crash`.
    poisoned: bool,
    rng: u64,
    syncs: u64,
}

/// The simulated store.
pub struct SimStore {
    folder: PathBuf,
    /// Most entries of one atomic batch (`BATCH_ENTRIES_MAX` unless a test makes it small).
    batch_entries_max: usize,
    /// Serializes every call (the sled store serializes those of one scope; stricter is
    /// allowed).
    serial: Mutex<()>,
    state: Mutex<SimState>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// splitmix64: a tiny, seedable, reproducible generator.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn write(map: &mut Bytes, batch: &RawBatch) {
    for (key, value) in &batch.puts {
        map.insert(key.clone(), value.clone());
    }
    for key in &batch.removes {
        map.remove(key);
    }
}

impl SimStore {
    /// An empty store; `seed` decides the outcome of every fault.
    pub fn new(seed: u64) -> SimStore {
        SimStore::over(
            SimState {
                rng: seed,
                ..SimState::default()
            },
            seed,
        )
    }

    fn over(state: SimState, seed: u64) -> SimStore {
        SimStore {
            folder: PathBuf::from(format!("<simulated, seed {seed}>")),
            batch_entries_max: super::BATCH_ENTRIES_MAX,
            serial: Mutex::new(()),
            state: Mutex::new(state),
        }
    }

    /// An empty store whose atomic batches hold at most `entries` entries, so that a test
    /// can write a checkpoint too large for one batch (`rewrite`) with a few entries.
    pub fn with_batch_entries_max(seed: u64, entries: usize) -> SimStore {
        SimStore {
            batch_entries_max: entries,
            ..SimStore::new(seed)
        }
    }

    /// Makes the next write fail as `fault` says.
    pub fn inject(&self, fault: Fault) {
        self.inject_after(0, fault);
    }

    /// Lets `writes` more writes (atomic batches) succeed, then fails the next as `fault`
    /// says: a checkpoint written in several batches can be cut at each of them.
    pub fn inject_after(&self, writes: u64, fault: Fault) {
        let mut state = lock(&self.state);
        state.fault = Some(fault);
        state.fault_after = writes;
    }

    /// Cuts the power: this store is dead, and the one returned holds what was durable
    /// (plus a batch whose fsync failed, if the seed says it reached the disk).
    pub fn crash(&self) -> SimStore {
        let mut state = lock(&self.state);
        state.crashed = true;
        let mut durable = state.durable.clone();
        if let Some(batch) = state.unsynced.take()
            && next_random(&mut state.rng) & 1 == 1
        {
            write(&mut durable, &batch);
        }
        let seed = next_random(&mut state.rng);
        SimStore {
            batch_entries_max: self.batch_entries_max,
            ..SimStore::over(
                SimState {
                    visible: durable.clone(),
                    durable,
                    rng: seed,
                    ..SimState::default()
                },
                seed,
            )
        }
    }

    /// Batches made durable so far (each is one sync point).
    pub fn syncs(&self) -> u64 {
        lock(&self.state).syncs
    }

    /// Every stored key and its bytes, as a power cut would keep them.
    pub fn durable_bytes(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        lock(&self.state).durable.clone()
    }

    /// Damage on disk: replaces the bytes under `key`, bypassing the framing.
    pub fn damage_put(&self, key: &[u8], bytes: &[u8]) {
        let mut state = lock(&self.state);
        state.visible.insert(key.to_vec(), bytes.to_vec());
        state.durable.insert(key.to_vec(), bytes.to_vec());
    }

    /// Damage on disk: loses the bytes under `key`.
    pub fn damage_remove(&self, key: &[u8]) {
        let mut state = lock(&self.state);
        state.visible.remove(key);
        state.durable.remove(key);
    }

    /// Damage on disk: flips bits of the byte at `index` of the bytes under `key`.
    pub fn damage_flip(&self, key: &[u8], index: usize, mask: u8) {
        let mut state = lock(&self.state);
        let SimState {
            visible, durable, ..
        } = &mut *state;
        for map in [visible, durable] {
            let bytes = map.get_mut(key).expect("damage_flip of a stored key");
            bytes[index] ^= mask;
        }
    }

    fn live(&self) -> Result<MutexGuard<'_, SimState>, CheckpointError> {
        let state = lock(&self.state);
        if state.crashed {
            return Err(CheckpointError::Crashed {
                folder: self.folder.clone(),
            });
        }
        Ok(state)
    }

    fn injected_io(&self, doing: &str, error: &str) -> CheckpointError {
        CheckpointError::Io {
            folder: self.folder.clone(),
            doing: doing.to_string(),
            error: format!("{error} (simulated)"),
        }
    }
}

impl RawKv for SimStore {
    fn folder(&self) -> &Path {
        &self.folder
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, CheckpointError> {
        Ok(self.live()?.visible.get(key).cloned())
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), CheckpointError> {
        let state = self.live()?;
        for (key, value) in state.visible.range(prefix.to_vec()..) {
            if !key.starts_with(prefix) || !visit(key, value) {
                break;
            }
        }
        Ok(())
    }

    fn batch_entries_max(&self) -> usize {
        self.batch_entries_max
    }

    fn commit(&self, raw: RawBatch) -> Result<ApplyStats, CheckpointError> {
        let mut state = self.live()?;
        if state.poisoned {
            return Err(CheckpointError::Poisoned {
                folder: self.folder.clone(),
            });
        }
        let fault = match state.fault_after {
            0 => state.fault.take(),
            _ => {
                state.fault_after -= 1;
                None
            }
        };
        match fault {
            None => {
                write(&mut state.visible, &raw);
                write(&mut state.durable, &raw);
                state.syncs += 1;
                Ok(ApplyStats {
                    files_synced: 1,
                    dirs_synced: 1,
                    ..ApplyStats::default()
                })
            }
            Some(Fault::DiskFull) => {
                Err(self.injected_io("writing the checkpoint batch", "No space left on device"))
            }
            Some(Fault::SyncFails) => {
                write(&mut state.visible, &raw);
                state.unsynced = Some(raw);
                state.poisoned = true;
                Err(self.injected_io("fsyncing", "Input/output error"))
            }
            Some(Fault::CrashDuringApply) => {
                if next_random(&mut state.rng) & 1 == 1 {
                    write(&mut state.durable, &raw);
                }
                state.crashed = true;
                Err(CheckpointError::Crashed {
                    folder: self.folder.clone(),
                })
            }
        }
    }
}

impl CheckpointStore for SimStore {
    fn apply(&self, batch: &CheckpointBatch) -> Result<ApplyStats, CheckpointError> {
        let _serial = lock(&self.serial);
        layout::apply(self, batch)
    }

    fn load_each(
        &self,
        scope: Scope,
        visitor: &mut dyn PageVisitor,
    ) -> Result<Option<u64>, CheckpointError> {
        let _serial = lock(&self.serial);
        layout::load_each(self, scope, visitor)
    }

    fn scopes(&self) -> Result<Vec<Scope>, CheckpointError> {
        let _serial = lock(&self.serial);
        layout::scopes(self)
    }

    fn remove_scope(&self, scope: Scope) -> Result<ApplyStats, CheckpointError> {
        let _serial = lock(&self.serial);
        layout::remove_scope(self, scope)
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, CheckpointError> {
        let _serial = lock(&self.serial);
        layout::get_meta(self, name)
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<ApplyStats, CheckpointError> {
        let _serial = lock(&self.serial);
        layout::put_meta(self, name, value)
    }
}
