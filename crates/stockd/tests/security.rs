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
use common::requests::channel_bps;
use common::requests::{count_now, reserve_request, ts};
use common::server::{InProcessServer, tempdir};
use common::tls::{self, Ca};
use stockd::proto::inventory::v1::admin_service_client::AdminServiceClient;
use stockd::proto::inventory::v1::event_service_client::EventServiceClient;
use stockd::proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use tonic::transport::Channel;

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

// ---- TLS ---------------------------------------------------------------------------------

/// How long a server may take to serve, or to pick up a changed file.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A server with TLS on the files `ca` signed (and, with `client_ca`, mutual TLS); its
/// certificate folder.
async fn tls_server(ca: &Ca, client_ca: Option<&Ca>) -> (InProcessServer, std::path::PathBuf) {
    let dir = tempdir();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("certs folder");
    let files = tls::write_files(&certs, &ca.server(), client_ca.map(|c| c.cert.as_str()));
    let server = InProcessServer::launch(
        dir,
        |c| {
            c.shards = 1;
            c.security.tls = Some(files);
        },
        false,
        true,
    )
    .await;
    (server, certs)
}

async fn list_channels(channel: Channel) -> Result<usize, tonic::Status> {
    let reply = AdminServiceClient::new(channel)
        .list_channels(pb::ListChannelsRequest {})
        .await?;
    Ok(reply.into_inner().channels.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_of_its_ca() {
    let ca = Ca::new("stockd test CA");
    let clients = Ca::new("client CA");
    let (server, _certs) = tls_server(&ca, Some(&clients)).await;
    let good = clients.client("spiffe://test/ns/shop/sa/storefront");
    let valid = tls::channel(server.grpc, &ca.cert, Some(&good));
    tls::wait_serving(valid.clone(), READY_TIMEOUT).await;
    assert_eq!(
        list_channels(valid)
            .await
            .expect("a valid client is served"),
        0
    );

    // Plaintext: the handshake fails, no call is answered.
    let plain = list_channels(server.channel()).await;
    assert!(plain.is_err(), "plaintext answered: {plain:?}");
    // A client certificate of another CA, and none at all.
    let stranger = Ca::new("another CA").client("spiffe://test/ns/shop/sa/storefront");
    let other = list_channels(tls::channel(server.grpc, &ca.cert, Some(&stranger))).await;
    assert!(
        other.is_err(),
        "a certificate of another CA answered: {other:?}"
    );
    let anonymous = list_channels(tls::channel(server.grpc, &ca.cert, None)).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate answered: {anonymous:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart_and_open_connections_go_on() {
    let first = Ca::new("first CA");
    let (server, certs) = tls_server(&first, None).await;
    let open = tls::channel(server.grpc, &first.cert, None);
    tls::wait_serving(open.clone(), READY_TIMEOUT).await;

    // cert-manager renews: a new key and certificate, here from a new CA, so a client
    // can tell which one the server presents.
    let second = Ca::new("second CA");
    let renewed = second.server();
    tls::write_atomically(&certs.join("server.key"), &renewed.key);
    tls::write_atomically(&certs.join("server.crt"), &renewed.cert);
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        let fresh = tls::channel(server.grpc, &second.cert, None);
        if list_channels(fresh).await.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate was not served within {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection opened before the renewal goes on.
    assert!(
        list_channels(open).await.is_ok(),
        "the open connection was dropped"
    );
    // A new client that trusts only the first CA no longer gets in.
    let old = list_channels(tls::channel(server.grpc, &first.cert, None)).await;
    assert!(old.is_err(), "the old certificate is still served: {old:?}");
    server.stop().await;
}

// ---- Identities and the policy -----------------------------------------------------------

const AVAILABILITY: &str = "inventory.v1.InventoryService/GetAvailability";
const RESERVE: &str = "inventory.v1.InventoryService/Reserve";

/// One identity of a policy: its name, its methods, its channels (`None`: every one).
type Entry<'a> = (&'a str, &'a [&'a str], Option<&'a [&'a str]>);

/// A policy file of `entries`.
fn policy(entries: &[Entry<'_>]) -> String {
    let mut text = String::new();
    for (name, methods, channels) in entries {
        text += &format!("[[identities]]\nname = {name:?}\nmethods = {methods:?}\n");
        if let Some(channels) = channels {
            text += &format!("channels = {channels:?}\n");
        }
    }
    text
}

/// `message` with `authorization: Bearer <token>` (none for an empty token).
fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if !token.is_empty() {
        let value = format!("Bearer {token}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Reserve of one unit of P1 at DC1 for `channel`, as `token`'s identity.
async fn reserve_as(channel: Channel, token: &str, channel_ref: &str) -> Result<(), tonic::Status> {
    let hold = format!("h-{channel_ref}-{}", rand::random::<u32>());
    let request = reserve_request(&hold, channel_ref, &[("P1", "DC1", 1)], 0);
    InventoryServiceClient::new(channel)
        .reserve(with_token(request, token))
        .await
        .map(|_| ())
}

#[track_caller]
fn assert_refused(result: Result<(), tonic::Status>, code: Code, names: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(names),
        "{status:?} should name {names}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_and_the_policy_decide_methods_and_channels_and_reload() {
    let dir = tempdir();
    let policy_file = dir.path().join("policy.toml");
    let tokens_file = dir.path().join("tokens");
    let write_policy = |social: &[&str]| {
        let text = policy(&[
            ("social-storefront", &[AVAILABILITY, RESERVE], Some(social)),
            (
                "warehouse-feed",
                &["inventory.v1.AdminService/SetStock"],
                None,
            ),
            ("operator", &["inventory.v1.AdminService/*"], None),
        ]);
        tls::write_atomically(&policy_file, &text);
    };
    write_policy(&["SOCIAL"]);
    let hash = |t: &str| hex(&stockd::grpc::identity::sha256(t.as_bytes()));
    let tokens = format!(
        "# sha256 identity\n{} social-storefront\n{} warehouse-feed\n{} operator\n",
        hash("social-secret"),
        hash("feed-secret"),
        hash("op-secret")
    );
    std::fs::write(&tokens_file, tokens).expect("tokens");
    let (p, t) = (policy_file.clone(), tokens_file.clone());
    // Health stays open: the start waits for a health answer without a token.
    let server = InProcessServer::start_configured(dir, move |c| {
        c.shards = 1;
        c.security.policy = Some(p);
        c.security.tokens = Some(t);
    })
    .await;
    let ch = server.channel();
    let mut admin = AdminServiceClient::new(ch.clone());
    for c in [
        channel_bps("SOCIAL", 5_000, 0),
        channel_bps("WEB", 5_000, 0),
    ] {
        let upsert = pb::UpsertChannelRequest { channel: Some(c) };
        admin
            .upsert_channel(with_token(upsert, "op-secret"))
            .await
            .expect("operator");
    }
    let set = pb::SetStockRequest {
        counts: vec![count_now("P1", "DC1", 100)],
    };
    admin
        .set_stock(with_token(set, "feed-secret"))
        .await
        .expect("feed sets stock");

    // No identity, an unknown token.
    assert_refused(
        reserve_as(ch.clone(), "", "SOCIAL").await,
        Code::Unauthenticated,
        "no identity",
    );
    assert_refused(
        reserve_as(ch.clone(), "guess", "SOCIAL").await,
        Code::Unauthenticated,
        "token",
    );
    // The storefront: its methods, its channel only.
    reserve_as(ch.clone(), "social-secret", "SOCIAL")
        .await
        .expect("SOCIAL");
    assert_refused(
        reserve_as(ch.clone(), "social-secret", "WEB").await,
        Code::PermissionDenied,
        "WEB",
    );
    let list = admin
        .list_channels(with_token(pb::ListChannelsRequest {}, "social-secret"))
        .await;
    assert_refused(list.map(|_| ()), Code::PermissionDenied, "ListChannels");
    // The feed: SetStock only.
    assert_refused(
        reserve_as(ch.clone(), "feed-secret", "SOCIAL").await,
        Code::PermissionDenied,
        "Reserve",
    );
    let upsert = pb::UpsertChannelRequest {
        channel: Some(channel_bps("WEB", 5_000, 0)),
    };
    let refused = admin
        .upsert_channel(with_token(upsert, "feed-secret"))
        .await;
    assert_refused(refused.map(|_| ()), Code::PermissionDenied, "UpsertChannel");

    // The policy changes: the storefront may use WEB too, without a restart.
    write_policy(&["SOCIAL", "WEB"]);
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    while reserve_as(ch.clone(), "social-secret", "WEB")
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the new policy was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

/// A server with `policy_text` in force and bearer `tokens` (secret, identity).
async fn policy_server(policy_text: &str, tokens: &[(&str, &str)], shards: u32) -> InProcessServer {
    let dir = tempdir();
    let policy_file = dir.path().join("policy.toml");
    let tokens_file = dir.path().join("tokens");
    std::fs::write(&policy_file, policy_text).expect("policy");
    let hash = |t: &str| hex(&stockd::grpc::identity::sha256(t.as_bytes()));
    let lines: String = tokens
        .iter()
        .map(|(secret, identity)| format!("{} {identity}\n", hash(secret)))
        .collect();
    std::fs::write(&tokens_file, lines).expect("tokens");
    InProcessServer::start_configured(dir, move |c| {
        c.shards = shards;
        c.security.policy = Some(policy_file);
        c.security.tokens = Some(tokens_file);
    })
    .await
}

/// SOCIAL and WEB, and 100 of P1 at DC1, set up as the identity of `token`.
async fn seed_channels(ch: Channel, token: &str) {
    let mut admin = AdminServiceClient::new(ch);
    for c in [
        channel_bps("SOCIAL", 5_000, 0),
        channel_bps("WEB", 5_000, 0),
    ] {
        let upsert = pb::UpsertChannelRequest { channel: Some(c) };
        admin
            .upsert_channel(with_token(upsert, token))
            .await
            .expect("channels");
    }
    let set = pb::SetStockRequest {
        counts: vec![count_now("P1", "DC1", 100)],
    };
    admin
        .set_stock(with_token(set, token))
        .await
        .expect("stock");
}

/// Two shards, SOCIAL and WEB seeded, and a policy where `social` (token `s-secret`) and
/// `web` (`w-secret`) may call `methods` for their own channel only, and `operator`
/// (`op-secret`) may administer.
async fn two_channel_server(methods: &[&str]) -> InProcessServer {
    let text = policy(&[
        ("social", methods, Some(&["SOCIAL"])),
        ("web", methods, Some(&["WEB"])),
        ("operator", &["inventory.v1.AdminService/*"], None),
    ]);
    let tokens = [
        ("s-secret", "social"),
        ("w-secret", "web"),
        ("op-secret", "operator"),
    ];
    let server = policy_server(&text, &tokens, 2).await;
    seed_channels(server.channel(), "op-secret").await;
    server
}

/// ListEvents as `token`'s identity, filtered by `channel_ref` ("" for no filter).
async fn list_events_as(
    channel: Channel,
    token: &str,
    channel_ref: &str,
) -> Result<(), tonic::Status> {
    let request = pb::ListEventsRequest {
        from_sequence: 0,
        page_size: 10,
        filter: Some(pb::EventFilter {
            channel_ref: channel_ref.into(),
            ..Default::default()
        }),
    };
    EventServiceClient::new(channel)
        .list_events(with_token(request, token))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_scoped_to_channels_reads_only_their_events() {
    let text = policy(&[
        (
            "social-analytics",
            &["inventory.v1.EventService/*"],
            Some(&["SOCIAL"]),
        ),
        ("operator", &["inventory.v1.EventService/*"], None),
    ]);
    let tokens = [("an-secret", "social-analytics"), ("op-secret", "operator")];
    let server = policy_server(&text, &tokens, 1).await;
    let ch = server.channel();
    list_events_as(ch.clone(), "an-secret", "SOCIAL")
        .await
        .expect("its channel");
    assert_refused(
        list_events_as(ch.clone(), "an-secret", "WEB").await,
        Code::PermissionDenied,
        "WEB",
    );
    assert_refused(
        list_events_as(ch.clone(), "an-secret", "").await,
        Code::PermissionDenied,
        "channel",
    );
    list_events_as(ch.clone(), "op-secret", "")
        .await
        .expect("every channel");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_scoped_to_channels_cannot_touch_another_channels_hold_by_its_ref() {
    const GET_HOLD: &str = "inventory.v1.InventoryService/GetHold";
    const RELEASE: &str = "inventory.v1.InventoryService/ReleaseHold";
    const CONFIRM: &str = "inventory.v1.InventoryService/ConfirmHold";
    let methods: &[&str] = &[RESERVE, GET_HOLD, RELEASE, CONFIRM];
    let server = two_channel_server(methods).await;
    let ch = server.channel();
    let mut inv = InventoryServiceClient::new(ch.clone());
    let reserve = reserve_request("hw", "WEB", &[("P1", "DC1", 1)], 0);
    inv.reserve(with_token(reserve, "w-secret"))
        .await
        .expect("web reserves");
    let reader = inv.clone();
    let get = |token: &'static str| {
        let mut inv = reader.clone();
        async move {
            let request = pb::GetHoldRequest {
                hold_ref: "hw".into(),
            };
            inv.get_hold(with_token(request, token))
                .await
                .map(|r| r.into_inner())
        }
    };
    // Another channel's caller can neither read, release nor confirm the hold.
    assert_refused(
        get("s-secret").await.map(|_| ()),
        Code::PermissionDenied,
        "WEB",
    );
    let release = pb::ReleaseHoldRequest {
        hold_ref: "hw".into(),
    };
    let refused = inv
        .release_hold(with_token(release.clone(), "s-secret"))
        .await;
    assert_refused(refused.map(|_| ()), Code::PermissionDenied, "WEB");
    let confirm = pb::ConfirmHoldRequest {
        hold_ref: "hw".into(),
        order_ref: "o1".into(),
        reacquire: false,
    };
    let refused = inv.confirm_hold(with_token(confirm, "s-secret")).await;
    assert_refused(refused.map(|_| ()), Code::PermissionDenied, "WEB");
    let hold = get("w-secret")
        .await
        .expect("its own hold")
        .hold
        .expect("hold");
    assert_eq!(
        hold.state,
        pb::HoldState::Active as i32,
        "the refusals changed nothing"
    );
    // An unknown ref is the call's own NOT_FOUND; the owner releases.
    let unknown = pb::GetHoldRequest {
        hold_ref: "nope".into(),
    };
    let status = inv
        .get_hold(with_token(unknown, "s-secret"))
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    inv.release_hold(with_token(release, "w-secret"))
        .await
        .expect("web releases");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_scoped_to_channels_cannot_fulfil_or_cancel_another_channels_order() {
    let methods: &[&str] = &[
        RESERVE,
        "inventory.v1.InventoryService/ConfirmHold",
        "inventory.v1.InventoryService/GetOrder",
        "inventory.v1.InventoryService/FulfilOrder",
        "inventory.v1.InventoryService/CancelOrder",
    ];
    let server = two_channel_server(methods).await;
    let ch = server.channel();
    let mut inv = InventoryServiceClient::new(ch.clone());
    let reserve = reserve_request("hw", "WEB", &[("P1", "DC1", 2)], 0);
    inv.reserve(with_token(reserve, "w-secret"))
        .await
        .expect("web reserves");
    let confirm = pb::ConfirmHoldRequest {
        hold_ref: "hw".into(),
        order_ref: "ow".into(),
        reacquire: false,
    };
    inv.confirm_hold(with_token(confirm, "w-secret"))
        .await
        .expect("web confirms");
    let fulfil = pb::FulfilOrderRequest {
        order_ref: "ow".into(),
        lines: vec![pb::OrderLine {
            product_ref: "P1".into(),
            location_ref: "DC1".into(),
            quantity: 1,
        }],
    };
    let cancel = pb::CancelOrderRequest {
        order_ref: "ow".into(),
    };
    // Another channel's caller can neither ship nor cancel the order.
    let refused = inv
        .fulfil_order(with_token(fulfil.clone(), "s-secret"))
        .await;
    assert_refused(refused.map(|_| ()), Code::PermissionDenied, "WEB");
    let refused = inv
        .cancel_order(with_token(cancel.clone(), "s-secret"))
        .await;
    assert_refused(refused.map(|_| ()), Code::PermissionDenied, "WEB");
    let get = pb::GetOrderRequest {
        order_ref: "ow".into(),
    };
    let order = inv
        .get_order(with_token(get, "w-secret"))
        .await
        .expect("its own order")
        .into_inner()
        .order
        .expect("order");
    let line = &order.lines[0];
    assert_eq!(
        (line.reserved, line.fulfilled, line.cancelled),
        (2, 0, 0),
        "the refusals changed nothing: {order:?}"
    );
    // An unknown order is the call's own NOT_FOUND; the owner ships and cancels the rest.
    let unknown = pb::CancelOrderRequest {
        order_ref: "nope".into(),
    };
    let status = inv
        .cancel_order(with_token(unknown, "s-secret"))
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    inv.fulfil_order(with_token(fulfil, "w-secret"))
        .await
        .expect("web ships");
    inv.cancel_order(with_token(cancel, "w-secret"))
        .await
        .expect("web cancels the rest");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_scoped_to_channels_gets_its_channel_report_but_no_position_history() {
    let text = policy(&[
        (
            "social-analytics",
            &["inventory.v1.EventService/*"],
            Some(&["SOCIAL"]),
        ),
        ("operator", &["inventory.v1.EventService/*"], None),
    ]);
    let tokens = [("an-secret", "social-analytics"), ("op-secret", "operator")];
    let server = policy_server(&text, &tokens, 1).await;
    let mut events = EventServiceClient::new(server.channel());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let report = |channel: &str| pb::GetChannelReportRequest {
        channel_ref: channel.into(),
        from_time: Some(ts(now - 3_600_000)),
        to_time: Some(ts(now + 60_000)),
        ..Default::default()
    };
    let history = pb::GetPositionHistoryRequest {
        product_ref: "P1".into(),
        location_ref: "DC1".into(),
        ..Default::default()
    };
    let refused = events
        .get_channel_report(with_token(report("WEB"), "an-secret"))
        .await;
    assert_refused(refused.map(|_| ()), Code::PermissionDenied, "WEB");
    // The history shows every channel's quantities: refused to a scoped caller.
    let refused = events
        .get_position_history(with_token(history.clone(), "an-secret"))
        .await;
    assert_refused(refused.map(|_| ()), Code::PermissionDenied, "channel");
    events
        .get_position_history(with_token(history, "op-secret"))
        .await
        .expect("the operator reads the history");
    // Its own channel's report is allowed: it answers, or UNAVAILABLE while the reports
    // are rebuilt from the log at start, never a refusal.
    let own = events
        .get_channel_report(with_token(report("SOCIAL"), "an-secret"))
        .await;
    if let Err(status) = own {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_name_identities_for_the_policy() {
    let ca = Ca::new("stockd test CA");
    let clients = Ca::new("client CA");
    let dir = tempdir();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("certs folder");
    let files = tls::write_files(&certs, &ca.server(), Some(&clients.cert));
    let policy_file = dir.path().join("policy.toml");
    let storefront = "spiffe://test/ns/shop/sa/social-storefront";
    let text = policy(&[
        (storefront, &[AVAILABILITY, RESERVE], Some(&["SOCIAL"])),
        ("ops.test", &["inventory.v1.AdminService/*"], None),
    ]);
    std::fs::write(&policy_file, text).expect("policy");
    let server = InProcessServer::launch(
        dir,
        |c| {
            c.shards = 1;
            c.security.tls = Some(files);
            c.security.policy = Some(policy_file);
        },
        false,
        false,
    )
    .await;
    let ops = tls::channel(server.grpc, &ca.cert, Some(&clients.client("ops.test")));
    tls::wait_serving(ops.clone(), READY_TIMEOUT).await;
    let mut admin = AdminServiceClient::new(ops.clone());
    let upsert = pb::UpsertChannelRequest {
        channel: Some(channel_bps("SOCIAL", 5_000, 0)),
    };
    admin
        .upsert_channel(upsert)
        .await
        .expect("ops (a DNS name) configures");

    let shop = tls::channel(server.grpc, &ca.cert, Some(&clients.client(storefront)));
    reserve_as(shop.clone(), "", "SOCIAL")
        .await
        .expect("the SPIFFE ID reserves on SOCIAL");
    assert_refused(
        reserve_as(shop.clone(), "", "WEB").await,
        Code::PermissionDenied,
        "WEB",
    );
    let list = AdminServiceClient::new(shop)
        .list_channels(pb::ListChannelsRequest {})
        .await;
    assert_refused(list.map(|_| ()), Code::PermissionDenied, "ListChannels");
    // A certificate of the right CA whose name the policy does not know.
    let stranger = clients.client("spiffe://test/ns/other/sa/stranger");
    let unknown = tls::channel(server.grpc, &ca.cert, Some(&stranger));
    assert_refused(
        reserve_as(unknown, "", "SOCIAL").await,
        Code::Unauthenticated,
        "stranger",
    );
    server.stop().await;
}

// ---- The admin port and reflection ----------------------------------------------------

const REFLECTION: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_addr_serves_admin_service_on_its_own_port_and_reflection_can_be_off() {
    let server = InProcessServer::launch(
        tempdir(),
        |c| {
            c.shards = 1;
            c.security.reflection = false;
        },
        true,
        false,
    )
    .await;
    assert_ne!(server.admin_addr, server.grpc);
    let client = common::client::channel(server.admin_addr);
    tls::wait_serving(client.clone(), READY_TIMEOUT).await;
    assert_eq!(list_channels(client.clone()).await.expect("admin port"), 0);
    // Each service on its own port only; health on both.
    let admin_on_grpc = list_channels(server.channel())
        .await
        .expect_err("not on grpc");
    assert_eq!(
        admin_on_grpc.code(),
        Code::Unimplemented,
        "{admin_on_grpc:?}"
    );
    let inventory_on_admin = reserve_as(client.clone(), "", "WEB")
        .await
        .expect_err("not here");
    assert_eq!(
        inventory_on_admin.code(),
        Code::Unimplemented,
        "{inventory_on_admin:?}"
    );
    common::client::wait_serving(server.grpc, READY_TIMEOUT, || None)
        .await
        .expect("health on the gRPC port");
    // --reflection false: no reflection on either port.
    for port in [server.channel(), client] {
        let off = raw::call(port, REFLECTION, Vec::new())
            .await
            .expect_err("off");
        assert_eq!(off.code(), Code::Unimplemented, "{off:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_naming_a_method_the_api_lacks_refuses_to_start() {
    let dir = tempdir();
    let file = dir.path().join("policy.toml");
    let text = policy(&[("shop", &["inventory.v1.InventoryService/Reserv"], None)]);
    std::fs::write(&file, text).expect("policy");
    let mut config = stockd::config::ServerConfig::new(dir.path().join("data"));
    config.security.policy = Some(file);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let refused = stockd::server::run(config, listener, std::future::pending())
        .await
        .expect_err("refused");
    assert!(refused.contains("Reserv\""), "{refused}");
}

#[test]
fn the_secure_overlays_policy_is_one_stockd_accepts() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../k8s/overlays/secure/policy.toml"
    );
    let text = std::fs::read(path).expect("read the overlay's policy");
    let policy = stockd::grpc::policy::Policy::parse(&text).expect("a valid policy");
    let storefront = ["spiffe://cluster.local/ns/shop/sa/social-storefront"];
    let (_, grant) = policy.grant(&storefront).expect("the storefront is listed");
    assert!(grant.allows("inventory.v1.InventoryService", "Reserve"));
    assert!(!grant.allows("inventory.v1.AdminService", "SetStock"));
}
