//! Inventory Positions: one product at one location, its ACTIVE ledger and its counters.
//!
//! Only ACTIVE Inventory Quantities stay in memory; when one turns INACTIVE it leaves the
//! ledger (its history is in the events). The counters (`physical`, `on_hand`, per-channel
//! `held` and `sold`) are kept in step with the ledger so that ATS costs no scan.

use serde::{Deserialize, Serialize};

use super::Millis;
use super::refs::Sym;

/// The type of an Inventory Quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IqKind {
    LastOnHand,
    Delta,
    Correction,
    Returned,
    Sale,
    SoftReserve,
    Reserved,
}

impl IqKind {
    /// Reservations are not in the building's count; everything else is.
    pub fn is_reservation(self) -> bool {
        matches!(self, IqKind::SoftReserve | IqKind::Reserved)
    }

    /// The kinds a count supersedes when they occurred at or before its `as_of`.
    pub fn superseded_by_count(self) -> bool {
        matches!(
            self,
            IqKind::Delta | IqKind::Correction | IqKind::Returned | IqKind::Sale
        )
    }

    /// The name used in refs and events.
    pub fn as_str(self) -> &'static str {
        match self {
            IqKind::LastOnHand => "LAST_ON_HAND",
            IqKind::Delta => "DELTA",
            IqKind::Correction => "CORRECTION",
            IqKind::Returned => "RETURNED",
            IqKind::Sale => "SALE",
            IqKind::SoftReserve => "SOFT_RESERVE",
            IqKind::Reserved => "RESERVED",
        }
    }
}

/// "No symbol" for an IQ's channel or owner.
pub(crate) const NO_SYM: Sym = Sym(u32::MAX);

/// One ACTIVE ledger record. `owner` is the hold (SOFT_RESERVE), order (RESERVED, SALE
/// of an order) or adjustment (DELTA, CORRECTION, RETURNED) it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Iq {
    pub id: u64,
    pub kind: IqKind,
    pub channel: Sym,
    pub owner: Sym,
    pub quantity: i64,
    pub created_at: Millis,
    pub occurred_at: Millis,
    pub expires_at: Millis,
}

/// Per-channel counters of a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChannelCounters {
    pub channel: Sym,
    /// `held(c)`: −Σ of the channel's ACTIVE SOFT_RESERVE and RESERVED.
    pub held: i64,
    /// `sold(c)`: the channel's SALE quantity since the last rebalance.
    pub sold: i64,
}

/// No count yet.
pub(crate) const NEVER_COUNTED: Millis = Millis::MIN;

/// An Inventory Position.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Position {
    pub iqs: Vec<Iq>,
    pub counted_as_of: Millis,
    pub allocation_base: i64,
    pub channels: Vec<ChannelCounters>,
    pub physical: i64,
    pub on_hand: i64,
}

impl Default for Position {
    fn default() -> Self {
        Position {
            iqs: Vec::new(),
            counted_as_of: NEVER_COUNTED,
            allocation_base: 0,
            channels: Vec::new(),
            physical: 0,
            on_hand: 0,
        }
    }
}

impl Position {
    pub fn new() -> Self {
        Self::default()
    }

    fn counters_mut(&mut self, channel: Sym) -> &mut ChannelCounters {
        let index = match self.channels.iter().position(|c| c.channel == channel) {
            Some(i) => i,
            None => {
                self.channels.push(ChannelCounters {
                    channel,
                    held: 0,
                    sold: 0,
                });
                self.channels.len() - 1
            }
        };
        &mut self.channels[index]
    }

    pub fn held(&self, channel: Sym) -> i64 {
        self.channels
            .iter()
            .find(|c| c.channel == channel)
            .map_or(0, |c| c.held)
    }

    /// `used(c) = held(c) + sold(c)`.
    pub fn used(&self, channel: Sym) -> i64 {
        self.channels
            .iter()
            .find(|c| c.channel == channel)
            .map_or(0, |c| c.held + c.sold)
    }

    /// Adds an ACTIVE IQ and moves the counters with it.
    pub fn push(&mut self, iq: Iq) {
        // Most positions hold one record (their count): do not let the first push
        // allocate room for four.
        if self.iqs.capacity() == self.iqs.len() {
            self.iqs.reserve_exact(self.iqs.len().max(1));
        }
        self.account(&iq, 1);
        self.iqs.push(iq);
    }

    /// Removes (turns INACTIVE) the IQ at `index` and returns it.
    pub fn take(&mut self, index: usize) -> Iq {
        let iq = self.iqs.swap_remove(index);
        self.account(&iq, -1);
        iq
    }

    /// Removes every IQ matching `pred`, returning them.
    pub fn take_where(&mut self, mut pred: impl FnMut(&Iq) -> bool) -> Vec<Iq> {
        let mut taken = Vec::new();
        let mut i = 0;
        while i < self.iqs.len() {
            if pred(&self.iqs[i]) {
                taken.push(self.take(i));
            } else {
                i += 1;
            }
        }
        taken
    }

    fn account(&mut self, iq: &Iq, sign: i64) {
        let q = iq.quantity * sign;
        self.on_hand += q;
        if iq.kind.is_reservation() {
            self.counters_mut(iq.channel).held -= q;
        } else {
            self.physical += q;
        }
    }

    /// Counts a sale towards `sold(c)` (a fulfilment).
    pub fn add_sold(&mut self, channel: Sym, quantity: i64) {
        self.counters_mut(channel).sold += quantity;
    }

    /// `P0 = physical`, every `sold(c) = 0`.
    pub fn rebalance(&mut self) {
        self.allocation_base = self.physical;
        for c in &mut self.channels {
            c.sold = 0;
        }
        self.channels.retain(|c| c.held != 0);
    }

    /// Recomputes the counters from the ledger into `held` (cleared first: one scratch for
    /// every position); used to check them in tests and after restore. Returns `physical`
    /// and `on_hand`.
    pub fn recount(&self, held: &mut Vec<(Sym, i64)>) -> (i64, i64) {
        let mut physical = 0;
        let mut on_hand = 0;
        held.clear();
        for iq in &self.iqs {
            on_hand += iq.quantity;
            if iq.kind.is_reservation() {
                match held.iter_mut().find(|(c, _)| *c == iq.channel) {
                    Some((_, h)) => *h -= iq.quantity,
                    None => held.push((iq.channel, -iq.quantity)),
                }
            } else {
                physical += iq.quantity;
            }
        }
        (physical, on_hand)
    }
}

/// The positions of one engine: a dense `Vec` and a small index by (product, location).
///
/// Positions are never removed, so a `Vec` costs one slot per position where a hash map
/// of whole positions would cost about twice the entry (its load factor) in every bucket.
#[derive(Clone, Debug, Default)]
pub(crate) struct PositionTable {
    index: rustc_hash::FxHashMap<(Sym, Sym), u32>,
    slots: Vec<((Sym, Sym), Position)>,
    /// Each product's positions as a list through the slots: the product's last slot and
    /// its position count here, then `next[slot]` the product's slot before it
    /// (`NO_SLOT` ends it). A read of one product at many locations (a network read)
    /// walks its list instead of looking up every (product, location) pair.
    by_product: rustc_hash::FxHashMap<Sym, (u32, u32)>,
    next: Vec<u32>,
    /// Keys handed out for change since the last `take_touched`: lets the shard know which
    /// positions a write changed without the engine knowing why it is asked.
    touched: Vec<(Sym, Sym)>,
    /// Keys handed out for change since the last checkpoint delta (`take_changed`): kept
    /// apart from `touched`, which the shard drains on its own schedule for reads.
    changed: rustc_hash::FxHashSet<(Sym, Sym)>,
}

/// The end of a product's list of slots (`PositionTable::next`).
const NO_SLOT: u32 = u32::MAX;

/// The slot of a key, as `HashMap::entry` gives it.
pub(crate) struct PositionEntry<'a> {
    table: &'a mut PositionTable,
    key: (Sym, Sym),
}

impl<'a> PositionEntry<'a> {
    /// The position, created empty if the key is new.
    pub fn or_default(self) -> &'a mut Position {
        let table = self.table;
        table.touched.push(self.key);
        table.changed.insert(self.key);
        let slot = match table.index.get(&self.key) {
            Some(i) => *i as usize,
            None => table.push(self.key, Position::default()),
        };
        &mut table.slots[slot].1
    }
}

impl PositionTable {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn get(&self, key: &(Sym, Sym)) -> Option<&Position> {
        self.index.get(key).map(|i| &self.slots[*i as usize].1)
    }

    pub fn get_mut(&mut self, key: &(Sym, Sym)) -> Option<&mut Position> {
        let i = *self.index.get(key)?;
        self.touched.push(*key);
        self.changed.insert(*key);
        Some(&mut self.slots[i as usize].1)
    }

    /// The keys changed since the last call (for a checkpoint delta), and a clean slate.
    pub fn take_changed(&mut self) -> rustc_hash::FxHashSet<(Sym, Sym)> {
        std::mem::take(&mut self.changed)
    }

    pub fn changed_len(&self) -> usize {
        self.changed.len()
    }

    /// Marks every position changed (the next delta carries them all).
    pub fn mark_all_changed(&mut self) {
        let keys = self.slots.iter().map(|(k, _)| *k);
        self.changed.extend(keys);
    }

    pub fn clear_changed(&mut self) {
        self.changed.clear();
    }

    /// Moves the keys changed since the last call into `out`.
    pub fn take_touched(&mut self, out: &mut Vec<(Sym, Sym)>) {
        out.append(&mut self.touched);
    }

    pub fn entry(&mut self, key: (Sym, Sym)) -> PositionEntry<'_> {
        PositionEntry { table: self, key }
    }

    pub fn insert(&mut self, key: (Sym, Sym), position: Position) {
        *self.entry(key).or_default() = position;
    }

    /// Inserts a position without tracking it as changed or touched: a restore, whose
    /// positions are already in the store and have no write pending.
    pub fn insert_untracked(&mut self, key: (Sym, Sym), position: Position) {
        match self.index.get(&key) {
            Some(i) => self.slots[*i as usize].1 = position,
            None => {
                self.push(key, position);
            }
        }
    }

    /// A new slot for a key not in the table, filed in the index and its product's list.
    fn push(&mut self, key: (Sym, Sym), position: Position) -> usize {
        let i = self.slots.len();
        let slot = u32::try_from(i).expect("at most 2^32 positions per shard");
        assert!(slot != NO_SLOT, "at most 2^32 - 1 positions per shard");
        self.index.insert(key, slot);
        self.slots.push((key, position));
        let (last, count) = self.by_product.entry(key.0).or_insert((NO_SLOT, 0));
        self.next.push(*last);
        *last = slot;
        *count += 1;
        i
    }

    /// How many positions `product` has here.
    pub fn product_len(&self, product: Sym) -> usize {
        self.by_product
            .get(&product)
            .map_or(0, |(_, n)| *n as usize)
    }

    /// Every position of `product` here, newest first.
    pub fn of_product(&self, product: Sym) -> impl Iterator<Item = (&(Sym, Sym), &Position)> + '_ {
        let mut at = self.by_product.get(&product).map_or(NO_SLOT, |(s, _)| *s);
        std::iter::from_fn(move || {
            (at != NO_SLOT).then(|| {
                let (key, pos) = &self.slots[at as usize];
                at = self.next[at as usize];
                (key, pos)
            })
        })
    }

    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional);
        self.slots.reserve_exact(additional);
        self.next.reserve_exact(additional);
    }

    pub fn keys(&self) -> impl Iterator<Item = &(Sym, Sym)> + '_ {
        self.slots.iter().map(|(k, _)| k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&(Sym, Sym), &Position)> + '_ {
        self.slots.iter().map(|(k, p)| (k, p))
    }
}

impl std::ops::Index<&(Sym, Sym)> for PositionTable {
    type Output = Position;

    fn index(&self, key: &(Sym, Sym)) -> &Position {
        self.get(key).expect("indexed position exists")
    }
}

impl<'a> IntoIterator for &'a PositionTable {
    type Item = (&'a (Sym, Sym), &'a Position);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, ((Sym, Sym), Position)>,
        fn(&'a ((Sym, Sym), Position)) -> (&'a (Sym, Sym), &'a Position),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.slots.iter().map(|(k, p)| (k, p))
    }
}
