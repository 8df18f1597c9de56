//! Holds and orders as queryable things: one engine's page of a ListHolds, and its part
//! of an order, without change.
//!
//! A listing walks the hold table's ordered indexes (`HoldTable::by_created`,
//! `by_ended`), one millisecond at a time (within one millisecond holds are ordered by
//! ref, which the index's symbol order is not), so a page costs the entries it examines,
//! never a pass over every hold. An active hold past its deadline reads as expired, as
//! GetHold shows it, and is listed as ended at its deadline even before its timer ran.

use std::collections::BTreeSet;

use super::Engine;
use crate::Millis;
use crate::hold::{HoldPart, HoldState, HoldView};
use crate::limits::LIST_HOLDS_SCAN_MAX;
use crate::order::{OrderLineView, OrderView};
use crate::query::{HoldFilter, HoldKey, HoldPage, HoldScan, HoldTime, ListedHold};
use crate::refs::{HOLD_NS, ORDER_NS, Sym};

const SYM_MIN: Sym = Sym(0);
const SYM_MAX: Sym = Sym(u32::MAX);

impl Engine {
    /// This engine's page of a listing: the listed parts after `scan.after` that match,
    /// at most `scan.limit`, examining at most `LIST_HOLDS_SCAN_MAX` entries (and the
    /// rest of the millisecond it stops in).
    pub fn list_holds(&self, now: Millis, scan: &HoldScan) -> HoldPage {
        let filter = &scan.filter;
        let channel = match &filter.channel_ref {
            Some(c) => match self.interner.get(c) {
                Some(sym) => Some(sym),
                // No hold here names a channel this engine never saw.
                None => return complete(Vec::new()),
            },
            None => None,
        };
        let mut lower = filter.from.unwrap_or(Millis::MIN);
        if let Some(after) = &scan.after {
            lower = lower.max(after.at);
        }
        let mut holds = Vec::new();
        let mut examined = 0;
        while let Some((at, mut group)) = self.next_group(filter.time, now, lower) {
            if !filter.in_range(at) {
                break;
            }
            group.sort_unstable();
            for hold_ref in &group {
                if scan
                    .after
                    .as_ref()
                    .is_some_and(|a| (at, hold_ref.as_str()) <= (a.at, a.hold_ref.as_str()))
                {
                    continue;
                }
                examined += 1;
                if let Some(view) = self.matching(now, filter, channel, hold_ref) {
                    let key = HoldKey {
                        at,
                        hold_ref: hold_ref.clone(),
                    };
                    holds.push(ListedHold { key, hold: view });
                    if holds.len() >= scan.limit {
                        let complete_to = holds.last().map(|h| h.key.clone());
                        return HoldPage { holds, complete_to };
                    }
                }
            }
            if examined >= LIST_HOLDS_SCAN_MAX {
                let last = group.pop().expect("a group is never empty");
                let complete_to = Some(HoldKey { at, hold_ref: last });
                return HoldPage { holds, complete_to };
            }
            match at.checked_add(1) {
                Some(next) => lower = next,
                None => break,
            }
        }
        complete(holds)
    }

    /// The earliest time at or after `lower` that an index lists a hold at, and the refs
    /// of the holds listed there.
    fn next_group(
        &self,
        time: HoldTime,
        now: Millis,
        mut lower: Millis,
    ) -> Option<(Millis, Vec<String>)> {
        loop {
            let at = self.next_time(time, now, lower)?;
            let range = (at, SYM_MIN)..=(at, SYM_MAX);
            let mut syms: Vec<Sym> = match time {
                HoldTime::Created => self
                    .holds
                    .by_created
                    .range(range.clone())
                    .map(|(_, h)| *h)
                    .collect(),
                HoldTime::Ended => self
                    .holds
                    .by_ended
                    .range(range.clone())
                    .map(|(_, h)| *h)
                    .collect(),
            };
            if time == HoldTime::Ended && at <= now {
                syms.extend(
                    self.expiry
                        .range(range)
                        .map(|(_, h)| *h)
                        .filter(|h| self.holds.get(h).is_some_and(HoldPart::listed)),
                );
            }
            if !syms.is_empty() {
                let refs = syms
                    .into_iter()
                    .map(|h| self.interner.resolve(h).to_string());
                return Some((at, refs.collect()));
            }
            lower = at.checked_add(1)?;
        }
    }

    /// The earliest time at or after `lower` with an entry in the listing's index.
    fn next_time(&self, time: HoldTime, now: Millis, lower: Millis) -> Option<Millis> {
        let first =
            |set: &BTreeSet<(Millis, Sym)>| set.range((lower, SYM_MIN)..).next().map(|(t, _)| *t);
        match time {
            HoldTime::Created => first(&self.holds.by_created),
            HoldTime::Ended => {
                // Active holds past their deadline have ended too, at their deadline (only
                // those whose timer has yet to run, a few at any moment).
                let due = self
                    .expiry
                    .range((lower, SYM_MIN)..)
                    .take_while(|(t, _)| *t <= now)
                    .find(|(_, h)| self.holds.get(h).is_some_and(HoldPart::listed))
                    .map(|(t, _)| *t);
                match (first(&self.holds.by_ended), due) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
    }

    /// A listed part's view as of `now` if it passes the filter's channel and state (both
    /// checked on the part, before any view is built).
    fn matching(
        &self,
        now: Millis,
        filter: &HoldFilter,
        channel: Option<Sym>,
        hold_ref: &str,
    ) -> Option<HoldView> {
        let sym = self.interner.get_in(HOLD_NS, hold_ref)?;
        let part = self.holds.get(&sym)?;
        let state = match part.state {
            HoldState::Active if part.expires_at <= now => HoldState::Expired,
            state => state,
        };
        if channel.is_some_and(|c| c != part.channel) || !filter.state_matches(state) {
            return None;
        }
        self.hold(now, hold_ref)
    }

    /// This engine's part of an order: its lines with what is reserved, fulfilled and
    /// cancelled. `None`: no part of the order here.
    pub fn order(&self, order_ref: &str) -> Option<OrderView> {
        let order = self.interner.get_in(ORDER_NS, order_ref)?;
        let hold = self.orders.get(&order)?;
        let part = self.holds.get(hold).filter(|p| !p.tombstone)?;
        let lines = part
            .lines
            .iter()
            .map(|l| {
                let reserved = part.reserved(l);
                let cancelled = if part.cancelled { l.open } else { 0 };
                OrderLineView {
                    product_ref: self.interner.resolve(l.product).to_string(),
                    location_ref: self.interner.resolve(l.location).to_string(),
                    quantity: l.quantity,
                    reserved,
                    fulfilled: l.quantity - reserved - cancelled,
                    cancelled,
                }
            })
            .collect();
        Some(OrderView {
            order_ref: order_ref.to_string(),
            hold_ref: self.interner.resolve(part.hold).to_string(),
            channel_ref: self.interner.resolve(part.channel).to_string(),
            lines,
            confirmed_at: part.updated_at,
            hold_created_at: part.created_at,
            cancelled: part.cancelled,
            primary: part.primary,
        })
    }
}

/// A page that answered every matching hold of its range.
fn complete(holds: Vec<ListedHold>) -> HoldPage {
    HoldPage {
        holds,
        complete_to: None,
    }
}
