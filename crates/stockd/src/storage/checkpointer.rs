//! A shard's checkpoints: its changed entries, encoded and written to the checkpoint store
//! off the shard's task, then the log below the covered LSN recycled.
//!
//! Entry layout (namespace → key → value, every value a `record` with version and CRC):
//! - POSITIONS: `{product}:{location}` → `PositionSnap`;
//! - HOLDS: hold ref → `HoldSnap`;
//! - IDEMPOTENCY: adjustment ref → empty record (the ref was applied);
//! - CHANNELS: channel ref → `ChannelConfig`;
//! - CATALOGUE: `p:{product}` → `ProductConfig`, `c:{category}` → `CategoryConfig`,
//!   `n:counters` → `(next_iq_id, next_event_seq)`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stockd_domain::{CheckpointDelta, ConfigSnap, Counters, EngineSnapshot};

use super::checkpoint::{
    BATCH_ENTRIES_MAX, CheckpointBatch, CheckpointStore, Entry, Loaded, Namespace, Scope, show_key,
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

/// Encodes a delta as one checkpoint batch.
pub fn encode(
    scope: Scope,
    lsn_covered: u64,
    delta: &Delta,
    config_keys: &ConfigKeys,
) -> CheckpointBatch {
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
    if let Some(ConfigSnap {
        channels,
        products,
        categories,
    }) = &delta.config
    {
        let mut keys = config_keys.lock().expect("config keys lock");
        let mut now = BTreeSet::new();
        for c in channels {
            now.insert((Namespace::CHANNELS, c.channel_ref.clone().into_bytes()));
            puts.push(put(
                Namespace::CHANNELS,
                c.channel_ref.clone(),
                record::encode(c),
            ));
        }
        for p in products {
            let key = format!("p:{}", p.product_ref);
            now.insert((Namespace::CATALOGUE, key.clone().into_bytes()));
            puts.push(put(Namespace::CATALOGUE, key, record::encode(p)));
        }
        for c in categories {
            let key = format!("c:{}", c.category);
            now.insert((Namespace::CATALOGUE, key.clone().into_bytes()));
            puts.push(put(Namespace::CATALOGUE, key, record::encode(c)));
        }
        deletes.extend(keys.difference(&now).cloned());
        *keys = now;
    }
    puts.push(put(
        Namespace::CATALOGUE,
        COUNTERS_KEY,
        record::encode(&delta.counters),
    ));
    CheckpointBatch {
        scope,
        lsn_covered,
        puts,
        deletes,
        meta: Vec::new(),
    }
}

/// Rebuilds a whole snapshot from a scope's loaded entries; also fills `config_keys`.
pub fn decode(loaded: &Loaded, config_keys: &ConfigKeys) -> Result<EngineSnapshot, String> {
    let mut config = ConfigSnap::default();
    let (mut positions, mut holds, mut adjustments) = (Vec::new(), Vec::new(), Vec::new());
    let mut counters = Counters::default();
    let mut keys = config_keys.lock().expect("config keys lock");
    keys.clear();
    for e in &loaded.entries {
        let bad =
            |err: record::RecordError| format!("{} key {}: {err}", e.namespace, show_key(&e.key));
        let is_config = match e.namespace {
            Namespace::POSITIONS => {
                positions.push(record::decode(&e.value).map_err(bad)?);
                false
            }
            Namespace::HOLDS => {
                holds.push(record::decode(&e.value).map_err(bad)?);
                false
            }
            Namespace::IDEMPOTENCY => {
                record::decode::<()>(&e.value).map_err(bad)?;
                adjustments.push(String::from_utf8_lossy(&e.key).into_owned());
                false
            }
            Namespace::CHANNELS => {
                config.channels.push(record::decode(&e.value).map_err(bad)?);
                true
            }
            Namespace::CATALOGUE if e.key == COUNTERS_KEY => {
                counters = record::decode(&e.value).map_err(bad)?;
                false
            }
            Namespace::CATALOGUE if e.key.starts_with(b"p:") => {
                config.products.push(record::decode(&e.value).map_err(bad)?);
                true
            }
            Namespace::CATALOGUE if e.key.starts_with(b"c:") => {
                config
                    .categories
                    .push(record::decode(&e.value).map_err(bad)?);
                true
            }
            other => {
                return Err(format!(
                    "{other} key {} belongs to no known kind",
                    show_key(&e.key)
                ));
            }
        };
        if is_config {
            keys.insert((e.namespace, e.key.clone()));
        }
    }
    Ok(EngineSnapshot::from_entries(
        config,
        positions,
        holds,
        adjustments,
        counters,
    ))
}

/// Writes a whole scope that is not live yet (a new generation before the layout record
/// names it) in batches of at most `BATCH_ENTRIES_MAX` entries: a crash part-way leaves a
/// scope nobody reads, which the next attempt removes first.
pub fn apply_unpublished(
    store: &dyn CheckpointStore,
    batch: CheckpointBatch,
) -> Result<(), super::StorageError> {
    let CheckpointBatch {
        scope,
        lsn_covered,
        mut puts,
        deletes,
        meta,
    } = batch;
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
        store.apply(&chunk)?;
    }
    Ok(())
}

/// One checkpoint, ready to run off the shard.
pub struct Job {
    pub shard: usize,
    pub scope: Scope,
    pub lsn_covered: u64,
    pub delta: Delta,
    pub store: Arc<dyn CheckpointStore>,
    pub writer: LogWriter,
    /// The log's durable LSN, published by its commit hook.
    pub durable_lsn: Arc<AtomicU64>,
    /// The log's live segment count (see `ShardLog`).
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

fn write(job: &Job, delta: &Delta) -> Result<usize, super::StorageError> {
    let deadline = Instant::now() + Duration::from_millis(CHECKPOINT_DURABLE_WAIT_MS);
    while job.durable_lsn.load(Ordering::Acquire) < job.lsn_covered {
        if Instant::now() >= deadline {
            return Err(super::StorageError::NotDurable(job.lsn_covered));
        }
        std::thread::sleep(Duration::from_millis(CHECKPOINT_DURABLE_POLL_MS));
    }
    let batch = encode(job.scope, job.lsn_covered, delta, &job.config_keys);
    let entries = batch.puts.len() + batch.deletes.len();
    if entries > BATCH_ENTRIES_MAX {
        // One batch is the unit of atomicity: a delta this large cannot be written whole.
        return Err(super::StorageError::CheckpointTooLarge {
            entries,
            max: BATCH_ENTRIES_MAX,
        });
    }
    job.store.apply(&batch)?;
    let truncated = job.writer.blocking_truncate_below(job.lsn_covered + 1)?;
    let gone = (truncated.recycled + truncated.removed) as i64;
    m::wal_segments(
        job.shard,
        job.segments.fetch_sub(gone, Ordering::Relaxed) - gone,
    );
    Ok(entries)
}
