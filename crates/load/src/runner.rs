//! The load engine: `-c` workers over a few shared connections, bounded by `-n` and/or
//! `-z`, closed loop or open loop (`--rps`), each load thread recording into its own
//! histograms (merged at the end, so recording never contends).
//!
//! Open loop: request `i` is due at `start + i / rps`, whichever worker takes it. Its
//! latency is measured from that intended start, not from when it was sent, so a server
//! that stalls cannot hide the queue that builds behind it (the coordinated-omission
//! correction of wrk2 and HdrHistogram).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::Status;

use crate::rpc;
use crate::schema::Method;

/// How much load, for how long.
#[derive(Debug, Clone)]
pub struct Plan {
    pub concurrency: usize,
    /// `-n`: operations to run in all (a scenario's operation may be several calls).
    pub total: Option<u64>,
    /// `-z`: stop starting operations after this long.
    pub duration: Option<Duration>,
    /// `--rps`: open loop at this many operations per second.
    pub rps: Option<f64>,
    /// `--skipFirst`: leave the first calls out of the statistics.
    pub skip_first: u64,
    /// `--count-errors`: failed calls count in the latency statistics too.
    pub count_errors: bool,
    /// `-t`: a call that takes longer fails with DEADLINE_EXCEEDED.
    pub timeout: Duration,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// Why the run ended, in ghz's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// `-n` operations were done.
    Normal,
    /// `-z` elapsed.
    Timeout,
    /// Interrupted (Ctrl-C).
    Cancel,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Normal => "normal",
            EndReason::Timeout => "timeout",
            EndReason::Cancel => "cancel",
        }
    }
}

/// One scenario's unit of work.
pub trait Load: Send + Sync + 'static {
    /// Per-worker state (a client, an RNG, buffers).
    type Worker: Send + 'static;

    /// The state of worker `index`, which calls over `client`'s connection.
    fn worker(&self, index: usize, client: rpc::Client) -> Self::Worker;

    /// Called once, with the instant the first operation may start.
    fn started(&self, _at: Instant) {}

    /// Runs operation number `n` (0-based, unique within the run), timing each call with
    /// [`Recorder::call`].
    fn run(
        &self,
        worker: &mut Self::Worker,
        n: u64,
        rec: &mut Recorder,
    ) -> impl Future<Output = ()> + Send;
}

/// Latency and status statistics of one method.
#[derive(Clone)]
pub struct MethodStats {
    /// Latencies in nanoseconds of the calls that count (OK, or all with --count-errors).
    pub hist: Histogram<u64>,
    /// Every call, failed or not.
    pub count: u64,
    /// Sum of every call's latency (ghz's average includes failed calls).
    pub sum_ns: u128,
    /// Fastest and slowest of the calls that count, exact.
    pub min_ns: u64,
    pub max_ns: u64,
    /// Calls by gRPC status code.
    pub codes: [u64; 17],
    /// Failed calls by ghz-style error text.
    pub errors: HashMap<String, u64>,
}

impl MethodStats {
    pub fn new() -> MethodStats {
        MethodStats {
            // 1 µs to 60 s at 3 significant digits: ~150 KiB per histogram.
            hist: Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
                .expect("valid histogram bounds"),
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            codes: [0; 17],
            errors: HashMap::new(),
        }
    }

    pub fn merge(&mut self, other: &MethodStats) {
        self.hist
            .add(&other.hist)
            .expect("histograms with the same bounds");
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        for (a, b) in self.codes.iter_mut().zip(other.codes) {
            *a += b;
        }
        for (e, n) in &other.errors {
            *self.errors.entry(e.clone()).or_default() += n;
        }
    }

    pub fn ok(&self) -> u64 {
        self.codes[0]
    }

    pub fn failed(&self) -> u64 {
        self.count - self.ok()
    }

    fn counted(&mut self, ns: u64) {
        self.hist.saturating_record(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }
}

impl Default for MethodStats {
    fn default() -> Self {
        MethodStats::new()
    }
}

struct Shared {
    next: AtomicU64,
    calls_done: AtomicU64,
    ops_done: AtomicU64,
    stop: AtomicBool,
    /// EndReason as u8 once decided by something other than the workers.
    stop_reason: AtomicU8,
    skip_first: u64,
    count_errors: bool,
    timeout: Duration,
    /// Open loop: how late operations started after their intended start (the load
    /// generator's own error), merged from every load thread at the end.
    send_late: std::sync::Mutex<Option<Histogram<u64>>>,
    /// Open loop: operations whose worker became free only after their intended start.
    late_no_worker: AtomicU64,
}

thread_local! {
    /// Open loop: this load thread's starting lateness, in nanoseconds.
    static THREAD_LATE: RefCell<Option<Histogram<u64>>> = const { RefCell::new(None) };
    /// The statistics of one load thread. Its workers all run on its current-thread
    /// runtime, so they share one histogram per method: fewer and hotter in the cache
    /// than one per worker (each is ~150 KiB), and never contended.
    static THREAD_STATS: RefCell<Vec<Option<MethodStats>>> = const { RefCell::new(Vec::new()) };
}

/// Records how late an open-loop operation started.
fn record_late(late: Duration) {
    THREAD_LATE.with_borrow_mut(|h| {
        let h = h.get_or_insert_with(|| {
            Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
        });
        h.saturating_record((late.as_nanos() as u64).max(1_000));
    });
}

/// Adds this thread's starting lateness to the run's.
fn merge_thread_late(shared: &Shared) {
    if let Some(late) = THREAD_LATE.take() {
        let mut all = shared.send_late.lock().expect("lateness lock");
        match all.as_mut() {
            Some(h) => h.add(&late).expect("histograms with the same bounds"),
            None => *all = Some(late),
        }
    }
}

/// Takes what this thread's workers recorded.
fn take_thread_stats() -> Vec<Option<MethodStats>> {
    let mut stats = THREAD_STATS.take();
    stats.resize_with(Method::count(), || None);
    stats
}

/// Records each call of one worker.
pub struct Recorder {
    shared: Arc<Shared>,
    intended: Option<Instant>,
    /// The `-t` deadline of the call in flight: one timer per worker, moved on for each
    /// call (moving a timer later costs no timer-wheel work; a new one per call did).
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Recorder {
    /// Times `call` as one `method` call. The first call of an open-loop operation is
    /// timed from the operation's intended start.
    pub async fn call<T>(
        &mut self,
        method: Method,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let now = Instant::now();
        let started = self.intended.take().unwrap_or(now);
        self.deadline
            .as_mut()
            .reset((now + self.shared.timeout).into());
        let result = tokio::select! {
            biased;
            r = call => r,
            () = &mut self.deadline => Err(Status::deadline_exceeded("context deadline exceeded")),
        };
        self.record(method, started.elapsed(), &result);
        result
    }

    fn record<T>(&mut self, method: Method, latency: Duration, result: &Result<T, Status>) {
        let seq = self.shared.calls_done.fetch_add(1, Ordering::Relaxed);
        if seq < self.shared.skip_first {
            return;
        }
        let ns = latency.as_nanos().min(u64::MAX as u128) as u64;
        let count_errors = self.shared.count_errors;
        THREAD_STATS.with_borrow_mut(|all| {
            if all.len() <= method.slot() {
                all.resize_with(Method::count(), || None);
            }
            record_into(
                all[method.slot()].get_or_insert_with(MethodStats::new),
                ns,
                result,
                count_errors,
            );
        });
    }
}

fn record_into<T>(
    stats: &mut MethodStats,
    ns: u64,
    result: &Result<T, Status>,
    count_errors: bool,
) {
    stats.count += 1;
    stats.sum_ns += u128::from(ns);
    match result {
        Ok(_) => {
            stats.codes[0] += 1;
            stats.counted(ns);
        }
        Err(status) => {
            stats.codes[(status.code() as usize).min(16)] += 1;
            *stats.errors.entry(rpc::error_text(status)).or_default() += 1;
            if count_errors {
                stats.counted(ns);
            }
        }
    }
}

/// What a run measured.
pub struct Outcome {
    /// Per method (indexed by `Method::slot`), for the methods that were called.
    pub methods: Vec<Option<MethodStats>>,
    /// From the first operation's start to the last call's end.
    pub total: Duration,
    pub end_reason: EndReason,
    /// Operations run.
    pub operations: u64,
    /// Open loop: how late operations whose worker was waiting for them started after
    /// their intended start (the generator's own error), in ns.
    pub send_late: Option<Histogram<u64>>,
    /// Open loop: operations that found no free worker at their intended start.
    pub late_no_worker: u64,
}

impl Outcome {
    /// Every method's calls together.
    pub fn overall(&self) -> MethodStats {
        let mut all = MethodStats::new();
        for s in self.methods.iter().flatten() {
            all.merge(s);
        }
        all
    }

    pub fn method(&self, m: Method) -> Option<&MethodStats> {
        self.methods[m.slot()].as_ref()
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: String,
    /// HTTP/2 connections in all (at least one per thread).
    pub connections: usize,
    /// Load threads, each with its own single-threaded runtime, its own connections and
    /// its share of the workers.
    pub threads: usize,
    pub connect_timeout: Duration,
}

impl Target {
    /// Threads actually used: no more than workers or connections would keep busy.
    pub fn threads_for(&self, concurrency: usize) -> usize {
        self.threads.clamp(1, concurrency.max(1))
    }

    /// Connections actually opened: at least one per thread.
    pub fn connections_for(&self, concurrency: usize) -> usize {
        self.connections.max(self.threads_for(concurrency))
    }
}

/// Runs `load` according to `plan` against `target` and returns the merged statistics.
///
/// The load runs on `target.threads` OS threads, each driving a current-thread tokio
/// runtime with its own connections (thread-per-core, like h2load's `-t`). On one core
/// this matters: tokio's multi-thread scheduler runs a woken task at once (its LIFO
/// slot), so each request reached the socket in its own write; a current-thread runtime
/// lets every ready worker queue its request first and the connection writes them
/// together, which halves the kernel time per call on both sides of the socket.
pub async fn run<L: Load>(load: Arc<L>, plan: &Plan, target: &Target) -> Result<Outcome, String> {
    let bounds = Bounds::of(plan);
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        calls_done: AtomicU64::new(0),
        ops_done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        stop_reason: AtomicU8::new(0),
        skip_first: plan.skip_first,
        count_errors: plan.count_errors,
        timeout: plan.timeout,
        send_late: std::sync::Mutex::new(None),
        late_no_worker: AtomicU64::new(0),
    });
    let concurrency = plan.concurrency.max(1);
    let threads = target.threads_for(concurrency);
    let connections = target.connections_for(concurrency);

    // Each load thread reports once (ready or failed), so `threads` slots always suffice
    // and `try_send` never finds the channel full.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(threads);
    let (start_tx, start_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
    let mut results = Vec::with_capacity(threads);
    for t in 0..threads {
        // Thread t takes connections t, t+threads, ... and workers t, t+threads, ...
        let share = Share {
            index: t,
            connections: (t..connections).step_by(threads).count(),
            workers: (t..concurrency).step_by(threads).collect(),
        };
        let starter = Starter {
            ready: ready_tx.clone(),
            start: start_rx.clone(),
        };
        let thread = spawn_thread(load.clone(), shared.clone(), share, starter, target, bounds)?;
        results.push(thread);
    }
    drop(ready_tx);
    for _ in 0..threads {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => return Err("a load thread stopped before it was ready".into()),
        }
    }

    let start = Instant::now();
    load.started(start);
    let _ = start_tx.send(Some(start));
    let interrupt = tokio::spawn(stop_on_ctrl_c(shared.clone()));
    let progress = plan
        .progress
        .then(|| tokio::spawn(progress_bar(shared.clone(), start, bounds)));

    let mut methods: Vec<Option<MethodStats>> = (0..Method::count()).map(|_| None).collect();
    for done in results {
        if let Ok(stats) = done.await {
            merge_into(&mut methods, stats);
        }
    }
    let elapsed = start.elapsed();
    interrupt.abort();
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.await;
    }
    let operations = shared.ops_done.load(Ordering::Relaxed);
    let send_late = shared.send_late.lock().expect("lateness lock").take();
    let late_no_worker = shared.late_no_worker.load(Ordering::Relaxed);
    Ok(Outcome {
        methods,
        total: elapsed,
        end_reason: bounds.end_reason(&shared, operations),
        operations,
        send_late,
        late_no_worker,
    })
}

/// When the run ends: `-n` operations, `-z` elapsed, and the open loop's pace.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    total: Option<u64>,
    duration: Option<Duration>,
    /// Seconds between intended starts (open loop).
    interval: Option<f64>,
}

impl Bounds {
    /// 10 s when neither -n nor -z is given, as ghz does.
    fn of(plan: &Plan) -> Bounds {
        let (total, duration) = match (plan.total, plan.duration) {
            (None, None) => (None, Some(Duration::from_secs(10))),
            other => other,
        };
        Bounds {
            total,
            duration,
            interval: plan.rps.filter(|r| *r > 0.0).map(|r| 1.0 / r),
        }
    }

    fn end_reason(&self, shared: &Shared, operations: u64) -> EndReason {
        match shared.stop_reason.load(Ordering::Relaxed) {
            r if r == EndReason::Cancel as u8 + 1 => EndReason::Cancel,
            _ if self.total.is_some_and(|t| operations >= t) => EndReason::Normal,
            _ if self.duration.is_some() => EndReason::Timeout,
            _ => EndReason::Normal,
        }
    }
}

/// A load thread's share of the connections and workers.
struct Share {
    index: usize,
    connections: usize,
    workers: Vec<usize>,
}

/// How a load thread says it is connected, and learns when to start.
struct Starter {
    ready: tokio::sync::mpsc::Sender<Result<(), String>>,
    start: tokio::sync::watch::Receiver<Option<Instant>>,
}

type ThreadStats = tokio::sync::oneshot::Receiver<Vec<Option<MethodStats>>>;

/// Starts one load thread; its statistics arrive on the returned channel.
fn spawn_thread<L: Load>(
    load: Arc<L>,
    shared: Arc<Shared>,
    share: Share,
    starter: Starter,
    target: &Target,
    bounds: Bounds,
) -> Result<ThreadStats, String> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let addr = target.addr.clone();
    let connect_timeout = target.connect_timeout;
    std::thread::Builder::new()
        .name(format!("stockd-load-{}", share.index))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = starter
                        .ready
                        .try_send(Err(format!("cannot start a load thread: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let conns = rpc::open_load(&addr, share.connections, connect_timeout).await;
                if let Some(stats) = thread_load(load, shared, share, starter, conns, bounds).await
                {
                    let _ = done_tx.send(stats);
                }
            });
        })
        .map_err(|e| format!("cannot start a load thread: {e}"))?;
    Ok(done_rx)
}

/// A load thread's work once connected: wait for the start, run its workers, merge
/// their statistics. `None` when it could not connect or the run was abandoned.
async fn thread_load<L: Load>(
    load: Arc<L>,
    shared: Arc<Shared>,
    share: Share,
    starter: Starter,
    channels: Result<Vec<rpc::Client>, String>,
    bounds: Bounds,
) -> Option<Vec<Option<MethodStats>>> {
    let Starter { ready, mut start } = starter;
    let channels = match channels {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.try_send(Err(e));
            return None;
        }
    };
    let _ = ready.try_send(Ok(()));
    drop(ready);
    let start = loop {
        if let Some(start) = *start.borrow_and_update() {
            break start;
        }
        if start.changed().await.is_err() {
            return None;
        }
    };
    let deadline = bounds.duration.map(|d| start + d);
    let tasks: Vec<_> = share
        .workers
        .into_iter()
        .enumerate()
        .map(|(j, index)| {
            let channel = channels[j % channels.len()].clone();
            let state = load.worker(index, channel);
            let pace = Pace {
                start,
                deadline,
                total: bounds.total,
                interval: bounds.interval,
            };
            tokio::spawn(worker_loop(load.clone(), state, shared.clone(), pace))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    merge_thread_late(&shared);
    Some(take_thread_stats())
}

/// Marks the run cancelled on Ctrl-C.
async fn stop_on_ctrl_c(shared: Arc<Shared>) {
    if tokio::signal::ctrl_c().await.is_ok() {
        shared
            .stop_reason
            .store(EndReason::Cancel as u8 + 1, Ordering::Relaxed);
        shared.stop.store(true, Ordering::Relaxed);
    }
}

fn merge_into(into: &mut [Option<MethodStats>], from: Vec<Option<MethodStats>>) {
    for (into, from) in into.iter_mut().zip(from) {
        if let Some(from) = from {
            match into {
                Some(s) => s.merge(&from),
                None => *into = Some(from),
            }
        }
    }
}

/// A worker's clock: when the run started and ends, and the open loop's pace.
struct Pace {
    start: Instant,
    deadline: Option<Instant>,
    total: Option<u64>,
    interval: Option<f64>,
}

/// One worker: takes the next operation number until the run is over.
async fn worker_loop<L: Load>(load: Arc<L>, mut state: L::Worker, shared: Arc<Shared>, pace: Pace) {
    let Pace {
        start,
        deadline,
        total,
        interval,
    } = pace;
    let mut rec = Recorder {
        shared: shared.clone(),
        intended: None,
        deadline: Box::pin(tokio::time::sleep(shared.timeout)),
    };
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if total.is_some_and(|t| n >= t) {
            break;
        }
        if let Some(interval) = interval {
            let intended = start + Duration::from_secs_f64(n as f64 * interval);
            if deadline.is_some_and(|d| intended >= d) {
                break;
            }
            // A worker that takes its operation early and then starts it late is the
            // generator's own error; one that takes it late found every worker busy (all
            // waiting on the server): the server's queue, part of the latency it records.
            let waiting = Instant::now() < intended;
            pace_until(intended, &shared.stop).await;
            if waiting {
                record_late(Instant::now().saturating_duration_since(intended));
            } else {
                shared.late_no_worker.fetch_add(1, Ordering::Relaxed);
            }
            rec.intended = Some(intended);
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        load.run(&mut state, n, &mut rec).await;
        rec.intended = None;
        shared.ops_done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits until `at` with better than the timer's 1 ms resolution: sleeps while more than
/// 2 ms away, then yields until due (other tasks and I/O keep running meanwhile).
async fn pace_until(at: Instant, stop: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= at || stop.load(Ordering::Relaxed) {
            return;
        }
        let left = at - now;
        if left > Duration::from_millis(2) {
            tokio::time::sleep_until((at - Duration::from_millis(1)).into()).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}

async fn progress_bar(shared: Arc<Shared>, start: Instant, bounds: Bounds) {
    let Bounds {
        total, duration, ..
    } = bounds;
    const WIDTH: usize = 30;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut stderr = std::io::stderr();
    loop {
        tick.tick().await;
        let done = shared.stop.load(Ordering::Relaxed);
        let elapsed = start.elapsed();
        let ops = shared.ops_done.load(Ordering::Relaxed);
        let calls = shared.calls_done.load(Ordering::Relaxed);
        let by_count = total.map_or(0.0, |t| ops as f64 / t.max(1) as f64);
        let by_time = duration.map_or(0.0, |d| elapsed.as_secs_f64() / d.as_secs_f64().max(1e-9));
        let fraction = by_count.max(by_time).clamp(0.0, 1.0);
        let filled = (fraction * WIDTH as f64) as usize;
        let bar: String = (0..WIDTH)
            .map(|i| match i.cmp(&filled) {
                std::cmp::Ordering::Less => '=',
                std::cmp::Ordering::Equal => '>',
                std::cmp::Ordering::Greater => ' ',
            })
            .collect();
        let rate = calls as f64 / elapsed.as_secs_f64().max(1e-9);
        let _ = write!(
            stderr,
            "\r[{bar}] {:>3.0}%  {:>6.1}s  {calls} calls  {rate:.0} calls/s ",
            fraction * 100.0,
            elapsed.as_secs_f64()
        );
        let _ = stderr.flush();
        if done {
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
            return;
        }
    }
}
