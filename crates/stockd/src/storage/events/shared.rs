//! What the event-log writer publishes and every reader sees: the published sequence,
//! the oldest retained one, the live segments, the per-shard coverage, and the live feed.
//!
//! Readers read retained events from the segment files (`read`); the live feed is a
//! `tokio::sync::broadcast` ring of `watch_buffer` events that the writer never waits for:
//! a receiver that falls a whole ring behind is told so (lagged) and its watch ends.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;

use super::record::EventRecord;
use super::segments::SegInfo;
use crate::storage::backend::AnyDir;
use crate::storage::log::Lsn;

/// One durable event with its sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub record: EventRecord,
}

/// The state shared by the writer and the readers.
pub struct Shared {
    pub(super) dir: AnyDir,
    /// Every event up to this sequence is durable and readable.
    pub(super) published: AtomicU64,
    /// The oldest retained sequence.
    pub(super) oldest: AtomicU64,
    pub(super) segments: RwLock<VecDeque<SegInfo>>,
    /// Per shard of the running layout: the shard-log LSN up to which every record's
    /// events are durable here. A checkpoint may cover only that far.
    pub(super) covered: Vec<Arc<AtomicU64>>,
    pub(super) live: broadcast::Sender<Arc<Stored>>,
    /// Set once an append or sync of the event log failed: no more events are stored.
    pub(super) failed: AtomicBool,
    /// Sparse index: every `INDEX_EVERY`th sequence → (segment epoch, frame offset).
    pub(super) index: Mutex<BTreeMap<Lsn, (u64, u64)>>,
    pub(super) watch_buffer: usize,
    /// The channel reports' buckets, fed by the writer after each group.
    pub(super) reports: super::report::Reports,
}

/// A sequence is indexed every this many events (bounds how far a read scans to its start).
pub const INDEX_EVERY: u64 = 4_096;

impl Shared {
    /// The last durable, readable sequence (0: none yet).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// The oldest retained sequence (`published + 1` when nothing is retained).
    pub fn oldest(&self) -> u64 {
        self.oldest.load(Ordering::Acquire)
    }

    /// A receiver of every event published from now on. Subscribe, then read
    /// `published()`: every later event comes through the receiver.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Stored>> {
        self.live.subscribe()
    }

    /// The ring's size: how many events a live watcher may fall behind.
    pub fn watch_buffer(&self) -> usize {
        self.watch_buffer
    }

    /// Whether the event log stopped after a failed write.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The shard-log LSN up to which `shard`'s events are durable.
    pub fn covered(&self, shard: usize) -> Arc<AtomicU64> {
        self.covered[shard].clone()
    }

    /// The channel reports.
    pub fn reports(&self) -> &super::report::Reports {
        &self.reports
    }

    /// Live segment count.
    pub fn segment_count(&self) -> usize {
        self.segments.read().expect("segments lock").len()
    }
}
