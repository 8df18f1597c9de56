//! What every RPC does around its handler: a tracing span and the latency histogram.
//!
//! Nothing is logged per request at info level: a flash sale must not flood the log. The
//! span is at debug level, so with the default filter (`info`) creating it is a check of
//! the level and nothing more: no allocation, no field formatted.

use std::future::Future;
use std::time::Instant;

use tonic::{Response, Status};
use tracing::{Instrument, Span};

use super::status::code_name;
use crate::metrics;

/// The span of one RPC: method, channel and hold ref (empty when the call has none).
pub fn span(service: &'static str, method: &'static str, channel: &str, hold: &str) -> Span {
    tracing::debug_span!("rpc", service, method, channel, hold)
}

/// Runs a handler inside its span (see [`span`]) and records its duration by service,
/// method and status code. The span is made before the handler runs, so the returned
/// future borrows neither `channel` nor `hold`.
pub fn observe<T, F>(
    service: &'static str,
    method: &'static str,
    channel: &str,
    hold: &str,
    handler: F,
) -> impl Future<Output = Result<Response<T>, Status>> + use<T, F>
where
    F: Future<Output = Result<T, Status>>,
{
    observe_in(
        span(service, method, channel, hold),
        service,
        method,
        handler,
    )
}

/// [`observe`] with a span the caller made (a handler that moves its request into the
/// future makes the span from it first).
pub async fn observe_in<T>(
    span: Span,
    service: &'static str,
    method: &'static str,
    handler: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = handler.instrument(span.clone()).await;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };
    metrics::rpc(service, method, code_name(code), started.elapsed());
    if let Err(status) = &result {
        span.in_scope(|| {
            tracing::debug!(
                code = code_name(code),
                message = status.message(),
                "rpc failed"
            )
        });
    }
    result.map(Response::new)
}
