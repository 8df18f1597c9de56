//! One RPC each, with its answer checked (the `_ok` calls panic naming the call) or made
//! plain (`Ok(None)` for NOT_FOUND, a quantity instead of a reply).

use stockd::proto::inventory::v1 as pb;

use super::client::{Adm, Inv};
use super::requests::{count_now, order_lines, position_keys, reserve_request};

pub async fn upsert_channel(admin: &mut Adm, c: pb::Channel) {
    admin
        .upsert_channel(pb::UpsertChannelRequest { channel: Some(c) })
        .await
        .expect("UpsertChannel");
}

/// Sets one position's count (stamped by the server) and checks it applied.
pub async fn stock(admin: &mut Adm, product: &str, location: &str, quantity: i64) {
    let r = admin
        .set_stock(pb::SetStockRequest {
            counts: vec![count_now(product, location, quantity)],
        })
        .await
        .expect("SetStock")
        .into_inner();
    assert_eq!(r.results[0].status, pb::StockCountStatus::Applied as i32);
}

pub async fn set_stock_ok(admin: &mut Adm, counts: Vec<pb::StockCount>) {
    admin
        .set_stock(pb::SetStockRequest { counts })
        .await
        .unwrap_or_else(|s| panic!("SetStock: {s}"));
}

/// GetHold: `Ok(None)` for NOT_FOUND.
pub async fn get_hold(inv: &mut Inv, hold_ref: &str) -> Result<Option<pb::Hold>, tonic::Status> {
    match inv
        .get_hold(pb::GetHoldRequest {
            hold_ref: hold_ref.into(),
        })
        .await
    {
        Ok(r) => Ok(r.into_inner().hold),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

/// GetPosition: `Ok(None)` for NOT_FOUND.
pub async fn get_position(
    admin: &mut Adm,
    product: &str,
    location: &str,
    include_ledger: bool,
) -> Result<Option<pb::Position>, tonic::Status> {
    match admin
        .get_position(pb::GetPositionRequest {
            product_ref: product.into(),
            location_ref: location.into(),
            include_ledger,
        })
        .await
    {
        Ok(r) => Ok(r.into_inner().position),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

/// The on-hand quantity of a position that exists.
pub async fn on_hand(admin: &mut Adm, product: &str, location: &str) -> i64 {
    get_position(admin, product, location, false)
        .await
        .expect("GetPosition")
        .expect("the position exists")
        .on_hand
}

/// The channel's available-to-sell quantity of each key, in key order.
pub async fn availability<P: AsRef<str>, L: AsRef<str>>(
    inv: &mut Inv,
    channel_ref: &str,
    keys: &[(P, L)],
) -> Vec<i64> {
    inv.get_availability(pb::GetAvailabilityRequest {
        channel_ref: channel_ref.into(),
        keys: position_keys(keys),
    })
    .await
    .expect("GetAvailability")
    .into_inner()
    .positions
    .into_iter()
    .map(|p| p.quantity)
    .collect()
}

/// The channel's available-to-sell quantity of one position.
pub async fn ats(inv: &mut Inv, channel_ref: &str, product: &str, location: &str) -> i64 {
    availability(inv, channel_ref, &[(product, location)]).await[0]
}

/// Reserves all the lines on `channel_ref`; panics unless the answer is RESERVED.
pub async fn reserve_ok(
    inv: &mut Inv,
    hold_ref: &str,
    channel_ref: &str,
    lines: &[(String, String, i64)],
    ttl_seconds: i64,
) -> pb::Hold {
    let request = reserve_request(hold_ref, channel_ref, lines, ttl_seconds);
    let r = reserve_reply(inv, request).await;
    assert_eq!(
        r.outcome,
        pb::ReserveOutcome::Reserved as i32,
        "Reserve {hold_ref}: {r:?}"
    );
    r.hold.expect("a reserved hold")
}

/// Sends a reserve and returns the answer; panics if the call fails (a REJECTED answer
/// is a success).
pub async fn reserve_reply(inv: &mut Inv, request: pb::ReserveRequest) -> pb::ReserveResponse {
    let hold_ref = request.hold_ref.clone();
    inv.reserve(request)
        .await
        .unwrap_or_else(|s| panic!("Reserve {hold_ref}: {s}"))
        .into_inner()
}

/// ConfirmHold: the hold in the answer, or the call's error.
pub async fn confirm(
    inv: &mut Inv,
    hold_ref: &str,
    order_ref: &str,
    reacquire: bool,
) -> Result<Option<pb::Hold>, tonic::Status> {
    inv.confirm_hold(pb::ConfirmHoldRequest {
        hold_ref: hold_ref.into(),
        order_ref: order_ref.into(),
        reacquire,
    })
    .await
    .map(|r| r.into_inner().hold)
}

pub async fn confirm_ok(inv: &mut Inv, hold_ref: &str, order_ref: &str) {
    confirm(inv, hold_ref, order_ref, false)
        .await
        .unwrap_or_else(|s| panic!("ConfirmHold {hold_ref}: {s}"));
}

/// ReleaseHold: the hold in the answer, or the call's error.
pub async fn release(inv: &mut Inv, hold_ref: &str) -> Result<Option<pb::Hold>, tonic::Status> {
    inv.release_hold(pb::ReleaseHoldRequest {
        hold_ref: hold_ref.into(),
    })
    .await
    .map(|r| r.into_inner().hold)
}

pub async fn release_ok(inv: &mut Inv, hold_ref: &str) {
    release(inv, hold_ref)
        .await
        .unwrap_or_else(|s| panic!("ReleaseHold {hold_ref}: {s}"));
}

/// Ships `lines` of the order; none ships everything still reserved.
pub async fn fulfil_ok(inv: &mut Inv, order_ref: &str, lines: &[(String, String, i64)]) {
    inv.fulfil_order(pb::FulfilOrderRequest {
        order_ref: order_ref.into(),
        lines: order_lines(lines),
    })
    .await
    .unwrap_or_else(|s| panic!("FulfilOrder {order_ref}: {s}"));
}

pub async fn cancel_ok(inv: &mut Inv, order_ref: &str) {
    inv.cancel_order(pb::CancelOrderRequest {
        order_ref: order_ref.into(),
    })
    .await
    .expect("CancelOrder");
}

/// Sorted (product, location, quantity) lines of a hold.
pub fn hold_lines(h: &pb::Hold) -> Vec<(String, String, i64)> {
    let mut lines: Vec<_> = h
        .lines
        .iter()
        .map(|l| (l.product_ref.clone(), l.location_ref.clone(), l.quantity))
        .collect();
    lines.sort();
    lines
}

/// Every retained event, through ListEvents pages.
pub async fn list_all(
    ev: &mut stockd::proto::inventory::v1::event_service_client::EventServiceClient<
        tonic::transport::Channel,
    >,
) -> Vec<pb::Event> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let page = ev
            .list_events(pb::ListEventsRequest {
                from_sequence: from,
                page_size: 1000,
                filter: None,
            })
            .await
            .expect("ListEvents")
            .into_inner();
        out.extend(page.events);
        if page.next_sequence > page.last_sequence {
            return out;
        }
        from = page.next_sequence;
    }
}
