//! Property tests of the engine against a plain reference model of `shared/domain.md`.
//!
//! A random scenario (2–3 channels with ring-fenced allocations, buffers, overrides, four
//! positions, six hold refs) drives the engine and a model that keeps every ledger record
//! in a `Vec` and recomputes on_hand, physical, held and ATS by summing, exactly as the
//! contract writes them. After every step the engine's answers, the operation's outcome,
//! the hold records and the invariants of domain.md are checked against the model.
//!
//! Checked after every step: every channel × position ATS; on_hand, physical, allocation
//! base, used and entitlement; each operation's outcome (reserve kind and per-line
//! results, count applied/stale, adjustment applied/duplicate, confirm/release/fulfil/
//! cancel answers and errors, how many holds expired); each hold's state, lines, expiry,
//! order and open quantity; invariants 1–4 (a reserve gets at most the ATS of that
//! moment, with on_hand ≥ 0 and used ≤ entitlement after it; confirm and fulfil move no
//! ATS; every hold is let go exactly once, by one HOLD_RELEASED or HOLD_EXPIRED event);
//! OUT_OF_STOCK / BACK_IN_STOCK alternate and the last one matches the ATS; event
//! sequence numbers increase; `check_consistency()`.
//!
//! A second property checks that the portable snapshot restores, that the on-disk
//! (compact) snapshot reloads exactly, that merge ∘ split (a restart with another number
//! of shards) keeps every answer, and that an engine restored midway goes on answering
//! every call exactly as the original.
//!
//! At the end, minimal failing tests pin down the engine bugs these properties found.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use stockd_domain::snapshot::CompactSnapshot;
use stockd_domain::{
    AdjustStatus, Adjustment, AdjustmentKind, ChannelConfig, ChannelRule, Command, CountStatus,
    Engine, EngineSnapshot, Error, EventKind, HoldState, LineResult, LineView, Millis, OrderLine,
    Outcome, ProductConfig, RebalanceMode, ReserveKind, ReserveLine, ReserveRequest, Settings,
    StockCount,
};

// ----- the universe -----

const PRODUCTS: [&str; 2] = ["P1", "P2"];
const LOCATIONS: [&str; 2] = ["L1", "L2"];
const NPOS: usize = 4;
const CHANNELS: [&str; 3] = ["MKT", "STORE", "WEB"];
const HOLDS: [&str; 6] = ["h0", "h1", "h2", "h3", "h4", "h5"];
const ORDERS: [&str; 4] = ["o0", "o1", "o2", "o3"];
const ADJS: [&str; 6] = ["a0", "a1", "a2", "a3", "a4", "a5"];
const FULL: u32 = 10_000;
const RETENTION_MS: Millis = 120_000;
const START: Millis = 1_700_000_000_000;

/// Lets the model-based properties run past a known engine bug that a dedicated test
/// below pins down; set it to `false` once the engine is fixed.
const TOLERATE_BUG_UNCHANGED_REPORTS_REQUESTED: bool = false;
/// Same, for `bug_fulfil_on_a_sold_out_position_emits_back_in_stock`.
const TOLERATE_BUG_FULFIL_BACK_IN_STOCK: bool = false;

fn settings() -> Settings {
    Settings {
        ttl_default_seconds: 900,
        ttl_min_seconds: 2,
        ttl_max_seconds: 600,
        hold_retention_ms: RETENTION_MS,
    }
}

fn product_of(pos: usize) -> &'static str {
    PRODUCTS[pos / 2]
}

fn location_of(pos: usize) -> &'static str {
    LOCATIONS[pos % 2]
}

fn pos_of(product: &str, location: &str) -> usize {
    let p = PRODUCTS
        .iter()
        .position(|x| *x == product)
        .expect("product");
    let l = LOCATIONS
        .iter()
        .position(|x| *x == location)
        .expect("location");
    p * 2 + l
}

// ----- scenario generation -----

#[derive(Clone, Debug)]
struct RuleSpec {
    product: usize,
    location: Option<usize>,
    allocation_bps: Option<u32>,
    buffer_bps: Option<u32>,
    buffer_units: Option<i64>,
}

#[derive(Clone, Debug)]
struct ChanSpec {
    /// The channel's share (of what is left, on an upsert); ignored when `uncapped`.
    share: u32,
    uncapped: bool,
    buffer_bps: u32,
    buffer_units: i64,
    ttl: Option<u32>,
    exclude_l2: bool,
    manual: bool,
    rules: Vec<RuleSpec>,
}

#[derive(Clone, Debug)]
enum Op {
    Count {
        pos: usize,
        qty: i64,
        back: Millis,
    },
    Adjust {
        adj: usize,
        pos: usize,
        kind: u8,
        qty: i64,
        back: Option<Millis>,
    },
    Upsert {
        ch: usize,
        spec: ChanSpec,
    },
    Rebalance {
        filter: u8,
        idx: usize,
    },
    Reserve {
        hold: usize,
        ch: usize,
        lines: Vec<(usize, i64)>,
        partial: bool,
        ttl: Option<u32>,
        /// Take the reserve back with `undo_reserve` (as when another shard rejected).
        undo: bool,
    },
    /// Send a hold's last request again, unchanged or with one quantity bumped.
    Resend {
        hold: usize,
        bump: i64,
    },
    /// Holds, orders and fulfilment lines are picked among live ones unless `any`.
    Confirm {
        hold: usize,
        any: bool,
        order: usize,
    },
    Release {
        hold: usize,
        any: bool,
    },
    Advance {
        ms: Millis,
        expire: bool,
    },
    /// Move the clock to just before or exactly at a hold's deadline or forget time.
    ToDeadline {
        sel: usize,
        before: bool,
        expire: bool,
    },
    Fulfil {
        order: usize,
        any: bool,
        /// (line selector, quantity, whether to pick one of the order's own positions).
        lines: Option<Vec<(usize, i64, bool)>>,
    },
    Cancel {
        order: usize,
        any: bool,
    },
}

#[derive(Clone, Debug)]
struct Scenario {
    channels: Vec<ChanSpec>,
    p2_ttl: Option<u32>,
    /// A first count per position, before the operations.
    initial: Vec<Option<i64>>,
    ops: Vec<Op>,
    /// The step after which a restored copy of the engine joins (snapshot property).
    fork: usize,
    /// Whether that copy comes from the on-disk (compact) snapshot rather than the portable one.
    compact_fork: bool,
}

fn bps() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => Just(0u32),
        1 => Just(1_000u32),
        1 => Just(3_333u32),
        1 => Just(2_500u32),
        2 => 0u32..=5_000,
    ]
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    (
        0usize..2,
        proptest::option::of(0usize..2),
        proptest::option::of(0u32..=FULL),
        proptest::option::of(bps()),
        proptest::option::of(0i64..=2),
    )
        .prop_map(
            |(product, location, allocation_bps, buffer_bps, buffer_units)| RuleSpec {
                product,
                location,
                allocation_bps,
                buffer_bps,
                buffer_units,
            },
        )
}

fn chan_spec() -> impl Strategy<Value = ChanSpec> {
    (
        0u32..=FULL,
        prop::bool::weighted(0.2),
        bps(),
        prop_oneof![3 => Just(0i64), 1 => 1i64..=3],
        proptest::option::of(2u32..=300),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        prop::collection::vec(rule_spec(), 0..=2).prop_map(|v| {
            // Rules only now and then.
            if v.len() == 2 { v } else { Vec::new() }
        }),
    )
        .prop_map(
            |(share, uncapped, buffer_bps, buffer_units, ttl, exclude_l2, manual, rules)| {
                ChanSpec {
                    share,
                    uncapped,
                    buffer_bps,
                    buffer_units,
                    ttl,
                    exclude_l2,
                    manual,
                    rules,
                }
            },
        )
}

fn lines(max_qty: i64) -> impl Strategy<Value = Vec<(usize, i64)>> {
    prop::collection::vec((0usize..NPOS, 1i64..=max_qty), 1..=2).prop_map(|mut v| {
        v.dedup_by_key(|(p, _)| *p);
        v
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..NPOS, 0i64..=60, prop_oneof![3 => Just(0i64), 2 => 0i64..=120_000])
            .prop_map(|(pos, qty, back)| Op::Count { pos, qty, back }),
        3 => (
            0usize..ADJS.len(),
            0usize..NPOS,
            0u8..3,
            prop_oneof![-8i64..=-1, 1i64..=12],
            proptest::option::of(0i64..=60_000),
        )
            .prop_map(|(adj, pos, kind, qty, back)| Op::Adjust {
                adj,
                pos,
                kind,
                qty: if kind == 2 { qty.abs() } else { qty },
                back,
            }),
        1 => (0usize..3, chan_spec()).prop_map(|(ch, spec)| Op::Upsert { ch, spec }),
        1 => (0u8..3, 0usize..2).prop_map(|(filter, idx)| Op::Rebalance { filter, idx }),
        7 => (
            0usize..HOLDS.len(),
            0usize..3,
            lines(6),
            prop::bool::weighted(0.3),
            prop_oneof![3 => Just(None), 1 => (1u32..=700).prop_map(Some)],
            prop::bool::weighted(0.1),
        )
            .prop_map(|(hold, ch, lines, partial, ttl, undo)| Op::Reserve {
                hold,
                ch,
                lines,
                partial,
                ttl,
                undo,
            }),
        3 => (0usize..HOLDS.len(), prop_oneof![2 => Just(0i64), 1 => Just(1i64), 1 => Just(-1i64)])
            .prop_map(|(hold, bump)| Op::Resend { hold, bump }),
        4 => (0usize..HOLDS.len(), prop::bool::weighted(0.2), 0usize..ORDERS.len())
            .prop_map(|(hold, any, order)| Op::Confirm { hold, any, order }),
        2 => (0usize..HOLDS.len(), prop::bool::weighted(0.2))
            .prop_map(|(hold, any)| Op::Release { hold, any }),
        3 => (
            prop_oneof![1 => Just(0i64), 3 => 0i64..=90_000, 1 => 100_000i64..=700_000],
            prop::bool::weighted(0.7),
        )
            .prop_map(|(ms, expire)| Op::Advance { ms, expire }),
        2 => (any::<usize>(), prop::bool::weighted(0.3), prop::bool::weighted(0.6))
            .prop_map(|(sel, before, expire)| Op::ToDeadline { sel, before, expire }),
        3 => (
            0usize..ORDERS.len(),
            prop::bool::weighted(0.15),
            proptest::option::of(prop::collection::vec(
                (0usize..NPOS, 1i64..=4, prop::bool::weighted(0.85)),
                1..=2,
            )),
        )
            .prop_map(|(order, any, lines)| Op::Fulfil { order, any, lines }),
        1 => (0usize..ORDERS.len(), prop::bool::weighted(0.15))
            .prop_map(|(order, any)| Op::Cancel { order, any }),
    ]
}

fn scenario(max_ops: usize) -> impl Strategy<Value = Scenario> {
    (
        2usize..=3,
        prop::collection::vec(chan_spec(), 3),
        proptest::option::of(5u32..=300),
        prop::collection::vec(
            prop_oneof![1 => Just(None), 4 => (0i64..=60).prop_map(Some)],
            NPOS,
        ),
        prop::collection::vec(op(), 1..=max_ops),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(
            |(n, channels, p2_ttl, initial, ops, fork, compact_fork)| Scenario {
                channels: channels.into_iter().take(n).collect(),
                p2_ttl,
                initial,
                fork: fork.index(ops.len()),
                compact_fork,
                ops,
            },
        )
}

// ----- the reference model -----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    LastOnHand,
    Delta,
    Correction,
    Returned,
    Sale,
    SoftReserve,
    Reserved,
}

impl Kind {
    fn is_reservation(self) -> bool {
        matches!(self, Kind::SoftReserve | Kind::Reserved)
    }
}

/// One Inventory Quantity, kept for ever; `active` is its status.
#[derive(Clone, Debug)]
struct Rec {
    kind: Kind,
    qty: i64,
    active: bool,
    channel: Option<usize>,
    owner: Option<String>,
    occurred_at: Millis,
}

#[derive(Clone, Debug, Default)]
struct MPos {
    exists: bool,
    counted_as_of: Option<Millis>,
    recs: Vec<Rec>,
    p0: i64,
    sold: [i64; 3],
}

/// A channel as the model sees it.
#[derive(Clone, Debug)]
struct MChan {
    allocation_bps: u32,
    buffer_bps: u32,
    buffer_units: i64,
    ttl: Option<u32>,
    excluded: Vec<usize>,
    manual: bool,
    rules: Vec<RuleSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Nums {
    allocation_bps: u32,
    buffer_bps: u32,
    buffer_units: i64,
}

impl MChan {
    /// Most specific rule wins (the last one given for the same key), no stacking.
    fn numbers(&self, pos: usize) -> Nums {
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
struct MLine {
    pos: usize,
    qty: i64,
    open: i64,
}

#[derive(Clone, Debug)]
struct MHold {
    channel: usize,
    state: HoldState,
    lines: Vec<MLine>,
    expires_at: Millis,
    order: Option<String>,
    /// What the digest covers: the channel and the requested lines, in order.
    key: (usize, Vec<(usize, i64)>),
    forget_at: Option<Millis>,
    cancelled: bool,
}

#[derive(Clone, Debug)]
struct Model {
    channels: Vec<MChan>,
    pos: Vec<MPos>,
    holds: BTreeMap<String, MHold>,
    orders: BTreeMap<String, String>,
    adjustments: BTreeSet<String>,
    p2_ttl: Option<u32>,
    /// (kind, hold, quantity) of the HOLD_RELEASED / HOLD_EXPIRED events of this step.
    releases: Vec<(EventKind, String, i64)>,
}

fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

fn ceil_div(a: i64, b: i64) -> i64 {
    -(-a).div_euclid(b)
}

impl Model {
    fn on_hand(&self, pos: usize, except_hold: Option<&str>) -> i64 {
        self.pos[pos]
            .recs
            .iter()
            .filter(|r| r.active && !Self::owned_soft(r, except_hold))
            .map(|r| r.qty)
            .sum()
    }

    fn physical(&self, pos: usize) -> i64 {
        self.pos[pos]
            .recs
            .iter()
            .filter(|r| r.active && !r.kind.is_reservation())
            .map(|r| r.qty)
            .sum()
    }

    fn held(&self, ch: usize, pos: usize, except_hold: Option<&str>) -> i64 {
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

    fn owned_soft(r: &Rec, hold: Option<&str>) -> bool {
        r.kind == Kind::SoftReserve && hold.is_some() && r.owner.as_deref() == hold
    }

    fn used(&self, ch: usize, pos: usize, except_hold: Option<&str>) -> i64 {
        self.held(ch, pos, except_hold) + self.pos[pos].sold[ch]
    }

    fn entitlement(&self, ch: usize, pos: usize) -> i64 {
        let n = self.channels[ch].numbers(pos);
        if n.allocation_bps >= FULL {
            self.pos[pos].p0
        } else {
            floor_div(self.pos[pos].p0 * i64::from(n.allocation_bps), 10_000)
        }
    }

    /// ATS of channel `ch` at `pos`, with the units of `except_hold` counted as free.
    fn ats(&self, ch: usize, pos: usize, except_hold: Option<&str>) -> i64 {
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

    fn rebalance_pos(&mut self, pos: usize) {
        self.pos[pos].p0 = self.physical(pos);
        self.pos[pos].sold = [0; 3];
    }

    fn after_stock_change(&mut self, pos: usize) {
        let manual = self
            .channels
            .iter()
            .any(|c| c.manual && !c.excluded.contains(&(pos % 2)));
        if !manual {
            self.rebalance_pos(pos);
        }
    }

    fn count(&mut self, pos: usize, qty: i64, as_of: Millis) -> CountStatus {
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

    fn adjust(&mut self, adj: &str, pos: usize, kind: Kind, qty: i64, at: Millis) -> AdjustStatus {
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

    fn rebalance(&mut self, product: Option<usize>, location: Option<usize>) -> usize {
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
    fn drop_soft(&mut self, hold: &str) {
        for p in &mut self.pos {
            for r in &mut p.recs {
                if r.active && r.kind == Kind::SoftReserve && r.owner.as_deref() == Some(hold) {
                    r.active = false;
                }
            }
        }
    }

    /// Turns the order's RESERVED at `pos` INACTIVE, returning how much they held.
    fn take_reserved(&mut self, pos: usize, order: &str) -> i64 {
        let mut total = 0;
        for r in &mut self.pos[pos].recs {
            if r.active && r.kind == Kind::Reserved && r.owner.as_deref() == Some(order) {
                r.active = false;
                total -= r.qty;
            }
        }
        total
    }

    fn finish(&mut self, now: Millis, hold: &str, state: HoldState) {
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
    fn expire_if_due(&mut self, now: Millis, hold: &str) {
        if self
            .holds
            .get(hold)
            .is_some_and(|h| h.state == HoldState::Active && h.expires_at <= now)
        {
            self.finish(now, hold, HoldState::Expired);
        }
    }

    fn expire_due(&mut self, now: Millis) -> usize {
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

    fn ttl(&self, req: &ReserveRequest, ch: usize) -> u32 {
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
    fn reserve(
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
                HoldState::Active if h.expires_at <= now => {
                    self.expire_if_due(now, hold);
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
                HoldState::Released | HoldState::Expired => {}
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

    fn confirm(
        &mut self,
        now: Millis,
        hold: &str,
        order: &str,
    ) -> Result<Option<HoldState>, Error> {
        let Some(h) = self.holds.get(hold).cloned() else {
            return Ok(None);
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

    fn release(&mut self, now: Millis, hold: &str) -> Result<Option<HoldState>, Error> {
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

    fn fulfil(
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

    fn cancel(&mut self, now: Millis, order: &str) -> Option<Vec<LineView>> {
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

// ----- the harness -----

fn channel_config(name: &str, spec: &ChanSpec, allocation_bps: u32) -> ChannelConfig {
    ChannelConfig {
        channel_ref: name.to_string(),
        allocation_bps,
        buffer_bps: spec.buffer_bps,
        buffer_units: spec.buffer_units,
        excluded_locations: if spec.exclude_l2 {
            vec![LOCATIONS[1].to_string()]
        } else {
            Vec::new()
        },
        hold_ttl_seconds: spec.ttl,
        rules: spec
            .rules
            .iter()
            .map(|r| ChannelRule {
                product_ref: Some(PRODUCTS[r.product].to_string()),
                location_ref: r.location.map(|l| LOCATIONS[l].to_string()),
                category: None,
                allocation_bps: r.allocation_bps,
                buffer_bps: r.buffer_bps,
                buffer_units: r.buffer_units,
            })
            .collect(),
        rebalance_mode: if spec.manual {
            RebalanceMode::Manual
        } else {
            RebalanceMode::Automatic
        },
    }
}

fn mchan(spec: &ChanSpec, allocation_bps: u32) -> MChan {
    MChan {
        allocation_bps,
        buffer_bps: spec.buffer_bps,
        buffer_units: spec.buffer_units,
        ttl: spec.ttl,
        excluded: if spec.exclude_l2 { vec![1] } else { Vec::new() },
        manual: spec.manual,
        rules: spec.rules.clone(),
    }
}

/// Initial allocations: capped channels share at most 10000 between them.
fn initial_allocations(specs: &[ChanSpec]) -> Vec<u32> {
    let sum: u64 = specs
        .iter()
        .filter(|s| !s.uncapped)
        .map(|s| u64::from(s.share))
        .sum();
    specs
        .iter()
        .map(|s| {
            if s.uncapped {
                FULL
            } else if sum > u64::from(FULL) {
                u32::try_from(u64::from(s.share) * u64::from(FULL) / sum).expect("fits")
            } else {
                s.share
            }
        })
        .collect()
}

struct Harness {
    engine: Engine,
    model: Model,
    now: Millis,
    n: usize,
    last_seq: u64,
    /// The hold every hold event of this step is about, when its symbol may be gone
    /// (see `bug_undo_reserve_event_names_a_released_symbol`).
    event_hold: Option<String>,
    /// Per channel × position, whether the last OUT_OF_STOCK / BACK_IN_STOCK said "in stock".
    signaled: Vec<bool>,
    /// The last request sent under each hold ref, for resends.
    last_request: BTreeMap<String, ReserveRequest>,
    /// A copy restored from a snapshot that follows the same calls (through `Engine::apply`).
    shadow: Option<Engine>,
}

type Answer = Result<Outcome, Error>;

impl Harness {
    fn new(s: &Scenario) -> Result<Self, TestCaseError> {
        let mut engine = Engine::new(settings());
        let allocations = initial_allocations(&s.channels);
        let mut channels = Vec::new();
        for (i, spec) in s.channels.iter().enumerate() {
            let config = channel_config(CHANNELS[i], spec, allocations[i]);
            prop_assert_eq!(engine.upsert_channel(config), Ok(()));
            channels.push(mchan(spec, allocations[i]));
        }
        engine
            .upsert_products(&[ProductConfig {
                product_ref: PRODUCTS[1].to_string(),
                category: None,
                hold_ttl_seconds: s.p2_ttl,
            }])
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        Ok(Harness {
            engine,
            model: Model {
                channels,
                pos: vec![MPos::default(); NPOS],
                holds: BTreeMap::new(),
                orders: BTreeMap::new(),
                adjustments: BTreeSet::new(),
                p2_ttl: s.p2_ttl,
                releases: Vec::new(),
            },
            now: START,
            n: s.channels.len(),
            last_seq: 0,
            event_hold: None,
            signaled: vec![false; CHANNELS.len() * NPOS],
            last_request: BTreeMap::new(),
            shadow: None,
        })
        .and_then(|mut h| {
            for (pos, qty) in s.initial.iter().enumerate() {
                if let Some(qty) = qty {
                    h.step(&Op::Count {
                        pos,
                        qty: *qty,
                        back: 0,
                    })?;
                }
            }
            Ok(h)
        })
    }

    /// A hold ref: one of the model's holds (active ones first) unless `any`.
    fn pick_hold(&self, sel: usize, any: bool) -> &'static str {
        let m = &self.model;
        let active: Vec<&'static str> = HOLDS
            .into_iter()
            .filter(|h| {
                m.holds
                    .get(*h)
                    .is_some_and(|x| x.state == HoldState::Active)
            })
            .collect();
        let known: Vec<&'static str> = HOLDS
            .into_iter()
            .filter(|h| m.holds.contains_key(*h))
            .collect();
        if any {
            HOLDS[sel % HOLDS.len()]
        } else if !active.is_empty() {
            active[sel % active.len()]
        } else if !known.is_empty() {
            known[sel % known.len()]
        } else {
            HOLDS[sel % HOLDS.len()]
        }
    }

    /// An order ref: one of the model's orders unless `any`.
    fn pick_order(&self, sel: usize, any: bool) -> &'static str {
        let known: Vec<&'static str> = ORDERS
            .into_iter()
            .filter(|o| self.model.orders.contains_key(*o))
            .collect();
        if any || known.is_empty() {
            ORDERS[sel % ORDERS.len()]
        } else {
            known[sel % known.len()]
        }
    }

    /// Every ATS answer of the engine, channel-major.
    fn all_ats(engine: &Engine, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n * NPOS);
        for ch in CHANNELS.iter().take(n) {
            for pos in 0..NPOS {
                out.push(
                    engine
                        .availability(ch, product_of(pos), location_of(pos))
                        .expect("known channel"),
                );
            }
        }
        out
    }

    fn mirror(&mut self, command: Command, answer: &Answer) -> Result<(), TestCaseError> {
        if let Some(shadow) = &mut self.shadow {
            let got = shadow.apply(self.now, &command);
            prop_assert_eq!(
                &got,
                answer,
                "restored engine answered {:?} differently",
                command
            );
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now;
        let ats_before = Self::all_ats(&self.engine, self.n);
        self.model.releases.clear();
        match op {
            Op::Count { pos, qty, back } => {
                let count = StockCount {
                    product_ref: product_of(*pos).to_string(),
                    location_ref: location_of(*pos).to_string(),
                    quantity: *qty,
                    as_of: now - back,
                };
                let got = self.engine.set_stock(now, &count);
                let want = self.model.count(*pos, *qty, now - back);
                prop_assert_eq!(&got, &Ok(want), "count {:?}", count);
                let answer = got.map(|s| Outcome::Counts(vec![s]));
                self.mirror(Command::SetStock(vec![count]), &answer)?;
            }
            Op::Adjust {
                adj,
                pos,
                kind,
                qty,
                back,
            } => {
                let (kind, mkind) = match kind {
                    0 => (AdjustmentKind::Delta, Kind::Delta),
                    1 => (AdjustmentKind::Correction, Kind::Correction),
                    _ => (AdjustmentKind::Returned, Kind::Returned),
                };
                let a = Adjustment {
                    adjustment_ref: ADJS[*adj].to_string(),
                    product_ref: product_of(*pos).to_string(),
                    location_ref: location_of(*pos).to_string(),
                    kind,
                    quantity: *qty,
                    occurred_at: back.map(|b| now - b),
                };
                let got = self.engine.adjust_stock(now, &a);
                let at = back.map_or(now, |b| now - b);
                let want = self.model.adjust(ADJS[*adj], *pos, mkind, *qty, at);
                prop_assert_eq!(&got, &Ok(want), "adjustment {:?}", a);
                let answer = got.map(|s| Outcome::Adjustments(vec![s]));
                self.mirror(Command::AdjustStock(vec![a]), &answer)?;
            }
            Op::Upsert { ch, spec } => {
                let ch = ch % self.n;
                let others: u32 = (0..self.n)
                    .filter(|&c| c != ch && self.model.channels[c].allocation_bps < FULL)
                    .map(|c| self.model.channels[c].allocation_bps)
                    .sum();
                let allocation = if spec.uncapped {
                    FULL
                } else {
                    spec.share * FULL.saturating_sub(others) / FULL
                };
                let config = channel_config(CHANNELS[ch], spec, allocation);
                let got = self.engine.upsert_channel(config.clone());
                prop_assert_eq!(&got, &Ok(()));
                self.model.channels[ch] = mchan(spec, allocation);
                self.mirror(Command::UpsertChannel(config), &Ok(Outcome::Done))?;
            }
            Op::Rebalance { filter, idx } => {
                let (product, location) = match filter {
                    0 => (None, None),
                    1 => (Some(*idx), None),
                    _ => (None, Some(*idx)),
                };
                let product_ref = product.map(|p| PRODUCTS[p].to_string());
                let location_ref = location.map(|l| LOCATIONS[l].to_string());
                let got =
                    self.engine
                        .rebalance(now, product_ref.as_deref(), location_ref.as_deref());
                let want = self.model.rebalance(product, location);
                prop_assert_eq!(got, want, "rebalance count");
                self.mirror(
                    Command::Rebalance {
                        product_ref,
                        location_ref,
                    },
                    &Ok(Outcome::Rebalanced(got)),
                )?;
            }
            Op::Reserve {
                hold,
                ch,
                lines,
                partial,
                ttl,
                undo,
            } => {
                let req = ReserveRequest {
                    hold_ref: HOLDS[*hold].to_string(),
                    channel_ref: CHANNELS[ch % self.n].to_string(),
                    lines: lines
                        .iter()
                        .map(|&(pos, quantity)| ReserveLine {
                            product_ref: product_of(pos).to_string(),
                            location_ref: location_of(pos).to_string(),
                            quantity,
                            category: None,
                        })
                        .collect(),
                    ttl_seconds: *ttl,
                    allow_partial: *partial,
                };
                self.reserve(&req, *undo)?;
            }
            Op::Resend { hold, bump } => {
                let sent: Vec<&ReserveRequest> = self.last_request.values().collect();
                if sent.is_empty() {
                    return self.check_state(op);
                }
                let mut req = sent[hold % sent.len()].clone();
                let q = &mut req.lines[0].quantity;
                *q = (*q + bump).max(1);
                self.reserve(&req, false)?;
            }
            Op::Confirm { hold, any, order } => {
                let (h, o) = (self.pick_hold(*hold, *any), ORDERS[*order]);
                let got = self.engine.confirm(now, h, o);
                let want = self.model.confirm(now, h, o);
                prop_assert_eq!(&got, &want, "confirm {} as {}", h, o);
                if got == Ok(Some(HoldState::Confirmed)) {
                    // Invariant 3: confirm never changes any ATS.
                    let after = Self::all_ats(&self.engine, self.n);
                    prop_assert_eq!(&after, &ats_before, "confirm changed an ATS");
                }
                let answer = got.map(Outcome::Hold);
                self.mirror(
                    Command::Confirm {
                        hold_ref: h.to_string(),
                        order_ref: o.to_string(),
                    },
                    &answer,
                )?;
            }
            Op::Release { hold, any } => {
                let h = self.pick_hold(*hold, *any);
                let got = self.engine.release(now, h);
                let want = self.model.release(now, h);
                prop_assert_eq!(&got, &want, "release {}", h);
                let answer = got.map(Outcome::Hold);
                self.mirror(
                    Command::Release {
                        hold_ref: h.to_string(),
                    },
                    &answer,
                )?;
            }
            Op::Advance { .. } | Op::ToDeadline { .. } => {
                let expire = match op {
                    Op::Advance { ms, expire } => {
                        self.now += ms;
                        *expire
                    }
                    Op::ToDeadline {
                        sel,
                        before,
                        expire,
                    } => {
                        let deadlines: Vec<Millis> = self
                            .model
                            .holds
                            .values()
                            .flat_map(|h| {
                                [
                                    (h.state == HoldState::Active).then_some(h.expires_at),
                                    h.forget_at,
                                ]
                            })
                            .flatten()
                            .map(|t| if *before { t - 1 } else { t })
                            .filter(|t| *t >= now)
                            .collect();
                        if !deadlines.is_empty() {
                            self.now = deadlines[sel % deadlines.len()];
                        }
                        *expire
                    }
                    _ => unreachable!(),
                };
                if expire {
                    let got = self.engine.expire_due(self.now);
                    let want = self.model.expire_due(self.now);
                    prop_assert_eq!(got, want, "holds expired at {}", self.now);
                    self.mirror(Command::Expire, &Ok(Outcome::Expired(got)))?;
                }
            }
            Op::Fulfil { order, any, lines } => {
                let o = self.pick_order(*order, *any);
                let own: Vec<usize> = self
                    .model
                    .orders
                    .get(o)
                    .map(|h| self.model.holds[h].lines.iter().map(|l| l.pos).collect())
                    .unwrap_or_default();
                let lines: Option<Vec<OrderLine>> = lines.as_ref().map(|ls| {
                    ls.iter()
                        .enumerate()
                        .map(|(i, &(sel, quantity, mine))| {
                            let pos = if mine && !own.is_empty() {
                                own[sel % own.len()]
                            } else {
                                sel % NPOS
                            };
                            (i, pos, quantity)
                        })
                        .map(|(i, pos, quantity)| OrderLine {
                            index: i as u32,
                            product_ref: product_of(pos).to_string(),
                            location_ref: location_of(pos).to_string(),
                            quantity,
                        })
                        .collect()
                });
                let got = self.engine.fulfil(now, o, lines.as_deref(), false);
                let want = self.model.fulfil(now, o, lines.as_deref());
                prop_assert_eq!(&got, &want, "fulfil {} {:?}", o, lines);
                if matches!(got, Ok(Some(_))) {
                    // Invariant 3: fulfil never changes any ATS.
                    let after = Self::all_ats(&self.engine, self.n);
                    prop_assert_eq!(&after, &ats_before, "fulfil changed an ATS");
                }
                let answer = got.map(Outcome::Lines);
                self.mirror(
                    Command::Fulfil {
                        order_ref: o.to_string(),
                        lines,
                        op: None,
                    },
                    &answer,
                )?;
            }
            Op::Cancel { order, any } => {
                let o = self.pick_order(*order, *any);
                let got = self.engine.cancel_order(now, o);
                let want = self.model.cancel(now, o);
                prop_assert_eq!(&got, &Ok(want), "cancel {}", o);
                let answer = got.map(Outcome::Lines);
                self.mirror(
                    Command::CancelOrder {
                        order_ref: o.to_string(),
                    },
                    &answer,
                )?;
            }
        }
        self.check_state(op)
    }

    fn reserve(&mut self, req: &ReserveRequest, undo: bool) -> Result<(), TestCaseError> {
        let now = self.now;
        // What an undo must come back to: the state after a due hold's lazy expiry.
        self.model.expire_if_due(now, &req.hold_ref);
        let saved = undo.then(|| self.model.clone());
        self.last_request.insert(req.hold_ref.clone(), req.clone());
        // What the engine says before: ATS at each line, and the hold's own units there.
        let before: Vec<(i64, i64)> = req
            .lines
            .iter()
            .map(|l| {
                let ats = self
                    .engine
                    .availability(&req.channel_ref, &l.product_ref, &l.location_ref)
                    .expect("known channel");
                // The hold's own units, if its SOFT_RESERVEs are still in the ledger (a due
                // hold is expired lazily by the reserve itself, so read its raw state).
                let own = self
                    .engine
                    .hold(Millis::MIN, &req.hold_ref)
                    .filter(|h| h.state == HoldState::Active)
                    .map_or(0, |h| {
                        h.lines
                            .iter()
                            .filter(|x| {
                                x.product_ref == l.product_ref && x.location_ref == l.location_ref
                            })
                            .map(|x| x.quantity)
                            .sum()
                    });
                (ats, own)
            })
            .collect();
        let all: Vec<u32> = (0..req.lines.len() as u32).collect();
        let got = self.engine.reserve(now, req, &all);
        let want = self.model.reserve(now, req);
        match (&got, &want) {
            (Ok(part), Ok((kind, lines))) => {
                prop_assert_eq!(part.kind, *kind, "reserve {:?}", req);
                let mut lines = lines.clone();
                if *kind == ReserveKind::Unchanged && TOLERATE_BUG_UNCHANGED_REPORTS_REQUESTED {
                    // Known engine bug (see `bug_resent_partial_hold_reports_units_it_does_not_hold`):
                    // an idempotent resend reports `reserved = requested` whatever the hold holds.
                    for (want, got) in lines.iter_mut().zip(&part.lines) {
                        if got.reserved == got.requested {
                            want.reserved = got.requested;
                        }
                    }
                }
                prop_assert_eq!(&part.lines, &lines, "reserve lines {:?}", req);
                prop_assert_eq!(
                    part.undo.is_some(),
                    matches!(kind, ReserveKind::Created | ReserveKind::Updated)
                );
                if matches!(kind, ReserveKind::Created | ReserveKind::Updated) {
                    let ch = CHANNELS
                        .iter()
                        .position(|c| *c == req.channel_ref)
                        .expect("channel");
                    for (line, r) in req.lines.iter().zip(&part.lines) {
                        // Invariant 1: never more than the ATS at that moment (a cart
                        // update counts its own units as free).
                        let (ats, own) = before[r.index as usize];
                        prop_assert!(
                            r.reserved <= ats + own,
                            "reserved {} over ATS {} + own {}",
                            r.reserved,
                            ats,
                            own
                        );
                        if r.reserved == 0 {
                            continue;
                        }
                        // Invariant 2: on_hand ≥ 0 and used ≤ entitlement there.
                        let view = self
                            .engine
                            .position(&line.product_ref, &line.location_ref, false)
                            .expect("a reserved line has a position");
                        prop_assert!(view.on_hand >= 0, "on_hand {} after reserve", view.on_hand);
                        let pos = pos_of(&line.product_ref, &line.location_ref);
                        if self.model.channels[ch].numbers(pos).allocation_bps < FULL {
                            let cv = view
                                .channels
                                .iter()
                                .find(|c| c.channel_ref == req.channel_ref)
                                .expect("channel view");
                            prop_assert!(
                                cv.used <= cv.entitlement,
                                "used {} over entitlement {} after reserve",
                                cv.used,
                                cv.entitlement
                            );
                        }
                    }
                }
            }
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            _ => prop_assert!(
                false,
                "reserve {:?}: engine {:?}, model {:?}",
                req,
                got,
                want
            ),
        }
        let answer = got.clone().map(Outcome::Reserved);
        self.mirror(
            Command::Reserve {
                request: req.clone(),
                mine: all,
            },
            &answer,
        )?;
        if let (Some(saved), Ok(part)) = (saved, got)
            && let Some(undo) = part.undo
        {
            self.engine.undo_reserve(now, &undo);
            self.event_hold = Some(req.hold_ref.clone());
            let quantity = part.lines.iter().map(|l| l.reserved).sum();
            let mut releases = self.model.releases.clone();
            self.model = saved;
            releases.push((EventKind::HoldReleased, req.hold_ref.clone(), quantity));
            self.model.releases = releases;
            self.mirror(Command::UndoReserve(undo), &Ok(Outcome::Done))?;
        }
        Ok(())
    }

    fn check_state(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now;
        let m = &self.model;
        for (ch, name) in CHANNELS.iter().enumerate().take(self.n) {
            for pos in 0..NPOS {
                let got = self
                    .engine
                    .availability(name, product_of(pos), location_of(pos))
                    .expect("known channel");
                prop_assert_eq!(
                    got,
                    m.ats(ch, pos, None),
                    "ATS of {} at {}:{} after {:?}",
                    name,
                    product_of(pos),
                    location_of(pos),
                    op
                );
            }
        }
        for pos in 0..NPOS {
            let view = self
                .engine
                .position(product_of(pos), location_of(pos), false);
            prop_assert_eq!(view.is_some(), m.pos[pos].exists, "position {} exists", pos);
            if let Some(v) = view {
                prop_assert_eq!(v.on_hand, m.on_hand(pos, None), "on_hand at {}", pos);
                prop_assert_eq!(v.physical, m.physical(pos), "physical at {}", pos);
                prop_assert_eq!(
                    v.allocation_base,
                    m.pos[pos].p0,
                    "allocation base at {}",
                    pos
                );
                for (ch, name) in CHANNELS.iter().enumerate().take(self.n) {
                    let cv = v
                        .channels
                        .iter()
                        .find(|c| c.channel_ref == *name)
                        .expect("every channel has a view");
                    prop_assert_eq!(cv.used, m.used(ch, pos, None), "used({}) at {}", name, pos);
                    prop_assert_eq!(
                        cv.entitlement,
                        m.entitlement(ch, pos),
                        "entitlement({}) at {}",
                        name,
                        pos
                    );
                }
            }
        }
        for h in HOLDS {
            let got = self.engine.hold(now, h);
            let want = m.holds.get(h);
            prop_assert_eq!(got.is_some(), want.is_some(), "hold {} present", h);
            if let (Some(g), Some(w)) = (got, want) {
                let state = if w.state == HoldState::Active && w.expires_at <= now {
                    HoldState::Expired
                } else {
                    w.state
                };
                prop_assert_eq!(g.state, state, "state of hold {}", h);
                prop_assert_eq!(&g.channel_ref, CHANNELS[w.channel]);
                prop_assert_eq!(g.expires_at, w.expires_at, "expiry of hold {}", h);
                prop_assert_eq!(&g.order_ref, &w.order, "order of hold {}", h);
                prop_assert_eq!(g.cancelled, w.cancelled, "hold {} cancelled", h);
                let open: i64 = w.lines.iter().map(|l| l.open).sum();
                prop_assert_eq!(g.open, open, "open quantity of hold {}", h);
                let lines: Vec<(String, String, i64)> = w
                    .lines
                    .iter()
                    .map(|l| {
                        (
                            product_of(l.pos).to_string(),
                            location_of(l.pos).to_string(),
                            l.qty,
                        )
                    })
                    .collect();
                let glines: Vec<(String, String, i64)> = g
                    .lines
                    .into_iter()
                    .map(|l| (l.product_ref, l.location_ref, l.quantity))
                    .collect();
                prop_assert_eq!(glines, lines, "lines of hold {}", h);
            }
        }
        // Invariant 4: each hold's quantity is let go exactly once, when the model says.
        let mut released: Vec<(EventKind, String, i64)> = Vec::new();
        let events: Vec<_> = self.engine.drain_events().collect();
        // A fulfilment's stock events are wrong (see the tolerated bug); skip them.
        let lenient = TOLERATE_BUG_FULFIL_BACK_IN_STOCK && matches!(op, Op::Fulfil { .. });
        for e in &events {
            prop_assert!(e.seq > self.last_seq, "event sequence went backwards");
            self.last_seq = e.seq;
            if matches!(e.kind, EventKind::HoldReleased | EventKind::HoldExpired) {
                let hold = match &self.event_hold {
                    Some(h) => h.clone(),
                    None => self
                        .engine
                        .resolve(e.hold.expect("hold event has a hold"))
                        .to_string(),
                };
                released.push((e.kind, hold, e.quantity));
            }
            if matches!(e.kind, EventKind::OutOfStock | EventKind::BackInStock) {
                let r = |s: Option<_>| self.engine.resolve(s.expect("stock event has refs"));
                let ch = CHANNELS
                    .iter()
                    .position(|c| *c == r(e.channel))
                    .expect("channel");
                let key = ch * NPOS + pos_of(r(e.product), r(e.location));
                let in_stock = e.kind == EventKind::BackInStock;
                prop_assert!(
                    lenient || self.signaled[key] != in_stock,
                    "{:?} twice in a row for {:?} after {:?}",
                    e.kind,
                    (r(e.channel), r(e.product), r(e.location)),
                    op
                );
                prop_assert_eq!(
                    e.available > 0,
                    in_stock,
                    "{:?} with ATS {}",
                    e.kind,
                    e.available
                );
                self.signaled[key] = in_stock;
            }
        }
        // OUT_OF_STOCK / BACK_IN_STOCK: the last one sent says where each VP now stands.
        // (A channel rule change moves ATS without these events, so it resets the record.)
        let resync = lenient || matches!(op, Op::Upsert { .. });
        for (ch, name) in CHANNELS.iter().enumerate().take(self.n) {
            for pos in 0..NPOS {
                let in_stock = self.model.ats(ch, pos, None) > 0;
                if resync {
                    self.signaled[ch * NPOS + pos] = in_stock;
                }
                prop_assert_eq!(
                    self.signaled[ch * NPOS + pos],
                    in_stock,
                    "stock events of {} at {}:{} after {:?}",
                    name,
                    product_of(pos),
                    location_of(pos),
                    op
                );
            }
        }
        self.event_hold = None;
        released.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
        let mut want = self.model.releases.clone();
        want.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
        prop_assert_eq!(released, want, "holds let go by {:?}", op);
        prop_assert_eq!(self.engine.check_consistency(), Ok(()));
        if let Some(shadow) = &mut self.shadow {
            shadow.drain_events().for_each(drop);
            prop_assert_eq!(shadow.check_consistency(), Ok(()));
            prop_assert!(
                canonical(shadow.snapshot()) == canonical(self.engine.snapshot()),
                "the restored engine's state drifted after {:?}",
                op
            );
        }
        Ok(())
    }
}

fn run(s: &Scenario, with_shadow: bool) -> Result<Harness, TestCaseError> {
    let mut h = Harness::new(s)?;
    for (i, op) in s.ops.iter().enumerate() {
        h.step(op)?;
        if with_shadow && i == s.fork {
            h.shadow = Some(if s.compact_fork {
                through_disk(&h.engine)?
            } else {
                Engine::restore(settings(), h.engine.snapshot())
                    .map_err(|e| TestCaseError::fail(format!("restore failed: {e}")))?
            });
        }
    }
    Ok(h)
}

/// The engine as the service stores and reloads it: `compact()`, serialised with postcard
/// (the service's record body), decoded and rebuilt with `from_compact`.
fn through_disk(engine: &Engine) -> Result<Engine, TestCaseError> {
    let bytes = postcard::to_stdvec(&engine.compact())
        .map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    let snap: CompactSnapshot =
        postcard::from_bytes(&bytes).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    Engine::from_compact(settings(), snap)
        .map_err(|e| TestCaseError::fail(format!("from_compact failed: {e}")))
}

/// Every availability answer of `engine` equals `reference`'s.
fn same_answers(engine: &Engine, reference: &Engine, n: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(Harness::all_ats(engine, n), Harness::all_ats(reference, n));
    for pos in 0..NPOS {
        let a = engine.position(product_of(pos), location_of(pos), false);
        let b = reference.position(product_of(pos), location_of(pos), false);
        prop_assert_eq!(a, b);
    }
    Ok(())
}

/// A shard route: a hash of product and location, mod n.
fn route(n: usize) -> impl Fn(&str, &str) -> usize {
    move |product: &str, location: &str| {
        let h = product
            .bytes()
            .chain([b':'])
            .chain(location.bytes())
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        (h % n as u64) as usize
    }
}

/// Puts a snapshot in a canonical order (positions, hold lines, `sold` and ledgers sorted).
///
/// `sold` and `iqs` are sorted because the engine writes them in an order that depends on
/// its history (counter creation order, `swap_remove`), which a restore does not
/// reproduce: see `bug_snapshot_is_not_canonical`.
fn canonical(mut s: EngineSnapshot) -> EngineSnapshot {
    s.positions
        .sort_by(|a, b| (&a.product_ref, &a.location_ref).cmp(&(&b.product_ref, &b.location_ref)));
    for p in &mut s.positions {
        p.sold.sort();
        p.iqs.sort_by_key(|iq| iq.id);
    }
    for h in &mut s.holds {
        h.lines.sort_by(|a, b| {
            (&a.product_ref, &a.location_ref).cmp(&(&b.product_ref, &b.location_ref))
        });
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        max_shrink_iters: 20_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The engine agrees with the reference model after every step of a random history.
    #[test]
    fn engine_matches_reference_model(s in scenario(60)) {
        run(&s, false)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        max_shrink_iters: 20_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A snapshot restores to the same engine; merge ∘ split by a shard route keeps every
    /// answer; and an engine restored midway goes on answering exactly as the original.
    #[test]
    fn snapshots_restore_and_reshard(s in scenario(60), shards in 1usize..=4) {
        let h = run(&s, true)?;
        let snap = h.engine.snapshot();
        // The on-disk snapshot keeps symbols and structures: the state comes back exactly.
        let reloaded = through_disk(&h.engine)?;
        prop_assert!(reloaded.snapshot() == snap, "compact round trip changed the state");
        same_answers(&reloaded, &h.engine, h.n)?;
        let restored = Engine::restore(settings(), snap.clone())
            .map_err(|e| TestCaseError::fail(format!("restore failed: {e}")))?;
        prop_assert!(
            canonical(restored.snapshot()) == canonical(snap.clone()),
            "restore ∘ snapshot changed the state"
        );
        same_answers(&restored, &h.engine, h.n)?;

        let parts = snap.clone().split(shards, route(shards));
        prop_assert_eq!(parts.len(), shards);
        // Each shard alone answers for the positions routed to it.
        let r = route(shards);
        for (i, part) in parts.iter().enumerate() {
            let shard = Engine::restore(settings(), part.clone())
                .map_err(|e| TestCaseError::fail(format!("restore of shard {i} failed: {e}")))?;
            for ch in CHANNELS.iter().take(h.n) {
                for pos in 0..NPOS {
                    let (p, l) = (product_of(pos), location_of(pos));
                    if r(p, l) == i {
                        prop_assert_eq!(
                            shard.availability(ch, p, l).expect("channel"),
                            h.engine.availability(ch, p, l).expect("channel"),
                            "shard {} of {}: ATS of {} at {}:{}", i, shards, ch, p, l
                        );
                    }
                }
            }
        }
        let merged = EngineSnapshot::merge(parts);
        let remerged = Engine::restore(settings(), merged)
            .map_err(|e| TestCaseError::fail(format!("restore of merge failed: {e}")))?;
        same_answers(&remerged, &h.engine, h.n)?;
        prop_assert_eq!(canonical(remerged.snapshot()), canonical(snap));
    }
}

// ----- known engine bugs: minimal failing tests -----
//
// Each test below FAILS against the engine as it is, on purpose: it pins down one bug
// found by the properties above (which tolerate it, see the TOLERATE_BUG_* constants).
// Fix the engine, watch the test pass, then drop the tolerance.

fn one_channel_engine() -> Engine {
    let mut engine = Engine::new(settings());
    engine
        .upsert_channel(ChannelConfig {
            channel_ref: "WEB".into(),
            ..ChannelConfig::default()
        })
        .expect("valid channel");
    engine
}

fn count(product: &str, quantity: i64, as_of: Millis) -> StockCount {
    StockCount {
        product_ref: product.into(),
        location_ref: "L1".into(),
        quantity,
        as_of,
    }
}

fn request(hold: &str, channel: &str, quantity: i64, allow_partial: bool) -> ReserveRequest {
    ReserveRequest {
        hold_ref: hold.into(),
        channel_ref: channel.into(),
        lines: vec![ReserveLine {
            product_ref: "P1".into(),
            location_ref: "L1".into(),
            quantity,
            category: None,
        }],
        ttl_seconds: None,
        allow_partial,
    }
}

/// Regression (found by the properties; fixed) — was, in engine.rs, `reserve`, the `part.digest == digest` branch): an idempotent
/// resend answers `reserved = line.quantity` for every line, whatever the hold holds. A
/// partial hold that got 2 of 5 units is reported, on a retry, as holding 5.
#[test]
fn resent_partial_hold_reports_what_it_holds() {
    let mut engine = one_channel_engine();
    engine.set_stock(START, &count("P1", 2, START)).unwrap();
    let req = request("cart-1", "WEB", 5, true);
    let first = engine.reserve(START, &req, &[0]).unwrap();
    assert_eq!(first.kind, ReserveKind::Created);
    assert_eq!(first.lines[0].reserved, 2);
    let again = engine.reserve(START + 1, &req, &[0]).unwrap();
    assert_eq!(again.kind, ReserveKind::Unchanged);
    assert_eq!(
        again.lines[0].reserved, 2,
        "the resend must report what the hold holds"
    );
}

/// Regression (found by the properties; fixed) — was, in engine.rs, `fulfil`): `take_reserved` runs inside `watching`, but the SALE
/// and the rest of the RESERVED are pushed after it, outside. On a sold-out position the
/// fulfilment emits BACK_IN_STOCK though ATS never moved (it stays 0), and nothing
/// follows to say it is out of stock again.
#[test]
fn fulfil_on_a_sold_out_position_emits_no_back_in_stock() {
    let mut engine = one_channel_engine();
    engine.set_stock(START, &count("P1", 1, START)).unwrap();
    let part = engine
        .reserve(START, &request("cart-1", "WEB", 1, false), &[0])
        .unwrap();
    assert_eq!(part.kind, ReserveKind::Created);
    engine.confirm(START, "cart-1", "ORD-1").unwrap();
    assert_eq!(engine.availability("WEB", "P1", "L1"), Ok(0));
    engine.drain_events().for_each(drop);
    engine.fulfil(START, "ORD-1", None, false).unwrap();
    assert_eq!(engine.availability("WEB", "P1", "L1"), Ok(0));
    let kinds: Vec<EventKind> = engine.drain_events().map(|e| e.kind).collect();
    assert!(
        !kinds.contains(&EventKind::BackInStock),
        "ATS stayed 0 but the fulfilment said BACK_IN_STOCK: {kinds:?}"
    );
}

/// Regression (found by the properties; fixed) — was, in engine.rs, `forget_hold`): hold, order, adjustment and catalogue refs share
/// one interner, so an order ref and an adjustment ref with the same text are one symbol.
/// Here a customer return is recorded under the order's ref (a natural choice). When the
/// order is forgotten, `forget_hold` takes every IQ owned by that symbol at the order's
/// positions for the order's SALE and trips `assert_eq!(iq.kind, IqKind::Sale, "a
/// forgotten order holds no RESERVED")`: `expire_due` panics. (With the return at another
/// location there is no panic, but the symbol is released while the adjustment set still
/// holds it: a retry of the return applies a second time and `snapshot()` panics with
/// "resolve of a released symbol".)
#[test]
fn forgotten_order_keeps_a_ref_still_used_as_adjustment_ref() {
    let mut engine = one_channel_engine();
    engine.set_stock(START, &count("P1", 10, START)).unwrap();
    engine
        .reserve(START, &request("cart-1", "WEB", 1, false), &[0])
        .unwrap();
    engine.confirm(START, "cart-1", "ORD-1").unwrap();
    engine.fulfil(START, "ORD-1", None, false).unwrap();
    let ret = Adjustment {
        adjustment_ref: "ORD-1".into(),
        product_ref: "P1".into(),
        location_ref: "L1".into(),
        kind: AdjustmentKind::Returned,
        quantity: 1,
        occurred_at: None,
    };
    assert_eq!(engine.adjust_stock(START, &ret), Ok(AdjustStatus::Applied));
    let later = START + RETENTION_MS + 1;
    engine.expire_due(later);
    assert_eq!(
        engine.adjust_stock(later, &ret),
        Ok(AdjustStatus::Duplicate),
        "the same adjustment ref applied twice"
    );
    assert_eq!(engine.check_consistency(), Ok(()));
    let _ = engine.snapshot();
}

/// Regression (found by the properties; fixed) — was, in engine.rs, `undo_reserve`): undoing a new hold emits HOLD_RELEASED carrying
/// the hold's symbol and then releases that symbol (`release_if_unused`) in the same call,
/// so whoever resolves the event (`Engine::resolve`) panics, or, once the slot is reused,
/// reads another ref.
#[test]
fn undo_reserve_event_names_a_live_symbol() {
    let mut engine = one_channel_engine();
    engine.set_stock(START, &count("P1", 10, START)).unwrap();
    let part = engine
        .reserve(START, &request("cart-1", "WEB", 1, false), &[0])
        .unwrap();
    engine.drain_events().for_each(drop);
    engine.undo_reserve(START, part.undo.as_ref().expect("created"));
    let events: Vec<_> = engine.drain_events().collect();
    let released = events
        .iter()
        .find(|e| e.kind == EventKind::HoldReleased)
        .expect("undo emits HOLD_RELEASED");
    let hold = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine
            .resolve(released.hold.expect("a hold event names its hold"))
            .to_string()
    }));
    assert_eq!(
        hold.ok().as_deref(),
        Some("cart-1"),
        "the event's hold must still resolve"
    );
}

/// Regression (found by the properties; fixed) — was, in snapshot.rs, `Engine::snapshot`): the snapshot is not canonical. `sold` is
/// written in the order the position's per-channel counters were created and `iqs` in
/// ledger order (which `swap_remove` shuffles); `restore` rebuilds both in another order,
/// so `restore(s).snapshot() != s` for the same state.
#[test]
fn snapshot_is_canonical() {
    let mut engine = one_channel_engine();
    engine
        .upsert_channel(ChannelConfig {
            channel_ref: "MKT".into(),
            ..ChannelConfig::default()
        })
        .unwrap();
    engine.set_stock(START, &count("P1", 10, START)).unwrap();
    for (hold, channel, order) in [("h-1", "MKT", "o-1"), ("h-2", "WEB", "o-2")] {
        engine
            .reserve(START, &request(hold, channel, 1, false), &[0])
            .unwrap();
        engine.confirm(START, hold, order).unwrap();
        engine.fulfil(START, order, None, false).unwrap();
    }
    engine
        .reserve(START, &request("h-3", "WEB", 1, false), &[0])
        .unwrap();
    let snap = engine.snapshot();
    let restored = Engine::restore(settings(), snap.clone()).unwrap();
    assert_eq!(restored.snapshot(), snap);
}
