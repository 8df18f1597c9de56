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
use stockd_domain::IqKind;

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

/// The IQ change `iq` of event `e` as ((product, location), InventoryQuantity).
pub fn quantity(e: &EventRecord, iq: &IqRecord) -> ((String, String), pb::InventoryQuantity) {
    let (product, location) = iq.position(e);
    let (product, location) = (
        product.unwrap_or_default().to_owned(),
        location.unwrap_or_default().to_owned(),
    );
    let kind = iq.kind();
    let owner = iq.owner(e).unwrap_or_default().to_owned();
    let (hold_ref, order_ref, adjustment_ref) = match kind {
        Some(IqKind::SoftReserve) => (owner, String::new(), String::new()),
        Some(IqKind::Reserved | IqKind::Sale) => (String::new(), owner, String::new()),
        _ => (String::new(), String::new(), owner),
    };
    let occurred = !matches!(kind, Some(IqKind::SoftReserve | IqKind::Reserved));
    let status = if iq.active {
        pb::QuantityStatus::Active
    } else {
        pb::QuantityStatus::Inactive
    };
    let quantity = pb::InventoryQuantity {
        r#ref: format!("{product}:{location}:{}", iq.id),
        r#type: kind.map_or(0, |k| quantity_type(k) as i32),
        quantity: iq.quantity,
        status: status as i32,
        channel_ref: iq.channel(e).unwrap_or_default().to_owned(),
        hold_ref,
        order_ref,
        adjustment_ref,
        // An IQ's creation is the event of its ACTIVE change; INACTIVE ones do not say.
        created_at: iq.active.then(|| timestamp(e.at)),
        updated_at: Some(timestamp(e.at)),
        occurred_at: occurred.then(|| timestamp(iq.occurred_at)),
        expires_at: iq.expires_at.map(timestamp),
    };
    ((product, location), quantity)
}
