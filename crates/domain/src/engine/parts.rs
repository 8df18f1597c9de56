//! Hold parts in and out of the ledger: the bookkeeping every hold operation shares.
//!
//! A part's state decides what it has in the ledger (ACTIVE: one SOFT_RESERVE per line;
//! CONFIRMED: the order's RESERVED) and in the timers; these helpers keep the two in step.

use super::Engine;
use crate::Millis;
use crate::event::{Event, EventKind, note_iqs};
use crate::hold::{HoldPart, HoldState, PartLine, PartRef};
use crate::position::IqKind;
use crate::refs::Sym;

impl Engine {
    /// Every hold part on this engine, by ref (any state, until it is forgotten): a
    /// router rebuilds from it which shards hold a part of each hold and order.
    pub fn part_refs(&self) -> impl Iterator<Item = PartRef<'_>> {
        self.holds
            .values()
            .filter(|p| !p.tombstone)
            .map(|part| PartRef {
                hold_ref: self.interner.resolve(part.hold),
                order_ref: part.order.map(|o| self.interner.resolve(o)),
                expires_at: part.expires_at,
            })
    }

    /// Inserts a part: its SOFT_RESERVE IQs if active, its timers, its counters.
    pub(crate) fn insert_part(&mut self, now: Millis, part: HoldPart) {
        let hold = part.hold;
        if part.state == HoldState::Active {
            for line in &part.lines {
                let mut iq =
                    self.new_iq(IqKind::SoftReserve, part.channel, hold, -line.quantity, now);
                iq.expires_at = part.expires_at;
                let key = (line.product, line.location);
                self.watching(now, key.0, key.1, |engine| {
                    let seq = engine.next_event_seq;
                    note_iqs(
                        &mut engine.iq_changes,
                        seq,
                        key,
                        std::slice::from_ref(&iq),
                        true,
                    );
                    engine.positions.entry(key).or_default().push(iq);
                });
            }
            self.expiry.insert((part.expires_at, hold));
            if part.primary {
                *self.active_holds.entry(part.channel).or_default() += 1;
            }
        } else if part.state == HoldState::Confirmed
            && let Some(order) = part.order
        {
            self.orders.insert(order, hold);
            for line in &part.lines {
                if part.reserved(line) > 0 {
                    let iq = self.new_iq(IqKind::Reserved, part.channel, order, -line.open, now);
                    let key = (line.product, line.location);
                    let seq = self.next_event_seq;
                    note_iqs(
                        &mut self.iq_changes,
                        seq,
                        key,
                        std::slice::from_ref(&iq),
                        true,
                    );
                    self.positions.entry(key).or_default().push(iq);
                }
            }
        }
        if let Some(t) = part.forget_at {
            self.forget.insert((t, hold));
        }
        self.holds.insert(hold, part);
    }

    /// Removes a part and everything it holds (its SOFT_RESERVE or RESERVED IQs, timers).
    pub(super) fn remove_part(&mut self, now: Millis, hold: Sym) -> Option<HoldPart> {
        let part = self.holds.remove(&hold)?;
        self.expiry.remove(&(part.expires_at, hold));
        if let Some(t) = part.forget_at {
            self.forget.remove(&(t, hold));
        }
        match part.state {
            HoldState::Active => {
                self.drop_soft_reserves(now, &part);
                if part.primary {
                    self.count_active(part.channel, -1);
                }
            }
            HoldState::Confirmed => {
                if let Some(order) = part.order {
                    self.orders.remove(&order);
                    for line in &part.lines {
                        self.take_reserved(now, line, order);
                    }
                }
            }
            HoldState::Released | HoldState::Expired => {}
        }
        Some(part)
    }

    pub(super) fn count_active(&mut self, channel: Sym, delta: i64) {
        let n = self.active_holds.entry(channel).or_default();
        *n += delta;
        assert!(*n >= 0, "active hold count went negative");
    }

    pub(super) fn drop_soft_reserves(&mut self, now: Millis, part: &HoldPart) {
        for line in &part.lines {
            let key = (line.product, line.location);
            self.watching(now, key.0, key.1, |engine| {
                if let Some(pos) = engine.positions.get_mut(&key) {
                    let taken = pos
                        .take_where(|iq| iq.kind == IqKind::SoftReserve && iq.owner == part.hold);
                    assert_eq!(taken.len(), 1, "a hold line has exactly one SOFT_RESERVE");
                    let seq = engine.next_event_seq;
                    note_iqs(&mut engine.iq_changes, seq, key, &taken, false);
                }
            });
        }
    }

    pub(super) fn take_reserved(&mut self, now: Millis, line: &PartLine, order: Sym) -> i64 {
        let key = (line.product, line.location);
        self.watching(now, key.0, key.1, |engine| {
            engine.take_reserved_unwatched(line, order)
        })
    }

    pub(super) fn take_reserved_unwatched(&mut self, line: &PartLine, order: Sym) -> i64 {
        let key = (line.product, line.location);
        let Some(pos) = self.positions.get_mut(&key) else {
            return 0;
        };
        let taken = pos.take_where(|iq| iq.kind == IqKind::Reserved && iq.owner == order);
        note_iqs(
            &mut self.iq_changes,
            self.next_event_seq,
            key,
            &taken,
            false,
        );
        taken.iter().map(|iq| -iq.quantity).sum()
    }

    /// Turns an active part EXPIRED: its stock is sellable again.
    pub(super) fn expire_part(&mut self, now: Millis, hold: Sym) {
        let Some(part) = self.holds.get(&hold) else {
            return;
        };
        if part.state != HoldState::Active {
            return;
        }
        self.finish_active(now, hold, HoldState::Expired, EventKind::HoldExpired);
    }

    /// Ends an active part (released or expired): drops its SOFT_RESERVEs, keeps the
    /// record for the retention time.
    pub(super) fn finish_active(
        &mut self,
        now: Millis,
        hold: Sym,
        state: HoldState,
        kind: EventKind,
    ) {
        let mut part = self.holds.remove(&hold).expect("finish of a missing hold");
        debug_assert_eq!(part.state, HoldState::Active);
        self.expiry.remove(&(part.expires_at, hold));
        self.drop_soft_reserves(now, &part);
        if part.primary {
            self.count_active(part.channel, -1);
        }
        part.state = state;
        part.updated_at = now;
        if state == HoldState::Released {
            // A release comes after the last update answered on every shard: that update
            // is complete. (An expiry runs on one shard's timer, so it keeps the record.)
            part.update = None;
        }
        let forget_at = now + self.settings.hold_retention_ms;
        part.forget_at = Some(forget_at);
        self.forget.insert((forget_at, hold));
        let mut e = Event::new(kind, now);
        e.channel = Some(part.channel);
        e.hold = Some(hold);
        e.quantity = part.lines.iter().map(|l| l.quantity).sum();
        e.primary = part.primary;
        self.holds.insert(hold, part);
        self.emit(e);
    }

    pub(super) fn schedule_forget(&mut self, now: Millis, hold: Sym) {
        let forget_at = now + self.settings.hold_retention_ms;
        let part = self.holds.get_mut(&hold).expect("scheduled hold exists");
        if let Some(t) = part.forget_at.replace(forget_at) {
            self.forget.remove(&(t, hold));
        }
        self.forget.insert((forget_at, hold));
    }
}
