//! A position's history and channel reports over real gRPC on 127.0.0.1:
//!
//! - GetPositionHistory shows every IQ a scripted SetStock / AdjustStock / Reserve /
//!   Confirm / Fulfil made ACTIVE or INACTIVE, in order, each with the event that caused
//!   it, across small pages; what stays ACTIVE is the position's ledger;
//! - GetChannelReport's figures equal those this test computes from the same run's
//!   events (ListEvents), and again after a restart rebuilt them from the log;
//! - bad input is INVALID_ARGUMENT naming the field.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::calls::{
    cancel_ok, confirm_ok, fulfil_ok, get_position, list_all, release_ok, reserve_ok,
    reserve_reply, stock, upsert_channel,
};
use common::client::{self, wait_serving};
use common::fixtures::{LOC, WEB};
use common::requests::{channel, now_millis, reserve_request, ts};
use common::server::{InProcessServer, READY_TIMEOUT, Spawned, spawn_in_process, tempdir};
use stockd::config::ServerConfig;
use stockd::proto::inventory::v1 as pb;
use stockd::proto::inventory::v1::event_service_client::EventServiceClient;
use tonic::transport::Channel;

type Ev = EventServiceClient<Channel>;
use pb::EventKind as K;

/// The time-to-confirmation histogram's bucket bounds (ms), as events.proto documents them.
const CONFIRM_BOUNDS_MS: [i64; 15] = [
    1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000,
    3_600_000, 7_200_000, 21_600_000, 86_400_000,
];

async fn start(shards: u32) -> (Spawned, tempfile::TempDir) {
    let dir = tempdir();
    let mut config = ServerConfig::new(dir.path().join("data"));
    config.shards = shards;
    let spawned = spawn_in_process(config).await;
    wait_serving(spawned.grpc, READY_TIMEOUT, || None)
        .await
        .expect("the server starts");
    (spawned, dir)
}

/// Counts one more position and waits until its event is readable: every event of the
/// calls answered before is readable (and in the report) by then.
async fn barrier(admin: &mut client::Adm, ev: &mut Ev, tag: &str) {
    let product = format!("BARRIER-{tag}");
    stock(admin, &product, LOC, 1).await;
    for _ in 0..3000 {
        let page = ev
            .list_events(pb::ListEventsRequest {
                filter: Some(pb::EventFilter {
                    product_ref: product.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("ListEvents");
        if !page.get_ref().events.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the barrier's event never came");
}

/// The whole history of a position, `page_size` changes at a time.
async fn history(ev: &mut Ev, product: &str, page_size: u32) -> Vec<pb::PositionChange> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = ev
            .get_position_history(pb::GetPositionHistoryRequest {
                product_ref: product.into(),
                location_ref: LOC.into(),
                page_size,
                page_token: token,
            })
            .await
            .expect("GetPositionHistory")
            .into_inner();
        assert!(page.changes.len() <= page_size as usize);
        out.extend(page.changes);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

fn adjustment(
    adj: &str,
    product: &str,
    kind: pb::AdjustmentType,
    q: i64,
) -> pb::AdjustStockRequest {
    pb::AdjustStockRequest {
        adjustments: vec![pb::StockAdjustment {
            adjustment_ref: adj.into(),
            product_ref: product.into(),
            location_ref: LOC.into(),
            r#type: kind as i32,
            quantity: q,
            occurred_at: None,
        }],
    }
}

fn line(p: &str, q: i64) -> (String, String, i64) {
    (p.to_string(), LOC.to_string(), q)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_positions_history_shows_every_iq_change_with_its_event() {
    let (server, _dir) = start(2).await;
    let (mut admin, mut inv) = (client::admin(server.grpc), client::inventory(server.grpc));
    let mut ev = EventServiceClient::new(client::channel(server.grpc));
    upsert_channel(&mut admin, channel(WEB)).await;
    stock(&mut admin, "P1", LOC, 10).await;
    admin
        .adjust_stock(adjustment("ADJ-1", "P1", pb::AdjustmentType::Delta, 5))
        .await
        .expect("AdjustStock");
    // A later count supersedes the first count and the delta before it.
    stock(&mut admin, "P1", LOC, 20).await;
    reserve_ok(&mut inv, "H1", WEB, &[line("P1", 3)], 0).await;
    confirm_ok(&mut inv, "H1", "O1").await;
    fulfil_ok(&mut inv, "O1", &[line("P1", 1)]).await;
    barrier(&mut admin, &mut ev, "history").await;

    let changes = history(&mut ev, "P1", 2).await;
    let seen: Vec<(K, pb::QuantityType, pb::QuantityStatus, i64)> = changes
        .iter()
        .map(|c| {
            let q = c.quantity.as_ref().expect("a quantity");
            (
                K::try_from(c.kind).unwrap(),
                pb::QuantityType::try_from(q.r#type).unwrap(),
                pb::QuantityStatus::try_from(q.status).unwrap(),
                q.quantity,
            )
        })
        .collect();
    use pb::QuantityStatus::{Active as On, Inactive as Off};
    use pb::QuantityType as T;
    assert_eq!(
        seen,
        [
            (K::StockCounted, T::LastOnHand, On, 10),
            (K::StockAdjusted, T::Delta, On, 5),
            (K::StockCounted, T::LastOnHand, Off, 10),
            (K::StockCounted, T::Delta, Off, 5),
            (K::StockCounted, T::LastOnHand, On, 20),
            (K::HoldCreated, T::SoftReserve, On, -3),
            (K::HoldConfirmed, T::SoftReserve, Off, -3),
            (K::HoldConfirmed, T::Reserved, On, -3),
            (K::OrderFulfilled, T::Reserved, Off, -3),
            (K::OrderFulfilled, T::Sale, On, -1),
            (K::OrderFulfilled, T::Reserved, On, -2),
        ]
    );
    // Each change names its event: the same sequence, kind and time ListEvents has.
    let events: BTreeMap<u64, pb::Event> = list_all(&mut ev)
        .await
        .into_iter()
        .map(|e| (e.sequence, e))
        .collect();
    for c in &changes {
        let e = &events[&c.sequence];
        assert_eq!((e.kind, &e.time), (c.kind, &c.time), "{c:?}");
    }
    let owners: Vec<(&str, &str, &str)> = changes
        .iter()
        .map(|c| c.quantity.as_ref().unwrap())
        .map(|q| {
            (
                q.hold_ref.as_str(),
                q.order_ref.as_str(),
                q.adjustment_ref.as_str(),
            )
        })
        .collect();
    assert_eq!(owners[1], ("", "", "ADJ-1"));
    assert_eq!(owners[5], ("H1", "", ""));
    assert_eq!(owners[9], ("", "O1", ""));
    // What is still ACTIVE at the end is the ledger GetPosition shows.
    let mut active: Vec<String> = Vec::new();
    for c in &changes {
        let q = c.quantity.as_ref().unwrap();
        if q.status == On as i32 {
            active.push(q.r#ref.clone());
        } else {
            active.retain(|r| *r != q.r#ref);
        }
    }
    let position = get_position(&mut admin, "P1", LOC, true)
        .await
        .expect("GetPosition")
        .expect("the position");
    let mut ledger: Vec<String> = position
        .quantities
        .iter()
        .map(|q| q.r#ref.clone())
        .collect();
    active.sort();
    ledger.sort();
    assert_eq!(active, ledger);
    // Pages of any size give the same history.
    let whole = history(&mut ev, "P1", 1000).await;
    assert_eq!(whole, changes);
    let _ = server.stop.send(());
}

/// The report figures of `channel` computed from the events, as events.proto defines them.
fn figures_of(events: &[pb::Event], channel: &str) -> pb::ChannelFigures {
    let mut f = pb::ChannelFigures::default();
    let mut confirm_ms = Vec::new();
    for e in events {
        let k = K::try_from(e.kind).unwrap();
        if k == K::StockAdjusted {
            for c in &e.quantity_changes {
                let q = c.quantity.as_ref().unwrap();
                if q.r#type == pb::QuantityType::Returned as i32 && q.status == 1 {
                    f.units_returned += q.quantity;
                }
            }
        }
        if e.channel_ref != channel {
            continue;
        }
        let counted = |n: &mut u64| *n += u64::from(e.primary);
        match k {
            K::HoldCreated => {
                counted(&mut f.holds_created);
                f.units_held += e.quantity;
            }
            K::HoldUpdated => counted(&mut f.holds_updated),
            K::HoldConfirmed => {
                counted(&mut f.holds_confirmed);
                f.units_confirmed += e.quantity;
                if e.primary {
                    let created = e.hold_created_time.as_ref().expect("a creation time");
                    let at = e.time.as_ref().unwrap();
                    let ms = (at.seconds - created.seconds) * 1000
                        + i64::from(at.nanos - created.nanos) / 1_000_000;
                    confirm_ms.push(ms);
                }
            }
            K::HoldReleased => counted(&mut f.holds_released),
            K::HoldExpired => counted(&mut f.holds_expired),
            K::OrderFulfilled => f.units_sold += e.quantity,
            K::OrderCancelled => f.units_cancelled += e.quantity,
            K::ReserveRejected => {
                f.stockout_rejections += 1;
                f.units_requested += e.requested;
                f.units_available += e.available;
            }
            _ => {}
        }
    }
    f.conversion_bps = (f.holds_confirmed * 10_000)
        .checked_div(f.holds_created)
        .unwrap_or(0) as u32;
    confirm_ms.sort();
    let pct = |p: usize| {
        let rank = (p * confirm_ms.len()).div_ceil(100).max(1);
        let ms = confirm_ms[rank - 1];
        let bound = CONFIRM_BOUNDS_MS
            .iter()
            .find(|b| ms <= **b)
            .copied()
            .unwrap_or(ms);
        prost_types::Duration {
            seconds: bound / 1000,
            nanos: ((bound % 1000) * 1_000_000) as i32,
        }
    };
    if !confirm_ms.is_empty() {
        f.confirm_time_p50 = Some(pct(50));
        f.confirm_time_p90 = Some(pct(90));
    }
    f
}

async fn report(ev: &mut Ev, request: pb::GetChannelReportRequest) -> pb::GetChannelReportResponse {
    // Right after start the report may still be rebuilding from the log: UNAVAILABLE.
    for _ in 0..1000 {
        match ev.get_channel_report(request.clone()).await {
            Ok(r) => return r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable => {}
            Err(s) => panic!("GetChannelReport: {s}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the report never became available");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_report_equals_what_the_event_stream_says() {
    let server = InProcessServer::start(2).await;
    let (mut admin, mut inv) = (client::admin(server.grpc), client::inventory(server.grpc));
    let mut ev = EventServiceClient::new(client::channel(server.grpc));
    upsert_channel(&mut admin, channel(WEB)).await;
    upsert_channel(&mut admin, channel("SOCIAL")).await;
    for (p, q) in [("P1", 10), ("P2", 4), ("P3", 2), ("P4", 6)] {
        stock(&mut admin, p, LOC, q).await;
    }
    let started = now_millis();
    reserve_ok(&mut inv, "C1", WEB, &[line("P1", 2), line("P2", 1)], 0).await;
    reserve_ok(&mut inv, "C1", WEB, &[line("P1", 3), line("P2", 1)], 0).await;
    confirm_ok(&mut inv, "C1", "O1").await;
    fulfil_ok(&mut inv, "O1", &[line("P1", 2)]).await;
    cancel_ok(&mut inv, "O1").await;
    reserve_ok(&mut inv, "C2", WEB, &[line("P4", 1)], 0).await;
    confirm_ok(&mut inv, "C2", "O2").await;
    reserve_ok(&mut inv, "C3", WEB, &[line("P3", 1)], 0).await;
    release_ok(&mut inv, "C3").await;
    reserve_ok(&mut inv, "C4", WEB, &[line("P4", 1)], 1).await;
    reserve_ok(&mut inv, "S1", "SOCIAL", &[line("P1", 1)], 0).await;
    for (hold, p, q) in [("R1", "P3", 5), ("R2", "P2", 50), ("R3", "P3", 9)] {
        let r = reserve_reply(&mut inv, reserve_request(hold, WEB, &[(p, LOC, q)], 0)).await;
        assert_eq!(r.outcome, pb::ReserveOutcome::Rejected as i32);
    }
    admin
        .adjust_stock(adjustment("RET-1", "P1", pb::AdjustmentType::Returned, 2))
        .await
        .expect("AdjustStock");
    // C4's one-second timer runs out: an abandoned cart.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    barrier(&mut admin, &mut ev, "report").await;

    let events = list_all(&mut ev).await;
    assert!(
        events.iter().any(|e| e.kind == K::HoldExpired as i32),
        "C4 expired"
    );
    let whole = pb::GetChannelReportRequest {
        channel_ref: WEB.into(),
        from_time: Some(ts(started - 3_600_000)),
        to_time: Some(ts(now_millis() + 3_600_000)),
        ..Default::default()
    };
    let got = report(&mut ev, whole.clone()).await;
    let want = figures_of(&events, WEB);
    assert_eq!(got.figures, Some(want));
    assert!(want.holds_created == 4 && want.holds_updated == 1 && want.stockout_rejections == 3);
    assert!(got.products_complete);
    let ranked: Vec<(&str, i64)> = got
        .top_rejected
        .iter()
        .map(|r| (r.product_ref.as_str(), r.units_requested))
        .collect();
    assert_eq!(ranked, [("P2", 50), ("P3", 14)]);

    // One product: its rejected demand and its sales.
    let p3 = report(
        &mut ev,
        pb::GetChannelReportRequest {
            product_ref: "P3".into(),
            ..whole.clone()
        },
    )
    .await;
    let f = p3.figures.unwrap();
    assert_eq!((f.stockout_rejections, f.units_requested), (2, 14));
    assert_eq!((f.holds_created, f.holds_released, f.units_held), (1, 1, 1));
    let p1 = report(
        &mut ev,
        pb::GetChannelReportRequest {
            product_ref: "P1".into(),
            ..whole.clone()
        },
    )
    .await
    .figures
    .unwrap();
    assert_eq!(
        (p1.units_sold, p1.units_cancelled, p1.units_returned),
        (2, 1, 2)
    );
    let social = report(
        &mut ev,
        pb::GetChannelReportRequest {
            channel_ref: "SOCIAL".into(),
            ..whole.clone()
        },
    )
    .await;
    assert_eq!(social.figures, Some(figures_of(&events, "SOCIAL")));

    // After a restart (and a shard-count change) the buckets are rebuilt from the log.
    let server = server.restart(1).await;
    let mut ev = EventServiceClient::new(client::channel(server.grpc));
    let again = report(&mut ev, whole).await;
    assert_eq!(
        (again.figures, again.top_rejected),
        (got.figures, got.top_rejected)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_report_and_history_requests_name_their_field() {
    let (server, _dir) = start(1).await;
    let mut ev = EventServiceClient::new(client::channel(server.grpc));
    let now = now_millis();
    let good = pb::GetChannelReportRequest {
        channel_ref: WEB.into(),
        from_time: Some(ts(now - 60_000)),
        to_time: Some(ts(now)),
        ..Default::default()
    };
    let cases = [
        (
            "channel_ref",
            pb::GetChannelReportRequest {
                channel_ref: String::new(),
                ..good.clone()
            },
        ),
        (
            "from_time",
            pb::GetChannelReportRequest {
                from_time: None,
                ..good.clone()
            },
        ),
        (
            "to_time",
            pb::GetChannelReportRequest {
                to_time: None,
                ..good.clone()
            },
        ),
        (
            "to_time",
            pb::GetChannelReportRequest {
                to_time: Some(ts(now - 120_000)),
                ..good.clone()
            },
        ),
        (
            "product_ref",
            pb::GetChannelReportRequest {
                product_ref: "a:b".into(),
                ..good.clone()
            },
        ),
        (
            "top_products",
            pb::GetChannelReportRequest {
                top_products: 1_000,
                ..good.clone()
            },
        ),
    ];
    for (field, request) in cases {
        let status = ev.get_channel_report(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{field}: {status}"
        );
        assert!(status.message().contains(field), "{field}: {status}");
    }
    let good = pb::GetPositionHistoryRequest {
        product_ref: "P1".into(),
        location_ref: LOC.into(),
        ..Default::default()
    };
    let cases = [
        (
            "product_ref",
            pb::GetPositionHistoryRequest {
                product_ref: String::new(),
                ..good.clone()
            },
        ),
        (
            "location_ref",
            pb::GetPositionHistoryRequest {
                location_ref: "x y".into(),
                ..good.clone()
            },
        ),
        (
            "page_size",
            pb::GetPositionHistoryRequest {
                page_size: 5_000,
                ..good.clone()
            },
        ),
        (
            "page_token",
            pb::GetPositionHistoryRequest {
                page_token: "zzz".into(),
                ..good.clone()
            },
        ),
    ];
    for (field, request) in cases {
        let status = ev.get_position_history(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{field}: {status}"
        );
        assert!(status.message().contains(field), "{field}: {status}");
    }
    // A position nobody touched has an empty history, not an error.
    let empty = ev.get_position_history(good).await.unwrap().into_inner();
    assert!(empty.changes.is_empty() && empty.next_page_token.is_empty());
    let _ = server.stop.send(());
}
