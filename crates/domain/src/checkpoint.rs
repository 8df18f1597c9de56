//! Incremental checkpoints: copies of only what an engine changed since the last one.
//!
//! A whole-state snapshot paused a shard for 0.3–0.6 s, so a shard instead hands its
//! checkpointer a [`CheckpointDelta`]: the positions and hold parts it changed (whole,
//! refs spelt out), the refs of parts that left it, the adjustment refs it first saw,
//! the configuration when any of it changed, and the counters. The store keeps one entry
//! per position, hold and adjustment; recovery loads them all, rebuilds a snapshot with
//! [`EngineSnapshot::from_entries`], restores the engine and replays the log after the
//! position the checkpoint covers.
//!
//! Tracking is done where state changes, not by the operations: the position table and
//! the hold table record every key they hand out for change, adjustments and
//! configuration are flagged where they are written. Hold symbols are released one event
//! drain after a hold is forgotten and their slots reused, so a tracked hold is turned
//! into its ref's text before its symbol is released (`Engine::release_scheduled`), and
//! a symbol is never resolved after that.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashSet;

use serde::{Deserialize, Serialize};

use crate::channel::{CategoryConfig, ChannelConfig, ProductConfig};
use crate::engine::Engine;
use crate::limits::{CHECKPOINT_PART_ENTRIES_MAX, CHECKPOINT_ROUNDS_MAX};
use crate::network::NetworkSnap;
use crate::refs::Sym;
use crate::snapshot::{EngineSnapshot, HoldSnap, PositionSnap};

/// Channels and catalogue: small, written whole when any of it changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSnap {
    pub channels: Vec<ChannelConfig>,
    pub products: Vec<ProductConfig>,
    pub categories: Vec<CategoryConfig>,
    /// Locations and channel networks.
    pub network: NetworkSnap,
}

/// The engine's counters: the next IQ id and event sequence number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub next_iq_id: u64,
    pub next_event_seq: u64,
}

/// What changed since the previous delta: copies, owned, refs spelt out.
///
/// `holds` and `holds_removed` are disjoint; every list is sorted by ref (positions by
/// product then location), so equal changes give equal deltas.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointDelta {
    /// Changed or new positions, whole.
    pub positions: Vec<PositionSnap>,
    /// Changed or new hold parts, whole.
    pub holds: Vec<HoldSnap>,
    /// Hold refs whose part left the engine (forgotten, undone, moved). A ref may name a
    /// part the store never held (created and gone between two deltas): deleting it is a no-op.
    pub holds_removed: Vec<String>,
    /// Adjustment refs first recorded since the previous delta.
    pub adjustments: Vec<String>,
    /// `Some` when channels, products or categories changed.
    pub config: Option<ConfigSnap>,
    /// Always.
    pub counters: Counters,
}

impl CheckpointDelta {
    /// How many store entries the delta writes or deletes (the counters not included).
    pub fn entries(&self) -> usize {
        self.positions.len()
            + self.holds.len()
            + self.holds_removed.len()
            + self.adjustments.len()
            + usize::from(self.config.is_some())
    }

    /// Whether nothing but the counters is in it.
    pub fn is_empty(&self) -> bool {
        self.entries() == 0
    }

    /// This delta followed by a `later` one, as one delta: writing it has the effect of
    /// writing both in order. Lets a checkpointer whose write failed keep the delta and
    /// write it with the next one, instead of marking the whole state.
    pub fn merge(self, later: CheckpointDelta) -> CheckpointDelta {
        let mut merged = Merged::default();
        merged.add(self);
        merged.add(later);
        merged.finish()
    }
}

/// Deltas being merged in order, in one pass: each entry is keyed once however many
/// deltas there are (folding with `merge` re-keyed everything merged so far per delta).
#[derive(Default)]
struct Merged {
    positions: BTreeMap<(String, String), PositionSnap>,
    holds: BTreeMap<String, HoldSnap>,
    removed: BTreeSet<String>,
    adjustments: BTreeSet<String>,
    config: Option<ConfigSnap>,
    counters: Counters,
}

impl Merged {
    /// Applies `later` after everything added so far: its removals, then its copies (a
    /// delta's own copies and removals are disjoint), later entries winning.
    fn add(&mut self, later: CheckpointDelta) {
        for p in later.positions {
            self.positions
                .insert((p.product_ref.clone(), p.location_ref.clone()), p);
        }
        for r in later.holds_removed {
            self.holds.remove(&r);
            self.removed.insert(r);
        }
        for h in later.holds {
            self.removed.remove(&h.hold_ref);
            self.holds.insert(h.hold_ref.clone(), h);
        }
        self.adjustments.extend(later.adjustments);
        if later.config.is_some() {
            self.config = later.config;
        }
        self.counters = later.counters;
    }

    fn finish(self) -> CheckpointDelta {
        CheckpointDelta {
            positions: self.positions.into_values().collect(),
            holds: self.holds.into_values().collect(),
            holds_removed: self.removed.into_iter().collect(),
            adjustments: self.adjustments.into_iter().collect(),
            config: self.config,
            counters: self.counters,
        }
    }
}

/// What the engine tracks for the next delta besides the position and hold tables' own sets.
#[derive(Clone, Debug, Default)]
pub(crate) struct CheckpointTracker {
    /// Adjustment refs first recorded (never released: they live in the default namespace).
    pub adjustments: Vec<Sym>,
    /// Whether channels, products or categories changed.
    pub config: bool,
    /// Refs of tracked holds whose symbol was released before the delta was taken.
    pub holds_removed: BTreeSet<String>,
    /// A delta being taken in steps (`begin_checkpoint_delta`), if any.
    pub capture: Option<Capture>,
}

/// A delta taken in steps: the keys still to copy, and the copies so far.
///
/// Copying every changed entry at once paused a shard for about 1 µs an entry (hundreds
/// of milliseconds for a large delta). Taken in steps, each copy is of the entry as it is
/// at that step; an entry changed after its copy is tracked again by its table, and the
/// last step (taken only once few such entries are left) copies those at once, so the
/// finished delta is the state of every entry it names as of that last step.
#[derive(Clone, Debug, Default)]
pub(crate) struct Capture {
    positions: FxHashSet<(Sym, Sym)>,
    /// Hold symbols still to copy. A symbol is never released while it is here: its
    /// release takes it out first and records its ref's text (`untrack_hold`).
    holds: FxHashSet<Sym>,
    /// The copies of this part, unsorted (sorting is left to `StepDelta::into_delta`, off
    /// the shard). A ref is named at most once in a part's holds, and a removal in a part
    /// is never of a copy in the same part: parts are merged in order, later ones winning.
    copied: CheckpointDelta,
    /// The hold symbols copied into this part: if one is released, its removal starts a
    /// new part (it must come after the copy).
    copied_holds: FxHashSet<Sym>,
    /// The parts before this one.
    done: Vec<CheckpointDelta>,
    /// Rounds over entries changed during the capture, so far.
    rounds: usize,
    /// Entries the tables tracked as changed after the previous step.
    changed_after_step: usize,
}

impl Capture {
    /// Ends the current part; what is copied or removed from now on comes after it.
    fn new_part(&mut self) {
        self.done.push(std::mem::take(&mut self.copied));
        self.copied_holds.clear();
    }

    /// Ends the current part if it holds `part_entries` entries, so the shard never grows
    /// (and moves) one vector of a whole large delta: growing one of a million copies
    /// moved hundreds of megabytes in one step and stalled the shard for tens of ms.
    fn end_full_part(&mut self, part_entries: usize) {
        if self.copied.entries() >= part_entries {
            self.new_part();
        }
    }
}

/// A finished delta taken in steps: its parts, in the order they were taken. Turning them
/// into one [`CheckpointDelta`] (a merge that sorts) costs `O(n log n)`: do it off the shard.
#[derive(Clone, Debug, Default)]
pub struct StepDelta {
    parts: Vec<CheckpointDelta>,
}

impl StepDelta {
    /// Entries in all parts (an entry copied twice counts twice).
    pub fn entries(&self) -> usize {
        self.parts.iter().map(CheckpointDelta::entries).sum()
    }

    /// The parts as one delta, sorted, later copies winning (one pass over all parts).
    pub fn into_delta(self) -> CheckpointDelta {
        let mut merged = Merged::default();
        for part in self.parts {
            merged.add(part);
        }
        merged.finish()
    }
}

impl Engine {
    /// Entries changed since the last call (or since `new`/`restore`: a restored engine
    /// starts clean; anything replayed after restore is tracked). Costs one copy per
    /// changed entry, nothing per unchanged one.
    pub fn take_checkpoint_delta(&mut self) -> CheckpointDelta {
        let mut positions: Vec<PositionSnap> = self
            .positions
            .take_changed()
            .into_iter()
            .map(|key| self.snap_position(key, &self.positions[&key]))
            .collect();
        positions.sort_by(|a, b| {
            (&a.product_ref, &a.location_ref).cmp(&(&b.product_ref, &b.location_ref))
        });
        let (holds, holds_removed) = self.take_changed_holds();
        let mut adjustments: Vec<String> = std::mem::take(&mut self.checkpoint.adjustments)
            .into_iter()
            .map(|sym| self.interner.resolve(sym).to_string())
            .collect();
        adjustments.sort();
        adjustments.dedup();
        let config = std::mem::take(&mut self.checkpoint.config).then(|| self.config_snap());
        CheckpointDelta {
            positions,
            holds,
            holds_removed,
            adjustments,
            config,
            counters: self.counters(),
        }
    }

    /// The changed hold parts, and the refs of those that left (sorted, disjoint).
    fn take_changed_holds(&mut self) -> (Vec<HoldSnap>, Vec<String>) {
        let mut removed = std::mem::take(&mut self.checkpoint.holds_removed);
        let mut holds = Vec::new();
        for sym in self.holds.take_changed() {
            match self.holds.get(&sym) {
                Some(part) => holds.push(self.snap_part(part)),
                None => {
                    // Tracked symbols are live: the release untracks them first.
                    debug_assert!(self.interner.is_live(sym), "tracked hold released");
                    if self.interner.is_live(sym) {
                        removed.insert(self.interner.resolve(sym).to_string());
                    }
                }
            }
        }
        holds.sort_by(|a, b| a.hold_ref.cmp(&b.hold_ref));
        for h in &holds {
            // Removed, then a new part under the same ref: the new part is what counts.
            removed.remove(&h.hold_ref);
        }
        (holds, removed.into_iter().collect())
    }

    /// How many entries are pending for the next delta (cheap: lengths of the tracking
    /// sets; a hold both changed and removed may count twice).
    pub fn checkpoint_pending(&self) -> usize {
        self.positions.changed_len()
            + self.holds.changed_len()
            + self.checkpoint.holds_removed.len()
            + self.checkpoint.adjustments.len()
            + usize::from(self.checkpoint.config)
    }

    /// Starts a delta taken in steps: the changed entries are set aside (cheaply: the
    /// tracking sets are moved, not copied) to be copied by `step_checkpoint_delta`.
    /// A delta already being taken carries on.
    pub fn begin_checkpoint_delta(&mut self) {
        if self.checkpoint.capture.is_none() {
            // Removals recorded before come first: a later copy under the same ref wins.
            let removed = std::mem::take(&mut self.checkpoint.holds_removed);
            self.checkpoint.capture = Some(Capture {
                positions: self.positions.take_changed(),
                holds: self.holds.take_changed(),
                copied: CheckpointDelta {
                    holds_removed: removed.into_iter().collect(),
                    ..CheckpointDelta::default()
                },
                copied_holds: FxHashSet::default(),
                done: Vec::new(),
                rounds: 0,
                changed_after_step: 0,
            });
        }
    }

    /// Whether a delta is being taken in steps.
    pub fn checkpoint_delta_in_progress(&self) -> bool {
        self.checkpoint.capture.is_some()
    }

    /// Copies `budget` entries of the delta being taken, plus twice as many as changed
    /// since the previous step (so the copy always outpaces the changes, and a step costs
    /// at most a small multiple of the work just done). Once every entry set aside is
    /// copied: if no more than what is left of the step changed since (or after
    /// `CHECKPOINT_ROUNDS_MAX` rounds), those are copied too and the finished delta is
    /// returned (it is the state as of this call); otherwise those are set aside in turn.
    /// `None` while unfinished, or when no delta is being taken.
    pub fn step_checkpoint_delta(&mut self, budget: usize) -> Option<StepDelta> {
        self.step_checkpoint_delta_in_parts(budget, CHECKPOINT_PART_ENTRIES_MAX)
    }

    /// `step_checkpoint_delta`, with copies gathered in parts of at most `part_entries`
    /// entries (tests use small parts, to cross part boundaries with small states).
    pub fn step_checkpoint_delta_in_parts(
        &mut self,
        budget: usize,
        part_entries: usize,
    ) -> Option<StepDelta> {
        let mut capture = self.checkpoint.capture.take()?;
        let tracked = self.positions.changed_len() + self.holds.changed_len();
        let grown = tracked.saturating_sub(capture.changed_after_step);
        let mut left = budget.max(1).saturating_add(grown.saturating_mul(2));
        let part_entries = part_entries.max(1);
        self.copy_positions(&mut capture, &mut left, part_entries);
        self.copy_holds(&mut capture, &mut left, part_entries);
        if !capture.positions.is_empty() || !capture.holds.is_empty() {
            capture.changed_after_step = tracked;
            self.checkpoint.capture = Some(capture);
            return None;
        }
        let changed = self.positions.changed_len() + self.holds.changed_len();
        if changed > left && capture.rounds < CHECKPOINT_ROUNDS_MAX {
            // Changed faster than copied so far: another round over what changed since.
            capture.positions = self.positions.take_changed();
            capture.holds = self.holds.take_changed();
            capture.new_part();
            capture.rounds += 1;
            capture.changed_after_step = 0;
            self.checkpoint.capture = Some(capture);
            return None;
        }
        let mut parts = capture.done;
        parts.push(capture.copied);
        parts.push(self.take_checkpoint_delta());
        Some(StepDelta { parts })
    }

    fn copy_positions(&self, capture: &mut Capture, left: &mut usize, part_entries: usize) {
        let keys: Vec<(Sym, Sym)> = capture.positions.iter().take(*left).copied().collect();
        for key in keys {
            capture.positions.remove(&key);
            *left -= 1;
            capture.end_full_part(part_entries);
            // Positions are never removed.
            if let Some(pos) = self.positions.get(&key) {
                capture.copied.positions.push(self.snap_position(key, pos));
            }
        }
    }

    fn copy_holds(&self, capture: &mut Capture, left: &mut usize, part_entries: usize) {
        let syms: Vec<Sym> = capture.holds.iter().take(*left).copied().collect();
        for sym in syms {
            capture.holds.remove(&sym);
            *left -= 1;
            capture.end_full_part(part_entries);
            match self.holds.get(&sym) {
                Some(part) => {
                    capture.copied.holds.push(self.snap_part(part));
                    capture.copied_holds.insert(sym);
                }
                // Still live: set-aside symbols are taken out before they are released.
                None => capture
                    .copied
                    .holds_removed
                    .push(self.interner.resolve(sym).to_string()),
            }
        }
    }

    /// Stops tracking a hold whose symbol is about to be released. If a checkpoint still
    /// owes the store its removal, keeps its ref as text, since the symbol may name
    /// another ref after this: for the next delta, or in the delta being taken in steps.
    pub(crate) fn untrack_released_hold(&mut self, sym: Sym) {
        let tracked = self.holds.untrack(sym);
        let text = || self.interner.resolve(sym).to_string();
        match self.checkpoint.capture.as_mut() {
            None if tracked => {
                self.checkpoint.holds_removed.insert(text());
            }
            None => {}
            Some(c) => {
                let set_aside = c.holds.remove(&sym);
                if c.copied_holds.contains(&sym) {
                    c.new_part();
                } else if !(tracked || set_aside) {
                    return;
                }
                c.copied.holds_removed.push(text());
            }
        }
    }

    /// Marks everything changed, so the next delta is the whole state (used when a
    /// checkpoint write failed, and for a new shard layout). Removals already pending stay.
    pub fn mark_all_for_checkpoint(&mut self) {
        self.positions.mark_all_changed();
        self.holds.mark_all();
        self.checkpoint.adjustments = self.adjustments.iter().copied().collect();
        self.checkpoint.config = true;
    }

    /// Forgets what was tracked: a new or restored engine starts clean.
    pub(crate) fn clear_checkpoint_tracking(&mut self) {
        self.positions.clear_changed();
        self.holds.clear_changed();
        self.checkpoint = CheckpointTracker::default();
    }

    fn config_snap(&self) -> ConfigSnap {
        ConfigSnap {
            channels: self.channels().cloned().collect(),
            products: self.products(),
            categories: self.categories(),
            network: self.network_snap(),
        }
    }

    fn counters(&self) -> Counters {
        Counters {
            next_iq_id: self.next_iq_id,
            next_event_seq: self.next_event_seq,
        }
    }
}

impl EngineSnapshot {
    /// A whole state as one delta (for writing a new generation after a shard-count change).
    pub fn into_delta(self) -> CheckpointDelta {
        CheckpointDelta {
            positions: self.positions,
            holds: self.holds,
            holds_removed: Vec::new(),
            adjustments: self.adjustments,
            config: Some(ConfigSnap {
                channels: self.channels,
                products: self.products,
                categories: self.categories,
                network: self.network,
            }),
            counters: Counters {
                next_iq_id: self.next_iq_id,
                next_event_seq: self.next_event_seq,
            },
        }
    }

    /// Rebuilds a snapshot from the entries a checkpoint store holds (any order; it sorts
    /// canonically, as `Engine::snapshot` does). The store holds one entry per position
    /// and per hold ref; a repeated adjustment ref counts once.
    pub fn from_entries(
        config: ConfigSnap,
        mut positions: Vec<PositionSnap>,
        mut holds: Vec<HoldSnap>,
        mut adjustments: Vec<String>,
        counters: Counters,
    ) -> EngineSnapshot {
        let ConfigSnap {
            mut channels,
            mut products,
            mut categories,
            network,
        } = config;
        channels.sort_by(|a, b| a.channel_ref.cmp(&b.channel_ref));
        products.sort_by(|a, b| a.product_ref.cmp(&b.product_ref));
        categories.sort_by(|a, b| a.category.cmp(&b.category));
        positions.sort_by(|a, b| {
            (&a.product_ref, &a.location_ref).cmp(&(&b.product_ref, &b.location_ref))
        });
        holds.sort_by(|a, b| a.hold_ref.cmp(&b.hold_ref));
        adjustments.sort();
        adjustments.dedup();
        let mut network = network;
        network
            .locations
            .sort_by(|a, b| a.location_ref.cmp(&b.location_ref));
        network
            .networks
            .sort_by(|a, b| a.channel_ref.cmp(&b.channel_ref));
        EngineSnapshot {
            channels,
            products,
            categories,
            network,
            positions,
            holds,
            adjustments,
            next_iq_id: counters.next_iq_id,
            next_event_seq: counters.next_event_seq,
        }
    }
}
