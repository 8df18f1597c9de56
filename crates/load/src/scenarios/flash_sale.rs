//! `flash-sale`: N units of one product, M buyers each reserving 1 with their own hold;
//! checks that exactly N holds succeeded and that nothing is left to sell.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::json;
use stockd::proto::inventory::v1 as pb;
use stockd::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use tonic::transport::Channel;

use super::{Counts, Seeded, Worker, reserve_request, seed_products, worker};
use crate::cli::FlashSaleArgs;
use crate::duration::ms;
use crate::report::{Ran, ScenarioReport};
use crate::rpc::{self, Client, ReserveOutcomeOnly};
use crate::runner::{self, Load, Outcome, Recorder};
use crate::schema::Method;
use crate::session::Session;

pub async fn run(args: &FlashSaleArgs, session: &Session) -> Result<Ran, String> {
    let FlashSaleArgs { units, buyers, .. } = *args;
    let mut plan = session.plan();
    if plan.total.is_some() {
        session.say("flash-sale: -n is the number of buyers (--buyers); ignoring -n");
    }
    plan.total = Some(buyers);
    let prefix = &session.prefix;
    let product = vec![format!("{prefix}-flash")];
    session.say(&format!("seeding {units} units of {}", product[0]));
    let seeded =
        seed_products(&session.seed, &session.load.channel, prefix, product, units).await?;
    let sale = Arc::new(FlashSaleLoad {
        seeded,
        units,
        counts: Counts::default(),
        started: OnceLock::new(),
        sold_out_ns: AtomicU64::new(0),
    });
    let outcome = runner::run(sale.clone(), &plan, &session.target).await?;
    let report = sale.verify(&session.seed, &outcome, buyers).await;
    Ok(Ran {
        outcome,
        scenario: Some(report),
        call: Method::reserve().names().fully_qualified.clone(),
        data: None,
    })
}

pub struct FlashSaleLoad {
    seeded: Seeded,
    units: i64,
    counts: Counts,
    started: OnceLock<Instant>,
    /// Nanoseconds from the start to the answer that took the last unit; 0 until then.
    sold_out_ns: AtomicU64,
}

impl Load for FlashSaleLoad {
    type Worker = Worker;

    fn started(&self, at: Instant) {
        let _ = self.started.set(at);
    }

    fn worker(&self, index: usize, client: Client) -> Worker {
        worker(index, client)
    }

    async fn run(&self, w: &mut Worker, n: u64, rec: &mut Recorder) {
        let s = &self.seeded;
        let body = reserve_request(s, format!("{}-b{n}", s.prefix), &s.products[0], 0);
        let result = rec
            .call(
                Method::reserve(),
                rpc::unary::<ReserveOutcomeOnly>(&mut w.client, Method::reserve(), body),
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
    async fn verify(&self, channel: &Channel, outcome: &Outcome, buyers: u64) -> ScenarioReport {
        let s = &self.seeded;
        let mut r = ScenarioReport::named("flash-sale");
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
        if let Some(st) = outcome.method(Method::reserve()) {
            let rps = st.count as f64 / outcome.total.as_secs_f64().max(1e-9);
            r.line("Reserve throughput", format!("{rps:.1} calls/s"));
            r.json.insert("reserveRps".into(), json!(rps));
        }
        let ats = self.available_after(channel).await;
        match &ats {
            Ok(q) => {
                r.line("ATS after", q.to_string());
                r.json.insert("atsAfter".into(), json!(q));
            }
            Err(e) => r.line("ATS after", format!("unknown: {e}")),
        }
        r.check = Some(self.check(buyers, ats));
        r
    }

    /// The product's available-to-sell quantity once the sale is over.
    async fn available_after(&self, channel: &Channel) -> Result<i64, String> {
        let s = &self.seeded;
        let mut inventory = InventoryServiceClient::new(channel.clone());
        inventory
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
            })
    }

    /// PASS when exactly min(units, buyers) holds succeeded and ATS is what is left.
    fn check(&self, buyers: u64, ats: Result<i64, String>) -> Result<String, String> {
        let reserved = Counts::get(&self.counts.reserved);
        let failed = Counts::get(&self.counts.failed);
        let units = self.units as u64;
        let expected_sold_out = buyers >= units;
        if reserved > units {
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
        }
    }
}
