//! `GetPositionHistory`: a position's audit trail over gRPC, from the event log's IQ
//! changes (`storage::events::history`), and the IQ change ↔ protobuf conversion that
//! `Event.quantity_changes` shares.

use std::sync::Arc;

use tonic::Status;

use super::convert::{invalid, quantity_type, timestamp};
use super::status::{ApiError, to_status};
use crate::limits::{EVENTS_LIST_PAGE_DEFAULT, EVENTS_LIST_PAGE_MAX};
use crate::proto::inventory::v1 as pb;
use crate::storage::events::history::{HistoryAt, HistoryPage};
use crate::storage::events::record::{EventRecord, IqRecord};
use crate::storage::events::{EventsError, Shared};
use stockd_domain::{IqKind, Millis};

/// Answers one GetPositionHistory request.
pub async fn get_position_history(
    events: &Arc<Shared>,
    req: pb::GetPositionHistoryRequest,
) -> Result<pb::GetPositionHistoryResponse, Status> {
    let check = |field: &str, value: &str| {
        stockd_domain::refs::check_ref(value).map_err(|r| to_status(invalid(field, r)))
    };
    check("product_ref", &req.product_ref)?;
    check("location_ref", &req.location_ref)?;
    let size = match req.page_size as usize {
        0 => EVENTS_LIST_PAGE_DEFAULT,
        n if n > EVENTS_LIST_PAGE_MAX => {
            return Err(to_status(invalid(
                "page_size",
                format!("must be at most {EVENTS_LIST_PAGE_MAX}"),
            )));
        }
        n => n,
    };
    let at = match req.page_token.as_str() {
        "" => HistoryAt {
            seq: events.oldest(),
            skip: 0,
        },
        token => HistoryAt::parse(token).ok_or_else(|| {
            to_status(invalid(
                "page_token",
                "is not a token of a previous GetPositionHistory response",
            ))
        })?,
    };
    let shared = events.clone();
    let (product, location) = (req.product_ref.clone(), req.location_ref.clone());
    let page: HistoryPage =
        tokio::task::spawn_blocking(move || shared.history(&product, &location, at, size))
            .await
            .map_err(|e| {
                to_status(ApiError::Events(EventsError::Unavailable(format!(
                    "history read failed: {e}"
                ))))
            })?
            .map_err(|e| to_status(ApiError::Events(e)))?;
    Ok(pb::GetPositionHistoryResponse {
        changes: page
            .changes
            .iter()
            .map(|c| pb::PositionChange {
                sequence: c.event.seq,
                kind: c.event.record.kind as i32 + 1,
                time: Some(timestamp(c.event.record.at)),
                quantity: Some(quantity(&c.event.record, c.iq()).1),
            })
            .collect(),
        next_page_token: page.next.map(HistoryAt::token).unwrap_or_default(),
        oldest_sequence: events.oldest(),
        last_sequence: events.published(),
    })
}

/// One IQ change as the API shows it, its strings borrowed from the stored event: the
/// one place that decides which ref, channel and times an IQ change carries, for both the
/// protobuf messages (`quantity`) and WatchEvents' direct encoding (`event_wire`).
pub struct IqView<'a> {
    pub product: &'a str,
    pub location: &'a str,
    /// The IQ's id within its position (its ref is `product:location:id`).
    pub id: u64,
    /// `pb::QuantityType` as a number (0: a kind this build does not know).
    pub r#type: i32,
    pub quantity: i64,
    /// `pb::QuantityStatus` as a number.
    pub status: i32,
    pub channel: &'a str,
    pub hold: &'a str,
    pub order: &'a str,
    pub adjustment: &'a str,
    pub created_at: Option<Millis>,
    pub updated_at: Millis,
    pub occurred_at: Option<Millis>,
    pub expires_at: Option<Millis>,
}

impl<'a> IqView<'a> {
    /// The IQ change `iq` of event `e`.
    pub fn of(e: &'a EventRecord, iq: &'a IqRecord) -> IqView<'a> {
        let (product, location) = iq.position(e);
        let kind = iq.kind();
        let owner = iq.owner(e).unwrap_or_default();
        let (hold, order, adjustment) = match kind {
            Some(IqKind::SoftReserve) => (owner, "", ""),
            Some(IqKind::Reserved | IqKind::Sale) => ("", owner, ""),
            _ => ("", "", owner),
        };
        let occurred = !matches!(kind, Some(IqKind::SoftReserve | IqKind::Reserved));
        let status = if iq.active {
            pb::QuantityStatus::Active
        } else {
            pb::QuantityStatus::Inactive
        };
        IqView {
            product: product.unwrap_or_default(),
            location: location.unwrap_or_default(),
            id: iq.id,
            r#type: kind.map_or(0, |k| quantity_type(k) as i32),
            quantity: iq.quantity,
            status: status as i32,
            channel: iq.channel(e).unwrap_or_default(),
            hold,
            order,
            adjustment,
            // An IQ's creation is the event of its ACTIVE change; INACTIVE ones do not say.
            created_at: iq.active.then_some(e.at),
            updated_at: e.at,
            occurred_at: occurred.then_some(iq.occurred_at),
            expires_at: iq.expires_at,
        }
    }
}

/// The IQ change `iq` of event `e` as ((product, location), InventoryQuantity).
pub fn quantity(e: &EventRecord, iq: &IqRecord) -> ((String, String), pb::InventoryQuantity) {
    let v = IqView::of(e, iq);
    let quantity = pb::InventoryQuantity {
        r#ref: format!("{}:{}:{}", v.product, v.location, v.id),
        r#type: v.r#type,
        quantity: v.quantity,
        status: v.status,
        channel_ref: v.channel.to_owned(),
        hold_ref: v.hold.to_owned(),
        order_ref: v.order.to_owned(),
        adjustment_ref: v.adjustment.to_owned(),
        created_at: v.created_at.map(timestamp),
        updated_at: Some(timestamp(v.updated_at)),
        occurred_at: v.occurred_at.map(timestamp),
        expires_at: v.expires_at.map(timestamp),
    };
    ((v.product.to_owned(), v.location.to_owned()), quantity)
}
