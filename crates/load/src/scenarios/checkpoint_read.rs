//! `checkpoint-read`: open-loop GetAvailability over a large state while the server
//! checkpoints it: does a checkpoint pause the reads?
//!
//! The state is filled beforehand (for instance `stockd-load reserve --products 1000000
//! -n 1000000 --stock 10 --prefix P`: one position and one hold per product); this
//! scenario seeds nothing. While the reads run, a paced SetStock "churn" changes
//! `--churn-positions` of those positions, so the shard's pending checkpoint entries
//! cross their threshold and a checkpoint of hundreds of thousands of entries is taken
//! inside the measured window (the server's `stockd_checkpoint_entries` and
//! `stockd_snapshot_duration_seconds` confirm it: `benches/storage.sh` reads them).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use stockd::proto::inventory::v1 as pb;
use stockd::proto::inventory::v1::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;

use super::{Seeded, Worker, browse_pool, read_from_pool, worker};
use crate::cli::CheckpointReadArgs;
use crate::report::{Ran, ScenarioReport};
use crate::rpc::{self, Client, Framed};
use crate::runner::{self, Load, Recorder};
use crate::schema::Method;
use crate::session::Session;

/// Most SetStock calls the churn may have in flight (it is paced, so a slow server only
/// makes it fall behind, never queue more).
const CHURN_IN_FLIGHT_MAX: usize = 8;

pub async fn run(args: &CheckpointReadArgs, session: &Session) -> Result<Ran, String> {
    if session.load.prefix.is_none() {
        return Err("checkpoint-read reads a filled state: give the --prefix of the fill".into());
    }
    if !(args.churn_rps > 0.0 && args.churn_rps.is_finite()) {
        return Err("--churn-rps must be a positive number".into());
    }
    let seeded = filled(args, session);
    session.say(&format!(
        "reading {} filled products ({}-p*); churn: {} positions in SetStocks of {} at {}/s",
        args.products, seeded.prefix, args.churn_positions, args.churn_batch, args.churn_rps
    ));
    let pool = browse_pool(&seeded, args.keys as usize);
    let churn = Arc::new(ChurnStats::default());
    let reads = Arc::new(ReadLoad { pool });
    let churn_task = tokio::spawn(churn_loop(
        session.seed.clone(),
        seeded.clone(),
        args.clone(),
        churn.clone(),
    ));
    let outcome = runner::run(reads, &session.plan(), &session.target).await;
    churn_task.abort();
    let outcome = outcome?;
    let mut report = ScenarioReport::named("checkpoint-read");
    report.line(
        "Products",
        format!(
            "{} at {}, {} random keys per read",
            args.products, seeded.location, args.keys
        ),
    );
    churn.report(&mut report);
    report.json.insert("products".into(), json!(args.products));
    report.json.insert("keys".into(), json!(args.keys));
    Ok(Ran {
        outcome,
        scenario: Some(report),
        call: Method::get_availability().names().fully_qualified.clone(),
        data: None,
    })
}

/// The products a fill under the session's prefix created (as `seed` names them).
fn filled(args: &CheckpointReadArgs, session: &Session) -> Seeded {
    let prefix = session.prefix.clone();
    Seeded {
        products: (0..args.products)
            .map(|i| format!("{prefix}-p{i}"))
            .collect(),
        location: format!("{prefix}-wh"),
        channel_ref: session.load.channel.clone(),
        prefix,
    }
}

pub struct ReadLoad {
    pool: Vec<Framed>,
}

impl Load for ReadLoad {
    type Worker = Worker;

    fn worker(&self, index: usize, client: Client) -> Worker {
        worker(index, client)
    }

    async fn run(&self, w: &mut Worker, _n: u64, rec: &mut Recorder) {
        read_from_pool(&self.pool, w, rec).await;
    }
}

/// What the churn did.
#[derive(Default)]
pub struct ChurnStats {
    calls: AtomicU64,
    failed: AtomicU64,
    positions: AtomicU64,
    /// Microseconds from the churn's start until its last call answered.
    done_after_us: AtomicU64,
    max_us: AtomicU64,
}

impl ChurnStats {
    fn report(&self, r: &mut ScenarioReport) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (calls, failed, positions) =
            (get(&self.calls), get(&self.failed), get(&self.positions));
        let done_ms = get(&self.done_after_us) as f64 / 1e3;
        let max_ms = get(&self.max_us) as f64 / 1e3;
        r.line(
            "Churn (SetStock)",
            format!(
                "{positions} positions changed in {calls} calls ({failed} failed), done {done_ms:.0} ms after it started; slowest call {max_ms:.2} ms"
            ),
        );
        r.json.insert("churnCalls".into(), json!(calls));
        r.json.insert("churnFailed".into(), json!(failed));
        r.json.insert("churnPositions".into(), json!(positions));
        r.json.insert("churnDoneAfterMs".into(), json!(done_ms));
        r.json.insert("churnMaxMs".into(), json!(max_ms));
    }
}

/// Paced SetStocks of `churn_batch` consecutive products, `churn_rps` calls a second,
/// until `churn_positions` positions were changed (bounded in count, and by the run,
/// which aborts it when the reads end).
async fn churn_loop(
    channel: Channel,
    seeded: Seeded,
    args: CheckpointReadArgs,
    stats: Arc<ChurnStats>,
) {
    tokio::time::sleep(args.churn_after).await;
    let total = args.churn_positions.min(args.products) as usize;
    let batch = args.churn_batch as usize;
    let period = Duration::from_secs_f64(1.0 / args.churn_rps);
    let started = Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(CHURN_IN_FLIGHT_MAX));
    let mut calls = Vec::new();
    for (i, chunk) in seeded.products[..total].chunks(batch).enumerate() {
        tokio::time::sleep_until((started + period * i as u32).into()).await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let request = set_stock(&seeded, chunk, args.stock);
        let changed = chunk.len() as u64;
        let mut admin = AdminServiceClient::new(channel.clone());
        let stats = stats.clone();
        calls.push(tokio::spawn(async move {
            let sent = Instant::now();
            let result = admin.set_stock(request).await;
            let us = sent.elapsed().as_micros() as u64;
            stats.max_us.fetch_max(us, Ordering::Relaxed);
            stats.calls.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(_) => stats.positions.fetch_add(changed, Ordering::Relaxed),
                Err(e) => {
                    eprintln!("stockd-load: churn SetStock: {}", rpc::error_text(&e));
                    stats.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            drop(slot);
        }));
    }
    for call in calls {
        let _ = call.await;
    }
    stats
        .done_after_us
        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
}

fn set_stock(seeded: &Seeded, products: &[String], quantity: i64) -> pb::SetStockRequest {
    pb::SetStockRequest {
        counts: products
            .iter()
            .map(|p| pb::StockCount {
                product_ref: p.clone(),
                location_ref: seeded.location.clone(),
                quantity,
                as_of: None,
            })
            .collect(),
    }
}
