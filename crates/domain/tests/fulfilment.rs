//! Fulfilment plans and network availability (issue #15), through the domain's API.
//!
//! - `plans` against its rules: every plan covers the cart within each location's ATS,
//!   plans come ranked and distinct, `max_plans` and `allow_split` hold, a whole-cart
//!   location comes first, and a split is found whenever few locations hold enough.
//! - Network ATS (the per-location ATS summed over `NetworkSnap::members`) against a
//!   reference model of domain.md's formula, with exclusions, named networks and
//!   ring-fenced allocations.

use std::sync::Arc;

use proptest::prelude::*;
use stockd_domain::engine::GridLocations;
use stockd_domain::fulfilment::{Candidate, Plan, plans, rank_key};
use stockd_domain::limits::{FULFIL_PLAN_LOCATIONS_MAX, FULFIL_PLANS_MAX};
use stockd_domain::{
    ChannelConfig, ChannelNetwork, Engine, Error, LocationConfig, Settings, StockCount,
};

fn candidates() -> impl Strategy<Value = (Vec<i64>, Vec<Candidate<'static>>)> {
    (1usize..=5, 1usize..=12).prop_flat_map(|(lines, locations)| {
        let quantities = prop::collection::vec(1i64..=6, lines);
        let cands = prop::collection::vec(
            (
                0u32..4,
                any::<bool>(),
                prop::collection::vec(0i64..=8, lines),
            ),
            locations,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (priority, transfer, ats))| Candidate {
                    location_ref: format!("L{i:02}").into(),
                    priority,
                    transfer,
                    ats: ats.into(),
                })
                .collect::<Vec<_>>()
        });
        (quantities, cands)
    })
}

/// Every line covered exactly, each part within its location's ATS, no location twice.
fn check_covers(plan: &Plan, quantities: &[i64], cands: &[Candidate]) -> Result<(), String> {
    let mut covered = vec![0; quantities.len()];
    let mut seen = std::collections::BTreeSet::new();
    for part in &plan.parts {
        if !seen.insert(&part.location_ref) {
            return Err(format!("{} twice", part.location_ref));
        }
        let c = cands
            .iter()
            .find(|c| c.location_ref == part.location_ref)
            .ok_or("unknown location")?;
        for &(line, q) in &part.lines {
            if q <= 0 || q > c.ats[line] {
                return Err(format!(
                    "{} line {line}: {q} of {}",
                    c.location_ref, c.ats[line]
                ));
            }
            covered[line] += q;
        }
    }
    if covered != quantities {
        return Err(format!("covers {covered:?}, wants {quantities:?}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plans_cover_the_cart_ranked_and_bounded(
        (quantities, cands) in candidates(),
        allow_split in any::<bool>(),
        max_plans in 1usize..=FULFIL_PLANS_MAX,
    ) {
        let out = plans(&quantities, &cands, allow_split, max_plans);
        prop_assert!(out.len() <= max_plans);
        for plan in &out {
            prop_assert_eq!(check_covers(plan, &quantities, &cands), Ok(()));
            prop_assert!(plan.parts.len() <= FULFIL_PLAN_LOCATIONS_MAX);
            prop_assert!(allow_split || plan.parts.len() == 1);
        }
        let keys: Vec<_> = out.iter().map(rank_key).collect();
        prop_assert!(keys.windows(2).all(|w| w[0] <= w[1]), "not ranked: {:?}", keys);
        for (i, a) in out.iter().enumerate() {
            prop_assert!(out[i + 1..].iter().all(|b| b != a), "a plan twice");
        }
        // The single-location plans are exactly the locations that hold the whole cart.
        let whole: Vec<&Candidate> = cands
            .iter()
            .filter(|c| quantities.iter().zip(c.ats.iter()).all(|(q, a)| a >= q))
            .collect();
        if !whole.is_empty() {
            prop_assert_eq!(out[0].parts.len(), 1);
            let best = whole
                .iter()
                .min_by_key(|c| (c.transfer, c.priority, c.location_ref.clone()))
                .unwrap();
            prop_assert_eq!(&out[0].parts[0].location_ref, &best.location_ref);
        }
        let singles = out.iter().filter(|p| p.parts.len() == 1).count();
        prop_assert_eq!(singles, whole.len().min(max_plans));
        // A split over few locations that together hold enough is always found.
        let enough = (0..quantities.len())
            .all(|i| cands.iter().map(|c| c.ats[i]).sum::<i64>() >= quantities[i]);
        if allow_split && enough && cands.len() <= FULFIL_PLAN_LOCATIONS_MAX {
            prop_assert!(!out.is_empty(), "no plan although the network holds enough");
        }
        if !enough {
            prop_assert!(out.is_empty());
        }
    }
}

// ----- the search against the one it replaced -----

/// The plan search before it worked on candidate indices: the optimised `plans` must
/// answer exactly what it answered, plan for plan and in the same order.
mod reference {
    use std::collections::BTreeSet;

    use stockd_domain::fulfilment::{Candidate, Plan, PlanPart, rank_key};
    use stockd_domain::limits::{
        FULFIL_PLAN_LOCATIONS_MAX, FULFIL_PLANS_MAX, FULFIL_SEARCH_STARTS_MAX,
    };

    /// The search as it was before it worked on indices (commit dbbb6a5), verbatim.
    pub fn plans(
        quantities: &[i64],
        candidates: &[Candidate],
        allow_split: bool,
        max_plans: usize,
    ) -> Vec<Plan> {
        let max_plans = max_plans.min(FULFIL_PLANS_MAX);
        let mut order: Vec<&Candidate> = candidates.iter().collect();
        order.sort_by(|a, b| {
            (a.transfer, a.priority, &a.location_ref).cmp(&(
                b.transfer,
                b.priority,
                &b.location_ref,
            ))
        });
        let mut out: Vec<Plan> = Vec::new();
        let mut seen: BTreeSet<Vec<PlanPart>> = BTreeSet::new();
        for c in &order {
            if quantities.iter().zip(c.ats.iter()).all(|(q, a)| a >= q) {
                let lines = quantities.iter().copied().enumerate().collect();
                push_plan(&mut out, &mut seen, vec![part(c, lines)]);
            }
        }
        // Split plans rank after every single-location plan: once those fill the answer,
        // the search for splits could only add plans the truncation drops.
        if allow_split && out.len() < max_plans {
            let starts = (0..order.len())
                .filter(|&i| contributes(order[i], quantities) > (0, 0))
                .take(FULFIL_SEARCH_STARTS_MAX);
            let mut used = vec![false; order.len()];
            for start in starts {
                used.fill(false);
                if let Some(parts) = greedy(quantities, &order, start, &mut used) {
                    push_plan(&mut out, &mut seen, parts);
                }
            }
        }
        out.sort_by_cached_key(rank_key);
        out.truncate(max_plans);
        out
    }

    fn part(c: &Candidate, lines: Vec<(usize, i64)>) -> PlanPart {
        PlanPart {
            location_ref: c.location_ref.to_string(),
            priority: c.priority,
            transfer: c.transfer,
            lines,
        }
    }

    fn push_plan(
        out: &mut Vec<Plan>,
        seen: &mut BTreeSet<Vec<PlanPart>>,
        mut parts: Vec<PlanPart>,
    ) {
        parts.sort();
        if seen.insert(parts.clone()) {
            out.push(Plan { parts });
        }
    }

    /// (lines `c` can take whole, units it can take) of what `remaining` still needs.
    /// One pass: the split search calls it for every candidate in every round.
    fn contributes(c: &Candidate, remaining: &[i64]) -> (usize, i64) {
        let mut whole = 0;
        let mut units = 0;
        for (r, a) in remaining.iter().zip(c.ats.iter()) {
            whole += usize::from(*r > 0 && a >= r);
            units += (*r).min(*a);
        }
        (whole, units)
    }

    /// Takes from `c` the remaining lines it can serve whole, or (`partial`) whatever it has.
    fn take(c: &Candidate, remaining: &mut [i64], partial: bool) -> Vec<(usize, i64)> {
        let mut lines = Vec::new();
        for (i, (r, a)) in remaining.iter_mut().zip(c.ats.iter()).enumerate() {
            let q = if *a >= *r || partial { (*r).min(*a) } else { 0 };
            if *r > 0 && q > 0 {
                lines.push((i, q));
                *r -= q;
            }
        }
        lines
    }

    /// One greedy search from `order[start]`: bounded by `FULFIL_PLAN_LOCATIONS_MAX` rounds.
    /// `used` (all false, one per candidate in `order`) marks the locations taken: the
    /// search runs up to `FULFIL_SEARCH_STARTS_MAX` times a request, so it compares no refs.
    fn greedy(
        quantities: &[i64],
        order: &[&Candidate],
        start: usize,
        used: &mut [bool],
    ) -> Option<Vec<PlanPart>> {
        let mut remaining = quantities.to_vec();
        let first = contributes(order[start], &remaining).0 == 0;
        let mut parts = vec![part(
            order[start],
            take(order[start], &mut remaining, first),
        )];
        used[start] = true;
        while remaining.iter().any(|r| *r > 0) {
            if parts.len() >= FULFIL_PLAN_LOCATIONS_MAX {
                return None;
            }
            // The first best-ranked candidate with the most whole lines, then the most units.
            let mut best: Option<(usize, (usize, i64))> = None;
            for (i, c) in order.iter().enumerate().filter(|(i, _)| !used[*i]) {
                let score = contributes(c, &remaining);
                if score > (0, 0) && best.is_none_or(|(_, s)| score > s) {
                    best = Some((i, score));
                }
            }
            let Some((i, (whole, _))) = best else {
                // No new location helps: what the chosen ones still have, partly.
                top_up(order, &mut parts, &mut remaining);
                return remaining.iter().all(|r| *r == 0).then_some(parts);
            };
            used[i] = true;
            let c = order[i];
            parts.push(part(c, take(c, &mut remaining, whole == 0)));
        }
        Some(parts)
    }

    /// Adds to the plan's parts what their locations have beyond what they already give.
    fn top_up(order: &[&Candidate], parts: &mut [PlanPart], remaining: &mut [i64]) {
        for p in parts.iter_mut() {
            let Some(c) = order.iter().find(|c| c.location_ref == p.location_ref) else {
                continue;
            };
            for (i, r) in remaining.iter_mut().enumerate() {
                let given: i64 = p.lines.iter().filter(|l| l.0 == i).map(|l| l.1).sum();
                let q = (*r).min(c.ats[i] - given);
                if q > 0 {
                    match p.lines.iter_mut().find(|l| l.0 == i) {
                        Some(l) => l.1 += q,
                        None => p.lines.push((i, q)),
                    }
                    *r -= q;
                }
            }
            p.lines.sort_unstable();
        }
    }
}

/// Candidates like a real network's: many locations, each holding a line or not (as the
/// `fulfil` load seeds them), or small random quantities.
fn wide_candidates() -> impl Strategy<Value = (Vec<i64>, Vec<Candidate<'static>>)> {
    (1usize..=6, 1usize..=60, any::<bool>()).prop_flat_map(|(lines, locations, binary)| {
        let quantities = if binary {
            prop::collection::vec(1i64..=1, lines).boxed()
        } else {
            prop::collection::vec(1i64..=6, lines).boxed()
        };
        let ats = if binary {
            prop::collection::vec(prop_oneof![Just(0i64), Just(5i64)], lines).boxed()
        } else {
            prop::collection::vec(0i64..=8, lines).boxed()
        };
        let cands = prop::collection::vec((0u32..7, any::<bool>(), ats), locations).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (priority, transfer, ats))| Candidate {
                    // Refs out of rank order, so that ref order and rank order differ.
                    location_ref: format!("L{:02}", (i * 37) % 61).into(),
                    priority,
                    transfer,
                    ats: ats.into(),
                })
                .collect::<Vec<_>>()
        });
        (quantities, cands)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn plans_answer_what_the_reference_search_answers(
        (quantities, cands) in wide_candidates(),
        allow_split in any::<bool>(),
        max_plans in 1usize..=FULFIL_PLANS_MAX,
    ) {
        prop_assert_eq!(
            plans(&quantities, &cands, allow_split, max_plans),
            reference::plans(&quantities, &cands, allow_split, max_plans)
        );
    }
}

// ----- network ATS against a reference model -----

const NOW: i64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
struct ChannelModel {
    allocation_bps: u32,
    buffer_bps: u32,
    buffer_units: i64,
    excluded: Vec<usize>,
    /// `None`: every location.
    network: Option<Vec<usize>>,
}

/// domain.md's ATS of a channel at a freshly counted position (no holds, no sales).
fn reference_ats(c: &ChannelModel, location: usize, physical: i64) -> i64 {
    let in_network = c.network.as_ref().is_none_or(|n| n.contains(&location));
    if c.excluded.contains(&location) || !in_network {
        return 0;
    }
    let x = if c.allocation_bps >= 10_000 {
        physical
    } else {
        (physical * c.allocation_bps as i64 / 10_000).min(physical)
    };
    if x <= 0 {
        return 0;
    }
    let buffer = (x * c.buffer_bps as i64 + 9_999) / 10_000;
    (x - buffer - c.buffer_units).max(0)
}

fn channel_model(locations: usize) -> impl Strategy<Value = ChannelModel> {
    (
        prop_oneof![Just(10_000u32), 0u32..=10_000],
        0u32..=3_000,
        0i64..=3,
        prop::collection::vec(0..locations, 0..=2),
        prop::option::of(prop::collection::btree_set(0..locations, 1..=locations)),
    )
        .prop_map(
            |(allocation_bps, buffer_bps, buffer_units, excluded, network)| ChannelModel {
                allocation_bps,
                buffer_bps,
                buffer_units,
                excluded,
                network: network.map(|n| n.into_iter().collect()),
            },
        )
}

fn loc(i: usize) -> String {
    format!("LOC{i}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn network_ats_is_the_sum_over_members(
        counts in prop::collection::vec(0i64..=40, 1..=6),
        models in prop::collection::vec(channel_model(6), 1..=3),
    ) {
        let n = counts.len();
        let mut engine = Engine::new(Settings::default());
        let locations: Vec<LocationConfig> = (0..n)
            .map(|i| LocationConfig { location_ref: loc(i), priority: i as u32, ..Default::default() })
            .collect();
        engine.upsert_locations(&locations).unwrap();
        for (ci, m) in models.iter().enumerate() {
            let channel_ref = format!("CH{ci}");
            engine.upsert_channel(ChannelConfig {
                channel_ref: channel_ref.clone(),
                allocation_bps: m.allocation_bps,
                buffer_bps: m.buffer_bps,
                buffer_units: m.buffer_units,
                excluded_locations: m.excluded.iter().map(|l| loc(*l)).collect(),
                ..Default::default()
            }).unwrap();
            if let Some(net) = &m.network {
                let named: Vec<String> = net.iter().filter(|l| **l < n).map(|l| loc(*l)).collect();
                if !named.is_empty() {
                    engine.set_network(ChannelNetwork {
                        channel_ref,
                        network_ref: "net".into(),
                        all_locations: false,
                        locations: named,
                    }).unwrap();
                }
            }
        }
        for (i, q) in counts.iter().enumerate() {
            engine.set_stock(NOW, &StockCount {
                product_ref: "SKU".into(), location_ref: loc(i), quantity: *q, as_of: NOW,
            }).unwrap();
        }
        let snap = engine.network_snap();
        for (ci, m) in models.iter().enumerate() {
            let channel_ref = format!("CH{ci}");
            let config = engine.channels().find(|c| c.channel_ref == channel_ref).unwrap().clone();
            let mut model = m.clone();
            if model.network.as_ref().is_some_and(|net| net.iter().all(|l| *l >= n)) {
                model.network = None;
            }
            let members = snap.members(&channel_ref, &config.excluded_locations);
            let got: i64 = members
                .iter()
                .map(|l| engine.availability(&channel_ref, "SKU", &l.location_ref).unwrap())
                .sum();
            let want: i64 = (0..n).map(|i| reference_ats(&model, i, counts[i])).sum();
            prop_assert_eq!(got, want, "channel {}", channel_ref);
            // The grid read answers what the per-key read answers, pair for pair, unknown
            // refs included: over every location (walking the product's positions) and
            // over one (looking each location up).
            let products = ["NONE".to_string(), "SKU".to_string()];
            let mut refs: Vec<String> = (0..n).rev().map(loc).collect();
            refs.push("NOWHERE".into());
            // Each list once as made for the read, then twice as kept (the second answered
            // from the engine's memo).
            for refs in [&refs[..], &refs[..1], &refs[n..]] {
                let kept: Arc<[String]> = refs.into();
                let per_key: Vec<i64> = (products.iter())
                    .flat_map(|p| refs.iter().map(move |l| (p, l)))
                    .map(|(p, l)| engine.availability(&channel_ref, p, l).unwrap())
                    .collect();
                let reads = [GridLocations::Once(refs), GridLocations::Kept(&kept), GridLocations::Kept(&kept)];
                for locations in reads {
                    let mut keys = 0;
                    let sparse = engine
                        .availability_grid(&channel_ref, &products, locations, |_| keys += 1)
                        .unwrap();
                    let mut grid = vec![0; products.len() * refs.len()];
                    for &(at, q) in &sparse {
                        prop_assert_eq!(grid[at], 0, "one answer per pair");
                        grid[at] = q;
                    }
                    prop_assert_eq!(&grid, &per_key);
                    // Every position read is a key; one with nothing on hand is not answered.
                    let held = refs.iter().filter(|l| (0..n).any(|i| loc(i) == **l)).count();
                    prop_assert!(sparse.len() <= keys && keys <= held, "{} {} {}", sparse.len(), keys, held);
                }
            }
        }
    }
}

#[test]
fn a_grid_read_of_an_unknown_channel_is_not_found() {
    let mut engine = Engine::new(Settings::default());
    let refs = ["A".to_string()];
    assert_eq!(
        engine.availability_grid("WEB", &refs, GridLocations::Once(&refs), |_| {}),
        Err(Error::UnknownChannel("WEB".into()))
    );
}

/// A kept list read before one of its locations had stock here: once a position appears
/// there (its ref new to this engine), the next read of the same list sees it.
#[test]
fn a_kept_grid_list_sees_a_location_that_gets_its_first_position_later() {
    let mut engine = Engine::new(Settings::default());
    engine
        .upsert_channel(ChannelConfig {
            channel_ref: "WEB".into(),
            ..Default::default()
        })
        .unwrap();
    let stock = |location: &str, quantity| StockCount {
        product_ref: "SKU".into(),
        location_ref: location.into(),
        quantity,
        as_of: NOW,
    };
    engine.set_stock(NOW, &stock("L0", 3)).unwrap();
    let products = ["SKU".to_string()];
    let list: Arc<[String]> = ["L0".to_string(), "L1".to_string()].into();
    let read = |engine: &mut Engine| {
        let mut grid = engine
            .availability_grid("WEB", &products, GridLocations::Kept(&list), |_| {})
            .unwrap();
        grid.sort_unstable();
        grid
    };
    assert_eq!(read(&mut engine), vec![(0, 3)]);
    engine.set_stock(NOW, &stock("L1", 5)).unwrap();
    assert_eq!(read(&mut engine), vec![(0, 3), (1, 5)]);
}

#[test]
fn a_network_needs_known_channel_and_locations() {
    let mut engine = Engine::new(Settings::default());
    let network = ChannelNetwork {
        channel_ref: "WEB".into(),
        network_ref: "online".into(),
        all_locations: false,
        locations: vec!["DC1".into()],
    };
    assert_eq!(
        engine.set_network(network.clone()),
        Err(Error::UnknownChannel("WEB".into()))
    );
    engine
        .upsert_channel(ChannelConfig {
            channel_ref: "WEB".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        engine.set_network(network.clone()),
        Err(Error::UnknownLocation("DC1".into()))
    );
    engine
        .upsert_locations(&[LocationConfig {
            location_ref: "DC1".into(),
            ..Default::default()
        }])
        .unwrap();
    engine.set_network(network).unwrap();
    // Deleting the location takes it out of the network; deleting the channel drops it.
    engine.delete_location("DC1").unwrap();
    assert_eq!(
        engine.network_snap().networks[0].locations,
        Vec::<String>::new()
    );
    engine.delete_channel("WEB").unwrap();
    assert!(engine.network_snap().networks.is_empty());
}
