//! A cart update cut by a crash between its shards' log writes (issue #12, defect 6),
//! built deterministically: reserve a hold (acknowledged), update it across two shards
//! (so each shard logs its own record of the new cart version), SIGKILL the real binary,
//! then zero the update's record at the end of one shard's log, as if the crash came just
//! before that shard's write was durable (the update was then never acknowledged).
//!
//! After the restart, and after a second one, the hold must be its last acknowledged
//! version, whole on every shard: never released by recovery, never a mix of the two
//! carts, and every position's ledger holds exactly its lines. A hold whose very first
//! reserve was cut is absent (its previous version is "no hold"), not released; an update
//! logged on every shard is the new version.

mod common;

use stockd::proto::inventory::v1 as pb;
use stockd_domain::Command;

use common::calls::{hold_lines, reserve_ok};
use common::fixtures::{Channels, LOC, TestFolder, WEB, products_on_every_shard, start_seeded};
use common::requests::keys_at;
use common::server::fail;
use common::store::{drop_last_log_record, generation};
use common::visible::{Visible, visible};

const TWO_SHARDS: &[&str] = &["--shards", "2"];
const STOCK: i64 = 20;

type Lines = Vec<(String, String, i64)>;

/// What a client sees of hold "h": its state and sorted lines, and the SOFT_RESERVE
/// quantity it has at each key.
fn hold_of(seen: &Visible) -> Option<(i32, Lines)> {
    seen.holds["h"].as_ref().map(|h| (h.state, hold_lines(h)))
}

fn soft_reserved(seen: &Visible, key: &(String, String)) -> i64 {
    let pos = seen.positions[key].as_ref().expect("a seeded position");
    pos.quantities
        .iter()
        .filter(|q| q.r#type == pb::QuantityType::SoftReserve as i32)
        .filter(|q| q.status == pb::QuantityStatus::Active as i32)
        .filter(|q| q.hold_ref == "h")
        .map(|q| -q.quantity)
        .sum()
}

fn sorted(mut lines: Lines) -> Lines {
    lines.sort();
    lines
}

/// Reserves `before` (if any) and then `after` as hold "h", kills the server, drops the
/// last record of shard `cut` (the update's, checked) if asked, and checks twice that the
/// hold comes back as `want` (`None`: absent), whole, with the ledger to match.
async fn cut_update(name: &str, before: Option<Lines>, after: Lines, cut: Option<u32>) {
    cut_update_then(name, before, after, cut, TWO_SHARDS).await;
}

/// `cut_update`, restarting with `restart` (another shard count: recovery settles the
/// version in the layout it was written in, then reshards).
async fn cut_update_then(
    name: &str,
    before: Option<Lines>,
    after: Lines,
    cut: Option<u32>,
    restart: &[&str],
) {
    let want = match cut {
        Some(_) => before.clone(),
        None => Some(after.clone()),
    };
    let folder = TestFolder::new();
    let products = products_on_every_shard("U", LOC, 2, 2);
    let keys = keys_at(&products, LOC);
    let (mut server, admin, mut inv) =
        start_seeded(&folder, TWO_SHARDS, Channels::PlainWeb, &keys, |_| STOCK).await;
    if let Some(before) = &before {
        reserve_ok(&mut inv, "h", WEB, before, 3600).await;
    }
    reserve_ok(&mut inv, "h", WEB, &after, 3600).await;
    drop((admin, inv));
    server.kill();
    if let Some(shard) = cut {
        let data = &folder.data;
        drop_last_log_record(data, generation(data), shard, |c| {
            matches!(c, Command::ReserveTagged { .. })
        });
    }
    for round in ["after the restart", "after a second restart"] {
        let mut server = folder.start(restart).await;
        let seen = visible(&server, &keys, &["h".to_string()]).await;
        let got = hold_of(&seen);
        let expected = want
            .clone()
            .map(|l| (pb::HoldState::Active as i32, sorted(l)));
        if got != expected {
            fail(
                &server.log(),
                format!(
                    "{name}, {round}: hold h is {got:?}; expected {expected:?} \
                     (before {before:?}, update {after:?}, cut on shard {cut:?})"
                ),
            );
        }
        for key in &keys {
            let held = soft_reserved(&seen, key);
            let expect: i64 = want
                .iter()
                .flatten()
                .filter(|l| (&l.0, &l.1) == (&key.0, &key.1))
                .map(|l| l.2)
                .sum();
            if held != expect {
                fail(
                    &server.log(),
                    format!(
                        "{name}, {round}: h holds {held} at {key:?}, expected {expect}: the \
                         ledger is not the hold's {want:?}"
                    ),
                );
            }
        }
        let status = server.terminate().await;
        assert!(status.success(), "SIGTERM: {status}\n{}", server.log());
    }
}

/// `products_on_every_shard("U", LOC, 2, 2)`: [shard 0, shard 1, shard 0, shard 1].
fn line(i: usize, quantity: i64) -> (String, String, i64) {
    let products = products_on_every_shard("U", LOC, 2, 2);
    (products[i].clone(), LOC.to_string(), quantity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_on_both_shards_cut_on_either_comes_back_as_the_previous_cart() {
    let before = vec![line(0, 2), line(1, 3)];
    let after = vec![line(0, 1), line(1, 4), line(2, 1)];
    for cut in [0, 1] {
        cut_update(
            "both shards",
            Some(before.clone()),
            after.clone(),
            Some(cut),
        )
        .await;
    }
}

/// The update takes every line off shard 1: shard 1 keeps a tombstone carrying its
/// previous part, so that recovery can put it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_empties_a_shard_cut_on_either_comes_back_as_the_previous_cart() {
    let before = vec![line(0, 2), line(1, 3)];
    let after = vec![line(0, 5)];
    for cut in [0, 1] {
        cut_update(
            "empties shard 1",
            Some(before.clone()),
            after.clone(),
            Some(cut),
        )
        .await;
    }
}

/// The update moves the cart from shard 0 to shard 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_moves_the_cart_cut_on_either_comes_back_as_the_previous_cart() {
    let before = vec![line(0, 2)];
    let after = vec![line(1, 3)];
    for cut in [0, 1] {
        cut_update(
            "moves shards",
            Some(before.clone()),
            after.clone(),
            Some(cut),
        )
        .await;
    }
}

/// A new hold on two shards cut on one is absent after recovery (its previous version is
/// no hold), not RELEASED: a retry of the same Reserve then makes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cart_cut_between_shards_is_absent() {
    cut_update("new cart", None, vec![line(0, 2), line(1, 3)], Some(1)).await;
}

/// An update every shard logged survives as the new version (it was acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_logged_on_every_shard_survives_whole() {
    let before = vec![line(0, 2), line(1, 3)];
    cut_update(
        "empties shard 1, not cut",
        Some(before.clone()),
        vec![line(0, 5)],
        None,
    )
    .await;
    cut_update(
        "both shards, not cut",
        Some(before),
        vec![line(1, 1), line(2, 2)],
        None,
    )
    .await;
}

/// A cut update, then a restart with three shards: the version is settled in the two-shard
/// layout it was written in (its shard numbers are that layout's), then resharded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_update_comes_back_as_the_previous_cart_across_a_shard_count_change() {
    let before = vec![line(0, 2), line(1, 3)];
    let after = vec![line(0, 5)];
    let three: &[&str] = &["--shards", "3"];
    cut_update_then("to 3 shards", Some(before), after, Some(1), three).await;
}
