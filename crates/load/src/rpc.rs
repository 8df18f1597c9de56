//! The client side: the raw HTTP/2 load client (from `h2client`), the tonic channels
//! scenarios seed through, ghz's names for status codes, and the loopback-only check.

use std::net::IpAddr;
use std::time::Duration;

use tonic::Status;
use tonic::transport::{Channel, Endpoint};

pub use crate::h2client::{Client, Framed, open_load, unary};

/// The only field of ReserveResponse the load generator reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReserveOutcomeOnly {
    #[prost(int32, tag = "1")]
    pub outcome: i32,
}

/// Opens `n` tonic channels (for seeding and checks) to `addr` (`host:port`).
pub async fn connect(
    addr: &str,
    n: usize,
    connect_timeout: Duration,
) -> Result<Vec<Channel>, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {}", source_chain(&e)))?;
        channels.push(channel);
    }
    Ok(channels)
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// ghz's rendering of a gRPC code (Go's `codes.Code.String()`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// ghz's rendering of an error (Go's `status.Error(...).Error()`).
pub fn error_text(status: &Status) -> String {
    format!(
        "rpc error: code = {} desc = {}",
        code_name(status.code()),
        status.message()
    )
}

/// Normalises the target (`host:port`, optionally `http://host:port`) and refuses
/// anything but a loopback address unless `allow_remote`.
pub fn check_target(target: &str, allow_remote: bool) -> Result<String, String> {
    if target.starts_with("https://") {
        return Err(format!(
            "{target}: TLS is not supported; stockd-load speaks plaintext HTTP/2 only"
        ));
    }
    let addr = target.trim_start_matches("http://").trim_end_matches('/');
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{target}: expected host:port, e.g. 127.0.0.1:50051"))?;
    port.parse::<u16>()
        .map_err(|_| format!("{target}: {port:?} is not a port number"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback && !allow_remote {
        return Err(format!(
            "{target} is not a loopback address: stockd-load only loads 127.0.0.1/::1/localhost \
             unless --allow-remote is given (make sure you own the target and may load it)"
        ));
    }
    Ok(addr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_without_allow_remote() {
        assert_eq!(
            check_target("127.0.0.1:50051", false).unwrap(),
            "127.0.0.1:50051"
        );
        assert_eq!(
            check_target("http://localhost:1", false).unwrap(),
            "localhost:1"
        );
        assert!(check_target("[::1]:50051", false).is_ok());
        assert!(check_target("127.3.4.5:50051", false).is_ok());
        assert!(check_target("10.0.0.1:50051", false).is_err());
        assert!(check_target("example.com:443", false).is_err());
        assert!(check_target("10.0.0.1:50051", true).is_ok());
        assert!(check_target("127.0.0.1", false).is_err());
        assert!(check_target("https://127.0.0.1:1", true).is_err());
    }
}
