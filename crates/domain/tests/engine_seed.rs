//! The seed examples of domain.md and the engine issue, through the engine's public API.

mod common;

use stockd_domain::{
    Adjustment, AdjustmentKind, ChannelConfig, CountStatus, Engine, Error, HoldState, Millis,
    ReserveKind, ReserveRequest, Settings, StockCount,
};

const MIN: Millis = 60_000;
const T0: Millis = 1_700_000_000_000;

fn engine_with(channels: &[(&str, u32, u32)]) -> Engine {
    let mut e = Engine::new(Settings::default());
    for (name, allocation_bps, buffer_bps) in channels {
        e.upsert_channel(ChannelConfig {
            channel_ref: name.to_string(),
            allocation_bps: *allocation_bps,
            buffer_bps: *buffer_bps,
            ..Default::default()
        })
        .unwrap();
    }
    e
}

fn count(e: &mut Engine, now: Millis, product: &str, qty: i64, as_of: Millis) -> CountStatus {
    e.set_stock(
        now,
        &StockCount {
            product_ref: product.into(),
            location_ref: "DC1".into(),
            quantity: qty,
            as_of,
        },
    )
    .unwrap()
}

fn req(hold: &str, channel: &str, lines: &[(&str, i64)]) -> ReserveRequest {
    common::examples::dc1_hold(hold, channel, lines, None)
}

fn reserve(e: &mut Engine, now: Millis, r: &ReserveRequest) -> ReserveKind {
    let all: Vec<u32> = (0..r.lines.len() as u32).collect();
    e.reserve(now, r, &all).unwrap().kind
}

fn ats(e: &Engine, channel: &str, product: &str) -> i64 {
    e.availability(channel, product, "DC1").unwrap()
}

fn on_hand(e: &Engine, product: &str) -> i64 {
    e.position(product, "DC1", false).unwrap().on_hand
}

/// LAST_ON_HAND 50, a hold of 2 and an order of 3: physical 50, on_hand 45, ECOMMERCE
/// (10% buffer) 40. A cart of 2 gives 43 / 38; confirming it leaves 43 / 38.
#[test]
fn seed_ip_45_vp_40_then_cart_of_2_then_confirm() {
    let mut e = engine_with(&[("ECOMMERCE", 10_000, 1_000)]);
    count(&mut e, T0, "SKU", 50, T0);
    reserve(&mut e, T0, &req("FO_1234", "ECOMMERCE", &[("SKU", 2)]));
    reserve(&mut e, T0, &req("H_ORDER", "ECOMMERCE", &[("SKU", 3)]));
    e.confirm(T0, "H_ORDER", "FUL_456").unwrap();
    let pos = e.position("SKU", "DC1", true).unwrap();
    assert_eq!((pos.physical, pos.on_hand), (50, 45));
    assert_eq!(ats(&e, "ECOMMERCE", "SKU"), 40);

    assert_eq!(
        reserve(&mut e, T0, &req("cart-1", "ECOMMERCE", &[("SKU", 2)])),
        ReserveKind::Created
    );
    assert_eq!((on_hand(&e, "SKU"), ats(&e, "ECOMMERCE", "SKU")), (43, 38));
    e.confirm(T0 + MIN, "cart-1", "order-1").unwrap();
    assert_eq!((on_hand(&e, "SKU"), ats(&e, "ECOMMERCE", "SKU")), (43, 38));
}

/// Three buyers race for the last 3 units: all hold, one confirms within a minute, two
/// expire after 15 minutes; nothing is oversold and the two units are sellable again.
#[test]
fn seed_race_for_the_last_three_units() {
    let mut e = engine_with(&[("WEB", 10_000, 0)]);
    count(&mut e, T0, "SKU", 3, T0);
    for buyer in ["a", "b", "c"] {
        assert_eq!(
            reserve(&mut e, T0, &req(buyer, "WEB", &[("SKU", 1)])),
            ReserveKind::Created
        );
    }
    assert_eq!(
        reserve(&mut e, T0, &req("d", "WEB", &[("SKU", 1)])),
        ReserveKind::Rejected
    );
    assert_eq!(ats(&e, "WEB", "SKU"), 0);
    e.confirm(T0 + MIN, "a", "order-a").unwrap();
    assert_eq!(e.expire_due(T0 + 15 * MIN - 1), 0);
    assert_eq!(e.expire_due(T0 + 15 * MIN), 2);
    assert_eq!(
        e.hold(T0 + 15 * MIN, "b").unwrap().state,
        HoldState::Expired
    );
    assert_eq!(ats(&e, "WEB", "SKU"), 2);
    assert_eq!(on_hand(&e, "SKU"), 2);
    assert_eq!(
        e.confirm(T0 + 16 * MIN, "b", "order-b"),
        Err(Error::HoldExpired("b".into()))
    );
    e.check_consistency().unwrap();
}

/// 30 units with a 10% buffer: ceil(3.0) = 3, not 4 as 30 × 0.1 in floating point would give.
#[test]
fn float_trap_30_units_10_percent_buffer_gives_27() {
    let mut e = engine_with(&[("WEB", 10_000, 1_000)]);
    count(&mut e, T0, "SKU", 30, T0);
    assert_eq!(ats(&e, "WEB", "SKU"), 27);
}

/// WEB 70% and SOCIAL 30% of 100 units ring-fence the stock; a count of 200 rebalances.
#[test]
fn ring_fence_and_rebalance_after_count() {
    let mut e = engine_with(&[("WEB", 7_000, 0), ("SOCIAL", 3_000, 0)]);
    count(&mut e, T0, "SKU", 100, T0);
    assert_eq!(
        reserve(&mut e, T0, &req("s1", "SOCIAL", &[("SKU", 30)])),
        ReserveKind::Created
    );
    assert_eq!(
        reserve(&mut e, T0, &req("s2", "SOCIAL", &[("SKU", 1)])),
        ReserveKind::Rejected
    );
    assert_eq!(ats(&e, "WEB", "SKU"), 70);
    assert_eq!(
        reserve(&mut e, T0, &req("w1", "WEB", &[("SKU", 70)])),
        ReserveKind::Created
    );
    assert_eq!(ats(&e, "WEB", "SKU"), 0);

    count(&mut e, T0 + MIN, "SKU", 200, T0 + MIN);
    let pos = e.position("SKU", "DC1", false).unwrap();
    let web = pos
        .channels
        .iter()
        .find(|c| c.channel_ref == "WEB")
        .unwrap();
    let social = pos
        .channels
        .iter()
        .find(|c| c.channel_ref == "SOCIAL")
        .unwrap();
    assert_eq!((web.entitlement, web.used, web.quantity), (140, 70, 70));
    assert_eq!(
        (social.entitlement, social.used, social.quantity),
        (60, 30, 30)
    );
}

/// A SALE after `as_of` survives the count, one before it goes INACTIVE, a stale count
/// changes nothing.
#[test]
fn count_cut_off_keeps_later_sales_and_rejects_stale_counts() {
    let mut e = engine_with(&[("WEB", 10_000, 0)]);
    count(&mut e, T0, "SKU", 10, T0);
    for (hold, order, at) in [("h1", "o1", T0 + MIN), ("h2", "o2", T0 + 3 * MIN)] {
        reserve(&mut e, at, &req(hold, "WEB", &[("SKU", 1)]));
        e.confirm(at, hold, order).unwrap();
        e.fulfil(at, order, None, false).unwrap();
    }
    assert_eq!(e.position("SKU", "DC1", false).unwrap().physical, 8);
    // The warehouse counted 9 at T0+2min: it saw the first sale, not the second.
    assert_eq!(
        count(&mut e, T0 + 4 * MIN, "SKU", 9, T0 + 2 * MIN),
        CountStatus::Applied
    );
    let pos = e.position("SKU", "DC1", true).unwrap();
    assert_eq!(pos.physical, 8, "9 counted less the later sale");
    let sales = pos
        .quantities
        .iter()
        .filter(|iq| iq.kind == stockd_domain::IqKind::Sale)
        .count();
    assert_eq!(sales, 1, "only the sale after as_of stays ACTIVE");
    assert_eq!(
        count(&mut e, T0 + 5 * MIN, "SKU", 100, T0 + MIN),
        CountStatus::Stale
    );
    assert_eq!(e.position("SKU", "DC1", false).unwrap().physical, 8);
}

/// A hold of 2 going to 3 when only 1 more unit is free succeeds; going to 4 is rejected
/// and leaves the hold at 2.
#[test]
fn cart_update_is_checked_against_ats_without_the_hold() {
    let mut e = engine_with(&[("WEB", 10_000, 0)]);
    count(&mut e, T0, "SKU", 3, T0);
    reserve(&mut e, T0, &req("cart", "WEB", &[("SKU", 2)]));
    assert_eq!(ats(&e, "WEB", "SKU"), 1);
    assert_eq!(
        reserve(&mut e, T0, &req("cart", "WEB", &[("SKU", 3)])),
        ReserveKind::Updated
    );
    reserve(&mut e, T0, &req("cart", "WEB", &[("SKU", 2)]));
    assert_eq!(
        reserve(&mut e, T0, &req("cart", "WEB", &[("SKU", 4)])),
        ReserveKind::Rejected
    );
    let hold = e.hold(T0, "cart").unwrap();
    assert_eq!(hold.lines[0].quantity, 2);
    assert_eq!(ats(&e, "WEB", "SKU"), 1);
    // The same lines again: idempotent.
    assert_eq!(
        reserve(&mut e, T0, &req("cart", "WEB", &[("SKU", 2)])),
        ReserveKind::Unchanged
    );
}

/// Adjustments apply once per ref.
#[test]
fn adjustments_are_idempotent_on_their_ref() {
    let mut e = engine_with(&[("WEB", 10_000, 0)]);
    count(&mut e, T0, "SKU", 5, T0);
    let adj = Adjustment {
        adjustment_ref: "grn-1".into(),
        product_ref: "SKU".into(),
        location_ref: "DC1".into(),
        kind: AdjustmentKind::Delta,
        quantity: 7,
        occurred_at: None,
    };
    e.adjust_stock(T0 + 1, &adj).unwrap();
    e.adjust_stock(T0 + 2, &adj).unwrap();
    assert_eq!(ats(&e, "WEB", "SKU"), 12);
}

/// Partial fulfilment ships part of an order; cancel returns the rest to stock.
#[test]
fn fulfil_part_then_cancel_the_rest() {
    let mut e = engine_with(&[("WEB", 10_000, 0)]);
    count(&mut e, T0, "SKU", 10, T0);
    reserve(&mut e, T0, &req("h", "WEB", &[("SKU", 4)]));
    e.confirm(T0, "h", "o").unwrap();
    let line = stockd_domain::OrderLine {
        index: 0,
        product_ref: "SKU".into(),
        location_ref: "DC1".into(),
        quantity: 1,
    };
    e.fulfil(T0, "o", Some(std::slice::from_ref(&line)), false)
        .unwrap();
    let pos = e.position("SKU", "DC1", false).unwrap();
    assert_eq!((pos.physical, pos.on_hand), (9, 6));
    let too_much = stockd_domain::OrderLine {
        quantity: 4,
        ..line
    };
    assert!(matches!(
        e.fulfil(T0, "o", Some(&[too_much]), false),
        Err(Error::FulfilExceedsReserved { .. })
    ));
    e.cancel_order(T0, "o").unwrap();
    assert_eq!(ats(&e, "WEB", "SKU"), 9);
    e.check_consistency().unwrap();
}
