//! The event log: every state change's event, numbered with a global sequence that never
//! goes backwards, has no gap and no duplicate, and survives restarts, crashes and a
//! change of `--shards`; readable only once the change it describes is durable.
//!
//! Why a log of its own: the shards' logs are per shard and per layout (`--shards`), and
//! are recycled after each checkpoint; the events must outlive both, in one order.
//!
//! How (see `ARCHITECTURE.md`, "Events"):
//! - A shard resolves the events of each change right after applying it (`record`), tagged
//!   with the shard-log LSN of the change's record, and hands a batch's events over once
//!   that batch is durable in its shard log (the batch's log completion). A rejected reserve
//!   changes nothing and logs no record: its event rides with its batch, or goes at once.
//! - One writer thread (`writer`) appends them to `data/events/` (a segment log on the same
//!   `LogDir` traits as the shard logs, so power-cut tests cover it), one sync per group;
//!   the sequence is that log's LSN. After the sync it publishes them (`shared`).
//! - A checkpoint of a shard may cover only shard records whose events are durable here
//!   (the shard waits for `covered` before writing one), so the shard log is never recycled
//!   past what the event log holds. After a crash, recovery's replay regenerates (the engine
//!   is deterministic) the events of the shard records the event log lacks (`open`).
//! - Retention: segments older than `--events-retention-secs` or beyond
//!   `--events-retention-bytes` are recycled, oldest first.
//!
//! # Layout
//! - `record`: `EventRecord` (the stored event) and `resolve` (domain events → records).
//! - `segments`: reading segment files directly (listing, a frame cursor).
//! - `shared`: the state readers see (published and oldest sequence, live feed).
//! - `read`: reading retained events by sequence with a `Filter`.
//! - `history`: a position's IQ changes over the retention, in pages (`GetPositionHistory`).
//! - `report`: channel reports' time buckets, fed by the writer, rebuilt at start-up.
//! - `writer`: the writer thread, the cursor, retention.
//! - `open`: opening the log at start-up and regenerating what a crash lost.

pub mod history;
pub mod open;
pub mod read;
pub mod record;
pub mod report;
pub mod segments;
pub mod shared;
pub mod writer;

use std::sync::Arc;

pub use open::{Opened, open};
pub use read::{Filter, Page};
pub use record::{EventRecord, Origin};
pub use shared::{Shared, Stored};
pub use writer::Handover;

use crate::limits;

/// The event log's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventsConfig {
    /// Segments whose events are all older than this are recycled.
    pub retention_secs: u64,
    /// The log is kept below this many bytes of segments (at least two segments are kept).
    pub retention_bytes: u64,
    /// Size of one segment file.
    pub segment_bytes: u64,
    /// How many events a live watcher may fall behind before its watch ends.
    pub watch_buffer: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retention_secs: limits::EVENTS_RETENTION_SECS_DEFAULT,
            retention_bytes: limits::EVENTS_RETENTION_BYTES_DEFAULT,
            segment_bytes: limits::EVENTS_SEGMENT_BYTES,
            watch_buffer: limits::EVENTS_WATCH_BUFFER_DEFAULT,
        }
    }
}

impl EventsConfig {
    /// The segment log's sizes for these bounds.
    pub fn log_config(&self) -> crate::storage::log::LogConfig {
        crate::storage::log::LogConfig {
            segment_bytes: self.segment_bytes,
            segments_preallocated: 1,
            segments_free_max: 2,
            group_bytes_max: limits::EVENTS_GROUP_BYTES_MAX.min(self.segment_bytes as usize / 4),
        }
    }
}

/// Why a read of the event log is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EventsError {
    /// The sequence asked for is older than retention.
    #[error(
        "sequence {asked} is older than the event log's retention; the oldest retained is {oldest}"
    )]
    Expired { asked: u64, oldest: u64 },
    /// A watcher more than the watch buffer behind took nothing for `EVENTS_WATCH_STALL_MS`.
    #[error(
        "the watcher fell more than {buffer} events behind and took nothing for 1 s; the last sequence sent was {last_sent}: resume from {}",
        last_sent + 1
    )]
    Behind { last_sent: u64, buffer: usize },
    /// Too many watches are open.
    #[error("{max} watches are open, the most stockd serves; retry later")]
    TooManyWatchers { max: usize },
    /// stockd is stopping: the watch ends; resume from `next` on the next server.
    #[error("stockd is shutting down; resume from sequence {next}")]
    ShuttingDown { next: u64 },
    /// The event log cannot be read.
    #[error("{0}")]
    Unavailable(String),
}

/// The running event log: the sender shards hand their events to, and what readers see.
#[derive(Clone)]
pub struct EventLog {
    pub tx: tokio::sync::mpsc::Sender<Handover>,
    pub shared: Arc<Shared>,
}
