//! The event log over real gRPC on 127.0.0.1: WatchEvents and ListEvents.
//!
//! - a watcher sees every change of a scripted sequence of calls, in order, with no gap,
//!   replaying what is retained and then following live calls;
//! - the sequence goes on with no gap and no duplicate across a SIGTERM, a SIGKILL and a
//!   change of `--shards` of the real binary, and a watcher resumes across them;
//! - a watcher that does not read is cut off with RESOURCE_EXHAUSTED naming the last
//!   sequence it got, and resumes from there;
//! - a sequence older than retention is FAILED_PRECONDITION naming the oldest retained;
//! - an event read before a power cut (simulated disk) is there after it.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::calls::{
    confirm_ok, list_all, release_ok, reserve_ok, reserve_reply, stock, upsert_channel,
};
use common::client::{self, wait_serving};
use common::fixtures::{LOC, TestFolder, WEB};
use common::requests::{channel, count_now, reserve_request};
use common::server::{READY_TIMEOUT, Spawned, spawn_in_process, tempdir};
use stockd::config::ServerConfig;
use stockd::proto::inventory::v1 as pb;
use stockd::proto::inventory::v1::event_service_client::EventServiceClient;
use stockd::proto::inventory::v1::watch_events_request::Start;
use stockd::storage::checkpoint::SimStore;
use stockd::storage::log::sim::{CrashMode, SimDisk};
use tonic::Streaming;
use tonic::transport::Channel;

type Ev = EventServiceClient<Channel>;

/// Longest wait for one streamed event.
const EVENT_WAIT: Duration = Duration::from_secs(15);

fn events_client(addr: std::net::SocketAddr) -> Ev {
    EventServiceClient::new(client::channel(addr))
}

async fn watch(ev: &mut Ev, start: Start, from: u64) -> Streaming<pb::WatchEventsResponse> {
    ev.watch_events(pb::WatchEventsRequest {
        start: start as i32,
        from_sequence: from,
        filter: None,
    })
    .await
    .expect("WatchEvents")
    .into_inner()
}

/// The next event of a watch (`None` once the stream ended).
async fn next_event(
    stream: &mut Streaming<pb::WatchEventsResponse>,
) -> Result<Option<pb::Event>, tonic::Status> {
    let sent = stream.message().await?;
    Ok(sent.map(|s| s.event.expect("a streamed message carries its event")))
}

/// Makes one more change and waits until its event is readable: then every event of the
/// changes acknowledged before it is readable too (shards hand events over before they
/// reply, and the event log numbers them in the order they arrive). Returns the last
/// sequence.
async fn barrier(admin: &mut client::Adm, ev: &mut Ev) -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let product = format!(
        "BARRIER{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    stock(admin, &product, LOC, 1).await;
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        let page = ev
            .list_events(pb::ListEventsRequest {
                from_sequence: 0,
                page_size: 1,
                filter: Some(pb::EventFilter {
                    product_ref: product.clone(),
                    ..Default::default()
                }),
            })
            .await;
        match page {
            Ok(page) if !page.get_ref().events.is_empty() => return last_sequence(ev).await,
            Ok(_) => {}
            // Retention moved on while the page was read: read again.
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
            Err(s) => panic!("ListEvents: {s}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the barrier's event never came"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn last_sequence(ev: &mut Ev) -> u64 {
    ev.list_events(pb::ListEventsRequest {
        from_sequence: u64::MAX,
        page_size: 1,
        filter: None,
    })
    .await
    .expect("ListEvents")
    .into_inner()
    .last_sequence
}

/// Reads the stream until it delivered the event with sequence `last`.
async fn read_until(
    stream: &mut Streaming<pb::WatchEventsResponse>,
    last: u64,
    out: &mut Vec<pb::Event>,
) {
    while out.last().is_none_or(|e| e.sequence < last) {
        let next = tokio::time::timeout(EVENT_WAIT, next_event(stream))
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("the stream is open");
        out.push(next);
    }
}

/// Checks that the events have the sequences `from..` with no gap and no duplicate.
#[track_caller]
fn assert_dense(events: &[pb::Event], from: u64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.sequence, from + i as u64, "event {i} of {events:?}");
    }
}

fn kind(e: &pb::Event) -> pb::EventKind {
    pb::EventKind::try_from(e.kind).expect("a known kind")
}

async fn start_with(config: ServerConfig) -> Spawned {
    let spawned = spawn_in_process(config).await;
    wait_serving(spawned.grpc, READY_TIMEOUT, || None)
        .await
        .expect("the server starts");
    spawned
}

async fn stop(spawned: Spawned) {
    let _ = spawned.stop.send(());
    tokio::time::timeout(READY_TIMEOUT, spawned.task)
        .await
        .expect("stops in time")
        .expect("server task")
        .expect("server::run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_every_change_in_order_replayed_then_live() {
    let dir = tempdir();
    let mut config = ServerConfig::new(dir.path().join("data"));
    config.shards = 2;
    let server = start_with(config).await;
    let (mut admin, mut inv) = (client::admin(server.grpc), client::inventory(server.grpc));
    let mut ev = events_client(server.grpc);
    upsert_channel(&mut admin, channel(WEB)).await;
    stock(&mut admin, "P1", LOC, 10).await;
    stock(&mut admin, "P2", LOC, 5).await;
    let line = |p: &str, q| (p.to_string(), LOC.to_string(), q);
    reserve_ok(&mut inv, "H1", WEB, &[line("P1", 2), line("P2", 1)], 0).await;
    let rejected =
        reserve_reply(&mut inv, reserve_request("H2", WEB, &[("P2", LOC, 100)], 0)).await;
    assert_eq!(rejected.outcome, pb::ReserveOutcome::Rejected as i32);

    // A watcher from the oldest event replays these, then follows what comes next.
    let mut stream = watch(&mut ev, Start::Oldest, 0).await;
    confirm_ok(&mut inv, "H1", "O1").await;
    reserve_ok(&mut inv, "H3", WEB, &[line("P1", 1)], 0).await;
    release_ok(&mut inv, "H3").await;
    let last = barrier(&mut admin, &mut ev).await;
    let mut seen = Vec::new();
    read_until(&mut stream, last, &mut seen).await;
    assert_dense(&seen, 1);
    assert_eq!(
        seen,
        list_all(&mut ev).await,
        "the stream and the pages agree"
    );

    let holds: Vec<(pb::EventKind, &str)> = seen
        .iter()
        .filter(|e| !e.hold_ref.is_empty() && e.primary)
        .map(|e| (kind(e), e.hold_ref.as_str()))
        .collect();
    use pb::EventKind as K;
    assert_eq!(
        holds,
        [
            (K::HoldCreated, "H1"),
            (K::ReserveRejected, "H2"),
            (K::HoldConfirmed, "H1"),
            (K::HoldCreated, "H3"),
            (K::HoldReleased, "H3"),
        ]
    );
    let stockout = seen.iter().find(|e| kind(e) == K::ReserveRejected).unwrap();
    assert_eq!(
        (stockout.product_ref.as_str(), stockout.channel_ref.as_str()),
        ("P2", WEB)
    );
    assert_eq!((stockout.requested, stockout.available), (100, 4));
    let confirmed = seen.iter().find(|e| kind(e) == K::HoldConfirmed).unwrap();
    assert_eq!(confirmed.order_ref, "O1");
    let counted = seen.iter().find(|e| kind(e) == K::StockCounted).unwrap();
    assert_eq!(
        (counted.product_ref.as_str(), counted.on_hand),
        ("P1", Some(10))
    );

    // Filters: only the stockouts of P2.
    let page = ev
        .list_events(pb::ListEventsRequest {
            from_sequence: 0,
            page_size: 10,
            filter: Some(pb::EventFilter {
                kinds: vec![K::ReserveRejected as i32],
                product_ref: "P2".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.events, vec![stockout.clone()]);
    let bad = ev
        .list_events(pb::ListEventsRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("page_size"), "{bad:?}");
    drop(stream);
    stop(server).await;
}

/// Reserves `n` one-unit holds tagged `tag` and returns their refs.
async fn holds(inv: &mut client::Inv, tag: &str, n: usize) -> Vec<String> {
    let mut refs = Vec::new();
    for i in 0..n {
        let hold = format!("{tag}-{i}");
        let product = format!("P{}", i % 6);
        reserve_ok(inv, &hold, WEB, &[(product, LOC.into(), 1)], 0).await;
        refs.push(hold);
    }
    refs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequence_survives_sigterm_sigkill_and_a_shard_change() {
    let folder = TestFolder::new();
    let args = |shards: &'static str| ["--shards", shards, "--snapshot-every-records", "4"];
    let mut server = folder.start(&args("2")).await;
    let (mut admin, mut inv) = (server.admin(), server.inventory());
    upsert_channel(&mut admin, channel(WEB)).await;
    let counts = (0..6)
        .map(|i| count_now(&format!("P{i}"), LOC, 100))
        .collect();
    admin
        .set_stock(pb::SetStockRequest { counts })
        .await
        .unwrap();
    let mut made = holds(&mut inv, "a", 10).await;
    let mut ev = events_client(server.grpc);
    let mut seen = Vec::new();
    let mut stream = watch(&mut ev, Start::Oldest, 0).await;
    let last = barrier(&mut admin, &mut ev).await;
    read_until(&mut stream, last, &mut seen).await;

    let steps: [(&str, &str); 2] = [("2", "sigterm"), ("3", "sigkill")];
    for (shards, how) in steps {
        match how {
            "sigterm" => assert!(server.terminate().await.success()),
            _ => server.kill(),
        }
        server = folder.start(&args(shards)).await;
        inv = server.inventory();
        admin = server.admin();
        made.extend(holds(&mut inv, how, 10).await);
        ev = events_client(server.grpc);
        // The watcher resumes after the last event it got.
        let from = seen.last().unwrap().sequence + 1;
        let mut stream = watch(&mut ev, Start::AtSequence, from).await;
        let last = barrier(&mut admin, &mut ev).await;
        read_until(&mut stream, last, &mut seen).await;
    }
    assert_dense(&seen, 1);
    assert_eq!(seen, list_all(&mut ev).await);
    let created: Vec<&str> = seen
        .iter()
        .filter(|e| kind(e) == pb::EventKind::HoldCreated)
        .map(|e| e.hold_ref.as_str())
        .collect();
    let unique: BTreeSet<&str> = created.iter().copied().collect();
    assert_eq!(created.len(), made.len(), "one HOLD_CREATED per reserve");
    assert_eq!(unique.len(), made.len());
    server.terminate().await;
}

/// Counts `n` products at once: at least two events each (count, rebalance).
async fn many_events(admin: &mut client::Adm, tag: &str, n: usize) {
    let counts = (0..n)
        .map(|i| count_now(&format!("{tag}{i}"), LOC, 5))
        .collect();
    admin
        .set_stock(pb::SetStockRequest { counts })
        .await
        .unwrap();
}

/// Two shards and a live ring of only 16 events (`--events-watch-buffer 16`); the data
/// folder lives as long as the returned guard.
async fn small_buffer_server() -> (Spawned, tempfile::TempDir) {
    let dir = tempdir();
    let mut config = ServerConfig::new(dir.path().join("data"));
    config.shards = 2;
    config.events.watch_buffer = 16;
    (start_with(config).await, dir)
}

/// A client whose HTTP/2 windows hold only 16 KiB: a watcher on it that stops reading
/// backs up to the server at once, instead of after megabytes of socket and window space.
fn small_window_events_client(addr: std::net::SocketAddr) -> Ev {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .initial_stream_window_size(16 << 10)
        .initial_connection_window_size(16 << 10)
        .connect_lazy();
    EventServiceClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_cut_off_naming_its_last_sequence_and_resumes() {
    let (server, _dir) = small_buffer_server().await;
    let mut admin = client::admin(server.grpc);
    let mut ev = events_client(server.grpc);
    upsert_channel(&mut admin, channel(WEB)).await;
    let mut slow = small_window_events_client(server.grpc);
    let mut stream = watch(&mut slow, Start::Now, 0).await;
    stock(&mut admin, "FIRST", LOC, 1).await;
    let mut got = vec![next_event(&mut stream).await.unwrap().unwrap()];
    // The watcher stops reading while far more than its buffers' worth happens.
    for round in 0..6 {
        many_events(&mut admin, &format!("R{round}-"), 1000).await;
    }
    let last = barrier(&mut admin, &mut ev).await;
    // ...and for longer than a stalled consumer may take nothing.
    let stall = Duration::from_millis(stockd::limits::EVENTS_WATCH_STALL_MS);
    tokio::time::sleep(stall * 2).await;
    let status = loop {
        let next = tokio::time::timeout(EVENT_WAIT, next_event(&mut stream)).await;
        let Ok(next) = next else {
            panic!(
                "no event and no status for {EVENT_WAIT:?}: got {} events, the last {:?}, of {last}",
                got.len(),
                got.last().map(|e| e.sequence)
            );
        };
        match next {
            Ok(Some(e)) => got.push(e),
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let last_sent = got.last().unwrap().sequence;
    assert!(
        status
            .message()
            .contains(&format!("last sequence sent was {last_sent}")),
        "{status:?}"
    );
    assert!(last_sent < last, "it was cut off before the end");
    let mut resumed = watch(&mut ev, Start::AtSequence, last_sent + 1).await;
    read_until(&mut resumed, last, &mut got).await;
    assert_dense(&got, got[0].sequence);
    stop(server).await;
}

/// Regression (found with `stockd-load --watch`): a burst larger than the watch buffer,
/// such as one SetStock of 1,000 products, laps the live ring before the watch can read
/// it. A watcher that keeps reading must not be cut off for that: it reads on from the
/// retained log and sees every event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_buffer_does_not_cut_off_a_watcher_that_keeps_reading() {
    let (server, _dir) = small_buffer_server().await;
    let mut admin = client::admin(server.grpc);
    let mut ev = events_client(server.grpc);
    upsert_channel(&mut admin, channel(WEB)).await;
    let mut stream = watch(&mut ev, Start::Now, 0).await;
    stock(&mut admin, "FIRST", LOC, 1).await;
    let first = next_event(&mut stream).await.unwrap().unwrap();
    // The watcher reads all the time, until the barrier's event (the last change).
    let reader = tokio::spawn(async move {
        let mut got = vec![first];
        while !got.last().unwrap().product_ref.starts_with("BARRIER") {
            let next = tokio::time::timeout(EVENT_WAIT, next_event(&mut stream))
                .await
                .expect("an event in time");
            got.push(
                next.expect("the stream goes on")
                    .expect("the stream is open"),
            );
        }
        (got, stream)
    });
    for round in 0..3 {
        many_events(&mut admin, &format!("B{round}-"), 1000).await;
    }
    let last = barrier(&mut admin, &mut ev).await;
    let (mut got, mut stream) = reader.await.expect("the reader");
    read_until(&mut stream, last, &mut got).await;
    assert_dense(&got, got[0].sequence);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_older_than_retention_is_failed_precondition() {
    let dir = tempdir();
    let mut config = ServerConfig::new(dir.path().join("data"));
    config.shards = 1;
    config.events.segment_bytes = 64 << 10;
    config.events.retention_bytes = 128 << 10;
    let server = start_with(config).await;
    let mut admin = client::admin(server.grpc);
    let mut ev = events_client(server.grpc);
    upsert_channel(&mut admin, channel(WEB)).await;
    for round in 0..4 {
        many_events(&mut admin, &format!("R{round}-"), 500).await;
    }
    barrier(&mut admin, &mut ev).await;
    let all = list_all(&mut ev).await;
    let oldest = all[0].sequence;
    assert!(oldest > 1, "retention dropped the oldest segments");
    assert_dense(&all, oldest);
    let refused = ev
        .list_events(pb::ListEventsRequest {
            from_sequence: 1,
            page_size: 10,
            filter: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains(&format!("the oldest retained is {oldest}")),
        "{refused:?}"
    );
    let watch = ev
        .watch_events(pb::WatchEventsRequest {
            start: Start::AtSequence as i32,
            from_sequence: 1,
            filter: None,
        })
        .await
        .unwrap_err();
    assert_eq!(watch.code(), tonic::Code::FailedPrecondition);
    stop(server).await;
}

/// A server over a simulated disk on its own runtime, so a power cut drops it whole.
struct SimServer {
    runtime: Option<tokio::runtime::Runtime>,
    grpc: std::net::SocketAddr,
}

async fn start_sim(disk: &SimDisk, store: &Arc<SimStore>) -> SimServer {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let grpc = listener.local_addr().unwrap();
    // The shared two-shard sim configuration (small segments), on this disk and store.
    let world = common::sim::SimWorld {
        disk: disk.clone(),
        store: store.clone(),
    };
    let mut config = world.config();
    config.limits.snapshot_every_records = 8;
    config.events.segment_bytes = 64 << 10;
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        stockd::server::run(config, listener, std::future::pending()).await
    });
    wait_serving(grpc, READY_TIMEOUT, || None)
        .await
        .expect("the sim server starts");
    SimServer {
        runtime: Some(runtime),
        grpc,
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_read_before_a_power_cut_is_there_after_it() {
    for (seed, mode) in [
        (1, CrashMode::DropUnsynced),
        (2, CrashMode::TornBytes),
        (3, CrashMode::TornSectors),
    ] {
        let disk = SimDisk::new(seed);
        let store = Arc::new(SimStore::new(seed));
        let server = start_sim(&disk, &store).await;
        let (mut admin, mut inv) = (client::admin(server.grpc), client::inventory(server.grpc));
        upsert_channel(&mut admin, channel(WEB)).await;
        let counts = (0..6)
            .map(|i| count_now(&format!("P{i}"), LOC, 100))
            .collect();
        admin
            .set_stock(pb::SetStockRequest { counts })
            .await
            .unwrap();
        let made = holds(&mut inv, "cut", 40).await;
        barrier(&mut admin, &mut events_client(server.grpc)).await;
        let before = list_all(&mut events_client(server.grpc)).await;
        disk.crash(mode);
        let store = Arc::new(store.crash());
        drop(server);
        let server = start_sim(&disk, &store).await;
        let mut admin = client::admin(server.grpc);
        barrier(&mut admin, &mut events_client(server.grpc)).await;
        let after = list_all(&mut events_client(server.grpc)).await;
        assert_dense(&after, 1);
        assert_eq!(&after[..before.len()], &before[..], "seed {seed}: {mode:?}");
        let created = after
            .iter()
            .filter(|e| kind(e) == pb::EventKind::HoldCreated)
            .count();
        assert_eq!(
            created,
            made.len(),
            "every acknowledged hold has its event once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_carts_are_the_expired_holds_of_a_channel_in_a_time_window() {
    let dir = tempdir();
    let mut config = ServerConfig::new(dir.path().join("data"));
    config.shards = 2;
    let server = start_with(config).await;
    let (mut admin, mut inv) = (client::admin(server.grpc), client::inventory(server.grpc));
    let mut ev = events_client(server.grpc);
    upsert_channel(&mut admin, channel(WEB)).await;
    upsert_channel(&mut admin, channel("SOCIAL")).await;
    stock(&mut admin, "P1", LOC, 10).await;
    let since = common::requests::now_millis();
    let expired_filter = pb::EventFilter {
        kinds: vec![pb::EventKind::HoldExpired as i32],
        channel_ref: "SOCIAL".into(),
        from_time: Some(common::requests::ts(since)),
        ..Default::default()
    };
    let mut abandoned = ev
        .watch_events(pb::WatchEventsRequest {
            start: Start::Now as i32,
            from_sequence: 0,
            filter: Some(expired_filter.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    let line = [("P1".to_string(), LOC.to_string(), 1)];
    reserve_ok(&mut inv, "cart-social-1", "SOCIAL", &line, 1).await;
    reserve_ok(&mut inv, "cart-web-1", WEB, &line, 1).await;
    reserve_ok(&mut inv, "cart-social-2", "SOCIAL", &line, 0).await;
    confirm_ok(&mut inv, "cart-social-2", "order-2").await;
    // The one-second SOCIAL cart expires with no order: the filtered watch shows only it.
    let expired = tokio::time::timeout(EVENT_WAIT, next_event(&mut abandoned))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (kind(&expired), expired.hold_ref.as_str()),
        (pb::EventKind::HoldExpired, "cart-social-1")
    );
    let listed = ev
        .list_events(pb::ListEventsRequest {
            from_sequence: 0,
            page_size: 100,
            filter: Some(expired_filter),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.events, vec![expired]);
    drop(abandoned);
    stop(server).await;
}
