//! Commands: every mutating engine call as data.
//!
//! The shard actor turns each write request into a `Command`, applies it with
//! [`Engine::apply`] and, when it changed something, writes `(now, command)` to the
//! write-ahead log. Recovery replays the same commands through the same function, and
//! because the engine is pure and `now` is recorded, it reaches the same state.

use serde::{Deserialize, Serialize};

use super::Millis;
use super::channel::{CategoryConfig, ChannelConfig, ProductConfig};
use super::engine::{AdjustStatus, CountStatus, Engine, ReserveKind, ReservePart, ReserveUndo};
use super::error::Error;
use super::hold::{FulfilOp, HoldState, LineView, UpdateTag};
use super::network::{ChannelNetwork, LocationConfig};
use super::request::{Adjustment, OrderLine, ReserveRequest, StockCount};

/// A mutating engine call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    UpsertChannel(ChannelConfig),
    DeleteChannel(String),
    UpsertProducts(Vec<ProductConfig>),
    UpsertCategories(Vec<CategoryConfig>),
    SetStock(Vec<StockCount>),
    AdjustStock(Vec<Adjustment>),
    Rebalance {
        product_ref: Option<String>,
        location_ref: Option<String>,
    },
    /// Reserve the request lines at `mine` (the indices this shard owns).
    Reserve {
        request: ReserveRequest,
        mine: Vec<u32>,
    },
    UndoReserve(ReserveUndo),
    Confirm {
        hold_ref: String,
        order_ref: String,
    },
    Release {
        hold_ref: String,
    },
    Fulfil {
        order_ref: String,
        lines: Option<Vec<OrderLine>>,
        /// The whole fulfilment this shard's part belongs to.
        op: Option<FulfilOp>,
    },
    CancelOrder {
        order_ref: String,
    },
    /// Run the timers: expire due holds, forget finished ones.
    Expire,
    /// A confirm's reacquire: a reserve that may re-create a hold ended here (released or
    /// expired), which a plain `Reserve` refuses. Last, so older log records decode as
    /// before (postcard numbers variants in order).
    Reacquire {
        request: ReserveRequest,
        mine: Vec<u32>,
    },
    /// Creates or replaces locations (appended after `Reacquire`, for the same reason).
    UpsertLocations(Vec<LocationConfig>),
    DeleteLocation(String),
    /// Sets the network a channel sells from.
    SetNetwork(ChannelNetwork),
    /// A reserve (or, with `reacquire`, a reacquire) as one of the shards of a cart
    /// version (`Engine::reserve_tagged`): what a router sends, so that recovery can make a
    /// cart update cut by a crash whole or undo it whole.
    ReserveTagged {
        request: ReserveRequest,
        mine: Vec<u32>,
        reacquire: bool,
        tag: UpdateTag,
    },
    /// Recovery's verdict on a cart version cut by a crash (`Engine::resolve_update`):
    /// kept (`complete`) or put back to the previous version.
    ResolveUpdate {
        hold_ref: String,
        version: u64,
        complete: bool,
    },
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Counts(Vec<CountStatus>),
    Adjustments(Vec<AdjustStatus>),
    Rebalanced(usize),
    Reserved(ReservePart),
    Hold(Option<HoldState>),
    Lines(Option<Vec<LineView>>),
    Expired(usize),
}

impl Outcome {
    /// Whether the command changed the engine's state, so it must be logged.
    pub fn changed(&self) -> bool {
        match self {
            Outcome::Done => true,
            Outcome::Counts(c) => c.contains(&CountStatus::Applied),
            Outcome::Adjustments(a) => a.contains(&AdjustStatus::Applied),
            Outcome::Rebalanced(n) => *n > 0,
            Outcome::Reserved(part) => {
                matches!(part.kind, ReserveKind::Created | ReserveKind::Updated)
            }
            // Confirm and release change state when they answer for a part here, except
            // for idempotent repeats, which are harmless to log.
            Outcome::Hold(state) => state.is_some(),
            Outcome::Lines(lines) => lines.as_ref().is_some_and(|l| !l.is_empty()),
            Outcome::Expired(_) => true,
        }
    }
}

impl Engine {
    /// Applies one command at `now`. Commands that fail change nothing.
    ///
    /// Commands carry validated input: the boundary (the router) validates each request
    /// once, whole, before it becomes a command (`crate::request`), so a batch (counts,
    /// adjustments) never fails half-applied; here it is only `debug_assert!`ed.
    // One flat arm per command, a little over 70 lines on purpose: the dispatch reads as
    // the list of commands, and cutting it would only hide that list.
    pub fn apply(&mut self, now: Millis, command: &Command) -> Result<Outcome, Error> {
        Ok(match command {
            Command::UpsertChannel(c) => {
                self.upsert_channel(c.clone())?;
                Outcome::Done
            }
            Command::DeleteChannel(c) => {
                self.delete_channel(c)?;
                Outcome::Done
            }
            Command::UpsertProducts(p) => {
                self.upsert_products(p)?;
                Outcome::Done
            }
            Command::UpsertCategories(c) => {
                self.upsert_categories(c)?;
                Outcome::Done
            }
            Command::SetStock(counts) => {
                debug_assert_eq!(StockCount::validate_batch(counts, now), Ok(()));
                let mut out = Vec::with_capacity(counts.len());
                for c in counts {
                    out.push(self.set_stock(now, c)?);
                }
                Outcome::Counts(out)
            }
            Command::AdjustStock(adjustments) => {
                debug_assert_eq!(Adjustment::validate_batch(adjustments, now), Ok(()));
                let mut out = Vec::with_capacity(adjustments.len());
                for a in adjustments {
                    out.push(self.adjust_stock(now, a)?);
                }
                Outcome::Adjustments(out)
            }
            Command::Rebalance {
                product_ref,
                location_ref,
            } => Outcome::Rebalanced(self.rebalance(
                now,
                product_ref.as_deref(),
                location_ref.as_deref(),
            )),
            Command::Reserve { request, mine } => {
                Outcome::Reserved(self.reserve(now, request, mine)?)
            }
            Command::UndoReserve(undo) => {
                self.undo_reserve(now, undo);
                Outcome::Done
            }
            Command::Confirm {
                hold_ref,
                order_ref,
            } => Outcome::Hold(self.confirm(now, hold_ref, order_ref)?),
            Command::Release { hold_ref } => Outcome::Hold(self.release(now, hold_ref)?),
            Command::Fulfil {
                order_ref,
                lines,
                op,
            } => {
                let shipped = self.fulfil(now, order_ref, lines.as_deref(), false)?;
                if let (Some(_), Some(op)) = (&shipped, op) {
                    self.note_fulfil(order_ref, op);
                }
                Outcome::Lines(shipped)
            }
            Command::CancelOrder { order_ref } => {
                Outcome::Lines(self.cancel_order(now, order_ref)?)
            }
            Command::Expire => Outcome::Expired(self.expire_due(now)),
            Command::Reacquire { request, mine } => {
                Outcome::Reserved(self.reacquire(now, request, mine)?)
            }
            Command::UpsertLocations(l) => {
                self.upsert_locations(l)?;
                Outcome::Done
            }
            Command::DeleteLocation(l) => {
                self.delete_location(l)?;
                Outcome::Done
            }
            Command::SetNetwork(n) => {
                self.set_network(n.clone())?;
                Outcome::Done
            }
            Command::ReserveTagged {
                request,
                mine,
                reacquire,
                tag,
            } => Outcome::Reserved(self.reserve_tagged(now, request, mine, *reacquire, tag)?),
            Command::ResolveUpdate {
                hold_ref,
                version,
                complete,
            } => match self.resolve_update(now, hold_ref, *version, *complete) {
                true => Outcome::Done,
                false => Outcome::Hold(None),
            },
        })
    }
}
