//! Fulfil and cancel: an order ships (RESERVED becomes SALE) or lets its stock go
//! (domain.md, "Fulfil", "Cancel order").
//!
//! A fulfilment is planned whole before anything changes, so a caller can check every
//! shard's part (`dry_run`) before any shard ships.

use super::Engine;
use crate::Millis;
use crate::error::Error;
use crate::event::{Event, EventKind, note_iqs};
use crate::hold::{FulfilOp, LineView};
use crate::position::IqKind;
use crate::refs::{ORDER_NS, Sym, check_ref};
use crate::request::OrderLine;

/// Which part line each request line ships from, and how much.
type Plan = Vec<(usize, i64)>;

impl Engine {
    fn order_part(&self, order_ref: &str) -> Option<Sym> {
        let order = self.interner.get_in(ORDER_NS, order_ref)?;
        self.orders.get(&order).copied()
    }

    /// Ships an order's lines here (all of them when `lines` is `None`): RESERVED turns into
    /// SALE. With `dry_run` it only checks, so a caller can check every shard before any
    /// changes. `Ok(None)`: the order has no part here.
    pub fn fulfil(
        &mut self,
        now: Millis,
        order_ref: &str,
        lines: Option<&[OrderLine]>,
        dry_run: bool,
    ) -> Result<Option<Vec<LineView>>, Error> {
        debug_assert!(check_ref(order_ref).is_ok());
        let Some(hold) = self.order_part(order_ref) else {
            if let Some(first) = lines.and_then(|l| l.first()) {
                return Err(Error::FulfilExceedsReserved {
                    field: format!("lines[{}].quantity", first.index),
                    order_ref: order_ref.to_string(),
                    requested: first.quantity,
                    open: 0,
                });
            }
            return Ok(None);
        };
        let plan = self.plan_fulfil(hold, order_ref, lines)?;
        let part = &self.holds[&hold];
        let shipped: Vec<LineView> = plan
            .iter()
            .map(|(i, q)| LineView {
                product_ref: self.interner.resolve(part.lines[*i].product).to_string(),
                location_ref: self.interner.resolve(part.lines[*i].location).to_string(),
                quantity: *q,
            })
            .collect();
        if dry_run {
            return Ok(Some(shipped));
        }
        for (i, q) in plan {
            self.ship_line(now, hold, i, q);
        }
        if self.holds[&hold].closed() {
            self.schedule_forget(now, hold);
        }
        Ok(Some(shipped))
    }

    /// Plans a fulfilment against what each line still has open. A line repeated in the
    /// request ships from the same open quantity (the boundary rejects repeats; the plan
    /// still never ships more than is open).
    fn plan_fulfil(
        &self,
        hold: Sym,
        order_ref: &str,
        lines: Option<&[OrderLine]>,
    ) -> Result<Plan, Error> {
        let part = &self.holds[&hold];
        let Some(lines) = lines else {
            return Ok(part
                .lines
                .iter()
                .enumerate()
                .filter(|(_, line)| part.reserved(line) > 0)
                .map(|(i, line)| (i, line.open))
                .collect());
        };
        let mut plan = Plan::new();
        for req in lines {
            let field = format!("lines[{}].quantity", req.index);
            debug_assert!(req.quantity >= 1, "{field} must be at least 1");
            let found = part.lines.iter().position(|l| {
                self.interner.resolve(l.product) == req.product_ref
                    && self.interner.resolve(l.location) == req.location_ref
            });
            let open = found.map_or(0, |i| part.reserved(&part.lines[i]));
            let already: i64 = plan
                .iter()
                .filter(|(i, _)| Some(*i) == found)
                .map(|(_, q)| q)
                .sum();
            if req.quantity + already > open {
                return Err(Error::FulfilExceedsReserved {
                    field,
                    order_ref: order_ref.to_string(),
                    requested: req.quantity,
                    open: open - already,
                });
            }
            plan.push((found.expect("open > 0 means found"), req.quantity));
        }
        Ok(plan)
    }

    /// Ships `q` units of part line `i`: its RESERVED shrinks by `q`, an equal SALE appears.
    fn ship_line(&mut self, now: Millis, hold: Sym, i: usize, q: i64) {
        let part = &self.holds[&hold];
        let order = part.order.expect("an order part has its order");
        let channel = part.channel;
        let line = part.lines[i].clone();
        let key = (line.product, line.location);
        let left = line.open - q;
        // One crossing check around the whole change: ATS does not move, so no event.
        self.watching(now, key.0, key.1, |engine| {
            let open_before = engine.take_reserved_unwatched(&line, order);
            assert_eq!(
                open_before, line.open,
                "RESERVED IQs match the open quantity"
            );
            let mut sale = engine.new_iq(IqKind::Sale, channel, order, -q, now);
            sale.occurred_at = now;
            let rest =
                (left > 0).then(|| engine.new_iq(IqKind::Reserved, channel, order, -left, now));
            let seq = engine.next_event_seq;
            note_iqs(
                &mut engine.iq_changes,
                seq,
                key,
                std::slice::from_ref(&sale),
                true,
            );
            note_iqs(&mut engine.iq_changes, seq, key, rest.as_slice(), true);
            let pos = engine
                .positions
                .get_mut(&key)
                .expect("order line has a position");
            pos.push(sale);
            if let Some(rest) = rest {
                pos.push(rest);
            }
            pos.add_sold(channel, q);
        });
        self.holds.get_mut(&hold).expect("exists").lines[i].open = left;
        let mut e = Event::new(EventKind::OrderFulfilled, now);
        e.channel = Some(channel);
        e.hold = Some(hold);
        e.order = Some(order);
        e.product = Some(key.0);
        e.location = Some(key.1);
        e.quantity = q;
        self.emit(e);
    }

    /// Records the whole fulfilment a `fulfil` on this engine was part of.
    pub fn note_fulfil(&mut self, order_ref: &str, op: &FulfilOp) {
        if let Some(hold) = self.order_part(order_ref)
            && let Some(part) = self.holds.get_mut(&hold)
        {
            part.last_fulfil = Some(op.clone());
        }
    }

    /// Cancels what an order still has reserved here: the stock is sellable again.
    /// Idempotent. `Ok(None)`: the order has no part here. The part's lines keep their
    /// `open` quantities, which the cancel returned to sale (GetOrder's `cancelled`).
    pub fn cancel_order(
        &mut self,
        now: Millis,
        order_ref: &str,
    ) -> Result<Option<Vec<LineView>>, Error> {
        debug_assert!(check_ref(order_ref).is_ok());
        let Some(hold) = self.order_part(order_ref) else {
            return Ok(None);
        };
        let part = self.holds[&hold].clone();
        let order = part.order.expect("an order part has its order");
        let mut cancelled = Vec::new();
        for line in &part.lines {
            if part.reserved(line) <= 0 {
                continue;
            }
            let taken = self.take_reserved(now, line, order);
            assert_eq!(taken, line.open, "RESERVED IQs match the open quantity");
            cancelled.push(LineView {
                product_ref: self.interner.resolve(line.product).to_string(),
                location_ref: self.interner.resolve(line.location).to_string(),
                quantity: line.open,
            });
            let mut e = Event::new(EventKind::OrderCancelled, now);
            e.channel = Some(part.channel);
            e.hold = Some(hold);
            e.order = Some(order);
            e.product = Some(line.product);
            e.location = Some(line.location);
            e.quantity = line.open;
            self.emit(e);
        }
        self.holds.get_mut(&hold).expect("exists").cancelled = true;
        self.schedule_forget(now, hold);
        Ok(Some(cancelled))
    }
}
