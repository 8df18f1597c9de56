//! The load's HTTP/2 client: gRPC unary calls over the `h2` crate, with requests framed
//! once and answers read as bytes. tonic's channel put a tower buffer task and hyper's
//! dispatch task between each call and its connection, and cost the load generator
//! about twice the CPU per call of h2load; a load generator that costs more than the
//! server it measures measures itself.

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme, Uri};
use http::{HeaderMap, HeaderValue};
use prost::bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;
use tonic::Status;

use crate::schema::Method;

/// One gRPC message as it goes on the wire: the uncompressed flag (0), the big-endian
/// length, the protobuf bytes. Requests are framed once, when they are encoded, so a
/// call sends them as they are, in one DATA frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Framed(Bytes);

impl Framed {
    /// Frames an encoded protobuf message.
    pub fn from_message(message: &[u8]) -> Framed {
        let mut framed = BytesMut::with_capacity(GRPC_HEADER + message.len());
        framed.put_u8(0);
        framed.put_u32(message.len() as u32);
        framed.put_slice(message);
        Framed(framed.freeze())
    }

    /// Encodes and frames `m` in one buffer.
    pub fn encode<M: prost::Message>(m: &M) -> Framed {
        let len = m.encoded_len();
        let mut framed = BytesMut::with_capacity(GRPC_HEADER + len);
        framed.put_u8(0);
        framed.put_u32(len as u32);
        m.encode(&mut framed).expect("the buffer holds the message");
        Framed(framed.freeze())
    }

    /// The bytes on the wire (what `--dump-request` writes for h2load).
    pub fn wire(&self) -> &[u8] {
        &self.0
    }

    /// The protobuf message without the frame header.
    #[cfg(test)]
    pub fn message(&self) -> &[u8] {
        &self.0[GRPC_HEADER..]
    }
}

/// The gRPC message header: the compression flag and the length.
const GRPC_HEADER: usize = 5;

/// A worker's handle on one load connection. Workers on one connection share its
/// [`Slot`]; when the connection fails (the server closed it, e.g. a GOAWAY), the first
/// worker to notice opens the next one there and the others take it up, as a gRPC
/// channel reconnects.
#[derive(Clone)]
pub struct Client {
    send: h2::client::SendRequest<Bytes>,
    /// Which of the slot's connections `send` is on.
    generation: u64,
    slot: Arc<Slot>,
}

/// One load connection, replaced when it fails.
struct Slot {
    addr: String,
    authority: Authority,
    headers: HeaderMap,
    connect_timeout: Duration,
    current: tokio::sync::Mutex<(u64, h2::client::SendRequest<Bytes>)>,
}

impl Client {
    /// Waits until the connection can open a stream, reconnecting once if it failed.
    async fn ready(&mut self) -> Result<(), Status> {
        let Err(failed) = std::future::poll_fn(|cx| self.send.poll_ready(cx)).await else {
            return Ok(());
        };
        let mut current = self.slot.current.lock().await;
        if current.0 == self.generation {
            let send = handshake(&self.slot.addr, self.slot.connect_timeout)
                .await
                .map_err(|e| {
                    Status::unavailable(format!("{}; {e}", h2_status(&failed).message()))
                })?;
            *current = (current.0 + 1, send);
        }
        self.generation = current.0;
        self.send = current.1.clone();
        drop(current);
        std::future::poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .map_err(|e| h2_status(&e))
    }
}

/// Sends one unary call with the pre-framed `body` and decodes the answer as `D` (`()`
/// skips every field: the cheapest way to check an answer).
pub async fn unary<D: prost::Message + Default>(
    client: &mut Client,
    method: Method,
    body: Framed,
) -> Result<D, Status> {
    client.ready().await?;
    let mut request = http::Request::new(());
    *request.method_mut() = http::Method::POST;
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(client.slot.authority.clone());
    uri.path_and_query = Some(method.path());
    *request.uri_mut() =
        Uri::from_parts(uri).map_err(|e| Status::internal(format!("bad request URI: {e}")))?;
    *request.headers_mut() = client.slot.headers.clone();
    let (answer, mut stream) = client
        .send
        .send_request(request, false)
        .map_err(|e| h2_status(&e))?;
    stream.send_data(body.0, true).map_err(|e| h2_status(&e))?;
    let answer = answer.await.map_err(|e| h2_status(&e))?;
    let (head, mut body) = answer.into_parts();
    // A trailers-only answer (an error) carries grpc-status in its headers.
    if let Some(outcome) = outcome(&head.headers) {
        return outcome.and_then(|()| decode(&[]));
    }
    if head.status != http::StatusCode::OK {
        return Err(http_status(head.status));
    }
    let message = read_body(&mut body).await?;
    let trailers = body.trailers().await.map_err(|e| h2_status(&e))?;
    match trailers.as_ref().and_then(outcome) {
        Some(outcome) => outcome.and_then(|()| decode(&message)),
        None => Err(Status::unknown("the answer ended without a grpc-status")),
    }
}

const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The call's outcome from the `grpc-status` in `headers`, if there is one. OK costs one
/// lookup; only a failure builds its Status (tonic's `from_header_map` copies the map).
fn outcome(headers: &HeaderMap) -> Option<Result<(), Status>> {
    let code = headers.get(GRPC_STATUS)?;
    if code.as_bytes() == b"0" {
        return Some(Ok(()));
    }
    Some(Err(Status::from_header_map(headers)?))
}

/// Reads the answer's DATA frames, giving their flow-control window back at once.
async fn read_body(body: &mut h2::RecvStream) -> Result<Bytes, Status> {
    let mut first: Option<Bytes> = None;
    let mut more = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| h2_status(&e))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        match &first {
            None => first = Some(chunk),
            Some(f) => {
                if more.is_empty() {
                    more.extend_from_slice(f);
                }
                more.extend_from_slice(&chunk);
            }
        }
    }
    Ok(if more.is_empty() {
        first.unwrap_or_default()
    } else {
        more.freeze()
    })
}

/// Decodes the one gRPC message of an answer (none: the empty message).
fn decode<D: prost::Message + Default>(framed: &[u8]) -> Result<D, Status> {
    if framed.is_empty() {
        return Ok(D::default());
    }
    let bad = |why: &str| Status::internal(format!("cannot decode the response: {why}"));
    let (head, rest) = framed
        .split_at_checked(GRPC_HEADER)
        .ok_or_else(|| bad("a truncated message header"))?;
    if head[0] != 0 {
        return Err(bad("a compressed message"));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let message = rest.get(..len).ok_or_else(|| bad("a truncated message"))?;
    D::decode(message).map_err(|e| bad(&e.to_string()))
}

/// The status of an HTTP/2 failure, as gRPC's HTTP/2 mapping gives it.
fn h2_status(e: &h2::Error) -> Status {
    let code = match e.reason() {
        Some(h2::Reason::REFUSED_STREAM) => tonic::Code::Unavailable,
        Some(h2::Reason::CANCEL) => tonic::Code::Cancelled,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => tonic::Code::ResourceExhausted,
        Some(h2::Reason::INADEQUATE_SECURITY) => tonic::Code::PermissionDenied,
        Some(_) => tonic::Code::Internal,
        None => tonic::Code::Unavailable,
    };
    Status::new(code, format!("h2 protocol error: {e}"))
}

/// The status of a non-gRPC HTTP answer (gRPC's HTTP-to-gRPC status mapping).
fn http_status(status: http::StatusCode) -> Status {
    use http::StatusCode as H;
    let code = match status {
        H::BAD_REQUEST => tonic::Code::Internal,
        H::UNAUTHORIZED => tonic::Code::Unauthenticated,
        H::FORBIDDEN => tonic::Code::PermissionDenied,
        H::NOT_FOUND => tonic::Code::Unimplemented,
        H::TOO_MANY_REQUESTS | H::BAD_GATEWAY | H::SERVICE_UNAVAILABLE | H::GATEWAY_TIMEOUT => {
            tonic::Code::Unavailable
        }
        _ => tonic::Code::Unknown,
    };
    Status::new(code, format!("HTTP status {status} without a grpc-status"))
}

/// HTTP/2 flow-control windows of a load connection, as hyper's client (tonic) sets them.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// Opens `n` raw HTTP/2 load connections to `addr` (`host:port`); each one's connection
/// task runs on the calling (current-thread) runtime.
pub async fn open_load(
    addr: &str,
    n: usize,
    connect_timeout: Duration,
) -> Result<Vec<Client>, String> {
    let authority: Authority = addr
        .parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let send = handshake(addr, connect_timeout)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let slot = Slot {
            addr: addr.to_string(),
            authority: authority.clone(),
            headers: headers.clone(),
            connect_timeout,
            current: tokio::sync::Mutex::new((0, send.clone())),
        };
        clients.push(Client {
            send,
            generation: 0,
            slot: Arc::new(slot),
        });
    }
    Ok(clients)
}

/// Connects and starts HTTP/2; the connection's task runs on the current runtime.
async fn handshake(
    addr: &str,
    connect_timeout: Duration,
) -> Result<h2::client::SendRequest<Bytes>, String> {
    let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .enable_push(false)
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::ReserveOutcomeOnly;
    use stockd::proto::inventory::v1 as pb;
    use stockd::storage::Durability;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    /// The raw client against a real stockd: answers decode, and failures carry the
    /// server's gRPC status and message, as a gRPC client reports them.
    #[test]
    fn raw_client_reads_answers_and_statuses() {
        let durability = Durability::Async {
            flush_interval: Duration::from_millis(10),
        };
        let server = crate::embedded::start(durability, Some(1)).expect("embedded stockd");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut clients = open_load(&server.addr, 2, Duration::from_secs(5))
                .await
                .expect("connects");
            assert_eq!(clients.len(), 2);
            let c = &mut clients[1];
            let check = |service: &str| {
                Framed::encode(&HealthCheckRequest {
                    service: service.into(),
                })
            };
            let serving: HealthCheckResponse = unary(c, Method::health_check(), check(""))
                .await
                .expect("the health check answers");
            assert_eq!(serving.status, 1, "SERVING");
            let unknown = unary::<()>(c, Method::health_check(), check("no.such.Service"))
                .await
                .expect_err("an unknown service is NOT_FOUND");
            assert_eq!(unknown.code(), tonic::Code::NotFound);
            let bad = unary::<ReserveOutcomeOnly>(
                c,
                Method::reserve(),
                Framed::encode(&pb::ReserveRequest::default()),
            )
            .await
            .expect_err("an empty Reserve is refused");
            assert_eq!(bad.code(), tonic::Code::InvalidArgument);
            assert!(!bad.message().is_empty(), "the server's message is kept");
        });
        // Closes the connections, whose tasks live on this runtime: the server drains them.
        drop(runtime);
        server.stop().expect("the embedded stockd stops");
    }

    #[test]
    fn framing_is_grpc_wire_format() {
        let framed = Framed::from_message(b"abc");
        assert_eq!(framed.wire(), b"\0\0\0\0\x03abc");
        assert_eq!(framed.message(), b"abc");
        let request = HealthCheckRequest {
            service: "s".into(),
        };
        let encoded = Framed::encode(&request);
        assert_eq!(
            encoded,
            Framed::from_message(&prost::Message::encode_to_vec(&request))
        );
        let decoded: HealthCheckRequest = decode(encoded.wire()).expect("decodes");
        assert_eq!(decoded, request);
        assert!(decode::<HealthCheckRequest>(&encoded.wire()[..6]).is_err());
    }
}
