//! Cart versions through the engine's API (issue #12, reproduction 6): a reserve tagged
//! with several shards keeps, on each, the part it replaced (a shard it leaves without a
//! line keeps a tombstone), through a snapshot too, until the update is settled; settling
//! it as incomplete puts the previous part back, whole; a confirm or release drops the
//! record. And an order ref that confirms a hold on an engine refuses another hold's
//! confirm there even when that hold has no part on it.

mod common;

use stockd_domain::{Engine, Error, HoldState, Millis, ReserveRequest, StockCount, UpdateTag};

const T0: Millis = 1_700_000_000_000;

/// One engine of a two-shard world: A and B stocked with 10 each (routing is the caller's).
fn engine() -> Engine {
    let mut e = common::examples::web_engine();
    for p in ["A", "B"] {
        let count = StockCount {
            product_ref: p.into(),
            location_ref: "DC1".into(),
            quantity: 10,
            as_of: T0,
        };
        e.set_stock(T0, &count).unwrap();
    }
    e
}

fn req(lines: &[(&str, i64)]) -> ReserveRequest {
    common::examples::dc1_hold("h", "WEB", lines, Some(600))
}

fn tag(version: u64, lines: [bool; 2]) -> UpdateTag {
    UpdateTag {
        version,
        participants: vec![(0, lines[0]), (1, lines[1])],
        settled_below: 0,
    }
}

fn ats(e: &Engine, product: &str) -> i64 {
    e.availability("WEB", product, "DC1").unwrap()
}

fn lines_of(e: &Engine) -> Vec<(String, i64)> {
    let h = e.hold(T0, "h").expect("a part");
    h.lines
        .into_iter()
        .map(|l| (l.product_ref, l.quantity))
        .collect()
}

/// Shard 0 owns A, shard 1 owns B: version 1 is A:2 + B:3, version 2 is A:5 only, so
/// shard 1 keeps a tombstone.
fn two_versions() -> (Engine, Engine) {
    let (mut e0, mut e1) = (engine(), engine());
    let v1 = req(&[("A", 2), ("B", 3)]);
    e0.reserve_tagged(T0, &v1, &[0], false, &tag(1, [true, true]))
        .unwrap();
    e1.reserve_tagged(T0, &v1, &[1], false, &tag(1, [true, true]))
        .unwrap();
    let v2 = req(&[("A", 5)]);
    e0.reserve_tagged(T0 + 1, &v2, &[0], false, &tag(2, [true, false]))
        .unwrap();
    e1.reserve_tagged(T0 + 1, &v2, &[], false, &tag(2, [true, false]))
        .unwrap();
    (e0, e1)
}

#[test]
fn a_tombstone_holds_nothing_and_reads_as_no_part() {
    let (e0, e1) = two_versions();
    assert_eq!(lines_of(&e0), vec![("A".to_string(), 5)]);
    assert_eq!(e1.hold(T0 + 1, "h"), None, "a tombstone is no part");
    assert_eq!(
        e1.part_refs().count(),
        0,
        "nor a part a router must know of"
    );
    assert_eq!((ats(&e0, "A"), ats(&e1, "B")), (5, 10));
    assert_eq!(e1.hold_record("h"), Some((2, true)));
    for e in [&e0, &e1] {
        let pending = e.pending_updates();
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].version, pending[0].participants.len()), (2, 2));
        e.check_consistency().unwrap();
    }
}

#[test]
fn an_incomplete_version_puts_the_previous_part_back_after_a_snapshot() {
    let (e0, e1) = two_versions();
    let settings = e0.settings().clone();
    let mut e0 = Engine::restore(settings.clone(), e0.snapshot()).unwrap();
    let mut e1 = Engine::restore(settings, e1.snapshot()).unwrap();
    assert_eq!(
        e1.pending_updates().len(),
        1,
        "the record is in the snapshot"
    );
    assert!(e0.resolve_update(T0 + 2, "h", 2, false));
    assert!(e1.resolve_update(T0 + 2, "h", 2, false));
    assert_eq!(lines_of(&e0), vec![("A".to_string(), 2)]);
    assert_eq!(lines_of(&e1), vec![("B".to_string(), 3)]);
    assert_eq!((ats(&e0, "A"), ats(&e1, "B")), (8, 7));
    for e in [&e0, &e1] {
        assert_eq!(e.hold(T0 + 2, "h").unwrap().state, HoldState::Active);
        assert_eq!(e.hold_record("h"), Some((1, false)));
        assert!(e.pending_updates().is_empty());
        e.check_consistency().unwrap();
    }
    assert!(!e0.resolve_update(T0 + 3, "h", 2, false), "settled once");
}

#[test]
fn a_complete_version_keeps_the_new_cart_and_drops_the_record() {
    let (mut e0, mut e1) = two_versions();
    assert!(e0.resolve_update(T0 + 2, "h", 2, true));
    assert!(e1.resolve_update(T0 + 2, "h", 2, true));
    assert_eq!(lines_of(&e0), vec![("A".to_string(), 5)]);
    assert_eq!(e1.hold(T0 + 2, "h"), None);
    assert_eq!(
        e1.hold_record("h"),
        Some((2, true)),
        "the version stays known"
    );
    assert!(e0.pending_updates().is_empty() && e1.pending_updates().is_empty());
}

#[test]
fn a_confirm_or_a_release_drops_the_record() {
    let (mut e0, _) = two_versions();
    let mut released = e0.clone();
    e0.confirm(T0 + 2, "h", "o").unwrap();
    assert!(e0.pending_updates().is_empty());
    assert_eq!(e0.hold_record("h"), Some((2, false)));
    released.release(T0 + 2, "h").unwrap();
    assert!(released.pending_updates().is_empty());
}

#[test]
fn a_new_cart_settled_as_incomplete_is_absent() {
    let mut e0 = engine();
    let r = req(&[("A", 2), ("B", 3)]);
    e0.reserve_tagged(T0, &r, &[0], false, &tag(7, [true, true]))
        .unwrap();
    assert_eq!(ats(&e0, "A"), 8);
    assert!(e0.resolve_update(T0 + 1, "h", 7, false));
    assert_eq!(e0.hold(T0 + 1, "h"), None, "absent, not released");
    assert_eq!(ats(&e0, "A"), 10);
}

#[test]
fn an_order_ref_of_another_hold_is_refused_where_the_hold_has_no_part() {
    let mut e = engine();
    let r = common::examples::dc1_hold("x", "WEB", &[("A", 1)], Some(600));
    e.reserve(T0, &r, &[0]).unwrap();
    e.confirm(T0, "x", "o").unwrap();
    assert_eq!(
        e.confirm(T0, "y", "o"),
        Err(Error::OrderConflict {
            order_ref: "o".into(),
            hold_ref: "x".into()
        })
    );
    assert_eq!(
        e.confirm(T0, "y", "other"),
        Ok(None),
        "no part, no conflict"
    );
}

/// A later tagged reserve carries the router's watermark: every version below it answered
/// on all its shards, so an engine that logs the reserve drops its records of them (and
/// keeps the versions). A reserve that changes nothing drops nothing: it is not logged.
#[test]
fn a_watermark_in_a_later_reserve_drops_the_records_below_it() {
    let (_, mut e1) = two_versions();
    let other = common::examples::dc1_hold("g", "WEB", &[("B", 1)], Some(600));
    let mut watermark = UpdateTag {
        version: 3,
        participants: vec![(1, true)],
        settled_below: 2,
    };
    e1.reserve_tagged(T0 + 2, &other, &[0], false, &watermark)
        .unwrap();
    assert_eq!(e1.pending_updates().len(), 1, "version 2 is not below 2");
    // The same request again changes nothing (and is not logged): no record is dropped.
    watermark.settled_below = 4;
    e1.reserve_tagged(T0 + 3, &other, &[0], false, &watermark)
        .unwrap();
    assert_eq!(e1.pending_updates().len(), 1);
    let update = common::examples::dc1_hold("g", "WEB", &[("B", 2)], Some(600));
    watermark.version = 4;
    e1.reserve_tagged(T0 + 3, &update, &[0], false, &watermark)
        .unwrap();
    assert!(e1.pending_updates().is_empty(), "version 2 < 4 is settled");
    assert_eq!(e1.hold_record("h"), Some((2, true)));
    e1.check_consistency().unwrap();
}
