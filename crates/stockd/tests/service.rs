//! The service through its public boundary: a real server on 127.0.0.1, real tonic clients.

mod common;

use std::time::Duration;

use stockd::proto::inventory::v1 as pb;
use tonic::Code;

use common::calls::{
    ats, confirm, get_hold, get_position, on_hand, release, reserve_reply, stock, upsert_channel,
};
use common::client::{Adm, Inv};
use common::fixtures::products_on_every_shard;
use common::requests::{channel_bps, count_now, reserve_request};
use common::server::InProcessServer;

/// Shards of every test server: enough for a hold to span three of them.
const SHARDS: u32 = 3;

/// A server on `SHARDS` shards with channel WEB (all the stock, no buffer), and a client
/// of each service.
async fn start_with_web_channel() -> (InProcessServer, Adm, Inv) {
    let server = InProcessServer::start(SHARDS).await;
    let mut admin = server.admin();
    let inv = server.inventory();
    upsert_channel(&mut admin, channel_bps("WEB", 10_000, 0)).await;
    (server, admin, inv)
}

/// `start_with_web_channel`, with `quantity` units of `product` counted at DC1.
async fn start_with_web_stock(product: &str, quantity: i64) -> (InProcessServer, Adm, Inv) {
    let (server, mut admin, inv) = start_with_web_channel().await;
    stock(&mut admin, product, "DC1", quantity).await;
    (server, admin, inv)
}

/// Panics unless the call failed with INVALID_ARGUMENT and a message that starts with
/// `field` (the field it names).
#[track_caller]
fn assert_invalid_argument<T: std::fmt::Debug>(r: Result<T, tonic::Status>, field: &str) {
    let err = r.unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "{field}: {}",
        err.message()
    );
    assert!(
        err.message().starts_with(field),
        "{field}: {}",
        err.message()
    );
}

/// domain.md's seed: IP 45 / VP 40 with a 10% buffer; a cart of 2 gives 43 / 38;
/// its confirmation leaves 43 / 38.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_example_through_the_api() {
    let server = InProcessServer::start(SHARDS).await;
    let mut admin = server.admin();
    let mut inv = server.inventory();
    upsert_channel(&mut admin, channel_bps("ECOMMERCE", 10_000, 1_000)).await;
    stock(&mut admin, "SKU", "DC1", 45).await;
    assert_eq!(ats(&mut inv, "ECOMMERCE", "SKU", "DC1").await, 40);
    let r = reserve_reply(
        &mut inv,
        reserve_request("cart-1", "ECOMMERCE", &[("SKU", "DC1", 2)], 0),
    )
    .await;
    assert_eq!(r.outcome, pb::ReserveOutcome::Reserved as i32);
    assert_eq!(on_hand(&mut admin, "SKU", "DC1").await, 43);
    assert_eq!(ats(&mut inv, "ECOMMERCE", "SKU", "DC1").await, 38);
    let confirmed = confirm(&mut inv, "cart-1", "order-1", false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(confirmed.state, pb::HoldState::Confirmed as i32);
    assert_eq!(confirmed.order_ref, "order-1");
    assert_eq!(on_hand(&mut admin, "SKU", "DC1").await, 43);
    assert_eq!(ats(&mut inv, "ECOMMERCE", "SKU", "DC1").await, 38);
    server.stop().await;
}

/// 100 units, 2,000 concurrent buyers over 50 connections: exactly 100 hold, the rest are
/// REJECTED (an OK answer), nothing is oversold; releasing 10 holds makes 10 sellable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_sale_sells_exactly_the_stock() {
    let (server, mut admin, mut inv) = start_with_web_stock("HOT", 100).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(server.inventory());
    }
    let mut tasks = Vec::new();
    for buyer in 0..2_000 {
        let mut client = clients[buyer % 50].clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .reserve(reserve_request(
                    &format!("buyer-{buyer}"),
                    "WEB",
                    &[("HOT", "DC1", 1)],
                    0,
                ))
                .await
                .expect("out of stock is an OK answer")
                .into_inner();
            (buyer, r.outcome)
        }));
    }
    let mut winners = Vec::new();
    let mut rejected = 0;
    for t in tasks {
        let (buyer, outcome) = t.await.unwrap();
        if outcome == pb::ReserveOutcome::Reserved as i32 {
            winners.push(buyer);
        } else {
            assert_eq!(outcome, pb::ReserveOutcome::Rejected as i32);
            rejected += 1;
        }
    }
    assert_eq!(winners.len(), 100);
    assert_eq!(rejected, 1_900);
    assert_eq!(ats(&mut inv, "WEB", "HOT", "DC1").await, 0);
    assert_eq!(on_hand(&mut admin, "HOT", "DC1").await, 0);
    for buyer in &winners[..10] {
        let released = release(&mut inv, &format!("buyer-{buyer}")).await.unwrap();
        let state = released.expect("a released hold").state;
        assert_eq!(state, pb::HoldState::Released as i32);
    }
    assert_eq!(ats(&mut inv, "WEB", "HOT", "DC1").await, 10);
    server.stop().await;
}

/// Three products on three different shards; the third lacks stock: nothing stays held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_shard_hold_is_all_or_nothing() {
    let (server, mut admin, mut inv) = start_with_web_channel().await;
    // Three products that land on three different shards.
    let picked = products_on_every_shard("P", "DC1", SHARDS as usize, 1);
    assert_eq!(picked.len(), 3);
    stock(&mut admin, &picked[0], "DC1", 5).await;
    stock(&mut admin, &picked[1], "DC1", 5).await;
    stock(&mut admin, &picked[2], "DC1", 1).await;
    let lines = [
        (picked[0].as_str(), "DC1", 2),
        (picked[1].as_str(), "DC1", 2),
        (picked[2].as_str(), "DC1", 2),
    ];
    let r = reserve_reply(&mut inv, reserve_request("cart-x", "WEB", &lines, 0)).await;
    assert_eq!(r.outcome, pb::ReserveOutcome::Rejected as i32);
    assert_eq!(r.lines[2].available, 1);
    assert!(r.lines.iter().all(|l| l.reserved == 0));
    for (p, want) in [(&picked[0], 5), (&picked[1], 5), (&picked[2], 1)] {
        assert_eq!(ats(&mut inv, "WEB", p, "DC1").await, want, "{p} still held");
    }
    let missing = get_hold(&mut inv, "cart-x").await;
    assert!(
        matches!(missing, Ok(None)),
        "cart-x is not NOT_FOUND: {missing:?}"
    );

    // With enough stock the same hold spans the three shards, and confirms whole.
    stock(&mut admin, &picked[2], "DC1", 5).await;
    let r = reserve_reply(&mut inv, reserve_request("cart-x", "WEB", &lines, 0)).await;
    assert_eq!(r.outcome, pb::ReserveOutcome::Reserved as i32);
    assert_eq!(r.hold.unwrap().lines.len(), 3);
    let hold = confirm(&mut inv, "cart-x", "order-x", false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hold.lines.len(), 3);
    assert_eq!(hold.state, pb::HoldState::Confirmed as i32);
    let shipped = inv
        .fulfil_order(pb::FulfilOrderRequest {
            order_ref: "order-x".into(),
            lines: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shipped.lines.iter().map(|l| l.quantity).sum::<i64>(), 6);
    server.stop().await;
}

/// A hold with a 1-second timer expires, its stock is sellable again, and a confirm fails
/// with FAILED_PRECONDITION unless it asks to reacquire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_expire_and_can_be_reacquired() {
    let (server, _admin, mut inv) = start_with_web_stock("SKU", 3).await;
    let mut req = reserve_request("short", "WEB", &[("SKU", "DC1", 2)], 0);
    req.ttl_seconds = 1;
    inv.reserve(req).await.unwrap();
    assert_eq!(ats(&mut inv, "WEB", "SKU", "DC1").await, 1);
    let mut state = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = get_hold(&mut inv, "short").await.unwrap().unwrap().state;
        if state == pb::HoldState::Expired as i32 && ats(&mut inv, "WEB", "SKU", "DC1").await == 3 {
            break;
        }
    }
    assert_eq!(state, pb::HoldState::Expired as i32);
    assert_eq!(ats(&mut inv, "WEB", "SKU", "DC1").await, 3);
    let err = confirm(&mut inv, "short", "o", false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let hold = confirm(&mut inv, "short", "o", true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hold.state, pb::HoldState::Confirmed as i32);
    assert_eq!(ats(&mut inv, "WEB", "SKU", "DC1").await, 1);
    server.stop().await;
}

/// Every limit violated once: INVALID_ARGUMENT naming the field, and the server still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_invalid_argument_naming_the_field() {
    let (server, mut admin, mut inv) = start_with_web_channel().await;
    let ok = || reserve_request("h", "WEB", &[("SKU", "DC1", 1)], 0);
    let many_lines: Vec<(String, &str, i64)> =
        (0..101).map(|i| (format!("P{i}"), "DC1", 1)).collect();
    let cases: Vec<(pb::ReserveRequest, &str)> = vec![
        (
            pb::ReserveRequest {
                hold_ref: String::new(),
                ..ok()
            },
            "hold_ref",
        ),
        (
            pb::ReserveRequest {
                hold_ref: "a:b".into(),
                ..ok()
            },
            "hold_ref",
        ),
        (
            pb::ReserveRequest {
                hold_ref: "x".repeat(129),
                ..ok()
            },
            "hold_ref",
        ),
        (
            pb::ReserveRequest {
                channel_ref: "bad channel".into(),
                ..ok()
            },
            "channel_ref",
        ),
        (
            pb::ReserveRequest {
                lines: vec![],
                ..ok()
            },
            "lines",
        ),
        (reserve_request("h", "WEB", &many_lines, 0), "lines"),
        (
            reserve_request("h", "WEB", &[("SKU", "DC1", 0)], 0),
            "lines[0].quantity",
        ),
        (
            reserve_request("h", "WEB", &[("SKU", "DC1", 1_000_001)], 0),
            "lines[0].quantity",
        ),
        (
            reserve_request("h", "WEB", &[("SKU", "DC1", 1), ("S", "", 1)], 0),
            "lines[1].location_ref",
        ),
        (
            reserve_request("h", "WEB", &[("SKU", "DC1", 1), ("SKU", "DC1", 1)], 0),
            "lines[1]",
        ),
        (
            pb::ReserveRequest {
                ttl_seconds: 86_401,
                ..ok()
            },
            "ttl_seconds",
        ),
        (
            pb::ReserveRequest {
                ttl_seconds: -1,
                ..ok()
            },
            "ttl_seconds",
        ),
    ];
    for (req, field) in cases {
        assert_invalid_argument(inv.reserve(req).await, field);
    }
    let keys: Vec<pb::PositionKey> = (0..1_001)
        .map(|i| pb::PositionKey {
            product_ref: format!("P{i}"),
            location_ref: "DC1".into(),
        })
        .collect();
    let r = inv
        .get_availability(pb::GetAvailabilityRequest {
            channel_ref: "WEB".into(),
            keys,
        })
        .await;
    assert_invalid_argument(r, "keys");
    let counts: Vec<pb::StockCount> = (0..1_001)
        .map(|i| pb::StockCount {
            product_ref: format!("P{i}"),
            location_ref: "DC1".into(),
            quantity: 1,
            as_of: None,
        })
        .collect();
    assert_invalid_argument(admin.set_stock(pb::SetStockRequest { counts }).await, "");
    let r = admin
        .set_stock(pb::SetStockRequest {
            counts: vec![count_now("SKU", "DC1", -1)],
        })
        .await;
    assert_invalid_argument(r, "counts[0].quantity");
    let r = admin
        .adjust_stock(pb::AdjustStockRequest {
            adjustments: vec![pb::StockAdjustment {
                adjustment_ref: "a1".into(),
                product_ref: "SKU".into(),
                location_ref: "DC1".into(),
                r#type: 0,
                quantity: 1,
                occurred_at: None,
            }],
        })
        .await;
    assert_invalid_argument(r, "adjustments[0].type");
    let r = admin
        .upsert_channel(pb::UpsertChannelRequest {
            channel: Some(pb::Channel {
                channel_ref: "X".into(),
                allocation_bps: Some(10_001),
                ..Default::default()
            }),
        })
        .await;
    assert_invalid_argument(r, "channel.allocation_bps");
    // Unknown things are NOT_FOUND, not errors of the input's shape.
    let err = inv
        .reserve(pb::ReserveRequest {
            channel_ref: "NOPE".into(),
            ..ok()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let missing = get_hold(&mut inv, "nope").await;
    assert!(
        matches!(missing, Ok(None)),
        "nope is not NOT_FOUND: {missing:?}"
    );
    // Nothing was written, and the server still answers.
    let missing = get_position(&mut admin, "SKU", "DC1", false).await;
    assert!(
        matches!(missing, Ok(None)),
        "SKU at DC1 is not NOT_FOUND: {missing:?}"
    );
    stock(&mut admin, "SKU", "DC1", 1).await;
    assert_eq!(ats(&mut inv, "WEB", "SKU", "DC1").await, 1);
    server.stop().await;
}

/// A cart going from 2 to 3 with 1 more unit free succeeds; to 4 is rejected and stays at 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_update_through_the_api() {
    let (server, _admin, mut inv) = start_with_web_stock("SKU", 3).await;
    let cart = |quantity: i64| reserve_request("cart", "WEB", &[("SKU", "DC1", quantity)], 0);
    reserve_reply(&mut inv, cart(2)).await;
    let up = reserve_reply(&mut inv, cart(3)).await;
    assert_eq!(up.outcome, pb::ReserveOutcome::Reserved as i32);
    reserve_reply(&mut inv, cart(2)).await;
    let too_many = reserve_reply(&mut inv, cart(4)).await;
    assert_eq!(too_many.outcome, pb::ReserveOutcome::Rejected as i32);
    assert_eq!(too_many.hold.unwrap().lines[0].quantity, 2);
    assert_eq!(ats(&mut inv, "WEB", "SKU", "DC1").await, 1);
    server.stop().await;
}

/// The service names a server reflection of one version (`v1alpha` or `v1` of
/// `tonic_reflection::pb`) lists over `channel`.
macro_rules! reflected_services {
    ($version:ident, $channel:expr) => {{
        use r::server_reflection_request::MessageRequest;
        use r::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::$version as r;
        let mut reflection = r::server_reflection_client::ServerReflectionClient::new($channel);
        let request = r::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!(
                "expected a service list from reflection {}",
                stringify!($version)
            );
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<String>>()
    }};
}

/// Health answers SERVING; reflection (v1alpha, what grpcurl and ghz use) lists both services.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection() {
    use tonic_health::pb::health_client::HealthClient;

    let server = InProcessServer::start(SHARDS).await;
    let mut health = HealthClient::new(server.channel());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let names = reflected_services!(v1alpha, server.channel());
    assert!(
        names.contains(&"inventory.v1.InventoryService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"inventory.v1.AdminService".to_string()),
        "{names:?}"
    );

    // Reflection v1 answers too.
    let names = reflected_services!(v1, server.channel());
    assert!(
        names.iter().any(|s| s == "inventory.v1.InventoryService"),
        "{names:?}"
    );
    server.stop().await;
}
