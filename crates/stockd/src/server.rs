//! The server as a library function: recover, start the shards, serve, drain, flush.
//!
//! The binary only parses flags, starts logging, binds and calls [`run`]; tests bind
//! `127.0.0.1:0` and call the same function.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use crate::clock::now_millis;
use crate::config::ServerConfig;
use crate::grpc::{AdminApi, InventoryApi};
use crate::proto::inventory::v1::admin_service_server::AdminServiceServer;
use crate::proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use crate::shard::{Router, ShardActor, shard_of};
use crate::storage::recovery::{self, RecoveryReport};
use crate::storage::{Store, Wal};

/// Largest decoded request: bounds the memory one call can make the server allocate.
pub const DECODED_MESSAGE_BYTES_MAX: usize = 4 << 20;

/// Serves on `listener` until `shutdown` completes, then drains and flushes.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<RecoveryReport, String> {
    let shards = config.shards;
    let store = Store::open(&config.data_dir)?;
    let recovered = {
        let store = store.clone();
        let settings = config.settings.clone();
        tokio::task::spawn_blocking(move || {
            let route = move |p: &str, l: &str| shard_of(p, l, shards as usize);
            recovery::recover(&store, shards, &settings, now_millis(), &route)
        })
        .await
        .map_err(|e| format!("recovery panicked: {e}"))??
    };
    let report = recovered.report.clone();
    crate::metrics::recovered(report.duration);
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

    // The pending repair records below take sequence numbers too.
    let mut next_seq = recovered.next_seq.clone();
    for (shard, records) in recovered.pending.iter().enumerate() {
        next_seq[shard] += records.len() as u64;
    }
    let (wal, wal_thread) = Wal::start(
        store.clone(),
        recovered.generation,
        recovered.next_seq,
        config.durability,
        config.fault_file.clone(),
    );
    for (shard, records) in recovered.pending.into_iter().enumerate() {
        if !records.is_empty()
            && let Some(ticket) = wal
                .append(shard as u32, records)
                .await
                .map_err(|e| e.to_string())?
        {
            ticket
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
    }
    wal.flush()
        .await
        .map_err(|e| format!("cannot write to {}: {e}", store.path.display()))?;

    let mut handles = Vec::with_capacity(shards as usize);
    let mut tasks = Vec::with_capacity(shards as usize);
    for (id, engine) in recovered.engines.into_iter().enumerate() {
        let reload = crate::shard::actor::Reload {
            store: store.clone(),
            generation: recovered.generation,
            settings: config.settings.clone(),
        };
        let (handle, task) = ShardActor::spawn(
            id,
            engine,
            wal.clone(),
            config.limits.clone(),
            reload,
            next_seq[id],
        );
        handles.push(handle);
        tasks.push(task);
    }
    let router = Arc::new(Router::new(handles));
    apply_boot_config(&router, &config).await?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<InventoryServiceServer<InventoryApi>>()
        .await;
    health.set_serving::<AdminServiceServer<AdminApi>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("reflection: {e}"))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| format!("reflection: {e}"))?;

    let inventory = InventoryServiceServer::new(InventoryApi {
        router: router.clone(),
    })
    .max_decoding_message_size(DECODED_MESSAGE_BYTES_MAX);
    let admin = AdminServiceServer::new(AdminApi { router })
        .max_decoding_message_size(DECODED_MESSAGE_BYTES_MAX);

    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            // Replies are small and latency-bound: never wait to coalesce them.
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(inventory)
            .add_service(admin)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    tracing::info!(grpc_addr = %addr, "serving");

    tokio::select! {
        result = &mut server => {
            return Err(format!("gRPC server stopped: {:?}", result));
        }
        _ = shutdown => {}
    }
    let draining = Instant::now();
    tracing::info!("shutting down: draining in-flight requests");
    health
        .set_not_serving::<InventoryServiceServer<InventoryApi>>()
        .await;
    health
        .set_not_serving::<AdminServiceServer<AdminApi>>()
        .await;
    let _ = stop.send(());
    if tokio::time::timeout(config.drain_timeout, &mut server)
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout_secs = config.drain_timeout.as_secs(),
            "drain timeout reached; closing the remaining connections"
        );
        server.abort();
        let _ = server.await;
    }
    // The services held the last router: the shards now see their mailboxes close,
    // finish their batches and flush.
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

async fn apply_boot_config(router: &Router, config: &ServerConfig) -> Result<(), String> {
    let now = now_millis();
    let boot = &config.boot;
    for channel in &boot.channels {
        router
            .upsert_channel(now, channel.clone())
            .await
            .map_err(|e| format!("config channel {:?}: {e}", channel.channel_ref))?;
    }
    if !boot.categories.is_empty() {
        router
            .upsert_categories(now, boot.categories.clone())
            .await
            .map_err(|e| format!("config categories: {e}"))?;
    }
    for chunk in boot.products.chunks(crate::shard::router::STOCK_BATCH_MAX) {
        router
            .upsert_products(now, chunk.to_vec())
            .await
            .map_err(|e| format!("config products: {e}"))?;
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
