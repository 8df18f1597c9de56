//! How many shard messages each hold operation sends (`stockd_shard_messages_total`),
//! scraped from the Prometheus endpoint of an in-process server at `--shards 8`.
//!
//! The metrics recorder is global per process, so this test has its own test binary.
//! Each hold operation contacts only the shards the router's directory says keep a part of
//! the hold (and the shards of its new lines), so a one-shard hold costs one message per
//! Reserve, GetHold, ConfirmHold and ReleaseHold however many shards there are, and a hold
//! on three shards contacts those three (issue #12).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::calls::{
    cancel_ok, confirm_ok, fulfil_ok, get_hold, release_ok, reserve_ok, stock, upsert_channel,
};
use common::fixtures::products_on_every_shard;
use common::requests::{channel, reserve_request};
use common::server::{InProcessServer, free_port};
use stockd::proto::inventory::v1 as pb;

const SHARDS: u32 = 8;

/// GET /metrics, bounded in time; retried while the exporter starts listening.
fn scrape(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        match attempt {
            Ok(body) if body.starts_with("HTTP/1.1 200") => return body,
            other if Instant::now() >= deadline => panic!("cannot scrape {addr}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `stockd_shard_messages_total` by kind.
fn messages(addr: SocketAddr) -> BTreeMap<String, u64> {
    let body = scrape(addr);
    let mut out = BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("stockd_shard_messages_total{kind=\"") else {
            continue;
        };
        let (kind, value) = rest.split_once("\"} ").expect("a labelled sample");
        out.insert(
            kind.to_string(),
            value.trim().parse::<f64>().expect("a number") as u64,
        );
    }
    out
}

/// What changed between two scrapes (kinds that did not move are left out).
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn expect(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// One line of one unit of each product at DC1.
fn lines(products: &[String]) -> Vec<(String, String, i64)> {
    products
        .iter()
        .map(|p| (p.clone(), "DC1".to_string(), 1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_operations_contact_only_the_hold_s_shards() {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    stockd::metrics::install(metrics).expect("install the recorder");
    let server = InProcessServer::start(SHARDS).await;
    let mut admin = server.admin();
    let mut inv = server.inventory();
    upsert_channel(&mut admin, channel("WEB")).await;
    // One product per shard, in shard order.
    let products = products_on_every_shard("SKU", "DC1", SHARDS as usize, 1);
    for p in &products {
        stock(&mut admin, p, "DC1", 10).await;
    }
    let one = lines(&products[..1]);

    // A one-shard hold: one message per operation, whatever --shards is.
    let m0 = messages(metrics);
    reserve_ok(&mut inv, "h", "WEB", &one, 600).await;
    let m1 = messages(metrics);
    assert_eq!(delta(&m0, &m1), expect(&[("reserve", 1)]), "Reserve");
    reserve_ok(&mut inv, "h", "WEB", &one, 600).await;
    let m1b = messages(metrics);
    assert_eq!(delta(&m1, &m1b), expect(&[("reserve", 1)]), "Reserve again");
    get_hold(&mut inv, "h").await.expect("GetHold").expect("h");
    let m2 = messages(metrics);
    assert_eq!(delta(&m1b, &m2), expect(&[("hold", 1)]), "GetHold");
    confirm_ok(&mut inv, "h", "order-h").await;
    let m3 = messages(metrics);
    assert_eq!(delta(&m2, &m3), expect(&[("confirm", 1)]), "ConfirmHold");
    fulfil_ok(&mut inv, "order-h", &[]).await;
    let m3b = messages(metrics);
    assert_eq!(
        delta(&m3, &m3b),
        expect(&[("fulfil_check", 1), ("fulfil", 1)]),
        "FulfilOrder"
    );
    reserve_ok(&mut inv, "h2", "WEB", &one, 600).await;
    let m4 = messages(metrics);
    release_ok(&mut inv, "h2").await;
    let m5 = messages(metrics);
    assert_eq!(delta(&m4, &m5), expect(&[("release", 1)]), "ReleaseHold");

    // An unknown hold or order costs nothing: the directory knows no shard keeps it.
    assert!(
        get_hold(&mut inv, "nobody")
            .await
            .expect("GetHold")
            .is_none()
    );
    assert_eq!(delta(&m5, &messages(metrics)), expect(&[]), "unknown hold");

    // A hold on three shards contacts those three, and a cart update the shards of its
    // new lines plus those keeping the previous version.
    let three = lines(&products[1..4]);
    let m6 = messages(metrics);
    reserve_ok(&mut inv, "h3", "WEB", &three, 600).await;
    let m7 = messages(metrics);
    assert_eq!(delta(&m6, &m7), expect(&[("reserve", 3)]), "Reserve on 3");
    let first = get_hold(&mut inv, "h3")
        .await
        .expect("GetHold")
        .expect("h3");
    let m8 = messages(metrics);
    assert_eq!(delta(&m7, &m8), expect(&[("hold", 3)]), "GetHold on 3");
    // Unchanged and active, the hold is answered from the directory's view of it: no
    // shard message, the same answer.
    let again = get_hold(&mut inv, "h3").await.expect("GetHold");
    assert_eq!(
        again.as_ref(),
        Some(&first),
        "the view is the shards' answer"
    );
    assert_eq!(delta(&m8, &messages(metrics)), expect(&[]), "GetHold again");
    let moved = lines(&products[4..5]);
    reserve_ok(&mut inv, "h3", "WEB", &moved, 600).await;
    let m9 = messages(metrics);
    assert_eq!(
        delta(&m8, &m9),
        expect(&[("reserve", 4)]),
        "cart update 3 → 1"
    );
    // The update dropped the three old parts: the hold now lives on one shard.
    get_hold(&mut inv, "h3")
        .await
        .expect("GetHold")
        .expect("h3");
    let m10 = messages(metrics);
    assert_eq!(delta(&m9, &m10), expect(&[("hold", 1)]), "GetHold after");
    reserve_ok(&mut inv, "h3", "WEB", &three, 600).await;
    let m11 = messages(metrics);
    assert_eq!(
        delta(&m10, &m11),
        expect(&[("reserve", 4)]),
        "cart update 1 → 3"
    );
    // A confirm of a hold on several shards reads every part, then confirms each.
    confirm_ok(&mut inv, "h3", "order-3").await;
    let m12 = messages(metrics);
    assert_eq!(
        delta(&m11, &m12),
        expect(&[("hold", 3), ("confirm", 3)]),
        "ConfirmHold on 3"
    );
    cancel_ok(&mut inv, "order-3").await;
    let m13 = messages(metrics);
    assert_eq!(
        delta(&m12, &m13),
        expect(&[("cancel", 3)]),
        "CancelOrder on 3"
    );
    reserve_ok(&mut inv, "h4", "WEB", &three, 600).await;
    let m14 = messages(metrics);
    release_ok(&mut inv, "h4").await;
    let m15 = messages(metrics);
    assert_eq!(
        delta(&m14, &m15),
        expect(&[("release", 3)]),
        "ReleaseHold on 3"
    );
    // A released hold is not answered from a view: its shards say RELEASED.
    let released = get_hold(&mut inv, "h4")
        .await
        .expect("GetHold")
        .expect("h4");
    assert_eq!(released.state(), pb::HoldState::Released);
    let m15b = messages(metrics);
    assert_eq!(
        delta(&m15, &m15b),
        expect(&[("hold", 3)]),
        "GetHold released"
    );

    // A view is not used past the hold's deadline: its shards answer EXPIRED.
    reserve_ok(&mut inv, "h5", "WEB", &three, 1).await;
    let active = get_hold(&mut inv, "h5")
        .await
        .expect("GetHold")
        .expect("h5");
    assert_eq!(active.state(), pb::HoldState::Active);
    let m15c = messages(metrics);
    assert_eq!(
        get_hold(&mut inv, "h5").await.expect("GetHold"),
        Some(active)
    );
    assert_eq!(
        delta(&m15c, &messages(metrics)),
        expect(&[]),
        "GetHold h5 again"
    );
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let m15d = messages(metrics);
    let expired = get_hold(&mut inv, "h5")
        .await
        .expect("GetHold")
        .expect("h5");
    assert_eq!(expired.state(), pb::HoldState::Expired, "{expired:?}");
    let d = delta(&m15d, &messages(metrics));
    assert_eq!(d.get("hold"), Some(&3), "GetHold past the deadline: {d:?}");

    // After a restart the directory is rebuilt from the recovered shards: the same holds
    // cost the same messages, and a finished hold still refuses a new reserve.
    let server = server.restart(SHARDS).await;
    let mut inv = server.inventory();
    let m16 = messages(metrics);
    let h = get_hold(&mut inv, "h").await.expect("GetHold").expect("h");
    assert_eq!(h.state, pb::HoldState::Confirmed as i32);
    let m17 = messages(metrics);
    assert_eq!(
        delta(&m16, &m17),
        expect(&[("hold", 1)]),
        "GetHold after restart"
    );
    let h3 = get_hold(&mut inv, "h3")
        .await
        .expect("GetHold")
        .expect("h3");
    assert_eq!(h3.lines.len(), 3);
    let m18 = messages(metrics);
    assert_eq!(
        delta(&m17, &m18),
        expect(&[("hold", 3)]),
        "GetHold on 3 after"
    );
    let again = inv
        .reserve(reserve_request("h4", "WEB", &three, 600))
        .await
        .expect_err("a released hold is not made again");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    let m19 = messages(metrics);
    assert_eq!(
        delta(&m18, &m19),
        expect(&[("reserve", 3)]),
        "Reserve h4 after"
    );
    server.stop().await;
}
