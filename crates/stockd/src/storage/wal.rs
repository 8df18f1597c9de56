//! A shard's write-ahead log: the segment log (`storage::log`) it shares with the other
//! shards of its core, and that log's writer thread (`LogGroup`).
//!
//! The shard queues each batch's records in order (`append`) and keeps applying; the
//! writer takes every batch that arrived while the previous `fdatasync` ran, writes them
//! with one write and one sync, and only then completes them: a ticket (`append`), or a
//! `Completion` that runs on the writer thread (`append_with`: the shard marks its batch
//! durable and wakes itself to send the batch's replies, `--durability sync`); in
//! `--durability async` replies do not wait for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use super::backend::AnyDir;
use super::error::StorageError;
use super::log::group::Completion;
use super::log::streams::Uncovered;
use super::log::{Appended, Log, LogError, LogWriter};
use super::record;
use crate::metrics as m;

/// When an acknowledged change is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Synced before the reply leaves (group commit).
    Sync,
    /// Applied in memory and acknowledged before its sync. The writer still syncs every
    /// group as soon as the previous sync returned, so a crash loses what was acknowledged
    /// during the last sync; `flush_interval` (`--flush-interval-ms`) is kept for
    /// compatibility and does not delay syncs.
    Async { flush_interval: Duration },
}

/// Completes when a batch is durable (or its write failed).
pub type Ticket = oneshot::Receiver<Result<Appended, LogError>>;

/// One log and its writer thread, shared by the shards of one core (`log::streams`).
pub struct LogGroup {
    writer: LogWriter,
    /// Live segments of the log, for `stockd_wal_segments`: +1 per rollover, minus what a
    /// checkpoint recycled.
    segments: Arc<AtomicI64>,
}

impl LogGroup {
    /// Starts the writer thread of an opened log. `uncovered`: where the records recovery
    /// found and no checkpoint covers lie.
    pub fn start(
        index: usize,
        log: Log<AnyDir>,
        uncovered: Uncovered,
    ) -> (LogGroup, JoinHandle<Log<AnyDir>>) {
        let segments = Arc::new(AtomicI64::new(log.stats().segments_live as i64));
        m::wal_segments(index, segments.load(Ordering::Relaxed));
        let live = segments.clone();
        let (writer, thread) = LogWriter::spawn_shared(log, uncovered, move |stats| {
            m::wal_committed(stats);
            if stats.rolled {
                m::wal_segments(index, live.fetch_add(1, Ordering::Relaxed) + 1);
            }
        });
        (LogGroup { writer, segments }, thread)
    }
}

/// One shard's handle to the log it shares: its records are the stream `shard`, numbered
/// by the shard.
#[derive(Clone)]
pub struct ShardLog {
    writer: LogWriter,
    shard: u32,
    /// Which log (for the segments gauge).
    log_index: usize,
    durability: Durability,
    /// Every write fails while this file exists (tests of a failing disk).
    fault_file: Option<PathBuf>,
    /// The shard's own sequence up to which its records are durable, published by the
    /// completion of each of its batches.
    durable_seq: Arc<AtomicU64>,
    segments: Arc<AtomicI64>,
}

impl ShardLog {
    /// The handle of shard `shard` to `group`, whose records up to `durable_seq` are on disk.
    pub fn new(
        shard: usize,
        (log_index, group): (usize, &LogGroup),
        durability: Durability,
        fault_file: Option<PathBuf>,
        durable_seq: u64,
    ) -> ShardLog {
        ShardLog {
            writer: group.writer.clone(),
            shard: shard as u32,
            log_index,
            durability,
            fault_file,
            durable_seq: Arc::new(AtomicU64::new(durable_seq)),
            segments: group.segments.clone(),
        }
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub fn writer(&self) -> &LogWriter {
        &self.writer
    }

    /// The shard's stream id in its log.
    pub fn stream(&self) -> u32 {
        self.shard
    }

    /// Which log the shard writes to.
    pub fn log_index(&self) -> usize {
        self.log_index
    }

    pub fn durable_seq(&self) -> &Arc<AtomicU64> {
        &self.durable_seq
    }

    /// What a completion calls once the shard's records up to `last_seq` are durable.
    pub fn mark_durable(&self) -> impl Fn(u64) + Send + 'static {
        let durable = self.durable_seq.clone();
        move |last_seq| {
            durable.fetch_max(last_seq, Ordering::Release);
        }
    }

    pub fn segments(&self) -> &Arc<AtomicI64> {
        &self.segments
    }

    /// Queues a batch of records, numbered from `first_seq`, in order; the ticket
    /// completes once they are durable.
    pub async fn append(
        &self,
        first_seq: u64,
        records: Vec<Vec<u8>>,
    ) -> Result<Ticket, StorageError> {
        let (done, rx) = oneshot::channel();
        let mark_durable = self.mark_durable();
        let last_seq = first_seq + records.len() as u64 - 1;
        let done = Completion::new(move |result: Result<Appended, LogError>| {
            if result.is_ok() {
                mark_durable(last_seq);
            }
            let _ = done.send(result);
        });
        self.append_with(first_seq, records, done).await?;
        Ok(rx)
    }

    /// Queues a batch of records, numbered from `first_seq`, in order; `done` runs on the
    /// log writer's thread once they are durable or their write failed, and publishes
    /// them durable (`mark_durable`). After an `Err`, `done` never runs.
    pub async fn append_with(
        &self,
        first_seq: u64,
        records: Vec<Vec<u8>>,
        done: Completion,
    ) -> Result<(), StorageError> {
        self.check(&records)?;
        let tag = (self.shard, first_seq);
        Ok(self
            .writer
            .submit_tagged_with(0, tag, records, done)
            .await?)
    }

    fn check(&self, records: &[Vec<u8>]) -> Result<(), StorageError> {
        assert!(!records.is_empty(), "a batch has at least one record");
        for r in records {
            record::check(r).expect("a record is checked right before it is written");
        }
        if let Some(path) = &self.fault_file
            && path.exists()
        {
            return Err(StorageError::Injected(path.clone()));
        }
        Ok(())
    }

    /// Appends and waits until durable (recovery's repairs before serving).
    pub async fn append_durable(
        &self,
        first_seq: u64,
        records: Vec<Vec<u8>>,
    ) -> Result<(), StorageError> {
        let ticket = self.append(first_seq, records).await?;
        ticket.await.map_err(|_| StorageError::WriterStopped)??;
        Ok(())
    }
}
