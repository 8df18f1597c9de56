//! Confirm and release: a hold becomes an order, or lets its stock go (domain.md, "Confirm",
//! "Release").
//!
//! Confirm turns each SOFT_RESERVE into an equal RESERVED for the order, so no ATS moves;
//! release drops the SOFT_RESERVEs. Both are idempotent, and both treat a hold past its
//! deadline as expired even before its timer runs.

use super::Engine;
use crate::Millis;
use crate::error::Error;
use crate::event::{Event, EventKind, note_iqs};
use crate::hold::HoldState;
use crate::position::IqKind;
use crate::refs::{HOLD_NS, ORDER_NS, Sym, check_ref};

/// Whether a confirm has work to do.
enum Confirmable {
    /// Already confirmed under this order: nothing to do.
    Done,
    /// An active part: confirm it.
    Yes,
}

impl Engine {
    /// Confirms this engine's part of a hold into an order (see domain.md, "Confirm").
    /// `Ok(None)`: no part here. With no part here, an order ref that already confirms
    /// another hold here is still refused (`OrderConflict`): a router asks the shards of
    /// the order that hold no part of the hold this way, so that an order ref confirms
    /// one hold whichever shards the holds live on.
    pub fn confirm(
        &mut self,
        now: Millis,
        hold_ref: &str,
        order_ref: &str,
    ) -> Result<Option<HoldState>, Error> {
        debug_assert!(check_ref(hold_ref).is_ok() && check_ref(order_ref).is_ok());
        let hold = self.interner.get_in(HOLD_NS, hold_ref);
        let Some(hold) = hold.filter(|h| self.holds.get(h).is_some_and(|p| !p.tombstone)) else {
            return match self.order_hold(order_ref) {
                Some(other) if other != hold_ref => Err(Error::OrderConflict {
                    order_ref: order_ref.to_string(),
                    hold_ref: other.to_string(),
                }),
                _ => Ok(None),
            };
        };
        if let Confirmable::Done = self.confirmable(now, hold, hold_ref, order_ref)? {
            return Ok(Some(HoldState::Confirmed));
        }
        let order = self.interner.intern_in(ORDER_NS, order_ref);
        self.confirm_part(now, hold, order);
        Ok(Some(HoldState::Confirmed))
    }

    /// The hold an order ref confirms on this engine, if any.
    fn order_hold(&self, order_ref: &str) -> Option<&str> {
        let order = self.interner.get_in(ORDER_NS, order_ref)?;
        self.orders.get(&order).map(|h| self.interner.resolve(*h))
    }

    /// Checks that the part can be confirmed as `order_ref`; a due active part expires here.
    fn confirmable(
        &mut self,
        now: Millis,
        hold: Sym,
        hold_ref: &str,
        order_ref: &str,
    ) -> Result<Confirmable, Error> {
        let part = &self.holds[&hold];
        match part.state {
            HoldState::Confirmed => {
                let current = self
                    .interner
                    .resolve(part.order.expect("confirmed has an order"));
                if current == order_ref {
                    return Ok(Confirmable::Done);
                }
                return Err(Error::HoldConfirmed {
                    hold_ref: hold_ref.to_string(),
                    order_ref: current.to_string(),
                });
            }
            HoldState::Released => return Err(Error::HoldReleased(hold_ref.to_string())),
            HoldState::Expired => return Err(Error::HoldExpired(hold_ref.to_string())),
            HoldState::Active if part.expires_at <= now => {
                self.expire_part(now, hold);
                return Err(Error::HoldExpired(hold_ref.to_string()));
            }
            HoldState::Active => {}
        }
        if let Some(other) = self
            .interner
            .get_in(ORDER_NS, order_ref)
            .and_then(|o| self.orders.get(&o))
            && *other != hold
        {
            return Err(Error::OrderConflict {
                order_ref: order_ref.to_string(),
                hold_ref: self.interner.resolve(*other).to_string(),
            });
        }
        Ok(Confirmable::Yes)
    }

    /// Turns an active part into the order's: each SOFT_RESERVE becomes an equal RESERVED.
    fn confirm_part(&mut self, now: Millis, hold: Sym, order: Sym) {
        let mut part = self.holds.remove(&hold).expect("checked by confirmable");
        self.expiry.remove(&(part.expires_at, hold));
        if part.primary {
            self.count_active(part.channel, -1);
        }
        for line in &mut part.lines {
            let key = (line.product, line.location);
            let reserved = self.new_iq(IqKind::Reserved, part.channel, order, -line.quantity, now);
            let pos = self
                .positions
                .get_mut(&key)
                .expect("a held line has a position");
            let taken = pos.take_where(|iq| iq.kind == IqKind::SoftReserve && iq.owner == hold);
            assert_eq!(taken.len(), 1, "a hold line has exactly one SOFT_RESERVE");
            let seq = self.next_event_seq;
            note_iqs(&mut self.iq_changes, seq, key, &taken, false);
            note_iqs(
                &mut self.iq_changes,
                seq,
                key,
                std::slice::from_ref(&reserved),
                true,
            );
            pos.push(reserved);
            line.open = line.quantity;
        }
        part.state = HoldState::Confirmed;
        part.order = Some(order);
        // The router confirms only after the last update answered on every shard: it is
        // complete, and its record of the previous version is no longer needed.
        part.update = None;
        part.updated_at = now;
        self.orders.insert(order, hold);
        let mut e = Event::new(EventKind::HoldConfirmed, now);
        e.channel = Some(part.channel);
        e.hold = Some(hold);
        e.order = Some(order);
        e.quantity = part.lines.iter().map(|l| l.quantity).sum();
        e.primary = part.primary;
        let closed = part.lines.iter().all(|l| l.open == 0);
        self.holds.insert(hold, part);
        if closed {
            self.schedule_forget(now, hold);
        }
        self.emit(e);
    }

    /// Releases this engine's part of a hold. Idempotent. `Ok(None)`: no part here.
    pub fn release(&mut self, now: Millis, hold_ref: &str) -> Result<Option<HoldState>, Error> {
        debug_assert!(check_ref(hold_ref).is_ok());
        let Some(hold) = self.interner.get_in(HOLD_NS, hold_ref) else {
            return Ok(None);
        };
        let Some(part) = self.holds.get(&hold).filter(|p| !p.tombstone) else {
            return Ok(None);
        };
        match part.state {
            HoldState::Confirmed => Err(Error::HoldConfirmed {
                hold_ref: hold_ref.to_string(),
                order_ref: self
                    .interner
                    .resolve(part.order.expect("confirmed has an order"))
                    .to_string(),
            }),
            HoldState::Released | HoldState::Expired => Ok(Some(part.state)),
            HoldState::Active if part.expires_at <= now => {
                self.expire_part(now, hold);
                Ok(Some(HoldState::Expired))
            }
            HoldState::Active => {
                self.finish_active(now, hold, HoldState::Released, EventKind::HoldReleased);
                Ok(Some(HoldState::Released))
            }
        }
    }
}
