//! A checkpoint too large for one atomic batch (more than `RawKv::batch_entries_max`
//! entries: a delta that kept failing and carried the earlier ones, or the first
//! checkpoint after a long replay), written safely in several batches.
//!
//! Every namespace it changes is rewritten whole into its other page set (the set bit of
//! the namespace byte in the page keys), in batches of at most `batch_entries_max`
//! entries. Only then is the scope record written, in one atomic batch: it names the new
//! sets, with the new LSN, counts and digests. Until that write, a load reads the old
//! record and the old set's pages, which are untouched: the whole previous checkpoint, and
//! the log from its LSN is still there. After it, a load reads the new checkpoint, whole.
//! So no load ever sees pages newer than its record's LSN, and replay never runs on top of
//! a half-written state. Then the old set's pages are removed.
//!
//! Pages of the set a namespace is not in are leftovers (of a rewrite that a crash cut
//! before its record, or after it, before their removal): a load skips them and the next
//! rewrite into that set removes them first.

use std::collections::BTreeMap;
use std::time::Instant;

use super::entry::{self, EntrySpan, NamespaceDigest};
use super::layout::{self, Change, Changes, RawBatch, RawKv};
use super::{ApplyStats, CheckpointBatch, CheckpointError, Namespace, REMOVE_CHUNK_PAGES, Scope};

/// A page's entries after the checkpoint, sorted by key.
type Entries<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Writes a checkpoint of any size as described above; durable when it returns `Ok`.
pub fn apply(kv: &impl RawKv, batch: &CheckpointBatch) -> Result<ApplyStats, CheckpointError> {
    let started = Instant::now();
    layout::assert_entry_bounds(batch);
    let scope = batch.scope;
    let mut record = layout::record_to_extend(kv, scope)?;
    assert!(
        batch.lsn_covered >= record.lsn_covered,
        "{scope}: checkpoint LSN went backwards from {} to {}",
        record.lsn_covered,
        batch.lsn_covered
    );
    let mut stats = ApplyStats {
        entries_put: batch.puts.len() as u64,
        entries_deleted: batch.deletes.len() as u64,
        ..ApplyStats::default()
    };
    let mut replaced = Vec::new();
    for (namespace, changes) in layout::changes_of(batch) {
        let old = record
            .namespaces
            .get(&namespace)
            .copied()
            .unwrap_or_default();
        let target = 1 - old.set;
        remove_pages(kv, scope, (namespace, target), &mut stats)?;
        let new = rewrite_namespace(kv, scope, namespace, old, target, &changes, &mut stats)?;
        record.namespaces.insert(namespace, new);
        replaced.push((namespace, old.set));
    }
    record.lsn_covered = batch.lsn_covered;
    record.prune();
    let mut publish = RawBatch::default();
    for m in &batch.meta {
        let value = entry::encode_meta(&m.name, &m.value);
        publish.puts.push((layout::meta_key(&m.name), value));
    }
    let record_bytes = entry::encode_scope_record(scope, &record);
    publish
        .puts
        .push((layout::scope_key(scope).to_vec(), record_bytes));
    commit(kv, publish, &mut stats)?;
    for old in replaced {
        remove_pages(kv, scope, old, &mut stats)?;
    }
    stats.total = started.elapsed();
    Ok(stats)
}

/// Rewrites one namespace, merged with its changes, into page set `target`; returns its
/// new count, digest and paging. Reads and checks every old page.
fn rewrite_namespace(
    kv: &impl RawKv,
    scope: Scope,
    namespace: Namespace,
    old: NamespaceDigest,
    target: u8,
    changes: &Changes<'_>,
    stats: &mut ApplyStats,
) -> Result<NamespaceDigest, CheckpointError> {
    let old_bits = if old.entries == 0 { 0 } else { old.bucket_bits };
    let puts = changes.values().filter(|v| v.is_some()).count() as u64;
    // At least the old bits, so each new page takes its entries from one old page.
    let bits = old_bits.max(layout::bits_for(old.entries + puts));
    let mut by_bucket: BTreeMap<u32, Vec<Change<'_>>> = BTreeMap::new();
    for (key, value) in changes {
        let bucket = entry::bucket_of(key, old_bits);
        by_bucket.entry(bucket).or_default().push((key, *value));
    }
    let mut new = NamespaceDigest {
        bucket_bits: bits,
        set: target,
        ..NamespaceDigest::default()
    };
    let limit = kv.batch_entries_max();
    let mut chunk = (RawBatch::default(), 0usize);
    for bucket in 0..1u32 << old_bits {
        let changes = by_bucket.get(&bucket).map_or(&[][..], Vec::as_slice);
        let (bytes, spans) = match old.entries {
            0 => (Vec::new(), Vec::new()),
            _ => layout::read_page(kv, scope, (namespace, old.set), bucket)?,
        };
        let mut pages: BTreeMap<u32, Entries<'_>> = BTreeMap::new();
        for (key, value) in merged(&bytes, &spans, changes) {
            let page = pages.entry(entry::bucket_of(key, bits)).or_default();
            page.push((key, value));
        }
        for (page_bucket, entries) in pages {
            for (key, value) in &entries {
                new.add(entry::entry_hash(scope, namespace, key, value));
            }
            if chunk.1 + entries.len() > limit && !chunk.0.puts.is_empty() {
                commit(kv, std::mem::take(&mut chunk.0), stats)?;
                chunk.1 = 0;
            }
            chunk.1 += entries.len();
            let key = layout::page_key_in(scope, namespace, target, page_bucket);
            let frame = entry::encode_page(scope, namespace, page_bucket, entries.into_iter());
            chunk.0.puts.push((key.to_vec(), frame));
        }
    }
    if !chunk.0.puts.is_empty() {
        commit(kv, chunk.0, stats)?;
    }
    Ok(new)
}

/// A page's stored entries merged with its changes (both sorted by key).
fn merged<'a>(bytes: &'a [u8], spans: &[EntrySpan], changes: &[Change<'a>]) -> Entries<'a> {
    let mut out = Vec::with_capacity(spans.len() + changes.len());
    let mut olds = spans
        .iter()
        .map(|s| (s.key(bytes), s.value(bytes)))
        .peekable();
    for &(key, value) in changes {
        while let Some(&(k, v)) = olds.peek().filter(|(k, _)| *k < key) {
            out.push((k, v));
            olds.next();
        }
        olds.next_if(|(k, _)| *k == key);
        if let Some(v) = value {
            out.push((key, v));
        }
    }
    out.extend(olds);
    out
}

/// Removes every page of a namespace's page set, `REMOVE_CHUNK_PAGES` a batch.
fn remove_pages(
    kv: &impl RawKv,
    scope: Scope,
    (namespace, set): (Namespace, u8),
    stats: &mut ApplyStats,
) -> Result<(), CheckpointError> {
    let prefix = layout::namespace_prefix(scope, namespace, set);
    loop {
        let mut chunk = RawBatch::default();
        kv.scan_prefix(&prefix, &mut |key, _| {
            chunk.removes.push(key.to_vec());
            chunk.removes.len() < REMOVE_CHUNK_PAGES
        })?;
        if chunk.removes.is_empty() {
            return Ok(());
        }
        stats.pages_removed += chunk.removes.len() as u64;
        commit(kv, chunk, stats)?;
    }
}

/// One durable batch, accounted in `stats`.
fn commit(kv: &impl RawKv, raw: RawBatch, stats: &mut ApplyStats) -> Result<(), CheckpointError> {
    stats.pages_written += raw.puts.len() as u64;
    stats.bytes_written += raw
        .puts
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum::<u64>()
        + raw.removes.iter().map(|k| k.len() as u64).sum::<u64>();
    let committed = kv.commit(raw)?;
    stats.write += committed.write;
    stats.flush += committed.flush;
    stats.sync += committed.sync;
    stats.files_synced += committed.files_synced;
    stats.dirs_synced += committed.dirs_synced;
    Ok(())
}
