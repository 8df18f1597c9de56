//! The server as a library function: recover, start the shards, serve, drain, flush.
//!
//! The binary only parses flags, starts logging, binds and calls [`run`]; tests bind
//! `127.0.0.1:0` and call the same function. Serving itself (tonic) is `grpc::serve`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::task::JoinHandle as TaskHandle;

use crate::clock::now_millis;
use crate::config::ServerConfig;
use crate::grpc::{self, ServeError};
use crate::metrics::MetricsError;
use crate::shard::actor::Reload;
use crate::shard::{Router, ShardActor, ShardError, ShardHandle, shard_of};
use crate::storage::recovery::{self, Recovered, RecoveryReport};
use crate::storage::{RecoveryError, StorageError, Store, Wal};

pub use crate::limits::DECODED_MESSAGE_BYTES_MAX;

/// Why the server could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data folder cannot be opened.
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
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<RecoveryReport, String> {
    try_run(config, listener, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// [`run`] with its typed error.
pub async fn try_run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<RecoveryReport, StartError> {
    let store = Store::open(&config.data_dir)?;
    let mut recovered = recover(&store, &config).await?;
    let report = recovered.report.clone();
    log_recovery(&report);
    let (wal, wal_thread, next_seq) = start_wal(&store, &config, &mut recovered).await?;
    let generation = recovered.generation;
    let (handles, tasks) = start_shards(
        &store,
        &config,
        &wal,
        generation,
        recovered.engines,
        &next_seq,
    );
    let router = Arc::new(Router::new(handles));
    apply_boot_config(&router, &config).await?;

    // The services own the last router: once `serve` returns, the shards see their
    // mailboxes close, finish their batches and flush.
    let draining = grpc::serve(router, listener, shutdown, config.drain_timeout).await?;
    for task in tasks {
        let _ = task.await;
    }
    let flushed = wal.flush().await;
    drop(wal);
    let _ = tokio::task::spawn_blocking(move || wal_thread.join()).await;
    match flushed {
        Ok(()) => tracing::info!(
            drain_ms = draining.elapsed().as_millis() as u64,
            "shut down: write-ahead log flushed"
        ),
        Err(e) => tracing::error!(error = %e, "shut down: final flush failed"),
    }
    Ok(report)
}

/// Rebuilds the state on a blocking thread (it reads the whole data folder).
async fn recover(store: &Store, config: &ServerConfig) -> Result<Recovered, StartError> {
    let shards = config.shards;
    let store = store.clone();
    let settings = config.settings.clone();
    let recovered = tokio::task::spawn_blocking(move || {
        let route = move |p: &str, l: &str| shard_of(p, l, shards as usize);
        recovery::recover(&store, shards, &settings, now_millis(), &route)
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

/// Starts the WAL writer and makes recovery's repairs and expiries durable before anything
/// is served. Returns the writer, its thread and each shard's next log sequence.
async fn start_wal(
    store: &Store,
    config: &ServerConfig,
    recovered: &mut Recovered,
) -> Result<(Wal, JoinHandle<()>, Vec<u64>), StartError> {
    // The pending repair records below take sequence numbers too.
    let mut next_seq = recovered.next_seq.clone();
    for (shard, records) in recovered.pending.iter().enumerate() {
        next_seq[shard] += records.len() as u64;
    }
    let (wal, wal_thread) = Wal::start(
        store.clone(),
        recovered.generation,
        recovered.next_seq.clone(),
        config.durability,
        config.fault_file.clone(),
    );
    let write_err = |source| StartError::Write {
        path: store.path.clone(),
        source,
    };
    for (shard, records) in std::mem::take(&mut recovered.pending)
        .into_iter()
        .enumerate()
    {
        if !records.is_empty()
            && let Some(ticket) = wal.append(shard as u32, records).await.map_err(write_err)?
        {
            ticket
                .await
                .map_err(|_| write_err(StorageError::WriterStopped))?
                .map_err(write_err)?;
        }
    }
    wal.flush().await.map_err(write_err)?;
    Ok((wal, wal_thread, next_seq))
}

/// Spawns one actor per recovered engine.
fn start_shards(
    store: &Store,
    config: &ServerConfig,
    wal: &Wal,
    generation: u32,
    engines: Vec<stockd_domain::Engine>,
    next_seq: &[u64],
) -> (Vec<ShardHandle>, Vec<TaskHandle<()>>) {
    engines
        .into_iter()
        .enumerate()
        .map(|(id, engine)| {
            let reload = Reload {
                store: store.clone(),
                generation,
                settings: config.settings.clone(),
            };
            ShardActor::spawn(
                id,
                engine,
                wal.clone(),
                config.limits.clone(),
                reload,
                next_seq[id],
            )
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
