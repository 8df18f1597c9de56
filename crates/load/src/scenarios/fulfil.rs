//! `fulfil`: the reads of issue #15 over a seeded network of L locations, one kind per
//! run, so that GetFulfilmentOptions, GetNetworkAvailability and the GetAvailability of
//! as many keys can be compared on the same server (`--read fulfil|network|keys`).

use std::sync::Arc;

use rand::Rng;
use stockd::proto::inventory::v1 as pb;
use stockd::proto::inventory::v1::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;

use super::{Worker, encode, rng_for, worker};
use crate::cli::{FulfilArgs, FulfilRead};
use crate::report::{Ran, ScenarioReport};
use crate::rpc::{self, Client, Framed};
use crate::runner::{self, Load, Recorder};
use crate::schema::Method;
use crate::session::Session;

/// Distinct pre-encoded requests the workers pick from.
const POOL: usize = 4_096;
/// Most counts in one SetStock (the server's STOCK_BATCH_MAX).
const SEED_BATCH: usize = 1_000;

pub async fn run(args: &FulfilArgs, session: &Session) -> Result<Ran, String> {
    let prefix = &session.prefix;
    let channel_ref = session.load.channel.clone();
    let locations: Vec<String> = (0..args.locations)
        .map(|i| format!("{prefix}-l{i}"))
        .collect();
    let products: Vec<String> = (0..args.products)
        .map(|i| format!("{prefix}-p{i}"))
        .collect();
    session.say(&format!(
        "seeding {} locations and {} products at each ({prefix}-*)",
        locations.len(),
        products.len()
    ));
    seed(
        &session.seed,
        &channel_ref,
        &locations,
        &products,
        args.stock,
    )
    .await?;
    let (method, pool) = pool(args, &channel_ref, &locations, &products)?;
    let load = Arc::new(PoolLoad { pool, method });
    let outcome = runner::run(load, &session.plan(), &session.target).await?;
    let mut report = ScenarioReport::named("fulfil");
    report.line(
        "Network",
        format!(
            "{} locations, {} products, {:?} of {} lines/keys",
            args.locations, args.products, args.read, args.lines
        ),
    );
    report
        .json
        .insert("locations".into(), args.locations.into());
    report.json.insert("lines".into(), args.lines.into());
    Ok(Ran {
        outcome,
        scenario: Some(report),
        call: method.names().fully_qualified.clone(),
        data: None,
    })
}

/// The channel, the locations (all ship home deliveries), and the stock: product p at
/// location l has `stock` units unless (p + l) % 3 == 0, so carts need a choice.
async fn seed(
    channel: &Channel,
    channel_ref: &str,
    locations: &[String],
    products: &[String],
    stock: i64,
) -> Result<(), String> {
    let mut admin = AdminServiceClient::new(channel.clone());
    fn err(what: &'static str) -> impl Fn(tonic::Status) -> String {
        move |e| format!("seeding: {what}: {}", rpc::error_text(&e))
    }
    let channel_config = pb::Channel {
        channel_ref: channel_ref.to_string(),
        ..Default::default()
    };
    admin
        .upsert_channel(pb::UpsertChannelRequest {
            channel: Some(channel_config),
        })
        .await
        .map_err(err("UpsertChannel"))?;
    let locations_config = locations
        .iter()
        .enumerate()
        .map(|(i, l)| pb::Location {
            location_ref: l.clone(),
            r#type: pb::LocationType::Warehouse as i32,
            ships_home_delivery: true,
            serves_click_collect: false,
            priority: (i % 7) as i32,
        })
        .collect();
    admin
        .upsert_locations(pb::UpsertLocationsRequest {
            locations: locations_config,
        })
        .await
        .map_err(err("UpsertLocations"))?;
    let counts: Vec<pb::StockCount> = products
        .iter()
        .enumerate()
        .flat_map(|(p, product)| {
            locations
                .iter()
                .enumerate()
                .map(move |(l, location)| pb::StockCount {
                    product_ref: product.clone(),
                    location_ref: location.clone(),
                    quantity: if (p + l) % 3 == 0 { 0 } else { stock },
                    as_of: None,
                })
        })
        .collect();
    for chunk in counts.chunks(SEED_BATCH) {
        admin
            .set_stock(pb::SetStockRequest {
                counts: chunk.to_vec(),
            })
            .await
            .map_err(err("SetStock"))?;
    }
    Ok(())
}

/// The method of `--read` and `POOL` requests of it over random products.
fn pool(
    args: &FulfilArgs,
    channel_ref: &str,
    locations: &[String],
    products: &[String],
) -> Result<(Method, Vec<Framed>), String> {
    let mut rng = rng_for(usize::MAX);
    let lines = (args.lines as usize).min(products.len());
    let pick = |rng: &mut rand::rngs::SmallRng| {
        let mut picked: Vec<usize> = Vec::with_capacity(lines);
        while picked.len() < lines {
            let i = rng.random_range(0..products.len());
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        picked
    };
    let name = match args.read {
        FulfilRead::Fulfil => "inventory.v1.InventoryService.GetFulfilmentOptions",
        FulfilRead::Network => "inventory.v1.InventoryService.GetNetworkAvailability",
        FulfilRead::Keys => "inventory.v1.InventoryService.GetAvailability",
    };
    let method = Method::parse(name)?;
    let requests = (0..POOL)
        .map(|_| {
            let picked = pick(&mut rng);
            match args.read {
                FulfilRead::Fulfil => encode(&pb::GetFulfilmentOptionsRequest {
                    channel_ref: channel_ref.to_string(),
                    lines: picked
                        .iter()
                        .map(|&i| pb::FulfilmentLine {
                            product_ref: products[i].clone(),
                            quantity: 1,
                        })
                        .collect(),
                    delivery_type: pb::DeliveryType::HomeDelivery as i32,
                    allow_split: true,
                    ..Default::default()
                }),
                FulfilRead::Network => encode(&pb::GetNetworkAvailabilityRequest {
                    channel_ref: channel_ref.to_string(),
                    product_refs: vec![products[picked[0]].clone()],
                    include_locations: false,
                }),
                FulfilRead::Keys => encode(&pb::GetAvailabilityRequest {
                    channel_ref: channel_ref.to_string(),
                    keys: picked
                        .iter()
                        .map(|&i| pb::PositionKey {
                            product_ref: products[i].clone(),
                            location_ref: locations[rng.random_range(0..locations.len())].clone(),
                        })
                        .collect(),
                }),
            }
        })
        .collect();
    Ok((method, requests))
}

/// Sends a request picked at random from a pre-encoded pool; the answer is not needed.
struct PoolLoad {
    pool: Vec<Framed>,
    method: Method,
}

impl Load for PoolLoad {
    type Worker = Worker;

    fn worker(&self, index: usize, client: Client) -> Worker {
        worker(index, client)
    }

    async fn run(&self, w: &mut Worker, _n: u64, rec: &mut Recorder) {
        let body = self.pool[w.rng.random_range(0..self.pool.len())].clone();
        let _ = rec
            .call(
                self.method,
                rpc::unary::<()>(&mut w.client, self.method, body),
            )
            .await;
    }
}
