//! The shard actor: the single writer of one engine.
//!
//! It drains its mailbox in batches, applies each request to its engine, sends the
//! changes of the whole batch to the write-ahead log at once, and keeps the batch's
//! replies until the log writer's completion (run on the writer's thread) marks the batch
//! durable and wakes the shard, which then sends them: no task or channel between the
//! log and the callers. Replies leave in mailbox order, except reads of positions no
//! pending batch changed, which answer at once: either way a read never reports a change
//! that is not yet durable. The actor also runs
//! the hold timers (no scan: the engine keeps them ordered) and starts checkpoints, which
//! run off its task (`storage::checkpointer`).
//!
//! Events: right after each change the actor resolves the engine's events into event
//! records tagged with the change's shard-log LSN (`storage::events::record`), keeps them
//! with the batch, and the batch's log completion hands them to the event log once the
//! batch is durable, never before. A checkpoint waits until the event log covers what it
//! covers, so the shard log is never recycled past what the event log stores.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

use super::handle::{Msg, Respond, ShardError, ShardHandle, WriteReply};
use crate::clock;
use crate::limits;
use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::metrics as m;
use crate::storage::checkpoint::Scope;
use crate::storage::checkpointer::{self, ConfigKeys, Delta};
use crate::storage::events::record::command_hold;
use crate::storage::events::{EventRecord, Handover, Origin};
use crate::storage::log::LogError;
use crate::storage::log::group::Completion;
use crate::storage::record::{self, LogRecord};
use crate::storage::{Durability, ShardLog, Storage, StorageError};
use stockd_domain::engine::GridLocations;
use stockd_domain::refs::Sym;
use stockd_domain::{Command, Engine, Event, EventKind, Millis, Settings, StepDelta};

pub use crate::limits::{BATCH_MAX, EXPIRY_GRACE_MS};

/// Limits of one shard.
#[derive(Clone, Debug)]
pub struct ShardLimits {
    /// Mailbox capacity; a full mailbox answers RESOURCE_EXHAUSTED.
    pub mailbox_capacity: usize,
    /// Take a checkpoint after this many log records…
    pub snapshot_every_records: u64,
    /// …or after this long with at least one record.
    pub snapshot_every: Duration,
}

impl ShardLimits {
    /// How far along its first checkpoint shard `id` of `shards` starts: in records and in
    /// time, its share `id / shards` of the interval. Shards of one process take similar
    /// writes, so without it they would all reach their first checkpoint together, and
    /// every later one too: `shards` copies and sled batches at once on the same cores (a
    /// burst of seconds of CPU that stalls the requests of the moment). Staggered, their
    /// checkpoints stay spread over the interval. Shard 0 (and a single shard) starts at 0;
    /// no shard waits longer than the interval.
    pub fn head_start(&self, id: usize, shards: usize) -> (u64, Duration) {
        let shards = shards.max(1) as u64;
        let id = (id as u64).min(shards - 1);
        let records =
            (u128::from(self.snapshot_every_records) * u128::from(id) / u128::from(shards)) as u64;
        let time = self.snapshot_every.mul_f64(id as f64 / shards as f64);
        (records, time)
    }
}

impl Default for ShardLimits {
    fn default() -> Self {
        ShardLimits {
            mailbox_capacity: limits::MAILBOX_CAPACITY_DEFAULT,
            snapshot_every_records: limits::SNAPSHOT_EVERY_RECORDS_DEFAULT,
            snapshot_every: Duration::from_secs(limits::SNAPSHOT_EVERY_SECS_DEFAULT),
        }
    }
}

type Reply = Box<dyn FnOnce(Option<&StorageError>) + Send>;

/// A batch written to the log whose durability is not yet known: its replies (and those
/// of the read-only batches after it), and the positions it changed.
struct Pending {
    /// Set on the log writer's thread once the write completed.
    done: Arc<OnceLock<Result<(), StorageError>>>,
    replies: Vec<Reply>,
    keys: Vec<(Sym, Sym)>,
    all: bool,
    /// Whether the batch ran on an engine reloaded from disk after a write failed.
    reloaded: bool,
}

/// What the actor needs to checkpoint, and to reload its engine from disk after a
/// failed write.
pub struct Reload {
    pub storage: Storage,
    pub generation: u32,
    /// How many logs the shards share (this shard's is `id % logs`).
    pub logs: u32,
    pub settings: Settings,
    /// The configuration keys its checkpoint scope holds.
    pub config_keys: ConfigKeys,
    /// Notified once a write failed: health reports the InventoryService NOT_SERVING.
    pub storage_failed: Arc<tokio::sync::Notify>,
    /// Where the shard's events go once durable.
    pub events: EventLink,
}

/// A shard's link to the event log.
#[derive(Clone)]
pub struct EventLink {
    pub tx: mpsc::Sender<Handover>,
    /// The shard-log LSN up to which the event log stores this shard's events.
    pub covered: Arc<std::sync::atomic::AtomicU64>,
}

/// The task that owns one engine.
pub struct ShardActor {
    id: usize,
    engine: Engine,
    rx: mpsc::Receiver<Msg>,
    wal: ShardLog,
    limits: ShardLimits,
    /// Batches whose replies wait for the log, oldest first. At most
    /// `PENDING_BATCHES_MAX`: each is in its log writer's inbox or group.
    pending: VecDeque<Pending>,
    /// Notified by the log writer's completions: some pending batch is done.
    completed: Arc<Notify>,
    /// Set once a write failed to become durable: from then on writes answer UNAVAILABLE.
    failed: Arc<AtomicBool>,
    /// The first write that failed: the replies of every batch that ran before the engine
    /// was reloaded from disk answer it.
    first_failure: Option<StorageError>,
    records_since_checkpoint: u64,
    /// Records counted as written before the first checkpoint (`ShardLimits::head_start`),
    /// 0 after it: shard checkpoints stay spread over the interval from then on.
    records_ahead: u64,
    last_checkpoint: Instant,
    reload: Reload,
    /// Set once the engine was rebuilt from disk after a failed write.
    reloaded: bool,
    /// The LSN the next appended record gets (the log numbers records the same way, in
    /// the order this shard queues them).
    next_lsn: u64,
    checkpoint_in_flight: Arc<AtomicBool>,
    /// Time spent copying the delta being taken in steps, so far.
    checkpoint_copy: Duration,
    /// The delta of a checkpoint that failed, until the next one carries it.
    checkpoint_failed: Arc<std::sync::Mutex<Option<Delta>>>,
    /// Positions changed by a batch that is not yet durable, with how many such batches.
    /// A read of clean positions answers at once; a read of dirty ones waits its turn, so
    /// no reply reveals a change that is not yet durable.
    dirty: FxHashMap<(Sym, Sym), u32>,
    /// Pending batches that change every position's ATS (channel or catalogue changes).
    dirty_all: u32,
    /// What the batch being built changed.
    batch_keys: Vec<(Sym, Sym)>,
    batch_all: bool,
    touched: Vec<(Sym, Sym)>,
    /// The events of the batch being built, resolved, in order.
    batch_events: Vec<EventRecord>,
    drained: Vec<Event>,
}

/// Clears a flag when dropped, however the task that holds it ends.
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl ShardActor {
    /// Spawns the actor (shard `id` of `shards`) on the current runtime; returns the handle
    /// and the task, which ends when every handle is dropped and all replies are sent.
    pub fn spawn(
        (id, shards): (usize, usize),
        engine: Engine,
        wal: ShardLog,
        limits: ShardLimits,
        reload: Reload,
        next_lsn: u64,
    ) -> (ShardHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(limits.mailbox_capacity);
        let failed = Arc::new(AtomicBool::new(false));
        let (records_ahead, time_ahead) = limits.head_start(id, shards);
        let now = Instant::now();
        let actor = ShardActor {
            id,
            engine,
            rx,
            wal,
            limits,
            pending: VecDeque::new(),
            completed: Arc::new(Notify::new()),
            failed,
            first_failure: None,
            records_since_checkpoint: 0,
            records_ahead,
            last_checkpoint: now.checked_sub(time_ahead).unwrap_or(now),
            reload,
            reloaded: false,
            next_lsn,
            checkpoint_in_flight: Arc::new(AtomicBool::new(false)),
            checkpoint_copy: Duration::ZERO,
            checkpoint_failed: Arc::default(),
            dirty: FxHashMap::default(),
            dirty_all: 0,
            batch_keys: Vec::new(),
            batch_all: false,
            touched: Vec::new(),
            batch_events: Vec::new(),
            drained: Vec::new(),
        };
        let task = tokio::spawn(actor.run());
        (ShardHandle { id, tx }, task)
    }

    async fn run(mut self) {
        // Restoring the engine touched every position; none is pending.
        self.forget_touched();
        self.publish_gauges();
        let mut last_gauges = Instant::now();
        let mut batch: Vec<Msg> = Vec::with_capacity(BATCH_MAX);
        loop {
            let deadline = self.engine.next_deadline().map(|t| {
                let wait = (t + EXPIRY_GRACE_MS - clock::now_millis()).max(0) as u64;
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            // A checkpoint delta being copied in steps goes on even with no message.
            let deadline = match self.engine.checkpoint_delta_in_progress() {
                true => Some(tokio::time::Instant::now()),
                false => deadline,
            };
            let first = tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(msg) => Some(msg),
                    None => break,
                },
                _ = self.completed.notified(), if !self.pending.is_empty() => None,
                _ = sleep_until(deadline) => None,
            };
            batch.extend(first);
            if !batch.is_empty() && self.rx.is_empty() {
                // Let the handlers that are ready enqueue their requests first, so a busy
                // shard takes them in one batch (one log append) instead of one at a time.
                tokio::task::yield_now().await;
            }
            // Depth as the shard found it on waking, before it drains the batch.
            let depth = batch.len() + self.rx.len();
            while batch.len() < BATCH_MAX {
                match self.rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            if self.failed.load(Ordering::Relaxed) && !self.reloaded {
                self.reload_from_disk();
            }
            self.settle();
            let now = clock::now_millis();
            let mut records: Vec<Vec<u8>> = Vec::new();
            let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
            self.run_timers(now, &mut records);
            let size = batch.len();
            for msg in batch.drain(..) {
                self.handle(msg, &mut records, &mut replies);
            }
            if size > 0 {
                m::shard_batch(self.id, size, depth);
            }
            self.commit(records, replies).await;
            if self.engine.checkpoint_delta_in_progress() {
                // Between two steps of a checkpoint copy, let the other tasks run.
                tokio::task::yield_now().await;
            }
            if last_gauges.elapsed() >= Duration::from_millis(limits::GAUGES_EVERY_MS) {
                self.publish_gauges();
                last_gauges = Instant::now();
            }
        }
        // Every handle is gone. The log writer syncs everything queued; the last replies
        // leave once it has.
        loop {
            self.settle();
            if self.pending.is_empty() {
                break;
            }
            self.completed.notified().await;
        }
    }

    fn run_timers(&mut self, now: Millis, records: &mut Vec<Vec<u8>>) {
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        let due = now - EXPIRY_GRACE_MS;
        if self.engine.next_deadline().is_some_and(|t| t <= due) {
            let command = Command::Expire;
            if self.engine.apply(due, &command).is_ok() {
                records.push(record::encode(&LogRecord { now: due, command }));
                self.mark_dirty(false);
                self.take_events(self.next_lsn + records.len() as u64 - 1, None);
            }
        }
    }

    /// Handles one request. A write is applied now and logged with the batch; every answer
    /// except a read of clean positions leaves with the batch (see `defer`).
    fn handle(&mut self, msg: Msg, records: &mut Vec<Vec<u8>>, replies: &mut Vec<Reply>) {
        match msg {
            Msg::Write {
                now,
                command,
                hold_ref,
                respond,
            } => {
                if self.failed.load(Ordering::Relaxed) {
                    let _ = respond.send(Err(ShardError::Unavailable(
                        "a write to disk failed earlier; restart stockd once the disk is healthy"
                            .into(),
                    )));
                    return;
                }
                let result = self.write(now, command, hold_ref, records);
                defer(replies, respond, result);
            }
            Msg::Availability {
                channel_ref,
                keys,
                respond,
            } => self.availability(&channel_ref, keys, respond, replies),
            Msg::AvailabilityGrid {
                channel_ref,
                products,
                locations,
                kept,
                respond,
            } => {
                let locations = match kept {
                    true => GridLocations::Kept(&locations),
                    false => GridLocations::Once(&locations),
                };
                self.availability_grid(&channel_ref, (&products, locations), respond, replies);
            }
            Msg::Position {
                product_ref,
                location_ref,
                include_ledger,
                respond,
            } => {
                let view = self
                    .engine
                    .position(&product_ref, &location_ref, include_ledger);
                defer(replies, respond, Ok(view));
            }
            Msg::Hold {
                now,
                hold_ref,
                respond,
            } => defer(replies, respond, Ok(self.engine.hold(now, &hold_ref))),
            Msg::FulfilCheck {
                now,
                order_ref,
                lines,
                respond,
            } => {
                let result = self
                    .engine
                    .fulfil(now, &order_ref, lines.as_deref(), true)
                    .map_err(ShardError::Domain);
                defer(replies, respond, result);
            }
            Msg::ListHolds { now, scan, respond } => {
                defer(replies, respond, Ok(self.engine.list_holds(now, &scan)))
            }
            Msg::Order { order_ref, respond } => {
                defer(replies, respond, Ok(self.engine.order(&order_ref)));
            }
            Msg::Channels { respond } => {
                let channels = self.engine.channels().cloned().collect();
                defer(replies, respond, Ok(channels));
            }
            Msg::Network { respond } => {
                defer(replies, respond, Ok(self.engine.network_snap()));
            }
        }
    }

    /// Applies a write; a change is logged with the batch and marks its positions dirty.
    fn write(
        &mut self,
        now: Millis,
        command: Command,
        hold_ref: Option<String>,
        records: &mut Vec<Vec<u8>>,
    ) -> Result<WriteReply, ShardError> {
        // Channel and catalogue changes move every position's ATS.
        let everything = matches!(
            command,
            Command::UpsertChannel(_)
                | Command::DeleteChannel(_)
                | Command::UpsertProducts(_)
                | Command::UpsertCategories(_)
                | Command::UpsertLocations(_)
                | Command::DeleteLocation(_)
                | Command::SetNetwork(_)
        );
        match self.engine.apply(now, &command) {
            Ok(outcome) => {
                if outcome.changed() {
                    // The LSN the record gets: its events are tagged with it.
                    let lsn = self.next_lsn + records.len() as u64;
                    self.take_events(lsn, command_hold(&command));
                    records.push(record::encode(&LogRecord { now, command }));
                    self.mark_dirty(everything);
                } else {
                    self.forget_touched();
                    // A rejected reserve: its event has no record to come from.
                    self.take_events(0, command_hold(&command));
                }
                let hold = hold_ref.and_then(|h| self.engine.hold(now, &h));
                Ok(WriteReply { outcome, hold })
            }
            Err(e) => {
                self.forget_touched();
                self.take_events(0, None);
                Err(ShardError::Domain(e))
            }
        }
    }

    /// Resolves the events of the change just applied (logged at `lsn`, 0 if not logged)
    /// into the batch's event records, and counts the hold lifecycle.
    fn take_events(&mut self, lsn: u64, hold: Option<&str>) {
        let pending = self.engine.pending_events();
        if !pending.is_empty() {
            let origin = Origin {
                generation: self.reload.generation,
                shard: self.id as u32,
                lsn,
                index: 0,
            };
            // Resolved before the drain: a drain may release a ref an event names.
            let records =
                crate::storage::events::record::resolve(&self.engine, pending, origin, hold);
            self.batch_events.extend(records);
        }
        self.drained.clear();
        self.drained.extend(self.engine.drain_events());
        self.publish_events();
    }

    /// Answers an availability read: at once if no pending batch changed its positions,
    /// otherwise with the batch, so it never reveals a change that is not yet durable.
    fn availability(
        &mut self,
        channel_ref: &str,
        keys: Vec<(usize, String, String)>,
        respond: Respond<Vec<(usize, i64)>>,
        replies: &mut Vec<Reply>,
    ) {
        let clean = self.dirty_all == 0
            && keys.iter().all(|(_, p, l)| {
                self.engine
                    .position_key(p, l)
                    .is_none_or(|k| !self.dirty.contains_key(&k))
            });
        let result = keys
            .into_iter()
            .map(|(i, p, l)| {
                self.engine
                    .availability(channel_ref, &p, &l)
                    .map(|q| (i, q))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(ShardError::Domain);
        self.answer_read(clean, respond, result, replies);
    }

    /// Answers a network read (`Engine::availability_grid`) as `availability` answers.
    fn availability_grid(
        &mut self,
        channel_ref: &str,
        (products, locations): (&[String], GridLocations),
        respond: Respond<Vec<(usize, i64)>>,
        replies: &mut Vec<Reply>,
    ) {
        let (dirty, mut clean) = (&self.dirty, self.dirty_all == 0);
        let result = self
            .engine
            .availability_grid(channel_ref, products, locations, |k| {
                clean &= !dirty.contains_key(&k)
            })
            .map_err(ShardError::Domain);
        self.answer_read(clean, respond, result, replies);
    }

    /// Sends a read's answer at once if no pending batch changed what it read (`clean`),
    /// otherwise with the batch.
    fn answer_read<T: Send + 'static>(
        &self,
        clean: bool,
        respond: Respond<T>,
        result: Result<T, ShardError>,
        replies: &mut Vec<Reply>,
    ) {
        if clean && !self.failed.load(Ordering::Relaxed) {
            // Nothing pending touches these positions: what the engine holds for
            // them is durable, so the answer need not wait for anyone's flush.
            let _ = respond.send(result);
            return;
        }
        defer(replies, respond, result);
    }

    /// Counts the positions the last change touched as dirty until its batch is durable.
    fn mark_dirty(&mut self, everything: bool) {
        self.engine.take_touched(&mut self.touched);
        self.touched.sort_unstable();
        self.touched.dedup();
        for key in self.touched.drain(..) {
            *self.dirty.entry(key).or_default() += 1;
            self.batch_keys.push(key);
        }
        if everything {
            self.dirty_all += 1;
            self.batch_all = true;
        }
    }

    fn forget_touched(&mut self) {
        self.engine.take_touched(&mut self.touched);
        self.touched.clear();
    }

    /// Sends the replies of the batches whose write completed, oldest first, and cleans
    /// the positions they changed.
    fn settle(&mut self) {
        while let Some(result) = self.pending.front().and_then(|p| p.done.get().cloned()) {
            let done = self.pending.pop_front().expect("front exists");
            self.clean(done.keys, done.all);
            let failure = self.failure_of(result, done.reloaded);
            for reply in done.replies {
                reply(failure.as_ref());
            }
        }
    }

    /// What a batch's replies answer: its own failure, or the first one if the batch ran
    /// before the engine was reloaded (it may reflect the failed change).
    fn failure_of(
        &mut self,
        result: Result<(), StorageError>,
        reloaded: bool,
    ) -> Option<StorageError> {
        if let Err(e) = &result {
            self.failed.store(true, Ordering::Relaxed);
            self.first_failure.get_or_insert_with(|| e.clone());
        }
        match (result, &self.first_failure, reloaded) {
            (Err(e), _, _) => Some(e),
            (Ok(()), Some(e), false) => Some(e.clone()),
            _ => None,
        }
    }

    fn clean(&mut self, keys: Vec<(Sym, Sym)>, all: bool) {
        for key in keys {
            if let Some(n) = self.dirty.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.dirty.remove(&key);
                }
            }
        }
        if all {
            self.dirty_all -= 1;
        }
    }

    /// Sends the batch's records to the log; its replies leave once they are durable
    /// (`settle`), or at once in `--durability async`.
    async fn commit(&mut self, records: Vec<Vec<u8>>, replies: Vec<Reply>) {
        let keys = std::mem::take(&mut self.batch_keys);
        let all = std::mem::take(&mut self.batch_all);
        let events = std::mem::take(&mut self.batch_events);
        if records.is_empty() {
            if !events.is_empty() {
                // Nothing to make durable first (rejected reserves): hand over at once.
                let handover = self.handover(0, events);
                let _ = self.reload.events.tx.send(handover).await;
            }
            self.clean(keys, all);
            self.leave(replies);
            self.maybe_checkpoint();
            return;
        }
        let count = records.len() as u64;
        let sync = matches!(self.wal.durability(), Durability::Sync);
        let done = Arc::new(OnceLock::new());
        let handover = self.handover(self.next_lsn + count - 1, events);
        let events_tx = self.reload.events.tx.clone();
        // Runs on the log writer's thread once the batch is durable: the events go to the
        // event log then, never before (and not at all if the write failed). A full event
        // inbox makes the log thread wait: backpressure.
        let (mark_durable, last_seq) = (self.wal.mark_durable(), self.next_lsn + count - 1);
        let hand_over = move |ok: bool| {
            if ok {
                mark_durable(last_seq);
                let _ = events_tx.blocking_send(handover);
            }
        };
        let completion = if sync {
            let (slot, wake) = (done.clone(), self.completed.clone());
            Completion::new(move |result| {
                hand_over(result.is_ok());
                let _ = slot.set(result.map(drop).map_err(storage_error));
                wake.notify_one();
            })
        } else {
            // Acknowledged without waiting; a failure still stops later writes.
            let failed = self.failed.clone();
            Completion::new(move |result| {
                hand_over(result.is_ok());
                if result.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
            })
        };
        if let Err(e) = self
            .wal
            .append_with(self.next_lsn, records, completion)
            .await
        {
            self.failed.store(true, Ordering::Relaxed);
            for reply in replies {
                reply(Some(&e));
            }
            return;
        }
        self.records_since_checkpoint += count;
        self.next_lsn += count;
        if sync {
            debug_assert!(self.pending.len() < limits::PENDING_BATCHES_MAX);
            self.pending.push_back(Pending {
                done,
                replies,
                keys,
                all,
                reloaded: self.reloaded,
            });
        } else {
            self.clean(keys, all);
            self.leave(replies);
        }
        self.maybe_checkpoint();
    }

    fn handover(&self, covered: u64, events: Vec<EventRecord>) -> Handover {
        Handover {
            generation: self.reload.generation,
            shard: self.id as u32,
            covered,
            events,
            done: None,
        }
    }

    /// Replies with no write of their own to wait for: at once if no batch before them is
    /// pending, otherwise with the last pending batch (mailbox order).
    fn leave(&mut self, replies: Vec<Reply>) {
        if replies.is_empty() {
            return;
        }
        if let Some(last) = self.pending.back_mut() {
            last.replies.extend(replies);
            return;
        }
        let failure = self.failure_of(Ok(()), self.reloaded);
        for reply in replies {
            reply(failure.as_ref());
        }
    }

    fn maybe_checkpoint(&mut self) {
        if self.engine.checkpoint_delta_in_progress() {
            self.step_checkpoint();
            return;
        }
        // Also when many entries changed (a few records may touch many positions), so a
        // delta stays well inside one atomic batch.
        let due = self.records_since_checkpoint + self.records_ahead
            >= self.limits.snapshot_every_records
            || (self.records_since_checkpoint > 0
                && (self.last_checkpoint.elapsed() >= self.limits.snapshot_every
                    || self.engine.checkpoint_pending() >= limits::CHECKPOINT_PENDING_MAX));
        // One checkpoint at a time: each writes what changed since the one before, and the
        // log may only be recycled below what a finished checkpoint covers.
        if !due
            || self.failed.load(Ordering::Relaxed)
            || self.checkpoint_in_flight.swap(true, Ordering::AcqRel)
        {
            return;
        }
        self.records_since_checkpoint = 0;
        self.records_ahead = 0;
        self.last_checkpoint = Instant::now();
        self.checkpoint_copy = Duration::ZERO;
        self.engine.begin_checkpoint_delta();
        self.step_checkpoint();
    }

    /// Copies one step of the delta being taken: a bounded number of entries per wake-up,
    /// more when the batch just handled changed many, so the shard never pauses for a whole
    /// delta (`Engine::step_checkpoint_delta`). The last step starts the checkpoint.
    fn step_checkpoint(&mut self) {
        let started = Instant::now();
        let done = self
            .engine
            .step_checkpoint_delta(limits::CHECKPOINT_COPY_STEP_ENTRIES);
        self.checkpoint_copy += started.elapsed();
        if let Some(delta) = done {
            m::snapshot_taken(self.checkpoint_copy);
            self.start_checkpoint(delta);
        }
    }

    /// Hands a finished delta to a blocking thread, which merges and sorts it (after what a
    /// failed checkpoint could not write, so its removals are written too), encodes it,
    /// writes it and recycles the log.
    fn start_checkpoint(&mut self, delta: StepDelta) {
        let mut job = checkpointer::Job {
            shard: self.id,
            scope: Scope {
                generation: self.reload.generation,
                shard: self.id as u32,
            },
            // The delta is the state as of its last step, just now: every record queued.
            lsn_covered: self.next_lsn - 1,
            delta: Delta::default(),
            store: self.reload.storage.checkpoints.clone(),
            writer: self.wal.writer().clone(),
            stream: self.wal.stream(),
            log_index: self.wal.log_index(),
            durable_seq: self.wal.durable_seq().clone(),
            segments: self.wal.segments().clone(),
            config_keys: self.reload.config_keys.clone(),
            failed: self.checkpoint_failed.clone(),
        };
        let in_flight = self.checkpoint_in_flight.clone();
        let events_covered = self.reload.events.covered.clone();
        // Merging, encoding, the sled write and the log recycling run off the shard and off
        // the log writer, so neither requests nor group commits wait for them; on a thread
        // of its own at a low priority, so that on a busy core they mostly take the time the
        // shard and the RPCs leave (a checkpoint of 500,000 entries is seconds of CPU).
        let run = move || {
            let _done = ClearOnDrop(in_flight);
            lower_priority();
            let delta = delta.into_delta();
            let failed = job.failed.lock().expect("failed checkpoint slot").take();
            job.delta = match failed {
                Some(failed) => failed.merge(delta),
                None => delta,
            };
            // The log may be recycled only below what the event log stores too.
            if !wait_covered(&events_covered, job.lsn_covered) {
                tracing::warn!(
                    shard = job.shard,
                    lsn = job.lsn_covered,
                    "the event log did not store this shard's events in time; the checkpoint waits for the next one"
                );
                *job.failed.lock().expect("failed checkpoint slot") = Some(job.delta);
                return;
            }
            checkpointer::run(job);
        };
        // The work stays reachable if no thread can be started, so the delta is never lost.
        let slot = Arc::new(std::sync::Mutex::new(Some(run)));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("checkpoint-{}", self.id))
            .spawn(move || {
                if let Some(run) = theirs.lock().expect("checkpoint work slot").take() {
                    run();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(shard = self.id, error = %e, "cannot start a checkpoint thread: using the blocking pool");
            if let Some(run) = slot.lock().expect("checkpoint work slot").take() {
                tokio::task::spawn_blocking(run);
            }
        }
    }

    /// After a failed write, memory may hold changes the disk does not: rebuild the
    /// engine from what is durable, so reads report nothing that was not acknowledged.
    fn reload_from_disk(&mut self) {
        let r = &self.reload;
        r.storage_failed.notify_one();
        if self.engine.checkpoint_delta_in_progress() {
            // The delta being copied belongs to the engine about to be replaced.
            self.checkpoint_in_flight.store(false, Ordering::Release);
        }
        match crate::storage::recovery::reload_shard(
            &r.storage,
            r.generation,
            (self.id as u32, r.logs),
            &r.settings,
        ) {
            Ok(engine) => {
                self.engine = engine;
                // Symbols of the old engine mean nothing to the new one.
                self.dirty.clear();
                self.dirty_all = 0;
                // Their replies still wait for the log; their keys mean nothing now.
                for p in &mut self.pending {
                    p.keys.clear();
                    p.all = false;
                }
                self.forget_touched();
                tracing::warn!(
                    shard = self.id,
                    "a write to disk failed: state reloaded from disk; writes answer UNAVAILABLE until restart"
                );
            }
            Err(e) => tracing::error!(
                shard = self.id,
                error = %e,
                "a write to disk failed and the state could not be reloaded; reads may show unacknowledged changes"
            ),
        }
        self.reloaded = true;
    }

    /// Counts the hold lifecycle once per hold (on the shard of its first line).
    fn publish_events(&self) {
        for e in self.drained.iter().filter(|e| e.primary) {
            let name = match e.kind {
                EventKind::HoldCreated => "created",
                EventKind::HoldUpdated => "updated",
                EventKind::HoldConfirmed => "confirmed",
                EventKind::HoldReleased => "released",
                EventKind::HoldExpired => "expired",
                _ => continue,
            };
            if let Some(channel) = e.channel {
                m::hold_event(self.engine.resolve(channel), name);
            }
        }
    }

    fn publish_gauges(&self) {
        m::positions(self.id, self.engine.position_count());
        for (channel, count) in self.engine.active_holds_by_channel() {
            m::active_holds(channel, self.id, count);
        }
    }
}

/// Waits (on a checkpoint's thread) until the event log stores the shard's events up to
/// `lsn`; false after `CHECKPOINT_DURABLE_WAIT_MS`.
fn wait_covered(covered: &std::sync::atomic::AtomicU64, lsn: u64) -> bool {
    let deadline = Instant::now() + Duration::from_millis(limits::CHECKPOINT_DURABLE_WAIT_MS);
    while covered.load(Ordering::Acquire) < lsn {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(limits::CHECKPOINT_DURABLE_POLL_MS));
    }
    true
}

/// Lowers the calling thread's scheduling priority to `CHECKPOINT_THREAD_NICE` (on Linux
/// the nice value is per thread). Best effort: a refusal leaves it at the normal priority.
fn lower_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, limits::CHECKPOINT_THREAD_NICE) {
        tracing::debug!(error = %e, "cannot lower the checkpoint thread's priority");
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Queues an answer to leave with its batch: `result` once the batch is durable, or
/// UNAVAILABLE if its write failed.
fn defer<T: Send + 'static>(
    replies: &mut Vec<Reply>,
    respond: Respond<T>,
    result: Result<T, ShardError>,
) {
    replies.push(Box::new(move |failure| {
        let _ = respond.send(match failure {
            Some(e) => Err(ShardError::Unavailable(e.to_string())),
            None => result,
        });
    }));
}

/// A log writer's error as the shard reports it.
fn storage_error(e: LogError) -> StorageError {
    match e {
        LogError::WriterStopped => StorageError::WriterStopped,
        e => StorageError::Log(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_start_their_first_checkpoint_spread_over_the_interval() {
        let limits = ShardLimits {
            mailbox_capacity: 1,
            snapshot_every_records: 100_000,
            snapshot_every: Duration::from_secs(300),
        };
        assert_eq!(limits.head_start(0, 1), (0, Duration::ZERO));
        let starts: Vec<(u64, Duration)> = (0..8).map(|id| limits.head_start(id, 8)).collect();
        assert_eq!(starts[0], (0, Duration::ZERO));
        for (id, &(records, time)) in starts.iter().enumerate() {
            assert_eq!(records, 12_500 * id as u64, "shard {id}");
            assert_eq!(
                time,
                Duration::from_millis(37_500 * id as u64),
                "shard {id}"
            );
        }
        // Never a whole interval ahead, whatever the numbers.
        let huge = ShardLimits {
            snapshot_every_records: u64::MAX,
            ..limits
        };
        let (records, time) = huge.head_start(usize::MAX, 3);
        assert!(records < u64::MAX && time < huge.snapshot_every);
    }
}
