//! A failing disk under the real `stockd` binary (`--fault-fail-writes-file`): writes
//! answer UNAVAILABLE, reads go on and show only what is durable, and a restart on a
//! healthy disk shows nothing that answered UNAVAILABLE.

mod common;

use std::path::PathBuf;

use tonic::Code;

use stockd::proto::inventory::v1 as pb;

use common::calls::{get_hold, get_position, reserve_ok};
use common::client::{Adm, Inv};
use common::fixtures::{Channels, LOC, TestFolder, WEB, products_on_every_shard, start_seeded};
use common::requests::{count, keys_at, next_as_of, position_keys, reserve_request};
use common::server::{ServerProcess, fail};
use common::visible::{assert_same, visible};

/// A data folder for a server on two shards whose writes fail while the fault file exists.
struct FailingDisk {
    folder: TestFolder,
    fault: PathBuf,
    fault_arg: String,
}

impl FailingDisk {
    fn new() -> FailingDisk {
        let folder = TestFolder::new();
        let fault = folder.logs().join("fail");
        let fault_arg = fault.display().to_string();
        FailingDisk {
            folder,
            fault,
            fault_arg,
        }
    }

    fn args(&self) -> [&str; 4] {
        ["--shards", "2", "--fault-fail-writes-file", &self.fault_arg]
    }

    /// Starts the server on a healthy disk (`start_seeded`).
    async fn start_seeded(
        &self,
        channels: Channels,
        keys: &[(String, String)],
        quantity: i64,
    ) -> (ServerProcess, Adm, Inv) {
        start_seeded(&self.folder, &self.args(), channels, keys, |_| quantity).await
    }

    /// From now on every write fails.
    fn fail_writes(&self) {
        std::fs::write(&self.fault, b"").unwrap();
    }

    /// From now on writes succeed again.
    fn heal(&self) {
        std::fs::remove_file(&self.fault).unwrap();
    }
}

/// Panics (with the server's log) unless the call answered UNAVAILABLE.
fn expect_unavailable(what: &str, r: Result<(), tonic::Status>, log: &str) {
    match r {
        Err(s) if s.code() == Code::Unavailable => {}
        other => fail(
            log,
            format!("{what} with a failing disk answered {other:?}, expected UNAVAILABLE"),
        ),
    }
}

/// Reserves `lines` on WEB for an hour; panics unless the answer is UNAVAILABLE.
async fn reserve_unavailable(
    inv: &mut Inv,
    server: &ServerProcess,
    what: &str,
    hold_ref: &str,
    lines: &[(String, String, i64)],
) {
    let r = inv
        .reserve(reserve_request(hold_ref, WEB, lines, 3600))
        .await
        .map(drop);
    expect_unavailable(what, r, &server.log());
}

/// Counts `quantity` units of `product` at LOC; panics unless the answer is UNAVAILABLE.
async fn set_stock_unavailable(
    admin: &mut Adm,
    server: &ServerProcess,
    product: &str,
    quantity: i64,
) {
    let r = admin
        .set_stock(pb::SetStockRequest {
            counts: vec![count(product, LOC, quantity, next_as_of())],
        })
        .await
        .map(drop);
    expect_unavailable("SetStock", r, &server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_errors_answer_unavailable_and_reads_go_on() {
    let disk = FailingDisk::new();
    let products = products_on_every_shard("W", LOC, 2, 2);
    let keys = keys_at(&products, LOC);
    let line = |i: usize, q: i64| (products[i].clone(), LOC.to_string(), q);
    let (mut server, mut admin, mut inv) = disk.start_seeded(Channels::Standard, &keys, 20).await;
    reserve_ok(&mut inv, "ok-hold", WEB, &[line(0, 2), line(1, 3)], 3600).await;
    reserve_ok(&mut inv, "ok-confirm", WEB, &[line(2, 1), line(3, 1)], 3600).await;
    let known = [
        "ok-hold".to_string(),
        "ok-confirm".to_string(),
        "bad-hold".into(),
        "bad-hold-2".into(),
    ];
    let before = visible(&server, &keys, &known).await;

    disk.fail_writes();
    let bad = [line(0, 1), line(1, 1)];
    reserve_unavailable(&mut inv, &server, "Reserve", "bad-hold", &bad).await;
    set_stock_unavailable(&mut admin, &server, &products[0], 99).await;
    reserve_unavailable(
        &mut inv,
        &server,
        "a second Reserve",
        "bad-hold-2",
        &[line(3, 1)],
    )
    .await;
    let r = inv
        .confirm_hold(pb::ConfirmHoldRequest {
            hold_ref: "ok-confirm".into(),
            order_ref: "bad-order".into(),
            reacquire: false,
        })
        .await
        .map(drop);
    expect_unavailable("ConfirmHold", r, &server.log());
    let r = inv
        .release_hold(pb::ReleaseHoldRequest {
            hold_ref: "ok-hold".into(),
        })
        .await
        .map(drop);
    expect_unavailable("ReleaseHold", r, &server.log());

    // Reads go on.
    let mut reads_ok = true;
    for _ in 0..3 {
        reads_ok &= inv
            .get_availability(pb::GetAvailabilityRequest {
                channel_ref: WEB.into(),
                keys: position_keys(&keys),
            })
            .await
            .is_ok();
        reads_ok &= get_hold(&mut inv, "ok-hold")
            .await
            .is_ok_and(|h| h.is_some());
        reads_ok &= get_position(&mut admin, &products[0], LOC, true)
            .await
            .is_ok_and(|p| p.is_some());
    }
    if !reads_ok {
        fail(&server.log(), "reads failed with a failing disk");
    }
    if !server.log().contains("UNAVAILABLE") && !server.log().contains("write failed") {
        fail(
            &server.log(),
            "the failing write is not in the server's log",
        );
    }

    server.kill();
    disk.heal();
    let server = disk.folder.start(&disk.args()).await;
    let after = visible(&server, &keys, &known).await;
    assert_same(
        &before,
        &after,
        "after a restart on a healthy disk (nothing that answered UNAVAILABLE may be there)",
        &server.log(),
    );
}

/// A write that answered UNAVAILABLE was never acknowledged, so no read may show it
/// either: until the restart, reads must show what is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_a_failed_write_show_only_durable_state() {
    let disk = FailingDisk::new();
    let products = products_on_every_shard("R", LOC, 2, 1);
    let keys = keys_at(&products, LOC);
    let (server, mut admin, mut inv) = disk.start_seeded(Channels::PlainWeb, &keys, 10).await;
    let known = ["bad-hold".to_string()];
    let before = visible(&server, &keys, &known).await;

    disk.fail_writes();
    let line = |i: usize, q: i64| (products[i].clone(), LOC.to_string(), q);
    let bad = [line(0, 4), line(1, 5)];
    reserve_unavailable(&mut inv, &server, "Reserve", "bad-hold", &bad).await;
    set_stock_unavailable(&mut admin, &server, &products[0], 1).await;
    let during = visible(&server, &keys, &known).await;
    assert_same(
        &before,
        &during,
        "reads after writes that answered UNAVAILABLE (they show changes that were never acknowledged and vanish at the restart)",
        &server.log(),
    );
}
