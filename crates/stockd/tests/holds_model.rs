//! Holds against a reference model, concurrently, through real gRPC on 127.0.0.1 at
//! `--shards 4` (issue #12).
//!
//! Workers run at once, each on its own holds (so each hold's operations are sequential
//! and its model exact), all on the same few products (so stock is contended and reserves
//! get rejected). Operations: multi-line reserves on several shards, cart updates,
//! resends, confirms with and without reacquire, releases, whole and partial fulfilments,
//! cancels, reads; one hold in two has a one-second timer, so holds expire mid-run and
//! operations race their deadline. Every answer is checked against the model: an answer
//! the rules allow at the moment the server could have seen (between send and reply), and
//! the model then follows it. Between rounds, and exactly at the end once every short
//! timer has run, each position's ledger is checked against the acknowledged holds and
//! orders.
//!
//! Seeds are deterministic: `STOCKD_HOLDS_MODEL_SEEDS` (default "1", comma-separated) and
//! `STOCKD_HOLDS_MODEL_ROUNDS` (default 3) run it longer by hand.

mod common;

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

use common::calls::{get_hold, get_position, stock, upsert_channel};
use common::client::Inv;
use common::fixtures::products_on_every_shard;
use common::requests::{channel, now_millis, order_lines, reserve_request, ts_millis};
use common::server::InProcessServer;
use stockd::proto::inventory::v1 as pb;

const SHARDS: u32 = 4;
const LOC: &str = "DC1";
const WEB: &str = "WEB";
/// Two products per shard, each with little stock, so carts compete.
const PER_SHARD: usize = 2;
const STOCK: i64 = 12;
const WORKERS: u64 = 4;
const HOLDS_PER_WORKER: usize = 5;
const STEPS_PER_ROUND: usize = 60;
const SHORT_TTL: i64 = 1;
const LONG_TTL: i64 = 600;
/// How late after its deadline a hold's timer has certainly run (the grace, a batch, and a
/// loaded machine).
const TIMER_SLACK_MS: i64 = 2_000;

type Line = (String, String, i64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// No hold under this ref yet.
    None,
    Active,
    Released,
    Expired,
    Confirmed,
}

/// The model of one hold (and of its order, `o-{hold}`).
#[derive(Clone, Debug)]
struct Hold {
    hold_ref: String,
    st: St,
    /// The hold's lines, sorted (kept after it ends: a reacquire reserves them again).
    lines: Vec<Line>,
    /// The last accepted request's lines, in request order (a resend is the same order).
    sent: Vec<Line>,
    expires_at: i64,
    /// What the order still has reserved, per line (confirmed holds).
    open: Vec<i64>,
    /// What the order shipped, per line.
    shipped: Vec<i64>,
}

/// Whether an active hold was live when the server handled a call sent at `t0` and
/// answered by `t1` (the server reads its clock in between).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Live {
    Yes,
    No,
    Maybe,
}

impl Hold {
    fn new(hold_ref: String) -> Hold {
        Hold {
            hold_ref,
            st: St::None,
            lines: Vec::new(),
            sent: Vec::new(),
            expires_at: 0,
            open: Vec::new(),
            shipped: Vec::new(),
        }
    }

    fn order_ref(&self) -> String {
        format!("o-{}", self.hold_ref)
    }

    fn live(&self, t0: i64, t1: i64) -> Live {
        if self.st != St::Active {
            Live::No
        } else if t1 < self.expires_at {
            Live::Yes
        } else if t0 >= self.expires_at {
            Live::No
        } else {
            Live::Maybe
        }
    }

    /// Whether the hold's stock is in the ledger at a read between `t0` and `t1`: until
    /// its timer ran. `None`: it may or may not be. An expired hold may still hold its
    /// stock until its timer runs: a cart update refused for the deadline answers
    /// FAILED_PRECONDITION and leaves the expiry to the timer (domain.md: "within one
    /// second").
    fn held_at(&self, t0: i64, t1: i64) -> Option<bool> {
        match self.st {
            St::Active if t1 < self.expires_at => Some(true),
            St::Active | St::Expired if t0 > self.expires_at + TIMER_SLACK_MS => Some(false),
            St::Active | St::Expired => None,
            _ => Some(false),
        }
    }

    fn confirmed(&mut self) {
        self.st = St::Confirmed;
        self.open = self.lines.iter().map(|l| l.2).collect();
        self.shipped = vec![0; self.lines.len()];
    }

    /// An ended hold after a refusal for its deadline.
    fn ended(&mut self) {
        if self.st == St::Active {
            self.st = St::Expired;
        }
    }
}

fn sorted(mut lines: Vec<Line>) -> Vec<Line> {
    lines.sort();
    lines
}

fn lines_of(h: &pb::Hold) -> Vec<Line> {
    sorted(common::calls::hold_lines(h))
}

fn order_lines_of(lines: &[pb::OrderLine]) -> Vec<Line> {
    sorted(
        lines
            .iter()
            .map(|l| (l.product_ref.clone(), l.location_ref.clone(), l.quantity))
            .collect(),
    )
}

fn state(h: &pb::Hold) -> St {
    match pb::HoldState::try_from(h.state).expect("a known state") {
        pb::HoldState::Active => St::Active,
        pb::HoldState::Released => St::Released,
        pb::HoldState::Expired => St::Expired,
        pb::HoldState::Confirmed => St::Confirmed,
        other => panic!("state {other:?}"),
    }
}

/// A cart of 1 to 3 distinct products (quantities 1 to 3) in a random order.
fn cart(rng: &mut StdRng, products: &[String]) -> Vec<Line> {
    let n = rng.random_range(1..=3);
    let mut picked: Vec<usize> = Vec::new();
    while picked.len() < n {
        let i = rng.random_range(0..products.len());
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked
        .into_iter()
        .map(|i| {
            (
                products[i].clone(),
                LOC.to_string(),
                rng.random_range(1..=3),
            )
        })
        .collect()
}

/// Whether a hold has nothing left to do (a fresh ref takes its slot now and then).
fn finished(h: &Hold) -> bool {
    match h.st {
        St::Released | St::Expired => true,
        St::Confirmed => h.open.iter().all(|o| *o == 0),
        St::None | St::Active => false,
    }
}

/// One worker's holds: every hold it made, and the `HOLDS_PER_WORKER` it works on.
#[derive(Clone, Debug)]
struct Worker {
    name: String,
    holds: Vec<Hold>,
    slots: Vec<usize>,
}

impl Worker {
    fn new(name: String) -> Worker {
        let holds: Vec<Hold> = (0..HOLDS_PER_WORKER)
            .map(|i| Hold::new(format!("{name}-h{i}")))
            .collect();
        Worker {
            name,
            slots: (0..holds.len()).collect(),
            holds,
        }
    }

    /// The hold of a random slot; a finished one gives way to a fresh ref, now and then.
    fn pick(&mut self, rng: &mut StdRng) -> &mut Hold {
        let slot = rng.random_range(0..self.slots.len());
        if finished(&self.holds[self.slots[slot]]) && rng.random_bool(0.4) {
            let hold_ref = format!("{}-h{}", self.name, self.holds.len());
            self.holds.push(Hold::new(hold_ref));
            self.slots[slot] = self.holds.len() - 1;
        }
        &mut self.holds[self.slots[slot]]
    }
}

/// One worker's round: `STEPS_PER_ROUND` random operations on its holds.
async fn worker(mut inv: Inv, seed: u64, products: Vec<String>, mut w: Worker) -> Worker {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..STEPS_PER_ROUND {
        let roll = rng.random_range(0..100);
        let hold = w.pick(&mut rng);
        match roll {
            0..30 => {
                let lines = cart(&mut rng, &products);
                let ttl = if rng.random_bool(0.5) {
                    SHORT_TTL
                } else {
                    LONG_TTL
                };
                reserve(&mut inv, hold, lines, ttl).await;
            }
            30..38 => {
                // The same cart again (a resend), or a new one if there is none.
                let lines = if hold.st == St::Active {
                    hold.sent.clone()
                } else {
                    cart(&mut rng, &products)
                };
                reserve(&mut inv, hold, lines, LONG_TTL).await;
            }
            38..48 => confirm(&mut inv, hold, rng.random_bool(0.5)).await,
            48..58 => release(&mut inv, hold).await,
            58..70 => {
                let partial = rng.random_bool(0.5);
                fulfil(&mut inv, hold, partial, &mut rng).await
            }
            70..77 => cancel(&mut inv, hold).await,
            77..94 => read(&mut inv, hold).await,
            _ => tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await,
        }
    }
    w
}

/// Reserve (a new hold, a resend or a cart update) and its check.
async fn reserve(inv: &mut Inv, hold: &mut Hold, lines: Vec<Line>, ttl: i64) {
    let t0 = now_millis();
    let answer = inv
        .reserve(reserve_request(&hold.hold_ref, WEB, &lines, ttl))
        .await
        .map(|r| r.into_inner());
    let t1 = now_millis();
    let what = format!(
        "Reserve {} {lines:?} on {hold:?}: {answer:?}",
        hold.hold_ref
    );
    let resend = hold.st == St::Active && hold.sent == lines;
    let sent = lines.clone();
    let lines = sorted(lines);
    let live = hold.live(t0, t1);
    match (hold.st, live, answer) {
        (St::None, _, Ok(r)) | (St::Active, Live::Yes | Live::Maybe, Ok(r)) => {
            if r.outcome == pb::ReserveOutcome::Rejected as i32 {
                assert!(
                    r.lines.iter().any(|l| l.requested > l.available),
                    "{what}: rejected with stock for every line"
                );
                match hold.st {
                    St::None => assert!(r.hold.is_none(), "{what}"),
                    _ => assert_eq!(
                        r.hold.as_ref().map(lines_of),
                        Some(hold.lines.clone()),
                        "{what}"
                    ),
                }
                return;
            }
            assert_eq!(r.outcome, pb::ReserveOutcome::Reserved as i32, "{what}");
            let h = r.hold.expect("a reserved hold");
            assert_eq!(state(&h), St::Active, "{what}");
            assert_eq!(lines_of(&h), lines, "{what}");
            let expires_at = ts_millis(&h.expires_at).expect("expires_at");
            if resend {
                assert_eq!(
                    expires_at, hold.expires_at,
                    "{what}: a resend moved the timer"
                );
            }
            hold.st = St::Active;
            hold.lines = lines;
            hold.sent = sent;
            hold.expires_at = expires_at;
        }
        (St::Active, Live::Maybe | Live::No, Err(s))
        | (St::Released | St::Expired | St::Confirmed, _, Err(s)) => {
            assert_eq!(s.code(), Code::FailedPrecondition, "{what}");
            hold.ended();
        }
        _ => panic!("{what}: not what the rules allow"),
    }
}

/// ConfirmHold (as `o-{hold}`) and its check.
async fn confirm(inv: &mut Inv, hold: &mut Hold, reacquire: bool) {
    let t0 = now_millis();
    let answer = common::calls::confirm(inv, &hold.hold_ref, &hold.order_ref(), reacquire).await;
    let t1 = now_millis();
    let what = format!(
        "Confirm {} reacquire={reacquire} on {hold:?}: {answer:?}",
        hold.hold_ref
    );
    let live = hold.live(t0, t1);
    // May it confirm? Must it?
    let (may, must) = match (hold.st, live) {
        (St::None, _) => {
            let s = answer.expect_err(&what);
            assert_eq!(s.code(), Code::NotFound, "{what}");
            return;
        }
        (St::Confirmed, _) | (St::Active, Live::Yes) => (true, true),
        (St::Active, Live::Maybe) => (true, false),
        (St::Active, Live::No) | (St::Released | St::Expired, _) => (reacquire, false),
    };
    match answer {
        Ok(h) => {
            assert!(may, "{what}: confirmed");
            let h = h.expect("a confirmed hold");
            assert_eq!(state(&h), St::Confirmed, "{what}");
            assert_eq!(h.order_ref, hold.order_ref(), "{what}");
            assert_eq!(lines_of(&h), hold.lines, "{what}");
            if hold.st != St::Confirmed {
                hold.confirmed();
            }
        }
        Err(s) => {
            assert!(!must, "{what}: refused");
            assert_eq!(s.code(), Code::FailedPrecondition, "{what}");
            hold.ended();
        }
    }
}

/// ReleaseHold and its check.
async fn release(inv: &mut Inv, hold: &mut Hold) {
    let t0 = now_millis();
    let answer = common::calls::release(inv, &hold.hold_ref).await;
    let t1 = now_millis();
    let what = format!("Release {} on {hold:?}: {answer:?}", hold.hold_ref);
    let live = hold.live(t0, t1);
    let code = answer.as_ref().err().map(|s| s.code());
    match (hold.st, live) {
        (St::None, _) => assert_eq!(code, Some(Code::NotFound), "{what}"),
        (St::Confirmed, _) => assert_eq!(code, Some(Code::FailedPrecondition), "{what}"),
        _ => {
            let h = answer.expect(&what).expect("the hold");
            let got = state(&h);
            let allowed = match (hold.st, live) {
                (St::Active, Live::Yes) => got == St::Released,
                (St::Active, Live::Maybe) => got == St::Released || got == St::Expired,
                (St::Active, Live::No) => got == St::Expired,
                (was, _) => got == was,
            };
            assert!(allowed, "{what}");
            hold.st = got;
        }
    }
}

/// FulfilOrder (whole, or one unit of one open line) and its check.
async fn fulfil(inv: &mut Inv, hold: &mut Hold, partial: bool, rng: &mut StdRng) {
    let open: Vec<usize> = (0..hold.open.len()).filter(|&i| hold.open[i] > 0).collect();
    let line = (partial && !open.is_empty()).then(|| open[rng.random_range(0..open.len())]);
    let request: Vec<Line> = line
        .map(|i| {
            let (p, l, _) = hold.lines[i].clone();
            vec![(p, l, rng.random_range(1..=hold.open[i]))]
        })
        .unwrap_or_default();
    let answer = inv
        .fulfil_order(pb::FulfilOrderRequest {
            order_ref: hold.order_ref(),
            lines: order_lines(&request),
        })
        .await;
    let what = format!("Fulfil {request:?} on {hold:?}: {answer:?}");
    if hold.st != St::Confirmed {
        assert_eq!(answer.expect_err(&what).code(), Code::NotFound, "{what}");
        return;
    }
    let shipped = order_lines_of(&answer.expect(&what).into_inner().lines);
    let expected: Vec<Line> = match line {
        Some(i) => vec![(
            hold.lines[i].0.clone(),
            hold.lines[i].1.clone(),
            request[0].2,
        )],
        None => (0..hold.lines.len())
            .filter(|&i| hold.open[i] > 0)
            .map(|i| {
                (
                    hold.lines[i].0.clone(),
                    hold.lines[i].1.clone(),
                    hold.open[i],
                )
            })
            .collect(),
    };
    assert_eq!(shipped, sorted(expected), "{what}");
    for (p, l, q) in shipped {
        let i = hold
            .lines
            .iter()
            .position(|x| x.0 == p && x.1 == l)
            .expect("a line");
        hold.open[i] -= q;
        hold.shipped[i] += q;
    }
}

/// CancelOrder and its check.
async fn cancel(inv: &mut Inv, hold: &mut Hold) {
    let answer = inv
        .cancel_order(pb::CancelOrderRequest {
            order_ref: hold.order_ref(),
        })
        .await;
    let what = format!("Cancel on {hold:?}: {answer:?}");
    if hold.st != St::Confirmed {
        assert_eq!(answer.expect_err(&what).code(), Code::NotFound, "{what}");
        return;
    }
    let cancelled = order_lines_of(&answer.expect(&what).into_inner().lines);
    let expected: Vec<Line> = (0..hold.lines.len())
        .filter(|&i| hold.open[i] > 0)
        .map(|i| {
            (
                hold.lines[i].0.clone(),
                hold.lines[i].1.clone(),
                hold.open[i],
            )
        })
        .collect();
    assert_eq!(cancelled, sorted(expected), "{what}");
    hold.open.iter_mut().for_each(|o| *o = 0);
}

/// GetHold and its check.
async fn read(inv: &mut Inv, hold: &mut Hold) {
    let t0 = now_millis();
    let answer = get_hold(inv, &hold.hold_ref).await;
    let t1 = now_millis();
    let what = format!("GetHold on {hold:?}: {answer:?}");
    let got = answer.expect(&what);
    if hold.st == St::None {
        assert!(got.is_none(), "{what}");
        return;
    }
    let h = got.expect(&what);
    assert_eq!(lines_of(&h), hold.lines, "{what}");
    let allowed = match (hold.st, hold.live(t0, t1)) {
        (St::Active, Live::Yes) => vec![St::Active],
        (St::Active, Live::Maybe) => vec![St::Active, St::Expired],
        (St::Active, Live::No) => vec![St::Expired],
        (was, _) => vec![was],
    };
    assert!(allowed.contains(&state(&h)), "{what}");
    if hold.st == St::Confirmed {
        assert_eq!(h.order_ref, hold.order_ref(), "{what}");
    }
}

/// Each position's ledger against the model: `physical` is the stock less what shipped,
/// `on_hand` also less what the live holds and the open orders keep. A hold whose timer
/// may or may not have run widens the bound by its quantity.
async fn check_ledger(server: &InProcessServer, products: &[String], holds: &[Hold], exact: bool) {
    let mut admin = server.admin();
    for p in products {
        let t0 = now_millis();
        let pos = get_position(&mut admin, p, LOC, false)
            .await
            .expect("GetPosition")
            .expect("the position");
        let t1 = now_millis();
        let (mut shipped, mut kept, mut maybe) = (0, 0, 0);
        for h in holds {
            for (i, (lp, _, q)) in h.lines.iter().enumerate() {
                if lp != p {
                    continue;
                }
                if h.st == St::Confirmed {
                    shipped += h.shipped[i];
                    kept += h.open[i];
                    continue;
                }
                match h.held_at(t0, t1) {
                    Some(true) => kept += q,
                    Some(false) => {}
                    None => maybe += q,
                }
            }
        }
        assert!(
            !exact || maybe == 0,
            "{p}: an exact check with timers pending"
        );
        assert_eq!(pos.physical, STOCK - shipped, "{p}: physical");
        let low = STOCK - shipped - kept - maybe;
        assert!(
            (low..=low + maybe).contains(&pos.on_hand),
            "{p}: on_hand {} not in {low}..={} (shipped {shipped}, kept {kept}, maybe {maybe})",
            pos.on_hand,
            low + maybe
        );
    }
}

async fn run_seed(seed: u64, rounds: usize) {
    let server = InProcessServer::start(SHARDS).await;
    let mut admin = server.admin();
    upsert_channel(&mut admin, channel(WEB)).await;
    let products = products_on_every_shard("M", LOC, SHARDS as usize, PER_SHARD);
    for p in &products {
        stock(&mut admin, p, LOC, STOCK).await;
    }
    let mut workers: Vec<Worker> = (0..WORKERS)
        .map(|w| Worker::new(format!("s{seed}-w{w}")))
        .collect();
    for round in 0..rounds {
        let runs = workers.into_iter().enumerate().map(|(i, w)| {
            let seed = seed * 1_000_003 + (round as u64) * 101 + i as u64;
            worker(server.inventory(), seed, products.clone(), w)
        });
        workers = futures::future::join_all(runs).await;
        let all: Vec<Hold> = workers.iter().flat_map(|w| w.holds.clone()).collect();
        check_ledger(&server, &products, &all, false).await;
    }
    // Once every short timer has surely run, the ledger is exact and every hold reads as
    // the model says.
    let all: Vec<Hold> = workers.into_iter().flat_map(|w| w.holds).collect();
    let last = all
        .iter()
        .filter(|h| {
            matches!(h.st, St::Active | St::Expired) && h.expires_at < now_millis() + 60_000
        })
        .map(|h| h.expires_at)
        .max();
    if let Some(last) = last {
        let wait = (last + TIMER_SLACK_MS + 100 - now_millis()).max(0);
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    check_ledger(&server, &products, &all, true).await;
    let count = |st: St| all.iter().filter(|h| h.st == st).count();
    eprintln!(
        "seed {seed}: holds active {}, released {}, expired {}, confirmed {} (shipped from {}), never held {}",
        count(St::Active),
        count(St::Released),
        count(St::Expired),
        count(St::Confirmed),
        all.iter()
            .filter(|h| h.shipped.iter().any(|q| *q > 0))
            .count(),
        count(St::None),
    );
    let mut inv = server.inventory();
    for mut h in all {
        read(&mut inv, &mut h).await;
    }
    server.stop().await;
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_holds_match_the_model() {
    let seeds: Vec<u64> = std::env::var("STOCKD_HOLDS_MODEL_SEEDS")
        .unwrap_or_else(|_| "1".into())
        .split(',')
        .map(|s| s.trim().parse().expect("STOCKD_HOLDS_MODEL_SEEDS: numbers"))
        .collect();
    let rounds = env_or("STOCKD_HOLDS_MODEL_ROUNDS", 3);
    for seed in seeds {
        run_seed(seed, rounds).await;
    }
}
