//! The tonic server: health, reflection and the two services on one listener, and its
//! graceful stop.
//!
//! `server::run` hands over the router, the bound listener and the shutdown signal;
//! everything that knows tonic's `Server` lives here.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::server::HealthReporter;

use super::{AdminApi, EventApi, InventoryApi, Overload};
use crate::config::ServeLimits;
use crate::limits::DECODED_MESSAGE_BYTES_MAX;
use crate::proto::inventory::v1::admin_service_server::AdminServiceServer;
use crate::proto::inventory::v1::event_service_server::EventServiceServer;
use crate::proto::inventory::v1::inventory_service_server::InventoryServiceServer;
use crate::shard::Router;

/// Why the gRPC server could not start or stopped before it was told to.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service cannot read the descriptor sets (a build problem).
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The listener has no local address.
    #[error("the gRPC listener has no address: {0}")]
    Listener(#[source] std::io::Error),
    /// The server failed; it runs until shutdown.
    #[error("gRPC server stopped: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The server ended without an error before shutdown.
    #[error("gRPC server stopped before shutdown")]
    Ended,
    /// The server's task panicked or was cancelled.
    #[error("gRPC server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Serves the API on `listener` until `shutdown` completes, then drains: health answers
/// NOT_SERVING, no new connection is accepted, and in-flight calls get `drain_timeout` to
/// finish before the remaining connections are closed. Returns once the server has
/// stopped (the services, and with them their routers, are dropped), with the moment the
/// drain began. Once `storage_failed` is notified (a shard's log write failed, so writes
/// answer UNAVAILABLE until a restart), the InventoryService reports NOT_SERVING. The two
/// services sit behind `limits`' concurrency limit and load shedding (`grpc::overload`).
pub async fn serve(
    router: Arc<Router>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
    storage_failed: Arc<tokio::sync::Notify>,
    limits: ServeLimits,
    events: Arc<crate::storage::events::Shared>,
) -> Result<Instant, ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, true).await;
    let reporter = health.clone();
    let watch_storage = tokio::spawn(async move {
        storage_failed.notified().await;
        reporter
            .set_not_serving::<InventoryServiceServer<InventoryApi>>()
            .await;
    });
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let inventory = InventoryServiceServer::new(InventoryApi {
        router: router.clone(),
    })
    .max_decoding_message_size(DECODED_MESSAGE_BYTES_MAX);
    let admin = AdminServiceServer::new(AdminApi { router })
        .max_decoding_message_size(DECODED_MESSAGE_BYTES_MAX);
    let overload = Overload::new(limits.concurrent_requests_max, limits.load_shed);

    let addr = listener.local_addr().map_err(ServeError::Listener)?;
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            // Replies are small and latency-bound: never wait to coalesce them.
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    let (stop, stopped) = oneshot::channel::<()>();
    // Told at the drain: open watches end, so their connections can close.
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(Some(limits.streams_per_connection_max))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(overload.guard(inventory))
            .add_service(overload.guard(admin))
            // Watches are long-lived streams, bounded by EVENTS_WATCHERS_MAX, not by the
            // concurrency limit of the calls.
            .add_service(EventServiceServer::new(EventApi::new(events, closed)))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    tracing::info!(grpc_addr = %addr, "serving");

    tokio::select! {
        result = &mut server => {
            watch_storage.abort();
            return Err(match result {
                Ok(Ok(())) => ServeError::Ended,
                Ok(Err(e)) => e.into(),
                Err(e) => e.into(),
            });
        }
        _ = shutdown => {}
    }
    let draining = Instant::now();
    let _ = closing.send(true);
    watch_storage.abort();
    drain(&health, stop, server, drain_timeout).await;
    Ok(draining)
}

/// Health NOT_SERVING, stop accepting, give in-flight calls `drain_timeout`, then close
/// the remaining connections.
async fn drain(
    health: &HealthReporter,
    stop: oneshot::Sender<()>,
    mut server: JoinHandle<Result<(), tonic::transport::Error>>,
    drain_timeout: Duration,
) {
    tracing::info!("shutting down: draining in-flight requests");
    set_health(health, false).await;
    let _ = stop.send(());
    if tokio::time::timeout(drain_timeout, &mut server)
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout_secs = drain_timeout.as_secs(),
            "drain timeout reached; closing the remaining connections"
        );
        server.abort();
        let _ = server.await;
    }
}

/// Sets both services SERVING or NOT_SERVING for `grpc.health.v1` (Kubernetes' probes).
async fn set_health(health: &HealthReporter, serving: bool) {
    if serving {
        health
            .set_serving::<InventoryServiceServer<InventoryApi>>()
            .await;
        health.set_serving::<AdminServiceServer<AdminApi>>().await;
    } else {
        health
            .set_not_serving::<InventoryServiceServer<InventoryApi>>()
            .await;
        health
            .set_not_serving::<AdminServiceServer<AdminApi>>()
            .await;
    }
}
