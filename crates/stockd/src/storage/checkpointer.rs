//! A shard's checkpoints: its changed entries, encoded and written to the checkpoint store
//! off the shard's task, then the log below the covered LSN recycled.
//!
//! Entry layout (namespace → key → value, every value a `record` with version and CRC):
//! - POSITIONS: `{product}:{location}` → `PositionSnap`;
//! - HOLDS: hold ref → `HoldSnap`;
//! - IDEMPOTENCY: adjustment ref → empty record (the ref was applied);
//! - CHANNELS: channel ref → `ChannelConfig`;
//! - CATALOGUE: `p:{product}` → `ProductConfig`, `c:{category}` → `CategoryConfig`,
//!   `n:counters` → `(next_iq_id, next_event_seq)`, `l:{location}` → `LocationConfig`,
//!   `w:{channel}` → `ChannelNetwork` (the channel's network).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stockd_domain::refs::Prefetch;
use stockd_domain::{
    CheckpointDelta, ConfigSnap, Counters, Engine, HoldSnapRef, PositionSnapRef, Restorer, Settings,
};

use super::checkpoint::{
    ApplyStats, BATCH_ENTRIES_MAX, CheckpointBatch, CheckpointError, CheckpointStore, Entry,
    EntryRef, Loaded, Namespace, PageRef, PageVisitor, Scope, show_key,
};
use super::log::LogWriter;
use super::record;
use crate::limits::{CHECKPOINT_DURABLE_POLL_MS, CHECKPOINT_DURABLE_WAIT_MS};
use crate::metrics as m;

const COUNTERS_KEY: &[u8] = b"n:counters";

/// What a shard hands over for one checkpoint: copies of only what changed.
pub type Delta = CheckpointDelta;

fn put(namespace: Namespace, key: impl Into<Vec<u8>>, value: Vec<u8>) -> Entry {
    Entry {
        namespace,
        key: key.into(),
        value,
    }
}

/// The configuration keys a scope holds, so a new whole configuration deletes the ones
/// it no longer has.
pub type ConfigKeys = Arc<Mutex<BTreeSet<(Namespace, Vec<u8>)>>>;

/// A delta encoded as one checkpoint batch, and the configuration keys the scope holds
/// once the batch is written (`None`: unchanged).
pub struct Encoded {
    pub batch: CheckpointBatch,
    pub config_keys_after: Option<BTreeSet<(Namespace, Vec<u8>)>>,
}

impl Encoded {
    /// Records that the batch was written: the scope now holds exactly the configuration
    /// keys of this batch. Called only after a successful apply, so that a failed one
    /// leaves the old keys, and the next checkpoint still deletes what this one would have.
    pub fn written(self, config_keys: &ConfigKeys) -> CheckpointBatch {
        if let Some(now) = self.config_keys_after {
            *config_keys.lock().expect("config keys lock") = now;
        }
        self.batch
    }
}

/// Encodes a delta as one checkpoint batch. A new whole configuration deletes the keys
/// the scope holds (`config_keys`) that it no longer has; `config_keys` itself changes only
/// once the batch is written (`Encoded::written`).
pub fn encode(scope: Scope, lsn_covered: u64, delta: &Delta, config_keys: &ConfigKeys) -> Encoded {
    let mut puts = Vec::with_capacity(delta.entries() + 1);
    let mut deletes = Vec::new();
    for p in &delta.positions {
        let key = format!("{}:{}", p.product_ref, p.location_ref);
        puts.push(put(Namespace::POSITIONS, key, record::encode(p)));
    }
    for h in &delta.holds {
        puts.push(put(Namespace::HOLDS, h.hold_ref.clone(), record::encode(h)));
    }
    let written: BTreeSet<&str> = delta.holds.iter().map(|h| h.hold_ref.as_str()).collect();
    for r in &delta.holds_removed {
        if !written.contains(r.as_str()) {
            deletes.push((Namespace::HOLDS, r.clone().into_bytes()));
        }
    }
    for a in &delta.adjustments {
        puts.push(put(Namespace::IDEMPOTENCY, a.clone(), record::encode(&())));
    }
    let config_keys_after = delta.config.as_ref().map(|config| {
        let now = encode_config(config, &mut puts);
        let held = config_keys.lock().expect("config keys lock");
        deletes.extend(held.difference(&now).cloned());
        now
    });
    puts.push(put(
        Namespace::CATALOGUE,
        COUNTERS_KEY,
        record::encode(&delta.counters),
    ));
    Encoded {
        batch: CheckpointBatch {
            scope,
            lsn_covered,
            puts,
            deletes,
            meta: Vec::new(),
        },
        config_keys_after,
    }
}

/// The entries of a whole configuration; returns their keys.
fn encode_config(config: &ConfigSnap, puts: &mut Vec<Entry>) -> BTreeSet<(Namespace, Vec<u8>)> {
    let mut keys = BTreeSet::new();
    for c in &config.channels {
        keys.insert((Namespace::CHANNELS, c.channel_ref.clone().into_bytes()));
        puts.push(put(
            Namespace::CHANNELS,
            c.channel_ref.clone(),
            record::encode(c),
        ));
    }
    for p in &config.products {
        let key = format!("p:{}", p.product_ref);
        keys.insert((Namespace::CATALOGUE, key.clone().into_bytes()));
        puts.push(put(Namespace::CATALOGUE, key, record::encode(p)));
    }
    for c in &config.categories {
        let key = format!("c:{}", c.category);
        keys.insert((Namespace::CATALOGUE, key.clone().into_bytes()));
        puts.push(put(Namespace::CATALOGUE, key, record::encode(c)));
    }
    for l in &config.network.locations {
        let key = format!("l:{}", l.location_ref);
        keys.insert((Namespace::CATALOGUE, key.clone().into_bytes()));
        puts.push(put(Namespace::CATALOGUE, key, record::encode(l)));
    }
    for n in &config.network.networks {
        let key = format!("w:{}", n.channel_ref);
        keys.insert((Namespace::CATALOGUE, key.clone().into_bytes()));
        puts.push(put(Namespace::CATALOGUE, key, record::encode(n)));
    }
    keys
}

/// Why a scope could not be restored: the store found damage (or failed), or a verified
/// entry does not decode into the state it should hold.
#[derive(Debug)]
pub enum RestoreError {
    Store(CheckpointError),
    Entry(String),
}

/// Rebuilds a shard's engine while the store streams its verified pages: each entry is
/// decoded where it lies in the store's buffer (refs borrowed) straight into the engine: no
/// copy of a page, no whole snapshot, no sort, no copy of a ref. The engine is returned
/// only once the store checked the whole checkpoint (counts and digests, at the end of
/// the load): a damaged one is dropped, never used. Also fills `config_keys`. The engine
/// is not checked yet: the caller checks it once its log is replayed
/// (`Engine::check_consistency`). `None`: the scope was never checkpointed.
pub fn restore_scope(
    store: &dyn CheckpointStore,
    scope: Scope,
    settings: &Settings,
    config_keys: &ConfigKeys,
) -> Result<Option<Restored>, RestoreError> {
    let mut shard = ShardRestore::new(settings);
    let covered = store
        .load_each(scope, &mut shard)
        .map_err(RestoreError::Store)?;
    if let Some(error) = shard.error {
        return Err(RestoreError::Entry(error));
    }
    let Some(covered) = covered else {
        return Ok(None);
    };
    let (pages, entries, decode) = (shard.pages, shard.entries, shard.decode);
    let engine = shard.finish(config_keys).map_err(RestoreError::Entry)?;
    Ok(Some(Restored {
        engine,
        lsn_covered: covered,
        pages,
        entries,
        decode,
    }))
}

/// A restored scope and what its restore cost.
pub struct Restored {
    pub engine: Engine,
    /// Replay the log from here.
    pub lsn_covered: u64,
    pub pages: usize,
    pub entries: usize,
    /// Time spent decoding entries into the engine (the rest of the load is the store's
    /// reading and checking).
    pub decode: Duration,
}

/// `restore_scope` from pages already loaded (and verified) whole.
pub fn restore(
    loaded: &Loaded,
    settings: &Settings,
    config_keys: &ConfigKeys,
) -> Result<Engine, String> {
    let mut shard = ShardRestore::new(settings);
    for page in &loaded.pages {
        if !shard.page(page.as_page_ref()) {
            break;
        }
    }
    match shard.error.take() {
        Some(error) => Err(error),
        None => shard.finish(config_keys),
    }
}

/// The state of a restore between pages.
struct ShardRestore {
    restorer: Restorer,
    /// Entries the scope record counts (positions, holds), to size the tables once.
    expected: (usize, usize),
    reserved: bool,
    config: ConfigSnap,
    counters: Counters,
    keys: BTreeSet<(Namespace, Vec<u8>)>,
    /// Why the restore stopped (an entry that does not decode).
    error: Option<String>,
    pages: usize,
    entries: usize,
    decode: Duration,
}

impl ShardRestore {
    fn new(settings: &Settings) -> ShardRestore {
        ShardRestore {
            restorer: Restorer::empty(settings.clone()),
            expected: (0, 0),
            reserved: false,
            config: ConfigSnap::default(),
            counters: Counters::default(),
            keys: BTreeSet::new(),
            error: None,
            pages: 0,
            entries: 0,
            decode: Duration::ZERO,
        }
    }

    /// One decoded entry into the engine (configuration entries are kept for `finish`).
    fn restore(&mut self, d: &Decoded<'_>) -> Result<(), String> {
        match d {
            Decoded::Position(position) => {
                self.restorer.position(position);
                Ok(())
            }
            Decoded::Hold(hold) => self.restorer.hold(hold),
            Decoded::Other(e) => self.other(*e),
        }
    }

    /// Starts loading what restoring `d` looks up (only a hint).
    fn prefetch(&self, d: &Decoded<'_>, stage: Prefetch) {
        match d {
            Decoded::Position(position) => self.restorer.prefetch_position(position, stage),
            Decoded::Hold(hold) => self.restorer.prefetch_hold(hold, stage),
            Decoded::Other(_) => {}
        }
    }

    /// An entry other than a position or a hold.
    fn other(&mut self, e: EntryRef<'_>) -> Result<(), String> {
        let bad = |err| bad_entry(&e, err);
        match e.namespace {
            Namespace::IDEMPOTENCY => {
                record::decode::<()>(e.value).map_err(bad)?;
                self.restorer.adjustment(&String::from_utf8_lossy(e.key));
            }
            Namespace::CHANNELS => {
                self.config
                    .channels
                    .push(record::decode(e.value).map_err(bad)?);
                self.keys.insert((e.namespace, e.key.to_vec()));
            }
            Namespace::CATALOGUE => self.catalogue(e)?,
            other => {
                return Err(format!(
                    "{other} key {} belongs to no known kind",
                    show_key(e.key)
                ));
            }
        }
        Ok(())
    }

    /// A catalogue entry: a product, a category, or the counters.
    fn catalogue(&mut self, e: EntryRef<'_>) -> Result<(), String> {
        let bad =
            |err: record::RecordError| format!("{} key {}: {err}", e.namespace, show_key(e.key));
        if e.key == COUNTERS_KEY {
            self.counters = record::decode(e.value).map_err(bad)?;
            return Ok(());
        }
        if e.key.starts_with(b"p:") {
            let product = record::decode(e.value).map_err(bad)?;
            self.config.products.push(product);
        } else if e.key.starts_with(b"c:") {
            let category = record::decode(e.value).map_err(bad)?;
            self.config.categories.push(category);
        } else if e.key.starts_with(b"l:") {
            let location = record::decode(e.value).map_err(bad)?;
            self.config.network.locations.push(location);
        } else if e.key.starts_with(b"w:") {
            let network = record::decode(e.value).map_err(bad)?;
            self.config.network.networks.push(network);
        } else {
            return Err(format!(
                "{} key {} belongs to no known kind",
                e.namespace,
                show_key(e.key)
            ));
        }
        self.keys.insert((e.namespace, e.key.to_vec()));
        Ok(())
    }

    /// The engine, configured; `config_keys` now holds the scope's configuration keys.
    fn finish(self, config_keys: &ConfigKeys) -> Result<Engine, String> {
        let mut restorer = self.restorer;
        restorer.configure(self.config, self.counters)?;
        *config_keys.lock().expect("config keys lock") = self.keys;
        Ok(restorer.finish_unchecked())
    }
}

impl PageVisitor for ShardRestore {
    fn expect(&mut self, namespace: Namespace, entries: u64) {
        let entries = usize::try_from(entries).unwrap_or(0);
        match namespace {
            Namespace::POSITIONS => self.expected.0 = entries,
            Namespace::HOLDS => self.expected.1 = entries,
            _ => {}
        }
    }

    fn page(&mut self, page: PageRef<'_>) -> bool {
        let started = Instant::now();
        if !self.reserved {
            self.reserved = true;
            self.restorer.reserve(self.expected.0, self.expected.1);
        }
        self.pages += 1;
        self.entries += page.len();
        // Decoded first (up to the first entry that does not decode), then restored in
        // order: `RESTORE_LOOKAHEAD` entries ahead its refs' table slots are prefetched,
        // half as far ahead (those slots now in cache) their texts.
        let mut failed = None;
        let mut decoded = Vec::with_capacity(page.len());
        for e in page.entries() {
            match decode_entry(e) {
                Ok(d) => decoded.push(d),
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        let half = RESTORE_LOOKAHEAD / 2;
        for d in decoded.iter().take(RESTORE_LOOKAHEAD) {
            self.prefetch(d, Prefetch::Slot);
        }
        for d in decoded.iter().take(half) {
            self.prefetch(d, Prefetch::Text);
        }
        for (i, d) in decoded.iter().enumerate() {
            if let Some(ahead) = decoded.get(i + RESTORE_LOOKAHEAD) {
                self.prefetch(ahead, Prefetch::Slot);
            }
            if let Some(ahead) = decoded.get(i + half) {
                self.prefetch(ahead, Prefetch::Text);
            }
            if let Err(error) = self.restore(d) {
                failed = Some(error);
                break;
            }
        }
        self.decode += started.elapsed();
        match failed {
            Some(error) => {
                self.error = Some(error);
                false
            }
            None => true,
        }
    }
}

/// Entries a restore decodes ahead of the one it restores, prefetching their refs, so that
/// the cache misses of their lookups overlap instead of waiting one after the other.
const RESTORE_LOOKAHEAD: usize = 8;

/// One stored entry, decoded (refs borrowed from its page), ready to restore.
enum Decoded<'a> {
    Position(PositionSnapRef<'a>),
    Hold(HoldSnapRef<'a>),
    /// Configuration, counters or an idempotency ref (or an unknown kind): small and few,
    /// decoded when restored.
    Other(EntryRef<'a>),
}

/// What a restore says of an entry whose value does not decode: its namespace and key.
fn bad_entry(e: &EntryRef<'_>, err: record::RecordError) -> String {
    format!("{} key {}: {err}", e.namespace, show_key(e.key))
}

fn decode_entry(e: EntryRef<'_>) -> Result<Decoded<'_>, String> {
    let bad = |err| bad_entry(&e, err);
    Ok(match e.namespace {
        Namespace::POSITIONS => Decoded::Position(record::decode_borrowed(e.value).map_err(bad)?),
        Namespace::HOLDS => Decoded::Hold(record::decode_borrowed(e.value).map_err(bad)?),
        _ => Decoded::Other(e),
    })
}

/// Writes a whole scope that is not live yet (a new generation before the layout record
/// names it) in batches of at most `BATCH_ENTRIES_MAX` entries: a crash part-way leaves a
/// scope nobody reads, which the next attempt removes first.
pub fn apply_unpublished(
    store: &dyn CheckpointStore,
    encoded: Encoded,
    config_keys: &ConfigKeys,
) -> Result<ApplyStats, super::StorageError> {
    let config_keys_after = encoded.config_keys_after;
    let mut total = ApplyStats::default();
    let CheckpointBatch {
        scope,
        lsn_covered,
        mut puts,
        deletes,
        meta,
    } = encoded.batch;
    assert!(
        deletes.is_empty() && meta.is_empty(),
        "a new scope deletes nothing"
    );
    while !puts.is_empty() {
        let rest = puts.split_off(puts.len().min(BATCH_ENTRIES_MAX));
        let chunk = CheckpointBatch {
            scope,
            lsn_covered,
            puts: std::mem::replace(&mut puts, rest),
            deletes: Vec::new(),
            meta: Vec::new(),
        };
        let stats = store.apply(&chunk)?;
        total.entries_put += stats.entries_put;
        total.pages_written += stats.pages_written;
        total.bytes_written += stats.bytes_written;
        total.total += stats.total;
    }
    if let Some(now) = config_keys_after {
        *config_keys.lock().expect("config keys lock") = now;
    }
    Ok(total)
}

/// One checkpoint, ready to run off the shard.
pub struct Job {
    pub shard: usize,
    pub scope: Scope,
    pub lsn_covered: u64,
    pub delta: Delta,
    pub store: Arc<dyn CheckpointStore>,
    /// The writer of the log the shard shares, its stream there, and which log it is.
    pub writer: LogWriter,
    pub stream: u32,
    pub log_index: usize,
    /// The shard's sequence up to which its records are durable (`ShardLog`).
    pub durable_seq: Arc<AtomicU64>,
    /// The log's live segment count (see `LogGroup`).
    pub segments: Arc<AtomicI64>,
    pub config_keys: ConfigKeys,
    /// Where a failed checkpoint leaves its delta, for the shard to merge into its next
    /// one (`CheckpointDelta::merge`), so nothing it carried (removals included) is lost.
    pub failed: Arc<Mutex<Option<Delta>>>,
}

/// Runs a checkpoint on a blocking thread: waits until the log is durable up to the LSN
/// it covers, writes the batch, then recycles the log below it. A failure keeps the log.
pub fn run(mut job: Job) {
    let started = Instant::now();
    let shard = job.shard;
    let delta = std::mem::take(&mut job.delta);
    match write(&job, &delta) {
        Ok(entries) => {
            m::checkpoint_written(started.elapsed(), entries);
            tracing::debug!(
                shard,
                lsn_covered = job.lsn_covered,
                entries,
                "checkpoint written"
            );
        }
        Err(e) => {
            *job.failed.lock().expect("failed checkpoint slot") = Some(delta);
            tracing::warn!(shard, error = %e, "checkpoint failed; the log is kept, the next checkpoint carries this one's entries too");
        }
    }
}

/// Encodes and writes one checkpoint; the configuration keys change only if it was
/// written. Returns the entries written and deleted.
pub fn write_batch(
    store: &dyn CheckpointStore,
    scope: Scope,
    lsn_covered: u64,
    delta: &Delta,
    config_keys: &ConfigKeys,
) -> Result<usize, super::StorageError> {
    let encoded = encode(scope, lsn_covered, delta, config_keys);
    let batch = &encoded.batch;
    let entries = batch.puts.len() + batch.deletes.len();
    // A batch over BATCH_ENTRIES_MAX is written by the store in several batches, published
    // by its scope record alone (`checkpoint::rewrite`).
    store.apply(batch)?;
    encoded.written(config_keys);
    Ok(entries)
}

fn write(job: &Job, delta: &Delta) -> Result<usize, super::StorageError> {
    let deadline = Instant::now() + Duration::from_millis(CHECKPOINT_DURABLE_WAIT_MS);
    while job.durable_seq.load(Ordering::Acquire) < job.lsn_covered {
        if Instant::now() >= deadline {
            return Err(super::StorageError::NotDurable(job.lsn_covered));
        }
        std::thread::sleep(Duration::from_millis(CHECKPOINT_DURABLE_POLL_MS));
    }
    let entries = write_batch(
        job.store.as_ref(),
        job.scope,
        job.lsn_covered,
        delta,
        &job.config_keys,
    )?;
    // Recycles what no shard of the log needs any more.
    let truncated = job.writer.blocking_covered(job.stream, job.lsn_covered)?;
    let gone = (truncated.recycled + truncated.removed) as i64;
    m::wal_segments(
        job.log_index,
        job.segments.fetch_sub(gone, Ordering::Relaxed) - gone,
    );
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::checkpoint::{Fault, SimStore};
    use stockd_domain::ChannelConfig;

    const SCOPE: Scope = Scope {
        generation: 0,
        shard: 0,
    };

    fn with_channels(refs: &[&str]) -> Delta {
        let channels = refs
            .iter()
            .map(|r| ChannelConfig {
                channel_ref: r.to_string(),
                ..Default::default()
            })
            .collect();
        Delta {
            config: Some(ConfigSnap {
                channels,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn stored_channels(store: &SimStore) -> Vec<String> {
        let loaded = store.load(SCOPE).unwrap().unwrap();
        let engine = restore(&loaded, &Settings::default(), &ConfigKeys::default()).unwrap();
        let mut refs: Vec<String> = engine.channels().map(|c| c.channel_ref.clone()).collect();
        refs.sort();
        refs
    }

    #[test]
    fn a_delta_larger_than_one_batch_is_written_and_restores_whole() {
        let store = SimStore::with_batch_entries_max(3, 16);
        let settings = Settings::default();
        let mut engine = Engine::new(settings.clone());
        engine
            .upsert_channel(ChannelConfig {
                channel_ref: "WEB".into(),
                ..Default::default()
            })
            .unwrap();
        for i in 0..40 {
            let count = stockd_domain::StockCount {
                product_ref: format!("SKU-{i}"),
                location_ref: "DC1".into(),
                quantity: 5,
                as_of: 1,
            };
            engine.set_stock(1, &count).unwrap();
        }
        let delta = engine.take_checkpoint_delta();
        let keys = ConfigKeys::default();
        let entries = write_batch(&store, SCOPE, 7, &delta, &keys).unwrap();
        assert!(entries > 16, "{entries} entries: more than one batch holds");
        let loaded = store.load(SCOPE).unwrap().unwrap();
        assert_eq!(loaded.lsn_covered, 7);
        let restored = restore(&loaded, &settings, &ConfigKeys::default()).unwrap();
        assert_eq!(restored.snapshot(), engine.snapshot());
    }

    #[test]
    fn a_channel_deleted_by_a_failed_checkpoint_is_deleted_by_the_next_one() {
        let store = SimStore::new(1);
        let keys = ConfigKeys::default();
        write_batch(&store, SCOPE, 1, &with_channels(&["SOCIAL", "WEB"]), &keys).unwrap();
        // SOCIAL is deleted; the checkpoint that carries it fails.
        let failed = with_channels(&["WEB"]);
        store.inject(Fault::DiskFull);
        assert!(write_batch(&store, SCOPE, 2, &failed, &keys).is_err());
        assert_eq!(stored_channels(&store), ["SOCIAL", "WEB"]);
        // The next checkpoint writes the failed delta merged with what changed since
        // (nothing of the configuration), as the shard does.
        let next = failed.merge(Delta::default());
        write_batch(&store, SCOPE, 3, &next, &keys).unwrap();
        assert_eq!(stored_channels(&store), ["WEB"]);
        let held: Vec<_> = keys.lock().unwrap().iter().cloned().collect();
        assert_eq!(held, [(Namespace::CHANNELS, b"WEB".to_vec())]);
    }

    /// Locations and networks are written as catalogue entries and restored whole; a
    /// location gone from the next configuration is deleted.
    #[test]
    fn locations_and_networks_round_trip() {
        use stockd_domain::{ChannelNetwork, LocationConfig, NetworkSnap};
        let store = SimStore::new(1);
        let keys = ConfigKeys::default();
        let loc = |r: &str| LocationConfig {
            location_ref: r.into(),
            priority: 3,
            ..Default::default()
        };
        let with = |locations: Vec<LocationConfig>| {
            let mut delta = with_channels(&["WEB"]);
            let config = delta.config.as_mut().unwrap();
            config.network = NetworkSnap {
                networks: vec![ChannelNetwork {
                    channel_ref: "WEB".into(),
                    network_ref: "online".into(),
                    all_locations: false,
                    locations: vec!["DC1".into()],
                }],
                locations,
            };
            delta
        };
        write_batch(&store, SCOPE, 1, &with(vec![loc("DC1"), loc("DC2")]), &keys).unwrap();
        write_batch(&store, SCOPE, 2, &with(vec![loc("DC1")]), &keys).unwrap();
        let loaded = store.load(SCOPE).unwrap().unwrap();
        let engine = restore(&loaded, &Settings::default(), &ConfigKeys::default()).unwrap();
        assert_eq!(
            engine.network_snap(),
            with(vec![loc("DC1")]).config.unwrap().network
        );
    }
}
