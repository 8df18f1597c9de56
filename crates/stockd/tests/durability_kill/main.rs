//! The kill test: the real `stockd` binary under traffic from several clients, SIGKILLed
//! at a random moment, restarted on the same data folder and checked against a model of
//! everything the clients were told, for `STOCKD_KILL_CYCLES` cycles (default 10).
//!
//! The traffic includes cart updates of holds whose lines span the three shards: each
//! comes back after the kill as its last acknowledged cart or, when its answer was lost,
//! possibly the new one, whole; never released, never a mix (issue #12).
//!
//! `STOCKD_KILL_SEED` fixes its random choices (the kill still lands wherever the traffic
//! is). A long run by hand:
//! `STOCKD_KILL_CYCLES=1000 cargo test --release --test durability_kill kill_cycles -- --nocapture`.
//!
//! # Layout
//! - `main.rs`: the model of holds and counts, and the cycle loop.
//! - `traffic.rs`: one client's traffic until the kill, and what it was told.
//! - `verify.rs`: the restarted server checked against the model.

#[path = "../common/mod.rs"]
mod common;
mod traffic;
mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use stockd::proto::inventory::v1 as pb;

use common::calls::fulfil_ok;
use common::fixtures::{LOC, products_on_every_shard, web_and_social_channels};
use common::requests::{count, next_as_of};
use common::server::{ServerProcess, fail, tail, tempdir};
use traffic::traffic_task;
use verify::verify;

/// What the test knows a hold may be after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum St {
    Absent,
    Active,
    Released,
    Confirmed,
    Fulfilled,
    /// Some of the order's lines shipped, others still reserved: an unanswered fulfil
    /// applied on some shards only (see `fulfil_cut_between_shards_is_whole_or_absent` in
    /// `durability_recovery.rs`).
    HalfFulfilled,
}

#[derive(Clone, Debug)]
struct HoldM {
    hold_ref: String,
    /// Sorted.
    lines: Vec<(String, String, i64)>,
    order_ref: String,
    /// The states the hold may be in: one when every call on it was answered, two when
    /// the last call's answer was lost (the call may or may not have applied).
    possible: BTreeSet<St>,
    /// A cart update of the hold (to these lines, sorted) was not answered: the hold is
    /// `lines` or these, whole.
    maybe_lines: Option<Vec<(String, String, i64)>>,
    /// What happened to it, for failure messages.
    history: Vec<String>,
    touched_in_cycle: u32,
}

impl HoldM {
    fn certain(&self) -> Option<St> {
        (self.possible.len() == 1).then(|| *self.possible.iter().next().unwrap())
    }

    /// A call that moves the hold to `state` was answered: it is in `state` now.
    fn acked(&mut self, state: St) {
        self.possible = BTreeSet::from([state]);
        self.history.push("  acked".into());
    }

    /// A call that moves the hold to `state` was not answered (`error`): it may be in
    /// `state` now or still where it was.
    fn unanswered(&mut self, state: St, error: &tonic::Status) {
        self.possible.insert(state);
        self.note_unanswered(error);
    }

    fn note_unanswered(&mut self, error: &tonic::Status) {
        self.history.push(format!(
            "  unanswered: {:?} {}",
            error.code(),
            error.message()
        ));
    }
}

/// A count the test sent to one position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CountAck {
    Applied,
    Stale,
    Uncertain,
}

#[derive(Clone, Debug)]
struct CountM {
    /// The count in force as last verified: (as_of, quantity).
    current: (i64, i64),
    /// Counts sent since: (as_of, quantity, answer).
    pending: Vec<(i64, i64, CountAck)>,
    /// Whether this position receives counts during traffic.
    counted: bool,
}

struct World {
    counted: Vec<String>,
    free: Vec<String>,
}

impl World {
    fn all(&self) -> Vec<String> {
        self.counted
            .iter()
            .chain(self.free.iter())
            .cloned()
            .collect()
    }
}

/// What one traffic task did.
#[derive(Default)]
struct TaskReport {
    holds: Vec<HoldM>,
    counts: Vec<(String, i64, i64, CountAck)>,
    violations: Vec<String>,
    calls: u64,
    acked: u64,
    /// Cart updates sent (answered or not).
    updates: u64,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_cycles() {
    let cycles = env_u64("STOCKD_KILL_CYCLES").unwrap_or(10) as u32;
    let seed = env_u64("STOCKD_KILL_SEED").unwrap_or_else(rand::random);
    eprintln!("kill_cycles: {cycles} cycles, STOCKD_KILL_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempdir();
    let data = dir.path().join("data");
    let logs = dir.path().to_path_buf();
    // Frequent snapshots, so kills also land while a snapshot is written and its log trimmed.
    let args = [
        "--shards",
        "3",
        "--snapshot-every-records",
        "20",
        "--snapshot-every-secs",
        "1",
    ];

    let world = World {
        counted: products_on_every_shard("K", LOC, 3, 2),
        free: products_on_every_shard("F", LOC, 3, 1),
    };
    let mut server = ServerProcess::start(&data, &logs, &args).await;
    let mut admin = server.admin();
    web_and_social_channels(&mut admin, &[]).await;
    let mut counts: BTreeMap<String, CountM> = BTreeMap::new();
    let mut initial = Vec::new();
    for p in world.all() {
        let counted = world.counted.contains(&p);
        let qty = if counted { 40 } else { 1_000_000 };
        let t = next_as_of();
        initial.push(count(&p, LOC, qty, t));
        counts.insert(
            p.clone(),
            CountM {
                current: (t, qty),
                pending: vec![],
                counted,
            },
        );
    }
    admin
        .set_stock(pb::SetStockRequest { counts: initial })
        .await
        .expect("initial SetStock");

    let mut holds: BTreeMap<String, HoldM> = BTreeMap::new();
    let mut half_fulfilled: Vec<String> = Vec::new();
    let started = Instant::now();
    let mut total_calls = 0u64;
    let mut total_acked = 0u64;
    let mut total_updates = 0u64;
    const TASKS: usize = 6;
    for cycle in 1..=cycles {
        // Hand the live holds of earlier cycles to the tasks.
        let mut active: Vec<Vec<HoldM>> = vec![Vec::new(); TASKS];
        let mut confirmed: Vec<Vec<HoldM>> = vec![Vec::new(); TASKS];
        let mut carried = Vec::new();
        for (r, h) in holds.iter() {
            match h.certain() {
                Some(St::Active) | Some(St::Confirmed) => carried.push(r.clone()),
                _ => {}
            }
        }
        for (i, r) in carried.into_iter().enumerate() {
            let h = holds.remove(&r).unwrap();
            if h.certain() == Some(St::Active) {
                active[i % TASKS].push(h);
            } else {
                confirmed[i % TASKS].push(h);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for id in 0..TASKS {
            tasks.push(tokio::spawn(traffic_task(
                id,
                cycle,
                rng.random(),
                server.inventory(),
                server.admin(),
                world.all(),
                world.counted.clone(),
                std::mem::take(&mut active[id]),
                std::mem::take(&mut confirmed[id]),
                stop.clone(),
            )));
        }
        let delay = rng.random_range(50..=500);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let before_log = server.log();
        server.kill();
        stop.store(true, Ordering::SeqCst);
        let mut violations = Vec::new();
        let mut cycle_acked = 0;
        for t in tasks {
            let report = tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("a traffic task did not stop within 60 s of the kill")
                .expect("traffic task panicked");
            total_calls += report.calls;
            total_acked += report.acked;
            total_updates += report.updates;
            cycle_acked += report.acked;
            violations.extend(report.violations);
            for h in report.holds {
                holds.insert(h.hold_ref.clone(), h);
            }
            for (p, t, q, ack) in report.counts {
                counts.get_mut(&p).unwrap().pending.push((t, q, ack));
            }
        }
        server = ServerProcess::start(&data, &logs, &args).await;
        let half_before = half_fulfilled.len();
        violations.extend(
            verify(
                &server,
                &world,
                &mut holds,
                &mut counts,
                cycle,
                &mut rng,
                &mut half_fulfilled,
            )
            .await,
        );
        if half_fulfilled.len() > half_before {
            eprintln!(
                "cycle {cycle}: {}",
                half_fulfilled[half_before..].join("\n")
            );
        }
        // A client whose fulfil went unanswered retries it: that ships the rest.
        let mut inv = server.inventory();
        for h in holds
            .values_mut()
            .filter(|h| h.certain() == Some(St::HalfFulfilled))
        {
            fulfil_ok(&mut inv, &h.order_ref, &[]).await;
            h.possible = BTreeSet::from([St::Fulfilled]);
            h.history.push(format!("c{cycle}: fulfil retried"));
        }
        if !violations.is_empty() {
            let shown: Vec<&String> = violations.iter().take(25).collect();
            fail(
                &format!(
                    "{}\n--- log before the kill ---\n{}",
                    server.log(),
                    tail(&before_log, 30)
                ),
                format!(
                    "cycle {cycle} (STOCKD_KILL_SEED={seed}, killed {delay} ms into traffic): {} violations:\n{}",
                    violations.len(),
                    shown
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            );
        }
        eprintln!(
            "cycle {cycle}: killed after {delay} ms, {cycle_acked} acknowledged calls, {} holds tracked, {:.1} s",
            holds.len(),
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "kill_cycles: {cycles} cycles, {total_calls} calls ({total_updates} cart updates), {total_acked} acknowledged, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(total_acked > 0, "no call was ever acknowledged");
    assert!(total_updates > 0, "no cart update was ever sent");
    // Checked last so that one known bug does not hide the others (every other check ran
    // on every cycle). Pinned deterministically by
    // fulfil_cut_between_shards_is_whole_or_absent (durability_recovery.rs).
    assert!(
        half_fulfilled.is_empty(),
        "{} orders were left half fulfilled by a crash during a multi-shard FulfilOrder \
         (domain.md invariant 5: no change is half applied):\n{}",
        half_fulfilled.len(),
        half_fulfilled.join("\n")
    );
}
