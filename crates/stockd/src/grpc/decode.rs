//! A request body that cannot be decoded answers INVALID_ARGUMENT: it is the caller's
//! mistake, not the server's.
//!
//! tonic decodes a request before the handler runs, and answers on its own when it
//! cannot: INTERNAL for bytes that are not protobuf of the method's type ("failed to
//! decode Protobuf message: …") and for broken gRPC framing, OUT_OF_RANGE for a message
//! over `DECODED_MESSAGE_BYTES_MAX` (refused from its 5-byte header, before its body is
//! buffered), UNKNOWN for a stream that fails while its body is read. `to_status` never answers any of these
//! three codes, so on a guarded service they can only be tonic's decoding, and this
//! wrapper turns them into `ApiError::BadRequestBody` (INVALID_ARGUMENT, tonic's message
//! kept: it names the message and field that failed). An unknown enum value decodes (proto3
//! enums are open) and is refused by `convert`, naming the field.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::Map;
use tonic::Code;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;

use super::status::{ApiError, to_status};

/// `S` with tonic's own decoding failures answered INVALID_ARGUMENT.
#[derive(Clone, Debug)]
pub struct Decoding<S> {
    inner: S,
}

impl<S> Decoding<S> {
    pub fn new(inner: S) -> Decoding<S> {
        Decoding { inner }
    }
}

impl<S: NamedService> NamedService for Decoding<S> {
    const NAME: &'static str = S::NAME;
}

type Answer = fn(Result<Response<Body>, Infallible>) -> Result<Response<Body>, Infallible>;

/// The reply, with a decoding failure's status replaced. tonic answers a request it cannot
/// decode with a trailers-only response: the status is in the response's headers.
fn answer(result: Result<Response<Body>, Infallible>) -> Result<Response<Body>, Infallible> {
    let Ok(response) = result;
    let refused = match tonic::Status::from_header_map(response.headers()) {
        Some(status) => match status.code() {
            Code::Internal | Code::OutOfRange | Code::Unknown => status,
            _ => return Ok(response),
        },
        None => return Ok(response),
    };
    let error = ApiError::BadRequestBody(refused.message().to_string());
    Ok(to_status(error).into_http())
}

impl<S> Service<Request<Body>> for Decoding<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Map<S::Future, Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.inner.call(request).map(answer as Answer)
    }
}
