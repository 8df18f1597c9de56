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

/// Capacity of the channel from a shard to its releaser (the task that sends a batch's
/// replies once the batch is durable), in batches. What bounds it naturally is the number
/// of batches in flight: a batch with records waits in its log writer, whose inbox holds at
/// most `WRITER_INBOX_CAPACITY` batches queued plus `GROUP_BATCHES_MAX` being committed.
/// With this capacity a shard waits on its releaser only when the releaser itself falls
/// behind, or when read-only batches pile up behind a slow sync. Waiting is backpressure:
/// the shard stops draining its mailbox, which fills and answers RESOURCE_EXHAUSTED.
///
/// The shard's send cannot deadlock: the releaser waits only for tickets, and every ticket
/// belongs to a batch the shard put in its log writer's inbox *before* it sent the batch
/// to the releaser; the writer answers it without waiting on any shard or releaser.
/// Memory: about 64 bytes per queued batch plus its replies (at most `BATCH_MAX` each);
/// tokio allocates the queue as it fills, not up front.
pub const RELEASER_CAPACITY: usize = WRITER_INBOX_CAPACITY + GROUP_BATCHES_MAX;

// ---- Write-ahead log ---------------------------------------------------------------------

pub use crate::storage::log::WRITER_INBOX_CAPACITY;
pub use crate::storage::log::group::GROUP_BATCHES_MAX;

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
/// delta is one atomic sled batch, bounded by `BATCH_ENTRIES_MAX`; half of it leaves room
/// for the changes of the batches applied while one checkpoint is in flight.
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

// ---- gRPC --------------------------------------------------------------------------------

/// Largest decoded request, in bytes: bounds the memory one call can make the server
/// allocate. The largest valid request (a stock batch of `STOCK_BATCH_MAX` items of three
/// refs each) is well below it.
pub const DECODED_MESSAGE_BYTES_MAX: usize = 4 << 20;

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

// ---- Relations, checked at compile time -------------------------------------------------

// A batch can always be filled from a default mailbox.
const _: () = assert!(BATCH_MAX <= MAILBOX_CAPACITY_DEFAULT);
// A group commit can drain a log writer's whole inbox, so a batch waits for at most one
// group after the one being written.
const _: () = assert!(GROUP_BATCHES_MAX >= WRITER_INBOX_CAPACITY);
// The releaser holds at least every batch the log pipeline can hold (see its comment).
const _: () = assert!(RELEASER_CAPACITY >= WRITER_INBOX_CAPACITY + GROUP_BATCHES_MAX);
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
