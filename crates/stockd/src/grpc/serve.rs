//! The tonic server: health, reflection and the two services on one listener (or
//! AdminService on a listener of its own, `--admin-addr`), TLS when configured, and the
//! graceful stop.
//!
//! `server::run` hands over the router, the bound listeners and the shutdown signal;
//! everything that knows tonic's `Server` lives here.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthReporter;

use super::access::{Access, Rules};
use super::decode::Decoding;
use super::identity::Tokens;
use super::listen::{self, Gate};
use super::policy::Policy;
use super::reload::{Watched, watch_files};
use super::{AdminApi, EventApi, InventoryApi, Overload};
use crate::config::{SecurityConfig, ServeLimits};
use crate::limits::{
    DECODED_MESSAGE_BYTES_MAX, H2_FRAME_BYTES_MAX, H2_HEADER_LIST_BYTES_MAX,
    H2_KEEPALIVE_INTERVAL_SECS, H2_KEEPALIVE_TIMEOUT_SECS,
};
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
    /// A TLS, policy or token file cannot be read or is refused.
    #[error("{0}")]
    Security(String),
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

/// The bound listeners: the gRPC port, AdminService's own port if it has one, and a
/// plaintext health-only port if there is one.
pub struct Listeners {
    pub grpc: TcpListener,
    pub admin: Option<TcpListener>,
    /// `--health-addr`: `grpc.health.v1` only, always plaintext, for the kubelet's gRPC
    /// probes, which cannot speak TLS.
    pub health: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(grpc: TcpListener) -> Self {
        Listeners {
            grpc,
            admin: None,
            health: None,
        }
    }
}

/// How the server is protected and bounded: its limits and its security configuration.
pub struct Protection {
    pub limits: ServeLimits,
    pub security: SecurityConfig,
}

/// Serves the API on `listeners` until `shutdown` completes, then drains: health answers
/// NOT_SERVING, no new connection is accepted, and in-flight calls get `drain_timeout` to
/// finish before the remaining connections are closed. Returns once the server has
/// stopped (the services, and with them their routers, are dropped), with the moment the
/// drain began. Once `storage_failed` is notified (a shard's log write failed, so writes
/// answer UNAVAILABLE until a restart), the InventoryService reports NOT_SERVING. The two
/// services sit behind `limits`' concurrency limit and load shedding (`grpc::overload`).
pub async fn serve(
    router: Arc<Router>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
    storage_failed: Arc<tokio::sync::Notify>,
    protection: Protection,
    events: Arc<crate::storage::events::Shared>,
) -> Result<Instant, ServeError> {
    let Protection { limits, security } = protection;
    let tls = match &security.tls {
        Some(files) => Some(super::tls::watch(files).map_err(ServeError::Security)?),
        None => None,
    };
    let (health, health_service, watch_storage) = start_health(storage_failed).await;
    let probes = Routes::new(health_service.clone());
    let open = reflection_routes(security.reflection)?.add_service(health_service);
    let overload = Overload::new(limits.concurrent_requests_max, limits.load_shed);
    let inventory = InventoryServiceServer::new(InventoryApi {
        router: router.clone(),
    })
    .max_decoding_message_size(DECODED_MESSAGE_BYTES_MAX);
    let admin = AdminServiceServer::new(AdminApi { router })
        .max_decoding_message_size(DECODED_MESSAGE_BYTES_MAX);
    let rules = rules(&security)?;
    let inventory = open
        .clone()
        .add_service(guard(&overload, &rules, inventory));
    // Told at the drain: open watches end, so their connections can close.
    let (closing, closed) = tokio::sync::watch::channel(false);
    // Watches are long-lived streams, bounded by EVENTS_WATCHERS_MAX, not by the
    // concurrency limit of the calls; they sit with AdminService (operators' port).
    let events = EventServiceServer::new(EventApi::new(events, closed));
    let events = Access::new(Decoding::new(events), rules.clone());
    let admin = guard(&overload, &rules, admin);
    let gate = Gate::new(limits.connections_max);
    let with_admin = |routes: Routes| {
        routes
            .add_service(admin.clone())
            .add_service(events.clone())
    };
    let sides = Sides {
        inventory,
        open,
        probes,
    };
    let ports = bind_ports(listeners, sides, with_admin, &tls, &gate, &limits)?;
    tls_log(&tls);

    let draining = run_until(
        shutdown,
        ports,
        &health,
        watch_storage,
        drain_timeout,
        closing,
    );
    draining.await
}

/// What each port may serve: the InventoryService (with health and reflection), health
/// and reflection alone, health alone.
struct Sides {
    inventory: Routes,
    open: Routes,
    probes: Routes,
}

/// One port for the InventoryService, AdminService and EventService, or a port of their
/// own for the last two (`--admin-addr`); and the plaintext health port if there is one.
fn bind_ports(
    listeners: Listeners,
    sides: Sides,
    with_admin: impl Fn(Routes) -> Routes,
    tls: &Option<Watched<TlsAcceptor>>,
    gate: &Gate,
    limits: &ServeLimits,
) -> Result<Vec<Port>, ServeError> {
    let Sides {
        inventory,
        open,
        probes,
    } = sides;
    let mut ports = Vec::new();
    match listeners.admin {
        None => {
            let all = with_admin(inventory);
            ports.push(port(
                listeners.grpc,
                all,
                "inventory+admin",
                tls,
                gate,
                limits,
            )?);
        }
        Some(admin) => {
            ports.push(port(
                listeners.grpc,
                inventory,
                "inventory",
                tls,
                gate,
                limits,
            )?);
            ports.push(port(admin, with_admin(open), "admin", tls, gate, limits)?);
        }
    }
    if let Some(health) = listeners.health {
        ports.push(port(health, probes, "health", &None, gate, limits)?);
    }
    Ok(ports)
}

/// Health: SERVING for both services, and NOT_SERVING for the InventoryService once
/// `storage_failed` is notified (by the returned task).
async fn start_health(
    storage_failed: Arc<tokio::sync::Notify>,
) -> (
    HealthReporter,
    HealthServer<impl tonic_health::pb::health_server::Health>,
    JoinHandle<()>,
) {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, true).await;
    let reporter = health.clone();
    let watch_storage = tokio::spawn(async move {
        storage_failed.notified().await;
        reporter
            .set_not_serving::<InventoryServiceServer<InventoryApi>>()
            .await;
    });
    (health, health_service, watch_storage)
}

/// Runs the ports until `shutdown` (then drains them, returning when the drain began) or
/// until one of them fails.
async fn run_until(
    shutdown: impl Future<Output = ()>,
    mut ports: Vec<Port>,
    health: &HealthReporter,
    watch_storage: JoinHandle<()>,
    drain_timeout: Duration,
    closing: tokio::sync::watch::Sender<bool>,
) -> Result<Instant, ServeError> {
    let ended = futures::future::select_all(ports.iter_mut().map(|p| &mut p.task));
    tokio::select! {
        (result, _, _) = ended => {
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
    drain(health, ports, drain_timeout).await;
    Ok(draining)
}

/// A service of the API: bodies tonic cannot decode answer INVALID_ARGUMENT, behind the
/// shared concurrency limit.
fn guard<S>(
    overload: &Overload,
    rules: &Option<Rules>,
    service: S,
) -> Access<super::overload::Guarded<Decoding<S>>>
where
    S: NamedService,
{
    Access::new(overload.guard(Decoding::new(service)), rules.clone())
}

/// The policy and the tokens, watched for changes, if a policy is configured.
fn rules(security: &SecurityConfig) -> Result<Option<Rules>, ServeError> {
    let Some(policy) = &security.policy else {
        tracing::warn!("no --auth-policy: every caller may call every method, for every channel");
        return Ok(None);
    };
    let policy = watch_files("access policy", vec![policy.clone()], |c| {
        Policy::parse(&c[0])
    })
    .map_err(ServeError::Security)?;
    let tokens = match &security.tokens {
        Some(path) => Some(
            watch_files("bearer tokens", vec![path.clone()], |c| {
                Tokens::parse(&c[0])
            })
            .map_err(ServeError::Security)?,
        ),
        None => None,
    };
    tracing::info!(policy = ?security.policy, tokens = ?security.tokens, "access policy in force");
    Ok(Some(Rules { policy, tokens }))
}

/// Reflection, unless turned off: open on every port, outside the limits, like health.
fn reflection_routes(reflection: bool) -> Result<Routes, ServeError> {
    let routes = Routes::default();
    if !reflection {
        return Ok(routes);
    }
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(routes.add_service(v1).add_service(v1alpha))
}

/// One listener's server, running until its stop is sent.
struct Port {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Serves `routes` on `listener`, with TLS if configured, under the shared connection
/// gate and the HTTP/2 limits.
fn port(
    listener: TcpListener,
    routes: Routes,
    serves: &'static str,
    tls: &Option<Watched<TlsAcceptor>>,
    gate: &Gate,
    limits: &ServeLimits,
) -> Result<Port, ServeError> {
    let addr = listener.local_addr().map_err(ServeError::Listener)?;
    let incoming = listen::incoming(listener, tls.clone(), gate.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(Some(limits.streams_per_connection_max))
            .http2_max_header_list_size(H2_HEADER_LIST_BYTES_MAX)
            .max_frame_size(H2_FRAME_BYTES_MAX)
            .http2_keepalive_interval(Some(Duration::from_secs(H2_KEEPALIVE_INTERVAL_SECS)))
            .http2_keepalive_timeout(Some(Duration::from_secs(H2_KEEPALIVE_TIMEOUT_SECS)))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    tracing::info!(grpc_addr = %addr, services = serves, "serving");
    Ok(Port { stop, task })
}

fn tls_log(tls: &Option<Watched<TlsAcceptor>>) {
    if tls.is_none() {
        tracing::warn!(
            "TLS is off: every port serves plaintext (production needs --tls-cert and --tls-key)"
        );
    }
}

/// Health NOT_SERVING, stop accepting, give in-flight calls `drain_timeout`, then close
/// the remaining connections.
async fn drain(health: &HealthReporter, ports: Vec<Port>, drain_timeout: Duration) {
    tracing::info!("shutting down: draining in-flight requests");
    set_health(health, false).await;
    let mut tasks = Vec::new();
    for port in ports {
        let _ = port.stop.send(());
        tasks.push(port.task);
    }
    let all = futures::future::join_all(tasks.iter_mut());
    if tokio::time::timeout(drain_timeout, all).await.is_err() {
        tracing::warn!(
            drain_timeout_secs = drain_timeout.as_secs(),
            "drain timeout reached; closing the remaining connections"
        );
        for task in &tasks {
            task.abort();
        }
        futures::future::join_all(tasks).await;
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
