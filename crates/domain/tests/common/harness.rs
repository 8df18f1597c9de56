//! The harness: drives the engine and the model through the same steps and compares
//! each operation's answer (its checks of the state after each step are in `check`).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::{BTreeMap, BTreeSet};
use stockd_domain::{
    Adjustment, AdjustmentKind, ChannelConfig, ChannelRule, Command, Engine, Error, HoldState,
    Millis, OrderLine, Outcome, ProductConfig, RebalanceMode, ReserveLine, ReserveRequest,
    StockCount,
};

use super::*;

// ----- the harness -----

pub fn channel_config(name: &str, spec: &ChanSpec, allocation_bps: u32) -> ChannelConfig {
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

pub fn mchan(spec: &ChanSpec, allocation_bps: u32) -> MChan {
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
pub fn initial_allocations(specs: &[ChanSpec]) -> Vec<u32> {
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

pub struct Harness {
    pub engine: Engine,
    pub model: Model,
    pub now: Millis,
    pub n: usize,
    pub last_seq: u64,
    /// The hold every hold event of this step is about, when its symbol may be gone
    /// (see `bug_undo_reserve_event_names_a_released_symbol`).
    pub event_hold: Option<String>,
    /// Per channel × position, whether the last OUT_OF_STOCK / BACK_IN_STOCK said "in stock".
    pub signaled: Vec<bool>,
    /// The last request sent under each hold ref, for resends.
    pub last_request: BTreeMap<String, ReserveRequest>,
    /// A copy restored from a snapshot that follows the same calls (through `Engine::apply`).
    pub shadow: Option<Engine>,
}

pub type Answer = Result<Outcome, Error>;

impl Harness {
    pub fn new(s: &Scenario) -> Result<Self, TestCaseError> {
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
    pub fn pick_hold(&self, sel: usize, any: bool) -> &'static str {
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
    pub fn pick_order(&self, sel: usize, any: bool) -> &'static str {
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
    pub fn all_ats(engine: &Engine, n: usize) -> Vec<i64> {
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

    pub fn mirror(&mut self, command: Command, answer: &Answer) -> Result<(), TestCaseError> {
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

    pub fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
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
}
