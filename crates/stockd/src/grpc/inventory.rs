//! `inventory.v1.InventoryService`: storefront, cart and order traffic.
//!
//! Each handler has the same shape: convert the request (naming a bad field), call the
//! router, map the answer back. No rule of the domain lives here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::access::{check_channel, is_channel_scoped};
use super::convert;
use super::holds_query;
use super::observe::{self, observe, observe_in};
use super::status::to_status;
use crate::clock::now_millis;
use crate::metrics;
use crate::proto::inventory::v1 as pb;
use crate::proto::inventory::v1::inventory_service_server::InventoryService;
use crate::shard::Router;
use stockd_domain::OrderLine;
use stockd_domain::ReserveOutcome;
use stockd_domain::fulfilment::{Delivery, FulfilAnswer, FulfilRequest};

const SERVICE: &str = "inventory.v1.InventoryService";

/// The InventoryService implementation.
pub struct InventoryApi {
    pub router: Arc<Router>,
}

impl InventoryApi {
    /// For a caller scoped to channels: PERMISSION_DENIED unless the hold named by
    /// `hold_ref` is of one of its channels.
    async fn check_hold_channel<T>(
        &self,
        request: &Request<T>,
        hold_ref: &str,
    ) -> Result<(), Status> {
        let read = async {
            let hold = self.router.hold(now_millis(), hold_ref).await.ok()?;
            Some(hold.channel_ref)
        };
        check_owner_channel(request, read).await
    }

    /// For a caller scoped to channels: PERMISSION_DENIED unless the order named by
    /// `order_ref` is of one of its channels.
    async fn check_order_channel<T>(
        &self,
        request: &Request<T>,
        order_ref: &str,
    ) -> Result<(), Status> {
        let read = async {
            let order = self.router.order(now_millis(), order_ref).await.ok()?;
            Some(order.channel_ref)
        };
        check_owner_channel(request, read).await
    }
}

/// The channel check of a call by hold or order ref: only for a caller scoped to channels
/// is the owner's channel read (one extra read, `read` is not polled otherwise); an
/// unknown or bad ref (`None`) is left to the call itself, which answers NOT_FOUND or
/// INVALID_ARGUMENT.
async fn check_owner_channel<T>(
    request: &Request<T>,
    read: impl std::future::Future<Output = Option<String>>,
) -> Result<(), Status> {
    if !is_channel_scoped(request) {
        return Ok(());
    }
    match read.await {
        Some(channel_ref) => check_channel(request, &channel_ref),
        None => Ok(()),
    }
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn get_network_availability(
        &self,
        request: Request<pb::GetNetworkAvailabilityRequest>,
    ) -> Result<Response<pb::GetNetworkAvailabilityResponse>, Status> {
        check_channel(&request, &request.get_ref().channel_ref)?;
        let r = request.into_inner();
        observe(
            SERVICE,
            "GetNetworkAvailability",
            &r.channel_ref,
            "",
            async {
                let answers = self
                    .router
                    .network_availability(&r.channel_ref, r.product_refs, r.include_locations)
                    .await
                    .map_err(to_status)?;
                Ok(pb::GetNetworkAvailabilityResponse {
                    products: answers.into_iter().map(convert::network_ats).collect(),
                })
            },
        )
        .await
    }

    async fn get_availability(
        &self,
        request: Request<pb::GetAvailabilityRequest>,
    ) -> Result<Response<pb::GetAvailabilityResponse>, Status> {
        check_channel(&request, &request.get_ref().channel_ref)?;
        let r = request.into_inner();
        observe(SERVICE, "GetAvailability", &r.channel_ref, "", async {
            let keys: Vec<(String, String)> = r
                .keys
                .into_iter()
                .map(|k| (k.product_ref, k.location_ref))
                .collect();
            let quantities = self
                .router
                .availability(&r.channel_ref, &keys)
                .await
                .map_err(to_status)?;
            let positions = keys
                .into_iter()
                .zip(quantities)
                .map(
                    |((product_ref, location_ref), quantity)| pb::VirtualPosition {
                        r#ref: format!("{product_ref}:{location_ref}:{}", r.channel_ref),
                        product_ref,
                        location_ref,
                        channel_ref: r.channel_ref.clone(),
                        quantity,
                    },
                )
                .collect();
            Ok(pb::GetAvailabilityResponse { positions })
        })
        .await
    }

    async fn get_fulfilment_options(
        &self,
        request: Request<pb::GetFulfilmentOptionsRequest>,
    ) -> Result<Response<pb::GetFulfilmentOptionsResponse>, Status> {
        check_channel(&request, &request.get_ref().channel_ref)?;
        let r = request.into_inner();
        let span = observe::span(SERVICE, "GetFulfilmentOptions", &r.channel_ref, &r.hold_ref);
        observe_in(span, SERVICE, "GetFulfilmentOptions", async move {
            let req = convert::fulfil_request(r).map_err(to_status)?;
            let answer = self
                .router
                .fulfilment_options(now_millis(), req.clone())
                .await
                .map_err(to_status)?;
            Ok(fulfilment_response(&req, answer))
        })
        .await
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        check_channel(&request, &request.get_ref().channel_ref)?;
        let r = request.into_inner();
        let span = observe::span(SERVICE, "Reserve", &r.channel_ref, &r.hold_ref);
        // Looked up before the request moves into the router, so a known channel costs no
        // copy of its name; an unknown one is named only once the Reserve succeeded.
        let counters = metrics::channel_counters_cached(&r.channel_ref);
        observe_in(span, SERVICE, "Reserve", async move {
            let req = convert::reserve_request(r).map_err(to_status)?;
            let new_channel = counters.is_none().then(|| req.channel_ref.clone());
            let result = self
                .router
                .reserve(now_millis(), req)
                .await
                .map_err(to_status)?;
            let counters = counters.unwrap_or_else(|| {
                metrics::channel_counters(new_channel.as_deref().unwrap_or_default())
            });
            counters.reserve_outcome(result.outcome.as_str());
            Ok(pb::ReserveResponse {
                outcome: match result.outcome {
                    ReserveOutcome::Reserved => pb::ReserveOutcome::Reserved,
                    ReserveOutcome::Partial => pb::ReserveOutcome::Partial,
                    ReserveOutcome::Rejected => pb::ReserveOutcome::Rejected,
                } as i32,
                hold: result.hold.map(convert::hold),
                lines: result
                    .lines
                    .into_iter()
                    .map(|l| pb::ReserveLineResult {
                        product_ref: l.product_ref,
                        location_ref: l.location_ref,
                        requested: l.requested,
                        reserved: l.reserved,
                        available: l.available,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn confirm_hold(
        &self,
        request: Request<pb::ConfirmHoldRequest>,
    ) -> Result<Response<pb::ConfirmHoldResponse>, Status> {
        self.check_hold_channel(&request, &request.get_ref().hold_ref)
            .await?;
        let r = request.into_inner();
        observe(SERVICE, "ConfirmHold", "", &r.hold_ref, async {
            let hold = self
                .router
                .confirm(now_millis(), &r.hold_ref, &r.order_ref, r.reacquire)
                .await
                .map_err(to_status)?;
            Ok(pb::ConfirmHoldResponse {
                hold: Some(convert::hold(hold)),
            })
        })
        .await
    }

    async fn release_hold(
        &self,
        request: Request<pb::ReleaseHoldRequest>,
    ) -> Result<Response<pb::ReleaseHoldResponse>, Status> {
        self.check_hold_channel(&request, &request.get_ref().hold_ref)
            .await?;
        let r = request.into_inner();
        observe(SERVICE, "ReleaseHold", "", &r.hold_ref, async {
            let hold = self
                .router
                .release(now_millis(), &r.hold_ref)
                .await
                .map_err(to_status)?;
            Ok(pb::ReleaseHoldResponse {
                hold: Some(convert::hold(hold)),
            })
        })
        .await
    }

    async fn get_hold(
        &self,
        request: Request<pb::GetHoldRequest>,
    ) -> Result<Response<pb::GetHoldResponse>, Status> {
        self.check_hold_channel(&request, &request.get_ref().hold_ref)
            .await?;
        let r = request.into_inner();
        observe(SERVICE, "GetHold", "", &r.hold_ref, async {
            let hold = self
                .router
                .hold(now_millis(), &r.hold_ref)
                .await
                .map_err(to_status)?;
            Ok(pb::GetHoldResponse {
                hold: Some(convert::hold(hold)),
            })
        })
        .await
    }

    async fn list_holds(
        &self,
        request: Request<pb::ListHoldsRequest>,
    ) -> Result<Response<pb::ListHoldsResponse>, Status> {
        holds_query::check_list_channel(&request)?;
        let r = request.into_inner();
        let span = observe::span(SERVICE, "ListHolds", &r.channel_ref, "");
        observe_in(span, SERVICE, "ListHolds", async move {
            holds_query::list_holds(&self.router, r).await
        })
        .await
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        observe(SERVICE, "GetOrder", "", "", async {
            holds_query::get_order(&self.router, &request).await
        })
        .await
    }

    async fn fulfil_order(
        &self,
        request: Request<pb::FulfilOrderRequest>,
    ) -> Result<Response<pb::FulfilOrderResponse>, Status> {
        self.check_order_channel(&request, &request.get_ref().order_ref)
            .await?;
        let r = request.into_inner();
        observe(SERVICE, "FulfilOrder", "", "", async {
            let lines = r
                .lines
                .into_iter()
                .enumerate()
                .map(|(i, l)| OrderLine {
                    index: i as u32,
                    product_ref: l.product_ref,
                    location_ref: l.location_ref,
                    quantity: l.quantity,
                })
                .collect();
            let shipped = self
                .router
                .fulfil(now_millis(), &r.order_ref, lines)
                .await
                .map_err(to_status)?;
            Ok(pb::FulfilOrderResponse {
                order_ref: r.order_ref,
                lines: convert::order_lines(shipped),
            })
        })
        .await
    }

    async fn cancel_order(
        &self,
        request: Request<pb::CancelOrderRequest>,
    ) -> Result<Response<pb::CancelOrderResponse>, Status> {
        self.check_order_channel(&request, &request.get_ref().order_ref)
            .await?;
        let r = request.into_inner();
        observe(SERVICE, "CancelOrder", "", "", async {
            let cancelled = self
                .router
                .cancel_order(now_millis(), &r.order_ref)
                .await
                .map_err(to_status)?;
            Ok(pb::CancelOrderResponse {
                order_ref: r.order_ref,
                lines: convert::order_lines(cancelled),
            })
        })
        .await
    }
}

/// The response of GetFulfilmentOptions, counted (`metrics::fulfilment_answer`).
fn fulfilment_response(
    req: &FulfilRequest,
    answer: FulfilAnswer,
) -> pb::GetFulfilmentOptionsResponse {
    let delivery = match req.delivery {
        Delivery::HomeDelivery => "home_delivery",
        Delivery::ClickAndCollect { .. } => "click_and_collect",
    };
    let result = match (answer.plans.first(), &answer.held) {
        (None, _) => "stockout",
        (Some(_), Some(_)) => "held",
        (Some(p), None) if p.parts.len() == 1 => "single",
        (Some(_), None) => "split",
    };
    let requested: i64 = req.lines.iter().map(|l| l.quantity).sum();
    let stockout = answer
        .plans
        .is_empty()
        .then(|| (requested, answer.available.iter().sum()));
    metrics::fulfilment_answer(&req.channel_ref, delivery, result, stockout);
    if stockout.is_some() {
        tracing::debug!(channel = %req.channel_ref, delivery, ?answer.available, "fulfilment stockout");
    }
    let (held_plan, hold, outcome) = match answer.held {
        Some((i, r)) => (
            Some(i as i32),
            r.hold.map(convert::hold),
            pb::ReserveOutcome::Reserved,
        ),
        None if req.hold_ref.is_some() => (None, None, pb::ReserveOutcome::Rejected),
        None => (None, None, pb::ReserveOutcome::Unspecified),
    };
    pb::GetFulfilmentOptionsResponse {
        plans: answer
            .plans
            .into_iter()
            .map(|p| convert::fulfil_plan(req, p))
            .collect(),
        lines: req
            .lines
            .iter()
            .zip(&answer.available)
            .map(|(l, a)| pb::FulfilmentLineAvailability {
                product_ref: l.product_ref.clone(),
                requested: l.quantity,
                available: *a,
            })
            .collect(),
        held_plan,
        hold,
        outcome: outcome as i32,
    }
}
