//! The merging of per-shard answers into one answer (`stockd_domain::outcome`), and the
//! fulfilment id, through the domain's public API.

use stockd_domain::hold::fulfilment_id;
use stockd_domain::outcome::{
    ConfirmStep, ReserveMerge, check_reacquired, confirm_step, merge_order_lines, merge_reserve,
    merge_shipped, whole_hold,
};
use stockd_domain::{
    ChannelConfig, Engine, Error, FulfilOp, HoldState, LineView, Millis, OrderLine, ReserveLine,
    ReserveOutcome, ReserveRequest, Settings, StockCount,
};

const NOW: Millis = 1_700_000_000_000;

/// Two engines standing for two shards: P1 on the first (5 units), P2 on the second (1).
fn two_shards() -> (Engine, Engine) {
    let mut shards = (
        Engine::new(Settings::default()),
        Engine::new(Settings::default()),
    );
    for (engine, product, quantity) in [(&mut shards.0, "P1", 5), (&mut shards.1, "P2", 1)] {
        engine
            .upsert_channel(ChannelConfig {
                channel_ref: "WEB".into(),
                ..ChannelConfig::default()
            })
            .unwrap();
        let count = StockCount {
            product_ref: product.into(),
            location_ref: "L1".into(),
            quantity,
            as_of: NOW,
        };
        engine.set_stock(NOW, &count).unwrap();
    }
    shards
}

fn request(q1: i64, q2: i64, allow_partial: bool) -> ReserveRequest {
    let line = |p: &str, quantity| ReserveLine {
        product_ref: p.into(),
        location_ref: "L1".into(),
        quantity,
        category: None,
    };
    ReserveRequest {
        hold_ref: "cart-1".into(),
        channel_ref: "WEB".into(),
        lines: vec![line("P1", q1), line("P2", q2)],
        ttl_seconds: None,
        allow_partial,
    }
}

fn reserve_on_both(req: &ReserveRequest) -> ReserveMerge {
    let (mut a, mut b) = two_shards();
    let pa = a.reserve(NOW, req, &[0]).unwrap();
    let pb = b.reserve(NOW, req, &[1]).unwrap();
    let ha = a.hold(NOW, &req.hold_ref);
    let hb = b.hold(NOW, &req.hold_ref);
    merge_reserve(req, vec![(pa, ha), (pb, hb)])
}

#[test]
fn a_hold_on_two_shards_merges_into_one() {
    let ReserveMerge::Accepted(result) = reserve_on_both(&request(2, 1, false)) else {
        panic!("both shards have the stock");
    };
    assert_eq!(result.outcome, ReserveOutcome::Reserved);
    let hold = result.hold.expect("held");
    assert_eq!(hold.lines.len(), 2);
    assert_eq!(hold.answered_lines, 2);
    assert_eq!(
        result.lines.iter().map(|l| l.reserved).collect::<Vec<_>>(),
        [2, 1]
    );
}

#[test]
fn one_shard_short_rejects_the_whole_hold() {
    let ReserveMerge::Rejected(lines) = reserve_on_both(&request(2, 3, false)) else {
        panic!("the second shard has 1 of 3");
    };
    assert_eq!(lines[1].available, 1);
    let result = stockd_domain::ReserveResult::rejected(lines, None);
    assert_eq!(result.outcome, ReserveOutcome::Rejected);
    assert!(result.lines.iter().all(|l| l.reserved == 0));
}

#[test]
fn a_partial_hold_is_partial() {
    let ReserveMerge::Accepted(result) = reserve_on_both(&request(2, 3, true)) else {
        panic!("partial holds take what there is");
    };
    assert_eq!(result.outcome, ReserveOutcome::Partial);
    assert_eq!(result.lines[1].reserved, 1);
    assert!(check_reacquired("cart-1", &result).is_err());
}

#[test]
fn confirm_decides_from_the_whole_hold() {
    let ReserveMerge::Accepted(result) = reserve_on_both(&request(1, 1, false)) else {
        panic!("held");
    };
    let mut hold = result.hold.expect("held");
    assert_eq!(
        confirm_step(hold.clone(), "ORD-1", false),
        Ok(ConfirmStep::Confirm)
    );
    hold.state = HoldState::Expired;
    assert_eq!(
        confirm_step(hold.clone(), "ORD-1", false),
        Err(Error::HoldExpired("cart-1".into()))
    );
    let Ok(ConfirmStep::Reacquire(again)) = confirm_step(hold.clone(), "ORD-1", true) else {
        panic!("reacquire reserves again");
    };
    assert_eq!(again.lines.len(), 2);
    assert!(!again.allow_partial);
    hold.state = HoldState::Confirmed;
    hold.order_ref = Some("ORD-1".into());
    assert!(matches!(
        confirm_step(hold.clone(), "ORD-1", false),
        Ok(ConfirmStep::Done(_))
    ));
    assert!(matches!(
        confirm_step(hold, "ORD-2", true),
        Err(Error::HoldConfirmed { .. })
    ));
    assert_eq!(
        whole_hold("cart-9", Vec::new()),
        Err(Error::HoldNotFound("cart-9".into()))
    );
}

#[test]
fn order_lines_merge_across_shards() {
    let line = |p: &str| LineView {
        product_ref: p.into(),
        location_ref: "L1".into(),
        quantity: 1,
    };
    assert_eq!(
        merge_order_lines("ORD-1", [None, None]),
        Err(Error::OrderNotFound("ORD-1".into()))
    );
    assert_eq!(
        merge_order_lines("ORD-1", [None, Some(Vec::new())]),
        Ok(Vec::new())
    );
    let parts = [Some(vec![line("P1")]), None, Some(vec![line("P2")])];
    assert_eq!(merge_order_lines("ORD-1", parts.clone()).unwrap().len(), 2);
    assert_eq!(merge_shipped(parts).len(), 2);
}

#[test]
fn the_fulfilment_id_hashes_fields_not_debug_text() {
    let line = |p: &str, l: &str, quantity| OrderLine {
        index: 0,
        product_ref: p.into(),
        location_ref: l.into(),
        quantity,
    };
    let id = |lines: &[OrderLine]| fulfilment_id("ORD-1", NOW, lines);
    let one = [line("P1", "L1", 2)];
    assert_eq!(id(&one), id(&one.clone()), "deterministic");
    assert_eq!(FulfilOp::new("ORD-1", NOW, &one).id, id(&one));
    assert_ne!(id(&one), id(&[line("P1", "L1", 3)]), "quantity counts");
    assert_ne!(
        id(&[line("ab", "c", 1)]),
        id(&[line("a", "bc", 1)]),
        "fields are separated"
    );
    assert_ne!(
        id(&one),
        id(&[]),
        "a partial shipment is not the whole order"
    );
    assert_ne!(
        id(&one),
        fulfilment_id("ORD-1", NOW + 1, &one),
        "time counts"
    );
    assert_ne!(id(&one), fulfilment_id("ORD-2", NOW, &one), "order counts");
    assert_eq!(FulfilOp::new("ORD-1", NOW, &[]).lines, None);
}
