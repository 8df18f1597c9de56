//! The scenarios: loads that seed what they need through AdminService under a
//! run-unique prefix, so they can be rerun against the same server. This file holds
//! what they share: seeding, pre-encoded requests, outcome counts and worker state.

pub mod browse;
pub mod checkout;
pub mod checkpoint_read;
pub mod flash_sale;
pub mod fulfil;
pub mod health;
pub mod reserve;

use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use stockd::proto::inventory::v1 as pb;
use stockd::proto::inventory::v1::admin_service_client::AdminServiceClient;
use tonic::Status;
use tonic::transport::Channel;

use crate::report::ScenarioReport;
use crate::rpc::{self, Client, Framed, ReserveOutcomeOnly};
use crate::runner::Recorder;
use crate::schema::Method;
use crate::session::Session;

/// Most items in one SetStock (the server's STOCK_BATCH_MAX).
const SEED_BATCH: usize = 1_000;
/// Distinct pre-encoded GetAvailability requests a browsing worker picks from.
const BROWSE_POOL: usize = 4_096;

/// A request encoded and framed once, sent as it is.
pub fn encode<M: Message>(m: &M) -> Framed {
    Framed::encode(m)
}

/// An RNG of its own for each worker, so workers never share one.
pub fn rng_for(worker: usize) -> SmallRng {
    SmallRng::seed_from_u64(
        rand::random::<u64>() ^ (worker as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    )
}

/// A fresh prefix for the refs of one run, so reruns never collide.
pub fn run_prefix(given: Option<&str>) -> String {
    match given {
        Some(p) => p.to_string(),
        None => format!("ld{:08x}", rand::random::<u32>()),
    }
}

/// What a scenario seeded.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub prefix: String,
    pub channel_ref: String,
    pub location: String,
    pub products: Vec<String>,
}

/// Configures `channel_ref` (whole stock, no buffers) and sets `stock` units of each of
/// `count` products `{prefix}-p{i}` at location `{prefix}-wh`.
pub async fn seed(
    channel: &Channel,
    channel_ref: &str,
    prefix: &str,
    count: usize,
    stock: i64,
) -> Result<Seeded, String> {
    let products: Vec<String> = (0..count).map(|i| format!("{prefix}-p{i}")).collect();
    seed_products(channel, channel_ref, prefix, products, stock).await
}

pub async fn seed_products(
    channel: &Channel,
    channel_ref: &str,
    prefix: &str,
    products: Vec<String>,
    stock: i64,
) -> Result<Seeded, String> {
    let location = format!("{prefix}-wh");
    let mut admin = AdminServiceClient::new(channel.clone());
    admin
        .upsert_channel(pb::UpsertChannelRequest {
            channel: Some(pb::Channel {
                channel_ref: channel_ref.to_string(),
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| {
            format!(
                "seeding: UpsertChannel {channel_ref:?}: {}",
                rpc::error_text(&e)
            )
        })?;
    for chunk in products.chunks(SEED_BATCH) {
        admin
            .set_stock(pb::SetStockRequest {
                counts: chunk
                    .iter()
                    .map(|p| pb::StockCount {
                        product_ref: p.clone(),
                        location_ref: location.clone(),
                        quantity: stock,
                        as_of: None,
                    })
                    .collect(),
            })
            .await
            .map_err(|e| format!("seeding: SetStock: {}", rpc::error_text(&e)))?;
    }
    Ok(Seeded {
        prefix: prefix.to_string(),
        channel_ref: channel_ref.to_string(),
        location,
        products,
    })
}

/// Pre-encodes `BROWSE_POOL` GetAvailability requests of `keys` distinct random products.
pub fn browse_pool(seeded: &Seeded, keys: usize) -> Vec<Framed> {
    let mut rng = rng_for(usize::MAX);
    let keys = keys.min(seeded.products.len()).max(1);
    let pool = BROWSE_POOL.min(seeded.products.len().pow(keys.min(3) as u32).max(1));
    (0..pool)
        .map(|_| {
            let mut picked: Vec<usize> = Vec::with_capacity(keys);
            while picked.len() < keys {
                let i = rng.random_range(0..seeded.products.len());
                if !picked.contains(&i) {
                    picked.push(i);
                }
            }
            encode(&pb::GetAvailabilityRequest {
                channel_ref: seeded.channel_ref.clone(),
                keys: picked
                    .into_iter()
                    .map(|i| pb::PositionKey {
                        product_ref: seeded.products[i].clone(),
                        location_ref: seeded.location.clone(),
                    })
                    .collect(),
            })
        })
        .collect()
}

/// Sends one GetAvailability picked at random from a pool of `browse_pool`'s, recording
/// it; its answer is not needed.
pub async fn read_from_pool(pool: &[Framed], w: &mut Worker, rec: &mut Recorder) {
    let body = pool[w.rng.random_range(0..pool.len())].clone();
    let _ = rec
        .call(
            Method::get_availability(),
            rpc::unary::<()>(&mut w.client, Method::get_availability(), body),
        )
        .await;
}

/// Hold outcomes and follow-ups counted across workers.
#[derive(Default)]
pub struct Counts {
    pub reserved: AtomicU64,
    pub partial: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
    pub confirmed: AtomicU64,
    pub released: AtomicU64,
    pub abandoned: AtomicU64,
    pub reads: AtomicU64,
}

impl Counts {
    pub fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    pub fn bump(a: &AtomicU64) -> u64 {
        a.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts a Reserve's answer; true when the hold was placed in full.
    pub fn reserve(&self, result: &Result<ReserveOutcomeOnly, Status>) -> bool {
        match result {
            Ok(r) if r.outcome == pb::ReserveOutcome::Reserved as i32 => {
                Counts::bump(&self.reserved);
                true
            }
            Ok(r) if r.outcome == pb::ReserveOutcome::Partial as i32 => {
                Counts::bump(&self.partial);
                false
            }
            Ok(_) => {
                Counts::bump(&self.rejected);
                false
            }
            Err(_) => {
                Counts::bump(&self.failed);
                false
            }
        }
    }

    pub fn outcome_lines(&self, report: &mut ScenarioReport) {
        let reserved = Counts::get(&self.reserved);
        let rejected = Counts::get(&self.rejected);
        let partial = Counts::get(&self.partial);
        let failed = Counts::get(&self.failed);
        report.line(
            "Reserve outcomes",
            format!(
                "{reserved} RESERVED, {rejected} REJECTED, {partial} PARTIAL, {failed} failed calls"
            ),
        );
        report.json.insert("reserved".into(), json!(reserved));
        report.json.insert("rejected".into(), json!(rejected));
        report.json.insert("partial".into(), json!(partial));
        report.json.insert("reserveErrors".into(), json!(failed));
    }
}

/// A Reserve of 1 unit of `product` under `hold_ref`.
pub fn reserve_request(
    seeded: &Seeded,
    hold_ref: String,
    product: &str,
    ttl_seconds: i64,
) -> Framed {
    reserve_request_lines(seeded, hold_ref, &[product], ttl_seconds)
}

/// A Reserve of one unit of each product (one line each).
pub fn reserve_request_lines(
    seeded: &Seeded,
    hold_ref: String,
    products: &[&str],
    ttl_seconds: i64,
) -> Framed {
    encode(&pb::ReserveRequest {
        hold_ref,
        channel_ref: seeded.channel_ref.clone(),
        lines: products
            .iter()
            .map(|p| pb::ReserveLine {
                product_ref: p.to_string(),
                location_ref: seeded.location.clone(),
                quantity: 1,
                category: String::new(),
            })
            .collect(),
        ttl_seconds,
        allow_partial: false,
    })
}

/// A client and an RNG: what most scenario workers need.
pub struct Worker {
    pub client: Client,
    pub rng: SmallRng,
}

pub fn worker(index: usize, client: Client) -> Worker {
    Worker {
        client,
        rng: rng_for(index),
    }
}

/// Seeds `count` products of `stock` units each under the session's prefix, saying so.
pub async fn seed_for(session: &Session, count: u64, stock: i64) -> Result<Seeded, String> {
    session.say(&format!(
        "seeding {count} products ({}-p*) with {stock} units each",
        session.prefix
    ));
    seed(
        &session.seed,
        &session.load.channel,
        &session.prefix,
        count as usize,
        stock,
    )
    .await
}
