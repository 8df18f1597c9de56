//! Domain and shard errors to gRPC statuses, in one exhaustive place.
//!
//! No wildcard arm: a new error variant cannot go unmapped.

use tonic::{Code, Status};

use crate::shard::ShardError;
use stockd_domain::Error;

/// The status a client sees for an error.
pub fn to_status(error: ShardError) -> Status {
    match error {
        ShardError::Domain(e) => domain_status(e),
        ShardError::Unavailable(reason) => Status::unavailable(reason),
        ShardError::Overloaded(shard) => {
            Status::resource_exhausted(format!("shard {shard} is overloaded; retry with backoff"))
        }
        ShardError::Stopped(_) => Status::unavailable("stockd is shutting down"),
    }
}

fn domain_status(error: Error) -> Status {
    let message = error.to_string();
    let code = match error {
        Error::InvalidArgument { .. } => Code::InvalidArgument,
        Error::UnknownChannel(_) | Error::HoldNotFound(_) | Error::OrderNotFound(_) => {
            Code::NotFound
        }
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
