//! What every RPC does around its handler: a tracing span and the latency histogram.
//!
//! Nothing is logged per request at info level: a flash sale must not flood the log.

use std::future::Future;
use std::time::Instant;

use tonic::{Response, Status};
use tracing::Instrument;

use super::status::code_name;
use crate::metrics;

/// Runs a handler inside a span carrying method, channel and hold ref, and records its
/// duration by service, method and status code.
pub async fn observe<T>(
    service: &'static str,
    method: &'static str,
    channel: &str,
    hold: &str,
    handler: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let span = tracing::info_span!("rpc", service, method, channel, hold);
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
