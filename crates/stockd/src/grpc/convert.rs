//! Protobuf messages to domain requests and back.
//!
//! Every conversion from the wire checks what the types alone cannot (ranges, enum values,
//! required fields) and names the field in the domain's `Error::InvalidArgument`, which
//! `status::to_status` answers as INVALID_ARGUMENT.

use prost_types::Timestamp;

use crate::proto::inventory::v1 as pb;
use stockd_domain::{
    self as domain, AdjustmentKind, CategoryConfig, ChannelConfig, ChannelNetwork, ChannelRule,
    HoldState, HoldView, IqKind, LineView, LocationConfig, LocationKind, Millis, PositionView,
    ProductConfig, RebalanceMode,
};

/// A bad field: INVALID_ARGUMENT with the message "{field} {reason}".
pub fn invalid(field: &str, reason: impl std::fmt::Display) -> domain::Error {
    domain::Error::invalid(field, reason.to_string())
}

pub fn timestamp(ms: Millis) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A wire timestamp as milliseconds; `None` when unset.
pub fn millis(field: &str, ts: Option<&Timestamp>) -> Result<Option<Millis>, domain::Error> {
    let Some(ts) = ts else { return Ok(None) };
    if !(0..1_000_000_000).contains(&ts.nanos) || !(0..=253_402_300_799).contains(&ts.seconds) {
        return Err(invalid(
            field,
            "must be a valid timestamp between 1970 and 9999",
        ));
    }
    Ok(Some(ts.seconds * 1000 + i64::from(ts.nanos / 1_000_000)))
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// A wire ttl (0 = unset) as bounded seconds.
pub fn ttl(field: &str, seconds: i64) -> Result<Option<u32>, domain::Error> {
    use domain::request::{TTL_SECONDS_MAX, TTL_SECONDS_MIN};
    if seconds == 0 {
        return Ok(None);
    }
    if !(i64::from(TTL_SECONDS_MIN)..=i64::from(TTL_SECONDS_MAX)).contains(&seconds) {
        return Err(invalid(
            field,
            format!(
                "must be 0 (default) or between {TTL_SECONDS_MIN} and {TTL_SECONDS_MAX} seconds (got {seconds})"
            ),
        ));
    }
    Ok(Some(seconds as u32))
}

fn bps(field: &str, value: i32) -> Result<u32, domain::Error> {
    u32::try_from(value)
        .ok()
        .filter(|v| *v <= domain::channel::BPS_FULL)
        .ok_or_else(|| {
            invalid(
                field,
                format!("must be between 0 and 10000 basis points (got {value})"),
            )
        })
}

pub fn reserve_request(r: pb::ReserveRequest) -> Result<domain::ReserveRequest, domain::Error> {
    Ok(domain::ReserveRequest {
        ttl_seconds: ttl("ttl_seconds", r.ttl_seconds)?,
        hold_ref: r.hold_ref,
        channel_ref: r.channel_ref,
        lines: r
            .lines
            .into_iter()
            .map(|l| domain::ReserveLine {
                category: opt(&l.category),
                product_ref: l.product_ref,
                location_ref: l.location_ref,
                quantity: l.quantity,
            })
            .collect(),
        allow_partial: r.allow_partial,
    })
}

pub fn hold(view: HoldView) -> pb::Hold {
    let order_state = super::holds_query::order_state(view.order_state()) as i32;
    pb::Hold {
        hold_ref: view.hold_ref,
        channel_ref: view.channel_ref,
        state: match view.state {
            HoldState::Active => pb::HoldState::Active,
            HoldState::Confirmed => pb::HoldState::Confirmed,
            HoldState::Released => pb::HoldState::Released,
            HoldState::Expired => pb::HoldState::Expired,
        } as i32,
        lines: view
            .lines
            .into_iter()
            .map(|l| pb::HoldLine {
                product_ref: l.product_ref,
                location_ref: l.location_ref,
                quantity: l.quantity,
            })
            .collect(),
        created_at: Some(timestamp(view.created_at)),
        expires_at: Some(timestamp(view.expires_at)),
        order_ref: view.order_ref.unwrap_or_default(),
        ended_at: view.ended_at.map(timestamp),
        order_state,
    }
}

pub fn order_lines(lines: Vec<LineView>) -> Vec<pb::OrderLine> {
    lines
        .into_iter()
        .map(|l| pb::OrderLine {
            product_ref: l.product_ref,
            location_ref: l.location_ref,
            quantity: l.quantity,
        })
        .collect()
}

pub fn stock_count(
    i: usize,
    c: pb::StockCount,
    now: Millis,
) -> Result<domain::StockCount, domain::Error> {
    let as_of = millis(&format!("counts[{i}].as_of"), c.as_of.as_ref())?.unwrap_or(now);
    Ok(domain::StockCount {
        product_ref: c.product_ref,
        location_ref: c.location_ref,
        quantity: c.quantity,
        as_of,
    })
}

pub fn adjustment(i: usize, a: pb::StockAdjustment) -> Result<domain::Adjustment, domain::Error> {
    let kind = match pb::AdjustmentType::try_from(a.r#type) {
        Ok(pb::AdjustmentType::Delta) => AdjustmentKind::Delta,
        Ok(pb::AdjustmentType::Correction) => AdjustmentKind::Correction,
        Ok(pb::AdjustmentType::Returned) => AdjustmentKind::Returned,
        _ => {
            return Err(invalid(
                &format!("adjustments[{i}].type"),
                "must be ADJUSTMENT_TYPE_DELTA, ADJUSTMENT_TYPE_CORRECTION or ADJUSTMENT_TYPE_RETURNED",
            ));
        }
    };
    Ok(domain::Adjustment {
        occurred_at: millis(
            &format!("adjustments[{i}].occurred_at"),
            a.occurred_at.as_ref(),
        )?,
        adjustment_ref: a.adjustment_ref,
        product_ref: a.product_ref,
        location_ref: a.location_ref,
        kind,
        quantity: a.quantity,
    })
}

pub fn channel_in(c: pb::Channel) -> Result<ChannelConfig, domain::Error> {
    let mut rules = Vec::with_capacity(c.rules.len());
    for (i, r) in c.rules.into_iter().enumerate() {
        rules.push(ChannelRule {
            product_ref: opt(&r.product_ref),
            location_ref: opt(&r.location_ref),
            category: opt(&r.category),
            allocation_bps: r
                .allocation_bps
                .map(|v| bps(&format!("channel.rules[{i}].allocation_bps"), v))
                .transpose()?,
            buffer_bps: r
                .buffer_bps
                .map(|v| bps(&format!("channel.rules[{i}].buffer_bps"), v))
                .transpose()?,
            buffer_units: r.buffer_units,
        });
    }
    let rebalance_mode = match pb::RebalanceMode::try_from(c.rebalance_mode) {
        Ok(pb::RebalanceMode::Unspecified | pb::RebalanceMode::Automatic) => {
            RebalanceMode::Automatic
        }
        Ok(pb::RebalanceMode::Manual) => RebalanceMode::Manual,
        Err(_) => {
            return Err(invalid(
                "channel.rebalance_mode",
                "is not a known RebalanceMode",
            ));
        }
    };
    Ok(ChannelConfig {
        allocation_bps: match c.allocation_bps {
            Some(v) => bps("channel.allocation_bps", v)?,
            None => domain::channel::BPS_FULL,
        },
        buffer_bps: bps("channel.buffer_bps", c.buffer_bps)?,
        buffer_units: c.buffer_units,
        excluded_locations: c.excluded_locations,
        hold_ttl_seconds: ttl("channel.hold_ttl_seconds", c.hold_ttl_seconds)?,
        rules,
        rebalance_mode,
        channel_ref: c.channel_ref,
    })
}

pub fn channel_out(c: ChannelConfig) -> pb::Channel {
    pb::Channel {
        channel_ref: c.channel_ref,
        allocation_bps: Some(c.allocation_bps as i32),
        buffer_bps: c.buffer_bps as i32,
        buffer_units: c.buffer_units,
        excluded_locations: c.excluded_locations,
        hold_ttl_seconds: c.hold_ttl_seconds.map_or(0, i64::from),
        rules: c
            .rules
            .into_iter()
            .map(|r| pb::ChannelRule {
                product_ref: r.product_ref.unwrap_or_default(),
                location_ref: r.location_ref.unwrap_or_default(),
                category: r.category.unwrap_or_default(),
                allocation_bps: r.allocation_bps.map(|v| v as i32),
                buffer_bps: r.buffer_bps.map(|v| v as i32),
                buffer_units: r.buffer_units,
            })
            .collect(),
        rebalance_mode: match c.rebalance_mode {
            RebalanceMode::Automatic => pb::RebalanceMode::Automatic,
            RebalanceMode::Manual => pb::RebalanceMode::Manual,
        } as i32,
    }
}

pub fn product_in(i: usize, p: pb::Product) -> Result<ProductConfig, domain::Error> {
    Ok(ProductConfig {
        hold_ttl_seconds: ttl(
            &format!("products[{i}].hold_ttl_seconds"),
            p.hold_ttl_seconds,
        )?,
        category: opt(&p.category),
        product_ref: p.product_ref,
    })
}

pub fn category_in(i: usize, c: pb::Category) -> Result<CategoryConfig, domain::Error> {
    Ok(CategoryConfig {
        hold_ttl_seconds: ttl(
            &format!("categories[{i}].hold_ttl_seconds"),
            c.hold_ttl_seconds,
        )?,
        category: c.category,
    })
}

pub(crate) fn quantity_type(kind: IqKind) -> pb::QuantityType {
    match kind {
        IqKind::LastOnHand => pb::QuantityType::LastOnHand,
        IqKind::Delta => pb::QuantityType::Delta,
        IqKind::Correction => pb::QuantityType::Correction,
        IqKind::Returned => pb::QuantityType::Returned,
        IqKind::Sale => pb::QuantityType::Sale,
        IqKind::SoftReserve => pb::QuantityType::SoftReserve,
        IqKind::Reserved => pb::QuantityType::Reserved,
    }
}

pub fn position(p: PositionView) -> pb::Position {
    pb::Position {
        r#ref: format!("{}:{}:DEFAULT", p.product_ref, p.location_ref),
        on_hand: p.on_hand,
        physical: p.physical,
        allocation_base: p.allocation_base,
        channels: p
            .channels
            .into_iter()
            .map(|c| pb::ChannelPosition {
                channel_ref: c.channel_ref,
                quantity: c.quantity,
                entitlement: c.entitlement,
                used: c.used,
            })
            .collect(),
        quantities: p
            .quantities
            .into_iter()
            .map(|q| {
                let owner = q.owner_ref.unwrap_or_default();
                let (hold_ref, order_ref, adjustment_ref) = match q.kind {
                    IqKind::SoftReserve => (owner, String::new(), String::new()),
                    IqKind::Reserved | IqKind::Sale => (String::new(), owner, String::new()),
                    _ => (String::new(), String::new(), owner),
                };
                pb::InventoryQuantity {
                    r#ref: q.iq_ref,
                    r#type: quantity_type(q.kind) as i32,
                    quantity: q.quantity,
                    status: pb::QuantityStatus::Active as i32,
                    channel_ref: q.channel_ref.unwrap_or_default(),
                    hold_ref,
                    order_ref,
                    adjustment_ref,
                    created_at: Some(timestamp(q.created_at)),
                    updated_at: Some(timestamp(q.created_at)),
                    occurred_at: Some(timestamp(q.occurred_at)),
                    expires_at: q.expires_at.map(timestamp),
                }
            })
            .collect(),
        product_ref: p.product_ref,
        location_ref: p.location_ref,
    }
}

// ----- locations and networks -----

pub fn location_in(i: usize, l: pb::Location) -> Result<LocationConfig, domain::Error> {
    let kind = match pb::LocationType::try_from(l.r#type) {
        Ok(pb::LocationType::Warehouse) => LocationKind::Warehouse,
        Ok(pb::LocationType::Store) => LocationKind::Store,
        Ok(pb::LocationType::Other) => LocationKind::Other,
        Ok(pb::LocationType::Unspecified) | Err(_) => {
            return Err(invalid(
                &format!("locations[{i}].type"),
                "must be a LocationType other than LOCATION_TYPE_UNSPECIFIED",
            ));
        }
    };
    let priority = u32::try_from(l.priority)
        .map_err(|_| invalid(&format!("locations[{i}].priority"), "must be at least 0"))?;
    Ok(LocationConfig {
        location_ref: l.location_ref,
        kind,
        ships_home_delivery: l.ships_home_delivery,
        serves_click_collect: l.serves_click_collect,
        priority,
    })
}

pub fn location_out(l: LocationConfig) -> pb::Location {
    pb::Location {
        location_ref: l.location_ref,
        r#type: match l.kind {
            LocationKind::Warehouse => pb::LocationType::Warehouse,
            LocationKind::Store => pb::LocationType::Store,
            LocationKind::Other => pb::LocationType::Other,
        } as i32,
        ships_home_delivery: l.ships_home_delivery,
        serves_click_collect: l.serves_click_collect,
        priority: i32::try_from(l.priority).unwrap_or(i32::MAX),
    }
}

pub fn network_in(n: Option<pb::ChannelNetwork>) -> Result<ChannelNetwork, domain::Error> {
    let n = n.ok_or_else(|| invalid("network", "is required"))?;
    Ok(ChannelNetwork {
        channel_ref: n.channel_ref,
        network_ref: n.network_ref,
        all_locations: n.all_locations,
        locations: n.locations,
    })
}

pub fn network_out(n: ChannelNetwork) -> pb::ChannelNetwork {
    pb::ChannelNetwork {
        channel_ref: n.channel_ref,
        network_ref: n.network_ref,
        all_locations: n.all_locations,
        locations: n.locations,
    }
}

pub fn network_ats(a: domain::network::NetworkAts) -> pb::NetworkAvailability {
    pb::NetworkAvailability {
        product_ref: a.product_ref,
        quantity: a.quantity,
        locations: a
            .locations
            .into_iter()
            .map(|(location_ref, quantity)| pb::LocationAvailability {
                location_ref,
                quantity,
            })
            .collect(),
    }
}

// ----- fulfilment options -----

pub fn fulfil_request(
    r: pb::GetFulfilmentOptionsRequest,
) -> Result<domain::fulfilment::FulfilRequest, domain::Error> {
    use domain::fulfilment::{Delivery, FulfilLine, FulfilRequest};
    let delivery = match pb::DeliveryType::try_from(r.delivery_type) {
        Ok(pb::DeliveryType::HomeDelivery) => {
            if !r.store_ref.is_empty() {
                return Err(invalid("store_ref", "must be empty for HOME_DELIVERY"));
            }
            Delivery::HomeDelivery
        }
        Ok(pb::DeliveryType::ClickAndCollect) => {
            if r.store_ref.is_empty() {
                return Err(invalid("store_ref", "is required for CLICK_AND_COLLECT"));
            }
            Delivery::ClickAndCollect {
                store_ref: r.store_ref,
                allow_transfer: r.allow_transfer,
            }
        }
        Ok(pb::DeliveryType::Unspecified) | Err(_) => {
            return Err(invalid(
                "delivery_type",
                "must be DELIVERY_TYPE_HOME_DELIVERY or DELIVERY_TYPE_CLICK_AND_COLLECT",
            ));
        }
    };
    let max_plans =
        u32::try_from(r.max_plans).map_err(|_| invalid("max_plans", "must not be negative"))?;
    Ok(FulfilRequest {
        channel_ref: r.channel_ref,
        lines: r
            .lines
            .into_iter()
            .map(|l| FulfilLine {
                product_ref: l.product_ref,
                quantity: l.quantity,
            })
            .collect(),
        delivery,
        max_plans,
        allow_split: r.allow_split,
        hold_ref: opt(&r.hold_ref),
        ttl_seconds: ttl("ttl_seconds", r.ttl_seconds)?,
    })
}

pub fn fulfil_plan(
    req: &domain::fulfilment::FulfilRequest,
    plan: domain::fulfilment::Plan,
) -> pb::FulfilmentPlan {
    pb::FulfilmentPlan {
        parts: plan
            .parts
            .into_iter()
            .map(|p| pb::FulfilmentPlanPart {
                location_ref: p.location_ref,
                transfer: p.transfer,
                lines: p
                    .lines
                    .into_iter()
                    .map(|(i, quantity)| pb::FulfilmentLine {
                        product_ref: req.lines[i].product_ref.clone(),
                        quantity,
                    })
                    .collect(),
            })
            .collect(),
    }
}
