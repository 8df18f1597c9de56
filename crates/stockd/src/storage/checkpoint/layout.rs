//! The key layout of the checkpoint store, and the work of `apply`, `load` and removal
//! that does not depend on which store (sled or simulated) holds the bytes.
//!
//! One ordered key space, so that one atomic batch covers entries, scope record and
//! layout records together:
//! - `E generation(4, BE) shard(4, BE) namespace(1) key` → entry frame;
//! - `S generation(4, BE) shard(4, BE)` → scope record (LSN, per-namespace count and digest);
//! - `M name` → layout record.
//!
//! Big-endian scope numbers keep a scope's entries contiguous and scopes in order.

use std::path::Path;
use std::time::Instant;

use rustc_hash::FxHashSet;

use super::entry::{self, NamespaceDigest, ScopeRecord};
use super::{
    ApplyStats, BATCH_ENTRIES_MAX, CheckpointBatch, CheckpointError, Entry, KEY_BYTES_MAX, Loaded,
    META_NAME_BYTES_MAX, META_RECORDS_MAX, META_VALUE_BYTES_MAX, Namespace, REMOVE_CHUNK_ENTRIES,
    Scope, VALUE_BYTES_MAX, show_key,
};

/// First byte of an entry key.
const ENTRY_TAG: u8 = b'E';
/// First byte of a scope record key.
const SCOPE_TAG: u8 = b'S';
/// First byte of a layout record key.
const META_TAG: u8 = b'M';
/// Bytes of a scope prefix: tag, generation, shard.
const SCOPE_PREFIX_BYTES: usize = 9;
/// Bytes of an entry key before the user's key: scope prefix and namespace.
const ENTRY_KEY_FIXED_BYTES: usize = SCOPE_PREFIX_BYTES + 1;

/// Writes to a store, as raw keys and values, applied atomically by `RawKv::commit`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RawBatch {
    pub puts: Vec<(Vec<u8>, Vec<u8>)>,
    pub removes: Vec<Vec<u8>>,
}

/// The byte-level store under a checkpoint store.
pub trait RawKv {
    /// Named in every error.
    fn folder(&self) -> &Path;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, CheckpointError>;
    /// Visits keys with `prefix` in order until `visit` returns `false`.
    fn scan_prefix(
        &self,
        prefix: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), CheckpointError>;
    /// Applies the batch atomically and makes it durable; fills the write, flush and sync
    /// fields of the stats.
    fn commit(&self, batch: RawBatch) -> Result<ApplyStats, CheckpointError>;
}

fn scope_prefix(tag: u8, scope: Scope) -> [u8; SCOPE_PREFIX_BYTES] {
    let mut k = [0u8; SCOPE_PREFIX_BYTES];
    k[0] = tag;
    k[1..5].copy_from_slice(&scope.generation.to_be_bytes());
    k[5..9].copy_from_slice(&scope.shard.to_be_bytes());
    k
}

/// The key of an entry.
pub fn entry_key(scope: Scope, namespace: Namespace, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(ENTRY_KEY_FIXED_BYTES + key.len());
    k.extend_from_slice(&scope_prefix(ENTRY_TAG, scope));
    k.push(namespace.0);
    k.extend_from_slice(key);
    k
}

/// The prefix of every entry key of a scope.
pub fn entries_prefix(scope: Scope) -> [u8; SCOPE_PREFIX_BYTES] {
    scope_prefix(ENTRY_TAG, scope)
}

/// The key of a scope's record.
pub fn scope_key(scope: Scope) -> [u8; SCOPE_PREFIX_BYTES] {
    scope_prefix(SCOPE_TAG, scope)
}

/// The key of a layout record.
pub fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META_TAG];
    k.extend_from_slice(name.as_bytes());
    k
}

fn parse_scope(key: &[u8]) -> Scope {
    Scope {
        generation: u32::from_be_bytes(key[1..5].try_into().expect("4 bytes")),
        shard: u32::from_be_bytes(key[5..9].try_into().expect("4 bytes")),
    }
}

fn assert_bounds(batch: &CheckpointBatch) {
    let entries = batch.puts.len() + batch.deletes.len();
    assert!(
        entries <= BATCH_ENTRIES_MAX,
        "a checkpoint batch of {entries} entries exceeds BATCH_ENTRIES_MAX"
    );
    assert!(
        batch.meta.len() <= META_RECORDS_MAX,
        "too many layout records"
    );
    for e in &batch.puts {
        assert!(e.key.len() <= KEY_BYTES_MAX, "key over KEY_BYTES_MAX");
        assert!(
            e.value.len() <= VALUE_BYTES_MAX,
            "value over VALUE_BYTES_MAX"
        );
    }
    for (_, key) in &batch.deletes {
        assert!(key.len() <= KEY_BYTES_MAX, "key over KEY_BYTES_MAX");
    }
    for m in &batch.meta {
        assert_meta_bounds(&m.name, &m.value);
    }
}

fn assert_meta_bounds(name: &str, value: &[u8]) {
    assert!(name.len() <= META_NAME_BYTES_MAX, "layout name over bound");
    assert!(
        value.len() <= META_VALUE_BYTES_MAX,
        "layout value over bound"
    );
}

/// The scope's record, checked; `None` if it has none.
fn read_scope_record(
    kv: &impl RawKv,
    scope: Scope,
) -> Result<Option<ScopeRecord>, CheckpointError> {
    let Some(bytes) = kv.get(&scope_key(scope))? else {
        return Ok(None);
    };
    entry::decode_scope_record(scope, &bytes)
        .map(Some)
        .map_err(|damage| CheckpointError::ScopeRecordDamaged {
            folder: kv.folder().to_path_buf(),
            scope,
            damage,
        })
}

/// Whether the scope holds any entry.
fn has_entries(kv: &impl RawKv, scope: Scope) -> Result<bool, CheckpointError> {
    let mut any = false;
    kv.scan_prefix(&entries_prefix(scope), &mut |_, _| {
        any = true;
        false
    })?;
    Ok(any)
}

/// The hash of the entry stored under `key`, checked; `None` if there is none.
fn stored_hash(
    kv: &impl RawKv,
    scope: Scope,
    namespace: Namespace,
    key: &[u8],
    full_key: &[u8],
) -> Result<Option<u64>, CheckpointError> {
    let Some(frame) = kv.get(full_key)? else {
        return Ok(None);
    };
    let value = entry::decode_entry(scope, namespace, key, &frame).map_err(|damage| {
        CheckpointError::EntryDamaged {
            folder: kv.folder().to_path_buf(),
            scope,
            namespace,
            key: show_key(key),
            damage,
        }
    })?;
    Ok(Some(entry::entry_hash(scope, namespace, key, value)))
}

/// The record a checkpoint extends: the stored one, or an empty one for a new scope. A
/// scope with entries but no record is damage, not a new scope.
fn record_to_extend(kv: &impl RawKv, scope: Scope) -> Result<ScopeRecord, CheckpointError> {
    match read_scope_record(kv, scope)? {
        Some(record) => Ok(record),
        None if has_entries(kv, scope)? => Err(CheckpointError::RecordMissing {
            folder: kv.folder().to_path_buf(),
            scope,
            entries: 1,
        }),
        None => Ok(ScopeRecord::default()),
    }
}

/// Builds the raw batch of a checkpoint: the changed entries, each old value XORed out of
/// its namespace's digest and the new one XORed in, the layout records and the new scope
/// record. Reads every old value it replaces or deletes, and checks it.
pub fn plan_apply(
    kv: &impl RawKv,
    batch: &CheckpointBatch,
) -> Result<(RawBatch, ApplyStats), CheckpointError> {
    let started = Instant::now();
    assert_bounds(batch);
    let scope = batch.scope;
    let mut record = record_to_extend(kv, scope)?;
    assert!(
        batch.lsn_covered >= record.lsn_covered,
        "{scope}: checkpoint LSN went backwards from {} to {}",
        record.lsn_covered,
        batch.lsn_covered
    );
    let mut raw = RawBatch::default();
    let mut stats = ApplyStats::default();
    let mut seen = FxHashSet::default();
    for e in &batch.puts {
        let full_key = entry_key(scope, e.namespace, &e.key);
        assert!(
            seen.insert(full_key.clone()),
            "{scope}: key twice in one batch"
        );
        let digest = record.namespaces.entry(e.namespace).or_default();
        let new_hash = entry::entry_hash(scope, e.namespace, &e.key, &e.value);
        stats.entries_put += 1;
        match stored_hash(kv, scope, e.namespace, &e.key, &full_key)? {
            Some(old_hash) if old_hash == new_hash => continue,
            Some(old_hash) => digest.remove(old_hash),
            None => {}
        }
        digest.add(new_hash);
        stats.bytes_written += (full_key.len() + e.value.len()) as u64;
        let frame = entry::encode_entry(scope, e.namespace, &e.key, &e.value);
        raw.puts.push((full_key, frame));
    }
    for (namespace, key) in &batch.deletes {
        let full_key = entry_key(scope, *namespace, key);
        assert!(
            seen.insert(full_key.clone()),
            "{scope}: key twice in one batch"
        );
        stats.entries_deleted += 1;
        if let Some(old_hash) = stored_hash(kv, scope, *namespace, key, &full_key)? {
            let digest: &mut NamespaceDigest = record.namespaces.entry(*namespace).or_default();
            digest.remove(old_hash);
            stats.bytes_written += full_key.len() as u64;
            raw.removes.push(full_key);
        }
    }
    for m in &batch.meta {
        raw.puts
            .push((meta_key(&m.name), entry::encode_meta(&m.name, &m.value)));
    }
    record.lsn_covered = batch.lsn_covered;
    record.prune();
    let record_bytes = entry::encode_scope_record(scope, &record);
    raw.puts.push((scope_key(scope).to_vec(), record_bytes));
    stats.prepare = started.elapsed();
    Ok((raw, stats))
}

/// Applies a checkpoint through `kv`: plan, then one atomic, durable commit.
pub fn apply(kv: &impl RawKv, batch: &CheckpointBatch) -> Result<ApplyStats, CheckpointError> {
    let started = Instant::now();
    let (raw, mut stats) = plan_apply(kv, batch)?;
    let committed = kv.commit(raw)?;
    stats.write = committed.write;
    stats.flush = committed.flush;
    stats.sync = committed.sync;
    stats.files_synced = committed.files_synced;
    stats.dirs_synced = committed.dirs_synced;
    stats.total = started.elapsed();
    Ok(stats)
}

/// Reads and verifies a scope: every frame's checksum, then every namespace's count and
/// digest against the scope record.
pub fn load(kv: &impl RawKv, scope: Scope) -> Result<Option<Loaded>, CheckpointError> {
    let folder = || kv.folder().to_path_buf();
    let stored = kv.get(&scope_key(scope))?;
    let mut found = ScopeRecord::default();
    let mut entries = Vec::new();
    let mut damaged = None;
    kv.scan_prefix(&entries_prefix(scope), &mut |full_key, frame| {
        if full_key.len() < ENTRY_KEY_FIXED_BYTES {
            damaged = Some(CheckpointError::UnknownKey {
                folder: folder(),
                key: show_key(full_key),
            });
            return false;
        }
        let namespace = Namespace(full_key[SCOPE_PREFIX_BYTES]);
        let key = &full_key[ENTRY_KEY_FIXED_BYTES..];
        match entry::decode_entry(scope, namespace, key, frame) {
            Ok(value) => {
                let hash = entry::entry_hash(scope, namespace, key, value);
                found.namespaces.entry(namespace).or_default().add(hash);
                entries.push(Entry {
                    namespace,
                    key: key.to_vec(),
                    value: value.to_vec(),
                });
                true
            }
            Err(damage) => {
                damaged = Some(CheckpointError::EntryDamaged {
                    folder: folder(),
                    scope,
                    namespace,
                    key: show_key(key),
                    damage,
                });
                false
            }
        }
    })?;
    if let Some(error) = damaged {
        return Err(error);
    }
    let Some(stored) = stored else {
        if entries.is_empty() {
            return Ok(None);
        }
        return Err(CheckpointError::RecordMissing {
            folder: folder(),
            scope,
            entries: entries.len() as u64,
        });
    };
    let expected = entry::decode_scope_record(scope, &stored).map_err(|damage| {
        CheckpointError::ScopeRecordDamaged {
            folder: folder(),
            scope,
            damage,
        }
    })?;
    compare(kv.folder(), scope, &expected, &found)?;
    Ok(Some(Loaded {
        lsn_covered: expected.lsn_covered,
        entries,
    }))
}

/// Reports the first namespace whose count or digest differs from its record.
fn compare(
    folder: &Path,
    scope: Scope,
    expected: &ScopeRecord,
    found: &ScopeRecord,
) -> Result<(), CheckpointError> {
    let namespaces = expected.namespaces.keys().chain(found.namespaces.keys());
    for namespace in namespaces {
        let e = expected
            .namespaces
            .get(namespace)
            .copied()
            .unwrap_or_default();
        let f = found.namespaces.get(namespace).copied().unwrap_or_default();
        if e != f {
            return Err(CheckpointError::DigestMismatch {
                folder: folder.to_path_buf(),
                scope,
                namespace: *namespace,
                lsn_covered: expected.lsn_covered,
                found_entries: f.entries,
                expected_entries: e.entries,
                found_digest: f.digest,
                expected_digest: e.digest,
            });
        }
    }
    Ok(())
}

/// Every scope with a record, in order.
pub fn scopes(kv: &impl RawKv) -> Result<Vec<Scope>, CheckpointError> {
    let mut scopes = Vec::new();
    let mut bad = None;
    kv.scan_prefix(&[SCOPE_TAG], &mut |key, _| {
        if key.len() != SCOPE_PREFIX_BYTES {
            bad = Some(show_key(key));
            return false;
        }
        scopes.push(parse_scope(key));
        true
    })?;
    match bad {
        Some(key) => Err(CheckpointError::UnknownKey {
            folder: kv.folder().to_path_buf(),
            key,
        }),
        None => Ok(scopes),
    }
}

/// Removes a scope: its entries in chunks of `REMOVE_CHUNK_ENTRIES`, its record last.
pub fn remove_scope(kv: &impl RawKv, scope: Scope) -> Result<ApplyStats, CheckpointError> {
    let started = Instant::now();
    let mut total = ApplyStats::default();
    loop {
        let mut chunk = RawBatch::default();
        kv.scan_prefix(&entries_prefix(scope), &mut |key, _| {
            chunk.removes.push(key.to_vec());
            chunk.removes.len() < REMOVE_CHUNK_ENTRIES
        })?;
        let last = chunk.removes.is_empty();
        if last {
            chunk.removes.push(scope_key(scope).to_vec());
        } else {
            total.entries_deleted += chunk.removes.len() as u64;
        }
        let stats = kv.commit(chunk)?;
        total.files_synced += stats.files_synced;
        total.dirs_synced += stats.dirs_synced;
        total.write += stats.write;
        total.flush += stats.flush;
        total.sync += stats.sync;
        if last {
            total.total = started.elapsed();
            return Ok(total);
        }
    }
}

/// A layout record, checked.
pub fn get_meta(kv: &impl RawKv, name: &str) -> Result<Option<Vec<u8>>, CheckpointError> {
    let Some(bytes) = kv.get(&meta_key(name))? else {
        return Ok(None);
    };
    match entry::decode_meta(name, &bytes) {
        Ok(value) => Ok(Some(value.to_vec())),
        Err(damage) => Err(CheckpointError::MetaDamaged {
            folder: kv.folder().to_path_buf(),
            name: name.to_string(),
            damage,
        }),
    }
}

/// Writes one layout record alone, durably.
pub fn put_meta(kv: &impl RawKv, name: &str, value: &[u8]) -> Result<ApplyStats, CheckpointError> {
    assert_meta_bounds(name, value);
    let started = Instant::now();
    let batch = RawBatch {
        puts: vec![(meta_key(name), entry::encode_meta(name, value))],
        removes: Vec::new(),
    };
    let mut stats = kv.commit(batch)?;
    stats.total = started.elapsed();
    Ok(stats)
}
