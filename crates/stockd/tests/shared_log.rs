//! Two shards sharing one write-ahead log, on the simulated backend over real gRPC.
//!
//! One shard writes a hold and then nothing; the other writes enough to fill several
//! segments, checkpointing all the way. Its checkpoints must not recycle the segment that
//! holds the quiet shard's hold, whether that record was written in this run or found by
//! recovery at the start (and so never seen by the running log writer).

mod common;

use stockd::proto::inventory::v1 as pb;
use stockd::shard::shard_of;

use common::calls::{get_hold, set_stock_ok, upsert_channel};
use common::client;
use common::requests::{channel, count, next_as_of, reserve_request};
use common::sim::{self, SimWorld};

const LOC: &str = "DC1";
const WEB: &str = "WEB";
/// Holds the busy shard writes: at about 200 bytes a record, several 64 KiB segments.
const BUSY_HOLDS: usize = 1_500;

/// Two shards, one log, checkpoints every 20 records.
fn config(world: &SimWorld) -> stockd::config::ServerConfig {
    let mut config = world.config();
    config.logs = Some(1);
    config.limits.snapshot_every_records = 20;
    config
}

/// A product of `shard` (of two).
fn product_of(shard: usize) -> String {
    (0..)
        .map(|i| format!("P{i}"))
        .find(|p| shard_of(p, LOC, 2) == shard)
        .expect("a product of each shard")
}

async fn reserve(inv: &mut client::Inv, hold_ref: &str, product: &str) {
    let lines = [(product, LOC, 1)];
    let r = inv
        .reserve(reserve_request(hold_ref, WEB, &lines, 3600))
        .await
        .expect("reserve")
        .into_inner();
    assert_eq!(r.outcome, pb::ReserveOutcome::Reserved as i32, "{hold_ref}");
}

/// `n` one-line holds of `product`.
async fn holds(grpc: std::net::SocketAddr, prefix: &str, product: &str, n: usize) {
    let mut inv = client::inventory(grpc);
    for i in 0..n {
        reserve(&mut inv, &format!("{prefix}-{i}"), product).await;
    }
}

/// Starts a server on `world` and checks that `hold_ref` is active.
async fn assert_active(world: &SimWorld, hold_ref: &str, why: &str) {
    let server = sim::run(config(world)).await.expect("restart");
    let mut inv = client::inventory(server.grpc);
    let hold = get_hold(&mut inv, hold_ref).await.expect("get hold");
    assert!(
        hold.is_some_and(|h| h.state == pb::HoldState::Active as i32),
        "{hold_ref}, {why}, survives the busy shard's checkpoints"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_shards_checkpoints_keep_a_quiet_shards_records() {
    let world = SimWorld::new(21);
    let (busy, quiet) = (product_of(0), product_of(1));
    let server = sim::run(config(&world)).await.expect("start");
    let mut admin = client::admin(server.grpc);
    upsert_channel(&mut admin, channel(WEB)).await;
    let t = next_as_of();
    set_stock_ok(
        &mut admin,
        vec![count(&busy, LOC, 1_000_000, t), count(&quiet, LOC, 100, t)],
    )
    .await;
    reserve(&mut client::inventory(server.grpc), "quiet-1", &quiet).await;
    holds(server.grpc, "busy-1", &busy, BUSY_HOLDS).await;
    server.stop().await;
    assert_active(&world, "quiet-1", "written in the same run").await;

    let server = sim::run(config(&world)).await.expect("restart");
    reserve(&mut client::inventory(server.grpc), "quiet-2", &quiet).await;
    server.stop().await;
    // Now only recovery knows where quiet-2's record lies.
    let server = sim::run(config(&world)).await.expect("restart");
    holds(server.grpc, "busy-2", &busy, BUSY_HOLDS).await;
    server.stop().await;
    assert_active(&world, "quiet-2", "found by recovery at the start").await;
}
