//! The group-commit thread: owns one `Log`, takes every batch that arrived while the
//! previous `fdatasync` ran, commits them as one group, and completes each batch with
//! "durable up to LSN N" only after that sync has returned.
//!
//! Thin on purpose: every decision about bytes on disk is in `Log`, tested without threads.

use std::ops::Range;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::file::LogDir;
use super::streams::Uncovered;
use super::writer::{CommitStats, Log, TruncateStats};
use super::{LogError, Lsn};

/// Capacity of the writer's inbox (batches). When full, senders wait: backpressure,
/// not memory growth. At most this many batches wait behind one sync.
pub const WRITER_INBOX_CAPACITY: usize = 1_024;

/// Most batches taken into one group; with the group's byte bound it bounds the latency
/// a group adds to its first member.
pub const GROUP_BATCHES_MAX: usize = 4_096;

const _: () = assert!(WRITER_INBOX_CAPACITY <= GROUP_BATCHES_MAX);

/// The completion of one batch: its LSNs, and the durable LSN, at least its last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub lsns: Range<Lsn>,
    pub durable_lsn: Lsn,
}

type Done<T> = oneshot::Sender<Result<T, LogError>>;

/// What runs on the writer thread once a batch is durable (or its write failed): a shard
/// marks its batch done and wakes itself, without a task or channel per batch. Keep it
/// short: the next group waits for it. Dropped without running (the thread stopped), it
/// runs with `WriterStopped`.
pub struct Completion(Option<OnDone>);

type OnDone = Box<dyn FnOnce(Result<Appended, LogError>) + Send>;

impl Completion {
    pub fn new(f: impl FnOnce(Result<Appended, LogError>) + Send + 'static) -> Completion {
        Completion(Some(Box::new(f)))
    }

    fn oneshot(done: Done<Appended>) -> Completion {
        Completion::new(move |result| {
            let _ = done.send(result);
        })
    }

    fn complete(mut self, result: Result<Appended, LogError>) {
        if let Some(f) = self.0.take() {
            f(result);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(LogError::WriterStopped));
        }
    }
}

enum Message {
    Append {
        term: u64,
        /// In a shared log: the stream and the sequence of the first record.
        tag: Option<(u32, u64)>,
        payloads: Vec<Vec<u8>>,
        done: Completion,
    },
    TruncateBelow {
        lsn: Lsn,
        done: Done<TruncateStats>,
    },
    /// A checkpoint of `stream` covers its records up to `seq`.
    Covered {
        stream: u32,
        seq: u64,
        done: Done<TruncateStats>,
    },
}

/// A cheap handle to the thread that owns one log.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Message>,
}

impl LogWriter {
    /// Starts the thread. `on_commit` sees every group's stats (for metrics). The thread
    /// stops when every handle is dropped, and hands the log back through its join handle.
    pub fn spawn<D, F>(log: Log<D>, on_commit: F) -> (LogWriter, JoinHandle<Log<D>>)
    where
        D: LogDir + 'static,
        F: FnMut(&CommitStats) + Send + 'static,
    {
        Self::spawn_shared(log, Uncovered::default(), on_commit)
    }

    /// [`spawn`](Self::spawn) for a log shared by several streams: `uncovered` says where
    /// the records recovery found and no checkpoint covers lie, so that no stream's
    /// checkpoint recycles them.
    pub fn spawn_shared<D, F>(
        log: Log<D>,
        uncovered: Uncovered,
        on_commit: F,
    ) -> (LogWriter, JoinHandle<Log<D>>)
    where
        D: LogDir + 'static,
        F: FnMut(&CommitStats) + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(WRITER_INBOX_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("stockd-log".into())
            .spawn(move || run(log, uncovered, rx, on_commit))
            .expect("spawn the log writer thread");
        (LogWriter { tx }, thread)
    }

    /// Appends a batch and waits until it is durable.
    pub async fn append(&self, term: u64, payloads: Vec<Vec<u8>>) -> Result<Appended, LogError> {
        let (message, rx) = append_message(term, None, payloads);
        self.tx
            .send(message)
            .await
            .map_err(|_| LogError::WriterStopped)?;
        rx.await.map_err(|_| LogError::WriterStopped)?
    }

    /// Queues a batch and returns at once with the receiver of its completion. Batches
    /// queued by one caller get their LSNs in the order of the calls, so a shard can keep
    /// applying while its earlier batches sync.
    pub async fn submit(
        &self,
        term: u64,
        payloads: Vec<Vec<u8>>,
    ) -> Result<oneshot::Receiver<Result<Appended, LogError>>, LogError> {
        let (done, rx) = oneshot::channel();
        self.submit_with(term, payloads, Completion::oneshot(done))
            .await?;
        Ok(rx)
    }

    /// Queues a batch like [`submit`](Self::submit); `done` runs on the writer thread once
    /// the batch is durable or its write failed.
    pub async fn submit_with(
        &self,
        term: u64,
        payloads: Vec<Vec<u8>>,
        done: Completion,
    ) -> Result<(), LogError> {
        self.send_append(term, None, payloads, done).await
    }

    /// Queues a batch of `stream`'s records, numbered from `first_seq`, into a shared log;
    /// `done` runs like [`submit_with`](Self::submit_with)'s.
    pub async fn submit_tagged_with(
        &self,
        term: u64,
        (stream, first_seq): (u32, u64),
        payloads: Vec<Vec<u8>>,
        done: Completion,
    ) -> Result<(), LogError> {
        self.send_append(term, Some((stream, first_seq)), payloads, done)
            .await
    }

    async fn send_append(
        &self,
        term: u64,
        tag: Option<(u32, u64)>,
        payloads: Vec<Vec<u8>>,
        done: Completion,
    ) -> Result<(), LogError> {
        let message = Message::Append {
            term,
            tag,
            payloads,
            done,
        };
        // A refused message (the thread stopped): `done` is dropped without running, and
        // the caller handles the `Err`.
        self.tx.send(message).await.map_err(|e| {
            if let Message::Append { mut done, .. } = e.0 {
                done.0 = None;
            }
            LogError::WriterStopped
        })
    }

    /// `truncate_below` for callers outside the runtime (the checkpointer).
    pub fn blocking_truncate_below(&self, lsn: Lsn) -> Result<TruncateStats, LogError> {
        let (done, rx) = oneshot::channel();
        let message = Message::TruncateBelow { lsn, done };
        self.tx
            .blocking_send(message)
            .map_err(|_| LogError::WriterStopped)?;
        rx.blocking_recv().map_err(|_| LogError::WriterStopped)?
    }

    /// A checkpoint of `stream` covers its records up to `seq`: recycles the segments no
    /// stream of the log needs any more (for the checkpointer, outside the runtime).
    pub fn blocking_covered(&self, stream: u32, seq: u64) -> Result<TruncateStats, LogError> {
        let (done, rx) = oneshot::channel();
        let message = Message::Covered { stream, seq, done };
        self.tx
            .blocking_send(message)
            .map_err(|_| LogError::WriterStopped)?;
        rx.blocking_recv().map_err(|_| LogError::WriterStopped)?
    }

    /// [`blocking_append`](Self::blocking_append) of `stream`'s records, numbered from
    /// `first_seq`, into a shared log (tests, tools).
    pub fn blocking_append_tagged(
        &self,
        term: u64,
        (stream, first_seq): (u32, u64),
        payloads: Vec<Vec<u8>>,
    ) -> Result<Appended, LogError> {
        self.blocking_append_message(append_message(term, Some((stream, first_seq)), payloads))
    }

    /// `append` for callers outside the runtime (tests, tools).
    pub fn blocking_append(&self, term: u64, payloads: Vec<Vec<u8>>) -> Result<Appended, LogError> {
        self.blocking_append_message(append_message(term, None, payloads))
    }

    fn blocking_append_message(
        &self,
        (message, rx): (Message, oneshot::Receiver<Result<Appended, LogError>>),
    ) -> Result<Appended, LogError> {
        self.tx
            .blocking_send(message)
            .map_err(|_| LogError::WriterStopped)?;
        rx.blocking_recv().map_err(|_| LogError::WriterStopped)?
    }

    /// Recycles the segments below `lsn`, after committing what is pending.
    pub async fn truncate_below(&self, lsn: Lsn) -> Result<TruncateStats, LogError> {
        let (done, rx) = oneshot::channel();
        let message = Message::TruncateBelow { lsn, done };
        self.tx
            .send(message)
            .await
            .map_err(|_| LogError::WriterStopped)?;
        rx.await.map_err(|_| LogError::WriterStopped)?
    }
}

fn run<D: LogDir>(
    mut log: Log<D>,
    mut uncovered: Uncovered,
    mut rx: mpsc::Receiver<Message>,
    mut on_commit: impl FnMut(&CommitStats),
) -> Log<D> {
    let mut waiting: Vec<(Range<Lsn>, Completion)> = Vec::with_capacity(64);
    while let Some(first) = rx.blocking_recv() {
        // Woken by the first batch of a round, on a core shared with the shards that send
        // them: let them finish the round (their batches queue meanwhile), so the group
        // carries every shard's batch and not just the first one's (issue #12: eight shards
        // on one core made eight times more, smaller groups). With a core to itself, the
        // thread has nobody to yield to and goes on at once.
        std::thread::yield_now();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(message) = next.take() {
            taken += 1;
            match message {
                Message::Append {
                    term,
                    tag,
                    payloads,
                    done,
                } => {
                    let append = |log: &mut Log<D>| match tag {
                        Some((stream, seq)) => log.append_tagged(term, stream, seq, &payloads),
                        None => log.append(term, &payloads),
                    };
                    let appended = match append(&mut log) {
                        Err(LogError::GroupFull { .. }) if log.pending_records() > 0 => {
                            commit(&mut log, &mut waiting, &mut on_commit);
                            append(&mut log)
                        }
                        other => other,
                    };
                    match appended {
                        Ok(lsns) => {
                            if let Some((stream, seq)) = tag {
                                uncovered.appended(stream, seq, lsns.clone());
                            }
                            waiting.push((lsns, done));
                        }
                        Err(e) => done.complete(Err(e)),
                    }
                }
                Message::TruncateBelow { lsn, done } => {
                    commit(&mut log, &mut waiting, &mut on_commit);
                    let _ = done.send(log.truncate_below(lsn));
                }
                Message::Covered { stream, seq, done } => {
                    commit(&mut log, &mut waiting, &mut on_commit);
                    uncovered.covered(stream, seq);
                    let floor = uncovered.floor(log.next_lsn());
                    let _ = done.send(log.truncate_below(floor));
                }
            }
            if taken < GROUP_BATCHES_MAX {
                next = rx.try_recv().ok();
            }
        }
        commit(&mut log, &mut waiting, &mut on_commit);
    }
    log
}

/// Commits the group and completes its batches, each only after the sync returned.
fn commit<D: LogDir>(
    log: &mut Log<D>,
    waiting: &mut Vec<(Range<Lsn>, Completion)>,
    on_commit: &mut impl FnMut(&CommitStats),
) {
    if waiting.is_empty() && log.pending_records() == 0 {
        return;
    }
    let result = log.commit();
    if let Ok(stats) = &result
        && stats.records > 0
    {
        on_commit(stats);
    }
    for (lsns, done) in waiting.drain(..) {
        let reply = match &result {
            Ok(stats) => {
                debug_assert!(lsns.end <= stats.durable_lsn + 1);
                Ok(Appended {
                    lsns,
                    durable_lsn: stats.durable_lsn,
                })
            }
            Err(e) => Err(e.clone()),
        };
        done.complete(reply);
    }
}

/// An append message and the receiver its completion arrives on.
fn append_message(
    term: u64,
    tag: Option<(u32, u64)>,
    payloads: Vec<Vec<u8>>,
) -> (Message, oneshot::Receiver<Result<Appended, LogError>>) {
    let (done, rx) = oneshot::channel();
    let message = Message::Append {
        term,
        tag,
        payloads,
        done: Completion::oneshot(done),
    };
    (message, rx)
}
