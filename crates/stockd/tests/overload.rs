//! Overload protection through real gRPC on 127.0.0.1: beyond `--max-concurrent-requests`
//! calls in flight, InventoryService and AdminService calls answer RESOURCE_EXHAUSTED at
//! once and change nothing; health still answers; the call holding the slot completes.
//!
//! The test holds the server's only slot with a Reserve whose HTTP/2 request is open (its
//! headers sent, its body not yet), written with `h2` directly since a gRPC client sends
//! a unary request whole. No timing is assumed: calls are sent until the server refuses
//! one, and from then on every call must be refused until the held call finishes.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use prost::Message;
use tonic::Code;

use common::calls::{ats, get_hold, stock, upsert_channel};
use common::client;
use common::fixtures::products_on_every_shard;
use common::requests::{channel, reserve_request};
use common::server::{READY_TIMEOUT, Spawned, spawn_in_process, tempdir};
use stockd::config::ServerConfig;
use stockd::proto::inventory::v1 as pb;

const WEB: &str = "WEB";
const LOC: &str = "DC1";
const STOCK: i64 = 1_000;
/// Calls sent before giving up on the server ever taking the held call's slot.
const ATTEMPTS_MAX: usize = 10_000;
/// Calls sent (and refused) while the slot is held, once the first was refused.
const REFUSED_MORE: usize = 20;

/// A Reserve whose request is open: the server is running it (it holds a slot) and
/// waits for its body.
struct OpenReserve {
    stream: h2::SendStream<Bytes>,
    response: h2::client::ResponseFuture,
}

impl OpenReserve {
    async fn start(addr: SocketAddr) -> OpenReserve {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(connection);
        let mut client = client.ready().await.expect("h2 ready");
        let request = http::Request::builder()
            .method("POST")
            .uri(format!(
                "http://{addr}/inventory.v1.InventoryService/Reserve"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request head");
        let (response, stream) = client.send_request(request, false).expect("send headers");
        OpenReserve { stream, response }
    }

    /// Whether the server already answered the open call: it reached the limit while a
    /// sequential call held the slot and was refused, so it holds no slot.
    async fn was_answered(&mut self) -> bool {
        futures::poll!(&mut self.response).is_ready()
    }

    /// Sends the body and returns the answer (grpc-status, decoded reply).
    async fn finish(mut self, request: pb::ReserveRequest) -> (String, pb::ReserveResponse) {
        let message = request.encode_to_vec();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        self.stream
            .send_data(Bytes::from(frame), true)
            .expect("send body");
        let mut body = self.response.await.expect("response").into_body();
        let mut data = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("response data");
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.expect("trailers").expect("a trailer");
        let status = trailers
            .get("grpc-status")
            .map(|v| v.to_str().expect("ascii").to_string())
            .unwrap_or_default();
        let reply = pb::ReserveResponse::decode(data.get(5..).unwrap_or_default())
            .expect("decode the reply");
        (status, reply)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_concurrency_limit_calls_are_refused_and_change_nothing() {
    let dir = tempdir();
    let mut config = ServerConfig::new(dir.path().join("data"));
    config.shards = 2;
    config.serve.concurrent_requests_max = 1;
    let Spawned { grpc, stop, task } = spawn_in_process(config).await;
    client::wait_serving(grpc, READY_TIMEOUT, || task.is_finished().then(String::new))
        .await
        .expect("serving");
    let mut admin = client::admin(grpc);
    let mut inv = client::inventory(grpc);
    upsert_channel(&mut admin, channel(WEB)).await;
    // One product on each shard: a refused cart would be cut between them if anything
    // reached a shard.
    let products = products_on_every_shard("over", LOC, 2, 1);
    for p in &products {
        stock(&mut admin, p, LOC, STOCK).await;
    }
    let cart: Vec<(String, String, i64)> = products
        .iter()
        .map(|p| (p.clone(), LOC.to_string(), 1))
        .collect();

    let mut held = OpenReserve::start(grpc).await;
    let mut reserved = 0;
    let mut refused = Vec::new();
    for i in 0..ATTEMPTS_MAX {
        let hold = format!("before-{i}");
        match inv.reserve(reserve_request(&hold, WEB, &cart, 600)).await {
            Ok(r) => {
                assert_eq!(r.into_inner().outcome, pb::ReserveOutcome::Reserved as i32);
                reserved += 1;
                if held.was_answered().await {
                    // Its headers arrived while this call held the slot: open another.
                    held = OpenReserve::start(grpc).await;
                }
            }
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{hold}: {s}");
                assert!(s.message().contains("--max-concurrent-requests"), "{s}");
                refused.push(hold);
                break;
            }
        }
    }
    assert_eq!(
        refused.len(),
        1,
        "the server never refused a call beyond its limit of 1"
    );
    // The slot is held: every call of either service is refused, reads and writes alike.
    for i in 0..REFUSED_MORE {
        let hold = format!("during-{i}");
        let s = inv
            .reserve(reserve_request(&hold, WEB, &cart, 600))
            .await
            .expect_err("refused while the slot is held");
        assert_eq!(s.code(), Code::ResourceExhausted, "{hold}: {s}");
        refused.push(hold);
    }
    let s = admin
        .list_channels(pb::ListChannelsRequest {})
        .await
        .expect_err("AdminService is behind the same limit");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s}");
    // Health is outside the limit: probes still answer on a saturated server.
    client::wait_serving(grpc, READY_TIMEOUT, || None)
        .await
        .expect("health answers while the slot is held");

    let (status, reply) = held.finish(reserve_request("held", WEB, &cart, 600)).await;
    assert_eq!(status, "0", "the held call completes");
    assert_eq!(reply.outcome, pb::ReserveOutcome::Reserved as i32);
    reserved += 1;

    // Nothing of a refused call was applied, on either shard.
    for hold in &refused {
        assert_eq!(
            get_hold(&mut inv, hold).await.expect("GetHold"),
            None,
            "{hold}"
        );
    }
    for p in &products {
        assert_eq!(ats(&mut inv, WEB, p, LOC).await, STOCK - reserved, "{p}");
    }
    let _ = stop.send(());
    task.await.expect("server task").expect("server run");
}
