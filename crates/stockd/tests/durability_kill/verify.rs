//! The restarted server checked against the kill test's model: positions, counts, holds
//! and ledgers agree with what the clients were told, and the model's uncertainty is
//! resolved to what the server shows.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use stockd::proto::inventory::v1 as pb;

use crate::common::calls::{availability, get_hold, get_position, hold_lines};
use crate::common::fixtures::{LOC, WEB};
use crate::common::requests::ts_millis;
use crate::common::server::ServerProcess;
use crate::{CountAck, CountM, HoldM, St, World};

/// What the restarted server says about one hold.
#[derive(Debug, Clone)]
struct Observed {
    state: St,
    /// Its lines: the model's, or those of the unanswered cart update it shows.
    lines: Vec<(String, String, i64)>,
}

struct Ledger {
    /// hold_ref → [(product, qty > 0)] of ACTIVE SOFT_RESERVE.
    soft: BTreeMap<String, Vec<(String, i64)>>,
    /// order_ref → [(product, qty > 0)] of ACTIVE RESERVED.
    reserved: BTreeMap<String, Vec<(String, i64)>>,
}

/// Checks the restarted server against the model; returns violations. Resolves the
/// model's uncertainty to what it observed.
pub async fn verify(
    server: &ServerProcess,
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
        // A cart update whose answer was lost: the hold is the old cart or the new one.
        let lines = match (&hold, &h.maybe_lines) {
            (Some(x), Some(new)) if hold_lines(x) == *new => new.clone(),
            _ => h.lines.clone(),
        };
        if let Some(x) = &hold {
            let got = hold_lines(x);
            if got != lines {
                v.push(format!(
                    "{r}: {state:?} with lines {got:?}, acknowledged {:?}, in flight {:?} \
                     (a hold is whole, its last acknowledged cart or the one in flight); history {:?}",
                    h.lines, h.maybe_lines, h.history
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
        let mut want: Vec<(String, i64)> = lines.iter().map(|(p, _, q)| (p.clone(), *q)).collect();
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
        observed.insert(r, Observed { state, lines });
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
            for (p, _, q) in &o.lines {
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
        h.lines = o.lines;
        h.maybe_lines = None;
        h.history.push(format!("c{cycle}: verified {:?}", o.state));
    }
    v
}
