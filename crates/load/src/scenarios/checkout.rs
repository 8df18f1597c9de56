//! `checkout` and `mixed`: Reserve, then confirm, release or abandon the hold (70/20/10
//! by default); `mixed` puts GetAvailability reads among the checkouts (90% by default).

use std::sync::Arc;

use rand::Rng as _;
use serde_json::json;
use stockd::proto::inventory::v1 as pb;

use super::{
    Counts, Seeded, Worker, browse_pool, encode, read_from_pool, reserve_request, seed_for, worker,
};
use crate::cli::{CheckoutArgs, CheckoutOpts, MixedArgs};
use crate::report::{Ran, ScenarioReport};
use crate::rpc::{self, Client, Framed, ReserveOutcomeOnly};
use crate::runner::{self, Load, Outcome, Recorder};
use crate::schema::Method;
use crate::session::Session;

/// Longest hold timer a checkout may ask for: the server's default maximum.
const HOLD_TTL_MAX_SECONDS: i64 = stockd_domain::limits::TTL_SECONDS_MAX as i64;

/// What distinguishes `mixed` from `checkout`.
struct Shape {
    /// Percentage of operations that are GetAvailability.
    reads: u8,
    /// Keys per GetAvailability.
    keys: u64,
    name: &'static str,
}

pub async fn run_checkout(args: &CheckoutArgs, session: &Session) -> Result<Ran, String> {
    let shape = Shape {
        reads: 0,
        keys: 3,
        name: "checkout",
    };
    run(&args.opts, shape, session).await
}

pub async fn run_mixed(args: &MixedArgs, session: &Session) -> Result<Ran, String> {
    let shape = Shape {
        reads: args.reads,
        keys: args.keys,
        name: "mixed",
    };
    run(&args.opts, shape, session).await
}

async fn run(opts: &CheckoutOpts, shape: Shape, session: &Session) -> Result<Ran, String> {
    let Shape { reads, keys, name } = shape;
    if u16::from(opts.confirm) + u16::from(opts.release) > 100 {
        return Err(
            "--confirm plus --release must be at most 100 (the rest are left to expire)".into(),
        );
    }
    if opts.hold_ttl != 0 && !(1..=HOLD_TTL_MAX_SECONDS).contains(&opts.hold_ttl) {
        return Err(
            "--hold-ttl must be between 1 and 86400 seconds (0: the server's default)".into(),
        );
    }
    let seeded = seed_for(session, opts.products, opts.stock).await?;
    let pool = if reads > 0 {
        browse_pool(&seeded, keys as usize)
    } else {
        Vec::new()
    };
    let checkout = Arc::new(CheckoutLoad {
        seeded,
        hold_ttl: opts.hold_ttl,
        confirm: opts.confirm,
        release: opts.release,
        reads,
        pool,
        counts: Counts::default(),
    });
    let outcome = runner::run(checkout.clone(), &session.plan(), &session.target).await?;
    Ok(Ran {
        scenario: Some(checkout.report(name, &outcome)),
        outcome,
        call: format!("{name} (GetAvailability, Reserve, ConfirmHold, ReleaseHold)"),
        data: None,
    })
}

pub struct CheckoutLoad {
    seeded: Seeded,
    hold_ttl: i64,
    confirm: u8,
    release: u8,
    /// Percentage of operations that are GetAvailability (0 for `checkout`).
    reads: u8,
    pool: Vec<Framed>,
    counts: Counts,
}

impl Load for CheckoutLoad {
    type Worker = Worker;

    fn worker(&self, index: usize, client: Client) -> Worker {
        worker(index, client)
    }

    async fn run(&self, w: &mut Worker, n: u64, rec: &mut Recorder) {
        if self.reads > 0 && w.rng.random_range(0..100u8) < self.reads {
            self.read(w, rec).await;
            return;
        }
        let s = &self.seeded;
        let product = &s.products[w.rng.random_range(0..s.products.len())];
        let hold_ref = format!("{}-h{n}", s.prefix);
        let body = reserve_request(s, hold_ref.clone(), product, self.hold_ttl);
        let result = rec
            .call(
                Method::reserve(),
                rpc::unary::<ReserveOutcomeOnly>(&mut w.client, Method::reserve(), body),
            )
            .await;
        if self.counts.reserve(&result) {
            self.settle(w, rec, hold_ref, n).await;
        }
    }
}

impl CheckoutLoad {
    /// One GetAvailability from the pre-encoded pool.
    async fn read(&self, w: &mut Worker, rec: &mut Recorder) {
        read_from_pool(&self.pool, w, rec).await;
        Counts::bump(&self.counts.reads);
    }

    /// What the buyer does with a hold: confirm it into order `{prefix}-o{n}`, release
    /// it, or leave it to expire.
    async fn settle(&self, w: &mut Worker, rec: &mut Recorder, hold_ref: String, n: u64) {
        let roll = w.rng.random_range(0..100u8);
        let (method, body, counter) = if roll < self.confirm {
            let body = encode(&pb::ConfirmHoldRequest {
                hold_ref,
                order_ref: format!("{}-o{n}", self.seeded.prefix),
                reacquire: false,
            });
            (Method::confirm_hold(), body, &self.counts.confirmed)
        } else if roll < self.confirm.saturating_add(self.release) {
            let body = encode(&pb::ReleaseHoldRequest { hold_ref });
            (Method::release_hold(), body, &self.counts.released)
        } else {
            Counts::bump(&self.counts.abandoned);
            return;
        };
        if rec
            .call(method, rpc::unary::<()>(&mut w.client, method, body))
            .await
            .is_ok()
        {
            Counts::bump(counter);
        }
    }

    fn report(&self, name: &str, outcome: &Outcome) -> ScenarioReport {
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
