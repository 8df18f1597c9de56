//! Holds and orders as queryable things, through the engine's public API: listings over
//! several engines (as a router merges its shards' pages) in (time, ref) order with no
//! duplicate and no gap at any page size, the scan bound, expired holds listed at their
//! deadline before their timer runs, and orders' reserved / fulfilled / cancelled lines,
//! also after a snapshot and restore.

mod common;

use stockd_domain::limits::LIST_HOLDS_SCAN_MAX;
use stockd_domain::query::merge_pages;
use stockd_domain::{
    ChannelConfig, Engine, HoldFilter, HoldKey, HoldScan, HoldState, HoldTime, Millis, OrderLine,
    OrderState, ReserveRequest, Settings, StockCount,
};

const T0: Millis = 1_700_000_000_000;
const SECOND: Millis = 1_000;

fn engine() -> Engine {
    let mut e = Engine::new(Settings::default());
    for c in ["WEB", "SOCIAL"] {
        e.upsert_channel(ChannelConfig {
            channel_ref: c.into(),
            ..Default::default()
        })
        .unwrap();
    }
    for p in ["P1", "P2"] {
        let count = StockCount {
            product_ref: p.into(),
            location_ref: "DC1".into(),
            quantity: 1_000_000,
            as_of: T0,
        };
        e.set_stock(T0, &count).unwrap();
    }
    e
}

fn req(hold: &str, channel: &str, lines: &[(&str, i64)], ttl: u32) -> ReserveRequest {
    common::examples::dc1_hold(hold, channel, lines, Some(ttl))
}

fn reserve(e: &mut Engine, now: Millis, r: &ReserveRequest) {
    let all: Vec<u32> = (0..r.lines.len() as u32).collect();
    e.reserve(now, r, &all).unwrap();
}

fn filter(channel: Option<&str>, state: Option<HoldState>, time: HoldTime) -> HoldFilter {
    HoldFilter {
        channel_ref: channel.map(str::to_string),
        state,
        time,
        from: None,
        to: None,
    }
}

/// Every listed ref, page after page of `size`, merged over `engines` as a router does.
fn list_all(engines: &[Engine], now: Millis, f: &HoldFilter, size: usize) -> Vec<HoldKey> {
    let mut after = None;
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let scan = HoldScan {
            filter: f.clone(),
            after: after.clone(),
            limit: size,
        };
        let pages = engines.iter().map(|e| e.list_holds(now, &scan)).collect();
        let (holds, next) = merge_pages(pages, size);
        assert!(holds.len() <= size);
        out.extend(holds.into_iter().map(|h| h.key));
        match next {
            // The token round-trips through its text form.
            Some(key) => after = f.after(&f.token(&key)).unwrap(),
            None => return out,
        }
    }
    panic!("the listing did not end");
}

/// Holds on two engines, many created in the same millisecond: every page size lists
/// each once, ordered by (created_at, ref), the same as one big page.
#[test]
fn listings_over_two_engines_have_no_duplicate_and_no_gap_at_any_page_size() {
    let mut engines = [engine(), engine()];
    let mut expected = Vec::new();
    for i in 0..60 {
        let at = T0 + (i / 7) as Millis; // seven holds per millisecond
        let hold = format!("h{:03}", (i * 37) % 101);
        let channel = if i % 3 == 0 { "SOCIAL" } else { "WEB" };
        reserve(
            &mut engines[i % 2],
            at,
            &req(&hold, channel, &[("P1", 1)], 60),
        );
        if channel == "WEB" {
            expected.push(HoldKey { at, hold_ref: hold });
        }
    }
    expected.sort();
    let f = filter(Some("WEB"), Some(HoldState::Active), HoldTime::Created);
    for size in [1, 2, 3, 7, 40, 500] {
        assert_eq!(
            list_all(&engines, T0 + 1, &f, size),
            expected,
            "page size {size}"
        );
    }
    // A time window keeps its holds only.
    let mut windowed = f.clone();
    windowed.from = Some(T0 + 2);
    windowed.to = Some(T0 + 4);
    let inside: Vec<HoldKey> = expected
        .iter()
        .filter(|k| (T0 + 2..T0 + 4).contains(&k.at))
        .cloned()
        .collect();
    assert_eq!(list_all(&engines, T0 + 1, &windowed, 3), inside);
}

/// A page stops after `LIST_HOLDS_SCAN_MAX` entries: short (here empty) with a place to
/// resume, and the next pages find what lies beyond.
#[test]
fn a_page_stops_at_the_scan_bound_and_resumes_after_it() {
    let mut e = engine();
    let n = LIST_HOLDS_SCAN_MAX + 10;
    for i in 0..n {
        let at = T0 + (i / 100) as Millis;
        reserve(&mut e, at, &req(&format!("w{i}"), "WEB", &[("P1", 1)], 600));
    }
    let last = T0 + (n / 100) as Millis + 1;
    reserve(
        &mut e,
        last,
        &req("the-social-one", "SOCIAL", &[("P2", 1)], 600),
    );
    let f = filter(Some("SOCIAL"), None, HoldTime::Created);
    let scan = HoldScan {
        filter: f.clone(),
        after: None,
        limit: 10,
    };
    let first = e.list_holds(last, &scan);
    assert!(first.holds.is_empty());
    let resume = first.complete_to.expect("stopped at the scan bound");
    assert!(resume.at < last);
    let refs: Vec<String> = list_all(&[e], last, &f, 10)
        .into_iter()
        .map(|k| k.hold_ref)
        .collect();
    assert_eq!(refs, vec!["the-social-one".to_string()]);
}

/// An active hold past its deadline is listed as EXPIRED, ended at its deadline, before
/// its timer runs; after the timer it is at the same place. Confirmed and released holds
/// end when they were confirmed or released; a filter on state sees each once.
#[test]
fn ended_holds_are_listed_at_their_end_and_expired_ones_at_their_deadline() {
    let mut e = engine();
    reserve(&mut e, T0, &req("gone", "SOCIAL", &[("P1", 1)], 10));
    reserve(&mut e, T0, &req("bought", "SOCIAL", &[("P1", 1)], 60));
    reserve(&mut e, T0, &req("dropped", "SOCIAL", &[("P2", 1)], 60));
    reserve(&mut e, T0, &req("open", "SOCIAL", &[("P2", 1)], 600));
    e.confirm(T0 + 3 * SECOND, "bought", "order-bought")
        .unwrap();
    e.release(T0 + 5 * SECOND, "dropped").unwrap();
    let deadline = T0 + 10 * SECOND;
    let ended = filter(Some("SOCIAL"), None, HoldTime::Ended);
    let now = deadline + 1; // the timer has not run
    let keys = |e: &Engine, f: &HoldFilter, now| -> Vec<(Millis, String)> {
        list_all(std::slice::from_ref(e), now, f, 2)
            .into_iter()
            .map(|k| (k.at, k.hold_ref))
            .collect()
    };
    let expected = vec![
        (T0 + 3 * SECOND, "bought".to_string()),
        (T0 + 5 * SECOND, "dropped".to_string()),
        (deadline, "gone".to_string()),
    ];
    assert_eq!(keys(&e, &ended, now), expected);
    let scan = HoldScan {
        filter: filter(None, Some(HoldState::Expired), HoldTime::Ended),
        after: None,
        limit: 10,
    };
    let page = e.list_holds(now, &scan);
    assert_eq!(page.holds.len(), 1);
    assert_eq!(page.holds[0].hold.state, HoldState::Expired);
    assert_eq!(page.holds[0].hold.ended_at, Some(deadline));
    e.expire_due(deadline + 300);
    assert_eq!(
        keys(&e, &ended, deadline + 300),
        expected,
        "same after the timer"
    );
    e.check_consistency().unwrap();
    let active = filter(None, Some(HoldState::Active), HoldTime::Created);
    assert_eq!(keys(&e, &active, now), vec![(T0, "open".to_string())]);
    assert!(ended.validate().is_ok());
    let mut bad = ended.clone();
    bad.state = Some(HoldState::Active);
    assert!(bad.validate().is_err(), "ACTIVE holds have not ended");
}

/// An order's lines say what is reserved, fulfilled and cancelled, through a partial
/// fulfilment and a cancel, and after a snapshot and restore; the hold's view says the
/// order's state.
#[test]
fn an_order_shows_reserved_fulfilled_and_cancelled_and_keeps_them_across_a_restore() {
    let mut e = engine();
    reserve(
        &mut e,
        T0,
        &req("cart", "WEB", &[("P1", 3), ("P2", 2)], 600),
    );
    e.confirm(T0, "cart", "order").unwrap();
    let state = |e: &Engine| e.order("order").unwrap().state();
    assert_eq!(state(&e), OrderState::Open);
    let one = OrderLine {
        index: 0,
        product_ref: "P1".into(),
        location_ref: "DC1".into(),
        quantity: 2,
    };
    e.fulfil(T0 + SECOND, "order", Some(&[one]), false).unwrap();
    assert_eq!(state(&e), OrderState::PartiallyFulfilled);
    e.cancel_order(T0 + 2 * SECOND, "order").unwrap();
    let lines = |e: &Engine| -> Vec<(String, i64, i64, i64, i64)> {
        let mut l: Vec<_> = e
            .order("order")
            .unwrap()
            .lines
            .into_iter()
            .map(|l| {
                (
                    l.product_ref,
                    l.quantity,
                    l.reserved,
                    l.fulfilled,
                    l.cancelled,
                )
            })
            .collect();
        l.sort();
        l
    };
    let expected = vec![("P1".into(), 3, 0, 2, 1), ("P2".into(), 2, 0, 0, 2)];
    assert_eq!(lines(&e), expected);
    assert_eq!(state(&e), OrderState::Cancelled);
    // A second cancel and a fulfilment after the cancel change nothing.
    assert_eq!(
        e.cancel_order(T0 + 3 * SECOND, "order").unwrap(),
        Some(vec![])
    );
    assert_eq!(
        e.fulfil(T0 + 3 * SECOND, "order", None, false).unwrap(),
        Some(vec![])
    );
    assert_eq!(lines(&e), expected);
    let hold = e.hold(T0 + 3 * SECOND, "cart").unwrap();
    assert_eq!(hold.open, 0, "nothing is reserved");
    assert_eq!(hold.order_state(), Some(OrderState::Cancelled));
    e.check_consistency().unwrap();
    let restored = Engine::restore(Settings::default(), e.snapshot()).unwrap();
    assert_eq!(lines(&restored), expected);
    restored.check_consistency().unwrap();
    assert!(e.order("no-such-order").is_none());
}
