//! Every bound and default of the server, in one place, each with its cost or its reason.
//!
//! The flags of `config.rs` take their defaults from here, and so does
//! `ShardLimits::default`. The relations between the bounds are checked at compile time
//! at the bottom of this file. Request limits that the engine enforces (`HOLD_LINES_MAX`,
//! `HOLD_QUANTITY_MAX`, the TTL bounds, `REF_LEN_MAX`) live in the domain crate, beside the
//! validation that uses them; the router's own bounds (`LOCK_STRIPES`, `READ_KEYS_MAX`,
//! `STOCK_BATCH_MAX`) live in `shard/router.rs` and are re-exported here so this file
//! lists every bound the server has.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use stockd_domain::refs::REF_LEN_MAX;
use stockd_domain::request::{
    HOLD_LINES_MAX, TTL_SECONDS_DEFAULT, TTL_SECONDS_MAX, TTL_SECONDS_MIN,
};

pub use crate::shard::router::{LOCK_STRIPES, READ_KEYS_MAX, STOCK_BATCH_MAX};

// ---- Addresses and folders -------------------------------------------------------------

/// Where the gRPC services listen by default (`--grpc-addr`): every interface, the port the
/// Kubernetes manifests name `grpc`.
pub const GRPC_ADDR_DEFAULT: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 50051));

/// Where Prometheus scrapes `/metrics` by default (`--metrics-addr`): the port the
/// manifests name `metrics`.
pub const METRICS_ADDR_DEFAULT: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9464));

/// The data folder by default (`--data-dir`): relative, so `cargo run` works anywhere.
pub const DATA_DIR_DEFAULT: &str = "./data";

/// Shards when the number of cores cannot be read: two keeps a cross-shard hold possible
/// without assuming a large machine.
pub const SHARDS_FALLBACK: u32 = 2;

// ---- Shards ------------------------------------------------------------------------------

/// Capacity of each shard's mailbox by default (`--mailbox-capacity`). A message is about
/// 100 bytes plus its request, so a full mailbox holds about 1 MiB per shard; at a shard's
/// measured 20,000 requests/s it is 0.4 s of queueing, after which callers get
/// RESOURCE_EXHAUSTED instead of a longer wait.
pub const MAILBOX_CAPACITY_DEFAULT: usize = 8_192;

/// Most requests one wake-up of a shard handles. Bounds the latency a batch adds to its
/// last member (256 × about 1 µs of engine work) and the replies a batch keeps.
pub const BATCH_MAX: usize = 256;

/// How long after its deadline a hold's timer fires: the domain's bound (one place).
pub use stockd_domain::limits::EXPIRY_GRACE_MS;

/// How often a shard publishes its gauges (positions, active holds per channel). Counting
/// active holds walks the channels, so it runs once a second, not once per batch.
pub const GAUGES_EVERY_MS: u64 = 1_000;

/// Most batches of one shard whose replies wait for their log write. Nothing enforces it
/// but the log pipeline: each such batch is in its log writer's inbox (at most
/// `WRITER_INBOX_CAPACITY`, the shard waits for room) or in the group being committed (at
/// most `GROUP_BATCHES_MAX`); read-only batches behind them join the last one instead of
/// adding an entry. The shard asserts it in debug builds. Memory: about 80 bytes per batch
/// plus its replies (at most `BATCH_MAX` per batch joined).
pub const PENDING_BATCHES_MAX: usize = WRITER_INBOX_CAPACITY + GROUP_BATCHES_MAX;

// ---- Write-ahead log ---------------------------------------------------------------------

pub use crate::storage::log::WRITER_INBOX_CAPACITY;
pub use crate::storage::log::group::GROUP_BATCHES_MAX;
/// The one buffer a log's recovery scan reads its segments through (4 MiB).
pub use crate::storage::log::reader::LOG_READ_WINDOW_BYTES;

/// Flush period of `--durability async` by default (`--flush-interval-ms`). The log writer
/// syncs each group as soon as the previous sync returned, so a crash loses what was
/// acknowledged during the last sync, well under this period on a healthy disk.
pub const FLUSH_INTERVAL_MS_DEFAULT: u64 = 5;

// ---- Checkpoints -------------------------------------------------------------------------

/// Checkpoint a shard after this many log records by default (`--snapshot-every-records`).
/// Bounds the log a restart replays (a few microseconds per record: well under a second) and
/// the disk the log takes (about 100 bytes a record).
pub const SNAPSHOT_EVERY_RECORDS_DEFAULT: u64 = 100_000;

/// Checkpoint a shard after this many seconds with at least one record by default
/// (`--snapshot-every-secs`), so a quiet shard's log is recycled too.
pub const SNAPSHOT_EVERY_SECS_DEFAULT: u64 = 300;

/// Start a checkpoint once this many entries are pending, whatever the record count: a
/// delta within `BATCH_ENTRIES_MAX` is one atomic sled batch (a larger one is written in
/// several, `checkpoint::rewrite`, rewriting whole namespaces); half of it leaves room for
/// the changes of the batches applied while one checkpoint is in flight.
pub const CHECKPOINT_PENDING_MAX: usize = crate::storage::checkpoint::BATCH_ENTRIES_MAX / 2;

/// Entries a shard copies for a checkpoint per wake-up, besides twice the entries changed
/// since its previous step (`Engine::step_checkpoint_delta`: the copy outpaces the
/// changes). At 1–2 µs an entry, a step adds well under a millisecond to the batch that
/// follows it, instead of one pause for the whole delta (500,000 entries took about a
/// second); a delta of `CHECKPOINT_PENDING_MAX` entries takes ~2,000 wake-ups.
pub const CHECKPOINT_COPY_STEP_ENTRIES: usize = 256;

/// Nice value of the thread that writes a checkpoint: the shard, the RPCs and the log
/// writer go first on a busy core. Nice 10 weighs 110 against 1,024 for the default: about
/// 10% of a fully busy core (so a checkpoint, and with it the log's recycling, still
/// progresses under a saturating load), and all of an idle one.
pub const CHECKPOINT_THREAD_NICE: i32 = 10;

/// Longest a checkpoint waits for the log to be durable up to the LSN it covers before it
/// gives up (and the next one is whole). A healthy sync takes milliseconds.
pub const CHECKPOINT_DURABLE_WAIT_MS: u64 = 10_000;

/// How often a waiting checkpoint looks at the log's durable LSN; the wait costs at most
/// `CHECKPOINT_DURABLE_WAIT_MS / CHECKPOINT_DURABLE_POLL_MS` wake-ups.
pub const CHECKPOINT_DURABLE_POLL_MS: u64 = 1;

// ---- Runtime -----------------------------------------------------------------------------

/// Scheduler ticks between two polls of the I/O driver by default (`--event-interval`):
/// tokio's own default. Fewer polls batch more socket readiness per `epoll_wait`; more
/// polls answer new bytes sooner.
pub const RUNTIME_EVENT_INTERVAL_DEFAULT: u32 = 61;

// ---- gRPC --------------------------------------------------------------------------------

/// Largest decoded request, in bytes: bounds the memory one call can make the server
/// allocate. The largest valid request (a stock batch of `STOCK_BATCH_MAX` items of three
/// refs each) is well below it.
pub const DECODED_MESSAGE_BYTES_MAX: usize = 4 << 20;

/// Most InventoryService and AdminService calls running at once by default
/// (`--max-concurrent-requests`), over every connection. Beyond it a call is refused at
/// once with RESOURCE_EXHAUSTED (`grpc::overload`), before it is decoded. As many as one
/// shard's default mailbox holds: a flash sale's thousands of concurrent buyers are
/// queued, not refused (they wait at most about 0.4 s at a shard's 20,000 Reserves/s,
/// the mailbox's bound), while a flood beyond that is refused before it costs a decode
/// or a mailbox slot. Each call in flight holds its request (at most
/// `DECODED_MESSAGE_BYTES_MAX`, typically under 1 KiB).
pub const CONCURRENT_REQUESTS_MAX_DEFAULT: usize = MAILBOX_CAPACITY_DEFAULT;

/// Most concurrent HTTP/2 streams one connection may open (SETTINGS_MAX_CONCURRENT_STREAMS):
/// one client cannot hold more than this many calls, nor all of the server's slots from
/// one connection alone.
pub const H2_STREAMS_PER_CONNECTION_MAX: u32 = 256;

/// Largest HTTP/2 header list one request may send (SETTINGS_MAX_HEADER_LIST_SIZE: the
/// headers and metadata of a call, decoded, plus 32 bytes per entry). A stockd call sends
/// a few hundred bytes (path, content type, a bearer token); 16 KiB leaves room for
/// tracing metadata, and bounds what hyper buffers per stream: at most
/// `H2_STREAMS_PER_CONNECTION_MAX` × this (4 MiB) per connection.
pub const H2_HEADER_LIST_BYTES_MAX: u32 = 16 << 10;

/// Largest HTTP/2 frame the server accepts (SETTINGS_MAX_FRAME_SIZE): the protocol's
/// minimum, which is also hyper's default, stated here so it is a named bound.
pub const H2_FRAME_BYTES_MAX: u32 = 16 << 10;

/// Most connections open at once, over both listeners. A connection beyond it is closed
/// as soon as it is accepted (`stockd_connections_refused_total`), so a flood of idle
/// connections costs its sockets, not the server's memory: each open connection holds
/// hyper's buffers (tens of KiB) and, with TLS, rustls' (about 34 KiB).
pub const CONNECTIONS_MAX: usize = 4_096;

/// A connection's gathered writes (`grpc::gather`): answers wait here for one turn of the
/// connection's task, then leave in one write; a write that would pass it sends the
/// buffer first. Kept allocated per connection once used, so at most
/// `CONNECTIONS_MAX` × 16 KiB (64 MiB) in all; a write of a whole buffer or more (a full
/// `H2_FRAME_BYTES_MAX` frame) goes straight to the socket after it.
pub const CONN_WRITE_BUFFER_BYTES: usize = 16 << 10;

/// How often HTTP/2 pings an idle connection, and how long it waits for the answer before
/// it closes it: a peer that vanished (no FIN) gives its connection slot back within
/// their sum.
pub const H2_KEEPALIVE_INTERVAL_SECS: u64 = 60;
pub const H2_KEEPALIVE_TIMEOUT_SECS: u64 = 20;

/// Accepted connections (handshaken, with TLS) waiting for tonic to take them: tonic takes
/// each at once, so this only smooths a burst.
pub const ACCEPTED_QUEUE_CAPACITY: usize = 64;

/// How long the accept loop waits after a failed accept (out of file descriptors) before
/// it tries again, instead of spinning.
pub const ACCEPT_ERROR_BACKOFF_MS: u64 = 10;

/// How long the server waits for a client's TLS handshake: a client that connects and
/// sends nothing holds its connection slot at most this long.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// Handshakes in progress at once: beyond it, accepted connections wait for their turn
/// (bounding the CPU and memory of a handshake flood, still under `CONNECTIONS_MAX`).
pub const TLS_HANDSHAKES_MAX: usize = 256;

/// How often the certificate, key and client CA files, the policy file and the token file
/// are read again to see whether they changed (cert-manager rotates certificates by
/// replacing files). Each check reads a few KiB; a change is in force within this time.
pub const SECURITY_RELOAD_POLL_MS: u64 = 1_000;

/// How long in-flight calls may take to finish after SIGTERM by default
/// (`--drain-timeout-secs`). Kubernetes' default grace period is 30 s, so 10 s leaves time
/// for the shards' final flush.
pub const DRAIN_TIMEOUT_SECS_DEFAULT: u64 = 10;

// ---- Holds (the hold timer defaults and bounds are the domain's TTL_SECONDS_*) ----------

/// How long a finished hold stays queryable by default (`--hold-retention-secs`): the
/// domain's default (one day). Bounds the memory of finished holds (about 650 bytes each)
/// under churn.
pub const HOLD_RETENTION_SECS_DEFAULT: u64 = (stockd_domain::limits::HOLD_RETENTION_MS_DEFAULT
    / stockd_domain::limits::MS_PER_SECOND) as u64;

// ---- The router's hold directory (`shard/directory.rs`) --------------------------------
//
// The directory has one entry per hold and per order that some shard keeps (about 100
// bytes plus the ref each), so it is bounded by what the shards keep: holds for their
// timer, finished holds and orders for `--hold-retention-secs`. Shards forget without
// telling the router; the prune below removes an entry at most
// `LOCK_STRIPES / DIRECTORY_PRUNE_STRIPES_PER_TICK × DIRECTORY_PRUNE_TICK_MS` (6.4 s) plus
// `DIRECTORY_PRUNE_GRACE_MS` after its last part was forgotten.

/// Most whole-hold views one lock stripe of the directory keeps, so that GetHold of an
/// active hold is answered without asking its shards (`Entry::view`): with
/// `LOCK_STRIPES` stripes, at most 4,096 × 64 = 262,144 views (a view is about 150 bytes
/// plus 60 per line, so at most about 60 MiB for 3-line carts). A stripe that is full
/// caches no more views until some of its views go (any change to their hold, or its
/// deadline); GetHold of the others asks their shards as before.
pub const DIRECTORY_VIEWS_PER_STRIPE_MAX: usize = 64;

/// How often the directory's prune wakes.
pub const DIRECTORY_PRUNE_TICK_MS: u64 = 100;

/// Lock stripes one prune wake visits: the cost of a wake (a scan of about
/// entries / LOCK_STRIPES × this) and, with the tick, the time of one full pass.
pub const DIRECTORY_PRUNE_STRIPES_PER_TICK: usize = 64;

/// Most due entries one stripe checks per visit: each check costs one read message per
/// shard of the entry, so a wake sends at most `DIRECTORY_PRUNE_STRIPES_PER_TICK ×` this
/// reads per shard of an entry.
pub const DIRECTORY_PRUNE_CHECKS_MAX: usize = 16;

/// How long after the earliest moment a shard may forget a part its entry is checked:
/// covers a timer that fires late (a hold expires within a second of its deadline).
pub const DIRECTORY_PRUNE_GRACE_MS: i64 = 2_000;

/// How soon an entry is checked again after a shard could not answer whether it keeps a
/// part (overloaded, stopped, a failed disk).
pub const DIRECTORY_RETRY_MS: i64 = 1_000;

// ---- ListHolds (`shard/router/holds_query.rs`) -----------------------------------------
//
// A page's size and each shard's scan are bounded in the domain (`LIST_HOLDS_PAGE_SIZE_MAX`,
// `LIST_HOLDS_SCAN_MAX`). A listed hold with parts on several shards is read whole (as
// GetHold reads it) before it is answered: at most a page of such reads per page.

/// Most of a page's whole-hold reads in flight at once: each is one message per shard of
/// the hold, so a page never fills a shard's mailbox with them.
pub const LIST_HOLDS_WHOLE_READS_IN_FLIGHT: usize = 8;

// ---- Event log (storage::events, grpc::events) -----------------------------------------

/// Default `--events-retention-secs`: 7 days, so "yesterday's abandoned carts" and a week
/// of channel reports can be read back. Costs disk, bounded by the byte retention too.
pub const EVENTS_RETENTION_SECS_DEFAULT: u64 = 7 * 24 * 3600;

/// Default `--events-retention-bytes`: 1 GiB of event segments (about 8 million events at
/// ~130 bytes each). Opening the log at start-up reads the retained segments once
/// (the segment log's recovery scan), about a second per GiB.
pub const EVENTS_RETENTION_BYTES_DEFAULT: u64 = 1 << 30;

/// One event segment file: 8 MiB. Retention drops whole segments, so this is its grain;
/// a read scans at most one segment to find where it starts (less once earlier reads
/// indexed it).
pub const EVENTS_SEGMENT_BYTES: u64 = 8 << 20;

/// Most bytes of events in one group (one write, one sync) of the event log.
pub const EVENTS_GROUP_BYTES_MAX: usize = 1 << 20;

/// Capacity of the event writer's inbox (hand-overs, one per durable shard batch). When
/// full, the shard logs' threads wait to hand over: backpressure, not memory growth.
pub const EVENTS_INBOX_CAPACITY: usize = 4_096;

/// Most hand-overs taken into one event-log group.
pub const EVENTS_GROUP_HANDOVERS_MAX: usize = 4_096;

/// Shortest time between two syncs of the event log: 10 ms. The event log and the shard
/// logs share a disk (and ext4's journal), so an event sync per shard-log sync doubled
/// the syncs each Reserve waits behind (mixed traffic: 0.82 ms event syncs interleaved
/// with 1.18 ms log syncs). Events become readable at most this much later; no reply
/// waits for it (replies leave on the shard log's sync).
pub const EVENTS_SYNC_INTERVAL_MS: u64 = 10;

/// How often retention runs (it also runs at once when the byte bound is passed).
pub const EVENTS_RETENTION_EVERY_MS: u64 = 1_000;

/// Default `--events-watch-buffer`: the live events every watcher reads from memory (a
/// broadcast ring; ~200 bytes an event: ~3 MiB, shared by all). A watch the ring laps (a
/// burst, such as a SetStock of 10,000 products) reads on from the retained log.
pub const EVENTS_WATCH_BUFFER_DEFAULT: usize = 16_384;

/// A watch more than `--events-watch-buffer` events behind whose consumer takes nothing
/// for this long (its HTTP/2 window and send buffer full) ends with RESOURCE_EXHAUSTED
/// naming the last sequence sent: a stopped consumer holds no task forever.
pub const EVENTS_WATCH_STALL_MS: u64 = 1_000;

/// Messages queued between a watch's task and its HTTP/2 stream.
pub const EVENTS_WATCH_SEND_BUFFER: usize = 256;

/// Most watches open at once (each holds a task and its buffers); beyond:
/// RESOURCE_EXHAUSTED. Watches do not count against `--max-concurrent-requests`.
pub const EVENTS_WATCHERS_MAX: usize = 64;

/// Events a watch's replay reads from disk per step.
pub const EVENTS_REPLAY_PAGE: usize = 1_024;

/// Default and largest `page_size` of ListEvents.
pub const EVENTS_LIST_PAGE_DEFAULT: usize = 100;
pub const EVENTS_LIST_PAGE_MAX: usize = 1_000;

/// Most events one read examines (filters may skip them all): bounds one ListEvents call;
/// its `next_sequence` says where to go on.
pub const EVENTS_SCAN_MAX: usize = 100_000;

/// Most IQ changes one event stores (~45 bytes each: a count superseding thousands of
/// adjustments would otherwise make one huge record); beyond, the event says how many it
/// omitted. An event whose record would still pass the log's record bound stores none.
pub const EVENTS_IQS_PER_EVENT_MAX: usize = 1_000;

// ---- Channel reports (storage::events::report, grpc::reports) --------------------------

/// A channel's figures are kept per minute: the finest `from_time`/`to_time` of a report.
pub const REPORT_BUCKET_MS: i64 = 60_000;

/// Product and location rows are kept per hour: a product's figures (and the ranking of
/// rejected demand) are to the hour. Finer would cost a row per product per minute.
pub const REPORT_ROW_BUCKET_MS: i64 = 3_600_000;

/// Most minute buckets kept (31 days), whatever `--events-retention-secs` says: each holds
/// a ~180-byte row per channel.
pub const REPORT_MINUTES_MAX: usize = 31 * 24 * 60;

/// Most (channel, product, location) hour rows kept in all, ~250 bytes each (~60 MiB at
/// most). Beyond it an hour's new rows fold into one "other" row (the report says its
/// products are not complete); the channel's own figures stay whole.
pub const REPORT_ROWS_MAX: usize = 250_000;

/// Most distinct refs (channels, products, locations) the report interns (~80 bytes each);
/// beyond it new refs fold into "other", as above. Kept until restart.
pub const REPORT_REFS_MAX: usize = 500_000;

/// Default and largest `top_products` of GetChannelReport.
pub const REPORT_TOP_PRODUCTS_DEFAULT: usize = 10;
pub const REPORT_TOP_PRODUCTS_MAX: usize = 100;

/// Events the start-up rebuild of the report reads from the log per step (it holds the
/// report's lock for one step at a time).
pub const REPORT_REBUILD_PAGE: usize = 10_000;

// ---- Relations, checked at compile time -------------------------------------------------

// A prune wake visits at least one stripe, and a full pass visits each.
const _: () = assert!(
    DIRECTORY_PRUNE_STRIPES_PER_TICK >= 1 && DIRECTORY_PRUNE_STRIPES_PER_TICK <= LOCK_STRIPES
);
const _: () =
    assert!(DIRECTORY_PRUNE_CHECKS_MAX >= 1 && DIRECTORY_PRUNE_GRACE_MS > EXPIRY_GRACE_MS);
// Calls in flight fit in every shard's default mailbox (a cross-shard hold sends one
// message to each shard), so the concurrency limit answers before a mailbox overflows.
const _: () = assert!(CONCURRENT_REQUESTS_MAX_DEFAULT <= MAILBOX_CAPACITY_DEFAULT);
// One connection cannot take every slot.
const _: () = assert!((H2_STREAMS_PER_CONNECTION_MAX as usize) < CONCURRENT_REQUESTS_MAX_DEFAULT);
// A handshake in progress holds a connection slot.
const _: () = assert!(TLS_HANDSHAKES_MAX <= CONNECTIONS_MAX);
const _: () = assert!(H2_HEADER_LIST_BYTES_MAX >= 4 << 10 && H2_FRAME_BYTES_MAX >= 16 << 10);
// A batch can always be filled from a default mailbox.
const _: () = assert!(BATCH_MAX <= MAILBOX_CAPACITY_DEFAULT);
// A group commit can drain a log writer's whole inbox, so a batch waits for at most one
// group after the one being written.
const _: () = assert!(GROUP_BATCHES_MAX >= WRITER_INBOX_CAPACITY);
// Every batch the log pipeline can hold may be pending on its shard (see its comment).
const _: () = assert!(PENDING_BATCHES_MAX >= WRITER_INBOX_CAPACITY + GROUP_BATCHES_MAX);
// An event group fits a default event segment with room to spare; a page fits a scan.
const _: () = assert!(EVENTS_GROUP_BYTES_MAX as u64 <= EVENTS_SEGMENT_BYTES / 4);
const _: () =
    assert!(EVENTS_LIST_PAGE_MAX <= EVENTS_SCAN_MAX && EVENTS_REPLAY_PAGE <= EVENTS_SCAN_MAX);
const _: () = assert!(EVENTS_RETENTION_BYTES_DEFAULT >= 2 * EVENTS_SEGMENT_BYTES);
// Hour rows are whole minutes; the default retention fits the buckets kept.
const _: () = assert!(REPORT_ROW_BUCKET_MS % REPORT_BUCKET_MS == 0);
const _: () = assert!(
    EVENTS_RETENTION_SECS_DEFAULT as i64 * 1000 <= REPORT_MINUTES_MAX as i64 * REPORT_BUCKET_MS
);
const _: () = assert!(
    REPORT_TOP_PRODUCTS_DEFAULT <= REPORT_TOP_PRODUCTS_MAX
        && REPORT_REBUILD_PAGE <= EVENTS_SCAN_MAX
);
// A hold expires within the second domain.md promises.
const _: () = assert!(EXPIRY_GRACE_MS > 0 && EXPIRY_GRACE_MS < 1_000);
// The largest valid request fits: a stock batch of three refs per item (plus the item's
// numbers and protobuf framing, 64 bytes), and a hold of HOLD_LINES_MAX lines.
const _: () = assert!(STOCK_BATCH_MAX * (3 * REF_LEN_MAX + 64) <= DECODED_MESSAGE_BYTES_MAX);
const _: () = assert!(HOLD_LINES_MAX * (3 * REF_LEN_MAX + 64) <= DECODED_MESSAGE_BYTES_MAX);
const _: () = assert!(READ_KEYS_MAX * (2 * REF_LEN_MAX + 16) <= DECODED_MESSAGE_BYTES_MAX);
// The defaults are valid values of their flags.
const _: () = assert!(MAILBOX_CAPACITY_DEFAULT >= 1 && FLUSH_INTERVAL_MS_DEFAULT >= 1);
const _: () = assert!(SNAPSHOT_EVERY_RECORDS_DEFAULT >= 1 && SNAPSHOT_EVERY_SECS_DEFAULT >= 1);
const _: () = assert!(
    TTL_SECONDS_MIN >= 1
        && TTL_SECONDS_MIN <= TTL_SECONDS_DEFAULT
        && TTL_SECONDS_DEFAULT <= TTL_SECONDS_MAX
);
// Finished holds outlive the longest timer, so a retry of a just-expired hold still
// finds it.
const _: () = assert!(HOLD_RETENTION_SECS_DEFAULT >= TTL_SECONDS_MAX as u64);
