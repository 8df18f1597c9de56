//! Event log figures (issue #14): Reserve throughput with one live watcher against none,
//! the rate WatchEvents delivers to one consumer (replaying the retained log, then live),
//! the event log's bytes per event, and a 24-hour channel report over
//! `REPORT_BENCH_EVENTS` events (default 10,000,000; 0 skips it).
//!
//! The report part feeds the report's buckets (`storage::events::report::Report`) directly
//! with synthetic events spread over 24 hours (4 channels, 1,000 products): filling them
//! through the server would take hours at the service's Reserve rate. It then times
//! `Report::query` for the whole day, for one product, and the time the adds took.
//!
//! `cargo bench -p stockd --bench events`. An in-process server on 127.0.0.1 (a temporary
//! data folder on the real disk, `--durability sync`), `EVENTS_BENCH_CALLERS` concurrent
//! Reserve callers (default 32) for `EVENTS_BENCH_SECS` seconds per run (default 5),
//! alternating runs without and with a watcher (`EVENTS_BENCH_ROUNDS` pairs, default 2),
//! so both see the same machine. The watcher decodes only each event's sequence unless
//! `EVENTS_BENCH_WATCH_DECODE=full` (see `watcher`). Bounded in time and count; only
//! 127.0.0.1.

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
use stockd::proto::watch_response::watch_sequences;
use stockd::storage::events::record::{IqRecord, Owner, kind_code};
use stockd::storage::events::report::{Query, Report};
use stockd::storage::events::{EventRecord, Origin};
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
///
/// It decodes only each event's sequence (as `stockd-load --watch` does), so the figure is
/// what a watcher costs the server: a real consumer decodes on its own machine, and here it
/// would share the server's two cores. `EVENTS_BENCH_WATCH_DECODE=full` decodes every field
/// of every event instead (the server's cost and a full consumer's, together).
fn watcher(ch: Channel, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let full = std::env::var("EVENTS_BENCH_WATCH_DECODE").is_ok_and(|v| v == "full");
    tokio::spawn(async move {
        if full {
            let stream = EventServiceClient::new(ch)
                .watch_events(pb::WatchEventsRequest::default())
                .await
                .expect("WatchEvents")
                .into_inner();
            count(stream, &stop).await
        } else {
            let stream = watch_sequences(ch, pb::WatchEventsRequest::default())
                .await
                .expect("WatchEvents");
            count(stream, &stop).await
        }
    })
}

/// Counts the messages of a watch until `stop`.
async fn count<T>(mut stream: tonic::Streaming<T>, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
            Ok(Ok(Some(_))) => n += 1,
            Ok(Ok(None)) => panic!("the watch ended"),
            Ok(Err(status)) => panic!("the watch ended: {status:?}"),
            Err(_) => {}
        }
    }
    n
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

/// The frame size of a typical HOLD_CREATED (one line: its SOFT_RESERVE) and STOCK_COUNTED
/// (the previous count INACTIVE, the new one ACTIVE) record.
fn bytes_per_event() -> (usize, usize) {
    let soft = IqRecord {
        product: Some("SKU-0001234".into()),
        location: Some("DC1".into()),
        id: 2_345_678,
        kind: 5,
        active: true,
        quantity: -2,
        channel: None,
        owner: Owner::Hold,
        occurred_at: 1_764_600_000_000,
        expires_at: Some(1_764_600_900_000),
    };
    let counted = |active: bool| IqRecord {
        product: None,
        location: None,
        kind: 0,
        active,
        quantity: 100,
        channel: None,
        owner: Owner::None,
        expires_at: None,
        ..soft.clone()
    };
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
        iqs: vec![soft.clone()],
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
        iqs: vec![counted(false), counted(true)],
        ..hold.clone()
    };
    (
        frame_len(hold.encode().len()),
        frame_len(count.encode().len()),
    )
}

/// Synthetic events of one channel and product: created, confirmed (a minute after), expired,
/// released, fulfilled, rejected.
fn templates(channel: &str, product: &str) -> Vec<EventRecord> {
    let iq = |kind: u8, active: bool, q: i64| IqRecord {
        product: Some(product.into()),
        location: Some("DC1".into()),
        kind,
        active,
        quantity: q,
        owner: Owner::Hold,
        ..IqRecord::default()
    };
    let base = EventRecord {
        channel: Some(channel.into()),
        hold: Some("cart-abc123-20240315".into()),
        quantity: 1,
        primary: true,
        ..EventRecord::default()
    };
    let of = |kind: EventKind, iqs: Vec<IqRecord>| EventRecord {
        kind: kind_code(kind),
        iqs,
        ..base.clone()
    };
    let at_product = |kind: EventKind| EventRecord {
        product: Some(product.into()),
        location: Some("DC1".into()),
        available: 0,
        ..of(kind, Vec::new())
    };
    vec![
        of(EventKind::HoldCreated, vec![iq(5, true, -1)]),
        of(EventKind::HoldCreated, vec![iq(5, true, -1)]),
        of(
            EventKind::HoldConfirmed,
            vec![iq(5, false, -1), iq(6, true, -1)],
        ),
        of(EventKind::HoldExpired, vec![iq(5, false, -1)]),
        of(EventKind::HoldReleased, vec![iq(5, false, -1)]),
        at_product(EventKind::OrderFulfilled),
        at_product(EventKind::ReserveRejected),
    ]
}

/// Fills a report with `n` events over 24 hours, then times day and product reports.
fn report_bench(n: u64) {
    let channels = ["WEB", "SOCIAL", "MARKETPLACE", "STORE"];
    let all: Vec<EventRecord> = channels
        .iter()
        .flat_map(|c| (0..PRODUCTS).flat_map(move |p| templates(c, &format!("SKU-{p}"))))
        .collect();
    let day_ms: i64 = 86_400_000;
    let start = 1_764_547_200_000; // a midnight
    let mut report = Report::new(7 * 24 * 3600);
    let fill = Instant::now();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut r = all[(x % all.len() as u64) as usize].clone();
        r.at = start + (i as i64 * day_ms) / n as i64;
        r.hold_created_at = Some(r.at - (x % 600_000) as i64);
        report.add(&r);
    }
    let filled = fill.elapsed();
    let q = Query {
        channel: "WEB".into(),
        from: start,
        to: start + day_ms,
        top: 10,
        ..Query::default()
    };
    let time = |q: &Query| {
        let mut runs: Vec<Duration> = (0..20)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(report.query(q));
                t.elapsed()
            })
            .collect();
        runs.sort();
        (runs[runs.len() / 2], runs[runs.len() - 1])
    };
    let (day_p50, day_max) = time(&q);
    let product = Query {
        product: Some("SKU-7".into()),
        ..q.clone()
    };
    let (product_p50, product_max) = time(&product);
    let answer = report.query(&q);
    println!("report bench: {n} synthetic events over 24 h, 4 channels, {PRODUCTS} products");
    println!(
        "  adding them took {filled:.2?} ({:.0} events/s)",
        n as f64 / filled.as_secs_f64()
    );
    println!("  24-hour report of one channel: median {day_p50:.2?}, slowest of 20 {day_max:.2?}");
    println!(
        "  24-hour report of one product: median {product_p50:.2?}, slowest of 20 {product_max:.2?}"
    );
    println!(
        "  (its figures: {} holds created, {} rejections, top product {:?}, complete {})",
        answer.figures.holds_created,
        answer.figures.rejections,
        answer.top.first().map(|r| &r.product),
        answer.complete
    );
}

fn main() {
    let report_events = env("REPORT_BENCH_EVENTS", 10_000_000);
    if report_events > 0 {
        report_bench(report_events);
    }
    if env("EVENTS_BENCH_SERVER", 1) == 0 {
        return;
    }
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
