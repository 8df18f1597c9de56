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
