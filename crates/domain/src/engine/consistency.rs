//! The consistency check: the counters against the ledger, and the soft reservations in
//! the ledger against the hold records.
//!
//! Recovery runs it on every restored engine (the only check of what a checkpoint, the log
//! and the repairs built together), and the tests after every step. At a restart of a
//! million holds it was 8% of the CPU, most of it one random position lookup per hold line,
//! so the hold side is checked by a multiset checksum instead: both sides add one term per
//! (hold, product, location, quantity), in whatever order they are walked, and only when
//! the sums differ does a slower pass name what differs.

use rustc_hash::FxHashMap;

use super::Engine;
use crate::hold::HoldState;
use crate::position::IqKind;
use crate::refs::Sym;

/// One soft reservation's term of the checksum: an odd hash of (hold, product, location)
/// times the quantity, so that a wrong quantity always changes the sum (an odd number times
/// a non-zero difference is never 0 modulo 2^64), and two wrong terms cancel only by a
/// 64-bit coincidence.
fn soft_term(hold: Sym, product: Sym, location: Sym, quantity: i64) -> u64 {
    let mut x = (u64::from(hold.0) << 32 | u64::from(product.0))
        ^ u64::from(location.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64's finaliser: every input bit moves every output bit.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x | 1).wrapping_mul(quantity as u64)
}

impl Engine {
    /// Checks the counters against the ledger and the hold records; used by tests and after
    /// recovery. Returns a description of the first inconsistency.
    pub fn check_consistency(&self) -> Result<(), String> {
        if !self.holds.indexes_consistent() {
            return Err("the hold listing indexes drifted from the hold table".into());
        }
        let in_ledger = self.check_counters()?;
        let mut in_holds = 0u64;
        for part in self.holds.values() {
            if part.state == HoldState::Active {
                for line in &part.lines {
                    in_holds = in_holds.wrapping_add(soft_term(
                        part.hold,
                        line.product,
                        line.location,
                        line.quantity,
                    ));
                }
            }
        }
        if in_ledger == in_holds {
            return Ok(());
        }
        Err(self.soft_difference())
    }

    /// Checks every position's counters against its ledger, and returns the checksum of the
    /// ledger's soft reservations.
    fn check_counters(&self) -> Result<u64, String> {
        let mut held = Vec::new();
        let mut in_ledger = 0u64;
        for (&(p, l), pos) in &self.positions {
            let (physical, on_hand) = pos.recount(&mut held);
            let name = || format!("{}:{}", self.interner.resolve(p), self.interner.resolve(l));
            if physical != pos.physical || on_hand != pos.on_hand {
                return Err(format!("{}: counters drifted from the ledger", name()));
            }
            let counted = |c: Sym| held.iter().find(|(h, _)| *h == c).map_or(0, |(_, h)| *h);
            if held.iter().any(|&(c, h)| pos.held(c) != h)
                || pos.channels.iter().any(|c| c.held != counted(c.channel))
            {
                return Err(format!("{}: held drifted from the ledger", name()));
            }
            for iq in pos.iqs.iter().filter(|iq| iq.kind == IqKind::SoftReserve) {
                in_ledger = in_ledger.wrapping_add(soft_term(iq.owner, p, l, -iq.quantity));
            }
        }
        Ok(in_ledger)
    }

    /// Names a soft reservation the ledger and the hold records disagree on (the slow pass,
    /// run only when the checksums differ): the hold whose ref sorts first.
    fn soft_difference(&self) -> String {
        // (hold, product, location) → (in the ledger, in the hold's active lines)
        let mut both: FxHashMap<(Sym, Sym, Sym), (i64, i64)> = FxHashMap::default();
        for (&(p, l), pos) in &self.positions {
            for iq in pos.iqs.iter().filter(|iq| iq.kind == IqKind::SoftReserve) {
                both.entry((iq.owner, p, l)).or_default().0 -= iq.quantity;
            }
        }
        for part in self.holds.values() {
            for line in &part.lines {
                let want = if part.state == HoldState::Active {
                    line.quantity
                } else {
                    0
                };
                both.entry((part.hold, line.product, line.location))
                    .or_default()
                    .1 += want;
            }
        }
        // A damaged ledger may name a symbol that is not live: say so instead of panicking.
        let name = |s: Sym| {
            if self.interner.is_live(s) {
                self.interner.resolve(s).to_owned()
            } else {
                format!("(symbol {}, not live)", s.0)
            }
        };
        both.into_iter()
            .filter(|(_, (soft, want))| soft != want)
            .map(|((h, p, l), (soft, want))| {
                let at = format!("{}:{}", name(p), name(l));
                (name(h), at, soft, want)
            })
            .min()
            .map_or_else(
                || "the soft reservations' checksum differs from the hold records'".into(),
                |(hold, at, soft, want)| {
                    format!("hold {hold} holds {soft} at {at} where it should hold {want}")
                },
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelConfig, ReserveLine, ReserveRequest, Settings, StockCount};

    const NOW: crate::Millis = 1_000_000;

    /// An engine with 10 of P1 and P2 at L1 and two active holds: h1 (P1 ×2, P2 ×1), h2 (P1 ×3).
    fn held_engine() -> Engine {
        let mut engine = Engine::new(Settings {
            ttl_default_seconds: 900,
            ttl_min_seconds: 2,
            ttl_max_seconds: 900,
            hold_retention_ms: 3_600_000,
        });
        engine
            .upsert_channel(ChannelConfig {
                channel_ref: "WEB".into(),
                ..ChannelConfig::default()
            })
            .unwrap();
        for p in ["P1", "P2"] {
            let count = StockCount {
                product_ref: p.into(),
                location_ref: "L1".into(),
                quantity: 10,
                as_of: NOW,
            };
            engine.set_stock(NOW, &count).unwrap();
        }
        for (hold, lines) in [("h1", vec![("P1", 2), ("P2", 1)]), ("h2", vec![("P1", 3)])] {
            let lines: Vec<ReserveLine> = lines
                .into_iter()
                .map(|(p, q)| ReserveLine {
                    product_ref: p.into(),
                    location_ref: "L1".into(),
                    quantity: q,
                    category: None,
                })
                .collect();
            let all: Vec<u32> = (0..lines.len() as u32).collect();
            let request = ReserveRequest {
                hold_ref: hold.into(),
                channel_ref: "WEB".into(),
                lines,
                ttl_seconds: None,
                allow_partial: false,
            };
            engine.reserve(NOW, &request, &all).unwrap();
        }
        assert_eq!(engine.check_consistency(), Ok(()));
        engine
    }

    fn key(engine: &Engine, product: &str) -> (Sym, Sym) {
        let i = &engine.interner;
        (i.get(product).unwrap(), i.get("L1").unwrap())
    }

    /// Changes h1's soft reservation of P1 by `delta` units in the ledger, and the position's
    /// counters with it, so that only the hold side disagrees.
    fn shift_soft(engine: &mut Engine, product: &str, hold: &str, delta: i64) {
        let k = key(engine, product);
        let owner = engine.interner.get_in(crate::refs::HOLD_NS, hold).unwrap();
        let pos = engine.positions.get_mut(&k).unwrap();
        let iq = pos
            .iqs
            .iter_mut()
            .find(|iq| iq.kind == IqKind::SoftReserve && iq.owner == owner)
            .unwrap();
        iq.quantity -= delta;
        let channel = iq.channel;
        pos.on_hand -= delta;
        pos.channels
            .iter_mut()
            .find(|c| c.channel == channel)
            .unwrap()
            .held += delta;
    }

    #[test]
    fn a_soft_reservation_that_differs_from_its_hold_line_is_named() {
        let mut engine = held_engine();
        shift_soft(&mut engine, "P1", "h1", 1);
        assert_eq!(
            engine.check_consistency(),
            Err("hold h1 holds 3 at P1:L1 where it should hold 2".into())
        );
    }

    #[test]
    fn two_differences_that_sum_to_zero_are_still_found() {
        // h1 holds one more of P1 and h2 one less: the units per position still add up.
        let mut engine = held_engine();
        shift_soft(&mut engine, "P1", "h1", 1);
        shift_soft(&mut engine, "P1", "h2", -1);
        assert_eq!(
            engine.check_consistency(),
            Err("hold h1 holds 3 at P1:L1 where it should hold 2".into())
        );
    }

    #[test]
    fn a_soft_reservation_of_no_hold_line_is_found() {
        let mut engine = held_engine();
        let h2 = engine.interner.get_in(crate::refs::HOLD_NS, "h2").unwrap();
        engine.holds.get_mut(&h2).unwrap().lines.clear();
        assert_eq!(
            engine.check_consistency(),
            Err("hold h2 holds 3 at P1:L1 where it should hold 0".into())
        );
    }

    #[test]
    fn a_held_counter_without_its_ledger_is_found() {
        let mut engine = held_engine();
        let k = key(&engine, "P2");
        engine.positions.get_mut(&k).unwrap().channels[0].held += 1;
        assert_eq!(
            engine.check_consistency(),
            Err("P2:L1: held drifted from the ledger".into())
        );
        let mut engine = held_engine();
        let pos = engine.positions.get_mut(&k).unwrap();
        pos.iqs.retain(|iq| iq.kind != IqKind::SoftReserve);
        pos.on_hand += 1;
        assert_eq!(
            engine.check_consistency(),
            Err("P2:L1: held drifted from the ledger".into())
        );
    }
}
