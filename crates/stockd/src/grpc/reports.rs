//! `GetChannelReport`: a channel's demand figures over gRPC, read from the report's time
//! buckets (`storage::events::report`), never from the log itself.

use std::sync::Arc;

use prost_types::Duration;
use tonic::Status;

use super::convert::{invalid, millis, timestamp};
use super::status::{ApiError, to_status};
use crate::limits::{REPORT_TOP_PRODUCTS_DEFAULT, REPORT_TOP_PRODUCTS_MAX};
use crate::proto::inventory::v1 as pb;
use crate::storage::events::Shared;
use crate::storage::events::report::{Query, Stats};

/// The request, checked, as a report query.
fn query(req: pb::GetChannelReportRequest) -> Result<Query, Status> {
    let bad = |field: &str, reason: &str| to_status(invalid(field, reason));
    stockd_domain::refs::check_ref(&req.channel_ref)
        .map_err(|r| to_status(invalid("channel_ref", r)))?;
    let from = millis("from_time", req.from_time.as_ref())
        .map_err(to_status)?
        .ok_or_else(|| bad("from_time", "is required"))?;
    let to = millis("to_time", req.to_time.as_ref())
        .map_err(to_status)?
        .ok_or_else(|| bad("to_time", "is required"))?;
    if to <= from {
        return Err(bad("to_time", "must be after from_time"));
    }
    let named = |field: &str, value: String| -> Result<Option<String>, Status> {
        if value.is_empty() {
            return Ok(None);
        }
        stockd_domain::refs::check_ref(&value).map_err(|r| to_status(invalid(field, r)))?;
        Ok(Some(value))
    };
    let top = match req.top_products as usize {
        0 => REPORT_TOP_PRODUCTS_DEFAULT,
        n if n > REPORT_TOP_PRODUCTS_MAX => {
            return Err(bad(
                "top_products",
                &format!("must be at most {REPORT_TOP_PRODUCTS_MAX}"),
            ));
        }
        n => n,
    };
    Ok(Query {
        product: named("product_ref", req.product_ref)?,
        location: named("location_ref", req.location_ref)?,
        channel: req.channel_ref,
        from,
        to,
        top,
    })
}

/// Answers one GetChannelReport request (the caller's channel was checked).
pub async fn get_channel_report(
    events: &Arc<Shared>,
    req: pb::GetChannelReportRequest,
) -> Result<pb::GetChannelReportResponse, Status> {
    let q = query(req)?;
    let shared = events.clone();
    let query = q.clone();
    let answer = tokio::task::spawn_blocking(move || shared.reports().query(&query))
        .await
        .map_err(|e| {
            to_status(ApiError::Events(
                crate::storage::events::EventsError::Unavailable(format!("report failed: {e}")),
            ))
        })?
        .map_err(|e| to_status(ApiError::Events(e)))?;
    Ok(pb::GetChannelReportResponse {
        channel_ref: q.channel,
        from_time: Some(timestamp(answer.from)),
        to_time: Some(timestamp(answer.to)),
        figures: Some(figures(&answer.figures)),
        top_rejected: answer
            .top
            .into_iter()
            .map(|r| pb::RejectedDemand {
                product_ref: r.product,
                rejections: r.rejections,
                units_requested: r.units_requested,
                units_available: r.units_available,
            })
            .collect(),
        products_complete: answer.complete,
        covered_from_time: Some(timestamp(answer.covered_from)),
    })
}

fn duration(ms: i64) -> Duration {
    Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

fn figures(s: &Stats) -> pb::ChannelFigures {
    pb::ChannelFigures {
        holds_created: s.holds_created,
        holds_updated: s.holds_updated,
        holds_confirmed: s.holds_confirmed,
        holds_released: s.holds_released,
        holds_expired: s.holds_expired,
        conversion_bps: s.conversion_bps(),
        confirm_time_p50: s.confirm_percentile_ms(50).map(duration),
        confirm_time_p90: s.confirm_percentile_ms(90).map(duration),
        units_held: s.units_held,
        units_confirmed: s.units_confirmed,
        units_sold: s.units_sold,
        units_returned: s.units_returned,
        units_cancelled: s.units_cancelled,
        stockout_rejections: s.rejections,
        units_requested: s.units_requested,
        units_available: s.units_available,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_policy_knows_the_report_and_history_methods() {
        let text = br#"
[[identities]]
name = "analyst"
methods = ["inventory.v1.EventService/GetChannelReport", "inventory.v1.EventService/GetPositionHistory"]
channels = ["WEB"]
"#;
        let policy = crate::grpc::policy::Policy::parse(text).expect("a valid policy");
        let (_, grant) = policy.grant(&["analyst"]).expect("the analyst");
        assert!(grant.allows("inventory.v1.EventService", "GetChannelReport"));
        assert!(grant.allows("inventory.v1.EventService", "GetPositionHistory"));
    }
}
