//! Every error a handler answers with, to its gRPC status, in one exhaustive place.
//!
//! Handlers never build a `Status` themselves: conversions return the domain's
//! `Error::InvalidArgument` (naming the field), the router returns `ShardError`, and the
//! few answers of the transport itself are `ApiError` variants. No wildcard arm: a new
//! error variant cannot go unmapped.

use tonic::{Code, Status};

use crate::shard::ShardError;
use stockd_domain::Error;

/// An error a handler answers with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The router, a shard or the domain refused.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// More calls than `--max-concurrent-requests` are running (`grpc::overload`).
    #[error(
        "stockd is answering as many calls as --max-concurrent-requests allows; retry with backoff"
    )]
    Overloaded,
    /// The event log refused a read or a watch (`storage::events`).
    #[error(transparent)]
    Events(#[from] crate::storage::events::EventsError),
    /// GetPosition of a position that was never counted, adjusted or reserved.
    #[error("no position for product {product_ref:?} at location {location_ref:?}")]
    PositionNotFound {
        product_ref: String,
        location_ref: String,
    },
    /// tonic could not decode the request body (not protobuf of the method's type, broken
    /// framing, or over `DECODED_MESSAGE_BYTES_MAX`): `grpc::decode`.
    #[error("the request body cannot be decoded: {0}")]
    BadRequestBody(String),
    /// The caller has no identity, or one the policy does not know (`grpc::access`).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The policy does not allow the caller this method or channel (`grpc::access`).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Shard(ShardError::Domain(e))
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        to_status(e)
    }
}

/// The status a client sees for an error.
pub fn to_status(error: impl Into<ApiError>) -> Status {
    match error.into() {
        ApiError::Shard(ShardError::Domain(e)) => domain_status(e),
        ApiError::Shard(ShardError::Unavailable(reason)) => Status::unavailable(reason),
        ApiError::Shard(ShardError::Overloaded(shard)) => {
            Status::resource_exhausted(format!("shard {shard} is overloaded; retry with backoff"))
        }
        ApiError::Shard(ShardError::Stopped(_)) => Status::unavailable("stockd is shutting down"),
        e @ ApiError::Overloaded => Status::resource_exhausted(e.to_string()),
        e @ ApiError::PositionNotFound { .. } => Status::not_found(e.to_string()),
        e @ ApiError::BadRequestBody(_) => Status::invalid_argument(e.to_string()),
        e @ ApiError::Unauthenticated(_) => Status::unauthenticated(e.to_string()),
        e @ ApiError::PermissionDenied(_) => Status::permission_denied(e.to_string()),
        ApiError::Events(e) => events_status(e),
    }
}

fn events_status(error: crate::storage::events::EventsError) -> Status {
    use crate::storage::events::EventsError as E;
    let message = error.to_string();
    match error {
        E::Expired { .. } => Status::failed_precondition(message),
        E::Behind { .. } | E::TooManyWatchers { .. } => Status::resource_exhausted(message),
        E::Unavailable(_) | E::ShuttingDown { .. } => Status::unavailable(message),
    }
}

fn domain_status(error: Error) -> Status {
    let message = error.to_string();
    let code = match error {
        Error::InvalidArgument { .. } => Code::InvalidArgument,
        Error::UnknownChannel(_)
        | Error::UnknownLocation(_)
        | Error::HoldNotFound(_)
        | Error::OrderNotFound(_) => Code::NotFound,
        Error::HoldExpired(_)
        | Error::HoldReleased(_)
        | Error::HoldConfirmed { .. }
        | Error::HoldChannelMismatch { .. }
        | Error::OrderConflict { .. }
        | Error::ReacquireFailed(_)
        | Error::FulfilExceedsReserved { .. } => Code::FailedPrecondition,
    };
    Status::new(code, message)
}

/// The name a metric uses for a status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
