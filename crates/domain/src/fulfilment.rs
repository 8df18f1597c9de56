//! Fulfilment options: the plans that can serve a cart from a channel's network, searched
//! within named bounds and ranked, as pure functions.
//!
//! The router reads the channel's ATS of every line at every candidate location, then
//! calls [`plans`]. A plan is a list of (location, lines) that together cover the cart.
//! Ranking ([`rank_key`]): one location before a split, fewer locations before more, no
//! transfer before transfers (click & collect: the collecting store itself first), the
//! locations' priorities (lower first, compared sorted), then their refs.
//!
//! The search is bounded so that a cart of N lines over M locations never explodes: every
//! single-location plan is a scan (M × N); split plans come from at most
//! `FULFIL_SEARCH_STARTS_MAX` greedy searches, one from each of the best-ranked locations,
//! each of at most `FULFIL_PLAN_LOCATIONS_MAX` rounds. A greedy round adds the location
//! that covers the most remaining lines whole (then the most units), and splits a line's
//! quantity only when no location can take it whole. It can miss a split plan an
//! exhaustive search would find; it never offers one that does not cover the cart.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::limits::{
    FULFIL_LINES_MAX, FULFIL_PLAN_LOCATIONS_MAX, FULFIL_PLANS_MAX, FULFIL_SEARCH_STARTS_MAX,
    HOLD_QUANTITY_MAX, LOCATIONS_MAX,
};
use crate::network::{LocationConfig, NetworkSnap};
use crate::request::check_ref_field;

/// How the customer receives the cart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    /// Shipped from any network location that ships home deliveries.
    HomeDelivery,
    /// Collected at `store_ref`; with `allow_transfer`, stock may come from other
    /// network locations to the store.
    ClickAndCollect {
        store_ref: String,
        allow_transfer: bool,
    },
}

/// One cart line: a product and how many.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FulfilLine {
    pub product_ref: String,
    pub quantity: i64,
}

/// A GetFulfilmentOptions request, as the domain sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FulfilRequest {
    pub channel_ref: String,
    pub lines: Vec<FulfilLine>,
    pub delivery: Delivery,
    /// Most plans to answer; 0 means `FULFIL_PLANS_MAX`.
    pub max_plans: u32,
    pub allow_split: bool,
    /// Reserve the best plan still available as a hold under this ref.
    pub hold_ref: Option<String>,
    pub ttl_seconds: Option<u32>,
}

impl FulfilRequest {
    /// Checks every field; the error names it as the request spells it.
    pub fn validate(&self) -> Result<(), Error> {
        check_ref_field("channel_ref", &self.channel_ref)?;
        if self.lines.is_empty() || self.lines.len() > FULFIL_LINES_MAX {
            return Err(Error::invalid(
                "lines",
                format!(
                    "must hold 1 to {FULFIL_LINES_MAX} lines (got {})",
                    self.lines.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, l) in self.lines.iter().enumerate() {
            check_ref_field(&format!("lines[{i}].product_ref"), &l.product_ref)?;
            if !seen.insert(l.product_ref.as_str()) {
                return Err(Error::invalid(
                    format!("lines[{i}].product_ref"),
                    format!("repeats {:?}: one line per product", l.product_ref),
                ));
            }
            if l.quantity < 1 || l.quantity > HOLD_QUANTITY_MAX {
                return Err(Error::invalid(
                    format!("lines[{i}].quantity"),
                    format!("must be 1 to {HOLD_QUANTITY_MAX} (got {})", l.quantity),
                ));
            }
        }
        if self.max_plans as usize > FULFIL_PLANS_MAX {
            return Err(Error::invalid(
                "max_plans",
                format!(
                    "must be 0 (default) to {FULFIL_PLANS_MAX} (got {})",
                    self.max_plans
                ),
            ));
        }
        if let Delivery::ClickAndCollect { store_ref, .. } = &self.delivery {
            check_ref_field("store_ref", store_ref)?;
        }
        if let Some(h) = &self.hold_ref {
            check_ref_field("hold_ref", h)?;
        }
        Ok(())
    }

    /// The plan count asked for, bounded.
    pub fn plans_wanted(&self) -> usize {
        match self.max_plans as usize {
            0 => FULFIL_PLANS_MAX,
            n => n.min(FULFIL_PLANS_MAX),
        }
    }
}

/// The answer to a GetFulfilmentOptions request.
#[derive(Clone, Debug)]
pub struct FulfilAnswer {
    /// Ranked, best first. Empty is a stockout.
    pub plans: Vec<Plan>,
    /// Per request line: what it asked for and what the candidate locations have in all.
    pub available: Vec<i64>,
    /// With a hold ref: the index of the plan held and the reserve's answer; `None` when
    /// no plan could be held (then `plans` is empty).
    pub held: Option<(usize, crate::outcome::ReserveResult)>,
}

impl FulfilRequest {
    /// The Reserve of `plan` under the request's hold ref (all-or-nothing).
    pub fn reserve_request(&self, hold_ref: &str, plan: &Plan) -> crate::ReserveRequest {
        let lines = plan
            .parts
            .iter()
            .flat_map(|part| {
                part.lines.iter().map(|&(i, quantity)| crate::ReserveLine {
                    product_ref: self.lines[i].product_ref.clone(),
                    location_ref: part.location_ref.clone(),
                    quantity,
                    category: None,
                })
            })
            .collect();
        crate::ReserveRequest {
            hold_ref: hold_ref.to_string(),
            channel_ref: self.channel_ref.clone(),
            lines,
            ttl_seconds: self.ttl_seconds,
            allow_partial: false,
        }
    }
}

/// A location the search may use: its rank fields and the ATS of each line there. The
/// ref is borrowed from the network's configuration where the caller has it, so that
/// a read over 50 locations copies only the refs of the plans it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub location_ref: Cow<'a, str>,
    pub priority: u32,
    /// Using it for click & collect needs a transfer to the store.
    pub transfer: bool,
    /// ATS of the channel for each request line, in line order (borrowed, like the ref,
    /// from the caller's grid where it has one).
    pub ats: Cow<'a, [i64]>,
}

/// The part of a plan served from one location.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlanPart {
    pub location_ref: String,
    pub priority: u32,
    pub transfer: bool,
    /// (request line index, quantity), by line index.
    pub lines: Vec<(usize, i64)>,
}

/// One way to serve the whole cart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// By location ref.
    pub parts: Vec<PlanPart>,
}

/// The sort key of a plan: smaller ranks first.
pub type RankKey = (usize, usize, Vec<u32>, Vec<String>);

/// The rank of a plan (see the module's documentation).
pub fn rank_key(plan: &Plan) -> RankKey {
    let transfers = plan.parts.iter().filter(|p| p.transfer).count();
    let mut priorities: Vec<u32> = plan.parts.iter().map(|p| p.priority).collect();
    priorities.sort_unstable();
    let refs = plan.parts.iter().map(|p| p.location_ref.clone()).collect();
    (plan.parts.len(), transfers, priorities, refs)
}

/// The candidate locations for a delivery, with whether each needs a transfer, from the
/// channel's network members (`NetworkSnap::members`). A click & collect store that is
/// not configured is NOT_FOUND; one outside the network or that does not collect is
/// INVALID_ARGUMENT naming `store_ref`.
pub fn eligible<'a>(
    snap: &NetworkSnap,
    members: &[&'a LocationConfig],
    delivery: &Delivery,
) -> Result<Vec<(&'a LocationConfig, bool)>, Error> {
    match delivery {
        Delivery::HomeDelivery => Ok(members
            .iter()
            .filter(|l| l.ships_home_delivery)
            .map(|l| (*l, false))
            .collect()),
        Delivery::ClickAndCollect {
            store_ref,
            allow_transfer,
        } => {
            let field = "store_ref";
            if !snap.locations.iter().any(|l| &l.location_ref == store_ref) {
                return Err(Error::UnknownLocation(store_ref.clone()));
            }
            let Some(store) = members.iter().find(|l| &l.location_ref == store_ref) else {
                return Err(Error::invalid(
                    field,
                    format!("{store_ref:?} is not in the channel's network"),
                ));
            };
            if !store.serves_click_collect {
                return Err(Error::invalid(
                    field,
                    format!("{store_ref:?} does not serve click & collect"),
                ));
            }
            let mut out = vec![(*store, false)];
            if *allow_transfer {
                let others = members.iter().filter(|l| &l.location_ref != store_ref);
                out.extend(others.map(|l| (*l, true)));
            }
            Ok(out)
        }
    }
}

/// The ranked plans that cover `quantities` (one per request line) from `candidates`, at
/// most `max_plans` of them; split plans only with `allow_split`. Candidates name distinct
/// locations (as `eligible` gives them), and every quantity is at least 1 (as
/// `FulfilRequest::validate` checks).
///
/// The search works on candidate indices and dense per-line quantities in reused scratch,
/// and makes the `Plan`s (their refs) only for the answer: a 5-line cart over 50 locations
/// runs up to 32 greedy searches, and most of what they find is ranked out.
pub fn plans(
    quantities: &[i64],
    candidates: &[Candidate<'_>],
    allow_split: bool,
    max_plans: usize,
) -> Vec<Plan> {
    let max_plans = max_plans.min(FULFIL_PLANS_MAX);
    let search = Search::new(quantities, candidates);
    let count = search.order.len();
    let whole: Vec<bool> = (0..count)
        .map(|k| quantities.iter().zip(search.ats(k)).all(|(q, a)| a >= q))
        .collect();
    let mut found = Found::with_capacity(count + FULFIL_SEARCH_STARTS_MAX, quantities.len());
    let mut draft = Draft::default();
    for k in (0..count).filter(|&k| whole[k]) {
        draft.clear();
        draft.push(k, quantities);
        found.push(&search, &draft);
    }
    // Split plans rank after every single-location plan: once those fill the answer,
    // the search for splits could only add plans the truncation drops.
    if allow_split && found.drafts.len() < max_plans {
        let starts = (0..count)
            .filter(|&k| contributes(search.ats(k), quantities) > (0, 0))
            .take(FULFIL_SEARCH_STARTS_MAX);
        let mut used = vec![false; count];
        let mut remaining = quantities.to_vec();
        for start in starts {
            // From a location that holds the whole cart, the greedy search takes it all
            // there: the single-location plan already found.
            if whole[start] {
                continue;
            }
            used.fill(false);
            if search.greedy(start, &mut used, &mut remaining, &mut draft) {
                found.push(&search, &draft);
            }
        }
    }
    found.ranked(&search, max_plans)
}

/// For each line: (line, requested, available over every candidate) where the
/// candidates together have less than requested: a stockout's detail.
pub fn shortfall(quantities: &[i64], candidates: &[Candidate<'_>]) -> Vec<(usize, i64, i64)> {
    (0..quantities.len())
        .map(|i| (i, quantities[i], candidates.iter().map(|c| c.ats[i]).sum()))
        .filter(|(_, want, have)| have < want)
        .collect()
}

/// The total available of each line over every candidate (the stockout signal's
/// "available" when the cart cannot be served whole).
pub fn available(quantities: &[i64], candidates: &[Candidate<'_>]) -> Vec<i64> {
    (0..quantities.len())
        .map(|i| candidates.iter().map(|c| c.ats[i]).sum())
        .collect()
}

/// A plan while searching: its parts' candidates (indices in `Search::order`) and, part
/// after part, the quantity each takes of every line (0: none).
#[derive(Debug, Default)]
struct Draft {
    parts: Vec<usize>,
    quantities: Vec<i64>,
}

impl Draft {
    fn clear(&mut self) {
        self.parts.clear();
        self.quantities.clear();
    }

    fn push(&mut self, k: usize, quantities: &[i64]) {
        self.parts.push(k);
        self.quantities.extend_from_slice(quantities);
    }
}

/// The candidates in rank order, their ATS in one array, and each one's place by ref.
struct Search<'a> {
    quantities: &'a [i64],
    /// The candidates by (transfer, priority, ref): the search's preference.
    order: Vec<&'a Candidate<'a>>,
    /// `order[k]`'s ATS of line i at `ats[k * lines + i]`.
    ats: Vec<i64>,
    /// `order[k]`'s place by (ref, priority, transfer): how a plan's parts are sorted.
    by_ref: Vec<u32>,
}

impl<'a> Search<'a> {
    fn new(quantities: &'a [i64], candidates: &'a [Candidate<'a>]) -> Self {
        let ref_key = |i: usize| {
            let c = &candidates[i];
            (c.location_ref.as_ref(), c.priority, c.transfer)
        };
        let mut places: Vec<usize> = (0..candidates.len()).collect();
        // Candidates usually come by ref (`NetworkSnap::members`): one pass checks it.
        if !places.is_sorted_by(|&a, &b| ref_key(a) <= ref_key(b)) {
            places.sort_by(|&a, &b| ref_key(a).cmp(&ref_key(b)));
        }
        // (transfer, priority, place) packed in one word, so that the sort compares
        // integers; the place stands for the ref and, among equal refs, for the
        // candidate order, and makes every key distinct.
        let mut keys: Vec<u64> = places
            .iter()
            .enumerate()
            .map(|(place, &i)| order_key(&candidates[i], place))
            .collect();
        keys.sort_unstable();
        let n = quantities.len();
        let mut ats = Vec::with_capacity(keys.len() * n);
        let mut by_ref = Vec::with_capacity(keys.len());
        let mut order = Vec::with_capacity(keys.len());
        for key in keys {
            let place = (key & PLACE_MASK) as usize;
            let c = &candidates[places[place]];
            ats.extend_from_slice(&c.ats);
            by_ref.push(place as u32);
            order.push(c);
        }
        Search {
            quantities,
            order,
            ats,
            by_ref,
        }
    }

    fn ats(&self, k: usize) -> &[i64] {
        let n = self.quantities.len();
        &self.ats[k * n..(k + 1) * n]
    }

    /// One greedy search from `order[start]` into `draft`, bounded by
    /// `FULFIL_PLAN_LOCATIONS_MAX` rounds; whether it covers the cart. `used` (all false,
    /// one per candidate) marks the locations taken; `remaining` is scratch of one entry
    /// per line.
    fn greedy(
        &self,
        start: usize,
        used: &mut [bool],
        remaining: &mut [i64],
        draft: &mut Draft,
    ) -> bool {
        remaining.copy_from_slice(self.quantities);
        draft.clear();
        let first = contributes(self.ats(start), remaining).0 == 0;
        self.take(start, remaining, first, draft);
        used[start] = true;
        while remaining.iter().any(|r| *r > 0) {
            if draft.parts.len() >= FULFIL_PLAN_LOCATIONS_MAX {
                return false;
            }
            let Some((k, (whole, _))) = self.best(used, remaining) else {
                // No new location helps: what the chosen ones still have, partly.
                self.top_up(draft, remaining);
                return remaining.iter().all(|r| *r == 0);
            };
            used[k] = true;
            self.take(k, remaining, whole == 0, draft);
        }
        true
    }

    /// The first best-ranked unused candidate with the most whole lines, then the most
    /// units, if any helps. A candidate that takes every remaining line whole has the
    /// highest score there can be: no later one can beat it, so the scan stops there.
    fn best(&self, used: &[bool], remaining: &[i64]) -> Option<(usize, (usize, i64))> {
        let most = (
            remaining.iter().filter(|r| **r > 0).count(),
            remaining.iter().filter(|r| **r > 0).sum::<i64>(),
        );
        let mut best: Option<(usize, (usize, i64))> = None;
        for k in (0..self.order.len()).filter(|k| !used[*k]) {
            let score = contributes(self.ats(k), remaining);
            if score > (0, 0) && best.is_none_or(|(_, s)| score > s) {
                best = Some((k, score));
                if score == most {
                    break;
                }
            }
        }
        best
    }

    /// Adds to `draft` a part at `order[k]` with the remaining lines it can serve whole,
    /// or (`partial`) whatever it has of them.
    fn take(&self, k: usize, remaining: &mut [i64], partial: bool, draft: &mut Draft) {
        draft.parts.push(k);
        for (r, a) in remaining.iter_mut().zip(self.ats(k)) {
            let q = if *a >= *r || partial { (*r).min(*a) } else { 0 };
            let q = if *r > 0 && q > 0 { q } else { 0 };
            draft.quantities.push(q);
            *r -= q;
        }
    }

    /// Adds to the draft's parts what their locations have beyond what they already give.
    fn top_up(&self, draft: &mut Draft, remaining: &mut [i64]) {
        let n = self.quantities.len();
        for (j, &k) in draft.parts.iter().enumerate() {
            let row = &mut draft.quantities[j * n..(j + 1) * n];
            for ((r, a), given) in remaining.iter_mut().zip(self.ats(k)).zip(row) {
                let q = (*r).min(a - *given);
                if q > 0 {
                    *given += q;
                    *r -= q;
                }
            }
        }
    }
}

/// The distinct plans found, in the order found, parts sorted by ref: all in one pair
/// of arrays (`all`), each plan a range of its parts, with a hash of it so that telling
/// a new plan from those found compares their contents only when the hashes match.
#[derive(Default)]
struct Found {
    all: Draft,
    drafts: Vec<std::ops::Range<usize>>,
    hashes: Vec<u64>,
    /// Scratch: the draft being pushed, its parts sorted.
    sorted: Draft,
}

impl Found {
    /// Room for `plans` plans of two parts over `lines` lines, so that most searches
    /// never grow the arrays.
    fn with_capacity(plans: usize, lines: usize) -> Self {
        let mut found = Found::default();
        found.drafts.reserve(plans);
        found.hashes.reserve(plans);
        found.all.parts.reserve(2 * plans);
        found.all.quantities.reserve(2 * plans * lines);
        found
    }

    fn push(&mut self, search: &Search, draft: &Draft) {
        let n = search.quantities.len();
        // A draft has at most `FULFIL_PLAN_LOCATIONS_MAX` parts (`Search::greedy`).
        let mut js = [0; FULFIL_PLAN_LOCATIONS_MAX];
        let js = &mut js[..draft.parts.len()];
        for (j, slot) in js.iter_mut().enumerate() {
            *slot = j;
        }
        js.sort_unstable_by_key(|&j| search.by_ref[draft.parts[j]]);
        self.sorted.clear();
        for &j in js.iter() {
            let row = &draft.quantities[j * n..(j + 1) * n];
            self.sorted.push(draft.parts[j], row);
        }
        let hash = {
            let mut h = rustc_hash::FxHasher::default();
            self.sorted.parts.hash(&mut h);
            self.sorted.quantities.hash(&mut h);
            h.finish()
        };
        let (all, sorted) = (&self.all, &self.sorted);
        let same = |(r, h): (&std::ops::Range<usize>, &u64)| {
            *h == hash
                && all.parts[r.clone()] == sorted.parts[..]
                && all.quantities[r.start * n..r.end * n] == sorted.quantities[..]
        };
        if !self.drafts.iter().zip(&self.hashes).any(same) {
            let at = self.all.parts.len();
            self.all.parts.extend_from_slice(&self.sorted.parts);
            self.all
                .quantities
                .extend_from_slice(&self.sorted.quantities);
            self.drafts.push(at..self.all.parts.len());
            self.hashes.push(hash);
        }
    }

    /// The best `max_plans`, ranked as `rank_key` ranks the plans they become (ties keep
    /// the order found), made into `Plan`s: only those are sorted and made.
    fn ranked(self, search: &Search, max_plans: usize) -> Vec<Plan> {
        if max_plans == 0 {
            return Vec::new();
        }
        let n = search.quantities.len();
        let all = &self.all;
        // The index found makes every key distinct, so that an unstable selection and
        // sort rank ties in the order found.
        let mut keyed: Vec<(DraftKey, usize)> = (self.drafts.iter().enumerate())
            .map(|(i, r)| (draft_key(search, &all.parts[r.clone()]), i))
            .collect();
        if keyed.len() > max_plans {
            keyed.select_nth_unstable(max_plans - 1);
            keyed.truncate(max_plans);
        }
        keyed.sort_unstable();
        keyed
            .into_iter()
            .map(|(_, i)| Plan {
                parts: self.drafts[i]
                    .clone()
                    .map(|j| {
                        let row = &all.quantities[j * n..(j + 1) * n];
                        let lines = row.iter().copied().enumerate().filter(|l| l.1 > 0);
                        part(search.order[all.parts[j]], lines.collect())
                    })
                    .collect(),
            })
            .collect()
    }
}

/// `rank_key` of a draft without its refs: the parts' places by ref stand for them (the
/// parts are sorted by place, and places order as the refs do).
type DraftKey = (
    usize,
    usize,
    [u32; FULFIL_PLAN_LOCATIONS_MAX],
    [u32; FULFIL_PLAN_LOCATIONS_MAX],
);

fn draft_key(search: &Search, parts: &[usize]) -> DraftKey {
    let mut priorities = [0; FULFIL_PLAN_LOCATIONS_MAX];
    let mut places = [0; FULFIL_PLAN_LOCATIONS_MAX];
    for (j, &k) in parts.iter().enumerate() {
        priorities[j] = search.order[k].priority;
        places[j] = search.by_ref[k];
    }
    priorities[..parts.len()].sort_unstable();
    let transfers = parts.iter().filter(|&&k| search.order[k].transfer).count();
    (parts.len(), transfers, priorities, places)
}

fn part(c: &Candidate, lines: Vec<(usize, i64)>) -> PlanPart {
    PlanPart {
        location_ref: c.location_ref.to_string(),
        priority: c.priority,
        transfer: c.transfer,
        lines,
    }
}

/// The low bits of an `order_key`: the candidate's place by ref. Candidates are distinct
/// locations, at most `LOCATIONS_MAX`.
const PLACE_MASK: u64 = (1 << 31) - 1;
const _: () = assert!(LOCATIONS_MAX as u64 <= PLACE_MASK);

/// `(transfer, priority, place)` as one integer that orders as the tuple does: transfer
/// in bit 63, the priority in bits 31–62, the place below.
fn order_key(c: &Candidate, place: usize) -> u64 {
    debug_assert!(place as u64 <= PLACE_MASK);
    (u64::from(c.transfer) << 63) | (u64::from(c.priority) << 31) | place as u64
}

/// (lines `ats` can take whole, units it can take) of what `remaining` still needs.
/// One pass: the split search calls it for every candidate in every round.
fn contributes(ats: &[i64], remaining: &[i64]) -> (usize, i64) {
    let mut whole = 0;
    let mut units = 0;
    for (r, a) in remaining.iter().zip(ats) {
        whole += usize::from(*r > 0 && a >= r);
        units += (*r).min(*a);
    }
    (whole, units)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(r: &str, priority: u32, ats: &[i64]) -> Candidate<'static> {
        Candidate {
            location_ref: r.to_string().into(),
            priority,
            transfer: false,
            ats: ats.to_vec().into(),
        }
    }

    fn refs(plan: &Plan) -> Vec<&str> {
        plan.parts.iter().map(|p| p.location_ref.as_str()).collect()
    }

    #[test]
    fn one_location_ranks_before_a_split_then_priority_then_ref() {
        let c = [
            cand("DC2", 2, &[3, 3, 3]),
            cand("DC1", 1, &[3, 3, 3]),
            cand("DC0", 1, &[3, 0, 0]),
            cand("ST9", 5, &[0, 3, 3]),
        ];
        let p = plans(&[2, 2, 2], &c, true, 10);
        assert_eq!(refs(&p[0]), ["DC1"]);
        assert_eq!(refs(&p[1]), ["DC2"]);
        assert!(p[2..].iter().all(|p| p.parts.len() > 1));
        assert!(plans(&[2, 2, 2], &c, false, 10).len() == 2);
        assert_eq!(plans(&[2, 2, 2], &c, true, 1).len(), 1);
    }

    #[test]
    fn a_line_is_split_only_when_no_location_has_it_whole() {
        let c = [cand("A", 0, &[3, 0]), cand("B", 0, &[2, 5])];
        let p = plans(&[5, 1], &c, true, 10);
        assert_eq!(p.len(), 1);
        let lines: Vec<_> = p[0].parts.iter().map(|p| p.lines.clone()).collect();
        assert_eq!(lines, [vec![(0, 3)], vec![(0, 2), (1, 1)]]);
        assert!(plans(&[6, 1], &c, true, 10).is_empty());
        assert_eq!(shortfall(&[6, 1], &c), [(0, 6, 5)]);
    }
}
