//! The inventory engine: positions, ledger, channels and holds, as `shared/domain.md` says.
//!
//! Pure by design: no I/O, no clock (time is the `now` argument), nothing of tonic, tokio
//! or sled. The service runs one [`Engine`] per shard actor; tests and benchmarks drive it
//! directly.
//!
//! # Layout
//!
//! - `limits`: every bound and default of the domain, with its cost, checked at compile time.
//! - `refs`: ref validation, the interner (`Interner`, `Sym`) and the stable `fnv1a` hash.
//! - `channel`: channel rules, overrides and the ATS formula in basis points.
//! - `network`: locations (ships HD, serves CC, priority) and the networks channels sell from.
//! - `fulfilment`: fulfilment plans for a cart over a network, searched within bounds and ranked.
//! - `position`: Inventory Positions, their ACTIVE ledger and counters.
//! - `hold`: hold parts, their views, and fulfilments (`FulfilOp`).
//! - `request`: request types and their validation, run once at the boundary.
//! - `engine`: the operations, one file each: `config` (settings, channels, catalogue),
//!   `reads`, `stock` (counts, adjustments, rebalancing), `reserve`, `confirm` (and
//!   release), `fulfil` (and cancel), `expire` (timers and refs' lifetime), `parts`
//!   (hold parts in and out of the ledger), `locations` (locations and networks),
//!   `listing` (a page of ListHolds from the hold indexes, an engine's part of an order).
//! - `order`: orders as callers see them (`OrderView`, `OrderState`): reserved, fulfilled
//!   and cancelled per line, derived from the confirmed hold parts.
//! - `query`: ListHolds' filter, order (`HoldKey`), page tokens and the merge of shards' pages.
//! - `outcome`: the outcomes of operations that span shards, and the merging of parts.
//! - `event`: what every change emits, and the IQs it turned ACTIVE or INACTIVE (`IqChange`).
//! - `snapshot`: the engine's state in a form that can be stored, merged and split.
//! - `checkpoint`: incremental checkpoints, the entries changed since the last one
//!   (`CheckpointDelta`), and the snapshot rebuilt from a store's entries.
//! - `command`: the mutating operations as data, for the write-ahead log and replay.
//! - `error`: the operating errors.

pub mod channel;
pub mod checkpoint;
pub mod command;
pub mod engine;
pub mod error;
pub mod event;
pub mod fulfilment;
pub mod hold;
pub mod limits;
pub mod network;
pub mod order;
pub mod outcome;
pub mod position;
pub mod query;
pub mod refs;
pub mod request;
pub mod snapshot;

/// Milliseconds since the Unix epoch: the engine's only notion of time.
pub type Millis = i64;

pub use channel::{CategoryConfig, ChannelConfig, ChannelRule, ProductConfig, RebalanceMode};
pub use checkpoint::{CheckpointDelta, ConfigSnap, Counters, StepDelta};
pub use command::{Command, Outcome};
pub use engine::{
    AdjustStatus, ChannelPositionView, CountStatus, Engine, IqView, LineResult, PositionView,
    ReserveKind, ReservePart, ReserveUndo, Settings,
};
pub use error::Error;
pub use event::{Event, EventKind, IqChange};
pub use hold::{
    FulfilOp, HoldState, HoldView, LineView, PartRef, PartUpdate, PendingUpdate, UpdateTag,
};
pub use network::{ChannelNetwork, LocationConfig, LocationKind, NetworkSnap};
pub use order::{OrderLineView, OrderState, OrderView};
pub use outcome::{LineOutcome, ReserveOutcome, ReserveResult};
pub use position::IqKind;
pub use query::{HoldFilter, HoldKey, HoldPage, HoldScan, HoldTime, ListedHold};
pub use request::{Adjustment, AdjustmentKind, OrderLine, ReserveLine, ReserveRequest, StockCount};
pub use snapshot::{
    EngineSnapshot, HoldSnap, HoldSnapRef, PositionSnap, PositionSnapRef, Restorer,
};
