//! Locations, networks, network availability and fulfilment options (issue #15), through
//! real gRPC on 127.0.0.1: the seed-style scenarios of the issue, bad input naming its
//! field, and the configuration surviving restarts of the real binary.

mod common;

use stockd::proto::inventory::v1 as pb;
use tonic::Code;

use common::calls::{ats, set_stock_ok, upsert_channel};
use common::client::Adm;
use common::fixtures::TestFolder;
use common::requests::{channel, count_now};
use common::server::{InProcessServer, fail};

const WEB: &str = "WEB";

fn location(r: &str, kind: pb::LocationType, hd: bool, cc: bool, priority: i32) -> pb::Location {
    pb::Location {
        location_ref: r.into(),
        r#type: kind as i32,
        ships_home_delivery: hd,
        serves_click_collect: cc,
        priority,
    }
}

fn dc(r: &str, priority: i32) -> pb::Location {
    location(r, pb::LocationType::Warehouse, true, false, priority)
}

fn store(r: &str, priority: i32) -> pb::Location {
    location(r, pb::LocationType::Store, false, true, priority)
}

async fn upsert_locations(admin: &mut Adm, locations: Vec<pb::Location>) {
    admin
        .upsert_locations(pb::UpsertLocationsRequest { locations })
        .await
        .unwrap_or_else(|s| panic!("UpsertLocations: {s}"));
}

fn named_network(channel_ref: &str, locations: &[&str]) -> pb::ChannelNetwork {
    pb::ChannelNetwork {
        channel_ref: channel_ref.into(),
        network_ref: "online".into(),
        all_locations: false,
        locations: locations.iter().map(|l| l.to_string()).collect(),
    }
}

async fn set_network(admin: &mut Adm, network: pb::ChannelNetwork) -> Result<(), tonic::Status> {
    admin
        .set_channel_network(pb::SetChannelNetworkRequest {
            network: Some(network),
        })
        .await
        .map(|_| ())
}

async fn location_refs(admin: &mut Adm) -> Vec<String> {
    let r = admin
        .list_locations(pb::ListLocationsRequest {})
        .await
        .expect("ListLocations")
        .into_inner();
    r.locations.into_iter().map(|l| l.location_ref).collect()
}

async fn networks(admin: &mut Adm) -> Vec<pb::ChannelNetwork> {
    admin
        .list_channel_networks(pb::ListChannelNetworksRequest {})
        .await
        .expect("ListChannelNetworks")
        .into_inner()
        .networks
}

/// The code and message of a refused call.
fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    match r {
        Err(s) => (s.code(), s.message().to_string()),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

// =====================================================================================
// Locations and networks
// =====================================================================================

#[tokio::test]
async fn locations_and_networks_are_configured_and_checked() {
    let server = InProcessServer::start(2).await;
    let mut admin = server.admin();
    let mut inv = server.inventory();
    upsert_channel(&mut admin, channel(WEB)).await;
    upsert_locations(
        &mut admin,
        vec![dc("DC1", 1), dc("DC2", 2), store("ST1", 5)],
    )
    .await;
    assert_eq!(location_refs(&mut admin).await, ["DC1", "DC2", "ST1"]);
    set_stock_ok(
        &mut admin,
        vec![count_now("SKU", "DC1", 5), count_now("SKU", "DC2", 7)],
    )
    .await;

    // A named network: nothing sells outside it.
    set_network(&mut admin, named_network(WEB, &["DC1", "ST1"]))
        .await
        .expect("SetChannelNetwork");
    assert_eq!(ats(&mut inv, WEB, "SKU", "DC1").await, 5);
    assert_eq!(ats(&mut inv, WEB, "SKU", "DC2").await, 0);
    assert_eq!(
        networks(&mut admin).await,
        [named_network(WEB, &["DC1", "ST1"])]
    );

    // Deleting a location takes it out of the network.
    admin
        .delete_location(pb::DeleteLocationRequest {
            location_ref: "ST1".into(),
        })
        .await
        .expect("DeleteLocation");
    assert_eq!(networks(&mut admin).await, [named_network(WEB, &["DC1"])]);

    // All locations again.
    let all = pb::ChannelNetwork {
        all_locations: true,
        locations: vec![],
        ..named_network(WEB, &[])
    };
    set_network(&mut admin, all).await.expect("all locations");
    assert_eq!(ats(&mut inv, WEB, "SKU", "DC2").await, 7);

    // Bad input names its field; unknown refs are NOT_FOUND.
    let (code, msg) = refused(set_network(&mut admin, named_network("NOPE", &["DC1"])).await);
    assert_eq!(code, Code::NotFound, "{msg}");
    let (code, msg) = refused(set_network(&mut admin, named_network(WEB, &["DC9"])).await);
    assert_eq!((code, msg.contains("DC9")), (Code::NotFound, true), "{msg}");
    let (code, msg) = refused(set_network(&mut admin, named_network(WEB, &["DC1", "DC1"])).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.starts_with("network.locations[1]"), "{msg}");
    let bad_type = location("X", pb::LocationType::Unspecified, true, false, 0);
    let (code, msg) = refused(
        admin
            .upsert_locations(pb::UpsertLocationsRequest {
                locations: vec![bad_type],
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.starts_with("locations[0].type"), "{msg}");
    let (code, _) = refused(
        admin
            .delete_location(pb::DeleteLocationRequest {
                location_ref: "ST1".into(),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    server.stop().await;
}

/// Locations and networks are configuration: logged, checkpointed and recovered like
/// channels, by the real binary after a SIGKILL (log replay) and after a clean stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_and_networks_survive_restarts() {
    let folder = TestFolder::new();
    let args = ["--shards", "2", "--snapshot-every-records", "3"];
    let server = folder.start(&args).await;
    let mut admin = server.admin();
    upsert_channel(&mut admin, channel(WEB)).await;
    upsert_channel(&mut admin, channel("POS")).await;
    upsert_locations(
        &mut admin,
        vec![dc("DC1", 1), dc("DC2", 2), store("ST1", 5)],
    )
    .await;
    set_network(&mut admin, named_network(WEB, &["DC2", "ST1"]))
        .await
        .expect("SetChannelNetwork");
    set_stock_ok(
        &mut admin,
        vec![count_now("SKU", "DC1", 5), count_now("SKU", "DC2", 7)],
    )
    .await;
    let mut server = server;
    for round in ["after SIGKILL", "after SIGTERM"] {
        match round {
            "after SIGKILL" => server.kill(),
            _ => {
                let status = server.terminate().await;
                assert!(status.success(), "SIGTERM: exit {status}\n{}", server.log());
            }
        }
        server = folder.start(&args).await;
        let mut admin = server.admin();
        let mut inv = server.inventory();
        let refs = location_refs(&mut admin).await;
        if refs != ["DC1", "DC2", "ST1"] {
            fail(&server.log(), format!("{round}: locations {refs:?}"));
        }
        let nets = networks(&mut admin).await;
        if nets != [named_network(WEB, &["DC2", "ST1"])] {
            fail(&server.log(), format!("{round}: networks {nets:?}"));
        }
        let got = (
            ats(&mut inv, WEB, "SKU", "DC1").await,
            ats(&mut inv, WEB, "SKU", "DC2").await,
            ats(&mut inv, "POS", "SKU", "DC1").await,
        );
        if got != (0, 7, 5) {
            fail(&server.log(), format!("{round}: ATS {got:?}"));
        }
    }
}

// =====================================================================================
// Network availability
// =====================================================================================

async fn network_ats(
    inv: &mut common::client::Inv,
    channel_ref: &str,
    products: &[&str],
    include_locations: bool,
) -> Result<Vec<pb::NetworkAvailability>, tonic::Status> {
    inv.get_network_availability(pb::GetNetworkAvailabilityRequest {
        channel_ref: channel_ref.into(),
        product_refs: products.iter().map(|p| p.to_string()).collect(),
        include_locations,
    })
    .await
    .map(|r| r.into_inner().products)
}

/// "Is it in stock online" is one call: the sum over the network, exclusions and
/// ring-fences applied, equal to the per-location reads.
#[tokio::test]
async fn network_availability_sums_the_network() {
    let server = InProcessServer::start(3).await;
    let mut admin = server.admin();
    let mut inv = server.inventory();
    // WEB: 60% ring-fence, excluded at DC3. SOCIAL: 40%, everywhere.
    let mut web = common::requests::channel_bps(WEB, 6_000, 0);
    web.excluded_locations = vec!["DC3".into()];
    upsert_channel(&mut admin, web).await;
    upsert_channel(
        &mut admin,
        common::requests::channel_bps("SOCIAL", 4_000, 0),
    )
    .await;
    upsert_locations(
        &mut admin,
        (1..=4).map(|i| dc(&format!("DC{i}"), i)).collect(),
    )
    .await;
    let mut counts = Vec::new();
    for (p, q) in [("A", 10), ("B", 3)] {
        for i in 1..=4 {
            counts.push(count_now(p, &format!("DC{i}"), q * i as i64));
        }
    }
    set_stock_ok(&mut admin, counts).await;
    for channel_ref in [WEB, "SOCIAL"] {
        let answer = network_ats(&mut inv, channel_ref, &["A", "B", "C"], true)
            .await
            .expect("GetNetworkAvailability");
        for a in &answer {
            let mut per_location = Vec::new();
            for i in 1..=4 {
                let l = format!("DC{i}");
                if channel_ref == WEB && l == "DC3" {
                    continue;
                }
                per_location.push((
                    l.clone(),
                    ats(&mut inv, channel_ref, &a.product_ref, &l).await,
                ));
            }
            let got: Vec<(String, i64)> = a
                .locations
                .iter()
                .map(|l| (l.location_ref.clone(), l.quantity))
                .collect();
            assert_eq!(got, per_location, "{channel_ref} {}", a.product_ref);
            assert_eq!(a.quantity, per_location.iter().map(|l| l.1).sum::<i64>());
        }
        assert_eq!(
            answer
                .iter()
                .map(|a| a.product_ref.as_str())
                .collect::<Vec<_>>(),
            ["A", "B", "C"]
        );
    }
    // WEB: floor(0.6 × 10i) at DC1, DC2, DC4 = 6 + 12 + 24.
    let web = network_ats(&mut inv, WEB, &["A"], false).await.unwrap();
    assert_eq!((web[0].quantity, web[0].locations.len()), (42, 0));

    let (code, _) = refused(network_ats(&mut inv, "NOPE", &["A"], false).await);
    assert_eq!(code, Code::NotFound);
    let (code, msg) = refused(network_ats(&mut inv, WEB, &[], false).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.starts_with("product_refs"), "{msg}");
    let (code, msg) = refused(network_ats(&mut inv, WEB, &["A", "A"], false).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.starts_with("product_refs[1]"), "{msg}");
    server.stop().await;
}

// =====================================================================================
// Fulfilment options
// =====================================================================================

fn cart(lines: &[(&str, i64)]) -> Vec<pb::FulfilmentLine> {
    lines
        .iter()
        .map(|(p, q)| pb::FulfilmentLine {
            product_ref: p.to_string(),
            quantity: *q,
        })
        .collect()
}

fn home_delivery(lines: &[(&str, i64)], allow_split: bool) -> pb::GetFulfilmentOptionsRequest {
    pb::GetFulfilmentOptionsRequest {
        channel_ref: WEB.into(),
        lines: cart(lines),
        delivery_type: pb::DeliveryType::HomeDelivery as i32,
        allow_split,
        ..Default::default()
    }
}

fn click_collect(
    lines: &[(&str, i64)],
    store: &str,
    allow_transfer: bool,
) -> pb::GetFulfilmentOptionsRequest {
    pb::GetFulfilmentOptionsRequest {
        delivery_type: pb::DeliveryType::ClickAndCollect as i32,
        store_ref: store.into(),
        allow_transfer,
        ..home_delivery(lines, false)
    }
}

async fn options(
    inv: &mut common::client::Inv,
    request: pb::GetFulfilmentOptionsRequest,
) -> Result<pb::GetFulfilmentOptionsResponse, tonic::Status> {
    inv.get_fulfilment_options(request)
        .await
        .map(|r| r.into_inner())
}

/// Each plan as its parts' (location, transfer, [(product, quantity)]).
type PlanShape = Vec<(String, bool, Vec<(String, i64)>)>;

fn shapes(r: &pb::GetFulfilmentOptionsResponse) -> Vec<PlanShape> {
    r.plans
        .iter()
        .map(|p| {
            p.parts
                .iter()
                .map(|part| {
                    let lines = part
                        .lines
                        .iter()
                        .map(|l| (l.product_ref.clone(), l.quantity));
                    (part.location_ref.clone(), part.transfer, lines.collect())
                })
                .collect()
        })
        .collect()
}

fn part(
    location: &str,
    transfer: bool,
    lines: &[(&str, i64)],
) -> (String, bool, Vec<(String, i64)>) {
    let lines = lines.iter().map(|(p, q)| (p.to_string(), *q)).collect();
    (location.to_string(), transfer, lines)
}

/// WEB over DC1 (priority 2), DC2 (priority 1), two collecting stores ST1 and ST2, and a
/// store ST3 that does not collect.
async fn fulfilment_world(server: &InProcessServer, stock: &[(&str, &str, i64)]) {
    let mut admin = server.admin();
    upsert_channel(&mut admin, channel(WEB)).await;
    upsert_locations(
        &mut admin,
        vec![
            dc("DC1", 2),
            dc("DC2", 1),
            store("ST1", 5),
            store("ST2", 5),
            location("ST3", pb::LocationType::Store, false, false, 5),
        ],
    )
    .await;
    let counts = stock.iter().map(|(p, l, q)| count_now(p, l, *q)).collect();
    set_stock_ok(&mut admin, counts).await;
}

#[tokio::test]
async fn a_cart_whole_at_one_dc_gets_that_dc_first() {
    let server = InProcessServer::start(3).await;
    let stock = [
        ("A", "DC1", 5),
        ("B", "DC1", 5),
        ("C", "DC1", 5),
        ("A", "DC2", 5),
        ("B", "DC2", 5),
        ("C", "ST1", 9),
    ];
    fulfilment_world(&server, &stock).await;
    let mut inv = server.inventory();
    let cart3 = [("A", 2), ("B", 2), ("C", 2)];
    let r = options(&mut inv, home_delivery(&cart3, true))
        .await
        .expect("options");
    let plans = shapes(&r);
    // DC1 alone first, though DC2 has the better priority: one location before a split.
    assert_eq!(plans[0], [part("DC1", false, &cart3)]);
    // ST1 does not ship: no plan uses it.
    assert!(plans.iter().flatten().all(|p| p.0 != "ST1"), "{plans:?}");
    assert!(plans[1..].iter().all(|p| p.len() == 2), "{plans:?}");
    assert_eq!(r.outcome, pb::ReserveOutcome::Unspecified as i32);
    let available: Vec<i64> = r.lines.iter().map(|l| l.available).collect();
    assert_eq!(available, [10, 10, 5]);
    // max_plans bounds the answer.
    let one = pb::GetFulfilmentOptionsRequest {
        max_plans: 1,
        ..home_delivery(&cart3, true)
    };
    assert_eq!(options(&mut inv, one).await.unwrap().plans.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_split_cart_is_offered_only_when_splits_are_allowed() {
    let server = InProcessServer::start(2).await;
    fulfilment_world(
        &server,
        &[("A", "DC1", 3), ("B", "DC1", 3), ("C", "DC2", 3)],
    )
    .await;
    let mut inv = server.inventory();
    let cart3 = [("A", 1), ("B", 1), ("C", 1)];
    let r = options(&mut inv, home_delivery(&cart3, true))
        .await
        .unwrap();
    assert_eq!(
        shapes(&r),
        [vec![
            part("DC1", false, &[("A", 1), ("B", 1)]),
            part("DC2", false, &[("C", 1)])
        ]]
    );
    // No split allowed: nothing, a stockout that says what the network has.
    let r = options(&mut inv, home_delivery(&cart3, false))
        .await
        .unwrap();
    assert!(r.plans.is_empty());
    let lines: Vec<(i64, i64)> = r.lines.iter().map(|l| (l.requested, l.available)).collect();
    assert_eq!(lines, [(1, 3), (1, 3), (1, 3)]);
    // More than the network has: nothing even with splits.
    let r = options(&mut inv, home_delivery(&[("A", 4)], true))
        .await
        .unwrap();
    assert!(r.plans.is_empty());
    assert_eq!((r.lines[0].requested, r.lines[0].available), (4, 3));
    server.stop().await;
}

#[tokio::test]
async fn click_and_collect_is_served_at_the_store_or_by_transfer() {
    let server = InProcessServer::start(2).await;
    fulfilment_world(
        &server,
        &[("A", "ST1", 2), ("A", "DC1", 5), ("A", "DC2", 1)],
    )
    .await;
    let mut inv = server.inventory();
    let r = options(&mut inv, click_collect(&[("A", 2)], "ST1", true))
        .await
        .unwrap();
    let plans = shapes(&r);
    assert_eq!(plans[0], [part("ST1", false, &[("A", 2)])]);
    assert_eq!(plans[1], [part("DC1", true, &[("A", 2)])]);
    // ST2 has none: a transfer plan when allowed, else nothing.
    let r = options(&mut inv, click_collect(&[("A", 2)], "ST2", true))
        .await
        .unwrap();
    assert_eq!(shapes(&r)[0], [part("DC1", true, &[("A", 2)])]);
    let r = options(&mut inv, click_collect(&[("A", 2)], "ST2", false))
        .await
        .unwrap();
    assert!(r.plans.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn bad_fulfilment_requests_name_their_field() {
    let server = InProcessServer::start(1).await;
    fulfilment_world(&server, &[("A", "DC1", 5)]).await;
    let mut inv = server.inventory();
    let check =
        |r: Result<pb::GetFulfilmentOptionsResponse, tonic::Status>, code: Code, field: &str| {
            let (got, msg) = refused(r);
            assert_eq!(got, code, "{msg}");
            assert!(
                msg.starts_with(field) || msg.contains(field),
                "{field}: {msg}"
            );
        };
    let unknown_type = pb::GetFulfilmentOptionsRequest {
        delivery_type: 9,
        ..home_delivery(&[("A", 1)], true)
    };
    check(
        options(&mut inv, unknown_type).await,
        Code::InvalidArgument,
        "delivery_type",
    );
    let unset = pb::GetFulfilmentOptionsRequest {
        delivery_type: 0,
        ..home_delivery(&[("A", 1)], true)
    };
    check(
        options(&mut inv, unset).await,
        Code::InvalidArgument,
        "delivery_type",
    );
    check(
        options(&mut inv, click_collect(&[("A", 1)], "", true)).await,
        Code::InvalidArgument,
        "store_ref",
    );
    check(
        options(&mut inv, click_collect(&[("A", 1)], "ST3", true)).await,
        Code::InvalidArgument,
        "store_ref",
    );
    check(
        options(&mut inv, click_collect(&[("A", 1)], "DC1", true)).await,
        Code::InvalidArgument,
        "store_ref",
    );
    check(
        options(&mut inv, click_collect(&[("A", 1)], "ST9", true)).await,
        Code::NotFound,
        "ST9",
    );
    check(
        options(&mut inv, home_delivery(&[("A", 1), ("A", 2)], true)).await,
        Code::InvalidArgument,
        "lines[1].product_ref",
    );
    check(
        options(&mut inv, home_delivery(&[("A", 0)], true)).await,
        Code::InvalidArgument,
        "lines[0].quantity",
    );
    let many: Vec<(String, i64)> = (0..21).map(|i| (format!("P{i}"), 1)).collect();
    let many: Vec<(&str, i64)> = many.iter().map(|(p, q)| (p.as_str(), *q)).collect();
    check(
        options(&mut inv, home_delivery(&many, true)).await,
        Code::InvalidArgument,
        "lines",
    );
    let too_many_plans = pb::GetFulfilmentOptionsRequest {
        max_plans: 11,
        ..home_delivery(&[("A", 1)], true)
    };
    check(
        options(&mut inv, too_many_plans).await,
        Code::InvalidArgument,
        "max_plans",
    );
    let no_channel = pb::GetFulfilmentOptionsRequest {
        channel_ref: "NOPE".into(),
        ..home_delivery(&[("A", 1)], true)
    };
    check(options(&mut inv, no_channel).await, Code::NotFound, "NOPE");
    server.stop().await;
}

// =====================================================================================
// Reserving a plan
// =====================================================================================

fn held(r: &pb::GetFulfilmentOptionsResponse) -> Vec<(String, String, i64)> {
    r.hold
        .as_ref()
        .map(common::calls::hold_lines)
        .unwrap_or_default()
}

fn with_hold(
    request: pb::GetFulfilmentOptionsRequest,
    hold_ref: &str,
) -> pb::GetFulfilmentOptionsRequest {
    pb::GetFulfilmentOptionsRequest {
        hold_ref: hold_ref.into(),
        ttl_seconds: 600,
        ..request
    }
}

/// The best plan is held under the cart's ref; the same call again is idempotent, and a
/// changed cart is a cart update that counts the hold's own units as available.
#[tokio::test]
async fn the_best_plan_is_held_with_reserves_rules() {
    let server = InProcessServer::start(2).await;
    fulfilment_world(
        &server,
        &[("A", "DC1", 5), ("B", "DC1", 5), ("A", "DC2", 9)],
    )
    .await;
    let mut inv = server.inventory();
    let request = with_hold(home_delivery(&[("A", 2), ("B", 2)], true), "cart-1");
    let want = vec![
        ("A".to_string(), "DC1".to_string(), 2),
        ("B".to_string(), "DC1".to_string(), 2),
    ];
    for round in ["first", "repeat"] {
        let r = options(&mut inv, request.clone()).await.expect("options");
        assert_eq!(r.outcome, pb::ReserveOutcome::Reserved as i32, "{round}");
        assert_eq!(r.held_plan, Some(0), "{round}");
        assert_eq!(shapes(&r)[0], [part("DC1", false, &[("A", 2), ("B", 2)])]);
        let mut got = held(&r);
        got.sort();
        assert_eq!(got, want, "{round}");
        assert_eq!(ats(&mut inv, WEB, "A", "DC1").await, 3, "{round}");
    }
    // A cart update to 5 A: DC1 has 3 free plus the 2 this hold keeps.
    let update = with_hold(home_delivery(&[("A", 5), ("B", 2)], true), "cart-1");
    let r = options(&mut inv, update).await.unwrap();
    assert_eq!(r.held_plan, Some(0));
    assert_eq!(shapes(&r)[0], [part("DC1", false, &[("A", 5), ("B", 2)])]);
    assert_eq!(ats(&mut inv, WEB, "A", "DC1").await, 0);
    assert_eq!(ats(&mut inv, WEB, "B", "DC1").await, 3);
    // Nothing left for another whole cart at DC1: no split allowed, so nothing is held.
    let other = with_hold(home_delivery(&[("A", 1), ("B", 1)], false), "cart-2");
    let r = options(&mut inv, other).await.unwrap();
    assert_eq!(r.outcome, pb::ReserveOutcome::Rejected as i32);
    assert!(r.plans.is_empty() && r.hold.is_none() && r.held_plan.is_none());
    assert_eq!(
        common::calls::get_hold(&mut inv, "cart-2").await.unwrap(),
        None
    );
    server.stop().await;
}

/// Carts racing for the last units: each unit is held once, the losers of a plan get the
/// next one, and the rest get an empty answer. Nothing is oversold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_carts_never_oversell() {
    const DCS: usize = 4;
    const CARTS: usize = 10;
    let server = InProcessServer::start(3).await;
    let mut admin = server.admin();
    upsert_channel(&mut admin, channel(WEB)).await;
    upsert_locations(
        &mut admin,
        (0..DCS).map(|i| dc(&format!("DC{i}"), i as i32)).collect(),
    )
    .await;
    for round in 0..3 {
        let product = format!("LAST{round}");
        let counts = (0..DCS)
            .map(|i| count_now(&product, &format!("DC{i}"), 1))
            .collect();
        set_stock_ok(&mut admin, counts).await;
        let calls = (0..CARTS).map(|c| {
            let mut inv = server.inventory();
            let request = with_hold(
                home_delivery(&[(product.as_str(), 1)], false),
                &format!("race-{round}-{c}"),
            );
            tokio::spawn(async move { options(&mut inv, request).await })
        });
        let answers: Vec<pb::GetFulfilmentOptionsResponse> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.expect("task").expect("GetFulfilmentOptions"))
            .collect();
        let mut locations: Vec<String> = answers.iter().flat_map(held).map(|(_, l, _)| l).collect();
        locations.sort();
        let want: Vec<String> = (0..DCS).map(|i| format!("DC{i}")).collect();
        assert_eq!(
            locations, want,
            "round {round}: every unit held exactly once"
        );
        let rejected = answers
            .iter()
            .filter(|a| a.outcome == pb::ReserveOutcome::Rejected as i32 && a.plans.is_empty())
            .count();
        assert_eq!(rejected, CARTS - DCS, "round {round}");
        let mut inv = server.inventory();
        let left = network_ats(&mut inv, WEB, &[product.as_str()], false)
            .await
            .unwrap();
        assert_eq!(left[0].quantity, 0, "round {round}");
    }
    server.stop().await;
}

/// `[[locations]]` and `[[networks]]` of the `--config` TOML are applied at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_boot_config_sets_locations_and_networks() {
    let folder = TestFolder::new();
    let path = folder.logs().join("stockd.toml");
    std::fs::write(
        &path,
        r#"
[[channels]]
channel_ref = "WEB"

[[locations]]
location_ref = "DC1"
kind = "warehouse"
priority = 1

[[locations]]
location_ref = "ST1"
kind = "store"
ships_home_delivery = false
serves_click_collect = true

[[networks]]
channel_ref = "WEB"
network_ref = "online"
locations = ["ST1"]
"#,
    )
    .expect("write the config");
    let path = path.to_string_lossy().to_string();
    let server = folder.start(&["--shards", "2", "--config", &path]).await;
    let mut admin = server.admin();
    let locations = admin
        .list_locations(pb::ListLocationsRequest {})
        .await
        .expect("ListLocations")
        .into_inner()
        .locations;
    let want = vec![dc("DC1", 1), store("ST1", 0)];
    if locations != want {
        fail(&server.log(), format!("locations {locations:?}"));
    }
    assert_eq!(networks(&mut admin).await, [named_network(WEB, &["ST1"])]);
}
