//! Bounds on every quantity and time (issue #12, defect 7), checked through the domain's
//! validation API, the one the router calls once per request.
//!
//! Each rejection is INVALID_ARGUMENT (`Error::InvalidArgument`) naming the field as the
//! request spells it.

use stockd_domain::limits::{
    HOLD_LINES_MAX, MS_PER_DAY, STOCK_BATCH_MAX, STOCK_QUANTITY_MAX, STOCK_TIME_FUTURE_MS_MAX,
    STOCK_TIME_PAST_MS_MAX,
};
use stockd_domain::request::validate_read;
use stockd_domain::{
    Adjustment, AdjustmentKind, Error, Millis, OrderLine, ReserveLine, ReserveRequest, StockCount,
};

const NOW: Millis = 1_700_000_000_000;
/// 9999-01-01T00:00:00Z.
const YEAR_9999: Millis = 253_370_764_800_000;

/// The field an `InvalidArgument` names, or a failure naming what came back.
fn field(result: Result<(), Error>) -> String {
    match result {
        Err(Error::InvalidArgument { field, .. }) => field,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

fn adjustment(quantity: i64, occurred_at: Option<Millis>) -> Adjustment {
    Adjustment {
        adjustment_ref: "adj-1".into(),
        product_ref: "P1".into(),
        location_ref: "L1".into(),
        kind: AdjustmentKind::Delta,
        quantity,
        occurred_at,
    }
}

fn count(quantity: i64, as_of: Millis) -> StockCount {
    StockCount {
        product_ref: "P1".into(),
        location_ref: "L1".into(),
        quantity,
        as_of,
    }
}

fn order_line(index: u32, product: &str, quantity: i64) -> OrderLine {
    OrderLine {
        index,
        product_ref: product.into(),
        location_ref: "L1".into(),
        quantity,
    }
}

#[test]
fn an_adjustment_of_i64_min_is_rejected() {
    // `i64::MIN.abs()` overflowed; in release it wrapped and the adjustment was accepted.
    assert_eq!(
        field(Adjustment::validate_batch(
            &[adjustment(i64::MIN, None)],
            NOW
        )),
        "adjustments[0].quantity"
    );
    for q in [i64::MAX, STOCK_QUANTITY_MAX + 1, -STOCK_QUANTITY_MAX - 1, 0] {
        assert_eq!(
            field(adjustment(q, None).validate("adjustments[3]", NOW)),
            "adjustments[3].quantity",
            "quantity {q}"
        );
    }
    for q in [STOCK_QUANTITY_MAX, -STOCK_QUANTITY_MAX, 1, -1] {
        assert_eq!(
            adjustment(q, None).validate("a", NOW),
            Ok(()),
            "quantity {q}"
        );
    }
}

#[test]
fn a_count_as_of_the_year_9999_is_rejected() {
    assert_eq!(
        field(StockCount::validate_batch(
            &[count(5, NOW), count(5, YEAR_9999)],
            NOW
        )),
        "counts[1].as_of"
    );
    let latest = NOW + STOCK_TIME_FUTURE_MS_MAX;
    assert_eq!(count(5, latest).validate("c", NOW), Ok(()));
    assert_eq!(field(count(5, latest + 1).validate("c", NOW)), "c.as_of");
    let earliest = NOW - STOCK_TIME_PAST_MS_MAX;
    assert_eq!(count(5, earliest).validate("c", NOW), Ok(()));
    assert_eq!(field(count(5, earliest - 1).validate("c", NOW)), "c.as_of");
    assert_eq!(field(count(5, Millis::MIN).validate("c", NOW)), "c.as_of");
    assert_eq!(field(count(5, Millis::MAX).validate("c", NOW)), "c.as_of");
    assert_eq!(
        STOCK_TIME_FUTURE_MS_MAX, MS_PER_DAY,
        "documented as one day"
    );
}

#[test]
fn a_count_quantity_is_bounded() {
    assert_eq!(count(STOCK_QUANTITY_MAX, NOW).validate("c", NOW), Ok(()));
    assert_eq!(
        field(count(STOCK_QUANTITY_MAX + 1, NOW).validate("c", NOW)),
        "c.quantity"
    );
    assert_eq!(field(count(-1, NOW).validate("c", NOW)), "c.quantity");
    assert_eq!(field(count(i64::MIN, NOW).validate("c", NOW)), "c.quantity");
}

#[test]
fn an_adjustment_time_is_bounded_like_a_count() {
    assert_eq!(adjustment(1, Some(NOW - 60_000)).validate("a", NOW), Ok(()));
    assert_eq!(
        field(adjustment(1, Some(YEAR_9999)).validate("adjustments[0]", NOW)),
        "adjustments[0].occurred_at"
    );
    assert_eq!(
        field(adjustment(1, Some(NOW - STOCK_TIME_PAST_MS_MAX - 1)).validate("a", NOW)),
        "a.occurred_at"
    );
}

#[test]
fn a_fulfilment_repeating_a_line_is_rejected() {
    let lines = [
        order_line(0, "P1", 1),
        order_line(1, "P2", 1),
        order_line(2, "P1", 1),
    ];
    let err = OrderLine::validate_fulfil("ORD-1", &lines).unwrap_err();
    assert_eq!(
        err.to_string(),
        "lines[2] repeats product \"P1\" at location \"L1\": one line per position"
    );
    assert_eq!(OrderLine::validate_fulfil("ORD-1", &lines[..2]), Ok(()));
    assert_eq!(
        OrderLine::validate_fulfil("ORD-1", &[]),
        Ok(()),
        "empty: ship everything"
    );
}

#[test]
fn a_fulfilment_is_checked_field_by_field() {
    assert_eq!(field(OrderLine::validate_fulfil("ORD:1", &[])), "order_ref");
    let err = OrderLine::validate_fulfil("ORD-1", &[order_line(4, "P1", 0)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "lines[4].quantity must be between 1 and 1000000 (got 0)"
    );
    assert_eq!(
        field(OrderLine::validate_fulfil("ORD-1", &[order_line(0, "", 1)])),
        "lines[0].product_ref"
    );
    let many: Vec<OrderLine> = (0..=HOLD_LINES_MAX as u32)
        .map(|i| order_line(i, &format!("P{i}"), 1))
        .collect();
    assert_eq!(field(OrderLine::validate_fulfil("ORD-1", &many)), "lines");
}

#[test]
fn reserve_messages_are_unchanged() {
    let line = |quantity| ReserveLine {
        product_ref: "P1".into(),
        location_ref: "L1".into(),
        quantity,
        category: None,
    };
    let mut req = ReserveRequest {
        hold_ref: "cart-1".into(),
        channel_ref: "WEB".into(),
        lines: vec![line(1), line(1), line(0)],
        ttl_seconds: None,
        allow_partial: false,
    };
    req.lines[1].product_ref = "P2".into();
    req.lines[2].product_ref = "P3".into();
    assert_eq!(
        req.validate().unwrap_err().to_string(),
        "lines[2].quantity must be between 1 and 1000000 (got 0)"
    );
    req.lines[2].quantity = 1;
    assert_eq!(req.validate(), Ok(()));
    req.ttl_seconds = Some(86_401);
    assert_eq!(
        req.validate().unwrap_err().to_string(),
        "ttl_seconds must be between 1 and 86400 (got 86401)"
    );
}

#[test]
fn batches_and_reads_are_bounded() {
    assert_eq!(field(StockCount::validate_batch(&[], NOW)), "counts");
    let counts = vec![count(1, NOW); STOCK_BATCH_MAX + 1];
    assert_eq!(
        StockCount::validate_batch(&counts, NOW)
            .unwrap_err()
            .to_string(),
        format!(
            "counts must hold 1 to {STOCK_BATCH_MAX} items (got {})",
            STOCK_BATCH_MAX + 1
        )
    );
    assert_eq!(field(Adjustment::validate_batch(&[], NOW)), "adjustments");
    let key = |p: &str| (p.to_string(), "L1".to_string());
    assert_eq!(validate_read("WEB", &[key("P1")]), Ok(()));
    assert_eq!(field(validate_read("WEB", &[])), "keys");
    assert_eq!(
        field(validate_read("WEB", &[key("P1"), key("a b")])),
        "keys[1].product_ref"
    );
    assert_eq!(field(validate_read("", &[key("P1")])), "channel_ref");
}
