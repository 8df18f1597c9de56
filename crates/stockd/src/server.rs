//! The server as a library function: recover, start the shards, serve, drain, flush.
//!
//! The binary only parses flags, starts logging, binds and calls [`run`]; tests bind
//! `127.0.0.1:0` and call the same function. Serving itself (tonic) is `grpc::serve`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::task::JoinHandle as TaskHandle;

use crate::clock::now_millis;
use crate::config::ServerConfig;
pub use crate::grpc::Listeners;
use crate::grpc::{self, Protection, ServeError};
use crate::metrics::MetricsError;
use crate::shard::actor::Reload;
use crate::shard::directory::Directory;
use crate::shard::{Router, ShardActor, ShardError, ShardHandle, shard_of};
use crate::storage::backend::AnyDir;
use crate::storage::checkpointer::ConfigKeys;
use crate::storage::events::{self, EventLog, Handover, Origin};
use crate::storage::log::Log;
use crate::storage::recovery::{self, Layout, Recovered, RecoveryReport, log_of};
use crate::storage::wal::LogGroup;
use crate::storage::{RecoveryError, ShardLog, Storage, StorageError};

pub use crate::limits::DECODED_MESSAGE_BYTES_MAX;

/// Why the server could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data folder (log or checkpoint store) cannot be opened.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The state on disk cannot be rebuilt (the message names folder, shard and record).
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    /// Recovery's thread panicked.
    #[error("recovery panicked: {0}")]
    RecoveryPanicked(String),
    /// The repairs and expiries recovery found cannot be written.
    #[error("cannot write to {}: {source}", path.display())]
    Write { path: PathBuf, source: StorageError },
    /// An entry of the `--config` file is refused.
    #[error("config {what}: {source}")]
    BootConfig { what: String, source: ShardError },
    /// The gRPC server failed to start or stopped before shutdown.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The metrics endpoint cannot start (the binary starts it before `run`).
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The gRPC address cannot be bound (the binary binds it before `run`).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Serves on `listener` until `shutdown` completes, then drains and flushes.
///
/// The error is the start-up failure's message (`StartError`'s Display): its callers (the
/// binary, the tests, `stockd-load --embedded`) print it.
pub async fn run(
    config: ServerConfig,
    listener: impl Into<Listeners>,
    shutdown: impl Future<Output = ()>,
) -> Result<RecoveryReport, String> {
    try_run(config, listener, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// [`run`] with its typed error. `listeners` is the gRPC port's listener, or
/// [`Listeners`] with AdminService's own port too.
pub async fn try_run(
    config: ServerConfig,
    listeners: impl Into<Listeners>,
    shutdown: impl Future<Output = ()>,
) -> Result<RecoveryReport, StartError> {
    let storage = Storage::open(&config.storage, &config.data_dir, config.log)?;
    let opened = Arc::new(events::open(&storage, config.events)?);
    let recovered = recover(&storage, &config, opened.clone()).await?;
    let report = recovered.report.clone();
    log_recovery(&report);
    let generation = recovered.generation;
    let storage_failed = Arc::new(tokio::sync::Notify::new());
    // Every replayed record's events are stored by now: each shard is covered up to its log.
    let covered: Vec<u64> = recovered.shards.iter().map(|s| s.next_seq - 1).collect();
    let opened = Arc::try_unwrap(opened)
        .unwrap_or_else(|_| unreachable!("recovery returned its reference to the event log"));
    let (events, events_thread) =
        opened.start(&storage, generation, &covered, storage_failed.clone())?;
    let (logs, threads, next_lsn, engines, keys) = start_logs(&config, recovered, &events).await?;
    let shared = Shards {
        storage: &storage,
        generation,
        storage_failed: &storage_failed,
        events: &events,
    };
    // Where each hold's and order's parts are, from the recovered engines, before any
    // request is served.
    let directory = Directory::rebuild(&engines, now_millis(), config.settings.hold_retention_ms);
    let (handles, tasks) = start_shards(shared, &config, &logs, engines, keys, &next_lsn);
    drop(logs);
    let router = Arc::new(Router::with_directory(handles, directory));
    let prune = tokio::spawn(Router::prune_forever(Arc::downgrade(&router)));
    apply_boot_config(&router, &config).await?;

    // The services own the last router: once `serve` returns, the shards see their
    // mailboxes close and finish their batches; each log writer then syncs what it was
    // given and stops.
    let protection = Protection {
        limits: config.serve.clone(),
        security: config.security.clone(),
    };
    let draining = grpc::serve(
        router,
        listeners.into(),
        shutdown,
        config.drain_timeout,
        storage_failed,
        protection,
        events.shared.clone(),
    )
    .await?;
    prune.abort();
    for task in tasks {
        let _ = task.await;
    }
    drop(events);
    let joined = tokio::task::spawn_blocking(move || {
        // Every thread is joined, even after one that panicked; the event log's last, once
        // the shard logs (which hand it their last events) have stopped.
        let mut joined: Vec<bool> = threads.into_iter().map(|t| t.join().is_ok()).collect();
        joined.push(events_thread.join().is_ok());
        joined.iter().all(|ok| *ok)
    })
    .await
    .unwrap_or(false);
    tracing::info!(
        drain_ms = draining.elapsed().as_millis() as u64,
        log_writers_stopped_cleanly = joined,
        "shut down: write-ahead logs synced"
    );
    Ok(report)
}

/// Rebuilds the state on a blocking thread (it reads the whole data folder).
async fn recover(
    storage: &Storage,
    config: &ServerConfig,
    events: Arc<events::Opened>,
) -> Result<Recovered, StartError> {
    let shards = config.shards;
    let layout = Layout {
        shards,
        logs: config.logs(),
    };
    let storage = storage.clone();
    let settings = config.settings.clone();
    let recovered = tokio::task::spawn_blocking(move || {
        let route = move |p: &str, l: &str| shard_of(p, l, shards as usize);
        let now = now_millis();
        recovery::recover_with_events(&storage, layout, &settings, now, &route, &*events)
    })
    .await
    .map_err(|e| StartError::RecoveryPanicked(e.to_string()))??;
    crate::metrics::recovered(recovered.report.duration);
    Ok(recovered)
}

fn log_recovery(report: &RecoveryReport) {
    for dropped in &report.dropped_tail_records {
        tracing::warn!("{dropped}");
    }
    for failure in &report.repair_failures {
        tracing::warn!("recovery could not repair {failure}");
    }
    tracing::info!(
        shards_before = report.shards_before,
        shards = report.shards_after,
        records_replayed = report.records_replayed,
        positions = report.positions,
        holds = report.holds,
        holds_expired = report.holds_expired,
        holds_repaired = report.holds_repaired,
        dropped_tail_records = report.dropped_tail_records.len(),
        duration_ms = report.duration.as_millis() as u64,
        "recovered"
    );
}

type Started = (
    Vec<ShardLog>,
    Vec<JoinHandle<Log<AnyDir>>>,
    Vec<u64>,
    Vec<stockd_domain::Engine>,
    Vec<ConfigKeys>,
);

/// Starts each log's writer and makes recovery's repairs and expiries durable before
/// anything is served. Returns each shard's handle to its log, the log threads, each
/// shard's next sequence, the engines and the checkpoint configuration keys.
async fn start_logs(
    config: &ServerConfig,
    recovered: Recovered,
    events: &EventLog,
) -> Result<Started, StartError> {
    let mut started: Started = Default::default();
    let pending = recovered.pending;
    let generation = recovered.generation;
    let logs = recovered.logs.len() as u32;
    let mut groups = Vec::with_capacity(recovered.logs.len());
    for (index, state) in recovered.logs.into_iter().enumerate() {
        let (group, thread) = LogGroup::start(index, state.log, state.uncovered);
        groups.push(group);
        started.1.push(thread);
    }
    for (id, (mut state, records)) in recovered.shards.into_iter().zip(pending).enumerate() {
        let index = log_of(id as u32, logs) as usize;
        let mut next = state.next_seq;
        let log = ShardLog::new(
            id,
            (index, &groups[index]),
            config.durability,
            config.fault_file.clone(),
            next - 1,
        );
        let logged = !records.is_empty();
        if logged {
            let first = next;
            next += records.len() as u64;
            log.append_durable(first, records)
                .await
                .map_err(|source| StartError::Write {
                    path: config.data_dir.join("log"),
                    source,
                })?;
        }
        // The repairs' and expiries' events, once their records are durable.
        let lsn = if logged { next - 1 } else { 0 };
        store_events(events, generation, id, lsn, &mut state.engine)
            .await
            .map_err(|source| StartError::Write {
                path: config.data_dir.join("events"),
                source,
            })?;
        started.0.push(log);
        started.2.push(next);
        started.3.push(state.engine);
        started.4.push(state.config_keys);
    }
    Ok(started)
}

/// Hands the engine's pending events (recovery's repairs and expiries, logged at `lsn`)
/// to the event log and waits until they are durable.
async fn store_events(
    events: &EventLog,
    generation: u32,
    shard: usize,
    lsn: u64,
    engine: &mut stockd_domain::Engine,
) -> Result<(), StorageError> {
    let origin = Origin {
        generation,
        shard: shard as u32,
        lsn,
        index: 0,
    };
    // Resolved before the drain, which may release a ref they name.
    let records = events::record::resolve(engine, engine.pending_events(), origin, None);
    engine.drain_events().for_each(drop);
    let (done, stored) = tokio::sync::oneshot::channel();
    let handover = Handover {
        generation,
        shard: shard as u32,
        covered: lsn,
        events: records,
        done: Some(done),
    };
    events
        .tx
        .send(handover)
        .await
        .map_err(|_| StorageError::WriterStopped)?;
    stored.await.map_err(|_| StorageError::WriterStopped)
}

/// What every shard shares: the storage, its generation, the failure signal, the events.
struct Shards<'a> {
    storage: &'a Storage,
    generation: u32,
    storage_failed: &'a Arc<tokio::sync::Notify>,
    events: &'a EventLog,
}

/// Spawns one actor per recovered engine.
fn start_shards(
    shared: Shards<'_>,
    config: &ServerConfig,
    logs: &[ShardLog],
    engines: Vec<stockd_domain::Engine>,
    keys: Vec<ConfigKeys>,
    next_lsn: &[u64],
) -> (Vec<ShardHandle>, Vec<TaskHandle<()>>) {
    let shards = engines.len();
    engines
        .into_iter()
        .zip(keys)
        .enumerate()
        .map(|(id, (engine, config_keys))| {
            let reload = Reload {
                storage: shared.storage.clone(),
                generation: shared.generation,
                logs: config.logs(),
                settings: config.settings.clone(),
                config_keys,
                storage_failed: shared.storage_failed.clone(),
                events: crate::shard::actor::EventLink {
                    tx: shared.events.tx.clone(),
                    covered: shared.events.shared.covered(id),
                },
            };
            let (handle, task) = ShardActor::spawn(
                (id, shards),
                engine,
                logs[id].clone(),
                config.limits.clone(),
                reload,
                next_lsn[id],
            );
            (handle, crate::shard::watch::exit_on_panic(id, task))
        })
        .unzip()
}

async fn apply_boot_config(router: &Router, config: &ServerConfig) -> Result<(), StartError> {
    let now = now_millis();
    let boot = &config.boot;
    let refused = |what: String| move |source| StartError::BootConfig { what, source };
    for channel in &boot.channels {
        router
            .upsert_channel(now, channel.clone())
            .await
            .map_err(refused(format!("channel {:?}", channel.channel_ref)))?;
    }
    if !boot.categories.is_empty() {
        router
            .upsert_categories(now, boot.categories.clone())
            .await
            .map_err(refused("categories".into()))?;
    }
    for chunk in boot.products.chunks(crate::limits::STOCK_BATCH_MAX) {
        router
            .upsert_products(now, chunk.to_vec())
            .await
            .map_err(refused("products".into()))?;
    }
    if !boot.locations.is_empty() {
        router
            .upsert_locations(now, boot.locations.clone())
            .await
            .map_err(refused("locations".into()))?;
    }
    for network in &boot.networks {
        router
            .set_network(now, network.clone())
            .await
            .map_err(refused(format!("network of {:?}", network.channel_ref)))?;
    }
    if !boot.channels.is_empty() || !boot.products.is_empty() {
        tracing::info!(
            channels = boot.channels.len(),
            products = boot.products.len(),
            categories = boot.categories.len(),
            "configuration applied"
        );
    }
    Ok(())
}
