//! Security through the public boundary, on 127.0.0.1: request bodies that cannot be
//! decoded, TLS and mutual TLS, identities and the policy, the admin port.

mod common;

use std::time::Duration;

use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use stockd::proto::inventory::v1 as pb;
use stockd::storage::Durability;
use tonic::Code;

use common::raw;
use common::requests::{count_now, reserve_request, ts};
use common::server::{InProcessServer, tempdir};

const INV: &str = "/inventory.v1.InventoryService/";
const ADM: &str = "/inventory.v1.AdminService/";

/// Random and mutated bodies sent to each method.
const FUZZ_BODIES_PER_METHOD: usize = 250;
/// The longest random body.
const FUZZ_BODY_BYTES_MAX: usize = 512;
/// How much the process may grow over the fuzz run (allocator caches, metric series).
const FUZZ_RSS_GROWTH_MAX_KIB: u64 = 64 << 10;

/// Every method, with a valid request of it (to mutate).
fn methods() -> Vec<(String, Vec<u8>)> {
    let reserve = reserve_request("h1", "WEB", &[("P1", "DC1", 1)], 0).encode_to_vec();
    let adjust = pb::AdjustStockRequest {
        adjustments: vec![pb::StockAdjustment {
            adjustment_ref: "a1".into(),
            product_ref: "P1".into(),
            location_ref: "DC1".into(),
            r#type: pb::AdjustmentType::Delta as i32,
            quantity: 2,
            occurred_at: Some(ts(1_000)),
        }],
    }
    .encode_to_vec();
    let set = pb::SetStockRequest {
        counts: vec![count_now("P1", "DC1", 5)],
    }
    .encode_to_vec();
    let key = pb::PositionKey {
        product_ref: "P1".into(),
        location_ref: "DC1".into(),
    };
    let availability = pb::GetAvailabilityRequest {
        channel_ref: "WEB".into(),
        keys: vec![key],
    }
    .encode_to_vec();
    let hold = pb::GetHoldRequest {
        hold_ref: "h1".into(),
    }
    .encode_to_vec();
    let mut all: Vec<(String, Vec<u8>)> = [
        ("GetAvailability", availability),
        ("Reserve", reserve),
        ("ConfirmHold", hold.clone()),
        ("ReleaseHold", hold.clone()),
        ("GetHold", hold.clone()),
        ("FulfilOrder", hold.clone()),
        ("CancelOrder", hold),
    ]
    .into_iter()
    .map(|(m, b)| (format!("{INV}{m}"), b))
    .collect();
    let channel = pb::DeleteChannelRequest {
        channel_ref: "WEB".into(),
    }
    .encode_to_vec();
    for (m, b) in [
        ("SetStock", set),
        ("AdjustStock", adjust),
        ("GetPosition", channel.clone()),
        ("UpsertChannel", channel.clone()),
        ("ListChannels", Vec::new()),
        ("DeleteChannel", channel.clone()),
        ("UpsertProducts", channel.clone()),
        ("UpsertCategories", channel.clone()),
        ("Rebalance", channel),
    ] {
        all.push((format!("{ADM}{m}"), b));
    }
    all
}

/// A body: random bytes, or `valid` with bytes flipped, cut, or spliced in.
fn fuzz_body(rng: &mut StdRng, valid: &[u8]) -> Vec<u8> {
    match rng.random_range(0..4) {
        0 => {
            let len = rng.random_range(1..=FUZZ_BODY_BYTES_MAX);
            (0..len).map(|_| rng.random()).collect()
        }
        1 if !valid.is_empty() => {
            let mut body = valid.to_vec();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..body.len());
                body[i] = rng.random();
            }
            body
        }
        2 if !valid.is_empty() => valid[..rng.random_range(0..valid.len())].to_vec(),
        _ => {
            let mut body = valid.to_vec();
            let at = rng.random_range(0..=body.len());
            let junk: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
            body.splice(at..at, junk);
            body
        }
    }
}

/// This process's resident set, in KiB (the in-process server's memory included).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A server whose writes are acknowledged before their sync: the fuzz run's valid bodies
/// write, and the decoding under test does not depend on durability.
async fn fast_server() -> InProcessServer {
    InProcessServer::start_configured(tempdir(), |c| {
        c.shards = 2;
        c.durability = Durability::Async {
            flush_interval: Duration::from_millis(5),
        };
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mutated_bodies_never_answer_internal_or_unknown() {
    let server = fast_server().await;
    let channel = server.channel();
    let mut rng = StdRng::seed_from_u64(16);
    let mut warm = true;
    let mut rss_start = 0;
    let mut refused = 0usize;
    for (path, valid) in methods() {
        for _ in 0..FUZZ_BODIES_PER_METHOD {
            let body = fuzz_body(&mut rng, &valid);
            match raw::call(channel.clone(), &path, body.clone()).await {
                Ok(_) => {}
                Err(status) => {
                    assert!(
                        !matches!(status.code(), Code::Internal | Code::Unknown),
                        "{path} with {body:02x?} answered {status:?}"
                    );
                    refused += (status.code() == Code::InvalidArgument) as usize;
                }
            }
        }
        if warm {
            // Measured after the first method: the connection, the runtime and the
            // metric series exist by then.
            rss_start = rss_kib();
            warm = false;
        }
    }
    let growth = rss_kib().saturating_sub(rss_start);
    assert!(
        growth < FUZZ_RSS_GROWTH_MAX_KIB,
        "memory grew by {growth} KiB over the fuzz run"
    );
    assert!(refused > FUZZ_BODIES_PER_METHOD, "most bodies are refused");
    // The server still answers.
    let ok = raw::call(channel, &format!("{ADM}ListChannels"), Vec::new()).await;
    assert!(ok.is_ok(), "{ok:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_misframed_bodies_answer_invalid_argument() {
    let server = fast_server().await;
    let channel = server.channel();
    // Not protobuf: a field tag whose wire type does not exist.
    let bad = raw::call(channel.clone(), &format!("{INV}Reserve"), vec![0x0f, 0xff])
        .await
        .expect_err("refused");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("decode"), "{bad:?}");
    // One byte over the limit: refused from the message's header.
    let big = vec![0u8; stockd::server::DECODED_MESSAGE_BYTES_MAX + 1];
    let too_big = raw::call(channel.clone(), &format!("{ADM}SetStock"), big)
        .await
        .expect_err("refused");
    assert_eq!(too_big.code(), Code::InvalidArgument, "{too_big:?}");
    // An unknown enum value decodes (proto3 enums are open); the field is named.
    let mut adjust = pb::AdjustStockRequest {
        adjustments: vec![pb::StockAdjustment {
            adjustment_ref: "a1".into(),
            product_ref: "P1".into(),
            location_ref: "DC1".into(),
            r#type: 99,
            quantity: 2,
            occurred_at: None,
        }],
    };
    let unknown = raw::call(
        channel,
        &format!("{ADM}AdjustStock"),
        adjust.encode_to_vec(),
    )
    .await
    .expect_err("refused");
    assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown:?}");
    assert!(
        unknown.message().contains("adjustments[0].type"),
        "{unknown:?}"
    );
    adjust.adjustments.clear();
    // Framing no gRPC client sends: an invalid compression flag, a body shorter than its
    // header says.
    let mut flag = raw::frame(&adjust.encode_to_vec());
    flag[0] = 7;
    let path = format!("{ADM}AdjustStock");
    assert_eq!(raw::h2_call(server.grpc, &path, flag).await, "3");
    let mut cut = raw::frame(&[0x0a, 0x02, 0x08, 0x01]);
    cut.truncate(7);
    assert_eq!(raw::h2_call(server.grpc, &path, cut).await, "3");
    server.stop().await;
}
