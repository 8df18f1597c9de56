//! Everything a client can see of a set of positions and holds, read through the API, to
//! compare what a server shows before and after a restart.

use std::collections::BTreeMap;

use stockd::proto::inventory::v1 as pb;

use super::calls::{availability, get_hold, get_position};
use super::server::{ServerProcess, fail};

/// What a client sees; two views compare equal when nothing visible changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Visible {
    pub channels: Vec<pb::Channel>,
    /// (product, location) → the position with its ledger.
    pub positions: BTreeMap<(String, String), Option<pb::Position>>,
    /// channel → ATS per key, in key order.
    pub ats: BTreeMap<String, Vec<i64>>,
    /// hold_ref → the hold with its lines sorted (None: NOT_FOUND).
    pub holds: BTreeMap<String, Option<pb::Hold>>,
}

/// Reads the channels, the positions of `keys` with their ledgers, every channel's ATS
/// of `keys`, and the holds `hold_refs`; fails with the server's log if a read fails.
pub async fn visible(
    server: &ServerProcess,
    keys: &[(String, String)],
    hold_refs: &[String],
) -> Visible {
    let mut inv = server.inventory();
    let mut admin = server.admin();
    let channels = admin
        .list_channels(pb::ListChannelsRequest {})
        .await
        .unwrap_or_else(|s| fail(&server.log(), format!("ListChannels: {s}")))
        .into_inner()
        .channels;
    let mut positions = BTreeMap::new();
    for (p, l) in keys {
        let pos = get_position(&mut admin, p, l, true)
            .await
            .unwrap_or_else(|s| fail(&server.log(), format!("GetPosition: {s}")));
        positions.insert((p.clone(), l.clone()), pos);
    }
    let mut ats = BTreeMap::new();
    for c in &channels {
        ats.insert(
            c.channel_ref.clone(),
            availability(&mut inv, &c.channel_ref, keys).await,
        );
    }
    let mut holds = BTreeMap::new();
    for r in hold_refs {
        let h = get_hold(&mut inv, r)
            .await
            .unwrap_or_else(|s| fail(&server.log(), format!("GetHold {r}: {s}")))
            .map(|mut h| {
                h.lines.sort_by(|a, b| {
                    (&a.product_ref, &a.location_ref).cmp(&(&b.product_ref, &b.location_ref))
                });
                h
            });
        holds.insert(r.clone(), h);
    }
    Visible {
        channels,
        positions,
        ats,
        holds,
    }
}

/// Panics with the first differences between two views.
pub fn assert_same(before: &Visible, after: &Visible, what: &str, log: &str) {
    if before == after {
        return;
    }
    let mut diffs = Vec::new();
    if before.channels != after.channels {
        diffs.push(format!(
            "channels:\n  before {:?}\n  after  {:?}",
            before.channels, after.channels
        ));
    }
    for (k, b) in &before.positions {
        let a = after.positions.get(k);
        if a != Some(b) {
            diffs.push(format!("position {k:?}:\n  before {b:?}\n  after  {a:?}"));
        }
    }
    for (c, b) in &before.ats {
        let a = after.ats.get(c);
        if a != Some(b) {
            diffs.push(format!("ATS of {c}:\n  before {b:?}\n  after  {a:?}"));
        }
    }
    for (r, b) in &before.holds {
        let a = after.holds.get(r);
        if a != Some(b) {
            diffs.push(format!("hold {r}:\n  before {b:?}\n  after  {a:?}"));
        }
    }
    diffs.truncate(10);
    fail(log, format!("{what}: state differs:\n{}", diffs.join("\n")));
}
