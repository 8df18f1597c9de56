//! Durability of the real `stockd` binary: SIGKILL at random moments, restarts with
//! another shard count, holds expiring while down, damaged log records, a failing disk
//! and graceful shutdown.
//!
//! Every test starts `env!("CARGO_BIN_EXE_stockd")` on 127.0.0.1 with free ports and a
//! temporary data folder; the server's stdout and stderr go to a file next to it, printed
//! when a check fails.
//!
//! The kill test runs `STOCKD_KILL_CYCLES` cycles (default 20); `STOCKD_KILL_SEED` fixes
//! its random choices (the kill still lands wherever the traffic is). A long run by hand:
//! `STOCKD_KILL_CYCLES=1000 cargo test --release --test durability kill_cycles -- --nocapture`.

#[path = "common/durability_support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use tonic::Code;

use stockd::proto::inventory::v1 as pb;
use stockd_domain::Command;
use support::*;

/// Hold or order lines: (product, location, quantity).
type Lines = Vec<(String, String, i64)>;

const LOC: &str = "DC1";
const WEB: &str = "WEB";

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stockd-durability-")
        .tempdir()
        .expect("temp dir")
}

/// Panics with the message and the server's log.
#[track_caller]
fn fail(server_log: &str, msg: impl std::fmt::Display) -> ! {
    panic!("{msg}\n--- server log (tail) ---\n{}", tail(server_log, 60));
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// =====================================================================================
// 1. Kill test
// =====================================================================================

/// What the test knows a hold may be after a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum St {
    Absent,
    Active,
    Released,
    Confirmed,
    Fulfilled,
    /// Some of the order's lines shipped, others still reserved: an unanswered fulfil
    /// applied on some shards only (see `fulfil_cut_between_shards_is_whole_or_absent`).
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
    /// Its reserve was never answered: a crash between its shards may have rolled it
    /// back, leaving a RELEASED hold with only some of the lines.
    reserve_uncertain: bool,
    /// What happened to it, for failure messages.
    history: Vec<String>,
    touched_in_cycle: u32,
}

impl HoldM {
    fn certain(&self) -> Option<St> {
        (self.possible.len() == 1).then(|| *self.possible.iter().next().unwrap())
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
}

fn is_failure_of_a_killed_server(code: Code) -> bool {
    // After the kill every call fails with one of these.
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::Internal
            | Code::DeadlineExceeded
    )
}

#[allow(clippy::too_many_arguments)]
async fn traffic_task(
    id: usize,
    cycle: u32,
    seed: u64,
    mut inv: Inv,
    mut admin: Adm,
    products: Vec<String>,
    counted: Vec<String>,
    mut active: Vec<HoldM>,
    mut confirmed: Vec<HoldM>,
    stop: Arc<AtomicBool>,
) -> TaskReport {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut report = TaskReport::default();
    let mut done: Vec<HoldM> = Vec::new();
    let started = Instant::now();
    let mut n = 0u64;
    // Bounded in count and time; normally ends at the kill.
    while !stop.load(Ordering::SeqCst) && n < 100_000 && started.elapsed() < Duration::from_secs(20)
    {
        n += 1;
        report.calls += 1;
        let roll = rng.random_range(0..100);
        let failed: Option<tonic::Status>;
        if roll < 40 || (active.is_empty() && confirmed.is_empty() && roll < 85) {
            // Reserve: one to three lines, usually on different shards.
            let k = *[1usize, 1, 2, 2, 3].choose(&mut rng).unwrap();
            let mut picked: Vec<String> = products.choose_multiple(&mut rng, k).cloned().collect();
            picked.sort();
            let lines: Vec<(String, String, i64)> = picked
                .into_iter()
                .map(|p| (p, LOC.to_string(), rng.random_range(1..=3)))
                .collect();
            let hold_ref = format!("h-c{cycle}-t{id}-{n}");
            let mut h = HoldM {
                order_ref: format!("o-c{cycle}-t{id}-{n}"),
                hold_ref: hold_ref.clone(),
                lines: lines.clone(),
                possible: BTreeSet::from([St::Absent]),
                reserve_uncertain: false,
                history: vec![format!("c{cycle}: reserve {lines:?}")],
                touched_in_cycle: cycle,
            };
            match inv
                .reserve(reserve_request(&hold_ref, WEB, &lines, 3600))
                .await
            {
                Ok(r) => {
                    report.acked += 1;
                    let r = r.into_inner();
                    if r.outcome == pb::ReserveOutcome::Reserved as i32 {
                        h.possible = BTreeSet::from([St::Active]);
                        h.history.push("  acked RESERVED".into());
                        match &r.hold {
                            Some(hold)
                                if hold.state == pb::HoldState::Active as i32
                                    && hold_lines(hold) == lines => {}
                            other => report.violations.push(format!(
                                "{hold_ref}: Reserve answered RESERVED with hold {other:?}, expected ACTIVE with {lines:?}"
                            )),
                        }
                        active.push(h);
                    } else if r.outcome == pb::ReserveOutcome::Rejected as i32 {
                        h.history.push("  acked REJECTED".into());
                        done.push(h);
                    } else {
                        report.violations.push(format!(
                            "{hold_ref}: all-or-nothing Reserve answered outcome {}",
                            r.outcome
                        ));
                        h.possible = BTreeSet::from([St::Absent, St::Active, St::Released]);
                        h.reserve_uncertain = true;
                        done.push(h);
                    }
                    failed = None;
                }
                Err(s) => {
                    h.possible = BTreeSet::from([St::Absent, St::Active, St::Released]);
                    h.reserve_uncertain = true;
                    h.history
                        .push(format!("  unanswered: {:?} {}", s.code(), s.message()));
                    done.push(h);
                    failed = Some(s);
                }
            }
        } else if roll < 55 && !active.is_empty() {
            // Confirm one of this task's active holds.
            let i = rng.random_range(0..active.len());
            let mut h = active.swap_remove(i);
            h.touched_in_cycle = cycle;
            h.history.push(format!("c{cycle}: confirm {}", h.order_ref));
            match inv
                .confirm_hold(pb::ConfirmHoldRequest {
                    hold_ref: h.hold_ref.clone(),
                    order_ref: h.order_ref.clone(),
                    reacquire: false,
                })
                .await
            {
                Ok(r) => {
                    report.acked += 1;
                    let hold = r.into_inner().hold;
                    match &hold {
                        Some(x)
                            if x.state == pb::HoldState::Confirmed as i32
                                && x.order_ref == h.order_ref
                                && hold_lines(x) == h.lines => {}
                        other => report
                            .violations
                            .push(format!("{}: ConfirmHold answered {other:?}", h.hold_ref)),
                    }
                    h.possible = BTreeSet::from([St::Confirmed]);
                    h.history.push("  acked".into());
                    confirmed.push(h);
                    failed = None;
                }
                Err(s) => {
                    h.possible.insert(St::Confirmed);
                    h.history
                        .push(format!("  unanswered: {:?} {}", s.code(), s.message()));
                    done.push(h);
                    failed = Some(s);
                }
            }
        } else if roll < 75 && !active.is_empty() {
            // Release one of this task's active holds.
            let i = rng.random_range(0..active.len());
            let mut h = active.swap_remove(i);
            h.touched_in_cycle = cycle;
            h.history.push(format!("c{cycle}: release"));
            match inv
                .release_hold(pb::ReleaseHoldRequest {
                    hold_ref: h.hold_ref.clone(),
                })
                .await
            {
                Ok(r) => {
                    report.acked += 1;
                    let hold = r.into_inner().hold;
                    if hold.as_ref().map(|x| x.state) != Some(pb::HoldState::Released as i32) {
                        report
                            .violations
                            .push(format!("{}: ReleaseHold answered {hold:?}", h.hold_ref));
                    }
                    h.possible = BTreeSet::from([St::Released]);
                    h.history.push("  acked".into());
                    done.push(h);
                    failed = None;
                }
                Err(s) => {
                    h.possible.insert(St::Released);
                    h.history
                        .push(format!("  unanswered: {:?} {}", s.code(), s.message()));
                    done.push(h);
                    failed = Some(s);
                }
            }
        } else if roll < 85 && !confirmed.is_empty() {
            // Fulfil one of this task's confirmed orders (everything still reserved).
            let i = rng.random_range(0..confirmed.len());
            let mut h = confirmed.swap_remove(i);
            h.touched_in_cycle = cycle;
            h.history.push(format!("c{cycle}: fulfil {}", h.order_ref));
            match inv
                .fulfil_order(pb::FulfilOrderRequest {
                    order_ref: h.order_ref.clone(),
                    lines: vec![],
                })
                .await
            {
                Ok(r) => {
                    report.acked += 1;
                    let mut shipped: Vec<(String, String, i64)> = r
                        .into_inner()
                        .lines
                        .into_iter()
                        .map(|l| (l.product_ref, l.location_ref, l.quantity))
                        .collect();
                    shipped.sort();
                    if shipped != h.lines {
                        report.violations.push(format!(
                            "{}: FulfilOrder shipped {shipped:?}, expected {:?}",
                            h.hold_ref, h.lines
                        ));
                    }
                    h.possible = BTreeSet::from([St::Fulfilled]);
                    h.history.push("  acked".into());
                    done.push(h);
                    failed = None;
                }
                Err(s) => {
                    h.possible.insert(St::Fulfilled);
                    h.history
                        .push(format!("  unanswered: {:?} {}", s.code(), s.message()));
                    done.push(h);
                    failed = Some(s);
                }
            }
        } else if roll < 95 {
            // A warehouse count on one or two positions that take counts.
            let k = rng.random_range(1..=2);
            let picked: Vec<String> = counted.choose_multiple(&mut rng, k).cloned().collect();
            let sent: Vec<(String, i64, i64)> = picked
                .into_iter()
                .map(|p| (p, next_as_of(), rng.random_range(15..=60)))
                .collect();
            let request = pb::SetStockRequest {
                counts: sent.iter().map(|(p, t, q)| count(p, LOC, *q, *t)).collect(),
            };
            match admin.set_stock(request).await {
                Ok(r) => {
                    report.acked += 1;
                    let results = r.into_inner().results;
                    if results.len() != sent.len() {
                        report.violations.push(format!(
                            "SetStock of {} counts answered {} results",
                            sent.len(),
                            results.len()
                        ));
                    }
                    for ((p, t, q), res) in sent.into_iter().zip(results) {
                        let ack = if res.status == pb::StockCountStatus::Applied as i32 {
                            CountAck::Applied
                        } else {
                            CountAck::Stale
                        };
                        report.counts.push((p, t, q, ack));
                    }
                    failed = None;
                }
                Err(s) => {
                    for (p, t, q) in sent {
                        report.counts.push((p, t, q, CountAck::Uncertain));
                    }
                    failed = Some(s);
                }
            }
        } else {
            // A read, so reads interleave with the writes.
            let keys: Vec<(String, String)> = products
                .iter()
                .map(|p| (p.clone(), LOC.to_string()))
                .collect();
            match inv
                .get_availability(pb::GetAvailabilityRequest {
                    channel_ref: WEB.into(),
                    keys: keys
                        .iter()
                        .map(|(p, l)| pb::PositionKey {
                            product_ref: p.clone(),
                            location_ref: l.clone(),
                        })
                        .collect(),
                })
                .await
            {
                Ok(r) => {
                    for vp in r.into_inner().positions {
                        if vp.quantity < 0 {
                            report.violations.push(format!("negative ATS {vp:?}"));
                        }
                    }
                    failed = None;
                }
                Err(s) => failed = Some(s),
            }
        }
        if let Some(s) = failed {
            if !is_failure_of_a_killed_server(s.code()) {
                report.violations.push(format!(
                    "task {id}: unexpected error before the kill? {:?} {}",
                    s.code(),
                    s.message()
                ));
            }
            // The server is gone (or going): every later call would fail too.
            break;
        }
    }
    report.holds.extend(active);
    report.holds.extend(confirmed);
    report.holds.extend(done);
    report
}

/// What the restarted server says about one hold.
#[derive(Debug, Clone)]
struct Observed {
    state: St,
}

struct Ledger {
    /// hold_ref → [(product, qty > 0)] of ACTIVE SOFT_RESERVE.
    soft: BTreeMap<String, Vec<(String, i64)>>,
    /// order_ref → [(product, qty > 0)] of ACTIVE RESERVED.
    reserved: BTreeMap<String, Vec<(String, i64)>>,
}

/// Checks the restarted server against the model; returns violations. Resolves the
/// model's uncertainty to what it observed.
async fn verify(
    server: &Server,
    world: &World,
    holds: &mut BTreeMap<String, HoldM>,
    counts: &mut BTreeMap<String, CountM>,
    cycle: u32,
    rng: &mut StdRng,
    half: &mut Vec<String>,
) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let mut inv = server.inventory();
    let mut admin = server.admin();

    // --- positions ---
    let products = world.all();
    let keys: Vec<(String, String)> = products
        .iter()
        .map(|p| (p.clone(), LOC.to_string()))
        .collect();
    let web_ats = availability(&mut inv, WEB, &keys).await;
    let mut ledger = Ledger {
        soft: BTreeMap::new(),
        reserved: BTreeMap::new(),
    };
    let mut held_by_position: BTreeMap<String, i64> = BTreeMap::new();
    let mut on_hand_of: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (i, p) in products.iter().enumerate() {
        let pos = match get_position(&mut admin, p, LOC, true).await {
            Ok(Some(pos)) => pos,
            Ok(None) => {
                v.push(format!("position {p}:{LOC} is gone (NOT_FOUND)"));
                continue;
            }
            Err(s) => {
                v.push(format!("GetPosition {p}: {s}"));
                continue;
            }
        };
        let mut on_hand = 0i64;
        let mut physical = 0i64;
        let mut counts_active = Vec::new();
        for q in &pos.quantities {
            if q.status != pb::QuantityStatus::Active as i32 {
                continue;
            }
            on_hand += q.quantity;
            let t = q.r#type;
            if t == pb::QuantityType::SoftReserve as i32 {
                ledger
                    .soft
                    .entry(q.hold_ref.clone())
                    .or_default()
                    .push((p.clone(), -q.quantity));
            } else if t == pb::QuantityType::Reserved as i32 {
                ledger
                    .reserved
                    .entry(q.order_ref.clone())
                    .or_default()
                    .push((p.clone(), -q.quantity));
            } else {
                physical += q.quantity;
            }
            if t == pb::QuantityType::LastOnHand as i32 {
                counts_active.push((ts_millis(&q.occurred_at).unwrap_or(-1), q.quantity));
            }
        }
        if on_hand != pos.on_hand || physical != pos.physical {
            v.push(format!(
                "{p}: totals ({}, {}) disagree with the ledger's on_hand {on_hand}, physical {physical}",
                pos.on_hand, pos.physical
            ));
        }
        on_hand_of.insert(p.clone(), (pos.on_hand, pos.physical));
        held_by_position.insert(p.clone(), pos.physical - pos.on_hand);
        // ATS: WEB keeps a buffer of one unit and has no allocation cap.
        let expected_ats = (pos.on_hand - 1).max(0);
        if web_ats[i] != expected_ats {
            v.push(format!(
                "{p}: WEB ATS {} but on_hand {} (expected {expected_ats})",
                web_ats[i], pos.on_hand
            ));
        }
        for c in &pos.channels {
            if c.quantity < 0 || c.quantity > pos.on_hand.max(0) {
                v.push(format!(
                    "{p}: channel {} ATS {} outside 0..=on_hand {}",
                    c.channel_ref, c.quantity, pos.on_hand
                ));
            }
            if c.channel_ref == WEB && c.quantity != web_ats[i] {
                v.push(format!(
                    "{p}: GetPosition WEB {} != GetAvailability {}",
                    c.quantity, web_ats[i]
                ));
            }
        }
        // Acknowledged counts.
        let cm = counts.get_mut(p).expect("every position was counted");
        if !cm.counted && pos.on_hand < 0 {
            v.push(format!(
                "{p}: on_hand {} < 0 on a position no count lowered",
                pos.on_hand
            ));
        }
        if counts_active.len() != 1 {
            v.push(format!(
                "{p}: {} active LAST_ON_HAND records: {counts_active:?}",
                counts_active.len()
            ));
        } else {
            let (t, q) = counts_active[0];
            let floor = cm
                .pending
                .iter()
                .filter(|c| c.2 != CountAck::Uncertain)
                .map(|c| c.0)
                .chain([cm.current.0])
                .max()
                .unwrap();
            let known = cm.current == (t, q) || cm.pending.iter().any(|c| (c.0, c.1) == (t, q));
            if !known || t < floor {
                v.push(format!(
                    "{p}: count in force is (as_of {t}, qty {q}); the acknowledged counts require as_of >= {floor}; \
                     before {:?}, sent since {:?}",
                    cm.current, cm.pending
                ));
            }
            cm.current = (t, q);
            cm.pending.clear();
        }
    }

    // --- holds ---
    // Every hold that may hold stock, every hold this cycle touched, a sample of the rest.
    let mut to_check: Vec<String> = Vec::new();
    let mut rest: Vec<String> = Vec::new();
    for (r, h) in holds.iter() {
        let live = h
            .possible
            .iter()
            .any(|s| matches!(s, St::Active | St::Confirmed));
        if live || h.touched_in_cycle + 1 >= cycle {
            to_check.push(r.clone());
        } else {
            rest.push(r.clone());
        }
    }
    rest.shuffle(rng);
    to_check.extend(rest.into_iter().take(200));

    let answers: Vec<(String, Result<Option<pb::Hold>, tonic::Status>)> =
        futures::stream::iter(to_check.into_iter().map(|r| {
            let mut inv = inv.clone();
            async move {
                let a = get_hold(&mut inv, &r).await;
                (r, a)
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await;

    let mut observed: BTreeMap<String, Observed> = BTreeMap::new();
    for (r, answer) in answers {
        let h = &holds[&r];
        let hold = match answer {
            Ok(x) => x,
            Err(s) => {
                v.push(format!("GetHold {r}: {s}"));
                continue;
            }
        };
        let state = match &hold {
            None => St::Absent,
            Some(x) => match pb::HoldState::try_from(x.state) {
                Ok(pb::HoldState::Active) => St::Active,
                Ok(pb::HoldState::Released) => St::Released,
                Ok(pb::HoldState::Confirmed) => {
                    // Confirmed, or fulfilled: the ledger tells.
                    let reserved = ledger.reserved.get(&h.order_ref);
                    let reserved_lines = reserved.map_or(0, |l| l.len());
                    if reserved_lines == h.lines.len() {
                        St::Confirmed
                    } else if reserved_lines == 0 {
                        St::Fulfilled
                    } else {
                        half.push(format!(
                            "cycle {cycle}: {r}: order {} is half fulfilled: still reserved {reserved:?} of {:?}; history {:?}",
                            h.order_ref, h.lines, h.history
                        ));
                        St::HalfFulfilled
                    }
                }
                Ok(pb::HoldState::Expired) => {
                    v.push(format!(
                        "{r}: EXPIRED although its ttl is an hour; history {:?}",
                        h.history
                    ));
                    St::Released
                }
                other => {
                    v.push(format!("{r}: state {other:?}"));
                    St::Absent
                }
            },
        };
        let allowed = h.possible.contains(&state)
            || (state == St::HalfFulfilled && h.possible.contains(&St::Fulfilled));
        if !allowed {
            v.push(format!(
                "{r}: after restart {state:?} ({hold:?}), expected one of {:?}; history {:?}",
                h.possible, h.history
            ));
        }
        if let Some(x) = &hold {
            let got = hold_lines(x);
            let whole = got == h.lines;
            let partial_ok = h.reserve_uncertain
                && state == St::Released
                && got.iter().all(|l| h.lines.contains(l));
            if !whole && !partial_ok {
                v.push(format!(
                    "{r}: {state:?} with lines {got:?}, requested {:?} (a hold is whole or absent); history {:?}",
                    h.lines, h.history
                ));
            }
            if matches!(state, St::Confirmed | St::Fulfilled | St::HalfFulfilled)
                && x.order_ref != h.order_ref
            {
                v.push(format!(
                    "{r}: confirmed under {:?}, expected {:?}",
                    x.order_ref, h.order_ref
                ));
            }
        }
        // The ledger agrees with the hold's state.
        let mut want: Vec<(String, i64)> =
            h.lines.iter().map(|(p, _, q)| (p.clone(), *q)).collect();
        want.sort();
        let mut soft = ledger.soft.get(&r).cloned().unwrap_or_default();
        soft.sort();
        let mut res = ledger
            .reserved
            .get(&h.order_ref)
            .cloned()
            .unwrap_or_default();
        res.sort();
        match state {
            St::Active => {
                if soft != want || !res.is_empty() {
                    v.push(format!(
                        "{r}: ACTIVE but ledger holds {soft:?} / reserved {res:?}, want {want:?}"
                    ));
                }
            }
            St::Confirmed => {
                if !soft.is_empty() || res != want {
                    v.push(format!(
                        "{r}: CONFIRMED but ledger holds {soft:?} / reserved {res:?}, want {want:?}"
                    ));
                }
            }
            St::HalfFulfilled => {
                if !soft.is_empty() || !res.iter().all(|l| want.contains(l)) {
                    v.push(format!("{r}: half fulfilled, ledger holds {soft:?} / reserved {res:?}, want part of {want:?}"));
                }
            }
            _ => {
                if !soft.is_empty() || !res.is_empty() {
                    v.push(format!(
                        "{r}: {state:?} but ledger holds {soft:?} / reserved {res:?}"
                    ));
                }
            }
        }
        observed.insert(r, Observed { state });
    }

    // Nothing in a ledger that no live hold explains.
    for (hold_ref, lines) in &ledger.soft {
        if observed.get(hold_ref).map(|o| o.state) != Some(St::Active) {
            v.push(format!(
                "active SOFT_RESERVE {lines:?} of {hold_ref}, which is not an active hold"
            ));
        }
    }
    let confirmed_orders: BTreeSet<&str> = observed
        .iter()
        .filter(|(_, o)| matches!(o.state, St::Confirmed | St::HalfFulfilled))
        .map(|(r, _)| holds[r].order_ref.as_str())
        .collect();
    for (order_ref, lines) in &ledger.reserved {
        if !confirmed_orders.contains(order_ref.as_str()) {
            v.push(format!(
                "active RESERVED {lines:?} of order {order_ref}, which no confirmed hold explains"
            ));
        }
    }
    // physical - on_hand = active holds + confirmed orders' reserved quantities.
    let mut expected_held: BTreeMap<String, i64> = BTreeMap::new();
    for (r, o) in &observed {
        if matches!(o.state, St::Active | St::Confirmed) {
            for (p, _, q) in &holds[r].lines {
                *expected_held.entry(p.clone()).or_default() += q;
            }
        }
        if o.state == St::HalfFulfilled {
            for (p, q) in ledger
                .reserved
                .get(&holds[r].order_ref)
                .into_iter()
                .flatten()
            {
                *expected_held.entry(p.clone()).or_default() += q;
            }
        }
    }
    for (p, held) in &held_by_position {
        let want = expected_held.get(p).copied().unwrap_or(0);
        if *held != want {
            v.push(format!(
                "{p}: physical - on_hand = {held} (on_hand, physical = {:?}) but active holds + confirmed orders = {want}",
                on_hand_of[p]
            ));
        }
    }

    // Resolve the model to what was observed.
    for (r, o) in observed {
        let h = holds.get_mut(&r).unwrap();
        if o.state == St::Absent {
            holds.remove(&r);
            continue;
        }
        h.possible = BTreeSet::from([o.state]);
        if !(h.reserve_uncertain && o.state == St::Released) {
            h.reserve_uncertain = false;
        }
        h.history.push(format!("c{cycle}: verified {:?}", o.state));
    }
    v
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_cycles() {
    let cycles = env_u64("STOCKD_KILL_CYCLES").unwrap_or(20) as u32;
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
    let mut server = Server::start(&data, &logs, &args).await;
    let mut admin = server.admin();
    upsert_channel(
        &mut admin,
        pb::Channel {
            channel_ref: WEB.into(),
            buffer_units: 1,
            ..Default::default()
        },
    )
    .await;
    upsert_channel(
        &mut admin,
        pb::Channel {
            channel_ref: "SOCIAL".into(),
            allocation_bps: Some(3000),
            buffer_bps: 1000,
            ..Default::default()
        },
    )
    .await;
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
            cycle_acked += report.acked;
            violations.extend(report.violations);
            for h in report.holds {
                holds.insert(h.hold_ref.clone(), h);
            }
            for (p, t, q, ack) in report.counts {
                counts.get_mut(&p).unwrap().pending.push((t, q, ack));
            }
        }
        server = Server::start(&data, &logs, &args).await;
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
        "kill_cycles: {cycles} cycles, {total_calls} calls, {total_acked} acknowledged, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(total_acked > 0, "no call was ever acknowledged");
    // Checked last so that one known bug does not hide the others (every other check ran
    // on every cycle). Pinned deterministically by fulfil_cut_between_shards_is_whole_or_absent.
    assert!(
        half_fulfilled.is_empty(),
        "{} orders were left half fulfilled by a crash during a multi-shard FulfilOrder \
         (domain.md invariant 5: no change is half applied):\n{}",
        half_fulfilled.len(),
        half_fulfilled.join("\n")
    );
}

// =====================================================================================
// Shared by the restart tests: everything a client can see of a set of positions/holds.
// =====================================================================================

#[derive(Debug, Clone, PartialEq)]
struct Visible {
    channels: Vec<pb::Channel>,
    /// (product, location) → the position with its ledger.
    positions: BTreeMap<(String, String), Option<pb::Position>>,
    /// channel → ATS per key, in key order.
    ats: BTreeMap<String, Vec<i64>>,
    /// hold_ref → the hold with its lines sorted (None: NOT_FOUND).
    holds: BTreeMap<String, Option<pb::Hold>>,
}

async fn visible(server: &Server, keys: &[(String, String)], hold_refs: &[String]) -> Visible {
    let mut inv = server.inventory();
    let mut admin = server.admin();
    let channels = admin
        .list_channels(pb::ListChannelsRequest {})
        .await
        .unwrap_or_else(|s| fail(&server.log(), format!("ListChannels: {s}")))
        .into_inner()
        .channels;
    let mut positions = BTreeMap::new();
    for (p, l) in keys {
        let pos = get_position(&mut admin, p, l, true)
            .await
            .unwrap_or_else(|s| fail(&server.log(), format!("GetPosition: {s}")));
        positions.insert((p.clone(), l.clone()), pos);
    }
    let mut ats = BTreeMap::new();
    for c in &channels {
        ats.insert(
            c.channel_ref.clone(),
            availability(&mut inv, &c.channel_ref, keys).await,
        );
    }
    let mut holds = BTreeMap::new();
    for r in hold_refs {
        let h = get_hold(&mut inv, r)
            .await
            .unwrap_or_else(|s| fail(&server.log(), format!("GetHold {r}: {s}")))
            .map(|mut h| {
                h.lines.sort_by(|a, b| {
                    (&a.product_ref, &a.location_ref).cmp(&(&b.product_ref, &b.location_ref))
                });
                h
            });
        holds.insert(r.clone(), h);
    }
    Visible {
        channels,
        positions,
        ats,
        holds,
    }
}

/// Panics with the first differences between two views.
fn assert_same(before: &Visible, after: &Visible, what: &str, log: &str) {
    if before == after {
        return;
    }
    let mut diffs = Vec::new();
    if before.channels != after.channels {
        diffs.push(format!(
            "channels:\n  before {:?}\n  after  {:?}",
            before.channels, after.channels
        ));
    }
    for (k, b) in &before.positions {
        let a = after.positions.get(k);
        if a != Some(b) {
            diffs.push(format!("position {k:?}:\n  before {b:?}\n  after  {a:?}"));
        }
    }
    for (c, b) in &before.ats {
        let a = after.ats.get(c);
        if a != Some(b) {
            diffs.push(format!("ATS of {c}:\n  before {b:?}\n  after  {a:?}"));
        }
    }
    for (r, b) in &before.holds {
        let a = after.holds.get(r);
        if a != Some(b) {
            diffs.push(format!("hold {r}:\n  before {b:?}\n  after  {a:?}"));
        }
    }
    diffs.truncate(10);
    fail(log, format!("{what}: state differs:\n{}", diffs.join("\n")));
}

async fn reserve_ok(
    inv: &mut Inv,
    hold_ref: &str,
    lines: &[(String, String, i64)],
    ttl: i64,
) -> pb::Hold {
    let r = inv
        .reserve(reserve_request(hold_ref, WEB, lines, ttl))
        .await
        .unwrap_or_else(|s| panic!("Reserve {hold_ref}: {s}"))
        .into_inner();
    assert_eq!(
        r.outcome,
        pb::ReserveOutcome::Reserved as i32,
        "Reserve {hold_ref}: {r:?}"
    );
    r.hold.expect("a reserved hold")
}

async fn confirm_ok(inv: &mut Inv, hold_ref: &str, order_ref: &str) {
    inv.confirm_hold(pb::ConfirmHoldRequest {
        hold_ref: hold_ref.into(),
        order_ref: order_ref.into(),
        reacquire: false,
    })
    .await
    .unwrap_or_else(|s| panic!("ConfirmHold {hold_ref}: {s}"));
}

async fn release_ok(inv: &mut Inv, hold_ref: &str) {
    inv.release_hold(pb::ReleaseHoldRequest {
        hold_ref: hold_ref.into(),
    })
    .await
    .unwrap_or_else(|s| panic!("ReleaseHold {hold_ref}: {s}"));
}

async fn fulfil_ok(inv: &mut Inv, order_ref: &str, lines: &[(String, String, i64)]) {
    inv.fulfil_order(pb::FulfilOrderRequest {
        order_ref: order_ref.into(),
        lines: lines
            .iter()
            .map(|(p, l, q)| pb::OrderLine {
                product_ref: p.clone(),
                location_ref: l.clone(),
                quantity: *q,
            })
            .collect(),
    })
    .await
    .unwrap_or_else(|s| panic!("FulfilOrder {order_ref}: {s}"));
}

async fn set_stock_ok(admin: &mut Adm, counts: Vec<pb::StockCount>) {
    admin
        .set_stock(pb::SetStockRequest { counts })
        .await
        .unwrap_or_else(|s| panic!("SetStock: {s}"));
}

async fn standard_channels(admin: &mut Adm) {
    upsert_channel(
        admin,
        pb::Channel {
            channel_ref: WEB.into(),
            buffer_units: 1,
            ..Default::default()
        },
    )
    .await;
    upsert_channel(
        admin,
        pb::Channel {
            channel_ref: "SOCIAL".into(),
            allocation_bps: Some(3000),
            buffer_bps: 1000,
            excluded_locations: vec!["DC2".into()],
            ..Default::default()
        },
    )
    .await;
}

/// A mix of holds over `products` (at least 6): active, multi-line, confirmed, partly
/// and wholly fulfilled, released, cancelled. Returns the hold refs.
async fn hold_mix(inv: &mut Inv, products: &[String], tag: &str) -> Vec<String> {
    let l = |i: usize, q: i64| (products[i % products.len()].clone(), LOC.to_string(), q);
    let mut refs = Vec::new();
    let mut r = |s: &str| {
        let s = format!("{tag}-{s}");
        refs.push(s.clone());
        s
    };
    let a1 = r("active-1");
    reserve_ok(inv, &a1, &[l(0, 2)], 3600).await;
    let a2 = r("active-3-lines");
    reserve_ok(inv, &a2, &[l(1, 1), l(2, 2), l(3, 3)], 3600).await;
    let c1 = r("confirmed-2-lines");
    reserve_ok(inv, &c1, &[l(4, 2), l(5, 1)], 3600).await;
    confirm_ok(inv, &c1, &format!("{c1}-order")).await;
    let c2 = r("part-fulfilled");
    reserve_ok(inv, &c2, &[l(0, 3), l(2, 1), l(4, 2)], 3600).await;
    confirm_ok(inv, &c2, &format!("{c2}-order")).await;
    fulfil_ok(inv, &format!("{c2}-order"), &[l(0, 2), l(4, 2)]).await;
    let c3 = r("fulfilled");
    reserve_ok(inv, &c3, &[l(1, 1), l(3, 1)], 3600).await;
    confirm_ok(inv, &c3, &format!("{c3}-order")).await;
    fulfil_ok(inv, &format!("{c3}-order"), &[]).await;
    let r1 = r("released");
    reserve_ok(inv, &r1, &[l(2, 2), l(5, 2)], 3600).await;
    release_ok(inv, &r1).await;
    let x1 = r("cancelled");
    reserve_ok(inv, &x1, &[l(3, 1), l(5, 1)], 3600).await;
    confirm_ok(inv, &x1, &format!("{x1}-order")).await;
    inv.cancel_order(pb::CancelOrderRequest {
        order_ref: format!("{x1}-order"),
    })
    .await
    .expect("CancelOrder");
    refs.push(format!("{tag}-never-reserved"));
    refs
}

// =====================================================================================
// 2. Shard count change
// =====================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_different_shard_count_keeps_everything() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let logs = dir.path();
    let products = products_on_every_shard("S", LOC, 5, 2);
    let mut keys: Vec<(String, String)> = Vec::new();
    for p in &products {
        keys.push((p.clone(), LOC.into()));
        keys.push((p.clone(), "DC2".into()));
    }

    let mut server = Server::start(&data, logs, &["--shards", "2"]).await;
    let mut admin = server.admin();
    let mut inv = server.inventory();
    standard_channels(&mut admin).await;
    let t = next_as_of();
    set_stock_ok(
        &mut admin,
        keys.iter()
            .enumerate()
            .map(|(i, (p, l))| count(p, l, 20 + i as i64, t))
            .collect(),
    )
    .await;
    admin
        .adjust_stock(pb::AdjustStockRequest {
            adjustments: vec![pb::StockAdjustment {
                adjustment_ref: "adj-1".into(),
                product_ref: products[0].clone(),
                location_ref: LOC.into(),
                r#type: pb::AdjustmentType::Delta as i32,
                quantity: 7,
                occurred_at: None,
            }],
        })
        .await
        .expect("AdjustStock");
    let holds = hold_mix(&mut inv, &products, "sc").await;
    let before = visible(&server, &keys, &holds).await;
    drop((admin, inv));

    let status = server.terminate().await;
    assert!(
        status.success(),
        "SIGTERM: stockd exited with {status}\n{}",
        server.log()
    );

    for shards in ["5", "1", "2"] {
        let mut server = Server::start(&data, logs, &["--shards", shards]).await;
        let after = visible(&server, &keys, &holds).await;
        assert_same(
            &before,
            &after,
            &format!("after a restart with --shards {shards}"),
            &server.log(),
        );
        let status = server.terminate().await;
        assert!(
            status.success(),
            "SIGTERM: stockd exited with {status}\n{}",
            server.log()
        );
    }
}

// =====================================================================================
// 3. Expiry while down
// =====================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_expiring_while_down_are_expired_after_restart() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let logs = dir.path();
    let products = products_on_every_shard("E", LOC, 2, 1);
    let keys: Vec<(String, String)> = products.iter().map(|p| (p.clone(), LOC.into())).collect();
    let mut server = Server::start(&data, logs, &["--shards", "2"]).await;
    let mut admin = server.admin();
    let mut inv = server.inventory();
    upsert_channel(&mut admin, channel(WEB)).await;
    let t = next_as_of();
    set_stock_ok(
        &mut admin,
        keys.iter().map(|(p, l)| count(p, l, 10, t)).collect(),
    )
    .await;
    let line = |i: usize, q: i64| (products[i].clone(), LOC.to_string(), q);
    reserve_ok(&mut inv, "short-2-lines", &[line(0, 3), line(1, 4)], 2).await;
    reserve_ok(&mut inv, "short-1-line", &[line(1, 2)], 2).await;
    reserve_ok(&mut inv, "long", &[line(0, 1)], 3600).await;
    assert_eq!(availability(&mut inv, WEB, &keys).await, vec![6, 4]);
    server.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut server = Server::start(&data, logs, &["--shards", "2"]).await;
    for round in ["after the restart", "after a second restart"] {
        let mut inv = server.inventory();
        let mut admin = server.admin();
        for (r, want) in [
            ("short-2-lines", pb::HoldState::Expired),
            ("short-1-line", pb::HoldState::Expired),
            ("long", pb::HoldState::Active),
        ] {
            let h = get_hold(&mut inv, r).await.expect("GetHold");
            let state = h.as_ref().map(|h| h.state);
            if state != Some(want as i32) {
                fail(
                    &server.log(),
                    format!("{round}: {r} is {h:?}, expected {want:?}"),
                );
            }
        }
        let ats = availability(&mut inv, WEB, &keys).await;
        if ats != vec![9, 10] {
            fail(
                &server.log(),
                format!("{round}: ATS {ats:?}, expected [9, 10]: expired stock is sellable"),
            );
        }
        for (p, l) in &keys {
            let pos = get_position(&mut admin, p, l, true).await.unwrap().unwrap();
            let soft: Vec<_> = pos
                .quantities
                .iter()
                .filter(|q| q.r#type == pb::QuantityType::SoftReserve as i32)
                .filter(|q| q.status == pb::QuantityStatus::Active as i32)
                .map(|q| q.hold_ref.clone())
                .collect();
            let want: Vec<String> = if p == &products[0] {
                vec!["long".into()]
            } else {
                vec![]
            };
            if soft != want {
                fail(
                    &server.log(),
                    format!("{round}: {p} active holds {soft:?}, expected {want:?}"),
                );
            }
        }
        // The stock is sellable: a new hold can take it.
        if round == "after the restart" {
            reserve_ok(&mut inv, "after-expiry", &[line(1, 10)], 3600).await;
            release_ok(&mut inv, "after-expiry").await;
            drop((inv, admin));
            let status = server.terminate().await;
            assert!(status.success(), "SIGTERM: exit {status}\n{}", server.log());
            server = Server::start(&data, logs, &["--shards", "2"]).await;
        }
    }
}

// =====================================================================================
// 4. Damaged records
// =====================================================================================

/// A server with acknowledged changes on every shard, stopped with SIGKILL.
async fn damaged_setup(
    data: &std::path::Path,
    logs: &std::path::Path,
) -> (Vec<(String, String)>, Vec<String>, Visible) {
    let products = products_on_every_shard("D", LOC, 2, 3);
    let keys: Vec<(String, String)> = products.iter().map(|p| (p.clone(), LOC.into())).collect();
    let mut server = Server::start(data, logs, &["--shards", "2"]).await;
    let mut admin = server.admin();
    let mut inv = server.inventory();
    standard_channels(&mut admin).await;
    let t = next_as_of();
    set_stock_ok(
        &mut admin,
        keys.iter().map(|(p, l)| count(p, l, 30, t)).collect(),
    )
    .await;
    let holds = hold_mix(&mut inv, &products, "dmg").await;
    let before = visible(&server, &keys, &holds).await;
    server.kill();
    (keys, holds, before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_tail_record_is_dropped_and_nothing_acknowledged_is_lost() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let logs = dir.path();
    let (keys, holds, before) = damaged_setup(&data, logs).await;

    // A torn write: a record after the last one of shard 1, with a bad checksum.
    let torn_seq = {
        let (store, generation) = open_store(&data);
        let last = *log_seqs(&store, generation, 1)
            .last()
            .expect("shard 1 has log records");
        let mut garbage = vec![1u8, 0xde, 0xad, 0xbe, 0xef];
        garbage.extend_from_slice(b"torn record payload");
        put_log_bytes(&store, generation, 1, last + 1, garbage);
        last + 1
    };

    let mut server = Server::start(&data, logs, &["--shards", "2"]).await;
    let log = server.log();
    let reported = log.lines().any(|l| {
        l.contains(&format!("log record {torn_seq}"))
            && l.contains("shard 1")
            && l.contains("dropped")
    });
    if !reported {
        fail(
            &log,
            format!(
                "the dropped tail record (shard 1, record {torn_seq}) is not reported in the log"
            ),
        );
    }
    let after = visible(&server, &keys, &holds).await;
    assert_same(&before, &after, "after dropping a torn tail record", &log);

    // The log goes on: a new change after the dropped record survives another crash.
    let mut inv = server.inventory();
    let line = |i: usize| (keys[i].0.clone(), LOC.to_string(), 1);
    reserve_ok(&mut inv, "after-torn", &[line(0), line(1), line(2)], 3600).await;
    server.kill();
    let server = Server::start(&data, logs, &["--shards", "2"]).await;
    let mut inv = server.inventory();
    let h = get_hold(&mut inv, "after-torn").await.unwrap();
    if h.as_ref().map(|h| (h.state, h.lines.len())) != Some((pb::HoldState::Active as i32, 3)) {
        fail(
            &server.log(),
            format!("the hold placed after the torn record is {h:?}"),
        );
    }
    if server.log().contains("never acknowledged") {
        fail(
            &server.log(),
            "a second start reports a dropped record again",
        );
    }
    let again = visible(&server, &keys, &holds).await;
    // Only the new hold changed positions; the old holds are as they were.
    assert_eq!(before.holds, again.holds, "holds after the second restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_middle_record_refuses_to_start_and_names_the_record() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let logs = dir.path();
    let (keys, holds, before) = damaged_setup(&data, logs).await;

    let (damaged_seq, original) = {
        let (store, generation) = open_store(&data);
        let seqs = log_seqs(&store, generation, 0);
        assert!(seqs.len() >= 3, "shard 0 needs a few records: {seqs:?}");
        let seq = seqs[seqs.len() / 2];
        let original = log_bytes(&store, generation, 0, seq);
        let mut bad = original.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x5a;
        put_log_bytes(&store, generation, 0, seq, bad);
        (seq, original)
    };

    let mut server = Server::spawn(&data, logs, &["--shards", "2"]);
    let status = server.wait_exit(Duration::from_secs(30)).await;
    let log = server.log();
    match status {
        Some(s) if !s.success() => {}
        Some(s) => fail(
            &log,
            format!("stockd exited with {s} on a damaged log; expected a failure"),
        ),
        None => fail(
            &log,
            "stockd kept running on a log damaged in the middle; it must refuse to start",
        ),
    }
    let data_shown = data.display().to_string();
    let named = log.lines().any(|l| {
        l.contains(&data_shown)
            && l.contains(&format!("record {damaged_seq}"))
            && l.contains("shard 0")
    });
    if !named {
        fail(
            &log,
            format!(
                "the error must name the data folder {data_shown} and shard 0 record {damaged_seq}"
            ),
        );
    }

    // Nothing was lost or rewritten: with the byte repaired, everything is back.
    {
        let (store, generation) = open_store(&data);
        put_log_bytes(&store, generation, 0, damaged_seq, original);
    }
    let server = Server::start(&data, logs, &["--shards", "2"]).await;
    let after = visible(&server, &keys, &holds).await;
    assert_same(
        &before,
        &after,
        "after repairing the damaged record",
        &server.log(),
    );
}

// =====================================================================================
// 5. Disk errors
// =====================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_errors_answer_unavailable_and_reads_go_on() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let logs = dir.path();
    let fault = dir.path().join("fail");
    let fault_arg = fault.display().to_string();
    let args = [
        "--shards",
        "2",
        "--fault-fail-writes-file",
        fault_arg.as_str(),
    ];
    let products = products_on_every_shard("W", LOC, 2, 2);
    let keys: Vec<(String, String)> = products.iter().map(|p| (p.clone(), LOC.into())).collect();
    let line = |i: usize, q: i64| (products[i].clone(), LOC.to_string(), q);

    let mut server = Server::start(&data, logs, &args).await;
    let mut admin = server.admin();
    let mut inv = server.inventory();
    standard_channels(&mut admin).await;
    let t = next_as_of();
    set_stock_ok(
        &mut admin,
        keys.iter().map(|(p, l)| count(p, l, 20, t)).collect(),
    )
    .await;
    reserve_ok(&mut inv, "ok-hold", &[line(0, 2), line(1, 3)], 3600).await;
    reserve_ok(&mut inv, "ok-confirm", &[line(2, 1), line(3, 1)], 3600).await;
    let known = [
        "ok-hold".to_string(),
        "ok-confirm".to_string(),
        "bad-hold".into(),
        "bad-hold-2".into(),
    ];
    let before = visible(&server, &keys, &known).await;

    std::fs::write(&fault, b"").unwrap();
    let expect_unavailable = |what: &str, r: Result<(), tonic::Status>, log: &str| match r {
        Err(s) if s.code() == Code::Unavailable => {}
        other => fail(
            log,
            format!("{what} with a failing disk answered {other:?}, expected UNAVAILABLE"),
        ),
    };
    let r = inv
        .reserve(reserve_request(
            "bad-hold",
            WEB,
            &[line(0, 1), line(1, 1)],
            3600,
        ))
        .await
        .map(drop);
    expect_unavailable("Reserve", r, &server.log());
    let r = admin
        .set_stock(pb::SetStockRequest {
            counts: vec![count(&products[0], LOC, 99, next_as_of())],
        })
        .await
        .map(drop);
    expect_unavailable("SetStock", r, &server.log());
    let r = inv
        .reserve(reserve_request("bad-hold-2", WEB, &[line(3, 1)], 3600))
        .await
        .map(drop);
    expect_unavailable("a second Reserve", r, &server.log());
    let r = inv
        .confirm_hold(pb::ConfirmHoldRequest {
            hold_ref: "ok-confirm".into(),
            order_ref: "bad-order".into(),
            reacquire: false,
        })
        .await
        .map(drop);
    expect_unavailable("ConfirmHold", r, &server.log());
    let r = inv
        .release_hold(pb::ReleaseHoldRequest {
            hold_ref: "ok-hold".into(),
        })
        .await
        .map(drop);
    expect_unavailable("ReleaseHold", r, &server.log());

    // Reads go on.
    let mut reads_ok = true;
    for _ in 0..3 {
        reads_ok &= inv
            .get_availability(pb::GetAvailabilityRequest {
                channel_ref: WEB.into(),
                keys: keys
                    .iter()
                    .map(|(p, l)| pb::PositionKey {
                        product_ref: p.clone(),
                        location_ref: l.clone(),
                    })
                    .collect(),
            })
            .await
            .is_ok();
        reads_ok &= get_hold(&mut inv, "ok-hold")
            .await
            .is_ok_and(|h| h.is_some());
        reads_ok &= get_position(&mut admin, &products[0], LOC, true)
            .await
            .is_ok_and(|p| p.is_some());
    }
    if !reads_ok {
        fail(&server.log(), "reads failed with a failing disk");
    }
    if !server.log().contains("UNAVAILABLE") && !server.log().contains("write failed") {
        fail(
            &server.log(),
            "the failing write is not in the server's log",
        );
    }

    server.kill();
    std::fs::remove_file(&fault).unwrap();
    let server = Server::start(&data, logs, &args).await;
    let after = visible(&server, &keys, &known).await;
    assert_same(
        &before,
        &after,
        "after a restart on a healthy disk (nothing that answered UNAVAILABLE may be there)",
        &server.log(),
    );
}

/// A write that answered UNAVAILABLE was never acknowledged, so no read may show it
/// either: until the restart, reads must show what is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_a_failed_write_show_only_durable_state() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let logs = dir.path();
    let fault = dir.path().join("fail");
    let fault_arg = fault.display().to_string();
    let args = [
        "--shards",
        "2",
        "--fault-fail-writes-file",
        fault_arg.as_str(),
    ];
    let products = products_on_every_shard("R", LOC, 2, 1);
    let keys: Vec<(String, String)> = products.iter().map(|p| (p.clone(), LOC.into())).collect();
    let line = |i: usize, q: i64| (products[i].clone(), LOC.to_string(), q);

    let server = Server::start(&data, logs, &args).await;
    let mut admin = server.admin();
    let mut inv = server.inventory();
    upsert_channel(&mut admin, channel(WEB)).await;
    let t = next_as_of();
    set_stock_ok(
        &mut admin,
        keys.iter().map(|(p, l)| count(p, l, 10, t)).collect(),
    )
    .await;
    let known = ["bad-hold".to_string()];
    let before = visible(&server, &keys, &known).await;

    std::fs::write(&fault, b"").unwrap();
    let r = inv
        .reserve(reserve_request(
            "bad-hold",
            WEB,
            &[line(0, 4), line(1, 5)],
            3600,
        ))
        .await;
    match r {
        Err(s) if s.code() == Code::Unavailable => {}
        other => fail(
            &server.log(),
            format!("Reserve with a failing disk answered {other:?}"),
        ),
    }
    let r = admin
        .set_stock(pb::SetStockRequest {
            counts: vec![count(&products[0], LOC, 1, next_as_of())],
        })
        .await;
    match r {
        Err(s) if s.code() == Code::Unavailable => {}
        other => fail(
            &server.log(),
            format!("SetStock with a failing disk answered {other:?}"),
        ),
    }
    let during = visible(&server, &keys, &known).await;
    assert_same(
        &before,
        &during,
        "reads after writes that answered UNAVAILABLE (they show changes that were never acknowledged and vanish at the restart)",
        &server.log(),
    );
}

// =====================================================================================
// 6. Graceful shutdown
// =====================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_exits_zero_and_keeps_acknowledged_changes() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let logs = dir.path();
    let products = products_on_every_shard("G", LOC, 3, 2);
    let keys: Vec<(String, String)> = products.iter().map(|p| (p.clone(), LOC.into())).collect();
    let mut server = Server::start(&data, logs, &["--shards", "3"]).await;
    let mut admin = server.admin();
    let mut inv = server.inventory();
    standard_channels(&mut admin).await;
    let t = next_as_of();
    set_stock_ok(
        &mut admin,
        keys.iter().map(|(p, l)| count(p, l, 100_000, t)).collect(),
    )
    .await;
    let mixed = hold_mix(&mut inv, &products, "gs").await;
    let before = visible(&server, &keys, &mixed).await;

    // Traffic still running when SIGTERM arrives: whatever was acknowledged survives.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for id in 0..4usize {
        let mut inv = server.inventory();
        let products = products.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked: Vec<(String, Lines)> = Vec::new();
            let mut rng = StdRng::seed_from_u64(id as u64);
            for n in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let mut picked: Vec<String> =
                    products.choose_multiple(&mut rng, 2).cloned().collect();
                picked.sort();
                let lines: Vec<_> = picked
                    .into_iter()
                    .map(|p| (p, LOC.to_string(), 1))
                    .collect();
                let r = format!("term-{id}-{n}");
                match inv.reserve(reserve_request(&r, WEB, &lines, 3600)).await {
                    Ok(a) if a.get_ref().outcome == pb::ReserveOutcome::Reserved as i32 => {
                        acked.push((r, lines))
                    }
                    Ok(a) => panic!("{r}: {:?}", a.into_inner()),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = server.terminate().await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let log = server.log();
    if !status.success() {
        fail(
            &log,
            format!("SIGTERM: stockd exited with {status}, expected 0"),
        );
    }
    if !log.contains("shut down") {
        fail(&log, "the log does not report the shutdown");
    }
    assert!(
        !acked.is_empty(),
        "no reserve was acknowledged before SIGTERM"
    );

    let server = Server::start(&data, logs, &["--shards", "3"]).await;
    let mut inv = server.inventory();
    for (r, lines) in &acked {
        let h = get_hold(&mut inv, r).await.unwrap();
        match &h {
            Some(h) if h.state == pb::HoldState::Active as i32 && &hold_lines(h) == lines => {}
            other => fail(
                &server.log(),
                format!("acknowledged hold {r} ({lines:?}) after a graceful restart: {other:?}"),
            ),
        }
    }
    // The holds placed before the traffic are exactly as they were (positions moved on
    // with the traffic's holds, so only the holds and channels are compared).
    let after = visible(&server, &keys, &mixed).await;
    if after.holds != before.holds || after.channels != before.channels {
        fail(
            &server.log(),
            format!(
                "after a graceful restart:\n  before {:?}\n  after  {:?}",
                before.holds, after.holds
            ),
        );
    }
    eprintln!(
        "graceful shutdown: {} holds acknowledged during the shutdown race survived",
        acked.len()
    );
}

// =====================================================================================
// 7. A crash between the shards of one change (deterministic)
// =====================================================================================
//
// A change that spans shards (a multi-line reserve, confirm, release, fulfil or cancel)
// is written by each shard separately. A crash can make one shard's part durable and not
// the other's. These tests build exactly that state, without timing luck: do the change,
// SIGKILL, then remove the change's record from the end of shard 1's log (as if the crash
// came just before it was durable; the call was then never acknowledged). After the
// restart the change must be whole or absent on every shard (domain.md invariant 5).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Reserve,
    Confirm,
    Release,
    Fulfil,
    Cancel,
}

/// What one position shows of hold `h` / order `o`: (soft reserve, reserved, sold).
fn signature(pos: &pb::Position, stock: i64) -> (bool, bool, bool) {
    let active = |t: pb::QuantityType| {
        pos.quantities
            .iter()
            .any(|q| q.r#type == t as i32 && q.status == pb::QuantityStatus::Active as i32)
    };
    (
        active(pb::QuantityType::SoftReserve),
        active(pb::QuantityType::Reserved),
        pos.physical < stock,
    )
}

async fn torn_between_shards(op: Op) {
    let dir = tempdir();
    let data = dir.path().join("data");
    let logs = dir.path();
    let products = products_on_every_shard("T", LOC, 2, 1);
    let keys: Vec<(String, String)> = products.iter().map(|p| (p.clone(), LOC.into())).collect();
    let mut lines = vec![
        (products[0].clone(), LOC.to_string(), 2),
        (products[1].clone(), LOC.to_string(), 3),
    ];
    lines.sort();
    const STOCK: i64 = 10;

    let mut server = Server::start(&data, logs, &["--shards", "2"]).await;
    let mut admin = server.admin();
    let mut inv = server.inventory();
    upsert_channel(&mut admin, channel(WEB)).await;
    let t = next_as_of();
    set_stock_ok(
        &mut admin,
        keys.iter().map(|(p, l)| count(p, l, STOCK, t)).collect(),
    )
    .await;
    if op != Op::Reserve {
        reserve_ok(&mut inv, "h", &lines, 3600).await;
    }
    if matches!(op, Op::Fulfil | Op::Cancel) {
        confirm_ok(&mut inv, "h", "o").await;
    }
    match op {
        Op::Reserve => drop(reserve_ok(&mut inv, "h", &lines, 3600).await),
        Op::Confirm => confirm_ok(&mut inv, "h", "o").await,
        Op::Release => release_ok(&mut inv, "h").await,
        Op::Fulfil => fulfil_ok(&mut inv, "o", &[]).await,
        Op::Cancel => {
            inv.cancel_order(pb::CancelOrderRequest {
                order_ref: "o".into(),
            })
            .await
            .expect("CancelOrder");
        }
    }
    drop((admin, inv));
    server.kill();
    {
        let (store, generation) = open_store(&data);
        drop_last_log_record(&store, generation, 1, |c| match op {
            Op::Reserve => matches!(c, Command::Reserve { .. }),
            Op::Confirm => matches!(c, Command::Confirm { .. }),
            Op::Release => matches!(c, Command::Release { .. }),
            Op::Fulfil => matches!(c, Command::Fulfil { .. }),
            Op::Cancel => matches!(c, Command::CancelOrder { .. }),
        });
    }

    let mut first: Option<Visible> = None;
    for round in ["after the restart", "after a second restart"] {
        let mut server = Server::start(&data, logs, &["--shards", "2"]).await;
        let seen = visible(&server, &keys, &["h".to_string()]).await;
        let sig: Vec<(bool, bool, bool)> = keys
            .iter()
            .map(|k| signature(seen.positions[k].as_ref().expect("position"), STOCK))
            .collect();
        let hold = seen.holds["h"].clone();
        let state = hold
            .as_ref()
            .map(|h| pb::HoldState::try_from(h.state).unwrap());
        let whole = sig[0] == sig[1];
        let consistent = match state {
            None | Some(pb::HoldState::Released) | Some(pb::HoldState::Expired) => {
                !sig[0].0 && !sig[0].1 && !sig[1].0 && !sig[1].1
            }
            Some(pb::HoldState::Active) => sig[0].0 && sig[1].0,
            Some(pb::HoldState::Confirmed) => !sig[0].0 && !sig[1].0,
            Some(pb::HoldState::Unspecified) => false,
        };
        let lines_ok = match &hold {
            Some(h) if state != Some(pb::HoldState::Released) => hold_lines(h) == lines,
            _ => true,
        };
        if !whole || !consistent {
            fail(
                &server.log(),
                format!(
                    "{op:?} cut between shards, {round}: the change is half applied.\n  \
                     per position (soft reserve, reserved, sold): {sig:?}\n  hold: {hold:?}"
                ),
            );
        }
        if !lines_ok {
            fail(
                &server.log(),
                format!("{op:?} cut between shards, {round}: hold {hold:?}, lines {lines:?}"),
            );
        }
        match &first {
            None => first = Some(seen),
            Some(f) => assert_same(f, &seen, &format!("{op:?}: {round}"), &server.log()),
        }
        let status = server.terminate().await;
        assert!(status.success(), "SIGTERM: {status}\n{}", server.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_cut_between_shards_is_whole_or_absent() {
    torn_between_shards(Op::Reserve).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_cut_between_shards_is_whole_or_absent() {
    torn_between_shards(Op::Confirm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_cut_between_shards_is_whole_or_absent() {
    torn_between_shards(Op::Release).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fulfil_cut_between_shards_is_whole_or_absent() {
    torn_between_shards(Op::Fulfil).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_cut_between_shards_is_whole_or_absent() {
    torn_between_shards(Op::Cancel).await;
}
