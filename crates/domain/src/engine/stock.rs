//! Stock updates: warehouse counts, relative adjustments and rebalancing (domain.md, "Stock updates").
//!
//! These change a position's physical stock; each may move the allocation base (automatic
//! rebalancing) and every channel's ATS, and says so with events.

use super::Engine;
use crate::Millis;
use crate::channel::RebalanceMode;
use crate::error::Error;
use crate::event::{Event, EventKind, note_iqs};
use crate::position::{IqKind, NEVER_COUNTED, NO_SYM};
use crate::refs::Sym;
use crate::request::{Adjustment, AdjustmentKind, StockCount};

/// Whether a count changed the position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountStatus {
    Applied,
    /// Older than the position's current count: nothing changed.
    Stale,
}

/// Whether an adjustment changed the position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdjustStatus {
    Applied,
    /// The adjustment ref was applied before: nothing changed.
    Duplicate,
}

impl Engine {
    fn auto_rebalance(&self, location: Sym) -> bool {
        !self.channels.iter().any(|c| {
            c.config.rebalance_mode == RebalanceMode::Manual && !c.excluded.contains(&location)
        })
    }

    fn rebalance_at(&mut self, now: Millis, key: (Sym, Sym)) {
        let Some(pos) = self.positions.get_mut(&key) else {
            return;
        };
        pos.rebalance();
        let base = pos.allocation_base;
        let mut e = Event::new(EventKind::Rebalanced, now);
        e.product = Some(key.0);
        e.location = Some(key.1);
        e.quantity = base;
        self.emit(e);
    }

    fn after_stock_change(&mut self, now: Millis, key: (Sym, Sym)) {
        if self.auto_rebalance(key.1) {
            self.rebalance_at(now, key);
        }
        let on_hand = self.positions[&key].on_hand;
        if on_hand < 0 {
            let mut e = Event::new(EventKind::NegativeOnHand, now);
            e.product = Some(key.0);
            e.location = Some(key.1);
            e.available = on_hand;
            self.emit(e);
        }
    }

    /// Applies a warehouse count (see domain.md, "Count").
    pub fn set_stock(&mut self, now: Millis, count: &StockCount) -> Result<CountStatus, Error> {
        debug_assert_eq!(count.validate("count", now), Ok(()), "unvalidated count");
        let product = self.interner.intern(&count.product_ref);
        let location = self.interner.intern(&count.location_ref);
        let key = (product, location);
        let counted = self
            .positions
            .get(&key)
            .map_or(NEVER_COUNTED, |p| p.counted_as_of);
        if count.as_of < counted {
            return Ok(CountStatus::Stale);
        }
        let mut iq = self.new_iq(IqKind::LastOnHand, NO_SYM, NO_SYM, count.quantity, now);
        iq.occurred_at = count.as_of;
        let as_of = count.as_of;
        self.watching(now, product, location, |engine| {
            let pos = engine.positions.entry(key).or_default();
            let taken = pos.take_where(|iq| {
                iq.kind == IqKind::LastOnHand
                    || (iq.kind.superseded_by_count() && iq.occurred_at <= as_of)
            });
            let seq = engine.next_event_seq;
            note_iqs(&mut engine.iq_changes, seq, key, &taken, false);
            note_iqs(
                &mut engine.iq_changes,
                seq,
                key,
                std::slice::from_ref(&iq),
                true,
            );
            pos.push(iq);
            pos.counted_as_of = as_of;
            engine.stock_changed(EventKind::StockCounted, now, key, count.quantity);
        });
        Ok(CountStatus::Applied)
    }

    /// Applies a relative change, once per adjustment ref.
    pub fn adjust_stock(&mut self, now: Millis, adj: &Adjustment) -> Result<AdjustStatus, Error> {
        debug_assert_eq!(
            adj.validate("adjustment", now),
            Ok(()),
            "unvalidated adjustment"
        );
        let owner = self.interner.intern(&adj.adjustment_ref);
        if !self.adjustments.insert(owner) {
            return Ok(AdjustStatus::Duplicate);
        }
        self.checkpoint.adjustments.push(owner);
        let product = self.interner.intern(&adj.product_ref);
        let location = self.interner.intern(&adj.location_ref);
        let key = (product, location);
        let kind = match adj.kind {
            AdjustmentKind::Delta => IqKind::Delta,
            AdjustmentKind::Correction => IqKind::Correction,
            AdjustmentKind::Returned => IqKind::Returned,
        };
        let mut iq = self.new_iq(kind, NO_SYM, owner, adj.quantity, now);
        iq.occurred_at = adj.occurred_at.unwrap_or(now);
        self.watching(now, product, location, |engine| {
            let seq = engine.next_event_seq;
            note_iqs(
                &mut engine.iq_changes,
                seq,
                key,
                std::slice::from_ref(&iq),
                true,
            );
            let pos = engine.positions.entry(key).or_default();
            pos.push(iq);
            engine.stock_changed(EventKind::StockAdjusted, now, key, adj.quantity);
        });
        Ok(AdjustStatus::Applied)
    }

    /// Emits a count's or an adjustment's event at `key` (with the position's new
    /// on_hand) and runs what follows every stock change.
    fn stock_changed(&mut self, kind: EventKind, now: Millis, key: (Sym, Sym), quantity: i64) {
        let mut e = Event::new(kind, now);
        e.product = Some(key.0);
        e.location = Some(key.1);
        e.quantity = quantity;
        e.available = self.positions.get(&key).map_or(0, |p| p.on_hand);
        self.emit(e);
        self.after_stock_change(now, key);
    }

    /// Re-applies the allocation split (`P0 = physical`, `sold = 0`) at every position
    /// matching the filters (`None` matches everything). Returns how many.
    pub fn rebalance(
        &mut self,
        now: Millis,
        product_ref: Option<&str>,
        location_ref: Option<&str>,
    ) -> usize {
        let product = match product_ref {
            Some(p) => match self.interner.get(p) {
                Some(s) => Some(s),
                None => return 0,
            },
            None => None,
        };
        let location = match location_ref {
            Some(l) => match self.interner.get(l) {
                Some(s) => Some(s),
                None => return 0,
            },
            None => None,
        };
        let mut keys: Vec<(Sym, Sym)> = self
            .positions
            .keys()
            .filter(|(p, l)| product.is_none_or(|x| x == *p) && location.is_none_or(|x| x == *l))
            .copied()
            .collect();
        keys.sort_unstable();
        for key in &keys {
            self.watching(now, key.0, key.1, |engine| engine.rebalance_at(now, *key));
        }
        keys.len()
    }
}
