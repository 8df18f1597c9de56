//! What TLS and the access policy cost: Reserve throughput over TLS ÷ plaintext on the
//! same build, with and without a policy, and TLS handshakes per second.
//!
//! One in-process server per mode on 127.0.0.1 (certificates made by rcgen at start),
//! `TLS_BENCH_CONNECTIONS` connections × `TLS_BENCH_CALLS_PER_CONNECTION` calls in flight
//! for `TLS_BENCH_SECS` seconds per run; the modes are run in turn `TLS_BENCH_ROUNDS` times
//! so that noise from other work on the machine falls on all of them. `--durability async`
//! by default (`TLS_BENCH_SYNC=1` for sync): with sync, the disk's fdatasync bounds every
//! mode alike and hides what encryption costs.
//!
//! `cargo bench -p stockd --bench tls`

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use stockd::config::{ServerConfig, TlsFiles};
use stockd::proto::inventory::v1 as pb;
use stockd::proto::inventory::v1::admin_service_client::AdminServiceClient;
use stockd::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockd::storage::Durability;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The client's certificate name, and its token, in the policy.
const CLIENT: &str = "spiffe://bench/ns/shop/sa/storefront";
const TOKEN: &str = "bench-token";

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca, ca_key);
    let sign = |params: CertificateParams| {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let server = sign(CertificateParams::new(vec!["localhost".to_string()]).expect("params"));
    let mut client = CertificateParams::new(Vec::<String>::new()).expect("params");
    client.subject_alt_names = vec![SanType::URI(CLIENT.try_into().expect("uri"))];
    Pki {
        ca: ca_pem,
        server,
        client: sign(client),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Plain,
    Tls,
    PlainPolicy,
    TlsPolicy,
}

impl Mode {
    fn tls(self) -> bool {
        matches!(self, Mode::Tls | Mode::TlsPolicy)
    }
    fn policy(self) -> bool {
        matches!(self, Mode::PlainPolicy | Mode::TlsPolicy)
    }
}

/// Writes the files a mode's server reads and returns its configuration.
fn config(dir: &Path, mode: Mode, pki: &Pki, sync: bool) -> ServerConfig {
    let mut config = ServerConfig::new(dir.join("data"));
    config.shards = 1;
    if !sync {
        config.durability = Durability::Async {
            flush_interval: Duration::from_millis(5),
        };
    }
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    if mode.tls() {
        config.security.tls = Some(TlsFiles {
            cert: write("server.crt", &pki.server.0),
            key: write("server.key", &pki.server.1),
            client_ca: Some(write("ca.crt", &pki.ca)),
        });
    }
    if mode.policy() {
        let policy = format!(
            "[[identities]]\nname = {CLIENT:?}\nmethods = [\"inventory.v1.InventoryService/*\", \"inventory.v1.AdminService/*\"]\nchannels = [\"WEB\"]\n\n[[identities]]\nname = \"shop\"\nmethods = [\"inventory.v1.InventoryService/*\", \"inventory.v1.AdminService/*\"]\nchannels = [\"WEB\"]\n"
        );
        config.security.policy = Some(write("policy.toml", &policy));
        let hash: String = stockd::grpc::identity::sha256(TOKEN.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        config.security.tokens = Some(write("tokens", &format!("{hash} shop\n")));
    }
    config
}

fn endpoint(addr: std::net::SocketAddr, mode: Mode, pki: &Pki) -> Endpoint {
    let scheme = if mode.tls() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).expect("endpoint");
    if !mode.tls() {
        return endpoint;
    }
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .identity(Identity::from_pem(&pki.client.0, &pki.client.1))
        .domain_name("localhost");
    endpoint.tls_config(tls).expect("tls")
}

/// A request as the mode's client sends it: a bearer token with a policy over plaintext.
fn request<T>(mode: Mode, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if mode == Mode::PlainPolicy {
        let value = format!("Bearer {TOKEN}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

async fn seed(channel: Channel, mode: Mode) {
    let mut admin = AdminServiceClient::new(channel);
    let web = pb::Channel {
        channel_ref: "WEB".into(),
        allocation_bps: Some(10_000),
        ..Default::default()
    };
    let upsert = pb::UpsertChannelRequest { channel: Some(web) };
    admin
        .upsert_channel(request(mode, upsert))
        .await
        .expect("channel");
    let counts = (0..64)
        .map(|i| pb::StockCount {
            product_ref: format!("SKU-{i}"),
            location_ref: "DC1".into(),
            quantity: 1_000_000_000,
            as_of: None,
        })
        .collect();
    let set = pb::SetStockRequest { counts };
    admin.set_stock(request(mode, set)).await.expect("stock");
}

/// Reserves per second over `connections` connections for `secs`.
async fn reserve_rate(
    endpoint: &Endpoint,
    mode: Mode,
    connections: u64,
    per: u64,
    secs: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let channel = endpoint.connect().await.expect("connect");
        for t in 0..per {
            let client = InventoryServiceClient::new(channel.clone());
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = client;
                let mut n = 0u64;
                while Instant::now() < until {
                    let line = pb::ReserveLine {
                        product_ref: format!("SKU-{}", (n + t) % 64),
                        location_ref: "DC1".into(),
                        quantity: 1,
                        category: String::new(),
                    };
                    let reserve = pb::ReserveRequest {
                        hold_ref: format!("{mode:?}-{c}-{t}-{n}-{}", rand::random::<u32>()),
                        channel_ref: "WEB".into(),
                        lines: vec![line],
                        ttl_seconds: 60,
                        allow_partial: false,
                    };
                    client
                        .reserve(request(mode, reserve))
                        .await
                        .expect("reserve");
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            }));
        }
    }
    let start = Instant::now();
    for task in tasks {
        task.await.expect("client task");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// New connections per second, each answering one health check, `parallel` at a time.
async fn handshake_rate(endpoint: &Endpoint, parallel: u64, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..parallel)
        .map(|_| {
            let endpoint = endpoint.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < until {
                    let channel = endpoint.connect().await.expect("connect");
                    tonic_health::pb::health_client::HealthClient::new(channel)
                        .check(tonic_health::pb::HealthCheckRequest::default())
                        .await
                        .expect("health");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("handshake task");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

struct Running {
    endpoint: Endpoint,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<stockd::storage::recovery::RecoveryReport, String>>,
    _dir: tempfile::TempDir,
}

async fn start(mode: Mode, pki: &Pki, sync: bool) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), mode, pki, sync);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(stockd::server::run(config, listener, async {
        let _ = stopped.await;
    }));
    let endpoint = endpoint(addr, mode, pki);
    let deadline = Instant::now() + Duration::from_secs(30);
    let channel = loop {
        if let Ok(channel) = endpoint.connect().await {
            break channel;
        }
        assert!(
            Instant::now() < deadline,
            "{mode:?}: the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    seed(channel, mode).await;
    Running {
        endpoint,
        stop,
        task,
        _dir: dir,
    }
}

fn main() {
    let secs = env("TLS_BENCH_SECS", 5);
    let rounds = env("TLS_BENCH_ROUNDS", 2);
    let connections = env("TLS_BENCH_CONNECTIONS", 4);
    let per = env("TLS_BENCH_CALLS_PER_CONNECTION", 16);
    let sync = env("TLS_BENCH_SYNC", 0) == 1;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let pki = pki();
        let modes = [Mode::Plain, Mode::Tls, Mode::PlainPolicy, Mode::TlsPolicy];
        let mut rates = vec![Vec::new(); modes.len()];
        for round in 0..rounds {
            for (i, mode) in modes.into_iter().enumerate() {
                let server = start(mode, &pki, sync).await;
                let rate = reserve_rate(&server.endpoint, mode, connections, per, secs).await;
                println!("round {round} {mode:?}: {rate:.0} Reserves/s");
                rates[i].push(rate);
                let _ = server.stop.send(());
                let _ = server.task.await;
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let m: Vec<f64> = rates.iter().map(|r| mean(r)).collect();
        println!(
            "Reserves/s (mean of {rounds}): plaintext {:.0}, TLS {:.0}, plaintext+policy {:.0}, TLS+policy {:.0}",
            m[0], m[1], m[2], m[3]
        );
        println!("TLS ÷ plaintext: {:.2} without a policy, {:.2} with one", m[1] / m[0], m[3] / m[2]);
        println!("TLS+policy ÷ plaintext without a policy: {:.2}", m[3] / m[0]);
        for mode in [Mode::Plain, Mode::Tls] {
            let server = start(mode, &pki, sync).await;
            for parallel in [1, 8] {
                let rate = handshake_rate(&server.endpoint, parallel, secs.min(3)).await;
                println!("{mode:?}: {rate:.0} new connections/s ({parallel} at a time, each with one health check)");
            }
            let _ = server.stop.send(());
            let _ = server.task.await;
        }
    });
}
