//! The client side: a codec that sends pre-encoded request bytes, connections, ghz's
//! names for status codes, and the loopback-only safety check.

use std::marker::PhantomData;
use std::net::IpAddr;
use std::time::Duration;

use prost::bytes::{BufMut, Bytes};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use crate::schema::Method;

/// A codec whose requests are already-encoded protobuf bytes, and whose responses are
/// decoded as `D` (`()` skips every field: the cheapest way to check a response).
pub struct RawCodec<D>(PhantomData<fn() -> D>);

impl<D> Default for RawCodec<D> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<D: prost::Message + Default + Send + 'static> Codec for RawCodec<D> {
    type Encode = Bytes;
    type Decode = D;
    type Encoder = RawEncoder;
    type Decoder = MessageDecoder<D>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> MessageDecoder<D> {
        MessageDecoder(PhantomData)
    }
}

pub struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }

    /// Requests are small: tonic's default 8 KiB buffer per call is mostly wasted.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(512, 32 * 1024)
    }
}

pub struct MessageDecoder<D>(PhantomData<fn() -> D>);

impl<D: prost::Message + Default> Decoder for MessageDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the response: {e}")))
    }
}

/// The only field of ReserveResponse the load generator reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReserveOutcomeOnly {
    #[prost(int32, tag = "1")]
    pub outcome: i32,
}

pub type Client = tonic::client::Grpc<Channel>;

/// Sends one unary call with pre-encoded `body` and decodes the response as `D`.
pub async fn unary<D: prost::Message + Default + Send + 'static>(
    client: &mut Client,
    method: Method,
    body: Bytes,
) -> Result<D, Status> {
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
    client
        .unary(
            tonic::Request::new(body),
            method.path(),
            RawCodec::<D>::default(),
        )
        .await
        .map(tonic::Response::into_inner)
}

/// Opens `n` HTTP/2 connections to `addr` (`host:port`).
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
