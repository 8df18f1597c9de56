//! The key layout of the checkpoint store, and the work of `apply`, `load` and removal
//! that does not depend on which store (sled or simulated) holds the bytes.
//!
//! One ordered key space, so that one atomic batch covers pages, scope record and layout
//! records together:
//! - `P generation(4, BE) shard(4, BE) namespace(1) bucket(4, BE)` → page of entries;
//! - `S generation(4, BE) shard(4, BE)` → scope record (LSN, per-namespace count, digest
//!   and bucket bits);
//! - `M name` → layout record.
//!
//! Big-endian scope numbers keep a scope's pages contiguous and scopes in order. A
//! namespace is sized for `PAGE_ENTRIES_TARGET` entries a page; when it outgrows that, the
//! checkpoint that makes it grow rewrites all its pages with twice (or more) the buckets,
//! so each entry is rewritten by growth about once in all.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::entry::{self, EntrySpan, NamespaceDigest, PageDamage, ScopeRecord};
use super::{
    ApplyStats, BATCH_ENTRIES_MAX, CheckpointBatch, CheckpointError, KEY_BYTES_MAX,
    META_NAME_BYTES_MAX, META_RECORDS_MAX, META_VALUE_BYTES_MAX, Namespace, PAGE_ENTRIES_TARGET,
    PageRef, PageVisitor, REMOVE_CHUNK_PAGES, Scope, VALUE_BYTES_MAX, show_key,
};

/// First byte of a page key.
const PAGE_TAG: u8 = b'P';
/// First byte of a scope record key.
const SCOPE_TAG: u8 = b'S';
/// First byte of a layout record key.
const META_TAG: u8 = b'M';
/// Bytes of a scope prefix: tag, generation, shard.
const SCOPE_PREFIX_BYTES: usize = 9;
/// Bytes of a page key: scope prefix, namespace, bucket.
const PAGE_KEY_BYTES: usize = SCOPE_PREFIX_BYTES + 1 + 4;

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
    /// Most entries of one atomic checkpoint batch; a larger checkpoint is written as a
    /// rewrite (`rewrite`). A test store makes it small.
    fn batch_entries_max(&self) -> usize {
        BATCH_ENTRIES_MAX
    }
}

fn scope_prefix(tag: u8, scope: Scope) -> [u8; SCOPE_PREFIX_BYTES] {
    let mut k = [0u8; SCOPE_PREFIX_BYTES];
    k[0] = tag;
    k[1..5].copy_from_slice(&scope.generation.to_be_bytes());
    k[5..9].copy_from_slice(&scope.shard.to_be_bytes());
    k
}

/// The key of a page of page set 0 (tests).
pub fn page_key(scope: Scope, namespace: Namespace, bucket: u32) -> [u8; PAGE_KEY_BYTES] {
    page_key_in(scope, namespace, 0, bucket)
}

/// The key of a page in page set `set` (0 or 1: the set bit of its namespace byte).
pub fn page_key_in(
    scope: Scope,
    namespace: Namespace,
    set: u8,
    bucket: u32,
) -> [u8; PAGE_KEY_BYTES] {
    let mut k = [0u8; PAGE_KEY_BYTES];
    k[..SCOPE_PREFIX_BYTES + 1].copy_from_slice(&namespace_prefix(scope, namespace, set));
    k[SCOPE_PREFIX_BYTES + 1..].copy_from_slice(&bucket.to_be_bytes());
    k
}

/// The prefix of every page key of a scope.
pub fn pages_prefix(scope: Scope) -> [u8; SCOPE_PREFIX_BYTES] {
    scope_prefix(PAGE_TAG, scope)
}

/// The prefix of the page keys of a namespace in page set `set`.
pub(super) fn namespace_prefix(
    scope: Scope,
    namespace: Namespace,
    set: u8,
) -> [u8; SCOPE_PREFIX_BYTES + 1] {
    assert!(
        namespace.0 < entry::SET_BIT && set <= 1,
        "namespace or set out of range"
    );
    let mut k = [0u8; SCOPE_PREFIX_BYTES + 1];
    k[..SCOPE_PREFIX_BYTES].copy_from_slice(&pages_prefix(scope));
    k[SCOPE_PREFIX_BYTES] = namespace.0 | (set * entry::SET_BIT);
    k
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

/// The key of the page that holds (or would hold) an entry, for tests that damage it.
pub fn page_key_of(
    kv: &impl RawKv,
    scope: Scope,
    namespace: Namespace,
    key: &[u8],
) -> Result<Vec<u8>, CheckpointError> {
    let record = read_scope_record(kv, scope)?.unwrap_or_default();
    let bits = record
        .namespaces
        .get(&namespace)
        .map_or(0, |d| d.bucket_bits);
    let set = record.set_of(namespace);
    Ok(page_key_in(scope, namespace, set, entry::bucket_of(key, bits)).to_vec())
}

fn parse_scope(key: &[u8]) -> Scope {
    Scope {
        generation: u32::from_be_bytes(key[1..5].try_into().expect("4 bytes")),
        shard: u32::from_be_bytes(key[5..9].try_into().expect("4 bytes")),
    }
}

/// The fewest bucket bits that page `entries` at `PAGE_ENTRIES_TARGET` a page or fewer.
pub fn bits_for(entries: u64) -> u8 {
    let mut bits = 0u8;
    while bits < entry::BUCKET_BITS_MAX && entries > (PAGE_ENTRIES_TARGET as u64) << bits {
        bits += 1;
    }
    bits
}

fn assert_bounds(batch: &CheckpointBatch, entries_max: usize) {
    let entries = batch.puts.len() + batch.deletes.len();
    assert!(
        entries <= entries_max,
        "a checkpoint batch of {entries} entries exceeds BATCH_ENTRIES_MAX"
    );
    assert_entry_bounds(batch);
}

/// The bounds of each entry and layout record of a batch, whatever its size.
pub(super) fn assert_entry_bounds(batch: &CheckpointBatch) {
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

/// Whether the scope holds any page.
fn has_pages(kv: &impl RawKv, scope: Scope) -> Result<bool, CheckpointError> {
    let mut any = false;
    kv.scan_prefix(&pages_prefix(scope), &mut |_, _| {
        any = true;
        false
    })?;
    Ok(any)
}

/// The record a checkpoint extends: the stored one, or an empty one for a new scope. A
/// scope with pages but no record is damage, not a new scope.
pub(super) fn record_to_extend(
    kv: &impl RawKv,
    scope: Scope,
) -> Result<ScopeRecord, CheckpointError> {
    match read_scope_record(kv, scope)? {
        Some(record) => Ok(record),
        None if has_pages(kv, scope)? => Err(CheckpointError::RecordMissing {
            folder: kv.folder().to_path_buf(),
            scope,
            entries: 1,
        }),
        None => Ok(ScopeRecord::default()),
    }
}

pub(super) fn page_damage(
    folder: &Path,
    scope: Scope,
    namespace: Namespace,
    bucket: u32,
    damage: PageDamage,
) -> CheckpointError {
    match damage {
        PageDamage::Entry { key, damage } => CheckpointError::EntryDamaged {
            folder: folder.to_path_buf(),
            scope,
            namespace,
            key: show_key(&key),
            damage,
        },
        PageDamage::Page(damage) => CheckpointError::PageDamaged {
            folder: folder.to_path_buf(),
            scope,
            namespace,
            bucket,
            damage,
        },
    }
}

/// A stored page, checked: its bytes and where its entries lie (empty if there is none).
pub(super) fn read_page(
    kv: &impl RawKv,
    scope: Scope,
    (namespace, set): (Namespace, u8),
    bucket: u32,
) -> Result<(Vec<u8>, Vec<EntrySpan>), CheckpointError> {
    let Some(bytes) = kv.get(&page_key_in(scope, namespace, set, bucket))? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let spans = entry::decode_page(scope, namespace, bucket, &bytes)
        .map_err(|d| page_damage(kv.folder(), scope, namespace, bucket, d))?;
    Ok((bytes, spans))
}

/// The changes of one namespace: key → new value, or `None` for a delete.
pub(super) type Changes<'a> = BTreeMap<&'a [u8], Option<&'a [u8]>>;

/// The batch's changes by namespace, each key once.
pub(super) fn changes_of(batch: &CheckpointBatch) -> BTreeMap<Namespace, Changes<'_>> {
    let mut all: BTreeMap<Namespace, Changes<'_>> = BTreeMap::new();
    let puts = batch
        .puts
        .iter()
        .map(|e| (e.namespace, &e.key[..], Some(&e.value[..])));
    let deletes = batch.deletes.iter().map(|(ns, key)| (*ns, &key[..], None));
    for (namespace, key, value) in puts.chain(deletes) {
        let fresh = all
            .entry(namespace)
            .or_default()
            .insert(key, value)
            .is_none();
        assert!(fresh, "{}: key twice in one batch", batch.scope);
    }
    all
}

/// One change: key, and new value or `None` for a delete.
pub(super) type Change<'a> = (&'a [u8], Option<&'a [u8]>);

/// A page's entries after a checkpoint, sorted by key.
type PageEntries<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Merges a page's stored entries with its changes, keeping the namespace's digest up to
/// date; `None` if nothing in it changes.
pub(super) fn merge_page<'a>(
    scope: Scope,
    namespace: Namespace,
    old: (&'a [u8], &[EntrySpan]),
    changes: &[Change<'a>],
    digest: &mut NamespaceDigest,
) -> Option<PageEntries<'a>> {
    let (bytes, spans) = old;
    let hash = |key: &[u8], value: &[u8]| entry::entry_hash(scope, namespace, key, value);
    let mut out = Vec::with_capacity(spans.len() + changes.len());
    let mut olds = spans
        .iter()
        .map(|s| (s.key(bytes), s.value(bytes)))
        .peekable();
    let mut changed = false;
    for &(key, value) in changes {
        while let Some(&(k, v)) = olds.peek().filter(|(k, _)| *k < key) {
            out.push((k, v));
            olds.next();
        }
        let old = olds.next_if(|(k, _)| *k == key).map(|(_, v)| v);
        let old_hash = old.map(|v| hash(key, v));
        let new_hash = value.map(|v| hash(key, v));
        if old_hash != new_hash {
            changed = true;
            if let Some(h) = old_hash {
                digest.remove(h);
            }
            if let Some(h) = new_hash {
                digest.add(h);
            }
        }
        if let Some(v) = value {
            out.push((key, v));
        }
    }
    out.extend(olds);
    changed.then_some(out)
}

/// What planning a checkpoint as one atomic batch found.
enum Plan {
    Atomic(RawBatch, ApplyStats),
    /// The atomic batch would not be bounded: the touched pages hold more stored entries
    /// than one batch may, or a namespace outgrows its buckets (every one of its pages
    /// rewritten). That goes through `rewrite`, a bounded chunk at a time.
    Rewrite,
}

/// Plans one namespace's changes: the touched pages rewritten (or removed when empty).
/// `Ok(false)` (nothing planned) when the namespace outgrows its buckets, or when its
/// touched pages, judged from the counts before any is read, take the stored entries left
/// to rewrite in `budget` (of one batch) below zero.
fn plan_namespace(
    kv: &impl RawKv,
    scope: Scope,
    namespace: Namespace,
    changes: &Changes<'_>,
    digest: &mut NamespaceDigest,
    (raw, budget): (&mut RawBatch, &mut u64),
) -> Result<bool, CheckpointError> {
    if digest.entries == 0 {
        digest.bucket_bits = bits_for(changes.values().filter(|v| v.is_some()).count() as u64);
    }
    let bits = digest.bucket_bits;
    let mut by_bucket: BTreeMap<u32, Vec<Change<'_>>> = BTreeMap::new();
    for (key, value) in changes {
        let bucket = entry::bucket_of(key, bits);
        by_bucket.entry(bucket).or_default().push((key, *value));
    }
    let per_page = digest.entries.div_ceil(1u64 << bits);
    match budget.checked_sub(by_bucket.len() as u64 * per_page) {
        Some(left) => *budget = left,
        None => return Ok(false),
    }
    let olds = by_bucket
        .keys()
        .map(|&bucket| read_page(kv, scope, (namespace, digest.set), bucket))
        .collect::<Result<Vec<_>, _>>()?;
    let mut merged = BTreeMap::new();
    for ((bucket, changes), (bytes, spans)) in by_bucket.iter().zip(&olds) {
        if let Some(page) = merge_page(scope, namespace, (bytes, spans), changes, digest) {
            merged.insert(*bucket, page);
        }
    }
    if bits_for(digest.entries) > bits {
        return Ok(false);
    }
    for (bucket, page) in merged {
        let key = page_key_in(scope, namespace, digest.set, bucket).to_vec();
        if page.is_empty() {
            raw.removes.push(key);
        } else {
            let frame = entry::encode_page(scope, namespace, bucket, page.into_iter());
            raw.puts.push((key, frame));
        }
    }
    Ok(true)
}

/// The namespace and page set of a page key.
pub(super) fn stored_namespace(key: &[u8]) -> (Namespace, u8) {
    let byte = key[SCOPE_PREFIX_BYTES];
    (Namespace(byte % entry::SET_BIT), byte / entry::SET_BIT)
}

pub(super) fn bucket_of_page_key(key: &[u8]) -> u32 {
    u32::from_be_bytes(
        key[SCOPE_PREFIX_BYTES + 1..PAGE_KEY_BYTES]
            .try_into()
            .expect("4 bytes"),
    )
}

/// Builds the raw batch of a checkpoint: the pages its entries fall in, each old value
/// XORed out of its namespace's digest and the new one XORed in, the layout records and
/// the new scope record. Reads and checks every page it rewrites.
fn plan_apply(kv: &impl RawKv, batch: &CheckpointBatch) -> Result<Plan, CheckpointError> {
    let started = Instant::now();
    assert_bounds(batch, kv.batch_entries_max());
    let scope = batch.scope;
    let mut record = record_to_extend(kv, scope)?;
    assert!(
        batch.lsn_covered >= record.lsn_covered,
        "{scope}: checkpoint LSN went backwards from {} to {}",
        record.lsn_covered,
        batch.lsn_covered
    );
    let mut raw = RawBatch::default();
    let mut budget = kv.batch_entries_max() as u64;
    for (namespace, changes) in changes_of(batch) {
        let digest = record.namespaces.entry(namespace).or_default();
        if !plan_namespace(
            kv,
            scope,
            namespace,
            &changes,
            digest,
            (&mut raw, &mut budget),
        )? {
            return Ok(Plan::Rewrite);
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
    let stats = ApplyStats {
        entries_put: batch.puts.len() as u64,
        entries_deleted: batch.deletes.len() as u64,
        pages_written: raw.puts.len() as u64,
        pages_removed: raw.removes.len() as u64,
        bytes_written: raw
            .puts
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum::<u64>()
            + raw.removes.iter().map(|k| k.len() as u64).sum::<u64>(),
        prepare: started.elapsed(),
        ..ApplyStats::default()
    };
    Ok(Plan::Atomic(raw, stats))
}

/// Applies a checkpoint through `kv`: plan, then one atomic, durable commit; or a rewrite
/// of the namespaces it changes (`rewrite`), in batches, for one whose atomic batch would
/// not be bounded: more entries than one batch may hold, pages holding more than that to
/// rewrite, or a namespace that outgrows its buckets (all its pages rewritten). Memory
/// then stays within a batch, whatever the size of the state (a namespace of 8,400,000
/// holds that grew in one batch took a shard past 24 GiB).
pub fn apply(kv: &impl RawKv, batch: &CheckpointBatch) -> Result<ApplyStats, CheckpointError> {
    if batch.puts.len() + batch.deletes.len() > kv.batch_entries_max() {
        return super::rewrite::apply(kv, batch);
    }
    let started = Instant::now();
    let (raw, mut stats) = match plan_apply(kv, batch)? {
        Plan::Atomic(raw, stats) => (raw, stats),
        Plan::Rewrite => return super::rewrite::apply(kv, batch),
    };
    let committed = kv.commit(raw)?;
    stats.write = committed.write;
    stats.flush = committed.flush;
    stats.sync = committed.sync;
    stats.files_synced = committed.files_synced;
    stats.dirs_synced = committed.dirs_synced;
    stats.total = started.elapsed();
    Ok(stats)
}

/// Checks one stored page, accounts its entries in `found` and returns where they lie.
fn check_page(
    folder: &Path,
    scope: Scope,
    key: &[u8],
    frame: &[u8],
    found: &mut ScopeRecord,
) -> Result<(Namespace, Vec<EntrySpan>), CheckpointError> {
    if key.len() != PAGE_KEY_BYTES {
        return Err(CheckpointError::UnknownKey {
            folder: folder.to_path_buf(),
            key: show_key(key),
        });
    }
    let (namespace, _) = stored_namespace(key);
    let bucket = bucket_of_page_key(key);
    let spans = entry::decode_page(scope, namespace, bucket, frame)
        .map_err(|d| page_damage(folder, scope, namespace, bucket, d))?;
    let digest = found.namespaces.entry(namespace).or_default();
    for s in &spans {
        digest.add(entry::entry_hash(
            scope,
            namespace,
            s.key(frame),
            s.value(frame),
        ));
    }
    Ok((namespace, spans))
}

/// Reads and verifies a scope, streaming: the scope record, every page's checksum before
/// the page is handed to `visitor` (borrowed from the store's buffer), then every
/// namespace's count and digest against the record. `Ok(None)`: no checkpoint, or the
/// visitor stopped.
pub fn load_each(
    kv: &impl RawKv,
    scope: Scope,
    visitor: &mut dyn PageVisitor,
) -> Result<Option<u64>, CheckpointError> {
    let folder = kv.folder();
    let expected = read_scope_record(kv, scope)?;
    for (namespace, d) in expected.iter().flat_map(|r| &r.namespaces) {
        visitor.expect(*namespace, d.entries);
    }
    let mut found = ScopeRecord::default();
    let mut outcome = Ok(());
    kv.scan_prefix(&pages_prefix(scope), &mut |key, frame| {
        if let (Some(record), true) = (&expected, key.len() == PAGE_KEY_BYTES) {
            let (namespace, set) = stored_namespace(key);
            if set != record.set_of(namespace) {
                // A leftover of a rewrite into the other page set (`rewrite`): not the
                // checkpoint, never read.
                return true;
            }
        }
        match check_page(folder, scope, key, frame, &mut found) {
            Ok((namespace, spans)) if expected.is_some() => {
                let page = PageRef::new(namespace, frame, &spans);
                if !visitor.page(page) {
                    outcome = Err(None);
                }
            }
            // Pages without a record: counted, reported below, never handed over.
            Ok(_) => {}
            Err(error) => outcome = Err(Some(error)),
        }
        outcome.is_ok()
    })?;
    match outcome {
        Err(Some(error)) => return Err(error),
        Err(None) => return Ok(None),
        Ok(()) => {}
    }
    let Some(expected) = expected else {
        if found.namespaces.is_empty() {
            return Ok(None);
        }
        return Err(CheckpointError::RecordMissing {
            folder: folder.to_path_buf(),
            scope,
            entries: found.entries(),
        });
    };
    compare(folder, scope, &expected, &found)?;
    Ok(Some(expected.lsn_covered))
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
        if (e.entries, e.digest) != (f.entries, f.digest) {
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

/// Removes a scope: its pages in chunks of `REMOVE_CHUNK_PAGES`, its record last.
pub fn remove_scope(kv: &impl RawKv, scope: Scope) -> Result<ApplyStats, CheckpointError> {
    let started = Instant::now();
    let mut total = ApplyStats::default();
    loop {
        let mut chunk = RawBatch::default();
        let mut entries = 0u64;
        kv.scan_prefix(&pages_prefix(scope), &mut |key, frame| {
            chunk.removes.push(key.to_vec());
            entries += entry::page_entry_count(frame);
            chunk.removes.len() < REMOVE_CHUNK_PAGES
        })?;
        let last = chunk.removes.is_empty();
        if last {
            chunk.removes.push(scope_key(scope).to_vec());
        } else {
            total.entries_deleted += entries;
            total.pages_removed += chunk.removes.len() as u64;
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
