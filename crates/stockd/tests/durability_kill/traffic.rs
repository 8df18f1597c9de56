//! One client's traffic during a kill cycle: reserves, confirms, releases, fulfils,
//! counts and reads until the kill (bounded in calls and time), and what it was told.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tonic::Code;

use stockd::proto::inventory::v1 as pb;

use crate::common::calls::hold_lines;
use crate::common::client::{Adm, Inv};
use crate::common::fixtures::{LOC, WEB};
use crate::common::requests::{count, keys_at, next_as_of, position_keys, reserve_request};
use crate::{CountAck, HoldM, St, TaskReport};

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

/// Takes a random hold out of `holds` for a call in `cycle`, noting `what` in its history.
fn take_one(
    holds: &mut Vec<HoldM>,
    rng: &mut StdRng,
    cycle: u32,
    what: impl FnOnce(&HoldM) -> String,
) -> HoldM {
    let i = rng.random_range(0..holds.len());
    let mut h = holds.swap_remove(i);
    h.touched_in_cycle = cycle;
    let what = what(&h);
    h.history.push(format!("c{cycle}: {what}"));
    h
}

/// Records the answer to a call that moves `h` to `state`: an answer is acknowledged (and
/// `check` names what is wrong with it, a violation), a lost one leaves `state` possible.
/// Returns the hold and the call's error.
fn follow_up<T>(
    report: &mut TaskReport,
    mut h: HoldM,
    state: St,
    answer: Result<T, tonic::Status>,
    check: impl FnOnce(&HoldM, T) -> Option<String>,
) -> (HoldM, Option<tonic::Status>) {
    match answer {
        Ok(r) => {
            report.acked += 1;
            if let Some(violation) = check(&h, r) {
                report.violations.push(violation);
            }
            h.acked(state);
            (h, None)
        }
        Err(s) => {
            h.unanswered(state, &s);
            (h, Some(s))
        }
    }
}

/// One to three lines (sorted) on random products, usually on different shards.
fn pick_lines(rng: &mut StdRng, products: &[String]) -> Vec<(String, String, i64)> {
    let k = *[1usize, 1, 2, 2, 3].choose(rng).unwrap();
    let mut picked: Vec<String> = products.choose_multiple(rng, k).cloned().collect();
    picked.sort();
    picked
        .into_iter()
        .map(|p| (p, LOC.to_string(), rng.random_range(1..=3)))
        .collect()
}

/// Records the answer to a cart update of the active hold `h` to `lines`: RESERVED
/// replaces its lines, REJECTED keeps the old cart (which the answer must show), no
/// answer leaves either cart possible. Returns the hold and the call's error.
fn cart_update(
    report: &mut TaskReport,
    mut h: HoldM,
    lines: Vec<(String, String, i64)>,
    answer: Result<tonic::Response<pb::ReserveResponse>, tonic::Status>,
) -> (HoldM, Option<tonic::Status>) {
    let r = match answer {
        Ok(r) => r.into_inner(),
        Err(s) => {
            h.note_unanswered(&s);
            h.maybe_lines = Some(lines);
            return (h, Some(s));
        }
    };
    report.acked += 1;
    let shown = r.hold.as_ref().map(|x| (x.state, hold_lines(x)));
    let active = pb::HoldState::Active as i32;
    if r.outcome == pb::ReserveOutcome::Reserved as i32 {
        if shown != Some((active, lines.clone())) {
            report.violations.push(format!(
                "{}: cart update answered RESERVED with {shown:?}, expected ACTIVE {lines:?}",
                h.hold_ref
            ));
        }
        h.lines = lines;
        h.history.push("  acked RESERVED".into());
    } else if r.outcome == pb::ReserveOutcome::Rejected as i32 {
        if shown != Some((active, h.lines.clone())) {
            report.violations.push(format!(
                "{}: cart update answered REJECTED with {shown:?}, expected the old cart {:?}",
                h.hold_ref, h.lines
            ));
        }
        h.history.push("  acked REJECTED".into());
    } else {
        report.violations.push(format!(
            "{}: all-or-nothing cart update answered outcome {}",
            h.hold_ref, r.outcome
        ));
    }
    (h, None)
}

#[allow(clippy::too_many_arguments)]
pub async fn traffic_task(
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
            let lines = pick_lines(&mut rng, &products);
            let hold_ref = format!("h-c{cycle}-t{id}-{n}");
            let mut h = HoldM {
                order_ref: format!("o-c{cycle}-t{id}-{n}"),
                hold_ref: hold_ref.clone(),
                lines: lines.clone(),
                possible: BTreeSet::from([St::Absent]),
                maybe_lines: None,
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
                        h.possible = BTreeSet::from([St::Absent, St::Active]);
                        done.push(h);
                    }
                    failed = None;
                }
                Err(s) => {
                    // A new hold cut by the kill is whole or absent: never released.
                    h.possible = BTreeSet::from([St::Absent, St::Active]);
                    h.note_unanswered(&s);
                    done.push(h);
                    failed = Some(s);
                }
            }
        } else if roll < 55 && !active.is_empty() {
            // A cart update of one of this task's active holds, usually across shards.
            let lines = pick_lines(&mut rng, &products);
            report.updates += 1;
            let h = take_one(&mut active, &mut rng, cycle, |_| {
                format!("update {lines:?}")
            });
            let answer = inv
                .reserve(reserve_request(&h.hold_ref, WEB, &lines, 3600))
                .await;
            let (h, error) = cart_update(&mut report, h, lines, answer);
            if error.is_none() {
                active.push(h);
            } else {
                done.push(h);
            }
            failed = error;
        } else if roll < 63 && !active.is_empty() {
            // Confirm one of this task's active holds.
            let h = take_one(&mut active, &mut rng, cycle, |h| {
                format!("confirm {}", h.order_ref)
            });
            let answer = inv
                .confirm_hold(pb::ConfirmHoldRequest {
                    hold_ref: h.hold_ref.clone(),
                    order_ref: h.order_ref.clone(),
                    reacquire: false,
                })
                .await;
            let (h, error) = follow_up(&mut report, h, St::Confirmed, answer, |h, r| {
                match r.into_inner().hold {
                    Some(x)
                        if x.state == pb::HoldState::Confirmed as i32
                            && x.order_ref == h.order_ref
                            && hold_lines(&x) == h.lines =>
                    {
                        None
                    }
                    other => Some(format!("{}: ConfirmHold answered {other:?}", h.hold_ref)),
                }
            });
            if error.is_none() {
                confirmed.push(h);
            } else {
                done.push(h);
            }
            failed = error;
        } else if roll < 75 && !active.is_empty() {
            // Release one of this task's active holds.
            let h = take_one(&mut active, &mut rng, cycle, |_| "release".into());
            let answer = inv
                .release_hold(pb::ReleaseHoldRequest {
                    hold_ref: h.hold_ref.clone(),
                })
                .await;
            let (h, error) = follow_up(&mut report, h, St::Released, answer, |h, r| {
                let hold = r.into_inner().hold;
                (hold.as_ref().map(|x| x.state) != Some(pb::HoldState::Released as i32))
                    .then(|| format!("{}: ReleaseHold answered {hold:?}", h.hold_ref))
            });
            done.push(h);
            failed = error;
        } else if roll < 85 && !confirmed.is_empty() {
            // Fulfil one of this task's confirmed orders (everything still reserved).
            let h = take_one(&mut confirmed, &mut rng, cycle, |h| {
                format!("fulfil {}", h.order_ref)
            });
            let answer = inv
                .fulfil_order(pb::FulfilOrderRequest {
                    order_ref: h.order_ref.clone(),
                    lines: vec![],
                })
                .await;
            let (h, error) = follow_up(&mut report, h, St::Fulfilled, answer, |h, r| {
                let mut shipped: Vec<(String, String, i64)> = r
                    .into_inner()
                    .lines
                    .into_iter()
                    .map(|l| (l.product_ref, l.location_ref, l.quantity))
                    .collect();
                shipped.sort();
                (shipped != h.lines).then(|| {
                    format!(
                        "{}: FulfilOrder shipped {shipped:?}, expected {:?}",
                        h.hold_ref, h.lines
                    )
                })
            });
            done.push(h);
            failed = error;
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
            let keys = keys_at(&products, LOC);
            match inv
                .get_availability(pb::GetAvailabilityRequest {
                    channel_ref: WEB.into(),
                    keys: position_keys(&keys),
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
