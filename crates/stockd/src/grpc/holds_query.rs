//! ListHolds and GetOrder of `inventory.v1.InventoryService`: holds and orders as
//! queryable things, converted to and from protobuf.
//!
//! Same shape as every handler: convert the request (naming a bad field), check the
//! caller's channels, call the router, map the answer back. The filter's rules, the order
//! of a listing and its page tokens are the domain's (`stockd_domain::query`).

use tonic::{Request, Status};

use super::access::{check_channel, is_channel_scoped};
use super::convert::{self, millis, timestamp};
use super::status::{ApiError, to_status};
use crate::clock::now_millis;
use crate::metrics;
use crate::proto::inventory::v1 as pb;
use crate::shard::Router;
use stockd_domain::query::page_size;
use stockd_domain::{Error, HoldFilter, HoldState, HoldTime, OrderState, OrderView};

/// A ListHolds request as the domain's filter, with its page size and token.
pub fn list_request(r: &pb::ListHoldsRequest) -> Result<(HoldFilter, usize), Error> {
    let state = match pb::HoldState::try_from(r.state) {
        Ok(pb::HoldState::Unspecified) => None,
        Ok(pb::HoldState::Active) => Some(HoldState::Active),
        Ok(pb::HoldState::Confirmed) => Some(HoldState::Confirmed),
        Ok(pb::HoldState::Released) => Some(HoldState::Released),
        Ok(pb::HoldState::Expired) => Some(HoldState::Expired),
        Err(_) => return Err(convert::invalid("state", "is not a HoldState")),
    };
    let time = match pb::HoldTimeField::try_from(r.time_field) {
        Ok(pb::HoldTimeField::Unspecified | pb::HoldTimeField::Created) => HoldTime::Created,
        Ok(pb::HoldTimeField::Ended) => HoldTime::Ended,
        Err(_) => return Err(convert::invalid("time_field", "is not a HoldTimeField")),
    };
    let filter = HoldFilter {
        channel_ref: (!r.channel_ref.is_empty()).then(|| r.channel_ref.clone()),
        state,
        time,
        from: millis("start_time", r.start_time.as_ref())?,
        to: millis("end_time", r.end_time.as_ref())?,
    };
    Ok((filter, page_size(r.page_size)?))
}

/// PERMISSION_DENIED for a caller limited to some channels that names none or another.
pub fn check_list_channel(request: &Request<pb::ListHoldsRequest>) -> Result<(), Status> {
    let channel_ref = &request.get_ref().channel_ref;
    if channel_ref.is_empty() && is_channel_scoped(request) {
        metrics::auth_denied("channel");
        return Err(to_status(ApiError::PermissionDenied(
            "channel_ref: this caller may list only the holds of its own channels; name one".into(),
        )));
    }
    check_channel(request, channel_ref)
}

/// ListHolds: one page.
pub async fn list_holds(
    router: &Router,
    r: pb::ListHoldsRequest,
) -> Result<pb::ListHoldsResponse, Status> {
    let (filter, size) = list_request(&r).map_err(to_status)?;
    let listing = router
        .list_holds(now_millis(), filter, size, &r.page_token)
        .await
        .map_err(to_status)?;
    Ok(pb::ListHoldsResponse {
        holds: listing.holds.into_iter().map(convert::hold).collect(),
        next_page_token: listing.next_page_token,
    })
}

/// GetOrder: the whole order; PERMISSION_DENIED for a caller limited to other channels.
pub async fn get_order(
    router: &Router,
    request: &Request<pb::GetOrderRequest>,
) -> Result<pb::GetOrderResponse, Status> {
    let order = router
        .order(now_millis(), &request.get_ref().order_ref)
        .await
        .map_err(to_status)?;
    check_channel(request, &order.channel_ref)?;
    Ok(pb::GetOrderResponse {
        order: Some(order_out(order)),
    })
}

fn order_out(order: OrderView) -> pb::Order {
    let state = order_state(Some(order.state())) as i32;
    pb::Order {
        order_ref: order.order_ref,
        hold_ref: order.hold_ref,
        channel_ref: order.channel_ref,
        state,
        lines: order
            .lines
            .into_iter()
            .map(|l| pb::OrderLineState {
                product_ref: l.product_ref,
                location_ref: l.location_ref,
                quantity: l.quantity,
                reserved: l.reserved,
                fulfilled: l.fulfilled,
                cancelled: l.cancelled,
            })
            .collect(),
        confirmed_at: Some(timestamp(order.confirmed_at)),
        hold_created_at: Some(timestamp(order.hold_created_at)),
    }
}

/// An order's state in protobuf (`None`: the hold is not confirmed).
pub fn order_state(state: Option<OrderState>) -> pb::OrderState {
    match state {
        None => pb::OrderState::Unspecified,
        Some(OrderState::Open) => pb::OrderState::Open,
        Some(OrderState::PartiallyFulfilled) => pb::OrderState::PartiallyFulfilled,
        Some(OrderState::Fulfilled) => pb::OrderState::Fulfilled,
        Some(OrderState::Cancelled) => pb::OrderState::Cancelled,
    }
}
