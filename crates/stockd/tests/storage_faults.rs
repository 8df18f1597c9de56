//! A damaged log or checkpoint, and a full disk, on the simulated backend over real gRPC.
//!
//! - A flipped byte in the middle of a log segment refuses the start, naming the file and
//!   the offset; repaired, everything is back.
//! - A torn last record (half written) is dropped and reported with its file and offset;
//!   a last record that never reached the disk leaves a clean end.
//! - A flipped byte in a checkpoint entry refuses the start, naming the key.
//! - A full disk: writes answer UNAVAILABLE, reads show only what is durable, and after a
//!   restart on a healthy disk the state is what was acknowledged; health reports the
//!   InventoryService NOT_SERVING meanwhile.

mod common;

use stockd::proto::inventory::v1 as pb;
use stockd::storage::checkpoint::layout::page_key_of;
use stockd::storage::checkpoint::{Namespace, Scope};
use stockd::storage::log::sim::Faults;
use tonic::Code;

use common::calls::{get_hold, set_stock_ok, upsert_channel};
use common::client;
use common::requests::{channel, count, next_as_of, reserve_request};
use common::sim::{self, SimWorld, frames, overwrite};

const LOC: &str = "DC1";
const WEB: &str = "WEB";
/// A product of shard 0 (of two), where the damage goes.
const P: &str = "P1";
/// Health checks polled at most, 20 ms apart, after a failed write.
const HEALTH_POLLS_MAX: usize = 100;
/// Holds placed on shard 0 before the damage.
const HOLDS: usize = 10;

/// A world with a channel, stock on both shards and `HOLDS` one-line holds on shard 0;
/// the server is stopped gracefully. `checkpoint_every`: records between checkpoints.
async fn seeded(checkpoint_every: u64) -> SimWorld {
    assert_eq!(
        stockd::shard::shard_of(P, LOC, 2),
        0,
        "{P} lives on shard 0"
    );
    let world = SimWorld::new(7);
    let mut config = world.config();
    config.limits.snapshot_every_records = checkpoint_every;
    let server = sim::run(config).await.expect("start");
    let mut admin = client::admin(server.grpc);
    let mut inv = client::inventory(server.grpc);
    upsert_channel(&mut admin, channel(WEB)).await;
    let t = next_as_of();
    set_stock_ok(
        &mut admin,
        vec![count(P, LOC, 100, t), count("P0", LOC, 100, t)],
    )
    .await;
    for i in 0..HOLDS {
        let lines = [(P, LOC, 1)];
        let r = inv
            .reserve(reserve_request(&format!("d{i}"), WEB, &lines, 3600))
            .await
            .expect("reserve")
            .into_inner();
        assert_eq!(r.outcome, pb::ReserveOutcome::Reserved as i32);
    }
    if checkpoint_every == 1 {
        wait_position_checkpointed(&world).await;
    }
    server.stop().await;
    world
}

/// Waits (bounded) until a checkpoint wrote the page of the position's entry: checkpoints
/// run off the shard, so the last one may still be on its way when the calls returned.
async fn wait_position_checkpointed(world: &SimWorld) {
    let scope = Scope {
        generation: 0,
        shard: 0,
    };
    let entry = format!("{P}:{LOC}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        // The scope record names the page set and size: read it anew each time.
        let key = page_key_of(
            world.store.as_ref(),
            scope,
            Namespace::POSITIONS,
            entry.as_bytes(),
        )
        .expect("the page key of the position");
        if world.store.durable_bytes().contains_key(&key) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint wrote the position within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Which of the seeded holds a server shows.
async fn holds_present(world: &SimWorld) -> (Vec<bool>, stockd::storage::recovery::RecoveryReport) {
    let server = sim::run(world.config()).await.expect("start");
    let mut inv = client::inventory(server.grpc);
    let mut present = Vec::new();
    for i in 0..HOLDS {
        present.push(
            get_hold(&mut inv, &format!("d{i}"))
                .await
                .expect("GetHold")
                .is_some(),
        );
    }
    (present, server.stop().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_middle_of_the_log_refuses_to_start_naming_file_and_offset() {
    let world = seeded(1_000).await;
    let frames = frames(&world.disk, 0);
    assert!(frames.len() > HOLDS, "shard 0 has its records: {frames:?}");
    let mid = frames[frames.len() / 2].clone();
    // A payload byte: the frame's checksum no longer matches.
    let at = mid.offset + 24;
    world.disk.flip("g0-l0", &mid.file, at, 0x5a);
    let refused = sim::run(world.config())
        .await
        .err()
        .expect("the start is refused");
    let file = format!("sim:g0-l0/{}", mid.file);
    assert!(
        refused.contains(&file) && refused.contains(&format!("offset {}", mid.offset)),
        "the refusal names {file} at offset {}: {refused}",
        mid.offset
    );
    world.disk.flip("g0-l0", &mid.file, at, 0x5a);
    let (present, report) = holds_present(&world).await;
    assert!(
        present.iter().all(|p| *p),
        "repaired, every hold is back: {present:?}"
    );
    assert!(report.dropped_tail_records.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_dropped_and_reported() {
    let world = seeded(1_000).await;
    let last = frames(&world.disk, 0).last().cloned().expect("records");
    let half = last.len / 2;
    let zeros = vec![0u8; last.len - half];
    overwrite(
        &world.disk,
        0,
        &last.file,
        last.offset + half as u64,
        &zeros,
    );
    let (present, report) = holds_present(&world).await;
    let file = format!("sim:g0-l0/{}", last.file);
    assert!(
        report
            .dropped_tail_records
            .iter()
            .any(|d| d.contains(&file) && d.contains(&format!("offset {}", last.offset))),
        "the dropped tail names {file} at offset {}: {report:?}",
        last.offset
    );
    let mut expected = vec![true; HOLDS];
    expected[HOLDS - 1] = false;
    assert_eq!(present, expected, "only the torn record's hold is gone");
    // Dropped once: the next start finds a clean log.
    let (again, report) = holds_present(&world).await;
    assert_eq!(again, expected);
    assert!(report.dropped_tail_records.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_record_that_never_reached_the_disk_leaves_a_clean_end() {
    let world = seeded(1_000).await;
    let last = frames(&world.disk, 0).last().cloned().expect("records");
    overwrite(
        &world.disk,
        0,
        &last.file,
        last.offset,
        &vec![0u8; last.len],
    );
    let (present, report) = holds_present(&world).await;
    let mut expected = vec![true; HOLDS];
    expected[HOLDS - 1] = false;
    assert_eq!(
        present, expected,
        "the lost record's hold is gone, the others stay"
    );
    assert!(report.dropped_tail_records.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_checkpoint_entry_refuses_to_start_naming_the_key() {
    // A checkpoint after every record: the position's entry is in the store.
    let world = seeded(1).await;
    // The page of the position's entry: with one position, it holds only that entry.
    let key = page_key_of(
        world.store.as_ref(),
        Scope {
            generation: 0,
            shard: 0,
        },
        Namespace::POSITIONS,
        format!("{P}:{LOC}").as_bytes(),
    )
    .unwrap();
    let len = world.store.durable_bytes()[&key].len();
    world.store.damage_flip(&key, len - 1, 0x01);
    let refused = sim::run(world.config())
        .await
        .err()
        .expect("the start is refused");
    assert!(
        refused.contains(&format!("{P}:{LOC}")) && refused.contains("positions"),
        "the refusal names the positions key {P}:{LOC}: {refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_unavailable_and_reads_show_only_durable_state() {
    let world = seeded(1_000).await;
    let server = sim::run(world.config()).await.expect("start");
    let mut inv = client::inventory(server.grpc);
    let mut admin = client::admin(server.grpc);
    let position = |admin: &mut client::Adm| {
        let mut admin = admin.clone();
        async move {
            admin
                .get_position(pb::GetPositionRequest {
                    product_ref: P.into(),
                    location_ref: LOC.into(),
                    include_ledger: true,
                })
                .await
                .expect("GetPosition")
                .into_inner()
                .position
        }
    };
    let before = position(&mut admin).await;
    world.disk.set_faults(Faults {
        write: Some(std::io::ErrorKind::StorageFull),
        ..Faults::default()
    });
    let r = inv
        .reserve(reserve_request("full-1", WEB, &[(P, LOC, 2)], 3600))
        .await;
    assert_eq!(
        r.map(|_| ()).map_err(|s| s.code()),
        Err(Code::Unavailable),
        "Reserve on a full disk"
    );
    let r = admin
        .set_stock(pb::SetStockRequest {
            counts: vec![count(P, LOC, 1, next_as_of())],
        })
        .await;
    assert_eq!(
        r.map(|_| ()).map_err(|s| s.code()),
        Err(Code::Unavailable),
        "SetStock on a full disk"
    );
    // Reads go on and show nothing that was not made durable.
    assert_eq!(
        position(&mut admin).await,
        before,
        "reads after the failed writes"
    );
    assert_eq!(get_hold(&mut inv, "full-1").await.expect("GetHold"), None);
    // The InventoryService reports NOT_SERVING (bounded wait: the shard notices on its
    // next batch, which the reads above already were).
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let mut status = client::health_status(server.grpc).await;
    for _ in 0..HEALTH_POLLS_MAX {
        if status == Ok(not_serving) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        status = client::health_status(server.grpc).await;
    }
    assert_eq!(status, Ok(not_serving), "health after a failed write");
    // Writes stay refused until a restart, even once the disk has room again.
    world.disk.set_faults(Faults::default());
    let r = inv
        .reserve(reserve_request("full-2", WEB, &[(P, LOC, 1)], 3600))
        .await;
    assert_eq!(
        r.map(|_| ()).map_err(|s| s.code()),
        Err(Code::Unavailable),
        "Reserve after the failure"
    );
    server.stop().await;
    let server = sim::run(world.config()).await.expect("restart");
    let mut admin = client::admin(server.grpc);
    assert_eq!(
        position(&mut admin).await,
        before,
        "after a restart on a healthy disk"
    );
    server.stop().await;
}
