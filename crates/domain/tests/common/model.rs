//! The reference model: a plain reading of `shared/domain.md` that keeps every ledger
//! record in a `Vec` and recomputes on_hand, physical, held and ATS by summing, exactly as
//! the contract writes them.

use std::collections::{BTreeMap, BTreeSet};
use stockd_domain::{
    AdjustStatus, CountStatus, Error, EventKind, HoldState, LineResult, LineView, Millis,
    OrderLine, ReserveKind, ReserveRequest,
};

use super::*;

// ----- the reference model -----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    LastOnHand,
    Delta,
    Correction,
    Returned,
    Sale,
    SoftReserve,
    Reserved,
}

impl Kind {
    pub fn is_reservation(self) -> bool {
        matches!(self, Kind::SoftReserve | Kind::Reserved)
    }
}

/// One Inventory Quantity, kept for ever; `active` is its status.
#[derive(Clone, Debug)]
pub struct Rec {
    pub kind: Kind,
    pub qty: i64,
    pub active: bool,
    pub channel: Option<usize>,
    pub owner: Option<String>,
    pub occurred_at: Millis,
}

#[derive(Clone, Debug, Default)]
pub struct MPos {
    pub exists: bool,
    pub counted_as_of: Option<Millis>,
    pub recs: Vec<Rec>,
    pub p0: i64,
    pub sold: [i64; 3],
}

/// A channel as the model sees it.
#[derive(Clone, Debug)]
pub struct MChan {
    pub allocation_bps: u32,
    pub buffer_bps: u32,
    pub buffer_units: i64,
    pub ttl: Option<u32>,
    pub excluded: Vec<usize>,
    pub manual: bool,
    pub rules: Vec<RuleSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nums {
    pub allocation_bps: u32,
    pub buffer_bps: u32,
    pub buffer_units: i64,
}

impl MChan {
    /// Most specific rule wins (the last one given for the same key), no stacking.
    pub fn numbers(&self, pos: usize) -> Nums {
        let (p, l) = (pos / 2, pos % 2);
        let defaults = Nums {
            allocation_bps: self.allocation_bps,
            buffer_bps: self.buffer_bps,
            buffer_units: self.buffer_units,
        };
        let by_pl = self
            .rules
            .iter()
            .rev()
            .find(|r| r.product == p && r.location == Some(l));
        let by_p = self
            .rules
            .iter()
            .rev()
            .find(|r| r.product == p && r.location.is_none());
        match by_pl.or(by_p) {
            Some(r) => Nums {
                allocation_bps: r.allocation_bps.unwrap_or(defaults.allocation_bps),
                buffer_bps: r.buffer_bps.unwrap_or(defaults.buffer_bps),
                buffer_units: r.buffer_units.unwrap_or(defaults.buffer_units),
            },
            None => defaults,
        }
    }
}

#[derive(Clone, Debug)]
pub struct MLine {
    pub pos: usize,
    pub qty: i64,
    pub open: i64,
}

#[derive(Clone, Debug)]
pub struct MHold {
    pub channel: usize,
    pub state: HoldState,
    pub lines: Vec<MLine>,
    pub expires_at: Millis,
    pub order: Option<String>,
    /// What the digest covers: the channel and the requested lines, in order.
    pub key: (usize, Vec<(usize, i64)>),
    pub forget_at: Option<Millis>,
    pub cancelled: bool,
}

#[derive(Clone, Debug)]
pub struct Model {
    pub channels: Vec<MChan>,
    pub pos: Vec<MPos>,
    pub holds: BTreeMap<String, MHold>,
    pub orders: BTreeMap<String, String>,
    pub adjustments: BTreeSet<String>,
    pub p2_ttl: Option<u32>,
    /// (kind, hold, quantity) of the HOLD_RELEASED / HOLD_EXPIRED events of this step.
    pub releases: Vec<(EventKind, String, i64)>,
}

pub fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

pub fn ceil_div(a: i64, b: i64) -> i64 {
    -(-a).div_euclid(b)
}

impl Model {
    pub fn on_hand(&self, pos: usize, except_hold: Option<&str>) -> i64 {
        self.pos[pos]
            .recs
            .iter()
            .filter(|r| r.active && !Self::owned_soft(r, except_hold))
            .map(|r| r.qty)
            .sum()
    }

    pub fn physical(&self, pos: usize) -> i64 {
        self.pos[pos]
            .recs
            .iter()
            .filter(|r| r.active && !r.kind.is_reservation())
            .map(|r| r.qty)
            .sum()
    }

    pub fn held(&self, ch: usize, pos: usize, except_hold: Option<&str>) -> i64 {
        -self.pos[pos]
            .recs
            .iter()
            .filter(|r| {
                r.active
                    && r.kind.is_reservation()
                    && r.channel == Some(ch)
                    && !Self::owned_soft(r, except_hold)
            })
            .map(|r| r.qty)
            .sum::<i64>()
    }

    pub fn owned_soft(r: &Rec, hold: Option<&str>) -> bool {
        r.kind == Kind::SoftReserve && hold.is_some() && r.owner.as_deref() == hold
    }

    pub fn used(&self, ch: usize, pos: usize, except_hold: Option<&str>) -> i64 {
        self.held(ch, pos, except_hold) + self.pos[pos].sold[ch]
    }

    pub fn entitlement(&self, ch: usize, pos: usize) -> i64 {
        let n = self.channels[ch].numbers(pos);
        if n.allocation_bps >= FULL {
            self.pos[pos].p0
        } else {
            floor_div(self.pos[pos].p0 * i64::from(n.allocation_bps), 10_000)
        }
    }

    /// ATS of channel `ch` at `pos`, with the units of `except_hold` counted as free.
    pub fn ats(&self, ch: usize, pos: usize, except_hold: Option<&str>) -> i64 {
        let c = &self.channels[ch];
        if c.excluded.contains(&(pos % 2)) || !self.pos[pos].exists {
            return 0;
        }
        let n = c.numbers(pos);
        let on_hand = self.on_hand(pos, except_hold);
        let x = if n.allocation_bps >= FULL {
            on_hand
        } else {
            let entitlement = floor_div(self.pos[pos].p0 * i64::from(n.allocation_bps), 10_000);
            (entitlement - self.used(ch, pos, except_hold)).min(on_hand)
        };
        if x <= 0 {
            return 0;
        }
        let buffer = ceil_div(x * i64::from(n.buffer_bps), 10_000);
        (x - buffer - n.buffer_units).max(0)
    }

    pub fn rebalance_pos(&mut self, pos: usize) {
        self.pos[pos].p0 = self.physical(pos);
        self.pos[pos].sold = [0; 3];
    }

    pub fn after_stock_change(&mut self, pos: usize) {
        let manual = self
            .channels
            .iter()
            .any(|c| c.manual && !c.excluded.contains(&(pos % 2)));
        if !manual {
            self.rebalance_pos(pos);
        }
    }

    pub fn count(&mut self, pos: usize, qty: i64, as_of: Millis) -> CountStatus {
        let p = &mut self.pos[pos];
        if p.counted_as_of.is_some_and(|t| as_of < t) {
            return CountStatus::Stale;
        }
        p.exists = true;
        for r in &mut p.recs {
            let superseded = matches!(
                r.kind,
                Kind::Delta | Kind::Correction | Kind::Returned | Kind::Sale
            ) && r.occurred_at <= as_of;
            if r.active && (r.kind == Kind::LastOnHand || superseded) {
                r.active = false;
            }
        }
        p.recs.push(Rec {
            kind: Kind::LastOnHand,
            qty,
            active: true,
            channel: None,
            owner: None,
            occurred_at: as_of,
        });
        p.counted_as_of = Some(as_of);
        self.after_stock_change(pos);
        CountStatus::Applied
    }

    pub fn adjust(
        &mut self,
        adj: &str,
        pos: usize,
        kind: Kind,
        qty: i64,
        at: Millis,
    ) -> AdjustStatus {
        if !self.adjustments.insert(adj.to_string()) {
            return AdjustStatus::Duplicate;
        }
        let p = &mut self.pos[pos];
        p.exists = true;
        p.recs.push(Rec {
            kind,
            qty,
            active: true,
            channel: None,
            owner: Some(adj.to_string()),
            occurred_at: at,
        });
        self.after_stock_change(pos);
        AdjustStatus::Applied
    }

    pub fn rebalance(&mut self, product: Option<usize>, location: Option<usize>) -> usize {
        let mut n = 0;
        for pos in 0..NPOS {
            if self.pos[pos].exists
                && product.is_none_or(|p| p == pos / 2)
                && location.is_none_or(|l| l == pos % 2)
            {
                self.rebalance_pos(pos);
                n += 1;
            }
        }
        n
    }

    /// Turns the hold's SOFT_RESERVEs INACTIVE.
    pub fn drop_soft(&mut self, hold: &str) {
        for p in &mut self.pos {
            for r in &mut p.recs {
                if r.active && r.kind == Kind::SoftReserve && r.owner.as_deref() == Some(hold) {
                    r.active = false;
                }
            }
        }
    }

    /// Turns the order's RESERVED at `pos` INACTIVE, returning how much they held.
    pub fn take_reserved(&mut self, pos: usize, order: &str) -> i64 {
        let mut total = 0;
        for r in &mut self.pos[pos].recs {
            if r.active && r.kind == Kind::Reserved && r.owner.as_deref() == Some(order) {
                r.active = false;
                total -= r.qty;
            }
        }
        total
    }

    pub fn finish(&mut self, now: Millis, hold: &str, state: HoldState) {
        self.drop_soft(hold);
        let h = self.holds.get_mut(hold).expect("finished hold exists");
        assert_eq!(
            h.state,
            HoldState::Active,
            "model: only active holds finish"
        );
        h.state = state;
        h.forget_at = Some(now + RETENTION_MS);
        let qty = h.lines.iter().map(|l| l.qty).sum();
        let kind = if state == HoldState::Expired {
            EventKind::HoldExpired
        } else {
            EventKind::HoldReleased
        };
        self.releases.push((kind, hold.to_string(), qty));
    }

    /// A due active hold is expired by the next call that touches it.
    pub fn expire_if_due(&mut self, now: Millis, hold: &str) {
        if self
            .holds
            .get(hold)
            .is_some_and(|h| h.state == HoldState::Active && h.expires_at <= now)
        {
            self.finish(now, hold, HoldState::Expired);
        }
    }

    pub fn expire_due(&mut self, now: Millis) -> usize {
        let due: Vec<String> = self
            .holds
            .iter()
            .filter(|(_, h)| h.state == HoldState::Active && h.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for h in &due {
            self.finish(now, h, HoldState::Expired);
        }
        let forget: Vec<String> = self
            .holds
            .iter()
            .filter(|(_, h)| h.forget_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for h in forget {
            let part = self.holds.remove(&h).expect("exists");
            assert_ne!(part.state, HoldState::Active);
            if let Some(o) = part.order {
                self.orders.remove(&o);
            }
        }
        due.len()
    }

    pub fn ttl(&self, req: &ReserveRequest, ch: usize) -> u32 {
        let s = settings();
        if let Some(t) = req.ttl_seconds {
            return t.clamp(s.ttl_min_seconds, s.ttl_max_seconds);
        }
        let by_product = req
            .lines
            .iter()
            .filter(|l| l.product_ref == "P2")
            .find_map(|_| self.p2_ttl);
        by_product
            .or(self.channels[ch].ttl)
            .unwrap_or(s.ttl_default_seconds)
            .clamp(s.ttl_min_seconds, s.ttl_max_seconds)
    }

    /// A reserve as domain.md says. Returns the kind and the per-line results.
    pub fn reserve(
        &mut self,
        now: Millis,
        req: &ReserveRequest,
    ) -> Result<(ReserveKind, Vec<LineResult>), Error> {
        let ch = CHANNELS
            .iter()
            .position(|c| *c == req.channel_ref)
            .expect("known channel");
        let hold = req.hold_ref.as_str();
        let key = (
            ch,
            req.lines
                .iter()
                .map(|l| (pos_of(&l.product_ref, &l.location_ref), l.quantity))
                .collect::<Vec<_>>(),
        );
        let mut existing_active = false;
        if let Some(h) = self.holds.get(hold).cloned() {
            match h.state {
                HoldState::Confirmed => {
                    return Err(Error::HoldConfirmed {
                        hold_ref: hold.to_string(),
                        order_ref: h.order.clone().expect("confirmed has an order"),
                    });
                }
                // Past its deadline a hold is expired, timer or not: refused, unchanged.
                HoldState::Active if h.expires_at <= now => {
                    return Err(Error::HoldExpired(hold.to_string()));
                }
                HoldState::Active => {
                    if h.channel != ch {
                        return Err(Error::HoldChannelMismatch {
                            hold_ref: hold.to_string(),
                            channel_ref: CHANNELS[h.channel].to_string(),
                        });
                    }
                    existing_active = true;
                    if h.key == key {
                        // The existing hold, unchanged: each line reports what the hold has.
                        let lines = key
                            .1
                            .iter()
                            .enumerate()
                            .map(|(i, &(pos, q))| LineResult {
                                index: i as u32,
                                requested: q,
                                reserved: h
                                    .lines
                                    .iter()
                                    .find(|l| l.pos == pos)
                                    .map_or(0, |l| l.qty),
                                available: self.ats(ch, pos, Some(hold)),
                            })
                            .collect();
                        return Ok((ReserveKind::Unchanged, lines));
                    }
                }
                // A finished hold keeps its ref while it is retained (issue #12, defect 2).
                HoldState::Released => return Err(Error::HoldReleased(hold.to_string())),
                HoldState::Expired => return Err(Error::HoldExpired(hold.to_string())),
            }
        }
        let own = existing_active.then_some(hold);
        let mut results = Vec::new();
        let mut short = false;
        for (i, &(pos, q)) in key.1.iter().enumerate() {
            let available = self.ats(ch, pos, own);
            short |= q > available;
            results.push(LineResult {
                index: i as u32,
                requested: q,
                reserved: if req.allow_partial {
                    q.min(available)
                } else {
                    q
                },
                available,
            });
        }
        if short && !req.allow_partial {
            for r in &mut results {
                r.reserved = 0;
            }
            return Ok((ReserveKind::Rejected, results));
        }
        // Replace the old hold (if any) by the new one.
        self.drop_soft(hold);
        if let Some(old) = self.holds.remove(hold) {
            assert!(
                old.state != HoldState::Active || existing_active,
                "model: an active hold is replaced only by an update"
            );
        }
        let expires_at = now + Millis::from(self.ttl(req, ch)) * 1_000;
        let mut lines = Vec::new();
        for r in &results {
            if r.reserved <= 0 {
                continue;
            }
            let pos = key.1[r.index as usize].0;
            self.pos[pos].recs.push(Rec {
                kind: Kind::SoftReserve,
                qty: -r.reserved,
                active: true,
                channel: Some(ch),
                owner: Some(hold.to_string()),
                occurred_at: now,
            });
            lines.push(MLine {
                pos,
                qty: r.reserved,
                open: 0,
            });
        }
        self.holds.insert(
            hold.to_string(),
            MHold {
                channel: ch,
                state: HoldState::Active,
                lines,
                expires_at,
                order: None,
                key,
                forget_at: None,
                cancelled: false,
            },
        );
        let kind = if existing_active {
            ReserveKind::Updated
        } else {
            ReserveKind::Created
        };
        Ok((kind, results))
    }

    pub fn confirm(
        &mut self,
        now: Millis,
        hold: &str,
        order: &str,
    ) -> Result<Option<HoldState>, Error> {
        let Some(h) = self.holds.get(hold).cloned() else {
            // No part here, but the order ref may confirm another hold here.
            return match self.orders.get(order) {
                Some(other) => Err(Error::OrderConflict {
                    order_ref: order.to_string(),
                    hold_ref: other.clone(),
                }),
                None => Ok(None),
            };
        };
        match h.state {
            HoldState::Confirmed => {
                let current = h.order.expect("confirmed has an order");
                if current == order {
                    return Ok(Some(HoldState::Confirmed));
                }
                return Err(Error::HoldConfirmed {
                    hold_ref: hold.to_string(),
                    order_ref: current,
                });
            }
            HoldState::Released => return Err(Error::HoldReleased(hold.to_string())),
            HoldState::Expired => return Err(Error::HoldExpired(hold.to_string())),
            HoldState::Active if h.expires_at <= now => {
                self.finish(now, hold, HoldState::Expired);
                return Err(Error::HoldExpired(hold.to_string()));
            }
            HoldState::Active => {}
        }
        if let Some(other) = self.orders.get(order)
            && other != hold
        {
            return Err(Error::OrderConflict {
                order_ref: order.to_string(),
                hold_ref: other.clone(),
            });
        }
        self.drop_soft(hold);
        let h = self.holds.get_mut(hold).expect("exists");
        for line in &mut h.lines {
            self.pos[line.pos].recs.push(Rec {
                kind: Kind::Reserved,
                qty: -line.qty,
                active: true,
                channel: Some(h.channel),
                owner: Some(order.to_string()),
                occurred_at: now,
            });
            line.open = line.qty;
        }
        h.state = HoldState::Confirmed;
        h.order = Some(order.to_string());
        if h.lines.iter().all(|l| l.open == 0) {
            h.forget_at = Some(now + RETENTION_MS);
        }
        self.orders.insert(order.to_string(), hold.to_string());
        Ok(Some(HoldState::Confirmed))
    }

    pub fn release(&mut self, now: Millis, hold: &str) -> Result<Option<HoldState>, Error> {
        let Some(h) = self.holds.get(hold) else {
            return Ok(None);
        };
        match h.state {
            HoldState::Confirmed => Err(Error::HoldConfirmed {
                hold_ref: hold.to_string(),
                order_ref: h.order.clone().expect("confirmed has an order"),
            }),
            HoldState::Released | HoldState::Expired => Ok(Some(h.state)),
            HoldState::Active if h.expires_at <= now => {
                self.finish(now, hold, HoldState::Expired);
                Ok(Some(HoldState::Expired))
            }
            HoldState::Active => {
                self.finish(now, hold, HoldState::Released);
                Ok(Some(HoldState::Released))
            }
        }
    }

    pub fn fulfil(
        &mut self,
        now: Millis,
        order: &str,
        lines: Option<&[OrderLine]>,
    ) -> Result<Option<Vec<LineView>>, Error> {
        let Some(hold) = self.orders.get(order).cloned() else {
            if let Some(first) = lines.and_then(|l| l.first()) {
                return Err(Error::FulfilExceedsReserved {
                    field: format!("lines[{}].quantity", first.index),
                    order_ref: order.to_string(),
                    requested: first.quantity,
                    open: 0,
                });
            }
            return Ok(None);
        };
        let h = self.holds[&hold].clone();
        let mut plan: Vec<(usize, i64)> = Vec::new();
        match lines {
            None => {
                for (i, l) in h.lines.iter().enumerate() {
                    if l.open > 0 {
                        plan.push((i, l.open));
                    }
                }
            }
            Some(lines) => {
                for req in lines {
                    let pos = pos_of(&req.product_ref, &req.location_ref);
                    let found = h.lines.iter().position(|l| l.pos == pos);
                    let open = found.map_or(0, |i| h.lines[i].open);
                    let already: i64 = plan
                        .iter()
                        .filter(|(i, _)| Some(*i) == found)
                        .map(|(_, q)| q)
                        .sum();
                    if req.quantity + already > open {
                        return Err(Error::FulfilExceedsReserved {
                            field: format!("lines[{}].quantity", req.index),
                            order_ref: order.to_string(),
                            requested: req.quantity,
                            open: open - already,
                        });
                    }
                    plan.push((found.expect("open > 0"), req.quantity));
                }
            }
        }
        let mut shipped = Vec::new();
        for (i, q) in plan {
            let line = self.holds[&hold].lines[i].clone();
            let taken = self.take_reserved(line.pos, order);
            assert_eq!(taken, line.open, "model: RESERVED matches open");
            let left = line.open - q;
            let p = &mut self.pos[line.pos];
            p.recs.push(Rec {
                kind: Kind::Sale,
                qty: -q,
                active: true,
                channel: Some(h.channel),
                owner: Some(order.to_string()),
                occurred_at: now,
            });
            if left > 0 {
                p.recs.push(Rec {
                    kind: Kind::Reserved,
                    qty: -left,
                    active: true,
                    channel: Some(h.channel),
                    owner: Some(order.to_string()),
                    occurred_at: now,
                });
            }
            p.sold[h.channel] += q;
            self.holds.get_mut(&hold).expect("exists").lines[i].open = left;
            shipped.push(LineView {
                product_ref: product_of(line.pos).to_string(),
                location_ref: location_of(line.pos).to_string(),
                quantity: q,
            });
        }
        let h = self.holds.get_mut(&hold).expect("exists");
        if h.lines.iter().all(|l| l.open == 0) {
            h.forget_at = Some(now + RETENTION_MS);
        }
        Ok(Some(shipped))
    }

    pub fn cancel(&mut self, now: Millis, order: &str) -> Option<Vec<LineView>> {
        let hold = self.orders.get(order).cloned()?;
        let h = self.holds[&hold].clone();
        let mut cancelled = Vec::new();
        for (i, line) in h.lines.iter().enumerate() {
            if line.open <= 0 {
                continue;
            }
            let taken = self.take_reserved(line.pos, order);
            assert_eq!(taken, line.open, "model: RESERVED matches open");
            self.holds.get_mut(&hold).expect("exists").lines[i].open = 0;
            cancelled.push(LineView {
                product_ref: product_of(line.pos).to_string(),
                location_ref: location_of(line.pos).to_string(),
                quantity: line.open,
            });
        }
        let h = self.holds.get_mut(&hold).expect("exists");
        h.forget_at = Some(now + RETENTION_MS);
        h.cancelled = true;
        Some(cancelled)
    }
}
