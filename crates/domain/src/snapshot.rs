//! Snapshots: an engine's whole state in a form that outlives it.
//!
//! A snapshot spells every ref out (symbols are private to one engine), so snapshots of
//! several engines can be merged and split again by another routing: that is how a
//! restart with a different number of shards keeps every position and hold.

use serde::{Deserialize, Serialize};

use super::Millis;
use super::channel::{CategoryConfig, ChannelConfig, ProductConfig};
use super::checkpoint::{ConfigSnap, Counters};
use super::engine::{Engine, Settings};
use super::hold::{HoldPart, HoldState, PartLine, PartUpdate};
use super::position::{Iq, IqKind, NO_SYM, Position};
use super::refs::{HOLD_NS, ORDER_NS, Prefetch, Sym};

/// A hold timer as the engine files it: (when, hold).
type Timer = (Millis, Sym);

/// One ledger record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IqSnap {
    pub id: u64,
    pub kind: IqKind,
    pub channel: Option<String>,
    pub owner: Option<String>,
    pub quantity: i64,
    pub created_at: Millis,
    pub occurred_at: Millis,
    pub expires_at: Millis,
}

/// One position with its ACTIVE ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionSnap {
    pub product_ref: String,
    pub location_ref: String,
    pub counted_as_of: Millis,
    pub allocation_base: i64,
    /// `sold(c)` per channel since the last rebalance.
    pub sold: Vec<(String, i64)>,
    pub iqs: Vec<IqSnap>,
}

/// One line of a hold part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineSnap {
    pub product_ref: String,
    pub location_ref: String,
    pub quantity: i64,
    pub open: i64,
}

/// One hold part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldSnap {
    pub hold_ref: String,
    pub channel_ref: String,
    pub state: HoldState,
    pub lines: Vec<LineSnap>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub expires_at: Millis,
    pub order_ref: Option<String>,
    pub digest: u64,
    pub total_lines: u32,
    pub answered_lines: u32,
    pub primary: bool,
    pub forget_at: Option<Millis>,
    pub last_fulfil: Option<super::hold::FulfilOp>,
    pub cancelled: bool,
    pub version: u64,
    pub update: Option<Box<PartUpdate>>,
    pub tombstone: bool,
}

/// An engine's whole state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    pub channels: Vec<ChannelConfig>,
    pub products: Vec<ProductConfig>,
    pub categories: Vec<CategoryConfig>,
    /// Locations and channel networks.
    pub network: super::network::NetworkSnap,
    pub positions: Vec<PositionSnap>,
    pub holds: Vec<HoldSnap>,
    pub adjustments: Vec<String>,
    pub next_iq_id: u64,
    pub next_event_seq: u64,
}

impl Engine {
    fn opt_name(&self, sym: Sym) -> Option<String> {
        (sym != NO_SYM).then(|| self.interner.resolve(sym).to_string())
    }

    pub(crate) fn snap_part(&self, part: &HoldPart) -> HoldSnap {
        let r = |s: Sym| self.interner.resolve(s).to_string();
        HoldSnap {
            hold_ref: r(part.hold),
            channel_ref: r(part.channel),
            state: part.state,
            lines: part
                .lines
                .iter()
                .map(|l| LineSnap {
                    product_ref: r(l.product),
                    location_ref: r(l.location),
                    quantity: l.quantity,
                    open: l.open,
                })
                .collect(),
            created_at: part.created_at,
            updated_at: part.updated_at,
            expires_at: part.expires_at,
            order_ref: part.order.map(r),
            digest: part.digest,
            total_lines: part.total_lines,
            answered_lines: part.answered_lines,
            primary: part.primary,
            forget_at: part.forget_at,
            last_fulfil: part.last_fulfil.clone(),
            cancelled: part.cancelled,
            version: part.version,
            update: part.update.clone(),
            tombstone: part.tombstone,
        }
    }

    pub(crate) fn unsnap_part(&mut self, snap: &HoldSnap) -> HoldPart {
        self.unsnap_part_ref(&snap.as_ref())
    }

    fn unsnap_part_ref(&mut self, snap: &HoldSnapRef<'_>) -> HoldPart {
        let hold = self.interner.intern_in(HOLD_NS, snap.hold_ref);
        let order = snap.order_ref.map(|o| self.interner.intern_in(ORDER_NS, o));
        let mut i = |s: &str| self.interner.intern(s);
        HoldPart {
            hold,
            channel: i(snap.channel_ref),
            state: snap.state,
            lines: snap
                .lines
                .iter()
                .map(|l| PartLine {
                    product: i(l.product_ref),
                    location: i(l.location_ref),
                    quantity: l.quantity,
                    open: l.open,
                })
                .collect(),
            created_at: snap.created_at,
            updated_at: snap.updated_at,
            expires_at: snap.expires_at,
            order,
            digest: snap.digest,
            total_lines: snap.total_lines,
            answered_lines: snap.answered_lines,
            primary: snap.primary,
            forget_at: snap.forget_at,
            last_fulfil: snap.last_fulfil.clone(),
            cancelled: snap.cancelled,
            version: snap.version,
            update: snap.update.clone(),
            tombstone: snap.tombstone,
        }
    }

    /// Inserts a restored part with its timers and indexes, as it was (its IQs are
    /// restored with the positions).
    fn index_restored_part(&mut self, part: HoldPart) {
        let (expiry, forget) = self.index_part(&part);
        self.expiry.extend(expiry);
        self.forget.extend(forget);
        self.holds.insert(part.hold, part);
    }

    /// Counts a restored part in the indexes kept beside the holds (active holds per
    /// channel, orders) and returns its timers (expiry, forget) for the caller to file:
    /// one at a time into the engine's sets, or in bulk by the `Restorer`.
    fn index_part(&mut self, part: &HoldPart) -> (Option<Timer>, Option<Timer>) {
        let hold = part.hold;
        let mut expiry = None;
        match part.state {
            HoldState::Active => {
                expiry = Some((part.expires_at, hold));
                if part.primary {
                    *self.active_holds.entry(part.channel).or_default() += 1;
                }
            }
            HoldState::Confirmed => {
                if let Some(order) = part.order {
                    self.orders.insert(order, hold);
                }
            }
            HoldState::Released | HoldState::Expired => {}
        }
        if part.update.is_some() {
            self.update_records.insert((part.version, hold));
        }
        (expiry, part.forget_at.map(|t| (t, hold)))
    }

    /// One position as a snapshot holds it: refs spelt out, its ledger in id order.
    pub(crate) fn snap_position(
        &self,
        (product, location): (Sym, Sym),
        pos: &Position,
    ) -> PositionSnap {
        let r = |s: Sym| self.interner.resolve(s).to_string();
        PositionSnap {
            product_ref: r(product),
            location_ref: r(location),
            counted_as_of: pos.counted_as_of,
            allocation_base: pos.allocation_base,
            sold: {
                let mut sold: Vec<(String, i64)> = pos
                    .channels
                    .iter()
                    .filter(|c| c.sold != 0)
                    .map(|c| (r(c.channel), c.sold))
                    .collect();
                sold.sort();
                sold
            },
            iqs: {
                let mut iqs: Vec<&Iq> = pos.iqs.iter().collect();
                iqs.sort_by_key(|iq| iq.id);
                iqs
            }
            .into_iter()
            .map(|iq| IqSnap {
                id: iq.id,
                kind: iq.kind,
                channel: self.opt_name(iq.channel),
                owner: self.opt_name(iq.owner),
                quantity: iq.quantity,
                created_at: iq.created_at,
                occurred_at: iq.occurred_at,
                expires_at: iq.expires_at,
            })
            .collect(),
        }
    }

    /// The engine's whole state. Events not yet drained are not part of it.
    pub fn snapshot(&self) -> EngineSnapshot {
        let r = |s: Sym| self.interner.resolve(s).to_string();
        let mut positions: Vec<PositionSnap> = self
            .positions
            .iter()
            .map(|(key, pos)| self.snap_position(*key, pos))
            .collect();
        positions.sort_by(|a, b| {
            (&a.product_ref, &a.location_ref).cmp(&(&b.product_ref, &b.location_ref))
        });
        let mut holds: Vec<HoldSnap> = self.holds.values().map(|p| self.snap_part(p)).collect();
        holds.sort_by(|a, b| a.hold_ref.cmp(&b.hold_ref));
        let mut adjustments: Vec<String> = self.adjustments.iter().map(|s| r(*s)).collect();
        adjustments.sort();
        EngineSnapshot {
            channels: self.channels().cloned().collect(),
            products: self.products(),
            categories: self.categories(),
            network: self.network_snap(),
            positions,
            holds,
            adjustments,
            next_iq_id: self.next_iq_id,
            next_event_seq: self.next_event_seq,
        }
    }

    /// Rebuilds an engine from a snapshot. Fails if the snapshot contradicts itself.
    pub fn restore(settings: Settings, snap: EngineSnapshot) -> Result<Engine, String> {
        let config = ConfigSnap {
            channels: snap.channels,
            products: snap.products,
            categories: snap.categories,
            network: snap.network,
        };
        let counters = Counters {
            next_iq_id: snap.next_iq_id,
            next_event_seq: snap.next_event_seq,
        };
        let mut restorer = Restorer::new(settings, config, counters)?;
        restorer.reserve(snap.positions.len(), snap.holds.len());
        for ps in &snap.positions {
            restorer.position(&ps.as_ref());
        }
        for hs in &snap.holds {
            restorer.hold(&hs.as_ref())?;
        }
        for a in &snap.adjustments {
            restorer.adjustment(a);
        }
        restorer.finish()
    }
}

/// A [`PositionSnap`] that borrows its refs from the bytes it is decoded from (the same
/// serde form), so that a restore from stored entries copies no ref it already interned.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PositionSnapRef<'a> {
    pub product_ref: &'a str,
    pub location_ref: &'a str,
    pub counted_as_of: Millis,
    pub allocation_base: i64,
    #[serde(borrow)]
    pub sold: Vec<(&'a str, i64)>,
    #[serde(borrow)]
    pub iqs: Vec<IqSnapRef<'a>>,
}

/// The borrowed form of an [`IqSnap`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct IqSnapRef<'a> {
    pub id: u64,
    pub kind: IqKind,
    #[serde(borrow)]
    pub channel: Option<&'a str>,
    #[serde(borrow)]
    pub owner: Option<&'a str>,
    pub quantity: i64,
    pub created_at: Millis,
    pub occurred_at: Millis,
    pub expires_at: Millis,
}

/// The borrowed form of a [`LineSnap`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct LineSnapRef<'a> {
    pub product_ref: &'a str,
    pub location_ref: &'a str,
    pub quantity: i64,
    pub open: i64,
}

/// The borrowed form of a [`HoldSnap`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct HoldSnapRef<'a> {
    pub hold_ref: &'a str,
    pub channel_ref: &'a str,
    pub state: HoldState,
    #[serde(borrow)]
    pub lines: Vec<LineSnapRef<'a>>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub expires_at: Millis,
    #[serde(borrow)]
    pub order_ref: Option<&'a str>,
    pub digest: u64,
    pub total_lines: u32,
    pub answered_lines: u32,
    pub primary: bool,
    pub forget_at: Option<Millis>,
    pub last_fulfil: Option<super::hold::FulfilOp>,
    pub cancelled: bool,
    pub version: u64,
    pub update: Option<Box<PartUpdate>>,
    pub tombstone: bool,
}

impl PositionSnap {
    pub fn as_ref(&self) -> PositionSnapRef<'_> {
        PositionSnapRef {
            product_ref: &self.product_ref,
            location_ref: &self.location_ref,
            counted_as_of: self.counted_as_of,
            allocation_base: self.allocation_base,
            sold: self.sold.iter().map(|(c, n)| (c.as_str(), *n)).collect(),
            iqs: self
                .iqs
                .iter()
                .map(|iq| IqSnapRef {
                    id: iq.id,
                    kind: iq.kind,
                    channel: iq.channel.as_deref(),
                    owner: iq.owner.as_deref(),
                    quantity: iq.quantity,
                    created_at: iq.created_at,
                    occurred_at: iq.occurred_at,
                    expires_at: iq.expires_at,
                })
                .collect(),
        }
    }
}

impl HoldSnap {
    pub fn as_ref(&self) -> HoldSnapRef<'_> {
        HoldSnapRef {
            hold_ref: &self.hold_ref,
            channel_ref: &self.channel_ref,
            state: self.state,
            lines: self
                .lines
                .iter()
                .map(|l| LineSnapRef {
                    product_ref: &l.product_ref,
                    location_ref: &l.location_ref,
                    quantity: l.quantity,
                    open: l.open,
                })
                .collect(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            expires_at: self.expires_at,
            order_ref: self.order_ref.as_deref(),
            digest: self.digest,
            total_lines: self.total_lines,
            answered_lines: self.answered_lines,
            primary: self.primary,
            forget_at: self.forget_at,
            last_fulfil: self.last_fulfil.clone(),
            cancelled: self.cancelled,
            version: self.version,
            update: self.update.clone(),
            tombstone: self.tombstone,
        }
    }
}

/// Most channels `counter_channels` tells apart; a position with more lets its counters grow.
const COUNTED_CHANNELS_MAX: usize = 4;

/// How many channel counters a position restored from `ps` keeps (one per channel with a
/// reservation or a sale), so that they are allocated once, at their size (a `Vec` would
/// make room for four at its first push): most positions keep one or none.
fn counter_channels(ps: &PositionSnapRef<'_>) -> usize {
    let reservations = ps.iqs.iter().filter(|iq| iq.kind.is_reservation());
    // A reservation without a channel keeps a counter too (under no channel): "" is no ref.
    let channels = reservations
        .map(|iq| iq.channel.unwrap_or(""))
        .chain(ps.sold.iter().map(|(c, _)| *c));
    let mut seen = [""; COUNTED_CHANNELS_MAX];
    let mut n = 0;
    for c in channels {
        if !seen[..n].contains(&c) {
            if n == COUNTED_CHANNELS_MAX {
                return n;
            }
            seen[n] = c;
            n += 1;
        }
    }
    n
}

/// A restore sizes its dense tables for a quarter more entries than it restores (and at
/// least `RESTORE_HEADROOM_MIN` more): a table sized exactly grows at the first hold the
/// log's replay adds, and growing the hold parts of a million-hold shard copies 80 MB
/// into fresh memory (measured: 93 ms to replay 5,000 records, most of it that copy).
/// Capacity never written costs no memory (the kernel maps a page at its first write).
const RESTORE_HEADROOM_DIVISOR: usize = 4;
const RESTORE_HEADROOM_MIN: usize = 1_024;

/// Rebuilds an engine one piece at a time (configuration first, then positions, holds and
/// adjustments in any order), so that a restore from stored entries needs no whole
/// snapshot in memory, no sort, and no copy of a ref.
pub struct Restorer {
    engine: Engine,
    /// The timers of the restored holds, built into the engine's ordered sets at once at
    /// the end (from sorted input) instead of one random insert at a time.
    expiry: Vec<(Millis, Sym)>,
    forget: Vec<(Millis, Sym)>,
    /// The restored parts' places in the hold table's listing indexes, filed the same way.
    created: Vec<(Millis, Sym)>,
    ended: Vec<(Millis, Sym)>,
}

impl Restorer {
    pub fn new(
        settings: Settings,
        config: ConfigSnap,
        counters: Counters,
    ) -> Result<Restorer, String> {
        let mut restorer = Restorer::empty(settings);
        restorer.configure(config, counters)?;
        Ok(restorer)
    }

    /// A restorer whose configuration comes later (`configure`): a load that streams
    /// entries in key order meets positions and holds before the configuration.
    pub fn empty(settings: Settings) -> Restorer {
        Restorer {
            engine: Engine::new(settings),
            expiry: Vec::new(),
            forget: Vec::new(),
            created: Vec::new(),
            ended: Vec::new(),
        }
    }

    /// The configuration and counters. Before, between or after the positions and holds:
    /// they share only interned refs with the configuration, and a ref interns to the
    /// same symbol whichever comes first.
    pub fn configure(&mut self, config: ConfigSnap, counters: Counters) -> Result<(), String> {
        let engine = &mut self.engine;
        for channel in config.channels {
            engine
                .upsert_channel(channel)
                .map_err(|e| format!("snapshot channel: {e}"))?;
        }
        engine
            .upsert_products(&config.products)
            .map_err(|e| format!("snapshot products: {e}"))?;
        engine
            .upsert_categories(&config.categories)
            .map_err(|e| format!("snapshot categories: {e}"))?;
        engine.restore_network(config.network)?;
        engine.next_iq_id = counters.next_iq_id.max(1);
        engine.next_event_seq = counters.next_event_seq.max(1);
        Ok(())
    }

    /// Makes room for this many positions and holds at once, instead of growing the
    /// tables (and rehashing them) step by step, with headroom for what comes next (the
    /// log's replay, the first changes after it, the few configuration refs).
    pub fn reserve(&mut self, positions: usize, holds: usize) {
        let room = |n: usize| n + n / RESTORE_HEADROOM_DIVISOR + RESTORE_HEADROOM_MIN;
        self.engine.positions.reserve(room(positions));
        self.engine.holds.reserve(room(holds));
        self.engine.interner.reserve(room(positions + holds));
        self.expiry.reserve(holds);
        self.created.reserve(holds);
    }

    /// Starts loading what `position` will look up (its product's and its holds' refs, at
    /// `stage`), for a caller that restores a few entries ahead of it (only a hint).
    pub fn prefetch_position(&self, ps: &PositionSnapRef<'_>, stage: Prefetch) {
        let interner = &self.engine.interner;
        interner.prefetch(ps.product_ref, stage);
        for iq in &ps.iqs {
            if let (Some(o), IqKind::SoftReserve) = (iq.owner, iq.kind) {
                interner.prefetch_in(HOLD_NS, o, stage);
            }
        }
    }

    /// Starts loading what `hold` will look up (its ref and its lines' products).
    pub fn prefetch_hold(&self, hs: &HoldSnapRef<'_>, stage: Prefetch) {
        let interner = &self.engine.interner;
        interner.prefetch_in(HOLD_NS, hs.hold_ref, stage);
        for l in &hs.lines {
            interner.prefetch(l.product_ref, stage);
        }
    }

    /// One position with its ledger (a position given twice keeps the last).
    pub fn position(&mut self, ps: &PositionSnapRef<'_>) {
        let engine = &mut self.engine;
        let product = engine.interner.intern(ps.product_ref);
        let location = engine.interner.intern(ps.location_ref);
        let mut pos = Position::new();
        pos.counted_as_of = ps.counted_as_of;
        pos.allocation_base = ps.allocation_base;
        pos.iqs.reserve_exact(ps.iqs.len());
        pos.channels.reserve_exact(counter_channels(ps));
        for iq in &ps.iqs {
            let channel = match iq.channel {
                Some(c) => engine.interner.intern(c),
                None => NO_SYM,
            };
            let owner = match (iq.owner, iq.kind) {
                (Some(o), IqKind::SoftReserve) => engine.interner.intern_in(HOLD_NS, o),
                (Some(o), IqKind::Reserved | IqKind::Sale) => {
                    engine.interner.intern_in(ORDER_NS, o)
                }
                (Some(o), _) => engine.interner.intern(o),
                (None, _) => NO_SYM,
            };
            pos.push(Iq {
                id: iq.id,
                kind: iq.kind,
                channel,
                owner,
                quantity: iq.quantity,
                created_at: iq.created_at,
                occurred_at: iq.occurred_at,
                expires_at: iq.expires_at,
            });
        }
        for &(channel, sold) in &ps.sold {
            let c = engine.interner.intern(channel);
            pos.add_sold(c, sold);
        }
        engine.positions.insert_untracked((product, location), pos);
    }

    /// One hold part; a hold given twice is refused.
    pub fn hold(&mut self, hs: &HoldSnapRef<'_>) -> Result<(), String> {
        let part = self.engine.unsnap_part_ref(hs);
        let hold = part.hold;
        let (expiry, forget) = self.engine.index_part(&part);
        let Some(listed) = self.engine.holds.insert_unlisted(hold, part) else {
            return Err(format!("snapshot holds hold {:?} twice", hs.hold_ref));
        };
        self.expiry.extend(expiry);
        self.forget.extend(forget);
        if let Some((created, ended)) = listed {
            self.created.push((created, hold));
            self.ended.extend(ended.map(|t| (t, hold)));
        }
        Ok(())
    }

    /// One adjustment ref already applied.
    pub fn adjustment(&mut self, adjustment_ref: &str) {
        let sym = self.engine.interner.intern(adjustment_ref);
        self.engine.adjustments.insert(sym);
    }

    /// The engine, its counters checked against its ledgers and hold records.
    pub fn finish(self) -> Result<Engine, String> {
        let engine = self.finish_unchecked();
        engine.check_consistency()?;
        Ok(engine)
    }

    /// The engine, unchecked: for a caller that checks it itself once it is complete
    /// (recovery checks every engine after its log is replayed).
    pub fn finish_unchecked(mut self) -> Engine {
        let engine = &mut self.engine;
        // Collecting sorts once and builds the tree in bulk.
        let mut expiry: std::collections::BTreeSet<_> = self.expiry.into_iter().collect();
        expiry.append(&mut engine.expiry);
        engine.expiry = expiry;
        let mut forget: std::collections::BTreeSet<_> = self.forget.into_iter().collect();
        forget.append(&mut engine.forget);
        engine.forget = forget;
        engine.holds.list_restored(self.created, self.ended);
        engine.clear_checkpoint_tracking();
        self.engine
    }
}

/// The on-disk snapshot: the engine's own structures and its interner table, so that
/// encoding and decoding copy no ref per record. Symbols keep their numbers.
#[derive(Serialize)]
pub struct CompactSnapshotRef<'a> {
    strings: Vec<Option<&'a str>>,
    channels: Vec<&'a ChannelConfig>,
    network: super::network::NetworkSnap,
    products: Vec<(&'a Sym, &'a super::engine::ProductEntry)>,
    categories: Vec<(&'a Sym, &'a u32)>,
    positions: Vec<(&'a (Sym, Sym), &'a Position)>,
    holds: Vec<&'a HoldPart>,
    adjustments: Vec<&'a Sym>,
    next_iq_id: u64,
    next_event_seq: u64,
}

/// A decoded on-disk snapshot (the owned twin of [`CompactSnapshotRef`]).
#[derive(Deserialize)]
pub struct CompactSnapshot {
    strings: Vec<Option<String>>,
    channels: Vec<ChannelConfig>,
    network: super::network::NetworkSnap,
    products: Vec<(Sym, super::engine::ProductEntry)>,
    categories: Vec<(Sym, u32)>,
    positions: Vec<((Sym, Sym), Position)>,
    holds: Vec<HoldPart>,
    adjustments: Vec<Sym>,
    next_iq_id: u64,
    next_event_seq: u64,
}

impl Engine {
    /// The state as the on-disk snapshot encodes it, borrowed (no copy of the state).
    pub fn compact(&self) -> CompactSnapshotRef<'_> {
        CompactSnapshotRef {
            strings: self.interner.slots().collect(),
            channels: self.channels().collect(),
            network: self.network_snap(),
            products: self.products.iter().collect(),
            categories: self.categories.iter().collect(),
            positions: self.positions.iter().collect(),
            holds: self.holds.values().collect(),
            adjustments: self.adjustments.iter().collect(),
            next_iq_id: self.next_iq_id,
            next_event_seq: self.next_event_seq,
        }
    }

    /// Rebuilds an engine from an on-disk snapshot, and checks it.
    pub fn from_compact(settings: Settings, snap: CompactSnapshot) -> Result<Engine, String> {
        let mut engine = Engine::new(settings);
        engine.interner = super::refs::Interner::from_slots(snap.strings)?;
        let live = |s: Sym, engine: &Engine| -> Result<(), String> {
            if s == NO_SYM || engine.interner.is_live(s) {
                Ok(())
            } else {
                Err(format!("snapshot refers to unknown ref #{}", s.0))
            }
        };
        for channel in snap.channels {
            engine
                .upsert_channel(channel)
                .map_err(|e| format!("snapshot channel: {e}"))?;
        }
        engine.restore_network(snap.network)?;
        engine.products = snap.products.into_iter().collect();
        engine.categories = snap.categories.into_iter().collect();
        engine.positions.reserve(snap.positions.len());
        for (key, pos) in snap.positions {
            live(key.0, &engine)?;
            live(key.1, &engine)?;
            engine.positions.insert(key, pos);
        }
        for part in snap.holds {
            live(part.hold, &engine)?;
            engine.index_restored_part(part);
        }
        engine.adjustments = snap.adjustments.into_iter().collect();
        engine.next_iq_id = snap.next_iq_id.max(1);
        engine.next_event_seq = snap.next_event_seq.max(1);
        engine.check_consistency()?;
        engine.clear_checkpoint_tracking();
        Ok(engine)
    }
}

impl EngineSnapshot {
    /// Joins the snapshots of several engines into one. Parts of the same hold join into one.
    pub fn merge(snaps: Vec<EngineSnapshot>) -> EngineSnapshot {
        let mut out = EngineSnapshot::default();
        let mut holds: std::collections::BTreeMap<String, HoldSnap> = Default::default();
        let mut adjustments = std::collections::BTreeSet::new();
        for (i, snap) in snaps.into_iter().enumerate() {
            if i == 0 {
                out.channels = snap.channels;
                out.products = snap.products;
                out.categories = snap.categories;
                out.network = snap.network;
            }
            out.positions.extend(snap.positions);
            // Recovery settles every cross-shard update before a merge (a reshard), so a
            // tombstone holds nothing any more and an update record is no longer needed.
            for mut h in snap.holds.into_iter().filter(|h| !h.tombstone) {
                h.update = None;
                match holds.get_mut(&h.hold_ref) {
                    Some(whole) => {
                        whole.lines.extend(h.lines);
                        whole.answered_lines += h.answered_lines;
                        whole.primary |= h.primary;
                        whole.version = whole.version.max(h.version);
                    }
                    None => {
                        holds.insert(h.hold_ref.clone(), h);
                    }
                }
            }
            adjustments.extend(snap.adjustments);
            out.next_iq_id = out.next_iq_id.max(snap.next_iq_id);
            out.next_event_seq = out.next_event_seq.max(snap.next_event_seq);
        }
        out.holds = holds.into_values().collect();
        out.adjustments = adjustments.into_iter().collect();
        out
    }

    /// Splits one snapshot into `n` by the routing of (product, location) to a shard.
    /// A hold part with no lines goes to the shard of `route(hold_ref, "")`.
    pub fn split(self, n: usize, route: impl Fn(&str, &str) -> usize) -> Vec<EngineSnapshot> {
        let mut out: Vec<EngineSnapshot> = (0..n)
            .map(|_| EngineSnapshot {
                channels: self.channels.clone(),
                products: self.products.clone(),
                categories: self.categories.clone(),
                network: self.network.clone(),
                adjustments: self.adjustments.clone(),
                next_iq_id: self.next_iq_id,
                next_event_seq: self.next_event_seq,
                ..Default::default()
            })
            .collect();
        for p in self.positions {
            let shard = route(&p.product_ref, &p.location_ref);
            out[shard].positions.push(p);
        }
        for h in self.holds {
            let mut parts: std::collections::BTreeMap<usize, HoldSnap> = Default::default();
            let first_shard = h
                .lines
                .first()
                .map(|l| route(&l.product_ref, &l.location_ref))
                .unwrap_or_else(|| route(&h.hold_ref, ""));
            for line in &h.lines {
                let shard = route(&line.product_ref, &line.location_ref);
                parts
                    .entry(shard)
                    .or_insert_with(|| HoldSnap {
                        lines: Vec::new(),
                        answered_lines: 0,
                        primary: false,
                        ..h.clone()
                    })
                    .lines
                    .push(line.clone());
            }
            let lines_total = h.lines.len() as u32;
            let first = parts.entry(first_shard).or_insert_with(|| HoldSnap {
                lines: Vec::new(),
                answered_lines: 0,
                primary: false,
                ..h.clone()
            });
            first.primary = h.primary;
            first.answered_lines += h.answered_lines.saturating_sub(lines_total);
            for (shard, mut part) in parts {
                part.answered_lines += part.lines.len() as u32;
                out[shard].holds.push(part);
            }
        }
        out
    }
}
