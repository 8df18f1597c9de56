//! `reserve`: 1 unit under a unique hold per operation, over K products or one hot
//! product, for write throughput; with `--release`, Reserve+Release pairs.

use std::sync::Arc;

use serde_json::json;
use stockd::proto::inventory::v1 as pb;

use super::{
    Counts, Seeded, Worker, encode, reserve_request, reserve_request_lines, seed_for, worker,
};
use crate::cli::ReserveArgs;
use crate::report::{Ran, ScenarioReport};
use crate::rpc::{self, Client, ReserveOutcomeOnly};
use crate::runner::{self, Load, Outcome, Recorder};
use crate::schema::Method;
use crate::session::Session;

pub async fn run(args: &ReserveArgs, session: &Session) -> Result<Ran, String> {
    let products = if args.hot { 1 } else { args.products };
    let seeded = seed_for(session, products, args.stock).await?;
    let reserve = Arc::new(ReserveLoad {
        seeded,
        release: args.release,
        lines: args.lines.min(products),
        counts: Counts::default(),
    });
    let outcome = runner::run(reserve.clone(), &session.plan(), &session.target).await?;
    Ok(Ran {
        scenario: Some(reserve.report(&outcome, args.hot)),
        outcome,
        call: Method::reserve().names().fully_qualified.clone(),
        data: None,
    })
}

pub struct ReserveLoad {
    pub seeded: Seeded,
    pub release: bool,
    /// Lines per hold (consecutive products).
    pub lines: u64,
    pub counts: Counts,
}

impl Load for ReserveLoad {
    type Worker = Worker;

    fn worker(&self, index: usize, client: Client) -> Worker {
        worker(index, client)
    }

    async fn run(&self, w: &mut Worker, n: u64, rec: &mut Recorder) {
        let s = &self.seeded;
        let k = s.products.len() as u64;
        let hold_ref = format!("{}-h{n}", s.prefix);
        let body = if self.lines == 1 {
            reserve_request(s, hold_ref.clone(), &s.products[(n % k) as usize], 0)
        } else {
            let products: Vec<&str> = (0..self.lines)
                .map(|j| s.products[((n + j) % k) as usize].as_str())
                .collect();
            reserve_request_lines(s, hold_ref.clone(), &products, 0)
        };
        let result = rec
            .call(
                Method::reserve(),
                rpc::unary::<ReserveOutcomeOnly>(&mut w.client, Method::reserve(), body),
            )
            .await;
        if self.counts.reserve(&result) && self.release {
            let body = encode(&pb::ReleaseHoldRequest { hold_ref });
            if rec
                .call(
                    Method::release_hold(),
                    rpc::unary::<()>(&mut w.client, Method::release_hold(), body),
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
        r.json.insert("lines".into(), json!(self.lines));
        self.counts.outcome_lines(&mut r);
        if let Some(s) = outcome.method(Method::reserve()) {
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
