//! Timers and the lifetime of refs: hold expiry, forgetting finished holds, and releasing
//! their refs once no event can name them.
//!
//! Time only moves when the caller says so (`expire_due(now)`); the engine never reads a
//! clock. Expiry costs O(log n) per hold due and nothing per hold not due.

use super::Engine;
use crate::Millis;
use crate::event::Event;
use crate::hold::HoldState;
use crate::position::{IqKind, NO_SYM};
use crate::refs::{HOLD_NS, ORDER_NS, Sym};

impl Engine {
    /// The earliest moment `expire_due` has work: the next hold deadline or forget time.
    pub fn next_deadline(&self) -> Option<Millis> {
        let expiry = self.expiry.first().map(|(t, _)| *t);
        let forget = self.forget.first().map(|(t, _)| *t);
        match (expiry, forget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes the events emitted since the last call.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.release_scheduled();
        self.iq_changes.clear();
        self.events.drain(..)
    }

    /// Expires every active hold whose deadline is at or before `now`, and forgets finished
    /// holds past their retention. Returns how many holds expired. Costs O(log n) per hold
    /// due, nothing per hold not due.
    pub fn expire_due(&mut self, now: Millis) -> usize {
        let mut expired = 0;
        while let Some(&(t, hold)) = self.expiry.first() {
            if t > now {
                break;
            }
            self.expire_part(now, hold);
            expired += 1;
        }
        while let Some(&(t, hold)) = self.forget.first() {
            if t > now {
                break;
            }
            self.forget.pop_first();
            self.forget_hold(hold);
        }
        expired
    }

    /// Drops a finished hold from memory and releases its refs.
    pub(super) fn forget_hold(&mut self, hold: Sym) {
        let Some(part) = self.holds.remove(&hold) else {
            return;
        };
        assert!(
            part.state != HoldState::Active,
            "an active hold is never forgotten"
        );
        if let Some(order) = part.order {
            self.orders.remove(&order);
            // The order's SALE records may still be ACTIVE; they keep the quantity, not the ref.
            for line in &part.lines {
                if let Some(pos) = self.positions.get_mut(&(line.product, line.location)) {
                    for iq in pos
                        .iqs
                        .iter_mut()
                        .filter(|iq| iq.owner == order && iq.kind == IqKind::Sale)
                    {
                        iq.owner = NO_SYM;
                    }
                }
            }
            self.release_later.push((order, ORDER_NS));
        }
        self.release_later.push((hold, HOLD_NS));
    }

    /// Releases a hold's ref if no part refers to it (after an undo of a new hold).
    pub(super) fn release_if_unused(&mut self, hold: Sym) {
        self.release_later.push((hold, HOLD_NS));
    }

    /// Releases the refs of forgotten holds and orders, one drain after they were
    /// scheduled: events already handed out may still name them until then.
    ///
    /// A ref can be scheduled again while it waits (a new hold under the same ref was
    /// undone once more), so once a symbol is released every later request for it is
    /// dropped: that request was for the ref just released, and once the slot is reused
    /// it would release whatever ref took it (issue #12, defect 8).
    pub(super) fn release_scheduled(&mut self) {
        for (sym, ns) in std::mem::take(&mut self.release_ready) {
            let used = if ns == HOLD_NS {
                self.holds.contains_key(&sym)
            } else {
                self.orders.contains_key(&sym)
            };
            if !used && self.interner.is_live(sym) {
                if ns == HOLD_NS {
                    // A checkpoint may still owe the store this hold's removal.
                    self.untrack_released_hold(sym);
                }
                self.interner.release(sym);
                self.release_later.retain(|(s, _)| *s != sym);
            }
        }
        self.release_ready = std::mem::take(&mut self.release_later);
    }
}
