//! Every metric stockd exports, declared in one place.
//!
//! Names are prefixed `stockd_` and carry their unit. Latencies are real histograms with
//! explicit buckets (25 µs to 1 s, dense below 1 ms) so Prometheus can aggregate them
//! across pods. No product, location, hold or order ref is ever a label: label sets stay
//! bounded however large the catalogue (channels are configured, so they are bounded).
//!
//! The per-request metrics (the RPC histogram, the shard message counter, a Reserve's
//! outcome) are recorded through handles registered once and kept in small caches here:
//! `histogram!` and `counter!` build a `Key` (a vector of labels, allocated), hash it and
//! look it up in the recorder's registry on every call, about 2 µs of a Reserve's CPU in
//! the profile (README, "Where a request's server CPU goes"). A cached handle is an `Arc`
//! clone. The caches hold the recorder installed when they were first used, so `install`
//! runs before anything is recorded (the binary does it before serving).

use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use rustc_hash::FxHashMap;

pub const RPC_DURATION: &str = "stockd_rpc_duration_seconds";
pub const RESERVE_OUTCOMES: &str = "stockd_reserve_outcomes_total";
pub const ACTIVE_HOLDS: &str = "stockd_active_holds";
pub const HOLD_EVENTS: &str = "stockd_hold_events_total";
pub const STOCKOUTS: &str = "stockd_stockouts_total";
pub const POSITIONS: &str = "stockd_positions";
pub const MAILBOX_DEPTH: &str = "stockd_shard_mailbox_depth";
pub const BATCH_SIZE: &str = "stockd_shard_batch_size";
pub const REJECTED_OVERLOAD: &str = "stockd_shard_overloaded_total";
pub const WAL_FLUSH_DURATION: &str = "stockd_wal_flush_duration_seconds";
pub const WAL_CHANGES_PER_FLUSH: &str = "stockd_wal_changes_per_flush";
pub const WAL_BYTES: &str = "stockd_wal_written_bytes_total";
pub const SNAPSHOT_DURATION: &str = "stockd_snapshot_duration_seconds";
pub const WAL_FSYNC_DURATION: &str = "stockd_wal_fsync_duration_seconds";
pub const WAL_SEGMENTS: &str = "stockd_wal_segments";
pub const EVENTS_STORED: &str = "stockd_events_stored_total";
pub const EVENTS_BYTES: &str = "stockd_events_written_bytes_total";
pub const EVENTS_FSYNC_DURATION: &str = "stockd_events_fsync_duration_seconds";
pub const EVENTS_SEGMENTS: &str = "stockd_events_segments";
pub const EVENTS_FAILED: &str = "stockd_events_log_failed";
pub const EVENTS_WATCHERS: &str = "stockd_events_watchers";
pub const EVENTS_WATCH_ENDED: &str = "stockd_events_watch_ended_total";
pub const CHECKPOINT_DURATION: &str = "stockd_checkpoint_duration_seconds";
pub const CHECKPOINT_ENTRIES: &str = "stockd_checkpoint_entries";
pub const RECOVERY_DURATION: &str = "stockd_recovery_duration_seconds";
pub const SHARD_MESSAGES: &str = "stockd_shard_messages_total";
pub const FULFILMENT_OPTIONS: &str = "stockd_fulfilment_options_total";
pub const FULFILMENT_STOCKOUT_UNITS: &str = "stockd_fulfilment_stockout_units_total";

/// Latency buckets in seconds: dense below 1 ms, where a reserve should land.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_075, 0.000_1, 0.000_15, 0.000_2, 0.000_3, 0.000_4, 0.000_5,
    0.000_75, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Count buckets for batch sizes and changes per flush.
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// The Prometheus endpoint cannot start (the address is taken, or a recorder exists).
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {source}")]
pub struct MetricsError {
    pub addr: SocketAddr,
    pub source: metrics_exporter_prometheus::BuildError,
}

/// Installs the Prometheus recorder and its HTTP listener on `addr` (`/metrics`).
pub fn install(addr: SocketAddr) -> Result<(), MetricsError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), COUNT_BUCKETS))
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(WAL_CHANGES_PER_FLUSH.into()), COUNT_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(CHECKPOINT_ENTRIES.into()), COUNT_BUCKETS)
        })
        .and_then(|b| b.install())
        .map_err(|source| MetricsError { addr, source })?;
    describe();
    Ok(())
}

/// HELP texts and units for every metric.
pub fn describe() {
    describe_service();
    describe_shards();
    describe_storage();
    describe_security();
    describe_counter!(
        SHARD_MESSAGES,
        Unit::Count,
        "Messages a shard's mailbox accepted (count) by kind: reserve, undo, hold, confirm, release, fulfil, fulfil_check, cancel, list_holds, order, read, stock, config, expire."
    );
}

/// The metrics of the gRPC layer and of holds.
fn describe_service() {
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "Time to answer a gRPC call, in seconds, by service, method and status code."
    );
    describe_counter!(
        RESERVE_OUTCOMES,
        Unit::Count,
        "Reserve calls (count) by channel and outcome (reserved, partial, rejected)."
    );
    describe_gauge!(
        ACTIVE_HOLDS,
        Unit::Count,
        "Holds currently active (count), by channel and shard."
    );
    describe_counter!(
        HOLD_EVENTS,
        Unit::Count,
        "Hold lifecycle events (count) by channel: created, updated, confirmed, released, expired."
    );
    describe_counter!(
        STOCKOUTS,
        Unit::Count,
        "Reserve calls rejected for lack of stock (count), by channel."
    );
    describe_counter!(
        FULFILMENT_OPTIONS,
        Unit::Count,
        "GetFulfilmentOptions answers (count) by channel, delivery (home_delivery, click_and_collect) and result (single, split, held, stockout)."
    );
    describe_counter!(
        FULFILMENT_STOCKOUT_UNITS,
        Unit::Count,
        "Units of GetFulfilmentOptions stockouts (count) by channel and quantity: requested, and available over the candidate locations."
    );
}

/// Counts a GetFulfilmentOptions answer; a stockout also counts its requested and
/// available units (the RESERVE_REJECTED-style signal of issue #15).
pub fn fulfilment_answer(
    channel: &str,
    delivery: &'static str,
    result: &'static str,
    stockout_units: Option<(i64, i64)>,
) {
    let c = || channel.to_string();
    counter!(FULFILMENT_OPTIONS, "channel" => c(), "delivery" => delivery, "result" => result)
        .increment(1);
    if let Some((requested, available)) = stockout_units {
        let units = |q: &'static str| counter!(FULFILMENT_STOCKOUT_UNITS, "channel" => c(), "quantity" => q);
        units("requested").increment(requested.max(0) as u64);
        units("available").increment(available.max(0) as u64);
    }
}

/// The metrics of the shard actors.
fn describe_shards() {
    describe_gauge!(
        POSITIONS,
        Unit::Count,
        "Inventory positions held in memory (count), by shard."
    );
    describe_gauge!(
        MAILBOX_DEPTH,
        Unit::Count,
        "Requests waiting in a shard's mailbox (count) when it wakes, by shard."
    );
    describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "Requests a shard handled per wake-up (count), by shard."
    );
    describe_counter!(
        REJECTED_OVERLOAD,
        Unit::Count,
        "Requests refused with RESOURCE_EXHAUSTED because a shard's mailbox was full (count), by shard."
    );
}

/// The metrics of the write-ahead logs, checkpoints and recovery.
fn describe_events() {
    describe_counter!(
        EVENTS_STORED,
        Unit::Count,
        "Events made durable in the event log (count)."
    );
    describe_counter!(
        EVENTS_BYTES,
        Unit::Bytes,
        "Bytes of event frames written to the event log."
    );
    describe_histogram!(
        EVENTS_FSYNC_DURATION,
        Unit::Seconds,
        "Time of one event-log group's durable write (O_DIRECT|O_DSYNC, or a write and an fdatasync), in seconds."
    );
    describe_gauge!(
        EVENTS_SEGMENTS,
        Unit::Count,
        "Live segments of the event log (retention keeps it bounded)."
    );
    describe_gauge!(
        EVENTS_FAILED,
        Unit::Count,
        "1 once a write of the event log failed (no more events are stored until restart)."
    );
    describe_gauge!(EVENTS_WATCHERS, Unit::Count, "Open WatchEvents streams.");
    describe_counter!(
        EVENTS_WATCH_ENDED,
        Unit::Count,
        "WatchEvents streams ended by stockd, by reason: behind (RESOURCE_EXHAUSTED), expired, unavailable."
    );
}

/// One durable group of the event log.
pub fn events_committed(stats: &crate::storage::log::CommitStats) {
    counter!(EVENTS_STORED).increment(stats.records as u64);
    counter!(EVENTS_BYTES).increment(stats.bytes as u64);
    histogram!(EVENTS_FSYNC_DURATION).record(stats.sync_duration.as_secs_f64());
}

/// Live segments of the event log.
pub fn events_segments(segments: usize) {
    gauge!(EVENTS_SEGMENTS).set(segments as f64);
}

/// The event log failed.
pub fn events_failed() {
    gauge!(EVENTS_FAILED).set(1.0);
}

/// Open watches, after one opened (+1) or ended (-1).
pub fn events_watchers(delta: f64) {
    gauge!(EVENTS_WATCHERS).increment(delta);
}

/// A watch ended by stockd.
pub fn events_watch_ended(reason: &'static str) {
    counter!(EVENTS_WATCH_ENDED, "reason" => reason).increment(1);
}

fn describe_storage() {
    describe_events();
    describe_histogram!(
        WAL_FLUSH_DURATION,
        Unit::Seconds,
        "Time of one group commit of a shard's log (write and fdatasync), in seconds."
    );
    describe_histogram!(
        WAL_CHANGES_PER_FLUSH,
        Unit::Count,
        "Changes made durable by one group commit (count)."
    );
    describe_counter!(
        WAL_BYTES,
        Unit::Bytes,
        "Bytes of records written to the write-ahead logs, in bytes."
    );
    describe_histogram!(
        WAL_FSYNC_DURATION,
        Unit::Seconds,
        "Time of one durable write of a shard's log group (an O_DIRECT|O_DSYNC write, or a write and an fdatasync where the filesystem has no O_DIRECT), in seconds."
    );
    describe_gauge!(
        WAL_SEGMENTS,
        Unit::Count,
        "Live segment files of a shard's log (count), by shard."
    );
    describe_histogram!(
        CHECKPOINT_DURATION,
        Unit::Seconds,
        "Time of one checkpoint off the shard (wait for the log, encode, sled batch, fsyncs, log recycling), in seconds."
    );
    describe_histogram!(
        CHECKPOINT_ENTRIES,
        Unit::Count,
        "Entries (puts and deletes) written by one checkpoint (count)."
    );
    describe_histogram!(
        SNAPSHOT_DURATION,
        Unit::Seconds,
        "Time a shard spends copying its changed entries for a checkpoint, in seconds (the shard pauses for it)."
    );
    describe_gauge!(
        RECOVERY_DURATION,
        Unit::Seconds,
        "Time the last start spent recovering state from disk, in seconds."
    );
}

/// Registered metric handles by a small key: a read lock and a hash of the key on the
/// hot path; the registry is asked once per key.
struct Handles<K, H> {
    map: LazyLock<RwLock<FxHashMap<K, H>>>,
}

impl<K: Eq + Hash, H: Clone> Handles<K, H> {
    const fn new() -> Self {
        Handles {
            map: LazyLock::new(|| RwLock::new(FxHashMap::default())),
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<H>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }

    fn get_or(&self, key: K, make: impl FnOnce(&K) -> H) -> H {
        if let Some(h) = self.get(&key) {
            return h;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_insert_with_key(|k| make(k)).clone()
    }
}

type RpcKey = (&'static str, &'static str, &'static str);
static RPC_HANDLES: Handles<RpcKey, Histogram> = Handles::new();
static SHARD_MESSAGE_HANDLES: Handles<&'static str, Counter> = Handles::new();
static SHARD_HANDLES: Handles<usize, Arc<ShardHandles>> = Handles::new();
static CHANNEL_HANDLES: Handles<Box<str>, Arc<ChannelCounters>> = Handles::new();

/// One RPC's latency, by service, method and status code.
pub fn rpc(service: &'static str, method: &'static str, code: &'static str, elapsed: Duration) {
    RPC_HANDLES
        .get_or((service, method, code), |&(service, method, code)| {
            histogram!(RPC_DURATION, "service" => service, "method" => method, "code" => code)
        })
        .record(elapsed.as_secs_f64());
}

/// The counters labelled by a channel (a configured name, so a bounded set).
pub struct ChannelCounters {
    outcomes: [Counter; 3],
    stockouts: Counter,
    events: [Counter; HOLD_EVENT_NAMES.len()],
}

const OUTCOME_NAMES: [&str; 3] = ["reserved", "partial", "rejected"];
const HOLD_EVENT_NAMES: [&str; 5] = ["created", "updated", "confirmed", "released", "expired"];

impl ChannelCounters {
    fn register(channel: &str) -> ChannelCounters {
        let c = || channel.to_string();
        ChannelCounters {
            outcomes: OUTCOME_NAMES
                .map(|o| counter!(RESERVE_OUTCOMES, "channel" => c(), "outcome" => o)),
            stockouts: counter!(STOCKOUTS, "channel" => c()),
            events: HOLD_EVENT_NAMES.map(|e| counter!(HOLD_EVENTS, "channel" => c(), "event" => e)),
        }
    }

    /// Counts a Reserve's outcome ("reserved", "partial" or "rejected").
    pub fn reserve_outcome(&self, outcome: &'static str) {
        if let Some(i) = OUTCOME_NAMES.iter().position(|o| *o == outcome) {
            self.outcomes[i].increment(1);
        }
        if outcome == "rejected" {
            self.stockouts.increment(1);
        }
    }
}

/// The counters of `channel`, if it was counted before: looked up without allocating, so a
/// handler can call it before it knows whether the channel exists.
pub fn channel_counters_cached(channel: &str) -> Option<Arc<ChannelCounters>> {
    CHANNEL_HANDLES.get(channel)
}

/// The counters of `channel` (an existing channel: the cache keeps every name it is given).
pub fn channel_counters(channel: &str) -> Arc<ChannelCounters> {
    CHANNEL_HANDLES.get(channel).unwrap_or_else(|| {
        CHANNEL_HANDLES.get_or(channel.into(), |c| Arc::new(ChannelCounters::register(c)))
    })
}

pub fn hold_event(channel: &str, event: &'static str) {
    let counters = channel_counters(channel);
    match HOLD_EVENT_NAMES.iter().position(|e| *e == event) {
        Some(i) => counters.events[i].increment(1),
        None => {
            counter!(HOLD_EVENTS, "channel" => channel.to_string(), "event" => event).increment(1)
        }
    }
}

/// A shard's per-batch handles.
struct ShardHandles {
    batch_size: Histogram,
    mailbox_depth: Gauge,
    overloaded: Counter,
}

fn shard_handles(shard: usize) -> Arc<ShardHandles> {
    SHARD_HANDLES.get_or(shard, |&shard| {
        let s = || shard.to_string();
        Arc::new(ShardHandles {
            batch_size: histogram!(BATCH_SIZE, "shard" => s()),
            mailbox_depth: gauge!(MAILBOX_DEPTH, "shard" => s()),
            overloaded: counter!(REJECTED_OVERLOAD, "shard" => s()),
        })
    })
}

pub fn active_holds(channel: &str, shard: usize, count: i64) {
    gauge!(ACTIVE_HOLDS, "channel" => channel.to_string(), "shard" => shard.to_string())
        .set(count as f64);
}

pub fn positions(shard: usize, count: usize) {
    gauge!(POSITIONS, "shard" => shard.to_string()).set(count as f64);
}

pub fn shard_batch(shard: usize, size: usize, depth: usize) {
    let h = shard_handles(shard);
    h.batch_size.record(size as f64);
    h.mailbox_depth.set(depth as f64);
}

pub fn overloaded(shard: usize) {
    shard_handles(shard).overloaded.increment(1);
}

/// One group commit of a shard's log.
pub fn wal_committed(stats: &crate::storage::log::CommitStats) {
    histogram!(WAL_FLUSH_DURATION).record(stats.sync_duration.as_secs_f64());
    histogram!(WAL_FSYNC_DURATION).record(stats.sync_duration.as_secs_f64());
    histogram!(WAL_CHANGES_PER_FLUSH).record(stats.records as f64);
    counter!(WAL_BYTES).increment(stats.bytes as u64);
}

/// Live segments of a write-ahead log (one per core, shared by its shards).
pub fn wal_segments(log: usize, segments: i64) {
    gauge!(WAL_SEGMENTS, "log" => log.to_string()).set(segments as f64);
}

pub fn snapshot_taken(elapsed: Duration) {
    histogram!(SNAPSHOT_DURATION).record(elapsed.as_secs_f64());
}

pub fn checkpoint_written(elapsed: Duration, entries: usize) {
    histogram!(CHECKPOINT_DURATION).record(elapsed.as_secs_f64());
    histogram!(CHECKPOINT_ENTRIES).record(entries as f64);
}

pub fn recovered(elapsed: Duration) {
    gauge!(RECOVERY_DURATION).set(elapsed.as_secs_f64());
}

/// One message sent to a shard; `kind` comes from a fixed list (see `describe`).
pub fn shard_message(kind: &'static str) {
    SHARD_MESSAGE_HANDLES
        .get_or(kind, |&kind| counter!(SHARD_MESSAGES, "kind" => kind))
        .increment(1);
}

// ---- Connections and access (`grpc::listen`, `grpc::access`) ---------------------------

pub const CONNECTIONS_REFUSED: &str = "stockd_connections_refused_total";
pub const TLS_HANDSHAKES: &str = "stockd_tls_handshakes_total";
pub const AUTH_DENIED: &str = "stockd_auth_denied_total";

fn describe_security() {
    describe_counter!(
        CONNECTIONS_REFUSED,
        Unit::Count,
        "Connections closed as soon as accepted because CONNECTIONS_MAX were open (count)."
    );
    describe_counter!(
        TLS_HANDSHAKES,
        Unit::Count,
        "TLS handshakes (count) by result: ok, failed (plaintext, an unknown client CA), timeout."
    );
    describe_counter!(
        AUTH_DENIED,
        Unit::Count,
        "Calls refused by the access policy (count) by reason: no_identity, unknown_token, unknown_identity, method, channel."
    );
}

pub fn connection_refused() {
    counter!(CONNECTIONS_REFUSED).increment(1);
}

/// `result` is one of ok, failed, timeout.
pub fn tls_handshake(result: &'static str) {
    counter!(TLS_HANDSHAKES, "result" => result).increment(1);
}

/// `reason` comes from a fixed list (see `describe_security`); no identity is a label.
pub fn auth_denied(reason: &'static str) {
    counter!(AUTH_DENIED, "reason" => reason).increment(1);
}
