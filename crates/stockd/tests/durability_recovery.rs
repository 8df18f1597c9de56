//! Recovery of the real `stockd` binary from what a crash or a bad disk leaves: holds that
//! expired while it was down, a torn record at a log's tail (dropped and reported), a
//! damaged record in the middle (refusal to start, naming it), and a change cut between
//! two shards' logs (whole or absent after the restart).

mod common;

use std::time::Duration;

use stockd::proto::inventory::v1 as pb;
use stockd_domain::Command;

use common::calls::{
    availability, cancel_ok, confirm_ok, fulfil_ok, get_hold, get_position, hold_lines, release_ok,
    reserve_ok,
};
use common::fixtures::{
    Channels, LOC, TestFolder, WEB, hold_mix, products_on_every_shard, start_seeded,
};
use common::requests::keys_at;
use common::server::{ServerProcess, fail};
use common::store::{
    append_garbage_frame, drop_last_log_record, flip_byte, generation, log_frames, shard_log,
};
use common::visible::{Visible, assert_same, visible};

/// The extra arguments of every server here: two shards.
const TWO_SHARDS: &[&str] = &["--shards", "2"];

// =====================================================================================
// Expiry while down
// =====================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_expiring_while_down_are_expired_after_restart() {
    let folder = TestFolder::new();
    let products = products_on_every_shard("E", LOC, 2, 1);
    let keys = keys_at(&products, LOC);
    let (mut server, _admin, mut inv) =
        start_seeded(&folder, TWO_SHARDS, Channels::PlainWeb, &keys, |_| 10).await;
    let line = |i: usize, q: i64| (products[i].clone(), LOC.to_string(), q);
    reserve_ok(&mut inv, "short-2-lines", WEB, &[line(0, 3), line(1, 4)], 2).await;
    reserve_ok(&mut inv, "short-1-line", WEB, &[line(1, 2)], 2).await;
    reserve_ok(&mut inv, "long", WEB, &[line(0, 1)], 3600).await;
    assert_eq!(availability(&mut inv, WEB, &keys).await, vec![6, 4]);
    server.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut server = folder.start(TWO_SHARDS).await;
    for round in ["after the restart", "after a second restart"] {
        let mut inv = server.inventory();
        let mut admin = server.admin();
        for (r, want) in [
            ("short-2-lines", pb::HoldState::Expired),
            ("short-1-line", pb::HoldState::Expired),
            ("long", pb::HoldState::Active),
        ] {
            let h = get_hold(&mut inv, r).await.expect("GetHold");
            let state = h.as_ref().map(|h| h.state);
            if state != Some(want as i32) {
                fail(
                    &server.log(),
                    format!("{round}: {r} is {h:?}, expected {want:?}"),
                );
            }
        }
        let ats = availability(&mut inv, WEB, &keys).await;
        if ats != vec![9, 10] {
            fail(
                &server.log(),
                format!("{round}: ATS {ats:?}, expected [9, 10]: expired stock is sellable"),
            );
        }
        for (p, l) in &keys {
            let pos = get_position(&mut admin, p, l, true).await.unwrap().unwrap();
            let soft: Vec<_> = pos
                .quantities
                .iter()
                .filter(|q| q.r#type == pb::QuantityType::SoftReserve as i32)
                .filter(|q| q.status == pb::QuantityStatus::Active as i32)
                .map(|q| q.hold_ref.clone())
                .collect();
            let want: Vec<String> = if p == &products[0] {
                vec!["long".into()]
            } else {
                vec![]
            };
            if soft != want {
                fail(
                    &server.log(),
                    format!("{round}: {p} active holds {soft:?}, expected {want:?}"),
                );
            }
        }
        // The stock is sellable: a new hold can take it.
        if round == "after the restart" {
            reserve_ok(&mut inv, "after-expiry", WEB, &[line(1, 10)], 3600).await;
            release_ok(&mut inv, "after-expiry").await;
            drop((inv, admin));
            let status = server.terminate().await;
            assert!(status.success(), "SIGTERM: exit {status}\n{}", server.log());
            server = folder.start(TWO_SHARDS).await;
        }
    }
}

// =====================================================================================
// Damaged records
// =====================================================================================

/// A server with acknowledged changes on every shard, stopped with SIGKILL.
async fn damaged_setup(folder: &TestFolder) -> (Vec<(String, String)>, Vec<String>, Visible) {
    let products = products_on_every_shard("D", LOC, 2, 3);
    let keys = keys_at(&products, LOC);
    let (mut server, _admin, mut inv) =
        start_seeded(folder, TWO_SHARDS, Channels::Standard, &keys, |_| 30).await;
    let holds = hold_mix(&mut inv, &products, "dmg").await;
    let before = visible(&server, &keys, &holds).await;
    server.kill();
    (keys, holds, before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_tail_record_is_dropped_and_nothing_acknowledged_is_lost() {
    let folder = TestFolder::new();
    let data = &folder.data;
    let (keys, holds, before) = damaged_setup(&folder).await;

    // A torn write: a frame after the last one of shard 1, with a bad checksum.
    let (torn_file, torn_offset) = append_garbage_frame(data, generation(data), 1);

    let shard_log = shard_log(data, 1);
    let mut server = folder.start(TWO_SHARDS).await;
    let log = server.log();
    let torn_file = torn_file.display().to_string();
    let reported = log.lines().any(|l| {
        l.contains(&torn_file)
            && l.contains(&format!("offset {torn_offset}"))
            && l.contains(&format!("log {shard_log}"))
            && l.contains("dropped")
    });
    if !reported {
        fail(
            &log,
            format!(
                "the dropped tail (log {shard_log}, {torn_file} at offset {torn_offset}) is not reported in the log"
            ),
        );
    }
    let after = visible(&server, &keys, &holds).await;
    assert_same(&before, &after, "after dropping a torn tail record", &log);

    // The log goes on: a new change after the dropped record survives another crash.
    let mut inv = server.inventory();
    let line = |i: usize| (keys[i].0.clone(), LOC.to_string(), 1);
    reserve_ok(
        &mut inv,
        "after-torn",
        WEB,
        &[line(0), line(1), line(2)],
        3600,
    )
    .await;
    server.kill();
    let server = folder.start(TWO_SHARDS).await;
    let mut inv = server.inventory();
    let h = get_hold(&mut inv, "after-torn").await.unwrap();
    if h.as_ref().map(|h| (h.state, h.lines.len())) != Some((pb::HoldState::Active as i32, 3)) {
        fail(
            &server.log(),
            format!("the hold placed after the torn record is {h:?}"),
        );
    }
    if server.log().contains("never acknowledged") {
        fail(
            &server.log(),
            "a second start reports a dropped record again",
        );
    }
    let again = visible(&server, &keys, &holds).await;
    // Only the new hold changed positions; the old holds are as they were.
    assert_eq!(before.holds, again.holds, "holds after the second restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_middle_record_refuses_to_start_and_names_the_record() {
    let folder = TestFolder::new();
    let data = &folder.data;
    let (keys, holds, before) = damaged_setup(&folder).await;

    // A flipped payload byte of a frame in the middle of log 0 (shard 0's).
    let damaged = {
        let frames = log_frames(data, generation(data), 0);
        assert!(frames.len() >= 3, "log 0 needs a few records: {frames:?}");
        let frame = frames[frames.len() / 2].clone();
        flip_byte(&frame.file, frame.offset + 24, 0x5a);
        frame
    };

    let mut server = ServerProcess::spawn(data, folder.logs(), TWO_SHARDS);
    let status = server.wait_exit(Duration::from_secs(30)).await;
    let log = server.log();
    match status {
        Some(s) if !s.success() => {}
        Some(s) => fail(
            &log,
            format!("stockd exited with {s} on a damaged log; expected a failure"),
        ),
        None => fail(
            &log,
            "stockd kept running on a log damaged in the middle; it must refuse to start",
        ),
    }
    let file_shown = damaged.file.display().to_string();
    let named = log.lines().any(|l| {
        l.contains(&file_shown)
            && l.contains(&format!("offset {}", damaged.offset))
            && l.contains("log 0")
    });
    if !named {
        fail(
            &log,
            format!(
                "the error must name log 0's segment {file_shown} and offset {} (record {})",
                damaged.offset, damaged.lsn
            ),
        );
    }

    // Nothing was lost or rewritten: with the byte repaired, everything is back.
    flip_byte(&damaged.file, damaged.offset + 24, 0x5a);
    let server = folder.start(TWO_SHARDS).await;
    let after = visible(&server, &keys, &holds).await;
    assert_same(
        &before,
        &after,
        "after repairing the damaged record",
        &server.log(),
    );
}

// =====================================================================================
// A crash between the shards of one change (deterministic)
// =====================================================================================
//
// A change that spans shards (a multi-line reserve, confirm, release, fulfil or cancel)
// is written by each shard separately. A crash can make one shard's part durable and not
// the other's. These tests build exactly that state, without timing luck: do the change,
// SIGKILL, then remove the change's record from the end of shard 1's log (as if the crash
// came just before it was durable; the call was then never acknowledged). After the
// restart the change must be whole or absent on every shard (domain.md invariant 5).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Reserve,
    Confirm,
    Release,
    Fulfil,
    Cancel,
}

/// What one position shows of hold `h` / order `o`: (soft reserve, reserved, sold).
fn signature(pos: &pb::Position, stock: i64) -> (bool, bool, bool) {
    let active = |t: pb::QuantityType| {
        pos.quantities
            .iter()
            .any(|q| q.r#type == t as i32 && q.status == pb::QuantityStatus::Active as i32)
    };
    (
        active(pb::QuantityType::SoftReserve),
        active(pb::QuantityType::Reserved),
        pos.physical < stock,
    )
}

async fn torn_between_shards(op: Op) {
    let folder = TestFolder::new();
    let products = products_on_every_shard("T", LOC, 2, 1);
    let keys = keys_at(&products, LOC);
    let mut lines = vec![
        (products[0].clone(), LOC.to_string(), 2),
        (products[1].clone(), LOC.to_string(), 3),
    ];
    lines.sort();
    const STOCK: i64 = 10;

    let (mut server, admin, mut inv) =
        start_seeded(&folder, TWO_SHARDS, Channels::PlainWeb, &keys, |_| STOCK).await;
    if op != Op::Reserve {
        reserve_ok(&mut inv, "h", WEB, &lines, 3600).await;
    }
    if matches!(op, Op::Fulfil | Op::Cancel) {
        confirm_ok(&mut inv, "h", "o").await;
    }
    match op {
        Op::Reserve => drop(reserve_ok(&mut inv, "h", WEB, &lines, 3600).await),
        Op::Confirm => confirm_ok(&mut inv, "h", "o").await,
        Op::Release => release_ok(&mut inv, "h").await,
        Op::Fulfil => fulfil_ok(&mut inv, "o", &[]).await,
        Op::Cancel => cancel_ok(&mut inv, "o").await,
    }
    drop((admin, inv));
    server.kill();
    {
        let data = &folder.data;
        drop_last_log_record(data, generation(data), 1, |c| match op {
            Op::Reserve => matches!(c, Command::ReserveTagged { .. }),
            Op::Confirm => matches!(c, Command::Confirm { .. }),
            Op::Release => matches!(c, Command::Release { .. }),
            Op::Fulfil => matches!(c, Command::Fulfil { .. }),
            Op::Cancel => matches!(c, Command::CancelOrder { .. }),
        });
    }

    let mut first: Option<Visible> = None;
    for round in ["after the restart", "after a second restart"] {
        let mut server = folder.start(TWO_SHARDS).await;
        let seen = visible(&server, &keys, &["h".to_string()]).await;
        let sig: Vec<(bool, bool, bool)> = keys
            .iter()
            .map(|k| signature(seen.positions[k].as_ref().expect("position"), STOCK))
            .collect();
        let hold = seen.holds["h"].clone();
        let state = hold
            .as_ref()
            .map(|h| pb::HoldState::try_from(h.state).unwrap());
        let whole = sig[0] == sig[1];
        let consistent = match state {
            None | Some(pb::HoldState::Released) | Some(pb::HoldState::Expired) => {
                !sig[0].0 && !sig[0].1 && !sig[1].0 && !sig[1].1
            }
            Some(pb::HoldState::Active) => sig[0].0 && sig[1].0,
            Some(pb::HoldState::Confirmed) => !sig[0].0 && !sig[1].0,
            Some(pb::HoldState::Unspecified) => false,
        };
        let lines_ok = match &hold {
            Some(h) if state != Some(pb::HoldState::Released) => hold_lines(h) == lines,
            _ => true,
        };
        if !whole || !consistent {
            fail(
                &server.log(),
                format!(
                    "{op:?} cut between shards, {round}: the change is half applied.\n  \
                     per position (soft reserve, reserved, sold): {sig:?}\n  hold: {hold:?}"
                ),
            );
        }
        if !lines_ok {
            fail(
                &server.log(),
                format!("{op:?} cut between shards, {round}: hold {hold:?}, lines {lines:?}"),
            );
        }
        match &first {
            None => first = Some(seen),
            Some(f) => assert_same(f, &seen, &format!("{op:?}: {round}"), &server.log()),
        }
        let status = server.terminate().await;
        assert!(status.success(), "SIGTERM: {status}\n{}", server.log());
    }
}

/// A test of `torn_between_shards` for each change that spans shards.
macro_rules! cut_between_shards_tests {
    ($($name:ident: $op:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            torn_between_shards($op).await;
        }
    )*};
}

cut_between_shards_tests! {
    reserve_cut_between_shards_is_whole_or_absent: Op::Reserve;
    confirm_cut_between_shards_is_whole_or_absent: Op::Confirm;
    release_cut_between_shards_is_whole_or_absent: Op::Release;
    fulfil_cut_between_shards_is_whole_or_absent: Op::Fulfil;
    cancel_cut_between_shards_is_whole_or_absent: Op::Cancel;
}
