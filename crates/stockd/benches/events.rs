//! Event log figures (issue #14): Reserve throughput with one live watcher against none,
//! the rate WatchEvents delivers to one consumer (replaying the retained log, then live),
//! and the event log's bytes per event.
//!
//! `cargo bench -p stockd --bench events`. An in-process server on 127.0.0.1 (a temporary
//! data folder on the real disk, `--durability sync`), `EVENTS_BENCH_CALLERS` concurrent
//! Reserve callers (default 32) for `EVENTS_BENCH_SECS` seconds per run (default 5),
//! alternating runs without and with a watcher (`EVENTS_BENCH_ROUNDS` pairs, default 2),
//! so both see the same machine. Bounded in time and count; only 127.0.0.1.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use stockd::config::ServerConfig;
use stockd::proto::inventory::v1 as pb;
use stockd::proto::inventory::v1::admin_service_client::AdminServiceClient;
use stockd::proto::inventory::v1::event_service_client::EventServiceClient;
use stockd::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use stockd::storage::events::{EventRecord, Origin, record::kind_code};
use stockd::storage::log::frame::frame_len;
use stockd_domain::EventKind;
use tonic::transport::{Channel, Endpoint};

const PRODUCTS: usize = 1_000;
const CONNECTIONS: usize = 4;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn channel(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

/// Reserves one unit per call from `callers` tasks for `secs`; returns calls per second.
async fn reserve_run(channels: &[Channel], callers: u64, secs: u64, tag: &str) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let mut inv =
                InventoryServiceClient::new(channels[c as usize % channels.len()].clone());
            let (stop, done, tag) = (stop.clone(), done.clone(), tag.to_string());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let request = pb::ReserveRequest {
                        hold_ref: format!("{tag}-{c}-{i}"),
                        channel_ref: "WEB".into(),
                        lines: vec![pb::ReserveLine {
                            product_ref: format!("SKU-{}", (c * 7919 + i) as usize % PRODUCTS),
                            location_ref: "DC1".into(),
                            quantity: 1,
                            category: String::new(),
                        }],
                        ttl_seconds: 86_400,
                        allow_partial: false,
                    };
                    inv.reserve(request).await.expect("Reserve");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let calls = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    calls as f64 / elapsed.as_secs_f64()
}

/// A watcher from now on that counts what it receives until told to stop.
fn watcher(ch: Channel, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut ev = EventServiceClient::new(ch);
        let mut stream = ev
            .watch_events(pb::WatchEventsRequest::default())
            .await
            .expect("WatchEvents")
            .into_inner();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                Ok(Ok(Some(_))) => n += 1,
                Ok(other) => panic!("the watch ended: {other:?}"),
                Err(_) => {}
            }
        }
        n
    })
}

/// Replays every retained event to one consumer; returns (events, events per second).
async fn replay_rate(ch: Channel) -> (u64, f64) {
    let mut ev = EventServiceClient::new(ch);
    let last = ev
        .list_events(pb::ListEventsRequest {
            from_sequence: u64::MAX,
            page_size: 1,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner()
        .last_sequence;
    let started = Instant::now();
    let mut stream = ev
        .watch_events(pb::WatchEventsRequest {
            start: pb::watch_events_request::Start::Oldest as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(sent) = stream.message().await.unwrap() {
        let e = sent.event.expect("a streamed message carries its event");
        n += 1;
        if e.sequence >= last {
            break;
        }
    }
    (n, n as f64 / started.elapsed().as_secs_f64())
}

/// The frame size of a typical HOLD_CREATED and STOCK_COUNTED record.
fn bytes_per_event() -> (usize, usize) {
    let hold = EventRecord {
        at: 1_764_600_000_000,
        kind: kind_code(EventKind::HoldCreated),
        channel: Some("WEB".into()),
        hold: Some("cart-abc123-20240315".into()),
        quantity: 2,
        primary: true,
        origin: Origin {
            generation: 0,
            shard: 3,
            lsn: 1_234_567,
            index: 0,
        },
        ..EventRecord::default()
    };
    let count = EventRecord {
        kind: kind_code(EventKind::StockCounted),
        channel: None,
        hold: None,
        product: Some("SKU-0001234".into()),
        location: Some("DC1".into()),
        quantity: 100,
        available: 95,
        on_hand: Some(95),
        ..hold.clone()
    };
    (
        frame_len(hold.encode().len()),
        frame_len(count.encode().len()),
    )
}

fn main() {
    let secs = env("EVENTS_BENCH_SECS", 5);
    let callers = env("EVENTS_BENCH_CALLERS", 32);
    let rounds = env("EVENTS_BENCH_ROUNDS", 2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().join("data"));
        config.shards = env("EVENTS_BENCH_SHARDS", 1) as u32;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(stockd::server::run(config, listener, async {
            let _ = stopped.await;
        }));
        let channels: Vec<Channel> = (0..CONNECTIONS).map(|_| channel(addr)).collect();
        let mut admin = AdminServiceClient::new(channels[0].clone());
        while admin.list_channels(pb::ListChannelsRequest::default()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        admin
            .upsert_channel(pb::UpsertChannelRequest {
                channel: Some(pb::Channel {
                    channel_ref: "WEB".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        let counts = (0..PRODUCTS)
            .map(|i| pb::StockCount {
                product_ref: format!("SKU-{i}"),
                location_ref: "DC1".into(),
                quantity: 100_000_000,
                as_of: None,
            })
            .collect();
        admin.set_stock(pb::SetStockRequest { counts }).await.unwrap();
        let (mut without, mut with, mut watched) = (Vec::new(), Vec::new(), 0u64);
        for round in 0..rounds {
            without.push(reserve_run(&channels, callers, secs, &format!("a{round}")).await);
            let stop = Arc::new(AtomicBool::new(false));
            let w = watcher(channel(addr), stop.clone());
            with.push(reserve_run(&channels, callers, secs, &format!("b{round}")).await);
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop.store(true, Ordering::Relaxed);
            watched += w.await.unwrap();
        }
        let (replayed, rate) = replay_rate(channel(addr)).await;
        let (hold_bytes, count_bytes) = bytes_per_event();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        println!("events bench: {callers} Reserve callers, {secs} s per run, {rounds} pairs, load {}", load.trim());
        println!("  Reserve/s without a watcher: {without:.0?} (mean {:.0})", avg(&without));
        println!("  Reserve/s with one watcher:  {with:.0?} (mean {:.0})", avg(&with));
        println!("  ratio with ÷ without: {:.3}", avg(&with) / avg(&without));
        println!("  the live watcher received {watched} events");
        println!("  WatchEvents replay to one consumer: {replayed} events at {rate:.0} events/s");
        println!("  event log bytes per event (frame): HOLD_CREATED {hold_bytes}, STOCK_COUNTED {count_bytes}");
        let _ = stop_server.send(());
        let _ = server.await;
    });
}
