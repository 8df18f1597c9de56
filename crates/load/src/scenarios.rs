//! The loads: the raw ghz-style call and the scenarios, each seeding what it needs
//! through AdminService under a run-unique prefix.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prost::Message;
use prost::bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use stockd::proto::inventory::v1 as pb;
use stockd::proto::inventory::v1::admin_service_client::AdminServiceClient;
use stockd::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use tonic::Status;
use tonic::transport::Channel;

use crate::duration::ms;
use crate::report::ScenarioReport;
use crate::rpc::{self, Client, Method, ReserveOutcomeOnly};
use crate::runner::{Load, Outcome, Recorder};
use crate::template::{Context, MethodNames, Template};

/// Most items in one SetStock (the server's STOCK_BATCH_MAX).
const SEED_BATCH: usize = 1_000;
/// Distinct pre-encoded GetAvailability requests a browsing worker picks from.
const BROWSE_POOL: usize = 4_096;

pub fn encode<M: Message>(m: &M) -> Bytes {
    Bytes::from(m.encode_to_vec())
}

fn rng_for(worker: usize) -> SmallRng {
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

// ---------------------------------------------------------------------------------------
// The raw call (ghz's --call / -d)
// ---------------------------------------------------------------------------------------

/// What a raw call sends.
pub enum Payload {
    /// Data without template actions: encoded once for the whole run.
    Static(Bytes),
    /// Rendered, parsed and encoded per request.
    Template(Template),
}

/// Renders nothing: parses `text` as the method's request and encodes it.
pub fn render_body(method: Method, text: &str) -> Result<Bytes, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("-d is not valid JSON: {e}"))?;
    crate::pbjson::encode(method.input(), &value).map(Bytes::from)
}

/// The request of call number `n`, rendered as worker `worker_id` would.
pub fn render_once(
    method: Method,
    template: &Template,
    n: u64,
    worker_id: &str,
) -> Result<(String, Bytes), String> {
    let names = method.names();
    let mut text = String::new();
    let mut rng = rng_for(0);
    template.render(
        &Context {
            request_number: n,
            worker_id,
            method: &names,
        },
        &mut rng,
        &mut text,
    );
    let body = render_body(method, &text)?;
    Ok((text, body))
}

pub struct CallLoad {
    pub method: Method,
    pub payload: Payload,
    pub names: MethodNames,
    /// Connections in all, for ghz's worker ids (`g{worker}c{connection}`).
    pub connections: usize,
}

pub struct CallWorker {
    client: Client,
    id: String,
    rng: SmallRng,
    text: String,
}

impl Load for CallLoad {
    type Worker = CallWorker;

    fn worker(&self, index: usize, channel: Channel) -> CallWorker {
        CallWorker {
            client: Client::new(channel),
            id: format!("g{index}c{}", index % self.connections.max(1)),
            rng: rng_for(index),
            text: String::new(),
        }
    }

    async fn run(&self, w: &mut CallWorker, n: u64, rec: &mut Recorder) {
        let body = match &self.payload {
            Payload::Static(b) => Ok(b.clone()),
            Payload::Template(t) => {
                let ctx = Context {
                    request_number: n,
                    worker_id: &w.id,
                    method: &self.names,
                };
                t.render(&ctx, &mut w.rng, &mut w.text);
                render_body(self.method, &w.text)
            }
        };
        let _ = match body {
            Ok(body) => {
                rec.call(
                    self.method,
                    rpc::unary::<()>(&mut w.client, self.method, body),
                )
                .await
            }
            Err(e) => {
                rec.call(self.method, async { Err(Status::invalid_argument(e)) })
                    .await
            }
        };
    }
}

// ---------------------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------------------

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
pub fn browse_pool(seeded: &Seeded, keys: usize) -> Vec<Bytes> {
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
    fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }

    fn bump(a: &AtomicU64) -> u64 {
        a.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Counts a Reserve's answer; true when the hold was placed in full.
    fn reserve(&self, result: &Result<ReserveOutcomeOnly, Status>) -> bool {
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

    fn outcome_lines(&self, report: &mut ScenarioReport) {
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

impl ScenarioReport {
    pub fn named(name: &str) -> ScenarioReport {
        ScenarioReport {
            name: name.to_string(),
            ..Default::default()
        }
    }

    pub fn line(&mut self, label: &str, value: impl Into<String>) {
        self.lines.push((label.to_string(), value.into()));
    }
}

fn reserve_request(seeded: &Seeded, hold_ref: String, product: &str, ttl_seconds: i64) -> Bytes {
    encode(&pb::ReserveRequest {
        hold_ref,
        channel_ref: seeded.channel_ref.clone(),
        lines: vec![pb::ReserveLine {
            product_ref: product.to_string(),
            location_ref: seeded.location.clone(),
            quantity: 1,
            category: String::new(),
        }],
        ttl_seconds,
        allow_partial: false,
    })
}

/// A client and an RNG: what most scenario workers need.
pub struct Worker {
    client: Client,
    rng: SmallRng,
}

fn worker(index: usize, channel: Channel) -> Worker {
    Worker {
        client: Client::new(channel),
        rng: rng_for(index),
    }
}

// ---------------------------------------------------------------------------------------
// browse
// ---------------------------------------------------------------------------------------

pub struct BrowseLoad {
    pub pool: Vec<Bytes>,
}

impl Load for BrowseLoad {
    type Worker = Worker;

    fn worker(&self, index: usize, channel: Channel) -> Worker {
        worker(index, channel)
    }

    async fn run(&self, w: &mut Worker, _n: u64, rec: &mut Recorder) {
        let body = self.pool[w.rng.random_range(0..self.pool.len())].clone();
        let _ = rec
            .call(
                Method::GetAvailability,
                rpc::unary::<()>(&mut w.client, Method::GetAvailability, body),
            )
            .await;
    }
}

// ---------------------------------------------------------------------------------------
// reserve
// ---------------------------------------------------------------------------------------

pub struct ReserveLoad {
    pub seeded: Seeded,
    pub release: bool,
    pub counts: Counts,
}

impl Load for ReserveLoad {
    type Worker = Worker;

    fn worker(&self, index: usize, channel: Channel) -> Worker {
        worker(index, channel)
    }

    async fn run(&self, w: &mut Worker, n: u64, rec: &mut Recorder) {
        let s = &self.seeded;
        let product = &s.products[(n % s.products.len() as u64) as usize];
        let hold_ref = format!("{}-h{n}", s.prefix);
        let body = reserve_request(s, hold_ref.clone(), product, 0);
        let result = rec
            .call(
                Method::Reserve,
                rpc::unary::<ReserveOutcomeOnly>(&mut w.client, Method::Reserve, body),
            )
            .await;
        if self.counts.reserve(&result) && self.release {
            let body = encode(&pb::ReleaseHoldRequest { hold_ref });
            if rec
                .call(
                    Method::ReleaseHold,
                    rpc::unary::<()>(&mut w.client, Method::ReleaseHold, body),
                )
                .await
                .is_ok()
            {
                Counts::bump(&self.counts.released);
            }
        }
    }
}

impl ReserveLoad {
    pub fn report(&self, outcome: &Outcome, hot: bool) -> ScenarioReport {
        let mut r = ScenarioReport::named("reserve");
        let products = self.seeded.products.len();
        r.line(
            "Products",
            if hot {
                "1 (hot)".to_string()
            } else {
                format!("{products}, spread evenly")
            },
        );
        r.json.insert("products".into(), json!(products));
        r.json.insert("hot".into(), json!(hot));
        r.json.insert("release".into(), json!(self.release));
        self.counts.outcome_lines(&mut r);
        if let Some(s) = outcome.method(Method::Reserve) {
            let rps = s.count as f64 / outcome.total.as_secs_f64().max(1e-9);
            r.line("Reserve throughput", format!("{rps:.1} calls/s"));
            r.json.insert("reserveRps".into(), json!(rps));
        }
        if Counts::get(&self.counts.rejected) > 0 {
            r.line(
                "Note",
                "some holds were REJECTED: the stock ran out, raise --stock for a pure throughput run",
            );
        }
        r
    }
}

// ---------------------------------------------------------------------------------------
// flash-sale
// ---------------------------------------------------------------------------------------

pub struct FlashSaleLoad {
    pub seeded: Seeded,
    pub units: i64,
    pub counts: Counts,
    pub started: OnceLock<Instant>,
    /// Nanoseconds from the start to the answer that took the last unit; 0 until then.
    pub sold_out_ns: AtomicU64,
}

impl Load for FlashSaleLoad {
    type Worker = Worker;

    fn started(&self, at: Instant) {
        let _ = self.started.set(at);
    }

    fn worker(&self, index: usize, channel: Channel) -> Worker {
        worker(index, channel)
    }

    async fn run(&self, w: &mut Worker, n: u64, rec: &mut Recorder) {
        let s = &self.seeded;
        let body = reserve_request(s, format!("{}-b{n}", s.prefix), &s.products[0], 0);
        let result = rec
            .call(
                Method::Reserve,
                rpc::unary::<ReserveOutcomeOnly>(&mut w.client, Method::Reserve, body),
            )
            .await;
        if self.counts.reserve(&result) && Counts::get(&self.counts.reserved) >= self.units as u64 {
            let ns = self
                .started
                .get()
                .map_or(0, |t| t.elapsed().as_nanos() as u64);
            let _ = self.sold_out_ns.compare_exchange(
                0,
                ns.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

impl FlashSaleLoad {
    /// Checks the sale: exactly `units` holds placed, and nothing left to sell.
    pub async fn verify(
        &self,
        channel: &Channel,
        outcome: &Outcome,
        buyers: u64,
    ) -> ScenarioReport {
        let s = &self.seeded;
        let mut r = ScenarioReport::named("flash-sale");
        let reserved = Counts::get(&self.counts.reserved);
        let failed = Counts::get(&self.counts.failed);
        r.line(
            "Product",
            format!("{} at {} via {}", s.products[0], s.location, s.channel_ref),
        );
        r.line("Units", self.units.to_string());
        r.line("Buyers", buyers.to_string());
        r.json.insert("units".into(), json!(self.units));
        r.json.insert("buyers".into(), json!(buyers));
        self.counts.outcome_lines(&mut r);
        let sold_out = self.sold_out_ns.load(Ordering::Relaxed);
        r.line(
            "Sold out after",
            if sold_out > 0 {
                ms(sold_out)
            } else {
                "not sold out".into()
            },
        );
        r.json.insert("soldOutAfter".into(), json!(sold_out));
        if let Some(st) = outcome.method(Method::Reserve) {
            let rps = st.count as f64 / outcome.total.as_secs_f64().max(1e-9);
            r.line("Reserve throughput", format!("{rps:.1} calls/s"));
            r.json.insert("reserveRps".into(), json!(rps));
        }
        let mut inventory = InventoryServiceClient::new(channel.clone());
        let ats = inventory
            .get_availability(pb::GetAvailabilityRequest {
                channel_ref: s.channel_ref.clone(),
                keys: vec![pb::PositionKey {
                    product_ref: s.products[0].clone(),
                    location_ref: s.location.clone(),
                }],
            })
            .await
            .map_err(|e| rpc::error_text(&e))
            .and_then(|resp| {
                resp.into_inner()
                    .positions
                    .first()
                    .map(|p| p.quantity)
                    .ok_or_else(|| "GetAvailability answered no position".to_string())
            });
        match &ats {
            Ok(q) => {
                r.line("ATS after", q.to_string());
                r.json.insert("atsAfter".into(), json!(q));
            }
            Err(e) => r.line("ATS after", format!("unknown: {e}")),
        }
        let units = self.units as u64;
        let expected_sold_out = buyers >= units;
        let check = if reserved > units {
            Err(format!(
                "OVERSOLD: {reserved} holds succeeded for {units} units"
            ))
        } else if expected_sold_out && reserved < units {
            Err(format!(
                "{reserved} holds succeeded for {units} units ({failed} calls failed): expected exactly {units}"
            ))
        } else if !expected_sold_out && reserved != buyers {
            Err(format!(
                "{reserved} of {buyers} buyers got a hold with {units} units on sale"
            ))
        } else {
            match ats {
                Ok(0) if expected_sold_out => Ok(format!(
                    "exactly {units} holds succeeded and ATS is 0 afterwards"
                )),
                Ok(q) if !expected_sold_out && q == self.units - buyers as i64 => Ok(format!(
                    "all {buyers} buyers got a hold and ATS is {q} afterwards"
                )),
                Ok(q) => Err(format!(
                    "{reserved} holds succeeded but ATS is {q} afterwards"
                )),
                Err(e) => Err(format!("cannot read ATS afterwards: {e}")),
            }
        };
        r.check = Some(check);
        r
    }
}

// ---------------------------------------------------------------------------------------
// checkout and mixed
// ---------------------------------------------------------------------------------------

pub struct CheckoutLoad {
    pub seeded: Seeded,
    pub hold_ttl: i64,
    pub confirm: u8,
    pub release: u8,
    /// Percentage of operations that are GetAvailability (0 for `checkout`).
    pub reads: u8,
    pub pool: Vec<Bytes>,
    pub counts: Counts,
}

impl Load for CheckoutLoad {
    type Worker = Worker;

    fn worker(&self, index: usize, channel: Channel) -> Worker {
        worker(index, channel)
    }

    async fn run(&self, w: &mut Worker, n: u64, rec: &mut Recorder) {
        if self.reads > 0 && w.rng.random_range(0..100u8) < self.reads {
            let body = self.pool[w.rng.random_range(0..self.pool.len())].clone();
            let _ = rec
                .call(
                    Method::GetAvailability,
                    rpc::unary::<()>(&mut w.client, Method::GetAvailability, body),
                )
                .await;
            Counts::bump(&self.counts.reads);
            return;
        }
        let s = &self.seeded;
        let product = &s.products[w.rng.random_range(0..s.products.len())];
        let hold_ref = format!("{}-h{n}", s.prefix);
        let body = reserve_request(s, hold_ref.clone(), product, self.hold_ttl);
        let result = rec
            .call(
                Method::Reserve,
                rpc::unary::<ReserveOutcomeOnly>(&mut w.client, Method::Reserve, body),
            )
            .await;
        if !self.counts.reserve(&result) {
            return;
        }
        let roll = w.rng.random_range(0..100u8);
        if roll < self.confirm {
            let body = encode(&pb::ConfirmHoldRequest {
                hold_ref,
                order_ref: format!("{}-o{n}", s.prefix),
                reacquire: false,
            });
            if rec
                .call(
                    Method::ConfirmHold,
                    rpc::unary::<()>(&mut w.client, Method::ConfirmHold, body),
                )
                .await
                .is_ok()
            {
                Counts::bump(&self.counts.confirmed);
            }
        } else if roll < self.confirm.saturating_add(self.release) {
            let body = encode(&pb::ReleaseHoldRequest { hold_ref });
            if rec
                .call(
                    Method::ReleaseHold,
                    rpc::unary::<()>(&mut w.client, Method::ReleaseHold, body),
                )
                .await
                .is_ok()
            {
                Counts::bump(&self.counts.released);
            }
        } else {
            Counts::bump(&self.counts.abandoned);
        }
    }
}

impl CheckoutLoad {
    pub fn report(&self, name: &str, outcome: &Outcome) -> ScenarioReport {
        let mut r = ScenarioReport::named(name);
        let c = &self.counts;
        r.line(
            "Products",
            format!("{} at {}", self.seeded.products.len(), self.seeded.location),
        );
        r.json
            .insert("products".into(), json!(self.seeded.products.len()));
        if self.reads > 0 {
            r.line(
                "Reads",
                format!("{} GetAvailability", Counts::get(&c.reads)),
            );
            r.json.insert("reads".into(), json!(Counts::get(&c.reads)));
        }
        c.outcome_lines(&mut r);
        let (confirmed, released, abandoned) = (
            Counts::get(&c.confirmed),
            Counts::get(&c.released),
            Counts::get(&c.abandoned),
        );
        r.line(
            "After reserving",
            format!(
                "{confirmed} confirmed, {released} released, {abandoned} left to expire (ttl {} s)",
                self.hold_ttl
            ),
        );
        r.json.insert("confirmed".into(), json!(confirmed));
        r.json.insert("released".into(), json!(released));
        r.json.insert("abandoned".into(), json!(abandoned));
        let checkouts = Counts::get(&c.reserved)
            + Counts::get(&c.rejected)
            + Counts::get(&c.partial)
            + Counts::get(&c.failed);
        let rate = checkouts as f64 / outcome.total.as_secs_f64().max(1e-9);
        r.line("Checkouts", format!("{checkouts} ({rate:.1}/s)"));
        r.json.insert("checkouts".into(), json!(checkouts));
        r.json.insert("checkoutsPerSecond".into(), json!(rate));
        r
    }
}
