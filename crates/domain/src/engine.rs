//! The engine: every rule of domain.md over the positions one shard owns.
//!
//! One `Engine` is the single writer of a disjoint set of positions. It does no I/O and
//! reads no clock: `now` is an argument of every call, so a replay of the same calls
//! gives the same state. Operations over several shards (a hold with lines on each) are
//! split by the caller: each engine answers for its own lines (`reserve` with the indices
//! it owns) and can take its part back (`undo_reserve`).

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use super::Millis;
use super::channel::{
    CategoryConfig, Channel, ChannelConfig, Numbers, ProductConfig, RebalanceMode,
    available_to_sell, entitlement,
};
use super::error::Error;
use super::event::{Event, EventKind};
use super::hold::{HoldPart, HoldState, HoldView, LineView, PartLine};
use super::position::{Iq, IqKind, NO_SYM, PositionTable};
use super::refs::{HOLD_NS, Interner, ORDER_NS, Sym, fnv1a};
use super::request::{
    Adjustment, AdjustmentKind, OrderLine, ReserveRequest, StockCount, TTL_SECONDS_DEFAULT,
    TTL_SECONDS_MAX, TTL_SECONDS_MIN,
};

/// Milliseconds in a second.
const MS: Millis = 1_000;

/// Engine-wide settings, the same on every shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Hold timer when neither request, product, category nor channel sets one.
    pub ttl_default_seconds: u32,
    /// Requested timers below this are raised to it.
    pub ttl_min_seconds: u32,
    /// Requested timers above this are lowered to it.
    pub ttl_max_seconds: u32,
    /// How long a finished hold (released, expired, or confirmed and closed) is kept so
    /// that GetHold and idempotent retries still answer. Bounds memory under churn.
    pub hold_retention_ms: Millis,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ttl_default_seconds: TTL_SECONDS_DEFAULT,
            ttl_min_seconds: TTL_SECONDS_MIN,
            ttl_max_seconds: TTL_SECONDS_MAX,
            hold_retention_ms: 24 * 3600 * MS,
        }
    }
}

/// A product's catalogue entry, interned.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ProductEntry {
    pub category: Option<Sym>,
    pub ttl_seconds: Option<u32>,
}

/// Whether a count changed the position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountStatus {
    Applied,
    /// Older than the position's current count: nothing changed.
    Stale,
}

/// Whether an adjustment changed the position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdjustStatus {
    Applied,
    /// The adjustment ref was applied before: nothing changed.
    Duplicate,
}

/// What a reserve did on this engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveKind {
    /// A new hold part.
    Created,
    /// A cart update replaced the part's lines.
    Updated,
    /// Same hold, same lines: nothing changed.
    Unchanged,
    /// A line lacked stock and partial holds were not allowed: nothing changed.
    Rejected,
    /// This engine has no line of the request and no part of the hold.
    Untouched,
}

/// One request line's result on this engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineResult {
    pub index: u32,
    pub requested: i64,
    pub reserved: i64,
    /// The ATS the line was checked against (without this hold's own quantity).
    pub available: i64,
}

/// A reserve's answer from one engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservePart {
    pub kind: ReserveKind,
    pub lines: Vec<LineResult>,
    /// How to take this engine's change back, when it changed anything.
    pub undo: Option<ReserveUndo>,
}

/// The part a reserve replaced, to put back if the hold fails on another shard.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReserveUndo {
    pub hold_ref: String,
    pub previous: Option<Box<super::snapshot::HoldSnap>>,
}

/// A channel's view of a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelPositionView {
    pub channel_ref: String,
    pub quantity: i64,
    pub entitlement: i64,
    pub used: i64,
}

/// One ledger record, refs resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IqView {
    pub iq_ref: String,
    pub kind: IqKind,
    pub quantity: i64,
    pub channel_ref: Option<String>,
    pub owner_ref: Option<String>,
    pub created_at: Millis,
    pub occurred_at: Millis,
    pub expires_at: Option<Millis>,
}

/// A position as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PositionView {
    pub product_ref: String,
    pub location_ref: String,
    pub on_hand: i64,
    pub physical: i64,
    pub allocation_base: i64,
    pub channels: Vec<ChannelPositionView>,
    pub quantities: Vec<IqView>,
}

/// The inventory engine of one shard.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) settings: Settings,
    pub(crate) interner: Interner,
    pub(crate) positions: PositionTable,
    pub(crate) channels: Vec<Channel>,
    pub(crate) products: FxHashMap<Sym, ProductEntry>,
    pub(crate) categories: FxHashMap<Sym, u32>,
    pub(crate) holds: FxHashMap<Sym, HoldPart>,
    pub(crate) orders: FxHashMap<Sym, Sym>,
    pub(crate) adjustments: FxHashSet<Sym>,
    pub(crate) expiry: BTreeSet<(Millis, Sym)>,
    pub(crate) forget: BTreeSet<(Millis, Sym)>,
    pub(crate) active_holds: FxHashMap<Sym, i64>,
    pub(crate) next_iq_id: u64,
    pub(crate) next_event_seq: u64,
    pub(crate) events: Vec<Event>,
    /// Refs of forgotten holds and orders, released at the drain after next.
    pub(crate) release_later: Vec<(Sym, u8)>,
    pub(crate) release_ready: Vec<(Sym, u8)>,
}

impl Engine {
    pub fn new(settings: Settings) -> Self {
        Engine {
            settings,
            interner: Interner::default(),
            positions: PositionTable::default(),
            channels: Vec::new(),
            products: FxHashMap::default(),
            categories: FxHashMap::default(),
            holds: FxHashMap::default(),
            orders: FxHashMap::default(),
            adjustments: FxHashSet::default(),
            expiry: BTreeSet::new(),
            forget: BTreeSet::new(),
            active_holds: FxHashMap::default(),
            next_iq_id: 1,
            next_event_seq: 1,
            events: Vec::new(),
            release_later: Vec::new(),
            release_ready: Vec::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    // ----- configuration (replicated to every shard) -----

    /// Creates or replaces a channel.
    pub fn upsert_channel(&mut self, config: ChannelConfig) -> Result<(), Error> {
        config
            .validate()
            .map_err(|(field, reason)| Error::invalid(format!("channel.{field}"), reason))?;
        let interner = &mut self.interner;
        let channel = Channel::compile(config, &mut |s| interner.intern(s));
        match self.channels.iter_mut().find(|c| c.sym == channel.sym) {
            Some(slot) => *slot = channel,
            None => self.channels.push(channel),
        }
        self.channels
            .sort_by(|a, b| a.config.channel_ref.cmp(&b.config.channel_ref));
        Ok(())
    }

    /// Removes a channel. Its holds stay until they end; it can sell no more.
    pub fn delete_channel(&mut self, channel_ref: &str) -> Result<(), Error> {
        let before = self.channels.len();
        self.channels
            .retain(|c| c.config.channel_ref != channel_ref);
        if self.channels.len() == before {
            return Err(Error::UnknownChannel(channel_ref.to_string()));
        }
        Ok(())
    }

    /// The configured channels, by ref.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelConfig> {
        self.channels.iter().map(|c| &c.config)
    }

    /// Creates or replaces catalogue entries.
    pub fn upsert_products(&mut self, products: &[ProductConfig]) -> Result<(), Error> {
        ProductConfig::validate_all(products)?;
        for p in products {
            let sym = self.interner.intern(&p.product_ref);
            let category = p.category.as_deref().map(|c| self.interner.intern(c));
            self.products.insert(
                sym,
                ProductEntry {
                    category,
                    ttl_seconds: p.hold_ttl_seconds,
                },
            );
        }
        Ok(())
    }

    /// Creates or replaces category timers.
    pub fn upsert_categories(&mut self, categories: &[CategoryConfig]) -> Result<(), Error> {
        CategoryConfig::validate_all(categories)?;
        for c in categories {
            let sym = self.interner.intern(&c.category);
            match c.hold_ttl_seconds {
                Some(ttl) => self.categories.insert(sym, ttl),
                None => self.categories.remove(&sym),
            };
        }
        Ok(())
    }

    /// The catalogue, for listing and snapshots.
    pub fn products(&self) -> Vec<ProductConfig> {
        let mut out: Vec<ProductConfig> = self
            .products
            .iter()
            .map(|(sym, p)| ProductConfig {
                product_ref: self.interner.resolve(*sym).to_string(),
                category: p.category.map(|c| self.interner.resolve(c).to_string()),
                hold_ttl_seconds: p.ttl_seconds,
            })
            .collect();
        out.sort_by(|a, b| a.product_ref.cmp(&b.product_ref));
        out
    }

    /// Category timers, for listing and snapshots.
    pub fn categories(&self) -> Vec<CategoryConfig> {
        let mut out: Vec<CategoryConfig> = self
            .categories
            .iter()
            .map(|(sym, ttl)| CategoryConfig {
                category: self.interner.resolve(*sym).to_string(),
                hold_ttl_seconds: Some(*ttl),
            })
            .collect();
        out.sort_by(|a, b| a.category.cmp(&b.category));
        out
    }

    fn channel_index(&self, channel_ref: &str) -> Result<usize, Error> {
        self.channels
            .iter()
            .position(|c| c.config.channel_ref == channel_ref)
            .ok_or_else(|| Error::UnknownChannel(channel_ref.to_string()))
    }

    fn category_of(&self, product: Sym, hint: Option<Sym>) -> Option<Sym> {
        self.products
            .get(&product)
            .and_then(|p| p.category)
            .or(hint)
    }

    // ----- reads -----

    /// Number of positions this engine owns.
    pub fn position_count(&self) -> usize {
        self.positions.len()
    }

    /// Number of hold parts in memory (active and retained).
    pub fn hold_count(&self) -> usize {
        self.holds.len()
    }

    /// Active holds per channel (counted once per hold, on the shard of its first line).
    pub fn active_holds_by_channel(&self) -> impl Iterator<Item = (&str, i64)> + '_ {
        self.active_holds
            .iter()
            .map(|(c, n)| (self.interner.resolve(*c), *n))
    }

    /// The ATS of a channel at a position; an unknown position has 0.
    pub fn availability(
        &self,
        channel_ref: &str,
        product_ref: &str,
        location_ref: &str,
    ) -> Result<i64, Error> {
        let ci = self.channel_index(channel_ref)?;
        let (Some(product), Some(location)) = (
            self.interner.get(product_ref),
            self.interner.get(location_ref),
        ) else {
            return Ok(0);
        };
        Ok(self.ats(ci, product, location, None, 0))
    }

    /// ATS of channel `ci` at (product, location), with `own` units of the caller's own
    /// hold at that position counted as free (a cart update's view).
    fn ats(&self, ci: usize, product: Sym, location: Sym, hint: Option<Sym>, own: i64) -> i64 {
        let channel = &self.channels[ci];
        if channel.excluded.contains(&location) {
            return 0;
        }
        let Some(pos) = self.positions.get(&(product, location)) else {
            return 0;
        };
        let numbers = channel.numbers(product, location, self.category_of(product, hint));
        available_to_sell(
            numbers,
            pos.allocation_base,
            pos.used(channel.sym) - own,
            pos.on_hand + own,
        )
    }

    fn numbers_at(&self, ci: usize, product: Sym, location: Sym) -> Numbers {
        self.channels[ci].numbers(product, location, self.category_of(product, None))
    }

    /// A position with every channel's view, and its ledger when asked.
    pub fn position(
        &self,
        product_ref: &str,
        location_ref: &str,
        include_ledger: bool,
    ) -> Option<PositionView> {
        let product = self.interner.get(product_ref)?;
        let location = self.interner.get(location_ref)?;
        let pos = self.positions.get(&(product, location))?;
        let channels = (0..self.channels.len())
            .map(|ci| {
                let channel = &self.channels[ci];
                let numbers = self.numbers_at(ci, product, location);
                ChannelPositionView {
                    channel_ref: channel.config.channel_ref.clone(),
                    quantity: self.ats(ci, product, location, None, 0),
                    entitlement: if numbers.allocation_bps >= super::channel::BPS_FULL {
                        pos.allocation_base
                    } else {
                        entitlement(pos.allocation_base, numbers.allocation_bps)
                    },
                    used: pos.used(channel.sym),
                }
            })
            .collect();
        let quantities = if include_ledger {
            let mut iqs: Vec<&Iq> = pos.iqs.iter().collect();
            iqs.sort_by_key(|iq| iq.id);
            iqs.into_iter()
                .map(|iq| IqView {
                    iq_ref: format!("{product_ref}:{location_ref}:{}", iq.id),
                    kind: iq.kind,
                    quantity: iq.quantity,
                    channel_ref: self.name(iq.channel),
                    owner_ref: self.name(iq.owner),
                    created_at: iq.created_at,
                    occurred_at: iq.occurred_at,
                    expires_at: (iq.kind == IqKind::SoftReserve).then_some(iq.expires_at),
                })
                .collect()
        } else {
            Vec::new()
        };
        Some(PositionView {
            product_ref: product_ref.to_string(),
            location_ref: location_ref.to_string(),
            on_hand: pos.on_hand,
            physical: pos.physical,
            allocation_base: pos.allocation_base,
            channels,
            quantities,
        })
    }

    fn name(&self, sym: Sym) -> Option<String> {
        (sym != NO_SYM).then(|| self.interner.resolve(sym).to_string())
    }

    /// Moves the keys of the positions changed since the last call into `out` (possibly
    /// repeated). The shard uses them to know which reads must wait for durability.
    pub fn take_touched(&mut self, out: &mut Vec<(Sym, Sym)>) {
        self.positions.take_touched(out);
    }

    /// The symbols of a position key, if both refs are known.
    pub fn position_key(&self, product_ref: &str, location_ref: &str) -> Option<(Sym, Sym)> {
        Some((
            self.interner.get(product_ref)?,
            self.interner.get(location_ref)?,
        ))
    }

    /// The text of a symbol carried by an event.
    pub fn resolve(&self, sym: Sym) -> &str {
        self.interner.resolve(sym)
    }

    /// This engine's part of a hold, as of `now` (an active part past its deadline reads
    /// as expired even before its timer runs).
    pub fn hold(&self, now: Millis, hold_ref: &str) -> Option<HoldView> {
        let sym = self.interner.get_in(HOLD_NS, hold_ref)?;
        let part = self.holds.get(&sym)?;
        let mut view = self.view(part);
        if view.state == HoldState::Active && part.expires_at <= now {
            view.state = HoldState::Expired;
        }
        Some(view)
    }

    fn view(&self, part: &HoldPart) -> HoldView {
        HoldView {
            hold_ref: self.interner.resolve(part.hold).to_string(),
            channel_ref: self.interner.resolve(part.channel).to_string(),
            state: part.state,
            lines: part
                .lines
                .iter()
                .map(|l| LineView {
                    product_ref: self.interner.resolve(l.product).to_string(),
                    location_ref: self.interner.resolve(l.location).to_string(),
                    quantity: l.quantity,
                })
                .collect(),
            created_at: part.created_at,
            expires_at: part.expires_at,
            order_ref: part.order.map(|o| self.interner.resolve(o).to_string()),
            digest: part.digest,
            total_lines: part.total_lines,
            answered_lines: part.answered_lines,
            primary: part.primary,
            last_fulfil: part.last_fulfil.clone(),
            cancelled: part.cancelled,
            open: part.lines.iter().map(|l| l.open).sum(),
        }
    }

    /// The earliest moment `expire_due` has work: the next hold deadline or forget time.
    pub fn next_deadline(&self) -> Option<Millis> {
        let expiry = self.expiry.first().map(|(t, _)| *t);
        let forget = self.forget.first().map(|(t, _)| *t);
        match (expiry, forget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes the events emitted since the last call.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, Event> {
        self.release_scheduled();
        self.events.drain(..)
    }

    /// The events emitted since the last drain, without taking them.
    pub fn pending_events(&self) -> &[Event] {
        &self.events
    }

    // ----- events and crossings -----

    fn emit(&mut self, mut event: Event) {
        event.seq = self.next_event_seq;
        self.next_event_seq += 1;
        self.events.push(event);
    }

    /// Every channel's ATS at a position, to detect a VP crossing zero.
    fn ats_all(&self, product: Sym, location: Sym, out: &mut Vec<i64>) {
        out.clear();
        for ci in 0..self.channels.len() {
            out.push(self.ats(ci, product, location, None, 0));
        }
    }

    fn emit_crossings(&mut self, now: Millis, product: Sym, location: Sym, before: &[i64]) {
        if before.len() != self.channels.len() {
            return;
        }
        for (ci, &was) in before.iter().enumerate() {
            let is = self.ats(ci, product, location, None, 0);
            let kind = match (was > 0, is > 0) {
                (true, false) => EventKind::OutOfStock,
                (false, true) => EventKind::BackInStock,
                _ => continue,
            };
            let mut e = Event::new(kind, now);
            e.channel = Some(self.channels[ci].sym);
            e.product = Some(product);
            e.location = Some(location);
            e.available = is;
            self.emit(e);
        }
    }

    /// Runs `change` on one position and emits the OUT_OF_STOCK / BACK_IN_STOCK events it causes.
    fn watching<R>(
        &mut self,
        now: Millis,
        product: Sym,
        location: Sym,
        change: impl FnOnce(&mut Self) -> R,
    ) -> R {
        let mut before = Vec::with_capacity(self.channels.len());
        self.ats_all(product, location, &mut before);
        let result = change(self);
        self.emit_crossings(now, product, location, &before);
        result
    }

    fn new_iq(&mut self, kind: IqKind, channel: Sym, owner: Sym, quantity: i64, now: Millis) -> Iq {
        let id = self.next_iq_id;
        self.next_iq_id += 1;
        Iq {
            id,
            kind,
            channel,
            owner,
            quantity,
            created_at: now,
            occurred_at: now,
            expires_at: 0,
        }
    }

    // ----- stock -----

    fn auto_rebalance(&self, location: Sym) -> bool {
        !self.channels.iter().any(|c| {
            c.config.rebalance_mode == RebalanceMode::Manual && !c.excluded.contains(&location)
        })
    }

    fn rebalance_at(&mut self, now: Millis, key: (Sym, Sym)) {
        let Some(pos) = self.positions.get_mut(&key) else {
            return;
        };
        pos.rebalance();
        let base = pos.allocation_base;
        let mut e = Event::new(EventKind::Rebalanced, now);
        e.product = Some(key.0);
        e.location = Some(key.1);
        e.quantity = base;
        self.emit(e);
    }

    fn after_stock_change(&mut self, now: Millis, key: (Sym, Sym)) {
        if self.auto_rebalance(key.1) {
            self.rebalance_at(now, key);
        }
        let on_hand = self.positions[&key].on_hand;
        if on_hand < 0 {
            let mut e = Event::new(EventKind::NegativeOnHand, now);
            e.product = Some(key.0);
            e.location = Some(key.1);
            e.available = on_hand;
            self.emit(e);
        }
    }

    /// Applies a warehouse count (see domain.md, "Count").
    pub fn set_stock(&mut self, now: Millis, count: &StockCount) -> Result<CountStatus, Error> {
        count.validate("count")?;
        let product = self.interner.intern(&count.product_ref);
        let location = self.interner.intern(&count.location_ref);
        let key = (product, location);
        let counted = self
            .positions
            .get(&key)
            .map_or(super::position::NEVER_COUNTED, |p| p.counted_as_of);
        if count.as_of < counted {
            return Ok(CountStatus::Stale);
        }
        let mut iq = self.new_iq(IqKind::LastOnHand, NO_SYM, NO_SYM, count.quantity, now);
        iq.occurred_at = count.as_of;
        let as_of = count.as_of;
        self.watching(now, product, location, |engine| {
            let pos = engine.positions.entry(key).or_default();
            pos.take_where(|iq| {
                iq.kind == IqKind::LastOnHand
                    || (iq.kind.superseded_by_count() && iq.occurred_at <= as_of)
            });
            pos.push(iq);
            pos.counted_as_of = as_of;
            let mut e = Event::new(EventKind::StockCounted, now);
            e.product = Some(product);
            e.location = Some(location);
            e.quantity = count.quantity;
            e.available = pos.on_hand;
            engine.emit(e);
            engine.after_stock_change(now, key);
        });
        Ok(CountStatus::Applied)
    }

    /// Applies a relative change, once per adjustment ref.
    pub fn adjust_stock(&mut self, now: Millis, adj: &Adjustment) -> Result<AdjustStatus, Error> {
        adj.validate("adjustment")?;
        let owner = self.interner.intern(&adj.adjustment_ref);
        if !self.adjustments.insert(owner) {
            return Ok(AdjustStatus::Duplicate);
        }
        let product = self.interner.intern(&adj.product_ref);
        let location = self.interner.intern(&adj.location_ref);
        let key = (product, location);
        let kind = match adj.kind {
            AdjustmentKind::Delta => IqKind::Delta,
            AdjustmentKind::Correction => IqKind::Correction,
            AdjustmentKind::Returned => IqKind::Returned,
        };
        let mut iq = self.new_iq(kind, NO_SYM, owner, adj.quantity, now);
        iq.occurred_at = adj.occurred_at.unwrap_or(now);
        self.watching(now, product, location, |engine| {
            let pos = engine.positions.entry(key).or_default();
            pos.push(iq);
            let mut e = Event::new(EventKind::StockAdjusted, now);
            e.product = Some(product);
            e.location = Some(location);
            e.quantity = adj.quantity;
            e.available = pos.on_hand;
            engine.emit(e);
            engine.after_stock_change(now, key);
        });
        Ok(AdjustStatus::Applied)
    }

    /// Re-applies the allocation split (`P0 = physical`, `sold = 0`) at every position
    /// matching the filters (`None` matches everything). Returns how many.
    pub fn rebalance(
        &mut self,
        now: Millis,
        product_ref: Option<&str>,
        location_ref: Option<&str>,
    ) -> usize {
        let product = match product_ref {
            Some(p) => match self.interner.get(p) {
                Some(s) => Some(s),
                None => return 0,
            },
            None => None,
        };
        let location = match location_ref {
            Some(l) => match self.interner.get(l) {
                Some(s) => Some(s),
                None => return 0,
            },
            None => None,
        };
        let mut keys: Vec<(Sym, Sym)> = self
            .positions
            .keys()
            .filter(|(p, l)| product.is_none_or(|x| x == *p) && location.is_none_or(|x| x == *l))
            .copied()
            .collect();
        keys.sort_unstable();
        for key in &keys {
            self.watching(now, key.0, key.1, |engine| engine.rebalance_at(now, *key));
        }
        keys.len()
    }

    // ----- holds -----

    fn request_digest(req: &ReserveRequest) -> u64 {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + req.lines.len() * 3);
        parts.push(req.channel_ref.as_bytes());
        let quantities: Vec<[u8; 8]> = req.lines.iter().map(|l| l.quantity.to_le_bytes()).collect();
        for (line, q) in req.lines.iter().zip(&quantities) {
            parts.push(line.product_ref.as_bytes());
            parts.push(line.location_ref.as_bytes());
            parts.push(q);
        }
        fnv1a(&parts)
    }

    /// The hold timer: the request's (bounded by the settings), else the shortest product
    /// rule among the lines, else the shortest category rule, else the channel's, else the
    /// global default.
    fn resolve_ttl(&self, req: &ReserveRequest, ci: usize) -> u32 {
        let s = &self.settings;
        if let Some(ttl) = req.ttl_seconds {
            return ttl.clamp(s.ttl_min_seconds, s.ttl_max_seconds);
        }
        let mut by_product: Option<u32> = None;
        let mut by_category: Option<u32> = None;
        for line in &req.lines {
            let product = self.interner.get(&line.product_ref);
            let entry = product.and_then(|p| self.products.get(&p));
            if let Some(ttl) = entry.and_then(|e| e.ttl_seconds) {
                by_product = Some(by_product.map_or(ttl, |t| t.min(ttl)));
            }
            let category = entry
                .and_then(|e| e.category)
                .or_else(|| line.category.as_deref().and_then(|c| self.interner.get(c)));
            if let Some(ttl) = category.and_then(|c| self.categories.get(&c)) {
                by_category = Some(by_category.map_or(*ttl, |t| t.min(*ttl)));
            }
        }
        by_product
            .or(by_category)
            .or(self.channels[ci].config.hold_ttl_seconds)
            .unwrap_or(s.ttl_default_seconds)
            .clamp(s.ttl_min_seconds, s.ttl_max_seconds)
    }

    /// Reserves the request lines at `mine` (indices into `req.lines` whose positions this
    /// engine owns) for the hold, as domain.md's "Holds" says: all-or-nothing on this engine
    /// unless `allow_partial`; idempotent for the same lines; a cart update otherwise.
    ///
    /// Pass every line index to use one engine alone. With several engines, send the
    /// request to each (also to those with no lines, since they may hold an older version
    /// of the cart) and call `undo_reserve` on those that changed if another rejected.
    pub fn reserve(
        &mut self,
        now: Millis,
        req: &ReserveRequest,
        mine: &[u32],
    ) -> Result<ReservePart, Error> {
        req.validate()?;
        let ci = self.channel_index(&req.channel_ref)?;
        let channel = self.channels[ci].sym;
        let digest = Self::request_digest(req);
        let hold_sym = self.interner.get_in(HOLD_NS, &req.hold_ref);
        let mut existing_active = false;
        if let Some(part) = hold_sym.and_then(|s| self.holds.get(&s)) {
            match part.state {
                HoldState::Confirmed => {
                    return Err(Error::HoldConfirmed {
                        hold_ref: req.hold_ref.clone(),
                        order_ref: self
                            .interner
                            .resolve(part.order.unwrap_or(NO_SYM))
                            .to_string(),
                    });
                }
                HoldState::Active if part.expires_at <= now => {
                    let sym = part.hold;
                    self.expire_part(now, sym);
                }
                HoldState::Active => {
                    if part.channel != channel {
                        return Err(Error::HoldChannelMismatch {
                            hold_ref: req.hold_ref.clone(),
                            channel_ref: self.interner.resolve(part.channel).to_string(),
                        });
                    }
                    existing_active = true;
                    let held_at = |line: &super::request::ReserveLine| -> i64 {
                        part.lines
                            .iter()
                            .filter(|l| {
                                self.interner.resolve(l.product) == line.product_ref
                                    && self.interner.resolve(l.location) == line.location_ref
                            })
                            .map(|l| l.quantity)
                            .sum()
                    };
                    // The same request again is idempotent: it reports what the hold holds
                    // (a partial hold may hold less than asked) and changes nothing.
                    if part.digest == digest {
                        let lines = mine
                            .iter()
                            .map(|&i| {
                                let line = &req.lines[i as usize];
                                let available = self.line_available(ci, line, Some(part));
                                LineResult {
                                    index: i,
                                    requested: line.quantity,
                                    reserved: held_at(line),
                                    available,
                                }
                            })
                            .collect();
                        return Ok(ReservePart {
                            kind: ReserveKind::Unchanged,
                            lines,
                            undo: None,
                        });
                    }
                }
                HoldState::Released | HoldState::Expired => {}
            }
        }
        if mine.is_empty() && !existing_active {
            return Ok(ReservePart {
                kind: ReserveKind::Untouched,
                lines: Vec::new(),
                undo: None,
            });
        }
        let existing = if existing_active {
            hold_sym.and_then(|s| self.holds.get(&s))
        } else {
            None
        };
        let mut lines = Vec::with_capacity(mine.len());
        let mut short = false;
        for &i in mine {
            let line = &req.lines[i as usize];
            let available = self.line_available(ci, line, existing);
            let reserved = if req.allow_partial {
                line.quantity.min(available)
            } else {
                line.quantity
            };
            short |= line.quantity > available;
            lines.push(LineResult {
                index: i,
                requested: line.quantity,
                reserved,
                available,
            });
        }
        if short && !req.allow_partial {
            for r in &mut lines {
                r.reserved = 0;
            }
            for &i in mine {
                let line = &req.lines[i as usize];
                let available = lines
                    .iter()
                    .find(|r| r.index == i)
                    .map_or(0, |r| r.available);
                if line.quantity > available {
                    let mut e = Event::new(EventKind::ReserveRejected, now);
                    e.channel = Some(channel);
                    e.hold = hold_sym;
                    e.product = self.interner.get(&line.product_ref);
                    e.location = self.interner.get(&line.location_ref);
                    e.quantity = line.quantity;
                    e.available = available;
                    e.primary = i == 0;
                    self.emit(e);
                }
            }
            return Ok(ReservePart {
                kind: ReserveKind::Rejected,
                lines,
                undo: None,
            });
        }
        // Apply: take the old part out, put the new one in.
        let hold = self.interner.intern_in(HOLD_NS, &req.hold_ref);
        let previous = self.holds.get(&hold).map(|p| Box::new(self.snap_part(p)));
        let created_at = match (existing_active, self.holds.get(&hold)) {
            (true, Some(p)) => p.created_at,
            _ => now,
        };
        self.remove_part(now, hold);
        let ttl = self.resolve_ttl(req, ci);
        let expires_at = now + Millis::from(ttl) * MS;
        let mut part_lines = Vec::with_capacity(lines.len());
        for r in &lines {
            if r.reserved <= 0 {
                continue;
            }
            let line = &req.lines[r.index as usize];
            let product = self.interner.intern(&line.product_ref);
            let location = self.interner.intern(&line.location_ref);
            part_lines.push(PartLine {
                product,
                location,
                quantity: r.reserved,
                open: 0,
            });
        }
        let part = HoldPart {
            hold,
            channel,
            state: HoldState::Active,
            lines: part_lines,
            created_at,
            updated_at: now,
            expires_at,
            order: None,
            digest,
            total_lines: req.lines.len() as u32,
            answered_lines: mine.len() as u32,
            primary: mine.contains(&0),
            forget_at: None,
            last_fulfil: None,
            cancelled: false,
        };
        let total: i64 = part.lines.iter().map(|l| l.quantity).sum();
        let primary = part.primary;
        self.insert_part(now, part);
        let kind = if existing_active {
            ReserveKind::Updated
        } else {
            ReserveKind::Created
        };
        let mut e = Event::new(
            if existing_active {
                EventKind::HoldUpdated
            } else {
                EventKind::HoldCreated
            },
            now,
        );
        e.channel = Some(channel);
        e.hold = Some(hold);
        e.quantity = total;
        e.primary = primary;
        self.emit(e);
        Ok(ReservePart {
            kind,
            lines,
            undo: Some(ReserveUndo {
                hold_ref: req.hold_ref.clone(),
                previous,
            }),
        })
    }

    /// ATS for a request line, counting the hold's own units there as free.
    fn line_available(
        &self,
        ci: usize,
        line: &super::request::ReserveLine,
        existing: Option<&HoldPart>,
    ) -> i64 {
        let (Some(product), Some(location)) = (
            self.interner.get(&line.product_ref),
            self.interner.get(&line.location_ref),
        ) else {
            return 0;
        };
        let own = existing.map_or(0, |part| {
            part.lines
                .iter()
                .filter(|l| l.product == product && l.location == location)
                .map(|l| l.quantity)
                .sum()
        });
        let hint = line.category.as_deref().and_then(|c| self.interner.get(c));
        self.ats(ci, product, location, hint, own)
    }

    /// Puts back the part a reserve replaced (or removes the part if there was none).
    pub fn undo_reserve(&mut self, now: Millis, undo: &ReserveUndo) {
        let Some(hold) = self.interner.get_in(HOLD_NS, &undo.hold_ref) else {
            return;
        };
        if let Some(part) = self.holds.get(&hold) {
            let mut e = Event::new(EventKind::HoldReleased, now);
            e.channel = Some(part.channel);
            e.hold = Some(hold);
            e.quantity = part.lines.iter().map(|l| l.quantity).sum();
            e.primary = part.primary;
            self.emit(e);
        }
        self.remove_part(now, hold);
        if let Some(previous) = &undo.previous {
            let part = self.unsnap_part(previous);
            self.insert_part(now, part);
        }
        self.release_if_unused(hold);
    }

    /// Inserts a part: its SOFT_RESERVE IQs if active, its timers, its counters.
    pub(crate) fn insert_part(&mut self, now: Millis, part: HoldPart) {
        let hold = part.hold;
        if part.state == HoldState::Active {
            for line in &part.lines {
                let mut iq =
                    self.new_iq(IqKind::SoftReserve, part.channel, hold, -line.quantity, now);
                iq.expires_at = part.expires_at;
                let key = (line.product, line.location);
                self.watching(now, key.0, key.1, |engine| {
                    engine.positions.entry(key).or_default().push(iq);
                });
            }
            self.expiry.insert((part.expires_at, hold));
            if part.primary {
                *self.active_holds.entry(part.channel).or_default() += 1;
            }
        } else if part.state == HoldState::Confirmed
            && let Some(order) = part.order
        {
            self.orders.insert(order, hold);
            for line in &part.lines {
                if line.open > 0 {
                    let iq = self.new_iq(IqKind::Reserved, part.channel, order, -line.open, now);
                    self.positions
                        .entry((line.product, line.location))
                        .or_default()
                        .push(iq);
                }
            }
        }
        if let Some(t) = part.forget_at {
            self.forget.insert((t, hold));
        }
        self.holds.insert(hold, part);
    }

    /// Removes a part and everything it holds (its SOFT_RESERVE or RESERVED IQs, timers).
    fn remove_part(&mut self, now: Millis, hold: Sym) -> Option<HoldPart> {
        let part = self.holds.remove(&hold)?;
        self.expiry.remove(&(part.expires_at, hold));
        if let Some(t) = part.forget_at {
            self.forget.remove(&(t, hold));
        }
        match part.state {
            HoldState::Active => {
                self.drop_soft_reserves(now, &part);
                if part.primary {
                    self.count_active(part.channel, -1);
                }
            }
            HoldState::Confirmed => {
                if let Some(order) = part.order {
                    self.orders.remove(&order);
                    for line in &part.lines {
                        self.take_reserved(now, line, order);
                    }
                }
            }
            HoldState::Released | HoldState::Expired => {}
        }
        Some(part)
    }

    fn count_active(&mut self, channel: Sym, delta: i64) {
        let n = self.active_holds.entry(channel).or_default();
        *n += delta;
        assert!(*n >= 0, "active hold count went negative");
    }

    fn drop_soft_reserves(&mut self, now: Millis, part: &HoldPart) {
        for line in &part.lines {
            let key = (line.product, line.location);
            self.watching(now, key.0, key.1, |engine| {
                if let Some(pos) = engine.positions.get_mut(&key) {
                    let taken = pos
                        .take_where(|iq| iq.kind == IqKind::SoftReserve && iq.owner == part.hold);
                    assert_eq!(taken.len(), 1, "a hold line has exactly one SOFT_RESERVE");
                }
            });
        }
    }

    fn take_reserved(&mut self, now: Millis, line: &PartLine, order: Sym) -> i64 {
        let key = (line.product, line.location);
        self.watching(now, key.0, key.1, |engine| {
            engine.take_reserved_unwatched(line, order)
        })
    }

    fn take_reserved_unwatched(&mut self, line: &PartLine, order: Sym) -> i64 {
        let key = (line.product, line.location);
        let Some(pos) = self.positions.get_mut(&key) else {
            return 0;
        };
        pos.take_where(|iq| iq.kind == IqKind::Reserved && iq.owner == order)
            .iter()
            .map(|iq| -iq.quantity)
            .sum()
    }

    /// Turns an active part EXPIRED: its stock is sellable again.
    fn expire_part(&mut self, now: Millis, hold: Sym) {
        let Some(part) = self.holds.get(&hold) else {
            return;
        };
        if part.state != HoldState::Active {
            return;
        }
        self.finish_active(now, hold, HoldState::Expired, EventKind::HoldExpired);
    }

    /// Ends an active part (released or expired): drops its SOFT_RESERVEs, keeps the
    /// record for the retention time.
    fn finish_active(&mut self, now: Millis, hold: Sym, state: HoldState, kind: EventKind) {
        let mut part = self.holds.remove(&hold).expect("finish of a missing hold");
        debug_assert_eq!(part.state, HoldState::Active);
        self.expiry.remove(&(part.expires_at, hold));
        self.drop_soft_reserves(now, &part);
        if part.primary {
            self.count_active(part.channel, -1);
        }
        part.state = state;
        part.updated_at = now;
        let forget_at = now + self.settings.hold_retention_ms;
        part.forget_at = Some(forget_at);
        self.forget.insert((forget_at, hold));
        let mut e = Event::new(kind, now);
        e.channel = Some(part.channel);
        e.hold = Some(hold);
        e.quantity = part.lines.iter().map(|l| l.quantity).sum();
        e.primary = part.primary;
        self.holds.insert(hold, part);
        self.emit(e);
    }

    /// Confirms this engine's part of a hold into an order (see domain.md, "Confirm").
    /// `Ok(None)`: no part here.
    pub fn confirm(
        &mut self,
        now: Millis,
        hold_ref: &str,
        order_ref: &str,
    ) -> Result<Option<HoldState>, Error> {
        super::request::check_ref_field("hold_ref", hold_ref)?;
        super::request::check_ref_field("order_ref", order_ref)?;
        let Some(hold) = self.interner.get_in(HOLD_NS, hold_ref) else {
            return Ok(None);
        };
        let Some(part) = self.holds.get(&hold) else {
            return Ok(None);
        };
        match part.state {
            HoldState::Confirmed => {
                let current = self
                    .interner
                    .resolve(part.order.expect("confirmed has an order"));
                if current == order_ref {
                    return Ok(Some(HoldState::Confirmed));
                }
                return Err(Error::HoldConfirmed {
                    hold_ref: hold_ref.to_string(),
                    order_ref: current.to_string(),
                });
            }
            HoldState::Released => return Err(Error::HoldReleased(hold_ref.to_string())),
            HoldState::Expired => return Err(Error::HoldExpired(hold_ref.to_string())),
            HoldState::Active if part.expires_at <= now => {
                self.expire_part(now, hold);
                return Err(Error::HoldExpired(hold_ref.to_string()));
            }
            HoldState::Active => {}
        }
        if let Some(other) = self
            .interner
            .get_in(ORDER_NS, order_ref)
            .and_then(|o| self.orders.get(&o))
            && *other != hold
        {
            return Err(Error::OrderConflict {
                order_ref: order_ref.to_string(),
                hold_ref: self.interner.resolve(*other).to_string(),
            });
        }
        let order = self.interner.intern_in(ORDER_NS, order_ref);
        let mut part = self.holds.remove(&hold).expect("checked above");
        self.expiry.remove(&(part.expires_at, hold));
        if part.primary {
            self.count_active(part.channel, -1);
        }
        for line in &mut part.lines {
            let key = (line.product, line.location);
            let reserved = self.new_iq(IqKind::Reserved, part.channel, order, -line.quantity, now);
            let pos = self
                .positions
                .get_mut(&key)
                .expect("a held line has a position");
            let taken = pos.take_where(|iq| iq.kind == IqKind::SoftReserve && iq.owner == hold);
            assert_eq!(taken.len(), 1, "a hold line has exactly one SOFT_RESERVE");
            pos.push(reserved);
            line.open = line.quantity;
        }
        part.state = HoldState::Confirmed;
        part.order = Some(order);
        part.updated_at = now;
        self.orders.insert(order, hold);
        let mut e = Event::new(EventKind::HoldConfirmed, now);
        e.channel = Some(part.channel);
        e.hold = Some(hold);
        e.order = Some(order);
        e.quantity = part.lines.iter().map(|l| l.quantity).sum();
        e.primary = part.primary;
        let closed = part.lines.iter().all(|l| l.open == 0);
        self.holds.insert(hold, part);
        if closed {
            self.schedule_forget(now, hold);
        }
        self.emit(e);
        Ok(Some(HoldState::Confirmed))
    }

    /// Releases this engine's part of a hold. Idempotent. `Ok(None)`: no part here.
    pub fn release(&mut self, now: Millis, hold_ref: &str) -> Result<Option<HoldState>, Error> {
        super::request::check_ref_field("hold_ref", hold_ref)?;
        let Some(hold) = self.interner.get_in(HOLD_NS, hold_ref) else {
            return Ok(None);
        };
        let Some(part) = self.holds.get(&hold) else {
            return Ok(None);
        };
        match part.state {
            HoldState::Confirmed => Err(Error::HoldConfirmed {
                hold_ref: hold_ref.to_string(),
                order_ref: self
                    .interner
                    .resolve(part.order.expect("confirmed has an order"))
                    .to_string(),
            }),
            HoldState::Released | HoldState::Expired => Ok(Some(part.state)),
            HoldState::Active if part.expires_at <= now => {
                self.expire_part(now, hold);
                Ok(Some(HoldState::Expired))
            }
            HoldState::Active => {
                self.finish_active(now, hold, HoldState::Released, EventKind::HoldReleased);
                Ok(Some(HoldState::Released))
            }
        }
    }

    fn schedule_forget(&mut self, now: Millis, hold: Sym) {
        let forget_at = now + self.settings.hold_retention_ms;
        let part = self.holds.get_mut(&hold).expect("scheduled hold exists");
        if let Some(t) = part.forget_at.replace(forget_at) {
            self.forget.remove(&(t, hold));
        }
        self.forget.insert((forget_at, hold));
    }

    fn order_part(&self, order_ref: &str) -> Option<Sym> {
        let order = self.interner.get_in(ORDER_NS, order_ref)?;
        self.orders.get(&order).copied()
    }

    /// Ships an order's lines here (all of them when `lines` is `None`): RESERVED turns into
    /// SALE. With `dry_run` it only checks, so a caller can check every shard before any
    /// changes. `Ok(None)`: the order has no part here.
    pub fn fulfil(
        &mut self,
        now: Millis,
        order_ref: &str,
        lines: Option<&[OrderLine]>,
        dry_run: bool,
    ) -> Result<Option<Vec<LineView>>, Error> {
        super::request::check_ref_field("order_ref", order_ref)?;
        let Some(hold) = self.order_part(order_ref) else {
            if let Some(first) = lines.and_then(|l| l.first()) {
                return Err(Error::FulfilExceedsReserved {
                    field: format!("lines[{}].quantity", first.index),
                    order_ref: order_ref.to_string(),
                    requested: first.quantity,
                    open: 0,
                });
            }
            return Ok(None);
        };
        let part = &self.holds[&hold];
        // Which part line each request line ships from, and how much.
        let mut plan: Vec<(usize, i64)> = Vec::new();
        match lines {
            None => {
                for (i, line) in part.lines.iter().enumerate() {
                    if line.open > 0 {
                        plan.push((i, line.open));
                    }
                }
            }
            Some(lines) => {
                for req in lines {
                    let field = format!("lines[{}].quantity", req.index);
                    if req.quantity < 1 {
                        return Err(Error::invalid(field, "must be at least 1"));
                    }
                    let found = part.lines.iter().position(|l| {
                        self.interner.resolve(l.product) == req.product_ref
                            && self.interner.resolve(l.location) == req.location_ref
                    });
                    let open = found.map_or(0, |i| part.lines[i].open);
                    let already: i64 = plan
                        .iter()
                        .filter(|(i, _)| Some(*i) == found)
                        .map(|(_, q)| q)
                        .sum();
                    if req.quantity + already > open {
                        return Err(Error::FulfilExceedsReserved {
                            field,
                            order_ref: order_ref.to_string(),
                            requested: req.quantity,
                            open: open - already,
                        });
                    }
                    plan.push((found.expect("open > 0 means found"), req.quantity));
                }
            }
        }
        let shipped: Vec<LineView> = plan
            .iter()
            .map(|(i, q)| LineView {
                product_ref: self.interner.resolve(part.lines[*i].product).to_string(),
                location_ref: self.interner.resolve(part.lines[*i].location).to_string(),
                quantity: *q,
            })
            .collect();
        if dry_run {
            return Ok(Some(shipped));
        }
        let order = part.order.expect("an order part has its order");
        let channel = part.channel;
        for (i, q) in plan {
            let line = self.holds[&hold].lines[i].clone();
            let key = (line.product, line.location);
            let left = line.open - q;
            // One crossing check around the whole change: ATS does not move, so no event.
            self.watching(now, key.0, key.1, |engine| {
                let open_before = engine.take_reserved_unwatched(&line, order);
                assert_eq!(
                    open_before, line.open,
                    "RESERVED IQs match the open quantity"
                );
                let mut sale = engine.new_iq(IqKind::Sale, channel, order, -q, now);
                sale.occurred_at = now;
                let rest =
                    (left > 0).then(|| engine.new_iq(IqKind::Reserved, channel, order, -left, now));
                let pos = engine
                    .positions
                    .get_mut(&key)
                    .expect("order line has a position");
                pos.push(sale);
                if let Some(rest) = rest {
                    pos.push(rest);
                }
                pos.add_sold(channel, q);
            });
            self.holds.get_mut(&hold).expect("exists").lines[i].open = left;
            let mut e = Event::new(EventKind::OrderFulfilled, now);
            e.channel = Some(channel);
            e.hold = Some(hold);
            e.order = Some(order);
            e.product = Some(key.0);
            e.location = Some(key.1);
            e.quantity = q;
            self.emit(e);
        }
        if self.holds[&hold].lines.iter().all(|l| l.open == 0) {
            self.schedule_forget(now, hold);
        }
        Ok(Some(shipped))
    }

    /// Records the whole fulfilment a `fulfil` on this engine was part of.
    pub fn note_fulfil(&mut self, order_ref: &str, op: &super::hold::FulfilOp) {
        if let Some(hold) = self.order_part(order_ref)
            && let Some(part) = self.holds.get_mut(&hold)
        {
            part.last_fulfil = Some(op.clone());
        }
    }

    /// Cancels what an order still has reserved here: the stock is sellable again.
    /// Idempotent. `Ok(None)`: the order has no part here.
    pub fn cancel_order(
        &mut self,
        now: Millis,
        order_ref: &str,
    ) -> Result<Option<Vec<LineView>>, Error> {
        super::request::check_ref_field("order_ref", order_ref)?;
        let Some(hold) = self.order_part(order_ref) else {
            return Ok(None);
        };
        let part = self.holds[&hold].clone();
        let order = part.order.expect("an order part has its order");
        let mut cancelled = Vec::new();
        for (i, line) in part.lines.iter().enumerate() {
            if line.open <= 0 {
                continue;
            }
            let taken = self.take_reserved(now, line, order);
            assert_eq!(taken, line.open, "RESERVED IQs match the open quantity");
            self.holds.get_mut(&hold).expect("exists").lines[i].open = 0;
            cancelled.push(LineView {
                product_ref: self.interner.resolve(line.product).to_string(),
                location_ref: self.interner.resolve(line.location).to_string(),
                quantity: line.open,
            });
            let mut e = Event::new(EventKind::OrderCancelled, now);
            e.channel = Some(part.channel);
            e.hold = Some(hold);
            e.order = Some(order);
            e.product = Some(line.product);
            e.location = Some(line.location);
            e.quantity = line.open;
            self.emit(e);
        }
        self.holds.get_mut(&hold).expect("exists").cancelled = true;
        self.schedule_forget(now, hold);
        Ok(Some(cancelled))
    }

    /// Expires every active hold whose deadline is at or before `now`, and forgets finished
    /// holds past their retention. Returns how many holds expired. Costs O(log n) per hold
    /// due, nothing per hold not due.
    pub fn expire_due(&mut self, now: Millis) -> usize {
        let mut expired = 0;
        while let Some(&(t, hold)) = self.expiry.first() {
            if t > now {
                break;
            }
            self.expire_part(now, hold);
            expired += 1;
        }
        while let Some(&(t, hold)) = self.forget.first() {
            if t > now {
                break;
            }
            self.forget.pop_first();
            self.forget_hold(hold);
        }
        expired
    }

    /// Drops a finished hold from memory and releases its refs.
    fn forget_hold(&mut self, hold: Sym) {
        let Some(part) = self.holds.remove(&hold) else {
            return;
        };
        assert!(
            part.state != HoldState::Active,
            "an active hold is never forgotten"
        );
        if let Some(order) = part.order {
            self.orders.remove(&order);
            // The order's SALE records may still be ACTIVE; they keep the quantity, not the ref.
            for line in &part.lines {
                if let Some(pos) = self.positions.get_mut(&(line.product, line.location)) {
                    for iq in pos
                        .iqs
                        .iter_mut()
                        .filter(|iq| iq.owner == order && iq.kind == IqKind::Sale)
                    {
                        iq.owner = NO_SYM;
                    }
                }
            }
            self.release_later.push((order, ORDER_NS));
        }
        self.release_later.push((hold, HOLD_NS));
    }

    /// Releases a hold's ref if no part refers to it (after an undo of a new hold).
    fn release_if_unused(&mut self, hold: Sym) {
        self.release_later.push((hold, HOLD_NS));
    }

    /// Releases the refs of forgotten holds and orders, one drain after they were
    /// scheduled: events already handed out may still name them until then.
    fn release_scheduled(&mut self) {
        for (sym, ns) in std::mem::take(&mut self.release_ready) {
            let used = if ns == HOLD_NS {
                self.holds.contains_key(&sym)
            } else {
                self.orders.contains_key(&sym)
            };
            if !used {
                self.interner.release(sym);
            }
        }
        self.release_ready = std::mem::take(&mut self.release_later);
    }

    /// Every hold part, for recovery's completeness check.
    pub fn hold_views(&self) -> Vec<HoldView> {
        self.holds.values().map(|p| self.view(p)).collect()
    }

    /// The hold parts that do not hold their whole request (the hold spans shards, or a
    /// shard-count change split it): only these can be left half-written by a crash.
    pub fn split_hold_views(&self) -> Vec<HoldView> {
        self.holds
            .values()
            .filter(|p| p.answered_lines != p.total_lines)
            .map(|p| self.view(p))
            .collect()
    }

    /// Checks the counters against the ledger and the hold records; used by tests and after
    /// recovery. Returns a description of the first inconsistency.
    pub fn check_consistency(&self) -> Result<(), String> {
        for ((p, l), pos) in &self.positions {
            let (physical, on_hand, held) = pos.recount();
            let name = || {
                format!(
                    "{}:{}",
                    self.interner.resolve(*p),
                    self.interner.resolve(*l)
                )
            };
            if physical != pos.physical || on_hand != pos.on_hand {
                return Err(format!("{}: counters drifted from the ledger", name()));
            }
            for (c, h) in held {
                if pos.held(c) != h {
                    return Err(format!("{}: held drifted from the ledger", name()));
                }
            }
        }
        for part in self.holds.values() {
            for line in &part.lines {
                let pos = self.positions.get(&(line.product, line.location));
                let soft = pos.map_or(0, |p| {
                    p.iqs
                        .iter()
                        .filter(|iq| iq.kind == IqKind::SoftReserve && iq.owner == part.hold)
                        .map(|iq| -iq.quantity)
                        .sum::<i64>()
                });
                let want = if part.state == HoldState::Active {
                    line.quantity
                } else {
                    0
                };
                if soft != want {
                    return Err(format!(
                        "hold {} holds {soft} where it should hold {want}",
                        self.interner.resolve(part.hold)
                    ));
                }
            }
        }
        Ok(())
    }
}
