//! The event-log writer: one thread for every shard. It numbers the events the shards hand
//! over (a batch's, once that batch is durable in its shard log), appends them to its own
//! segment log (`storage::log::Log`, so the sequence is the log's LSN: dense, never
//! reused), syncs them as a group, and only then publishes them to readers and the live
//! feed and advances each shard's coverage. It also applies retention.
//!
//! At every segment rollover it stores a *cursor* (the checkpoint store's `events-cursor`
//! record): per shard, the last shard-log record whose events are in the log. Recovery
//! reads it and scans only the events after it (`open`); retention never drops an event
//! after the stored cursor.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::EventsConfig;
use super::record::EventRecord;
use super::segments::SegInfo;
use super::shared::{Shared, Stored};
use crate::limits::{
    EVENTS_GROUP_HANDOVERS_MAX, EVENTS_RETENTION_EVERY_MS, EVENTS_SYNC_INTERVAL_MS,
};
use crate::metrics as m;
use crate::storage::backend::AnyDir;
use crate::storage::checkpoint::CheckpointStore;
use crate::storage::log::{Log, LogError, Lsn};
use crate::storage::record;

/// The name of the cursor record in the checkpoint store.
pub const CURSOR: &str = "events-cursor";

/// The events of one durable shard batch.
pub struct Handover {
    pub generation: u32,
    pub shard: u32,
    /// The batch's last shard-log LSN (0: a batch that logged nothing).
    pub covered: u64,
    pub events: Vec<EventRecord>,
    /// Told once the events are durable (start-up's repairs wait for it).
    pub done: Option<oneshot::Sender<()>>,
}

/// Per (generation, shard): the last (shard LSN, index) whose event is in the log.
pub type Last = BTreeMap<(u32, u32), (u64, u32)>;

/// The stored cursor: `last` as of the event with sequence `up_to`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub up_to: u64,
    pub last: Vec<((u32, u32), (u64, u32))>,
}

/// Folds one stored event into `last`.
pub fn note(last: &mut Last, r: &EventRecord) {
    if r.origin.lsn == 0 {
        return;
    }
    let key = (r.origin.generation, r.origin.shard);
    let at = (r.origin.lsn, r.origin.index);
    let entry = last.entry(key).or_insert(at);
    *entry = (*entry).max(at);
}

pub(super) struct Writer {
    pub log: Log<AnyDir>,
    pub shared: Arc<Shared>,
    pub config: EventsConfig,
    pub store: Arc<dyn CheckpointStore>,
    pub generation: u32,
    pub last: Last,
    /// The `up_to` of the last cursor stored.
    pub cursor_seq: u64,
    pub on_failure: Arc<tokio::sync::Notify>,
    pub last_retention: Instant,
}

/// What one group carries until its sync returned.
#[derive(Default)]
struct Group {
    appended: Vec<(Range<Lsn>, Vec<EventRecord>)>,
    covered: Vec<(u32, u32, u64)>,
    done: Vec<oneshot::Sender<()>>,
}

impl Writer {
    pub fn spawn(self, rx: mpsc::Receiver<Handover>) -> JoinHandle<Log<AnyDir>> {
        std::thread::Builder::new()
            .name("stockd-events".into())
            .spawn(move || self.run(rx))
            .expect("spawn the event log writer thread")
    }

    /// Takes hand-overs into a group until the inbox is empty, then syncs it, at most once
    /// every `EVENTS_SYNC_INTERVAL_MS`: what arrives meanwhile joins the same group.
    fn run(mut self, mut rx: mpsc::Receiver<Handover>) -> Log<AnyDir> {
        let mut group = Group::default();
        let interval = Duration::from_millis(EVENTS_SYNC_INTERVAL_MS);
        let mut last_sync = Instant::now() - interval;
        while let Some(first) = rx.blocking_recv() {
            let taken = self.drain(Some(first), &mut rx, &mut group, 0);
            let wait = interval.saturating_sub(last_sync.elapsed());
            if !wait.is_zero() && taken < EVENTS_GROUP_HANDOVERS_MAX {
                std::thread::sleep(wait);
                self.drain(rx.try_recv().ok(), &mut rx, &mut group, taken);
            }
            self.commit(&mut group);
            last_sync = Instant::now();
        }
        self.commit(&mut group);
        self.log
    }

    /// Takes `first` and whatever else waits in the inbox into `group`, up to
    /// `EVENTS_GROUP_HANDOVERS_MAX` hand-overs in all; returns how many it holds now.
    fn drain(
        &mut self,
        first: Option<Handover>,
        rx: &mut mpsc::Receiver<Handover>,
        group: &mut Group,
        mut taken: usize,
    ) -> usize {
        let mut next = first;
        while let Some(handover) = next.take() {
            taken += 1;
            self.take(handover, group);
            if taken < EVENTS_GROUP_HANDOVERS_MAX {
                next = rx.try_recv().ok();
            }
        }
        taken
    }

    /// Appends one hand-over's events to the group (committing first when it is full).
    fn take(&mut self, h: Handover, group: &mut Group) {
        if self.shared.failed() {
            return;
        }
        let mut events = h.events;
        let max = self.log.config().record_bytes_max();
        let payloads: Vec<Vec<u8>> = events.iter_mut().map(|e| e.encode_within(max)).collect();
        let mut start = 0;
        while start < payloads.len() {
            let fit = self.fitting(&payloads[start..]);
            let appended = match self.log.append(0, &payloads[start..start + fit]) {
                Err(LogError::GroupFull { .. }) if self.log.pending_records() > 0 => {
                    self.commit(group);
                    self.log.append(0, &payloads[start..start + fit])
                }
                other => other,
            };
            match appended {
                Ok(lsns) => {
                    let rest = events.split_off(fit);
                    group
                        .appended
                        .push((lsns, std::mem::replace(&mut events, rest)));
                }
                Err(e) => return self.fail(e),
            }
            start += fit;
        }
        group.covered.push((h.generation, h.shard, h.covered));
        group.done.extend(h.done);
    }

    /// How many of `payloads` fit in one empty group (at least one).
    fn fitting(&self, payloads: &[Vec<u8>]) -> usize {
        let max = self.log.config().group_bytes_max;
        let mut bytes = 0;
        for (i, p) in payloads.iter().enumerate() {
            bytes += crate::storage::log::frame::frame_len(p.len());
            if bytes > max {
                return i.max(1);
            }
        }
        payloads.len()
    }

    /// Syncs the group, then publishes its events and coverage.
    fn commit(&mut self, group: &mut Group) {
        if group.appended.is_empty() && group.covered.is_empty() && group.done.is_empty() {
            return;
        }
        if self.shared.failed() {
            *group = Group::default();
            return;
        }
        let stats = match self.log.commit() {
            Ok(stats) => stats,
            Err(e) => {
                *group = Group::default();
                return self.fail(e);
            }
        };
        if stats.records > 0 {
            m::events_committed(&stats);
            let first = stats.durable_lsn + 1 - stats.records as u64;
            let first_at = group
                .appended
                .first()
                .and_then(|(_, e)| e.first())
                .map(|r| r.at);
            self.note_segment(stats.rolled, first, first_at.unwrap_or(i64::MAX));
        }
        if stats.rolled {
            self.store_cursor(stats.durable_lsn);
        }
        // Before publishing: once a reader sees this group, its retention pass is done.
        if self.last_retention.elapsed() >= Duration::from_millis(EVENTS_RETENTION_EVERY_MS)
            || self.over_bytes()
        {
            self.retention();
            self.last_retention = Instant::now();
        }
        // Into the channel reports before it is published: a report asked after an event
        // was read counts that event.
        {
            let mut report = self.shared.reports.report.write().expect("report lock");
            for record in group.appended.iter().flat_map(|(_, events)| events) {
                report.add(record);
            }
        }
        // Published before it is sent: a reader that subscribes, then reads `published`,
        // misses nothing (it may see an event twice and skips it by sequence).
        self.shared
            .published
            .store(stats.durable_lsn, Ordering::Release);
        for (lsns, events) in group.appended.drain(..) {
            for (seq, record) in lsns.zip(events) {
                note(&mut self.last, &record);
                let _ = self.shared.live.send(Arc::new(Stored { seq, record }));
            }
        }
        for (generation, shard, lsn) in group.covered.drain(..) {
            if generation == self.generation
                && let Some(c) = self.shared.covered.get(shard as usize)
            {
                c.fetch_max(lsn, Ordering::AcqRel);
            }
        }
        for done in group.done.drain(..) {
            let _ = done.send(());
        }
    }

    /// Keeps the segment list in step with the log's: a rollover starts one at `first`.
    fn note_segment(&mut self, rolled: bool, first: u64, first_at: i64) {
        let mut segments = self.shared.segments.write().expect("segments lock");
        if rolled {
            let epoch = segments.back().map_or(1, |s| s.epoch + 1);
            segments.push_back(SegInfo {
                epoch,
                first_seq: first,
                first_at,
            });
        } else if let Some(last) = segments.back_mut()
            && last.first_at == i64::MAX
        {
            last.first_at = first_at;
        }
        m::events_segments(segments.len());
    }

    /// Stores the cursor as of `up_to` (every event so far), durably.
    fn store_cursor(&mut self, up_to: u64) {
        self.last.retain(|(g, _), _| *g >= self.generation);
        let cursor = Cursor {
            up_to,
            last: self.last.iter().map(|(k, v)| (*k, *v)).collect(),
        };
        match self.store.put_meta(CURSOR, &record::encode(&cursor)) {
            Ok(_) => self.cursor_seq = up_to,
            Err(e) => {
                tracing::warn!(error = %e, "cannot store the event log cursor; retention keeps the events after the previous one")
            }
        }
    }

    fn over_bytes(&self) -> bool {
        self.shared.segment_count() as u64 * self.log.config().segment_bytes
            > self.config.retention_bytes
    }

    /// Drops the oldest segments while the log is over its byte bound or their events are
    /// older than the age bound; never the active one, never events after the cursor.
    fn retention(&mut self) {
        let segments: Vec<SegInfo> = {
            let s = self.shared.segments.read().expect("segments lock");
            s.iter().copied().collect()
        };
        let cutoff = crate::clock::now_millis() - (self.config.retention_secs as i64) * 1000;
        let seg_bytes = self.log.config().segment_bytes;
        let mut drop = 0;
        while drop + 1 < segments.len() {
            let next = &segments[drop + 1];
            let over = (segments.len() - drop) as u64 * seg_bytes > self.config.retention_bytes;
            let old = next.first_at != i64::MAX && next.first_at <= cutoff;
            if !(over || old) || next.first_seq > self.cursor_seq + 1 {
                break;
            }
            drop += 1;
        }
        if drop == 0 || self.shared.failed() {
            return;
        }
        let below = segments[drop].first_seq;
        // Readers learn first that the events are gone, so one that finds a file missing
        // sees why (FAILED_PRECONDITION), then the files go.
        self.shared.oldest.store(below, Ordering::Release);
        let live = {
            let mut live = self.shared.segments.write().expect("segments lock");
            live.drain(..drop);
            live.len()
        };
        m::events_segments(live);
        if let Err(e) = self.log.truncate_below(below) {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: LogError) {
        if !self.shared.failed.swap(true, Ordering::AcqRel) {
            tracing::error!(error = %e, "the event log failed: no more events are stored until restart; checkpoints wait, writes go on");
            m::events_failed();
            self.on_failure.notify_one();
        }
    }
}
