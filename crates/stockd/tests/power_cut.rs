//! Power cuts on a simulated disk: every acknowledged change survives, nothing is half
//! applied.
//!
//! For each seed, `stockd::server::run` serves on 127.0.0.1 with its logs on a `SimDisk`
//! and its checkpoints in a `SimStore`, checkpointing every few records. Clients drive
//! concurrent Reserve, cart updates, ConfirmHold, ReleaseHold and FulfilOrder over real
//! gRPC for a short random time; then the power goes: the disk and the store lose or tear
//! what was not synced, and the server's runtime is dropped without any flush. A new
//! server recovers from what is left, and the test checks that every hold answered OK is
//! there in its acknowledged state (or in the state of a call whose answer was lost), each
//! whole, and that every position's ledger equals the holds.
//!
//! `STOCKD_POWER_CUT_SEEDS=N` runs N seeds (default `SEEDS_DEFAULT`).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stockd::config::ServerConfig;
use stockd::proto::inventory::v1 as pb;
use stockd::storage::StorageBackend;
use stockd::storage::checkpoint::SimStore;
use stockd::storage::log::LogConfig;
use stockd::storage::log::sim::{CrashMode, SimDisk};

use common::calls::{hold_lines, set_stock_ok, upsert_channel};
use common::client::{self, Adm, Inv};
use common::requests::{channel, count, next_as_of, reserve_request};

/// Seeds run by `cargo test`.
const SEEDS_DEFAULT: u64 = 8;
/// Concurrent clients per seed.
const WORKERS: usize = 4;
/// Calls per client at most (the traffic also stops at the power cut).
const CALLS_PER_WORKER_MAX: usize = 200;
/// Longest traffic phase before the cut; each seed picks a time up to it.
const TRAFFIC_MAX: Duration = Duration::from_millis(900);
/// Products, all at one location, spread over the shards by their hash.
const PRODUCTS: usize = 6;
const LOC: &str = "DC1";
const WEB: &str = "WEB";
/// Checkpoint every this many records: many checkpoints per run.
const CHECKPOINT_EVERY_RECORDS: u64 = 7;
/// Longest wait for a server to start or for one client to finish after the cut.
const WAIT_MAX: Duration = Duration::from_secs(20);

/// What a client was told about one hold.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Active(Vec<(String, String, i64)>),
    Confirmed(Vec<(String, String, i64)>),
    Released,
}

/// The acknowledged state, and the state a call whose answer was lost may have left.
#[derive(Clone, Debug)]
struct Expect {
    acked: Option<State>,
    maybe: Option<State>,
}

type Model = Arc<Mutex<BTreeMap<String, Expect>>>;

/// A server on its own runtime, so the power cut can drop it whole, mid-flight.
struct SimServer {
    runtime: Option<tokio::runtime::Runtime>,
    grpc: std::net::SocketAddr,
}

/// Two shards sharing one log: a checkpoint of one shard must not recycle the segments
/// holding the other's records that no checkpoint covers yet.
fn config(disk: &SimDisk, store: &Arc<SimStore>) -> ServerConfig {
    let mut config = ServerConfig::new("sim-data".into());
    config.shards = 2;
    config.logs = Some(1);
    config.storage = StorageBackend::Sim {
        disk: disk.clone(),
        store: store.clone(),
    };
    config.log = LogConfig {
        segment_bytes: 64 << 10,
        segments_preallocated: 1,
        segments_free_max: 2,
        group_bytes_max: 16 << 10,
    };
    config.limits.snapshot_every_records = CHECKPOINT_EVERY_RECORDS;
    config
}

async fn start(disk: &SimDisk, store: &Arc<SimStore>) -> SimServer {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.set_nonblocking(true).expect("nonblocking");
    let grpc = listener.local_addr().expect("local addr");
    let config = config(disk, store);
    let task = runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        stockd::server::run(config, listener, std::future::pending()).await
    });
    let ready = client::wait_serving(grpc, WAIT_MAX, || {
        task.is_finished()
            .then(|| "stockd::server::run returned".to_string())
    })
    .await;
    if let Err(e) = ready {
        let outcome = match task.is_finished() {
            true => format!("{:?}", task.await),
            false => "still running".into(),
        };
        runtime.shutdown_background();
        panic!("the sim server did not start: {e} ({outcome})");
    }
    SimServer {
        runtime: Some(runtime),
        grpc,
    }
}

impl SimServer {
    /// Drops every task of the server at once: no drain, no final sync.
    fn cut(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.cut();
    }
}

fn products() -> Vec<String> {
    (0..PRODUCTS).map(|i| format!("P{i}")).collect()
}

fn lines(rng: &mut StdRng) -> Vec<(String, String, i64)> {
    let mut picked: Vec<usize> = (0..PRODUCTS).collect();
    let n = rng.random_range(1..=3);
    let mut out = Vec::new();
    for _ in 0..n {
        let i = picked.swap_remove(rng.random_range(0..picked.len()));
        out.push((format!("P{i}"), LOC.to_string(), rng.random_range(1..=3)));
    }
    out.sort();
    out
}

/// One client's traffic: its own holds, each a linear history of acknowledged states.
async fn worker(addr: std::net::SocketAddr, seed: u64, id: usize, model: Model, until: Instant) {
    let mut rng = StdRng::seed_from_u64(seed * 100 + id as u64);
    let mut inv = client::inventory(addr);
    let mut mine: Vec<String> = Vec::new();
    for n in 0..CALLS_PER_WORKER_MAX {
        if Instant::now() >= until {
            return;
        }
        let pick = mine.get(rng.random_range(0..mine.len().max(1))).cloned();
        let current = pick
            .as_ref()
            .and_then(|h| model.lock().unwrap()[h].acked.clone());
        let (hold_ref, next) = match (pick, current, rng.random_range(0..4)) {
            (Some(h), Some(State::Active(_)), 0) => (h, State::Confirmed(Vec::new())),
            (Some(h), Some(State::Active(_)), 1) => (h, State::Released),
            (Some(h), Some(State::Active(_)), 2) => (h, State::Active(lines(&mut rng))),
            (Some(h), Some(State::Confirmed(l)), 3) => (h, State::Confirmed(l)),
            _ => (format!("h{seed}-{id}-{n}"), State::Active(lines(&mut rng))),
        };
        let known = model.lock().unwrap().contains_key(&hold_ref);
        if !known {
            mine.push(hold_ref.clone());
        }
        let acked_lines = match model
            .lock()
            .unwrap()
            .get(&hold_ref)
            .and_then(|e| e.acked.clone())
        {
            Some(State::Active(l)) | Some(State::Confirmed(l)) => l,
            _ => Vec::new(),
        };
        let next = match next {
            State::Confirmed(l) if l.is_empty() => State::Confirmed(acked_lines),
            other => other,
        };
        {
            let mut m = model.lock().unwrap();
            let e = m.entry(hold_ref.clone()).or_insert(Expect {
                acked: None,
                maybe: None,
            });
            e.maybe = Some(next.clone());
        }
        let ok = call(&mut inv, &hold_ref, &next).await;
        let mut m = model.lock().unwrap();
        let e = m.get_mut(&hold_ref).expect("entered above");
        match ok {
            Some(true) => {
                e.acked = Some(next);
                e.maybe = None;
            }
            // A definite refusal (out of stock, failed precondition): nothing changed.
            Some(false) => e.maybe = None,
            // No answer: the change may or may not have been made; it stays `maybe`, and
            // this client stops touching the hold.
            None => {
                mine.retain(|h| h != &hold_ref);
            }
        }
    }
}

/// Sends the call that moves a hold to `next`: `Some(true)` acknowledged, `Some(false)`
/// refused, `None` no answer (the cut, UNAVAILABLE).
async fn call(inv: &mut Inv, hold_ref: &str, next: &State) -> Option<bool> {
    let answered = |code: tonic::Code| match code {
        tonic::Code::FailedPrecondition | tonic::Code::NotFound => Some(false),
        _ => None,
    };
    match next {
        State::Active(lines) => match inv
            .reserve(reserve_request(hold_ref, WEB, lines, 3600))
            .await
        {
            Ok(r) => Some(r.into_inner().outcome == pb::ReserveOutcome::Reserved as i32),
            Err(s) => answered(s.code()),
        },
        State::Confirmed(_) => {
            let order_ref = format!("o-{hold_ref}");
            let confirmed = inv
                .confirm_hold(pb::ConfirmHoldRequest {
                    hold_ref: hold_ref.into(),
                    order_ref: order_ref.clone(),
                    reacquire: false,
                })
                .await;
            match confirmed {
                Ok(_) => {}
                Err(s) => return answered(s.code()),
            }
            // A fulfilment of a confirmed order: the reserved quantities become sales.
            match inv
                .fulfil_order(pb::FulfilOrderRequest {
                    order_ref,
                    lines: Vec::new(),
                })
                .await
            {
                Ok(_) => Some(true),
                // Confirmed but the fulfilment's answer was lost: both count as confirmed.
                Err(s) => answered(s.code()).map(|_| true),
            }
        }
        State::Released => match inv
            .release_hold(pb::ReleaseHoldRequest {
                hold_ref: hold_ref.into(),
            })
            .await
        {
            Ok(_) => Some(true),
            Err(s) => answered(s.code()),
        },
    }
}

async fn seed_world(addr: std::net::SocketAddr) {
    let mut admin: Adm = client::admin(addr);
    upsert_channel(&mut admin, channel(WEB)).await;
    let t = next_as_of();
    let counts = products()
        .iter()
        .map(|p| count(p, LOC, 10_000, t))
        .collect();
    set_stock_ok(&mut admin, counts).await;
}

fn observed_state(h: &pb::Hold) -> State {
    let lines = hold_lines(h);
    match h.state {
        s if s == pb::HoldState::Active as i32 => State::Active(lines),
        s if s == pb::HoldState::Confirmed as i32 => State::Confirmed(lines),
        _ => State::Released,
    }
}

/// Every hold is in an acknowledged state or the state of a call without answer, and
/// whole; returns the holds as found.
async fn check_holds(
    addr: std::net::SocketAddr,
    seed: u64,
    model: &Model,
) -> Result<Vec<State>, (String, String)> {
    let mut inv = client::inventory(addr);
    let expects: Vec<(String, Expect)> = model.lock().unwrap().clone().into_iter().collect();
    let mut found = Vec::new();
    for (hold_ref, e) in expects {
        let got = inv
            .get_hold(pb::GetHoldRequest {
                hold_ref: hold_ref.clone(),
            })
            .await;
        let state = match got {
            Ok(r) => r.into_inner().hold.map(|h| observed_state(&h)),
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => panic!("seed {seed}: GetHold {hold_ref}: {s}"),
        };
        let allowed = [e.acked.clone(), e.maybe.clone()];
        // An absent hold is allowed only if nothing about it was acknowledged. A reserve
        // or cart update cut between two shards comes back as the acknowledged version
        // (absent for a new hold) or the whole new one: never released by recovery.
        if !(allowed.contains(&state) || (state.is_none() && e.acked.is_none())) {
            return Err((
                hold_ref.clone(),
                format!(
                    "seed {seed}: hold {hold_ref} is {state:?} after the power cut; acknowledged {:?}, \
                 in flight {:?}",
                    e.acked, e.maybe
                ),
            ));
        }
        found.extend(state);
    }
    Ok(found)
}

/// Every position's ledger equals the holds found: ACTIVE SOFT_RESERVE per active hold,
/// RESERVED plus SALE per confirmed one.
async fn check_ledgers(addr: std::net::SocketAddr, seed: u64, holds: &[State]) {
    let mut admin: Adm = client::admin(addr);
    for product in products() {
        let (mut soft, mut firm) = (0i64, 0i64);
        for h in holds {
            match h {
                State::Active(l) => {
                    soft += l
                        .iter()
                        .filter(|x| x.0 == product)
                        .map(|x| x.2)
                        .sum::<i64>()
                }
                State::Confirmed(l) => {
                    firm += l
                        .iter()
                        .filter(|x| x.0 == product)
                        .map(|x| x.2)
                        .sum::<i64>()
                }
                State::Released => {}
            }
        }
        let position = admin
            .get_position(pb::GetPositionRequest {
                product_ref: product.clone(),
                location_ref: LOC.into(),
                include_ledger: true,
            })
            .await
            .unwrap_or_else(|s| panic!("seed {seed}: GetPosition {product}: {s}"))
            .into_inner()
            .position
            .expect("a position");
        let active = |kinds: &[pb::QuantityType]| -> i64 {
            position
                .quantities
                .iter()
                .filter(|q| q.status == pb::QuantityStatus::Active as i32)
                .filter(|q| kinds.iter().any(|k| *k as i32 == q.r#type))
                .map(|q| -q.quantity)
                .sum()
        };
        let ledger_soft = active(&[pb::QuantityType::SoftReserve]);
        let ledger_firm = active(&[pb::QuantityType::Reserved, pb::QuantityType::Sale]);
        assert_eq!(
            (ledger_soft, ledger_firm),
            (soft, firm),
            "seed {seed}: {product}: ledger (soft, reserved+sold) differs from the holds found; \
             active ledger {:?}; holds {:?}",
            position
                .quantities
                .iter()
                .filter(|q| q.status == pb::QuantityStatus::Active as i32)
                .map(|q| (q.r#type, q.hold_ref.clone(), q.order_ref.clone(), q.quantity))
                .collect::<Vec<_>>(),
            holds
                .iter()
                .filter(|h| matches!(h, State::Active(l) | State::Confirmed(l) if l.iter().any(|x| x.0 == product)))
                .collect::<Vec<_>>()
        );
    }
}

async fn run_seed(seed: u64) {
    let disk = SimDisk::new(seed);
    let store = Arc::new(SimStore::new(seed));
    let mut server = start(&disk, &store).await;
    seed_world(server.grpc).await;
    let model: Model = Arc::default();
    let mut rng = StdRng::seed_from_u64(seed);
    let traffic = Duration::from_millis(rng.random_range(100..=TRAFFIC_MAX.as_millis() as u64));
    let until = Instant::now() + WAIT_MAX;
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| tokio::spawn(worker(server.grpc, seed, id, model.clone(), until)))
        .collect();
    tokio::time::sleep(traffic).await;
    // The power goes: unsynced bytes are lost or torn, then every task stops mid-flight.
    let mode = [
        CrashMode::DropUnsynced,
        CrashMode::TornBytes,
        CrashMode::TornSectors,
    ][seed as usize % 3];
    disk.crash(mode);
    let store = Arc::new(store.crash());
    server.cut();
    for w in workers {
        let _ = tokio::time::timeout(WAIT_MAX, w).await;
    }
    let server = start(&disk, &store).await;
    let holds = match check_holds(server.grpc, seed, &model).await {
        Ok(h) => h,
        Err((_, msg)) => {
            panic!("{msg}");
        }
    };
    check_ledgers(server.grpc, seed, &holds).await;
    let acked = model
        .lock()
        .unwrap()
        .values()
        .filter(|e| e.acked.is_some())
        .count();
    eprintln!("seed {seed}: {mode:?} after {traffic:?}: {acked} holds acknowledged, all there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_power_cuts() {
    let seeds = std::env::var("STOCKD_POWER_CUT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS_DEFAULT);
    for seed in 1..=seeds {
        run_seed(seed).await;
    }
}
