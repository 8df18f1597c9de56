//! The durability tests' world: products spread over every shard, the standard channels,
//! and a mix of holds in every state; and the data folder and the seeded start
//! (`TestFolder`, `start_seeded`) that most of them begin with.

use stockd::proto::inventory::v1 as pb;

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::calls::{
    cancel_ok, confirm_ok, fulfil_ok, release_ok, reserve_ok, set_stock_ok, upsert_channel,
};
use super::client::{Adm, Inv};
use super::requests::{channel, count, next_as_of};
use super::server::{ServerProcess, tempdir};

/// The location of every position the durability tests use (DC2 only as a second one).
pub const LOC: &str = "DC1";
/// The channel the durability tests reserve on: a buffer of one unit, no allocation cap.
pub const WEB: &str = "WEB";

/// Products `{prefix}{i}` at `location` that cover every shard (of `shards`) exactly
/// `per_shard` times, ordered shard by shard within each round.
pub fn products_on_every_shard(
    prefix: &str,
    location: &str,
    shards: usize,
    per_shard: usize,
) -> Vec<String> {
    let mut by_shard: Vec<Vec<String>> = vec![Vec::new(); shards];
    for i in 0..10_000 {
        let p = format!("{prefix}{i}");
        let s = stockd::shard::shard_of(&p, location, shards);
        if by_shard[s].len() < per_shard {
            by_shard[s].push(p);
        }
        if by_shard.iter().all(|v| v.len() == per_shard) {
            break;
        }
    }
    assert!(by_shard.iter().all(|v| v.len() == per_shard));
    let mut out = Vec::new();
    for i in 0..per_shard {
        for s in &by_shard {
            out.push(s[i].clone());
        }
    }
    out
}

/// WEB (a buffer of one unit) and SOCIAL (30% of the stock, a 10% buffer, not DC2).
pub async fn standard_channels(admin: &mut Adm) {
    web_and_social_channels(admin, &["DC2"]).await;
}

/// WEB (a buffer of one unit) and SOCIAL (30% of the stock, a 10% buffer, not at
/// `social_excluded`).
pub async fn web_and_social_channels(admin: &mut Adm, social_excluded: &[&str]) {
    upsert_channel(
        admin,
        pb::Channel {
            channel_ref: WEB.into(),
            buffer_units: 1,
            ..Default::default()
        },
    )
    .await;
    upsert_channel(
        admin,
        pb::Channel {
            channel_ref: "SOCIAL".into(),
            allocation_bps: Some(3000),
            buffer_bps: 1000,
            excluded_locations: social_excluded.iter().map(|l| l.to_string()).collect(),
            ..Default::default()
        },
    )
    .await;
}

/// A data folder for one test, removed when dropped: `data` for the server's store and
/// `logs` (the folder itself) for its log files.
pub struct TestFolder {
    dir: TempDir,
    pub data: PathBuf,
}

impl TestFolder {
    pub fn new() -> TestFolder {
        let dir = tempdir();
        let data = dir.path().join("data");
        TestFolder { dir, data }
    }

    pub fn logs(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the real binary on this folder with the extra arguments.
    pub async fn start(&self, args: &[&str]) -> ServerProcess {
        ServerProcess::start(&self.data, self.logs(), args).await
    }
}

/// The channels a seeded server starts with.
pub enum Channels {
    /// WEB with every setting at its default.
    PlainWeb,
    /// `standard_channels`: WEB and SOCIAL.
    Standard,
}

/// Starts the real binary on `folder` with `args`, upserts `channels`, and counts
/// `quantity(i)` units at the i-th of `keys` (one count time for all). Returns the server
/// and a client of each service.
pub async fn start_seeded(
    folder: &TestFolder,
    args: &[&str],
    channels: Channels,
    keys: &[(String, String)],
    quantity: impl Fn(usize) -> i64,
) -> (ServerProcess, Adm, Inv) {
    let server = folder.start(args).await;
    let mut admin = server.admin();
    let inv = server.inventory();
    match channels {
        Channels::PlainWeb => upsert_channel(&mut admin, channel(WEB)).await,
        Channels::Standard => standard_channels(&mut admin).await,
    }
    let t = next_as_of();
    let counts = keys
        .iter()
        .enumerate()
        .map(|(i, (p, l))| count(p, l, quantity(i), t))
        .collect();
    set_stock_ok(&mut admin, counts).await;
    (server, admin, inv)
}

/// A mix of holds over `products` (at least 6): active, multi-line, confirmed, partly
/// and wholly fulfilled, released, cancelled. Returns the hold refs.
pub async fn hold_mix(inv: &mut Inv, products: &[String], tag: &str) -> Vec<String> {
    let l = |i: usize, q: i64| (products[i % products.len()].clone(), LOC.to_string(), q);
    let mut refs = Vec::new();
    let mut r = |s: &str| {
        let s = format!("{tag}-{s}");
        refs.push(s.clone());
        s
    };
    let a1 = r("active-1");
    reserve_ok(inv, &a1, WEB, &[l(0, 2)], 3600).await;
    let a2 = r("active-3-lines");
    reserve_ok(inv, &a2, WEB, &[l(1, 1), l(2, 2), l(3, 3)], 3600).await;
    let c1 = r("confirmed-2-lines");
    reserve_ok(inv, &c1, WEB, &[l(4, 2), l(5, 1)], 3600).await;
    confirm_ok(inv, &c1, &format!("{c1}-order")).await;
    let c2 = r("part-fulfilled");
    reserve_ok(inv, &c2, WEB, &[l(0, 3), l(2, 1), l(4, 2)], 3600).await;
    confirm_ok(inv, &c2, &format!("{c2}-order")).await;
    fulfil_ok(inv, &format!("{c2}-order"), &[l(0, 2), l(4, 2)]).await;
    let c3 = r("fulfilled");
    reserve_ok(inv, &c3, WEB, &[l(1, 1), l(3, 1)], 3600).await;
    confirm_ok(inv, &c3, &format!("{c3}-order")).await;
    fulfil_ok(inv, &format!("{c3}-order"), &[]).await;
    let r1 = r("released");
    reserve_ok(inv, &r1, WEB, &[l(2, 2), l(5, 2)], 3600).await;
    release_ok(inv, &r1).await;
    let x1 = r("cancelled");
    reserve_ok(inv, &x1, WEB, &[l(3, 1), l(5, 1)], 3600).await;
    confirm_ok(inv, &x1, &format!("{x1}-order")).await;
    cancel_ok(inv, &format!("{x1}-order")).await;
    refs.push(format!("{tag}-never-reserved"));
    refs
}
