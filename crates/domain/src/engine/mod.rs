//! The engine: every rule of domain.md over the positions one shard owns.
//!
//! One `Engine` is the single writer of a disjoint set of positions. It does no I/O and
//! reads no clock: `now` is an argument of every call, so a replay of the same calls
//! gives the same state. Operations over several shards (a hold with lines on each) are
//! split by the caller: each engine answers for its own lines (`reserve` with the indices
//! it owns) and can take its part back (`undo_reserve`).
//!
//! The operations rely on validated input: the caller runs the `validate` functions of
//! [`crate::request`] once, at the boundary, and the engine only `debug_assert!`s them.
//!
//! This file holds the engine's state and the helpers every operation shares (events,
//! stock-crossing detection, new ledger records); each operation has its own file.

mod config;
mod confirm;
mod consistency;
mod expire;
mod fulfil;
mod grid_memo;
mod listing;
mod locations;
mod parts;
mod reads;
mod reserve;
mod stock;

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::Millis;
use crate::channel::Channel;
use crate::checkpoint::CheckpointTracker;
use crate::event::{Event, EventKind, IqChange};
use crate::hold::HoldTable;
use crate::position::{Iq, IqKind, PositionTable};
use crate::refs::{Interner, Sym};

pub(crate) use config::ProductEntry;
pub use config::Settings;
pub use grid_memo::GridLocations;
pub use reads::{ChannelPositionView, IqView, PositionView};
pub use reserve::{LineResult, ReserveKind, ReservePart, ReserveUndo};
pub use stock::{AdjustStatus, CountStatus};

/// The inventory engine of one shard.
#[derive(Clone, Debug)]
pub struct Engine {
    pub(crate) settings: Settings,
    pub(crate) interner: Interner,
    pub(crate) positions: PositionTable,
    pub(crate) channels: Vec<Channel>,
    /// Locations and channel networks (`engine/locations.rs`).
    pub(crate) network: locations::NetworkState,
    pub(crate) products: FxHashMap<Sym, ProductEntry>,
    pub(crate) categories: FxHashMap<Sym, u32>,
    pub(crate) holds: HoldTable,
    pub(crate) orders: FxHashMap<Sym, Sym>,
    pub(crate) adjustments: FxHashSet<Sym>,
    pub(crate) expiry: BTreeSet<(Millis, Sym)>,
    pub(crate) forget: BTreeSet<(Millis, Sym)>,
    /// The parts that may keep a record of a cross-shard update, by (version, hold): a
    /// superset (an entry whose part changed since is skipped), emptied up to the router's
    /// settled watermark by each tagged reserve (`UpdateTag::settled_below`).
    pub(crate) update_records: BTreeSet<(u64, Sym)>,
    pub(crate) active_holds: FxHashMap<Sym, i64>,
    pub(crate) next_iq_id: u64,
    pub(crate) next_event_seq: u64,
    pub(crate) events: Vec<Event>,
    /// The IQs that turned ACTIVE or INACTIVE since the last event drain (`event::note_iqs`).
    pub(crate) iq_changes: Vec<IqChange>,
    /// Refs of forgotten holds and orders, released at the drain after next.
    pub(crate) release_later: Vec<(Sym, u8)>,
    pub(crate) release_ready: Vec<(Sym, u8)>,
    /// What changed since the last checkpoint delta, beyond what the position and hold
    /// tables track themselves (see `crate::checkpoint`).
    pub(crate) checkpoint: CheckpointTracker,
    /// The location lists of recent network reads, resolved (`grid_memo.rs`): not state,
    /// only what the interner already says.
    pub(crate) grid_memo: grid_memo::GridMemo,
}

impl Engine {
    pub fn new(settings: Settings) -> Self {
        Engine {
            settings,
            interner: Interner::default(),
            positions: PositionTable::default(),
            channels: Vec::new(),
            network: locations::NetworkState::default(),
            products: FxHashMap::default(),
            categories: FxHashMap::default(),
            holds: HoldTable::default(),
            orders: FxHashMap::default(),
            adjustments: FxHashSet::default(),
            expiry: BTreeSet::new(),
            forget: BTreeSet::new(),
            update_records: BTreeSet::new(),
            active_holds: FxHashMap::default(),
            next_iq_id: 1,
            next_event_seq: 1,
            events: Vec::new(),
            iq_changes: Vec::new(),
            release_later: Vec::new(),
            release_ready: Vec::new(),
            checkpoint: CheckpointTracker::default(),
            grid_memo: grid_memo::GridMemo::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
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
}
