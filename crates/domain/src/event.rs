//! Events: one record for every state change, for analysts, metrics and the log; and
//! `IqChange`, the journal of IQs a change turned ACTIVE or INACTIVE (a position's history,
//! which the position itself does not keep), drained with the events.
//!
//! Events carry symbols, not strings, so emitting one allocates nothing on the hot
//! path; `Engine::describe` resolves them. The sequence number is per engine and never
//! goes backwards; the service pairs it with the shard id for a global order.

use super::Millis;
use super::position::{Iq, IqKind, NO_SYM};
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

/// One Inventory Quantity that became ACTIVE or INACTIVE: the ledger's history, which the
/// position itself forgets (only ACTIVE IQs stay in memory). A change carries no event of
/// its own: the service pairs it with the event of the same change that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IqChange {
    pub product: Sym,
    pub location: Sym,
    /// The IQ's id: its ref is `{product}:{location}:{id}`, as in `IqView`.
    pub id: u64,
    pub kind: IqKind,
    /// ACTIVE (added) or INACTIVE (taken out of the ledger).
    pub active: bool,
    pub quantity: i64,
    pub channel: Option<Sym>,
    /// The hold, order or adjustment it belongs to.
    pub owner: Option<Sym>,
    pub occurred_at: Millis,
    /// SOFT_RESERVE: when it expires.
    pub expires_at: Option<Millis>,
    /// The engine's next event sequence when it changed: the events numbered below it
    /// were emitted before it.
    pub after_seq: u64,
}

impl IqChange {
    pub(crate) fn of(key: (Sym, Sym), iq: &Iq, active: bool, after_seq: u64) -> IqChange {
        let sym = |s: Sym| (s != NO_SYM).then_some(s);
        IqChange {
            product: key.0,
            location: key.1,
            id: iq.id,
            kind: iq.kind,
            active,
            quantity: iq.quantity,
            channel: sym(iq.channel),
            owner: sym(iq.owner),
            occurred_at: iq.occurred_at,
            expires_at: (iq.kind == IqKind::SoftReserve).then_some(iq.expires_at),
            after_seq,
        }
    }
}

/// Notes `iqs` at `key` turning ACTIVE or INACTIVE into `log` (the engine's journal).
pub(crate) fn note_iqs(
    log: &mut Vec<IqChange>,
    after_seq: u64,
    key: (Sym, Sym),
    iqs: &[Iq],
    active: bool,
) {
    log.extend(
        iqs.iter()
            .map(|iq| IqChange::of(key, iq, active, after_seq)),
    );
}
