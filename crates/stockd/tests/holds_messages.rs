//! How many shard messages each hold operation sends (`stockd_shard_messages_total`),
//! scraped from the Prometheus endpoint of an in-process server at `--shards 8`.
//!
//! The metrics recorder is global per process, so this test has its own test binary.
//! Today every hold operation is broadcast to every shard, so a one-shard hold costs 8
//! messages per operation; the figures below record that truth. The goal (issue #12, item
//! 8: participant-only routing, a home shard per hold recording where its parts are) is 1
//! message for a one-shard hold's Reserve, GetHold and ReleaseHold, and 2 for ConfirmHold
//! (read, confirm); when that lands, these expectations change to those numbers.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::calls::{confirm_ok, get_hold, release_ok, reserve_ok, stock, upsert_channel};
use common::requests::channel;
use common::server::{InProcessServer, free_port};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shard_hold_costs_these_shard_messages() {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    stockd::metrics::install(metrics).expect("install the recorder");
    let server = InProcessServer::start(SHARDS).await;
    let mut admin = server.admin();
    let mut inv = server.inventory();
    upsert_channel(&mut admin, channel("WEB")).await;
    stock(&mut admin, "SKU", "DC1", 10).await;
    let line = vec![("SKU".to_string(), "DC1".to_string(), 1)];
    let n = u64::from(SHARDS);

    let m0 = messages(metrics);
    reserve_ok(&mut inv, "h", "WEB", &line, 600).await;
    let m1 = messages(metrics);
    // Goal (item 8): 1.
    assert_eq!(delta(&m0, &m1), expect(&[("reserve", n)]), "Reserve");

    get_hold(&mut inv, "h").await.expect("GetHold").expect("h");
    let m2 = messages(metrics);
    // Goal: 1.
    assert_eq!(delta(&m1, &m2), expect(&[("hold", n)]), "GetHold");

    confirm_ok(&mut inv, "h", "order-h").await;
    let m3 = messages(metrics);
    // Every part is read, then only the shard with an active part confirms. Goal: 2.
    assert_eq!(
        delta(&m2, &m3),
        expect(&[("hold", n), ("confirm", 1)]),
        "ConfirmHold"
    );

    reserve_ok(&mut inv, "h2", "WEB", &line, 600).await;
    let m4 = messages(metrics);
    release_ok(&mut inv, "h2").await;
    let m5 = messages(metrics);
    // Goal: 1.
    assert_eq!(delta(&m4, &m5), expect(&[("release", n)]), "ReleaseHold");
    server.stop().await;
}
