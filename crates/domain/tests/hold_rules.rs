//! The hold rules of issue #12 through the engine's API: a finished or due hold refuses a
//! reserve under its ref and changes nothing, a reacquire makes an ended hold again, a
//! cart update that leaves a shard no line drops that shard's part (and its undo puts it
//! back), and a confirm's targets and rollback are decided from the parts.

mod common;

use stockd_domain::outcome::{confirm_rollback, confirm_targets};
use stockd_domain::{
    Engine, Error, HoldState, HoldView, LineView, Millis, ReserveKind, ReserveRequest, Settings,
    StockCount,
};

const T0: Millis = 1_700_000_000_000;
const SECOND: Millis = 1_000;

fn engine() -> Engine {
    let mut e = common::examples::web_engine();
    for p in ["A", "B"] {
        e.set_stock(
            T0,
            &StockCount {
                product_ref: p.into(),
                location_ref: "DC1".into(),
                quantity: 10,
                as_of: T0,
            },
        )
        .unwrap();
    }
    e
}

fn req(hold: &str, lines: &[(&str, i64)], ttl: u32) -> ReserveRequest {
    common::examples::dc1_hold(hold, "WEB", lines, Some(ttl))
}

fn all(r: &ReserveRequest) -> Vec<u32> {
    (0..r.lines.len() as u32).collect()
}

fn ats(e: &Engine, product: &str) -> i64 {
    e.availability("WEB", product, "DC1").unwrap()
}

#[test]
fn a_reserve_over_a_released_hold_is_refused_while_retained() {
    let mut e = engine();
    let r = req("h2", &[("A", 2)], 60);
    e.reserve(T0, &r, &all(&r)).unwrap();
    e.release(T0, "h2").unwrap();
    assert_eq!(
        e.reserve(T0 + 1, &r, &all(&r)),
        Err(Error::HoldReleased("h2".into()))
    );
    assert_eq!(ats(&e, "A"), 10);
    assert_eq!(e.hold(T0 + 1, "h2").unwrap().state, HoldState::Released);
    // After retention the hold is forgotten and the ref is free again.
    let later = T0 + Settings::default().hold_retention_ms + SECOND;
    e.expire_due(later);
    assert!(e.hold(later, "h2").is_none());
    let part = e.reserve(later, &r, &all(&r)).unwrap();
    assert_eq!(part.kind, ReserveKind::Created);
    assert_eq!(ats(&e, "A"), 8);
}

#[test]
fn a_reserve_over_a_confirmed_hold_is_refused() {
    let mut e = engine();
    let r = req("h", &[("A", 2)], 60);
    e.reserve(T0, &r, &all(&r)).unwrap();
    e.confirm(T0, "h", "o").unwrap();
    let got = e.reserve(T0, &r, &all(&r));
    assert!(matches!(got, Err(Error::HoldConfirmed { .. })), "{got:?}");
}

#[test]
fn a_cart_update_after_the_deadline_is_refused_and_changes_nothing() {
    let mut e = engine();
    let r = req("h3", &[("A", 2)], 1);
    e.reserve(T0, &r, &all(&r)).unwrap();
    let late = T0 + SECOND + 100;
    let update = req("h3", &[("A", 3)], 1);
    assert_eq!(
        e.reserve(late, &update, &all(&update)),
        Err(Error::HoldExpired("h3".into()))
    );
    // The resend of the same cart is refused too.
    assert_eq!(
        e.reserve(late, &r, &all(&r)),
        Err(Error::HoldExpired("h3".into()))
    );
    // Nothing changed: the timer has not run, so the units are still in the ledger.
    assert_eq!(ats(&e, "A"), 8);
    e.expire_due(late);
    assert_eq!(ats(&e, "A"), 10);
    assert_eq!(e.hold(late, "h3").unwrap().state, HoldState::Expired);
}

#[test]
fn an_update_just_before_the_deadline_still_applies() {
    let mut e = engine();
    let r = req("h", &[("A", 2)], 1);
    e.reserve(T0, &r, &all(&r)).unwrap();
    let update = req("h", &[("A", 3)], 1);
    let part = e.reserve(T0 + SECOND - 1, &update, &all(&update)).unwrap();
    assert_eq!(part.kind, ReserveKind::Updated);
    assert_eq!(ats(&e, "A"), 7);
}

#[test]
fn a_reacquire_makes_an_ended_hold_again_and_its_undo_restores_it() {
    let mut e = engine();
    let r = req("h", &[("A", 2)], 1);
    e.reserve(T0, &r, &all(&r)).unwrap();
    e.expire_due(T0 + 2 * SECOND);
    let now = T0 + 2 * SECOND;
    let part = e.reacquire(now, &r, &all(&r)).unwrap();
    assert_eq!(part.kind, ReserveKind::Created);
    assert_eq!(e.hold(now, "h").unwrap().state, HoldState::Active);
    assert_eq!(ats(&e, "A"), 8);
    e.undo_reserve(now, part.undo.as_ref().expect("an undo"));
    assert_eq!(e.hold(now, "h").unwrap().state, HoldState::Expired);
    assert_eq!(ats(&e, "A"), 10);
}

#[test]
fn an_update_that_leaves_a_shard_no_line_drops_its_part() {
    let mut e = engine();
    // This engine owns A (line 0) but not B (line 1): it answers for line 0 only.
    let first = req("h", &[("A", 2), ("B", 1)], 60);
    e.reserve(T0, &first, &[0]).unwrap();
    let moved = req("h", &[("B", 3)], 60);
    let part = e.reserve(T0, &moved, &[]).unwrap();
    assert_eq!(part.kind, ReserveKind::Updated);
    assert!(e.hold(T0, "h").is_none(), "an empty part is dropped");
    assert_eq!(ats(&e, "A"), 10);
    // Every event is drained (the ref is released), and the undo still puts it back.
    let _ = e.drain_events().count();
    let _ = e.drain_events().count();
    e.undo_reserve(T0, part.undo.as_ref().expect("an undo"));
    let back = e.hold(T0, "h").expect("the part is back");
    assert_eq!(back.state, HoldState::Active);
    assert_eq!(back.lines.len(), 1);
    assert_eq!(ats(&e, "A"), 8);
}

fn view(state: HoldState, lines: usize, primary: bool) -> HoldView {
    HoldView {
        hold_ref: "h".into(),
        channel_ref: "WEB".into(),
        state,
        lines: (0..lines)
            .map(|i| LineView {
                product_ref: format!("P{i}"),
                location_ref: "DC1".into(),
                quantity: 1,
            })
            .collect(),
        created_at: T0,
        expires_at: T0 + 60 * SECOND,
        order_ref: None,
        digest: 7,
        total_lines: 2,
        answered_lines: lines as u32,
        primary,
        last_fulfil: None,
        cancelled: false,
        open: 0,
        version: 1,
        ended_at: None,
    }
}

#[test]
fn a_confirm_targets_active_parts_and_refuses_an_ended_part_with_lines() {
    let active = view(HoldState::Active, 1, true);
    let empty_ended = view(HoldState::Released, 0, false);
    assert_eq!(
        confirm_targets("h", &[(0, active.clone()), (2, empty_ended)]),
        Ok(vec![0])
    );
    let ended = view(HoldState::Released, 1, false);
    assert_eq!(
        confirm_targets("h", &[(0, active.clone()), (1, ended)]),
        Err(Error::HoldReleased("h".into()))
    );
    let expired = view(HoldState::Expired, 1, false);
    assert_eq!(
        confirm_targets("h", &[(1, expired), (0, active)]),
        Err(Error::HoldExpired("h".into()))
    );
}

#[test]
fn a_confirm_rollback_puts_the_active_part_back() {
    let mut e = engine();
    let r = req("h", &[("A", 2)], 60);
    e.reserve(T0, &r, &all(&r)).unwrap();
    let before = e.hold(T0, "h").unwrap();
    e.confirm(T0, "h", "o").unwrap();
    assert_eq!(e.hold(T0, "h").unwrap().state, HoldState::Confirmed);
    e.undo_reserve(T0, &confirm_rollback(&before));
    assert_eq!(e.hold(T0, "h").unwrap(), before);
    assert_eq!(e.position("A", "DC1", false).unwrap().on_hand, 8);
    // The order ref is free again: the hold confirms under it once more.
    assert_eq!(e.confirm(T0, "h", "o"), Ok(Some(HoldState::Confirmed)));
}
