//! Holds and orders as queryable things, over real gRPC on 127.0.0.1: ListHolds (the
//! abandoned carts of a channel in a time window, paged with no duplicate and no gap),
//! GetOrder through its lifecycle, GetHold showing the order's state, an order over
//! several shards (only its shards contacted), bad input, channel scopes, and a SIGKILL
//! and restart of the real binary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::calls::{
    cancel_ok, confirm_ok, fulfil_ok, get_hold, release_ok, reserve_ok, stock, upsert_channel,
};
use common::client::Inv;
use common::fixtures::{TestFolder, products_on_every_shard};
use common::requests::{channel, now_millis, reserve_request, ts, ts_millis};
use common::server::{InProcessServer, tempdir};
use stockd::proto::inventory::v1 as pb;
use stockd::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use tonic::Code;

const LOC: &str = "DC1";

fn line(product: &str, quantity: i64) -> (String, String, i64) {
    (product.to_string(), LOC.to_string(), quantity)
}

/// Every page of a listing, following its tokens (bounded: a listing that never ends
/// fails the test).
async fn pages(inv: &mut Inv, mut request: pb::ListHoldsRequest) -> Vec<Vec<pb::Hold>> {
    let mut out = Vec::new();
    for _ in 0..1_000 {
        let page = inv
            .list_holds(request.clone())
            .await
            .unwrap_or_else(|s| panic!("ListHolds: {s}"))
            .into_inner();
        out.push(page.holds);
        if page.next_page_token.is_empty() {
            return out;
        }
        request.page_token = page.next_page_token;
    }
    panic!("the listing did not end");
}

/// The refs of every listed hold, in listing order.
async fn listed(inv: &mut Inv, request: pb::ListHoldsRequest) -> Vec<String> {
    pages(inv, request)
        .await
        .into_iter()
        .flatten()
        .map(|h| h.hold_ref)
        .collect()
}

fn expired_on(channel_ref: &str, from: i64, to: i64, page_size: i32) -> pb::ListHoldsRequest {
    pb::ListHoldsRequest {
        channel_ref: channel_ref.into(),
        state: pb::HoldState::Expired as i32,
        time_field: pb::HoldTimeField::Ended as i32,
        start_time: Some(ts(from)),
        end_time: Some(ts(to)),
        page_size,
        page_token: String::new(),
    }
}

async fn get_order(inv: &mut Inv, order_ref: &str) -> Result<pb::Order, tonic::Status> {
    inv.get_order(pb::GetOrderRequest {
        order_ref: order_ref.into(),
    })
    .await
    .map(|r| r.into_inner().order.expect("an order"))
}

/// (product, quantity, reserved, fulfilled, cancelled) of each line, sorted.
fn order_lines(order: &pb::Order) -> Vec<(String, i64, i64, i64, i64)> {
    let mut lines: Vec<_> = order
        .lines
        .iter()
        .map(|l| {
            let q = (l.quantity, l.reserved, l.fulfilled, l.cancelled);
            (l.product_ref.clone(), q.0, q.1, q.2, q.3)
        })
        .collect();
    lines.sort();
    lines
}

/// Sleeps until the clock is past `millis` (a hold's deadline).
async fn sleep_past(millis: i64) {
    let wait = (millis - now_millis() + 20).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

#[track_caller]
fn assert_invalid(result: Result<impl std::fmt::Debug, tonic::Status>, field: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field),
        "{status:?} should name {field}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_carts_of_a_channel_in_a_time_window_page_with_no_duplicate_and_no_gap() {
    let server = InProcessServer::start(2).await;
    let (mut admin, mut inv) = (server.admin(), server.inventory());
    upsert_channel(&mut admin, channel("WEB")).await;
    upsert_channel(&mut admin, channel("SOCIAL")).await;
    for p in ["P1", "P2", "P3"] {
        stock(&mut admin, p, LOC, 1_000).await;
    }
    let since = now_millis();
    let mut abandoned = BTreeSet::new();
    let mut deadline = 0;
    for i in 0..9 {
        let hold_ref = format!("cart-social-{i}");
        let p = ["P1", "P2", "P3"][i % 3];
        let hold = reserve_ok(&mut inv, &hold_ref, "SOCIAL", &[line(p, 1)], 1).await;
        deadline = deadline.max(ts_millis(&hold.expires_at).expect("expires_at"));
        abandoned.insert(hold_ref);
    }
    // Not abandoned carts of SOCIAL: another channel's, a confirmed, a released and a
    // still active one.
    reserve_ok(&mut inv, "cart-web", "WEB", &[line("P1", 1)], 1).await;
    reserve_ok(&mut inv, "cart-bought", "SOCIAL", &[line("P2", 1)], 1).await;
    confirm_ok(&mut inv, "cart-bought", "order-bought").await;
    reserve_ok(&mut inv, "cart-dropped", "SOCIAL", &[line("P3", 1)], 1).await;
    release_ok(&mut inv, "cart-dropped").await;
    reserve_ok(&mut inv, "cart-open", "SOCIAL", &[line("P1", 1)], 600).await;
    sleep_past(deadline).await;

    let until = now_millis() + 1;
    let all = pages(&mut inv, expired_on("SOCIAL", since, until, 2)).await;
    assert!(all.iter().all(|p| p.len() <= 2), "pages are bounded");
    let holds: Vec<pb::Hold> = all.into_iter().flatten().collect();
    let refs: Vec<String> = holds.iter().map(|h| h.hold_ref.clone()).collect();
    let unique: BTreeSet<String> = refs.iter().cloned().collect();
    assert_eq!(unique.len(), refs.len(), "no duplicate: {refs:?}");
    assert_eq!(unique, abandoned, "no gap, nothing else");
    let keys: Vec<(i64, String)> = holds
        .iter()
        .map(|h| {
            (
                ts_millis(&h.ended_at).expect("ended_at"),
                h.hold_ref.clone(),
            )
        })
        .collect();
    assert!(
        keys.is_sorted(),
        "ordered by (ended_at, hold_ref): {keys:?}"
    );
    for h in &holds {
        assert_eq!(h.state, pb::HoldState::Expired as i32);
        assert_eq!(
            h.ended_at, h.expires_at,
            "an expired hold ended at its deadline"
        );
        assert_eq!(h.lines.len(), 1);
    }

    // The window bounds the listing; one big page equals the small pages.
    assert!(
        listed(&mut inv, expired_on("SOCIAL", since - 60_000, since, 0))
            .await
            .is_empty()
    );
    let one_page = listed(&mut inv, expired_on("SOCIAL", since, until, 500)).await;
    assert_eq!(one_page, refs);
    // Every state, by creation time, on SOCIAL; and the active carts.
    let created = |state: pb::HoldState| pb::ListHoldsRequest {
        channel_ref: "SOCIAL".into(),
        state: state as i32,
        start_time: Some(ts(since)),
        page_size: 3,
        ..Default::default()
    };
    let every = listed(&mut inv, created(pb::HoldState::Unspecified)).await;
    assert_eq!(every.len(), abandoned.len() + 3, "{every:?}");
    let active = listed(&mut inv, created(pb::HoldState::Active)).await;
    assert_eq!(active, vec!["cart-open".to_string()]);
    let confirmed = pb::ListHoldsRequest {
        state: pb::HoldState::Confirmed as i32,
        time_field: pb::HoldTimeField::Ended as i32,
        ..Default::default()
    };
    let confirmed = pages(&mut inv, confirmed).await.concat();
    assert_eq!(confirmed.len(), 1);
    assert_eq!(confirmed[0].order_state, pb::OrderState::Open as i32);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_resume_exactly_while_holds_keep_coming() {
    let server = InProcessServer::start(2).await;
    let (mut admin, mut inv) = (server.admin(), server.inventory());
    upsert_channel(&mut admin, channel("WEB")).await;
    stock(&mut admin, "P1", LOC, 10_000).await;
    stock(&mut admin, "P2", LOC, 10_000).await;
    let since = now_millis();
    let mut made = Vec::new();
    for i in 0..40 {
        let h = format!("early-{i:02}");
        let p = if i % 2 == 0 { "P1" } else { "P2" };
        reserve_ok(&mut inv, &h, "WEB", &[line(p, 1)], 600).await;
        made.push(h);
    }
    let mut request = pb::ListHoldsRequest {
        channel_ref: "WEB".into(),
        start_time: Some(ts(since)),
        page_size: 7,
        ..Default::default()
    };
    let mut seen = Vec::new();
    for round in 0.. {
        let page = inv
            .list_holds(request.clone())
            .await
            .expect("ListHolds")
            .into_inner();
        seen.extend(page.holds.into_iter().map(|h| h.hold_ref));
        // New carts arrive between pages: each lands after everything listed so far.
        let h = format!("late-{round:02}");
        reserve_ok(&mut inv, &h, "WEB", &[line("P1", 1)], 600).await;
        made.push(h);
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicate");
    assert_eq!(
        &seen[..40],
        &made[..40],
        "the early carts, in creation order, no gap"
    );
    assert!(seen[40..].iter().all(|h| h.starts_with("late-")));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_order_follows_confirm_partial_fulfil_and_cancel_and_get_hold_shows_its_state() {
    let server = InProcessServer::start(2).await;
    let (mut admin, mut inv) = (server.admin(), server.inventory());
    upsert_channel(&mut admin, channel("WEB")).await;
    for p in ["P1", "P2", "P3"] {
        stock(&mut admin, p, LOC, 100).await;
    }
    let lines = [line("P1", 3), line("P2", 2)];
    reserve_ok(&mut inv, "cart-1", "WEB", &lines, 600).await;
    let hold = get_hold(&mut inv, "cart-1").await.unwrap().unwrap();
    assert_eq!(hold.order_state, pb::OrderState::Unspecified as i32);
    assert_eq!(hold.ended_at, None, "an active hold has not ended");
    confirm_ok(&mut inv, "cart-1", "order-1").await;

    let order = get_order(&mut inv, "order-1").await.expect("GetOrder");
    assert_eq!(
        (order.hold_ref.as_str(), order.channel_ref.as_str()),
        ("cart-1", "WEB")
    );
    assert_eq!(order.state, pb::OrderState::Open as i32);
    assert_eq!(
        order_lines(&order),
        vec![("P1".into(), 3, 3, 0, 0), ("P2".into(), 2, 2, 0, 0)]
    );
    assert_eq!(order.hold_created_at, hold.created_at);

    fulfil_ok(&mut inv, "order-1", &[line("P1", 2)]).await;
    let order = get_order(&mut inv, "order-1").await.expect("GetOrder");
    assert_eq!(order.state, pb::OrderState::PartiallyFulfilled as i32);
    assert_eq!(
        order_lines(&order),
        vec![("P1".into(), 3, 1, 2, 0), ("P2".into(), 2, 2, 0, 0)]
    );

    cancel_ok(&mut inv, "order-1").await;
    let order = get_order(&mut inv, "order-1").await.expect("GetOrder");
    assert_eq!(order.state, pb::OrderState::Cancelled as i32);
    assert_eq!(
        order_lines(&order),
        vec![("P1".into(), 3, 0, 2, 1), ("P2".into(), 2, 0, 0, 2)]
    );
    cancel_ok(&mut inv, "order-1").await;
    assert_eq!(
        get_order(&mut inv, "order-1").await.expect("again"),
        order,
        "idempotent"
    );
    let hold = get_hold(&mut inv, "cart-1").await.unwrap().unwrap();
    assert_eq!(
        hold.state,
        pb::HoldState::Confirmed as i32,
        "the hold stays confirmed"
    );
    assert_eq!(hold.order_state, pb::OrderState::Cancelled as i32);
    assert!(
        hold.ended_at.is_some(),
        "a confirmed hold ended when confirmed"
    );

    reserve_ok(&mut inv, "cart-2", "WEB", &[line("P3", 4)], 600).await;
    confirm_ok(&mut inv, "cart-2", "order-2").await;
    fulfil_ok(&mut inv, "order-2", &[]).await;
    let order = get_order(&mut inv, "order-2").await.expect("GetOrder");
    assert_eq!(order.state, pb::OrderState::Fulfilled as i32);
    assert_eq!(order_lines(&order), vec![("P3".into(), 4, 0, 4, 0)]);
    let hold = get_hold(&mut inv, "cart-2").await.unwrap().unwrap();
    assert_eq!(hold.order_state, pb::OrderState::Fulfilled as i32);

    let unknown = get_order(&mut inv, "no-such-order")
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_and_tokens_are_invalid_argument_naming_the_field() {
    let server = InProcessServer::start(1).await;
    let mut inv = server.inventory();
    let base = pb::ListHoldsRequest::default();
    let bad = [
        (
            pb::ListHoldsRequest {
                page_size: -1,
                ..base.clone()
            },
            "page_size",
        ),
        (
            pb::ListHoldsRequest {
                state: 42,
                ..base.clone()
            },
            "state",
        ),
        (
            pb::ListHoldsRequest {
                time_field: 9,
                ..base.clone()
            },
            "time_field",
        ),
        (
            pb::ListHoldsRequest {
                channel_ref: "SO:CIAL".into(),
                ..base.clone()
            },
            "channel_ref",
        ),
        (
            pb::ListHoldsRequest {
                start_time: Some(ts(2_000)),
                end_time: Some(ts(1_000)),
                ..base.clone()
            },
            "end_time",
        ),
        (
            pb::ListHoldsRequest {
                start_time: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: -5,
                }),
                ..base.clone()
            },
            "start_time",
        ),
        (
            pb::ListHoldsRequest {
                state: pb::HoldState::Active as i32,
                time_field: pb::HoldTimeField::Ended as i32,
                ..base.clone()
            },
            "state",
        ),
        (
            pb::ListHoldsRequest {
                page_token: "not a token".into(),
                ..base.clone()
            },
            "page_token",
        ),
    ];
    for (request, field) in bad {
        assert_invalid(inv.list_holds(request).await, field);
    }
    // A token is only good for the filters that made it.
    let mut admin = server.admin();
    upsert_channel(&mut admin, channel("WEB")).await;
    stock(&mut admin, "P1", LOC, 10).await;
    reserve_ok(&mut inv, "a", "WEB", &[line("P1", 1)], 600).await;
    reserve_ok(&mut inv, "b", "WEB", &[line("P1", 1)], 600).await;
    let first = pb::ListHoldsRequest {
        page_size: 1,
        ..base.clone()
    };
    let page = inv
        .list_holds(first.clone())
        .await
        .expect("ListHolds")
        .into_inner();
    assert_eq!(page.holds.len(), 1);
    assert!(!page.next_page_token.is_empty());
    let other = pb::ListHoldsRequest {
        channel_ref: "WEB".into(),
        page_token: page.next_page_token,
        ..first
    };
    assert_invalid(inv.list_holds(other).await, "page_token");

    assert_invalid(get_order(&mut inv, "").await, "order_ref");
    assert_invalid(get_order(&mut inv, "bad:ref").await, "order_ref");
    let unknown = get_order(&mut inv, "never-confirmed")
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    server.stop().await;
}

/// `message` with `authorization: Bearer <token>`.
fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {token}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_scoped_to_channels_lists_and_reads_only_its_channels() {
    let dir = tempdir();
    let policy = dir.path().join("policy.toml");
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &policy,
        "[[identities]]\nname = \"social\"\nmethods = [\"inventory.v1.InventoryService/*\"]\n\
         channels = [\"SOCIAL\"]\n\n[[identities]]\nname = \"operator\"\n\
         methods = [\"inventory.v1.InventoryService/*\", \"inventory.v1.AdminService/*\"]\n",
    )
    .expect("policy");
    let hash = |t: &str| -> String {
        let digest = stockd::grpc::identity::sha256(t.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    };
    let lines = format!(
        "{} social\n{} operator\n",
        hash("s-secret"),
        hash("op-secret")
    );
    std::fs::write(&tokens, lines).expect("tokens");
    let server = InProcessServer::start_configured(dir, move |c| {
        c.shards = 2;
        c.security.policy = Some(policy);
        c.security.tokens = Some(tokens);
    })
    .await;
    let ch = server.channel();
    let mut admin =
        stockd::proto::inventory::v1::admin_service_client::AdminServiceClient::new(ch.clone());
    for c in ["WEB", "SOCIAL"] {
        let upsert = pb::UpsertChannelRequest {
            channel: Some(channel(c)),
        };
        admin
            .upsert_channel(with_token(upsert, "op-secret"))
            .await
            .expect("channel");
    }
    let count = pb::SetStockRequest {
        counts: vec![common::requests::count_now("P1", LOC, 100)],
    };
    admin
        .set_stock(with_token(count, "op-secret"))
        .await
        .expect("stock");
    let mut inv = InventoryServiceClient::new(ch);
    for (h, c, token) in [("hs", "SOCIAL", "s-secret"), ("hw", "WEB", "op-secret")] {
        let reserve = reserve_request(h, c, &[("P1", LOC, 1)], 600);
        inv.reserve(with_token(reserve, token))
            .await
            .expect("reserve");
        let confirm = pb::ConfirmHoldRequest {
            hold_ref: h.into(),
            order_ref: format!("order-{h}"),
            reacquire: false,
        };
        inv.confirm_hold(with_token(confirm, token))
            .await
            .expect("confirm");
    }
    let list = |channel_ref: &str| pb::ListHoldsRequest {
        channel_ref: channel_ref.into(),
        ..Default::default()
    };
    let mine = inv
        .list_holds(with_token(list("SOCIAL"), "s-secret"))
        .await
        .expect("SOCIAL");
    let refs: Vec<String> = mine
        .into_inner()
        .holds
        .into_iter()
        .map(|h| h.hold_ref)
        .collect();
    assert_eq!(refs, vec!["hs".to_string()]);
    for (channel_ref, names) in [("WEB", "WEB"), ("", "channel_ref")] {
        let refused = inv
            .list_holds(with_token(list(channel_ref), "s-secret"))
            .await;
        let status = refused.expect_err("another channel's holds");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains(names), "{status:?}");
    }
    let all = inv
        .list_holds(with_token(list(""), "op-secret"))
        .await
        .expect("every channel");
    assert_eq!(all.into_inner().holds.len(), 2);
    let order = |r: &str| pb::GetOrderRequest {
        order_ref: r.into(),
    };
    inv.get_order(with_token(order("order-hs"), "s-secret"))
        .await
        .expect("its order");
    let refused = inv
        .get_order(with_token(order("order-hw"), "s-secret"))
        .await;
    let status = refused.expect_err("another channel's order");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    server.stop().await;
}

/// GET /metrics of the real binary (its `--metrics-addr`), bounded in time.
fn scrape(addr: SocketAddr) -> String {
    for _ in 0..200 {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        if let Ok(body) = attempt
            && body.starts_with("HTTP/1.1 200")
        {
            return body;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("cannot scrape {addr}");
}

/// `stockd_shard_messages_total` by kind.
fn messages(addr: SocketAddr) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for l in scrape(addr).lines() {
        if let Some(rest) = l.strip_prefix("stockd_shard_messages_total{kind=\"") {
            let (kind, value) = rest.split_once("\"} ").expect("a labelled sample");
            out.insert(
                kind.to_string(),
                value.trim().parse::<f64>().expect("number") as u64,
            );
        }
    }
    out
}

fn metrics_addr(args: &[String]) -> SocketAddr {
    let at = args
        .iter()
        .position(|a| a == "--metrics-addr")
        .expect("flag");
    args[at + 1].parse().expect("an address")
}

/// What a client sees of the test's holds and orders.
async fn view(inv: &mut Inv) -> (Vec<pb::Hold>, Vec<pb::Order>) {
    let all = pb::ListHoldsRequest {
        page_size: 2,
        ..Default::default()
    };
    let holds = pages(inv, all).await.concat();
    let mut orders = Vec::new();
    for o in ["order-wide", "order-part", "order-cancel"] {
        orders.push(get_order(inv, o).await.expect("GetOrder"));
    }
    (holds, orders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_over_several_of_4_shards_contacts_only_them_and_all_survives_a_sigkill() {
    let folder = TestFolder::new();
    let server = folder.start(&["--shards", "4"]).await;
    let (mut admin, mut inv) = (server.admin(), server.inventory());
    upsert_channel(&mut admin, channel("WEB")).await;
    upsert_channel(&mut admin, channel("SOCIAL")).await;
    // One product per shard, in shard order.
    let products = products_on_every_shard("SKU", LOC, 4, 1);
    for p in &products {
        stock(&mut admin, p, LOC, 100).await;
    }
    // An order over shards 0 and 2 only.
    let wide = [line(&products[0], 2), line(&products[2], 3)];
    reserve_ok(&mut inv, "cart-wide", "WEB", &wide, 600).await;
    confirm_ok(&mut inv, "cart-wide", "order-wide").await;
    let metrics = metrics_addr(&server.args);
    let before = messages(metrics);
    let order = get_order(&mut inv, "order-wide").await.expect("GetOrder");
    let after = messages(metrics);
    let sent = after.get("order").copied().unwrap_or(0) - before.get("order").copied().unwrap_or(0);
    assert_eq!(sent, 2, "GetOrder asks the order's two shards only");
    assert_eq!(order_lines(&order), {
        let mut l = vec![
            (products[0].clone(), 2, 2, 0, 0),
            (products[2].clone(), 3, 3, 0, 0),
        ];
        l.sort();
        l
    });
    // A partly fulfilled order over three shards, a cancelled one, an abandoned cart.
    let three = [
        line(&products[1], 1),
        line(&products[2], 1),
        line(&products[3], 2),
    ];
    reserve_ok(&mut inv, "cart-part", "SOCIAL", &three, 600).await;
    confirm_ok(&mut inv, "cart-part", "order-part").await;
    fulfil_ok(&mut inv, "order-part", &[line(&products[3], 1)]).await;
    reserve_ok(
        &mut inv,
        "cart-cancel",
        "WEB",
        &[line(&products[1], 1), line(&products[3], 1)],
        600,
    )
    .await;
    confirm_ok(&mut inv, "cart-cancel", "order-cancel").await;
    cancel_ok(&mut inv, "order-cancel").await;
    let gone = reserve_ok(&mut inv, "cart-gone", "SOCIAL", &wide, 1).await;
    sleep_past(ts_millis(&gone.expires_at).expect("expires_at")).await;

    let (holds, orders) = view(&mut inv).await;
    assert_eq!(
        holds.len(),
        4,
        "each hold once, however many shards it spans"
    );
    let part = holds
        .iter()
        .find(|h| h.hold_ref == "cart-part")
        .expect("listed");
    assert_eq!(part.lines.len(), 3, "listed whole");
    assert_eq!(part.order_state, pb::OrderState::PartiallyFulfilled as i32);
    assert_eq!(orders[1].state, pb::OrderState::PartiallyFulfilled as i32);
    assert_eq!(orders[2].state, pb::OrderState::Cancelled as i32);
    let abandoned = listed(&mut inv, expired_on("SOCIAL", 0, now_millis() + 1, 0)).await;
    assert_eq!(abandoned, vec!["cart-gone".to_string()]);

    // SIGKILL, then start on the same folder: the same listing and orders (SIGTERM and
    // other crashes are the durability tests'; the listing indexes come back with the
    // engines from checkpoint and log).
    let mut server = server;
    server.kill();
    let server = folder.start(&["--shards", "4"]).await;
    let mut inv = server.inventory();
    assert_eq!(view(&mut inv).await, (holds, orders), "after SIGKILL");
    let abandoned = listed(&mut inv, expired_on("SOCIAL", 0, now_millis() + 1, 0)).await;
    assert_eq!(abandoned, vec!["cart-gone".to_string()]);
}
