//! Events: one record for every state change, for analysts, metrics and the log.
//!
//! Events carry symbols, not strings, so emitting one allocates nothing on the hot
//! path; `Engine::describe` resolves them. The sequence number is per engine and never
//! goes backwards; the service pairs it with the shard id for a global order.

use super::Millis;
use super::refs::Sym;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    HoldCreated,
    HoldUpdated,
    HoldConfirmed,
    HoldReleased,
    HoldExpired,
    ReserveRejected,
    OrderFulfilled,
    OrderCancelled,
    StockCounted,
    StockAdjusted,
    Rebalanced,
    OutOfStock,
    BackInStock,
    NegativeOnHand,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::HoldCreated => "HOLD_CREATED",
            EventKind::HoldUpdated => "HOLD_UPDATED",
            EventKind::HoldConfirmed => "HOLD_CONFIRMED",
            EventKind::HoldReleased => "HOLD_RELEASED",
            EventKind::HoldExpired => "HOLD_EXPIRED",
            EventKind::ReserveRejected => "RESERVE_REJECTED",
            EventKind::OrderFulfilled => "ORDER_FULFILLED",
            EventKind::OrderCancelled => "ORDER_CANCELLED",
            EventKind::StockCounted => "STOCK_COUNTED",
            EventKind::StockAdjusted => "STOCK_ADJUSTED",
            EventKind::Rebalanced => "REBALANCED",
            EventKind::OutOfStock => "OUT_OF_STOCK",
            EventKind::BackInStock => "BACK_IN_STOCK",
            EventKind::NegativeOnHand => "NEGATIVE_ON_HAND",
        }
    }
}

/// One state change. Fields that do not apply to a kind hold `None` or 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub at: Millis,
    pub kind: EventKind,
    pub channel: Option<Sym>,
    pub hold: Option<Sym>,
    pub order: Option<Sym>,
    pub product: Option<Sym>,
    pub location: Option<Sym>,
    /// The quantity the change moved (held, confirmed, counted, adjusted…).
    pub quantity: i64,
    /// For RESERVE_REJECTED the ATS there was; for stock events the new on_hand.
    pub available: i64,
    /// Whether this event speaks for the whole hold (its first line's shard).
    pub primary: bool,
}

impl Event {
    pub(crate) fn new(kind: EventKind, at: Millis) -> Self {
        Event {
            seq: 0,
            at,
            kind,
            channel: None,
            hold: None,
            order: None,
            product: None,
            location: None,
            quantity: 0,
            available: 0,
            primary: true,
        }
    }
}
