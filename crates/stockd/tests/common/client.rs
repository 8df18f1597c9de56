//! Clients of a server under test: tonic channels to 127.0.0.1 with bounded connect and
//! call times, and the health check that tells when a server is ready.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stockd::proto::inventory::v1::admin_service_client::AdminServiceClient;
use stockd::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub type Inv = InventoryServiceClient<Channel>;
pub type Adm = AdminServiceClient<Channel>;

/// How long opening a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long any single call may take: a server that hangs fails the test instead of
/// hanging it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest message a test client sends or accepts: the kill test reads every position
/// with its whole ledger, well over tonic's 4 MiB default.
pub const MESSAGE_BYTES_MAX: usize = 1 << 30;
/// The service whose health says the server is ready.
const READY_SERVICE: &str = "inventory.v1.InventoryService";

/// A channel to `addr`; it connects at the first call, so it can be made before the
/// server listens, and each channel is its own connection.
pub fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_lazy()
}

pub fn inventory(addr: SocketAddr) -> Inv {
    InventoryServiceClient::new(channel(addr))
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

pub fn admin(addr: SocketAddr) -> Adm {
    AdminServiceClient::new(channel(addr))
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

/// One health check of the inventory service on a fresh connection, bounded in time.
pub async fn health_status(addr: SocketAddr) -> Result<i32, String> {
    let attempt = async {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let answer = HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: READY_SERVICE.into(),
            })
            .await
            .map_err(|e| e.to_string())?;
        Ok::<i32, String>(answer.into_inner().status)
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .unwrap_or_else(|_| Err("health check timed out".into()))
}

/// Polls the health check until it answers SERVING, `gone` reports that the server
/// stopped (its reason), or `timeout` passes.
pub async fn wait_serving(
    addr: SocketAddr,
    timeout: Duration,
    mut gone: impl FnMut() -> Option<String>,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("never tried");
    while Instant::now() < deadline {
        if let Some(reason) = gone() {
            return Err(format!("{reason} before serving"));
        }
        match health_status(addr).await {
            Ok(s) if s == ServingStatus::Serving as i32 => return Ok(()),
            Ok(s) => last_error = format!("health status {s}"),
            Err(e) => last_error = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("not serving after {timeout:?}: {last_error}"))
}
