//! A shard's write-ahead log: its own segment log (`storage::log`) and writer thread.
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
use super::log::{Appended, CommitStats, Log, LogError, LogWriter, Lsn};
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

/// One shard's handle to its log writer.
#[derive(Clone)]
pub struct ShardLog {
    writer: LogWriter,
    durability: Durability,
    /// Every write fails while this file exists (tests of a failing disk).
    fault_file: Option<PathBuf>,
    /// The log's durable LSN, published by the writer after each sync.
    durable_lsn: Arc<AtomicU64>,
    /// Live segments of the log, for `stockd_wal_segments`: +1 per rollover, minus what a
    /// checkpoint recycled.
    segments: Arc<AtomicI64>,
}

impl ShardLog {
    /// Starts the writer thread of an opened log.
    pub fn start(
        shard: usize,
        log: Log<AnyDir>,
        durability: Durability,
        fault_file: Option<PathBuf>,
    ) -> (ShardLog, JoinHandle<Log<AnyDir>>) {
        let durable_lsn = Arc::new(AtomicU64::new(log.durable_lsn()));
        let published = durable_lsn.clone();
        let segments = Arc::new(AtomicI64::new(log.stats().segments_live as i64));
        m::wal_segments(shard, segments.load(Ordering::Relaxed));
        let live = segments.clone();
        let (writer, thread) = LogWriter::spawn(log, move |stats: &CommitStats| {
            published.store(stats.durable_lsn, Ordering::Release);
            m::wal_committed(stats);
            if stats.rolled {
                m::wal_segments(shard, live.fetch_add(1, Ordering::Relaxed) + 1);
            }
        });
        let log = ShardLog {
            writer,
            durability,
            fault_file,
            durable_lsn,
            segments,
        };
        (log, thread)
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub fn writer(&self) -> &LogWriter {
        &self.writer
    }

    pub fn durable_lsn(&self) -> &Arc<AtomicU64> {
        &self.durable_lsn
    }

    pub fn segments(&self) -> &Arc<AtomicI64> {
        &self.segments
    }

    /// Queues a batch of records, in order; the ticket completes once they are durable.
    pub async fn append(&self, records: Vec<Vec<u8>>) -> Result<Ticket, StorageError> {
        self.check(&records)?;
        Ok(self.writer.submit(0, records).await?)
    }

    /// Queues a batch of records, in order; `done` runs on the log writer's thread once
    /// they are durable or their write failed. After an `Err`, `done` never runs.
    pub async fn append_with(
        &self,
        records: Vec<Vec<u8>>,
        done: Completion,
    ) -> Result<(), StorageError> {
        self.check(&records)?;
        Ok(self.writer.submit_with(0, records, done).await?)
    }

    fn check(&self, records: &[Vec<u8>]) -> Result<(), StorageError> {
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
    pub async fn append_durable(&self, records: Vec<Vec<u8>>) -> Result<Lsn, StorageError> {
        let ticket = self.append(records).await?;
        let appended = ticket.await.map_err(|_| StorageError::WriterStopped)??;
        Ok(appended.durable_lsn)
    }
}
