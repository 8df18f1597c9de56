//! The inventory engine: positions, ledger, channels and holds, as `shared/domain.md` says.
//!
//! Pure by design: no I/O, no clock (time is the `now` argument), nothing of tonic, tokio
//! or sled. The service runs one [`Engine`] per shard actor; tests and benchmarks drive it
//! directly.
//!
//! - `refs`: ref validation and interning.
//! - `channel`: channel rules, overrides and the ATS formula.
//! - `position`: Inventory Positions and their ACTIVE ledger.
//! - `hold`: hold parts and their views.
//! - `request`: request types and their validation limits.
//! - `engine`: the operations.
//! - `event`: what every change emits.
//! - `snapshot`: the engine's state in a form that can be stored, merged and split.
//! - `command`: the mutating operations as data, for the write-ahead log and replay.
//! - `error`: the operating errors.

pub mod channel;
pub mod command;
pub mod engine;
pub mod error;
pub mod event;
pub mod hold;
pub mod position;
pub mod refs;
pub mod request;
pub mod snapshot;

/// Milliseconds since the Unix epoch: the engine's only notion of time.
pub type Millis = i64;

pub use channel::{CategoryConfig, ChannelConfig, ChannelRule, ProductConfig, RebalanceMode};
pub use command::{Command, Outcome};
pub use engine::{
    AdjustStatus, ChannelPositionView, CountStatus, Engine, IqView, LineResult, PositionView,
    ReserveKind, ReservePart, ReserveUndo, Settings,
};
pub use error::Error;
pub use event::{Event, EventKind};
pub use hold::{FulfilOp, HoldState, HoldView, LineView};
pub use position::IqKind;
pub use request::{Adjustment, AdjustmentKind, OrderLine, ReserveLine, ReserveRequest, StockCount};
pub use snapshot::EngineSnapshot;
