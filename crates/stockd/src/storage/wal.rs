//! The write-ahead log writer: one thread that owns every write to sled, with group commit.
//!
//! Shards send their records here; the writer inserts everything that arrived while the
//! previous flush ran and makes it durable with one `flush()`, then tells each sender.
//! sled's `flush` is called from this one place only: its issues #1241 and #1308 report
//! hangs with many concurrent `flush_async` callers.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::record;
use super::store::{StorageError, Store, log_key};
use crate::metrics as m;

pub use crate::limits::{GROUP_MESSAGES_MAX, WAL_INBOX_CAPACITY};

/// When an acknowledged change is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Flushed before the reply leaves (group commit).
    Sync,
    /// Applied in memory and acknowledged; flushed every `flush_interval`. A crash loses
    /// at most the changes acknowledged during the last interval.
    Async { flush_interval: Duration },
}

/// A completion the writer sends once a message's records are durable (or failed).
pub type Ticket = oneshot::Receiver<Result<(), StorageError>>;

enum Message {
    Append {
        shard: u32,
        records: Vec<Vec<u8>>,
        done: Option<oneshot::Sender<Result<(), StorageError>>>,
    },
    Flush {
        done: oneshot::Sender<Result<(), StorageError>>,
    },
    /// The async mode's flush clock.
    Tick,
}

/// A cheap handle to the writer thread.
#[derive(Clone)]
pub struct Wal {
    tx: mpsc::Sender<Message>,
    durability: Durability,
}

impl Wal {
    /// Starts the writer thread. `next_seq[shard]` is each shard's next log sequence.
    /// `fault_file`: when set and the file exists, every write fails (for tests of a
    /// failing disk).
    pub fn start(
        store: Store,
        generation: u32,
        next_seq: Vec<u64>,
        durability: Durability,
        fault_file: Option<PathBuf>,
    ) -> (Wal, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(WAL_INBOX_CAPACITY);
        if let Durability::Async { flush_interval } = durability {
            // A weak sender: the clock must not keep the writer alive once every shard
            // and the server have dropped theirs, or shutdown would wait forever.
            let ticks = tx.downgrade();
            std::thread::Builder::new()
                .name("stockd-wal-clock".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(flush_interval);
                        let Some(tx) = ticks.upgrade() else { return };
                        if tx.blocking_send(Message::Tick).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawn the flush clock thread");
        }
        let writer = Writer {
            store,
            generation,
            next_seq,
            durability,
            fault_file,
            dirty: false,
            failed: None,
        };
        let thread = std::thread::Builder::new()
            .name("stockd-wal".into())
            .spawn(move || writer.run(rx))
            .expect("spawn the write-ahead log thread");
        (Wal { tx, durability }, thread)
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Appends a shard's records. In sync mode the ticket completes when they are durable;
    /// in async mode there is none.
    pub async fn append(
        &self,
        shard: u32,
        records: Vec<Vec<u8>>,
    ) -> Result<Option<Ticket>, StorageError> {
        for r in &records {
            record::check(r).expect("a record is checked right before it is written");
        }
        let (done, ticket) = match self.durability {
            Durability::Sync => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            Durability::Async { .. } => (None, None),
        };
        self.tx
            .send(Message::Append {
                shard,
                records,
                done,
            })
            .await
            .map_err(|_| StorageError::WriterStopped)?;
        Ok(ticket)
    }

    /// Flushes everything appended so far.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let (done, ticket) = oneshot::channel();
        self.tx
            .send(Message::Flush { done })
            .await
            .map_err(|_| StorageError::WriterStopped)?;
        ticket.await.map_err(|_| StorageError::WriterStopped)?
    }
}

struct Writer {
    store: Store,
    generation: u32,
    next_seq: Vec<u64>,
    durability: Durability,
    fault_file: Option<PathBuf>,
    dirty: bool,
    /// The first failure. It sticks: once a write failed, memory may hold changes the
    /// disk does not, so nothing more is acknowledged until a restart recovers.
    failed: Option<StorageError>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut group = Vec::with_capacity(64);
        loop {
            let Some(first) = rx.blocking_recv() else {
                self.flush_if_dirty();
                return;
            };
            group.push(first);
            while group.len() < GROUP_MESSAGES_MAX {
                match rx.try_recv() {
                    Ok(m) => group.push(m),
                    Err(_) => break,
                }
            }
            self.commit(&mut group);
        }
    }

    fn fault(&self) -> Option<StorageError> {
        let path = self.fault_file.as_ref()?;
        path.exists().then(|| StorageError::Injected(path.clone()))
    }

    fn flush_if_dirty(&mut self) {
        if self.dirty {
            let _ = self.flush();
        }
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        let started = Instant::now();
        let result = self
            .store
            .db
            .flush()
            .map(|_| ())
            .map_err(StorageError::from);
        m::wal_flushed(started.elapsed());
        self.dirty = false;
        result
    }

    /// Writes one group and makes it durable with one flush.
    fn commit(&mut self, group: &mut Vec<Message>) {
        let mut waiting = Vec::with_capacity(group.len());
        let mut result: Result<(), StorageError> =
            match self.failed.clone().or_else(|| self.fault()) {
                Some(e) => Err(e),
                None => Ok(()),
            };
        let mut changes = 0usize;
        let mut bytes = 0usize;
        let mut needs_flush = false;
        let mut tick = false;
        // Every append of the group goes into one sled batch: one write, not one per shard.
        let mut log_batch = sled::Batch::default();
        let mut log_pending = false;
        for message in group.drain(..) {
            match message {
                Message::Append {
                    shard,
                    records,
                    done,
                } => {
                    if result.is_ok() {
                        let seq = &mut self.next_seq[shard as usize];
                        for r in &records {
                            record::check(r)
                                .expect("a record is checked right before it is written");
                            log_batch.insert(&log_key(self.generation, shard, *seq), r.as_slice());
                            *seq += 1;
                            bytes += r.len();
                        }
                        changes += records.len();
                        log_pending = true;
                    }
                    needs_flush = true;
                    if let Some(done) = done {
                        waiting.push(done);
                    }
                }
                Message::Flush { done } => {
                    needs_flush = true;
                    waiting.push(done);
                }
                Message::Tick => {
                    needs_flush |= self.dirty;
                    tick = true;
                }
            }
        }
        if log_pending && result.is_ok() {
            result = self.store.log.apply_batch(log_batch).map_err(Into::into);
        }
        if needs_flush {
            self.dirty = true;
            let flush_now =
                matches!(self.durability, Durability::Sync) || !waiting.is_empty() || tick;
            if flush_now && result.is_ok() {
                result = self.flush();
            }
        }
        if changes > 0 {
            m::wal_group(changes, bytes);
        }
        self.answer(waiting, result);
    }

    /// Tells every waiter of a group how it went; the first failure sticks.
    fn answer(
        &mut self,
        waiting: Vec<oneshot::Sender<Result<(), StorageError>>>,
        result: Result<(), StorageError>,
    ) {
        if let Err(e) = &result
            && self.failed.is_none()
        {
            tracing::error!(error = %e, "write-ahead log write failed; writes answer UNAVAILABLE until restart");
            self.failed = Some(e.clone());
        }
        for done in waiting {
            let _ = done.send(result.clone());
        }
    }
}
