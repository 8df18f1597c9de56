//! `inventory.v1.AdminService`: stock feeds and configuration.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::access::check_channel;
use super::convert;
use super::observe::observe;
use super::status::{ApiError, to_status};
use crate::clock::now_millis;
use crate::proto::inventory::v1 as pb;
use crate::proto::inventory::v1::admin_service_server::AdminService;
use crate::shard::Router;
use stockd_domain::{AdjustStatus, CountStatus};

const SERVICE: &str = "inventory.v1.AdminService";

/// The AdminService implementation.
pub struct AdminApi {
    pub router: Arc<Router>,
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn set_stock(
        &self,
        request: Request<pb::SetStockRequest>,
    ) -> Result<Response<pb::SetStockResponse>, Status> {
        let r = request.into_inner();
        observe(SERVICE, "SetStock", "", "", async {
            let now = now_millis();
            let counts = r
                .counts
                .into_iter()
                .enumerate()
                .map(|(i, c)| convert::stock_count(i, c, now))
                .collect::<Result<Vec<_>, _>>()
                .map_err(to_status)?;
            let keys: Vec<(String, String)> = counts
                .iter()
                .map(|c| (c.product_ref.clone(), c.location_ref.clone()))
                .collect();
            let statuses = self
                .router
                .set_stock(now, counts)
                .await
                .map_err(to_status)?;
            Ok(pb::SetStockResponse {
                results: keys
                    .into_iter()
                    .zip(statuses)
                    .map(|((product_ref, location_ref), s)| pb::StockCountResult {
                        product_ref,
                        location_ref,
                        status: match s {
                            CountStatus::Applied => pb::StockCountStatus::Applied,
                            CountStatus::Stale => pb::StockCountStatus::Stale,
                        } as i32,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn adjust_stock(
        &self,
        request: Request<pb::AdjustStockRequest>,
    ) -> Result<Response<pb::AdjustStockResponse>, Status> {
        let r = request.into_inner();
        observe(SERVICE, "AdjustStock", "", "", async {
            let adjustments = r
                .adjustments
                .into_iter()
                .enumerate()
                .map(|(i, a)| convert::adjustment(i, a))
                .collect::<Result<Vec<_>, _>>()
                .map_err(to_status)?;
            let refs: Vec<String> = adjustments
                .iter()
                .map(|a| a.adjustment_ref.clone())
                .collect();
            let statuses = self
                .router
                .adjust_stock(now_millis(), adjustments)
                .await
                .map_err(to_status)?;
            Ok(pb::AdjustStockResponse {
                results: refs
                    .into_iter()
                    .zip(statuses)
                    .map(|(adjustment_ref, s)| pb::StockAdjustmentResult {
                        adjustment_ref,
                        status: match s {
                            AdjustStatus::Applied => pb::AdjustmentStatus::Applied,
                            AdjustStatus::Duplicate => pb::AdjustmentStatus::Duplicate,
                        } as i32,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn get_position(
        &self,
        request: Request<pb::GetPositionRequest>,
    ) -> Result<Response<pb::GetPositionResponse>, Status> {
        let r = request.into_inner();
        observe(SERVICE, "GetPosition", "", "", async {
            let view = self
                .router
                .position(&r.product_ref, &r.location_ref, r.include_ledger)
                .await
                .map_err(to_status)?
                .ok_or_else(|| {
                    to_status(ApiError::PositionNotFound {
                        product_ref: r.product_ref.clone(),
                        location_ref: r.location_ref.clone(),
                    })
                })?;
            Ok(pb::GetPositionResponse {
                position: Some(convert::position(view)),
            })
        })
        .await
    }

    async fn upsert_channel(
        &self,
        request: Request<pb::UpsertChannelRequest>,
    ) -> Result<Response<pb::UpsertChannelResponse>, Status> {
        check_channel(
            &request,
            request
                .get_ref()
                .channel
                .as_ref()
                .map_or("", |c| &c.channel_ref),
        )?;
        let r = request.into_inner();
        observe(SERVICE, "UpsertChannel", "", "", async {
            let channel = r
                .channel
                .ok_or_else(|| to_status(convert::invalid("channel", "is required")))?;
            let config = convert::channel_in(channel).map_err(to_status)?;
            self.router
                .upsert_channel(now_millis(), config.clone())
                .await
                .map_err(to_status)?;
            Ok(pb::UpsertChannelResponse {
                channel: Some(convert::channel_out(config)),
            })
        })
        .await
    }

    async fn list_channels(
        &self,
        _request: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        observe(SERVICE, "ListChannels", "", "", async {
            let channels = self.router.channels().await.map_err(to_status)?;
            let total = channels.iter().map(|c| i64::from(c.allocation_bps)).sum();
            Ok(pb::ListChannelsResponse {
                channels: channels.into_iter().map(convert::channel_out).collect(),
                allocation_bps_total: total,
            })
        })
        .await
    }

    async fn delete_channel(
        &self,
        request: Request<pb::DeleteChannelRequest>,
    ) -> Result<Response<pb::DeleteChannelResponse>, Status> {
        check_channel(&request, &request.get_ref().channel_ref)?;
        let r = request.into_inner();
        observe(SERVICE, "DeleteChannel", &r.channel_ref, "", async {
            self.router
                .delete_channel(now_millis(), &r.channel_ref)
                .await
                .map_err(to_status)?;
            Ok(pb::DeleteChannelResponse {})
        })
        .await
    }

    async fn upsert_products(
        &self,
        request: Request<pb::UpsertProductsRequest>,
    ) -> Result<Response<pb::UpsertProductsResponse>, Status> {
        let r = request.into_inner();
        observe(SERVICE, "UpsertProducts", "", "", async {
            let products = r
                .products
                .clone()
                .into_iter()
                .enumerate()
                .map(|(i, p)| convert::product_in(i, p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(to_status)?;
            self.router
                .upsert_products(now_millis(), products)
                .await
                .map_err(to_status)?;
            Ok(pb::UpsertProductsResponse {
                products: r.products,
            })
        })
        .await
    }

    async fn upsert_categories(
        &self,
        request: Request<pb::UpsertCategoriesRequest>,
    ) -> Result<Response<pb::UpsertCategoriesResponse>, Status> {
        let r = request.into_inner();
        observe(SERVICE, "UpsertCategories", "", "", async {
            let categories = r
                .categories
                .clone()
                .into_iter()
                .enumerate()
                .map(|(i, c)| convert::category_in(i, c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(to_status)?;
            self.router
                .upsert_categories(now_millis(), categories)
                .await
                .map_err(to_status)?;
            Ok(pb::UpsertCategoriesResponse {
                categories: r.categories,
            })
        })
        .await
    }

    async fn rebalance(
        &self,
        request: Request<pb::RebalanceRequest>,
    ) -> Result<Response<pb::RebalanceResponse>, Status> {
        let r = request.into_inner();
        observe(SERVICE, "Rebalance", "", "", async {
            let n = self
                .router
                .rebalance(now_millis(), opt(r.product_ref), opt(r.location_ref))
                .await
                .map_err(to_status)?;
            Ok(pb::RebalanceResponse {
                positions_rebalanced: n as i64,
            })
        })
        .await
    }

    async fn upsert_locations(
        &self,
        request: Request<pb::UpsertLocationsRequest>,
    ) -> Result<Response<pb::UpsertLocationsResponse>, Status> {
        let r = request.into_inner();
        observe(SERVICE, "UpsertLocations", "", "", async {
            let locations = r
                .locations
                .into_iter()
                .enumerate()
                .map(|(i, l)| convert::location_in(i, l))
                .collect::<Result<Vec<_>, _>>()
                .map_err(to_status)?;
            self.router
                .upsert_locations(now_millis(), locations)
                .await
                .map_err(to_status)?;
            Ok(pb::UpsertLocationsResponse {})
        })
        .await
    }

    async fn list_locations(
        &self,
        _request: Request<pb::ListLocationsRequest>,
    ) -> Result<Response<pb::ListLocationsResponse>, Status> {
        observe(SERVICE, "ListLocations", "", "", async {
            let view = self.router.network().await.map_err(to_status)?;
            Ok(pb::ListLocationsResponse {
                locations: (view.snap.locations.iter().cloned())
                    .map(convert::location_out)
                    .collect(),
            })
        })
        .await
    }

    async fn delete_location(
        &self,
        request: Request<pb::DeleteLocationRequest>,
    ) -> Result<Response<pb::DeleteLocationResponse>, Status> {
        let r = request.into_inner();
        observe(SERVICE, "DeleteLocation", "", "", async {
            self.router
                .delete_location(now_millis(), &r.location_ref)
                .await
                .map_err(to_status)?;
            Ok(pb::DeleteLocationResponse {})
        })
        .await
    }

    async fn set_channel_network(
        &self,
        request: Request<pb::SetChannelNetworkRequest>,
    ) -> Result<Response<pb::SetChannelNetworkResponse>, Status> {
        let network = request.get_ref().network.as_ref();
        let channel = network.map_or("", |n| n.channel_ref.as_str()).to_string();
        check_channel(&request, &channel)?;
        let r = request.into_inner();
        observe(SERVICE, "SetChannelNetwork", &channel, "", async {
            let network = convert::network_in(r.network).map_err(to_status)?;
            self.router
                .set_network(now_millis(), network.clone())
                .await
                .map_err(to_status)?;
            Ok(pb::SetChannelNetworkResponse {
                network: Some(convert::network_out(network)),
            })
        })
        .await
    }

    async fn list_channel_networks(
        &self,
        _request: Request<pb::ListChannelNetworksRequest>,
    ) -> Result<Response<pb::ListChannelNetworksResponse>, Status> {
        observe(SERVICE, "ListChannelNetworks", "", "", async {
            let view = self.router.network().await.map_err(to_status)?;
            Ok(pb::ListChannelNetworksResponse {
                networks: (view.snap.networks.iter().cloned())
                    .map(convert::network_out)
                    .collect(),
            })
        })
        .await
    }
}
