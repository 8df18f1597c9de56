//! Holds: a cart's soft reservation under a client-owned ref, as one shard sees it.
//!
//! A hold whose lines live on several shards is stored as one part per shard. Every
//! part carries the digest of the whole request and the number of request lines it
//! answered for, so that after a crash the parts of a hold can be checked for
//! completeness without any shard knowing the others.
//!
//! A reserve that spans shards (a new cart or a cart update on several shards) carries an
//! `UpdateTag`: the cart version it writes and every shard it was sent to. Each part it
//! writes keeps that version for good, and, until the update is known complete, a
//! `PartUpdate`: the participants and the part it replaced. A shard the update leaves
//! without a line keeps a tombstone part (no line, answers as no part) carrying what it
//! replaced. Recovery sees every shard: it puts every previous part back unless every
//! participant logged the version, so a cart update is atomic across crashes.

use std::collections::BTreeSet;
use std::collections::hash_map::Entry;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::Millis;
use super::order::OrderState;
use super::refs::{Sym, fnv1a};
use super::request::OrderLine;
use super::snapshot::HoldSnap;

/// The life of a hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldState {
    Active,
    Confirmed,
    Released,
    Expired,
}

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Active => "ACTIVE",
            HoldState::Confirmed => "CONFIRMED",
            HoldState::Released => "RELEASED",
            HoldState::Expired => "EXPIRED",
        }
    }
}

/// One reserved line of a hold part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartLine {
    pub product: Sym,
    pub location: Sym,
    pub quantity: i64,
    /// What is still RESERVED for the order after partial fulfilments.
    pub open: i64,
}

/// What a reserve that spans shards tells each of them: the cart version it writes and
/// the shards it was sent to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateTag {
    /// The cart version: every reserve of a hold gets a higher one than the last.
    pub version: u64,
    /// Every shard the reserve was sent to, ascending, and whether it had request lines.
    pub participants: Vec<(u32, bool)>,
    /// Every cart version below this one is complete on all its shards (the router's
    /// watermark): a shard that logs this reserve drops its records of those versions.
    pub settled_below: u64,
}

/// A part's record of the cross-shard update that wrote it, kept until the update is
/// known complete (the next operation on the hold, or recovery): what recovery needs to
/// put the previous version back if another participant never logged this one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartUpdate {
    /// The update's shards, ascending, and whether each had request lines.
    pub participants: Vec<(u32, bool)>,
    /// The part the update replaced here (its own update record dropped); `None`: none.
    pub previous: Option<HoldSnap>,
}

/// The part of a hold that lives on one engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HoldPart {
    pub hold: Sym,
    pub channel: Sym,
    pub state: HoldState,
    pub lines: Vec<PartLine>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub expires_at: Millis,
    pub order: Option<Sym>,
    /// Digest of the whole request's (channel, lines): equal digests mean the same cart.
    pub digest: u64,
    /// Number of lines in the whole request.
    pub total_lines: u32,
    /// Number of request lines this part answered for (reserved or not).
    pub answered_lines: u32,
    /// Whether this part holds the request's first line: it speaks for the hold in metrics.
    pub primary: bool,
    /// When a terminal hold is forgotten.
    pub forget_at: Option<Millis>,
    /// The last fulfilment of the order, whole: lets recovery finish one a crash cut
    /// between shards.
    pub last_fulfil: Option<FulfilOp>,
    /// Whether the order was cancelled (recovery finishes a cancel cut between shards).
    pub cancelled: bool,
    /// The cart version that wrote this part (`UpdateTag::version`; 0: an untagged reserve).
    pub version: u64,
    /// The cross-shard update that wrote this part, while it may be incomplete elsewhere.
    pub update: Option<Box<PartUpdate>>,
    /// A record that the update `version` left this engine no line: it holds nothing,
    /// every operation and read treats it as no part, and only recovery reads it. It is
    /// forgotten after the retention.
    pub tombstone: bool,
}

/// The hold parts of one engine, by hold symbol, with the set of holds changed since the
/// last checkpoint delta.
///
/// Reads go through `get`, `values` and indexing; every change goes through `insert`,
/// `remove` or `get_mut`, which record the hold, so no operation can change a part without
/// the next checkpoint knowing (the hold files need no bookkeeping of their own).
///
/// The parts lie densely in `parts` (their holds in `keys`, same order), found through a
/// small index: a hash table of whole parts would be half empty slots of ~168 bytes, fresh
/// memory that a restore of a million holds pays for first.
#[derive(Clone, Debug, Default)]
pub(crate) struct HoldTable {
    index: FxHashMap<Sym, u32>,
    parts: Vec<HoldPart>,
    keys: Vec<Sym>,
    /// Holds inserted, changed or removed since the last `take_changed`. Every symbol here
    /// is live: the engine calls `untrack` before it releases a hold's symbol.
    changed: FxHashSet<Sym>,
    /// The listed parts (primary, not tombstones) by (created_at, hold): ListHolds by
    /// creation time. Kept by `insert`/`remove`, which every change of the fields it
    /// orders by goes through (`get_mut` callers change only lines, timers and records).
    pub(crate) by_created: BTreeSet<(Millis, Sym)>,
    /// The listed parts that ended (confirmed, released, expired) by (`ended_at`, hold).
    pub(crate) by_ended: BTreeSet<(Millis, Sym)>,
}

impl std::ops::Index<&Sym> for HoldTable {
    type Output = HoldPart;

    fn index(&self, hold: &Sym) -> &HoldPart {
        self.get(hold).expect("no part for this hold")
    }
}

impl HoldPart {
    /// Whether ListHolds lists this part: the primary part speaks for its hold (one entry
    /// per hold however many shards it spans); a tombstone is no part.
    pub(crate) fn listed(&self) -> bool {
        self.primary && !self.tombstone
    }

    /// When the hold ended: its confirmation or release, or its deadline for an expired
    /// hold (the same on every shard, whenever each one's timer ran). `None`: active.
    pub(crate) fn ended_at(&self) -> Option<Millis> {
        match self.state {
            HoldState::Active => None,
            HoldState::Expired => Some(self.expires_at),
            HoldState::Confirmed | HoldState::Released => Some(self.updated_at),
        }
    }

    /// What the order still has reserved on each line: nothing once it was cancelled (a
    /// cancelled part keeps `open` as it was, which is what the cancel returned to sale).
    pub(crate) fn reserved(&self, line: &PartLine) -> i64 {
        if self.cancelled { 0 } else { line.open }
    }

    /// Whether the order of this part has nothing left reserved.
    pub(crate) fn closed(&self) -> bool {
        self.cancelled || self.lines.iter().all(|l| l.open == 0)
    }
}

/// Where a part sits in the listing indexes: (created_at, ended_at), `None` if unlisted.
pub(crate) type Listing = Option<(Millis, Option<Millis>)>;

fn listing(part: &HoldPart) -> Listing {
    part.listed().then(|| (part.created_at, part.ended_at()))
}

impl HoldTable {
    pub fn get(&self, hold: &Sym) -> Option<&HoldPart> {
        self.index.get(hold).map(|&i| &self.parts[i as usize])
    }

    pub fn contains_key(&self, hold: &Sym) -> bool {
        self.index.contains_key(hold)
    }

    pub fn values(&self) -> std::slice::Iter<'_, HoldPart> {
        self.parts.iter()
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn insert(&mut self, hold: Sym, part: HoldPart) -> Option<HoldPart> {
        self.changed.insert(hold);
        self.insert_untracked(hold, part)
    }

    pub fn remove(&mut self, hold: &Sym) -> Option<HoldPart> {
        let i = self.index.remove(hold)? as usize;
        let part = self.parts.swap_remove(i);
        self.keys.swap_remove(i);
        if let Some(moved) = self.keys.get(i) {
            self.index.insert(*moved, i as u32);
        }
        self.unlist(*hold, listing(&part));
        self.changed.insert(*hold);
        Some(part)
    }

    fn list(&mut self, hold: Sym, at: Listing) {
        if let Some((created, ended)) = at {
            self.by_created.insert((created, hold));
            if let Some(t) = ended {
                self.by_ended.insert((t, hold));
            }
        }
    }

    fn unlist(&mut self, hold: Sym, at: Listing) {
        if let Some((created, ended)) = at {
            self.by_created.remove(&(created, hold));
            if let Some(t) = ended {
                self.by_ended.remove(&(t, hold));
            }
        }
    }

    /// Whether the listing indexes hold exactly the listed parts (`check_consistency`).
    /// Each index is compared whole with the sorted listing of the parts (a part's hold is
    /// unique, so equal sequences mean equal sets): one sort and one walk of each tree,
    /// instead of a search of the tree per part (a million cache misses at a restore).
    pub fn indexes_consistent(&self) -> bool {
        let mut created = Vec::with_capacity(self.by_created.len());
        let mut ended = Vec::with_capacity(self.by_ended.len());
        for (s, p) in self.keys.iter().zip(&self.parts) {
            if let Some((c, e)) = listing(p) {
                created.push((c, *s));
                ended.extend(e.map(|t| (t, *s)));
            }
        }
        created.sort_unstable();
        ended.sort_unstable();
        created.iter().eq(&self.by_created) && ended.iter().eq(&self.by_ended)
    }

    pub fn get_mut(&mut self, hold: &Sym) -> Option<&mut HoldPart> {
        let i = *self.index.get(hold)?;
        self.changed.insert(*hold);
        Some(&mut self.parts[i as usize])
    }

    /// The holds changed since the last call, and a clean slate.
    pub fn take_changed(&mut self) -> FxHashSet<Sym> {
        std::mem::take(&mut self.changed)
    }

    /// Stops tracking a hold whose symbol is about to be released; says whether it was tracked.
    pub fn untrack(&mut self, hold: Sym) -> bool {
        self.changed.remove(&hold)
    }

    pub fn changed_len(&self) -> usize {
        self.changed.len()
    }

    /// Marks every part changed (the next delta carries them all).
    pub fn mark_all(&mut self) {
        self.changed.extend(self.keys.iter().copied());
    }

    pub fn clear_changed(&mut self) {
        self.changed.clear();
    }

    /// Makes room for `additional` more parts (a restore knows how many are coming).
    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional);
        self.parts.reserve_exact(additional);
        self.keys.reserve_exact(additional);
    }

    /// Inserts a part of a restore without tracking it as changed and without listing it:
    /// its listing is returned for the caller to file with every other part's at once
    /// (`list_restored`), instead of one random insert into each tree at a time. A hold
    /// that already has a part is refused (`None`, the table unchanged).
    pub fn insert_unlisted(&mut self, hold: Sym, part: HoldPart) -> Option<Listing> {
        let next = u32::try_from(self.parts.len()).expect("at most 2^32 holds per shard");
        match self.index.entry(hold) {
            Entry::Occupied(_) => None,
            Entry::Vacant(at) => {
                at.insert(next);
                let listed = listing(&part);
                self.parts.push(part);
                self.keys.push(hold);
                Some(listed)
            }
        }
    }

    /// Lists the parts that `insert_unlisted` inserted: their (created_at, hold) and
    /// (ended_at, hold) pairs, in any order.
    pub fn list_restored(&mut self, created: Vec<(Millis, Sym)>, ended: Vec<(Millis, Sym)>) {
        // Collecting sorts once and builds each tree in bulk; `append` into an empty
        // tree only swaps.
        self.by_created.append(&mut created.into_iter().collect());
        self.by_ended.append(&mut ended.into_iter().collect());
    }

    /// Inserts a part without tracking it as changed: a restore, whose parts are already
    /// in the store.
    pub fn insert_untracked(&mut self, hold: Sym, part: HoldPart) -> Option<HoldPart> {
        let listed = listing(&part);
        let next = u32::try_from(self.parts.len()).expect("at most 2^32 holds per shard");
        let old = match self.index.entry(hold) {
            Entry::Occupied(at) => {
                Some(std::mem::replace(&mut self.parts[*at.get() as usize], part))
            }
            Entry::Vacant(at) => {
                at.insert(next);
                self.parts.push(part);
                self.keys.push(hold);
                None
            }
        };
        if let Some(old) = &old {
            self.unlist(hold, listing(old));
        }
        self.list(hold, listed);
        old
    }
}

/// One fulfilment of an order, as the whole request asked for it (all shards).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FulfilOp {
    /// Unique per fulfilment: a digest of the order, the time and the lines.
    pub id: u64,
    pub at: Millis,
    /// The lines shipped; `None`: everything still reserved.
    pub lines: Option<Vec<LineView>>,
}

impl FulfilOp {
    /// The fulfilment of `order_ref` at `at` with `lines` (empty: everything still reserved).
    pub fn new(order_ref: &str, at: Millis, lines: &[OrderLine]) -> FulfilOp {
        FulfilOp {
            id: fulfilment_id(order_ref, at, lines),
            at,
            lines: (!lines.is_empty()).then(|| {
                lines
                    .iter()
                    .map(|l| LineView {
                        product_ref: l.product_ref.clone(),
                        location_ref: l.location_ref.clone(),
                        quantity: l.quantity,
                    })
                    .collect()
            }),
        }
    }
}

/// A fulfilment's persisted id: FNV-1a over the order ref, the time, then each line's
/// product, location and quantity (little-endian), every field a separate part so that
/// `fnv1a`'s separators keep ("ab", "c") and ("a", "bc") apart. Deterministic across
/// builds and platforms (it never hashes a `Debug` rendering), so every shard and every
/// replay computes the same id.
pub fn fulfilment_id(order_ref: &str, at: Millis, lines: &[OrderLine]) -> u64 {
    let at = at.to_le_bytes();
    let quantities: Vec<[u8; 8]> = lines.iter().map(|l| l.quantity.to_le_bytes()).collect();
    let mut parts: Vec<&[u8]> = Vec::with_capacity(2 + 3 * lines.len());
    parts.push(order_ref.as_bytes());
    parts.push(&at);
    for (line, quantity) in lines.iter().zip(&quantities) {
        parts.push(line.product_ref.as_bytes());
        parts.push(line.location_ref.as_bytes());
        parts.push(quantity);
    }
    fnv1a(&parts)
}

/// A hold part as callers see it, refs resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldView {
    pub hold_ref: String,
    pub channel_ref: String,
    pub state: HoldState,
    pub lines: Vec<LineView>,
    pub created_at: Millis,
    pub expires_at: Millis,
    pub order_ref: Option<String>,
    pub digest: u64,
    pub total_lines: u32,
    pub answered_lines: u32,
    pub primary: bool,
    pub last_fulfil: Option<FulfilOp>,
    pub cancelled: bool,
    /// What the order still has reserved on this part's lines.
    pub open: i64,
    /// The cart version that wrote the part (`UpdateTag::version`).
    pub version: u64,
    /// When the hold ended (`HoldPart::ended_at`); `None` while it is active.
    pub ended_at: Option<Millis>,
}

/// A part's cross-shard update not yet known complete, for recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingUpdate {
    pub hold_ref: String,
    pub version: u64,
    pub participants: Vec<(u32, bool)>,
}

/// Which hold (and order) a part on one engine belongs to, and until when it is certainly
/// kept: what a router needs to know where a hold's parts live (a directory rebuilt at
/// start-up from every shard's parts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartRef<'a> {
    pub hold_ref: &'a str,
    /// The order, once the part is confirmed.
    pub order_ref: Option<&'a str>,
    /// The part's deadline: an active part is kept at least this long, and a finished
    /// one at least its retention after it ended.
    pub expires_at: Millis,
}

/// A line of a hold or an order, refs resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineView {
    pub product_ref: String,
    pub location_ref: String,
    pub quantity: i64,
}

impl HoldView {
    /// Merges the parts of one hold from several shards into the whole hold.
    /// The primary part's state wins; lines are concatenated.
    pub fn merge(mut parts: Vec<HoldView>) -> Option<HoldView> {
        parts.sort_by_key(|p| !p.primary);
        let mut iter = parts.into_iter();
        let mut whole = iter.next()?;
        for part in iter {
            whole.lines.extend(part.lines);
            whole.answered_lines += part.answered_lines;
            whole.open += part.open;
            whole.cancelled |= part.cancelled;
            whole.created_at = whole.created_at.min(part.created_at);
            whole.version = whole.version.max(part.version);
            if whole.order_ref.is_none() {
                whole.order_ref = part.order_ref;
            }
        }
        Some(whole)
    }

    /// The state of the order a confirmed hold became (`None` unless confirmed), from the
    /// whole hold's lines: see [`OrderState::of`].
    pub fn order_state(&self) -> Option<OrderState> {
        (self.state == HoldState::Confirmed).then(|| {
            let quantity = self.lines.iter().map(|l| l.quantity).sum();
            OrderState::of(quantity, self.open, self.cancelled)
        })
    }
}
