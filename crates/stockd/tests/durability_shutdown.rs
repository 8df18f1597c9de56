//! Graceful shutdown of the real `stockd` binary: SIGTERM while traffic runs exits 0,
//! reports the shutdown, and keeps every acknowledged change.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use stockd::proto::inventory::v1 as pb;

use common::calls::{get_hold, hold_lines};
use common::fixtures::{
    Channels, LOC, TestFolder, WEB, hold_mix, products_on_every_shard, start_seeded,
};
use common::requests::{keys_at, reserve_request};
use common::server::fail;
use common::visible::visible;

/// Hold or order lines: (product, location, quantity).
type Lines = Vec<(String, String, i64)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_exits_zero_and_keeps_acknowledged_changes() {
    let folder = TestFolder::new();
    let products = products_on_every_shard("G", LOC, 3, 2);
    let keys = keys_at(&products, LOC);
    let (mut server, _admin, mut inv) = start_seeded(
        &folder,
        &["--shards", "3"],
        Channels::Standard,
        &keys,
        |_| 100_000,
    )
    .await;
    let mixed = hold_mix(&mut inv, &products, "gs").await;
    let before = visible(&server, &keys, &mixed).await;

    // Traffic still running when SIGTERM arrives: whatever was acknowledged survives.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for id in 0..4usize {
        let mut inv = server.inventory();
        let products = products.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked: Vec<(String, Lines)> = Vec::new();
            let mut rng = StdRng::seed_from_u64(id as u64);
            for n in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let mut picked: Vec<String> =
                    products.choose_multiple(&mut rng, 2).cloned().collect();
                picked.sort();
                let lines: Vec<_> = picked
                    .into_iter()
                    .map(|p| (p, LOC.to_string(), 1))
                    .collect();
                let r = format!("term-{id}-{n}");
                match inv.reserve(reserve_request(&r, WEB, &lines, 3600)).await {
                    Ok(a) if a.get_ref().outcome == pb::ReserveOutcome::Reserved as i32 => {
                        acked.push((r, lines))
                    }
                    Ok(a) => panic!("{r}: {:?}", a.into_inner()),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = server.terminate().await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let log = server.log();
    if !status.success() {
        fail(
            &log,
            format!("SIGTERM: stockd exited with {status}, expected 0"),
        );
    }
    if !log.contains("shut down") {
        fail(&log, "the log does not report the shutdown");
    }
    assert!(
        !acked.is_empty(),
        "no reserve was acknowledged before SIGTERM"
    );

    let server = folder.start(&["--shards", "3"]).await;
    let mut inv = server.inventory();
    for (r, lines) in &acked {
        let h = get_hold(&mut inv, r).await.unwrap();
        match &h {
            Some(h) if h.state == pb::HoldState::Active as i32 && &hold_lines(h) == lines => {}
            other => fail(
                &server.log(),
                format!("acknowledged hold {r} ({lines:?}) after a graceful restart: {other:?}"),
            ),
        }
    }
    // The holds placed before the traffic are exactly as they were (positions moved on
    // with the traffic's holds, so only the holds and channels are compared).
    let after = visible(&server, &keys, &mixed).await;
    if after.holds != before.holds || after.channels != before.channels {
        fail(
            &server.log(),
            format!(
                "after a graceful restart:\n  before {:?}\n  after  {:?}",
                before.holds, after.holds
            ),
        );
    }
    eprintln!(
        "graceful shutdown: {} holds acknowledged during the shutdown race survived",
        acked.len()
    );
}
