//! The engine's operating errors: bad input and requests the state does not allow.
//!
//! These are values, returned to the caller and mapped to a gRPC status in one place
//! (`grpc::status`). Programmer errors (a counter going negative where it cannot) are
//! assertions instead.

/// What an engine call can refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A field breaks a rule; `field` names it as the request spells it.
    #[error("{field} {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The channel is not configured.
    #[error("channel {0:?} is not configured")]
    UnknownChannel(String),
    /// The location is not configured (UpsertLocations).
    #[error("location {0:?} is not configured")]
    UnknownLocation(String),
    /// No hold has this ref.
    #[error("hold {0:?} not found")]
    HoldNotFound(String),
    /// No order has this ref.
    #[error("order {0:?} not found")]
    OrderNotFound(String),
    /// The hold has expired; confirm it with `reacquire` to reserve again.
    #[error("hold {0:?} has expired")]
    HoldExpired(String),
    /// The hold was released.
    #[error("hold {0:?} was released")]
    HoldReleased(String),
    /// The hold is already confirmed (under another order, or a reserve tried to change it).
    #[error("hold {hold_ref:?} is confirmed as order {order_ref:?}")]
    HoldConfirmed { hold_ref: String, order_ref: String },
    /// A hold keeps the channel it was made for.
    #[error("hold {hold_ref:?} belongs to channel {channel_ref:?}")]
    HoldChannelMismatch {
        hold_ref: String,
        channel_ref: String,
    },
    /// The order ref already confirms another hold.
    #[error("order {order_ref:?} already confirms hold {hold_ref:?}")]
    OrderConflict { order_ref: String, hold_ref: String },
    /// A confirm with `reacquire` found the stock of an ended hold gone.
    #[error("hold {0:?} has ended and its stock is no longer available to reacquire")]
    ReacquireFailed(String),
    /// A fulfilment asks for more than the order still has reserved.
    #[error("{field} asks for {requested} but order {order_ref:?} has {open} reserved there")]
    FulfilExceedsReserved {
        field: String,
        order_ref: String,
        requested: i64,
        open: i64,
    },
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
