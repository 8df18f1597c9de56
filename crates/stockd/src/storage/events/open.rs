//! Opening the event log at start-up, before recovery, and regenerating the events a crash
//! kept out of it.
//!
//! The cursor record says, per shard, the last shard-log record whose events were in the
//! log at the last rollover; the events after the cursor (the newest segment, usually) add
//! what came since. Recovery replays each shard's records after its checkpoint and calls
//! `replayed` after each: the events of a record past that point are kept, and `flush`
//! makes them durable before anything else happens (a shard-count change then removes the
//! shard logs they came from).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{Notify, broadcast, mpsc};

use super::record::{self, EventRecord, Origin};
use super::segments;
use super::shared::Shared;
use super::writer::{CURSOR, Cursor, Last, Writer, note};
use super::{EventLog, EventsConfig};
use crate::limits::EVENTS_INBOX_CAPACITY;
use crate::storage::backend::{AnyDir, Storage};
use crate::storage::log::{Log, LogError, Lsn};
use crate::storage::recovery::ReplayEvents;
use crate::storage::{RecoveryError, StorageError, record as rec};
use stockd_domain::{Command, Engine};

/// The event log opened, not yet running: what recovery's replay reports to.
pub struct Opened {
    log: Mutex<Log<AnyDir>>,
    last: Mutex<Last>,
    /// Regenerated events not yet appended, in each shard's order.
    pending: Mutex<Vec<EventRecord>>,
    config: EventsConfig,
    cursor_seq: u64,
}

/// Opens (creating if needed) the event log of `storage`.
pub fn open(storage: &Storage, config: EventsConfig) -> Result<Opened, StorageError> {
    let cursor: Cursor = match storage.checkpoints.get_meta(CURSOR)? {
        Some(bytes) => rec::decode(&bytes).map_err(|e| StorageError::Corrupt {
            path: storage.data_dir.clone(),
            what: "event log cursor",
            reason: e.to_string(),
        })?,
        None => Cursor::default(),
    };
    let live = segments::list(&storage.events_dir()?)?;
    // Only the events after the cursor are read back; a fresh (or removed) log goes on
    // after the cursor's sequence, so numbers never go backwards.
    let mut after = match live.first() {
        Some(first) => cursor.up_to.max(first.first_seq - 1),
        None => cursor.up_to,
    };
    let (log, found) = loop {
        match Log::open(storage.events_dir()?, config.log_config(), after) {
            Err(LogError::CheckpointAhead { last, .. }) if last < after => after = last,
            Err(LogError::Missing { first, .. }) if first - 1 > after => after = first - 1,
            other => break other?,
        }
    };
    if let Some(tail) = &found.dropped {
        tracing::warn!(file = %tail.file, offset = tail.offset, reason = tail.reason, "event log: torn tail dropped; its events are regenerated from the shard logs");
    }
    let mut last: Last = cursor.last.into_iter().collect();
    for r in &found.records {
        let event = EventRecord::decode(&r.payload).map_err(|reason| StorageError::Corrupt {
            path: storage.data_dir.join("events"),
            what: "event record",
            reason,
        })?;
        note(&mut last, &event);
    }
    tracing::info!(
        last_sequence = log.durable_lsn(),
        read_back = found.records.len(),
        "event log opened"
    );
    Ok(Opened {
        log: Mutex::new(log),
        last: Mutex::new(last),
        pending: Mutex::new(Vec::new()),
        config,
        cursor_seq: cursor.up_to,
    })
}

impl ReplayEvents for Opened {
    fn replayed(
        &self,
        (generation, shard, lsn): (u32, u32, Lsn),
        command: &Command,
        engine: &mut Engine,
    ) {
        let stored = self
            .last
            .lock()
            .expect("last lock")
            .get(&(generation, shard))
            .copied();
        if stored.is_some_and(|(l, _)| lsn < l) {
            engine.drain_events().for_each(drop);
            return;
        }
        let origin = Origin {
            generation,
            shard,
            lsn,
            index: 0,
        };
        // Resolved before the drain, which may release a ref they name (as the shard does).
        let hold = record::command_hold(command);
        let missing: Vec<_> = record::resolve(engine, engine.pending_events(), origin, hold)
            .into_iter()
            .filter(|r| stored.is_none_or(|at| (r.origin.lsn, r.origin.index) > at))
            .collect();
        engine.drain_events().for_each(drop);
        if !missing.is_empty() {
            self.pending.lock().expect("pending lock").extend(missing);
        }
    }

    fn flush(&self) -> Result<(), RecoveryError> {
        let pending = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        if pending.is_empty() {
            return Ok(());
        }
        let mut log = self.log.lock().expect("log lock");
        let mut last = self.last.lock().expect("last lock");
        let fail = |e: LogError| RecoveryError::from(StorageError::Log(e));
        let max = log.config().record_bytes_max();
        let mut regenerated = 0;
        for mut event in pending {
            let payload = [event.encode_within(max)];
            match log.append(0, &payload) {
                Err(LogError::GroupFull { .. }) => {
                    log.commit().map_err(fail)?;
                    log.append(0, &payload).map_err(fail)?;
                }
                other => {
                    other.map_err(fail)?;
                }
            }
            note(&mut last, &event);
            regenerated += 1;
        }
        log.commit().map_err(fail)?;
        tracing::info!(
            events = regenerated,
            "event log: events of shard records it lacked regenerated"
        );
        Ok(())
    }
}

impl Opened {
    /// Starts the writer for the running layout. `covered[s]`: shard `s`'s last LSN, whose
    /// events are all stored by now. `on_failure` is notified if the event log fails.
    pub fn start(
        self,
        storage: &Storage,
        generation: u32,
        covered: &[u64],
        on_failure: Arc<Notify>,
    ) -> Result<(EventLog, JoinHandle<Log<AnyDir>>), StorageError> {
        let log = self.log.into_inner().expect("log lock");
        let segments: VecDeque<_> = segments::list(&storage.events_dir()?)?.into();
        let published = log.durable_lsn();
        let oldest = segments.front().map_or(published + 1, |s| s.first_seq);
        let (live, _) = broadcast::channel(self.config.watch_buffer.max(1));
        crate::metrics::events_segments(segments.len());
        let shared = Arc::new(Shared {
            dir: storage.events_dir()?,
            published: AtomicU64::new(published),
            oldest: AtomicU64::new(oldest),
            segments: std::sync::RwLock::new(segments),
            covered: covered
                .iter()
                .map(|c| Arc::new(AtomicU64::new(*c)))
                .collect(),
            live,
            failed: AtomicBool::new(false),
            index: Mutex::default(),
            watch_buffer: self.config.watch_buffer.max(1),
            reports: super::report::Reports::new(self.config.retention_secs),
        });
        // The events stored before now go into the report beside the writer's new ones.
        let rebuilt = shared.clone();
        std::thread::Builder::new()
            .name("stockd-report".into())
            .spawn(move || super::report::rebuild(rebuilt, published))
            .expect("spawn the report rebuild thread");
        let (tx, rx) = mpsc::channel(EVENTS_INBOX_CAPACITY);
        let writer = Writer {
            log,
            shared: shared.clone(),
            config: self.config,
            store: storage.checkpoints.clone(),
            generation,
            last: self.last.into_inner().expect("last lock"),
            cursor_seq: self.cursor_seq,
            on_failure,
            last_retention: std::time::Instant::now(),
        };
        let thread = writer.spawn(rx);
        Ok((EventLog { tx, shared }, thread))
    }
}
