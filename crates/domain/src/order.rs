//! Orders as callers see them: a confirmed hold's lines with what is still reserved, what
//! shipped and what was cancelled, and the order's state.
//!
//! An order is stored as the confirmed hold parts it came from (one per shard), each
//! line keeping its quantity and what is still open; a cancelled part keeps what was
//! open when it was cancelled, which is what the cancel returned to sale. Everything here
//! is derived from those, so it needs no storage of its own.

use super::Millis;

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderState {
    /// Confirmed; nothing shipped yet, everything still reserved.
    Open,
    /// Some shipped, the rest still reserved.
    PartiallyFulfilled,
    /// Everything shipped.
    Fulfilled,
    /// Cancelled: what was still reserved went back on sale (lines may have shipped before).
    Cancelled,
}

impl OrderState {
    /// The state of an order of `quantity` units with `reserved` still reserved, or
    /// cancelled.
    pub fn of(quantity: i64, reserved: i64, cancelled: bool) -> OrderState {
        if cancelled {
            OrderState::Cancelled
        } else if reserved == 0 {
            OrderState::Fulfilled
        } else if reserved >= quantity {
            OrderState::Open
        } else {
            OrderState::PartiallyFulfilled
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Open => "OPEN",
            OrderState::PartiallyFulfilled => "PARTIALLY_FULFILLED",
            OrderState::Fulfilled => "FULFILLED",
            OrderState::Cancelled => "CANCELLED",
        }
    }
}

/// One line of an order: `quantity = reserved + fulfilled + cancelled`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLineView {
    pub product_ref: String,
    pub location_ref: String,
    /// What the hold reserved and the order took over.
    pub quantity: i64,
    /// Still reserved for the order.
    pub reserved: i64,
    /// Shipped (turned into sales).
    pub fulfilled: i64,
    /// Returned to sale by a cancel.
    pub cancelled: i64,
}

/// An order (or one shard's part of it), refs resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderView {
    pub order_ref: String,
    /// The hold the order came from.
    pub hold_ref: String,
    pub channel_ref: String,
    pub lines: Vec<OrderLineView>,
    /// When the hold was confirmed into the order.
    pub confirmed_at: Millis,
    /// When the hold was first placed.
    pub hold_created_at: Millis,
    pub cancelled: bool,
    /// Whether this part holds the hold's first line (it speaks for the order).
    pub primary: bool,
}

impl OrderView {
    /// The order's state, from its lines.
    pub fn state(&self) -> OrderState {
        let quantity = self.lines.iter().map(|l| l.quantity).sum();
        let reserved = self.lines.iter().map(|l| l.reserved).sum();
        OrderState::of(quantity, reserved, self.cancelled)
    }

    /// The whole order from its parts on several shards (`None`: no part). The primary
    /// part's refs and times stand for the order; lines are concatenated.
    pub fn merge(mut parts: Vec<OrderView>) -> Option<OrderView> {
        parts.sort_by_key(|p| !p.primary);
        let mut iter = parts.into_iter();
        let mut whole = iter.next()?;
        for part in iter {
            whole.lines.extend(part.lines);
            whole.cancelled |= part.cancelled;
            whole.hold_created_at = whole.hold_created_at.min(part.hold_created_at);
        }
        Some(whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_state_follows_its_quantities() {
        assert_eq!(OrderState::of(5, 5, false), OrderState::Open);
        assert_eq!(OrderState::of(5, 2, false), OrderState::PartiallyFulfilled);
        assert_eq!(OrderState::of(5, 0, false), OrderState::Fulfilled);
        assert_eq!(OrderState::of(5, 0, true), OrderState::Cancelled);
        assert_eq!(OrderState::of(5, 3, true), OrderState::Cancelled);
    }
}
