//! Reads: availability, positions, holds and the consistency check, all without change.
//!
//! Everything a caller may ask an engine without changing it lives here, with the ATS
//! computation every operation uses and the views that resolve symbols into refs.

use super::{Engine, GridLocations};
use crate::Millis;
use crate::channel::{BPS_FULL, Numbers, available_to_sell, entitlement};
use crate::error::Error;
use crate::event::Event;
use crate::hold::{HoldPart, HoldState, HoldView, LineView};
use crate::position::{Iq, IqKind, NO_SYM, Position};
use crate::refs::{HOLD_NS, Sym};

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

impl Engine {
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

    /// The ATS of a channel over the grid `products` × `locations` (distinct refs), as
    /// `availability` answers it, for every pair where this engine keeps a position with
    /// stock on hand: (p × `locations.len()` + l, ATS), in no set order. Every other
    /// pair's ATS is 0 (no position here, nothing on hand, an unknown ref, or a location
    /// the channel does not sell from), so
    /// the shards' answers together are the whole grid. A product with few positions here
    /// is read by walking its positions (`PositionTable::of_product`), one with many by
    /// looking up each location: a network read costs one ref lookup per product and
    /// location, never one per pair, and a kept list's locations are looked up once for
    /// many reads (`GridMemo`). `key` sees the key of every position read (for the
    /// shard's check that no pending write touched it).
    pub fn availability_grid(
        &mut self,
        channel_ref: &str,
        products: &[String],
        locations: GridLocations,
        mut key: impl FnMut((Sym, Sym)),
    ) -> Result<Vec<(usize, i64)>, Error> {
        let ci = self.channel_index(channel_ref)?;
        let width = locations.refs().len();
        let columns = self.grid_memo.columns(&self.interner, locations);
        // The columns of the locations the channel sells from: the others stay 0.
        let sells: Vec<bool> = (columns.syms.iter())
            .map(|sym| sym.is_some_and(|sym| self.sells_at(ci, sym)))
            .collect();
        let sold = sells.iter().filter(|s| **s).count();
        let column = |location: Sym| columns.column(location).filter(|&l| sells[l]);
        // First every position, then every ATS: the positions' cache misses are
        // independent, and a loop of nothing else lets the processor wait for several.
        let mut found = Vec::with_capacity(products.len() * sold);
        for (p, product) in products.iter().enumerate() {
            let Some(product) = self.interner.get(product) else {
                continue;
            };
            let category = self.category_of(product, None);
            let row = |(location, l, pos)| (p * width + l, pos, (product, location), category);
            if self.positions.product_len(product) <= 2 * sold {
                let of_product = self.positions.of_product(product);
                found.extend(
                    of_product
                        .filter_map(|(&(_, location), pos)| {
                            Some((location, column(location)?, pos))
                        })
                        .map(row),
                );
            } else {
                found.extend(
                    (columns.syms.iter().enumerate())
                        .filter(|(l, _)| sells[*l])
                        .filter_map(|(l, &location)| {
                            let location = location?;
                            Some((location, l, self.positions.get(&(product, location))?))
                        })
                        .map(row),
                );
            }
        }
        // A position with nothing on hand has an ATS of 0 for every channel: it is read
        // (`key`), and left out of the answer like a pair without a position.
        let mut answer = Vec::with_capacity(found.len());
        for (at, pos, (p, l), category) in found {
            key((p, l));
            if pos.on_hand > 0 {
                answer.push((at, self.ats_of(ci, pos, p, l, category, 0)));
            }
        }
        Ok(answer)
    }

    /// ATS of channel `ci` at (product, location), with `own` units of the caller's own
    /// hold at that position counted as free (a cart update's view).
    pub(super) fn ats(
        &self,
        ci: usize,
        product: Sym,
        location: Sym,
        hint: Option<Sym>,
        own: i64,
    ) -> i64 {
        if !self.sells_at(ci, location) {
            return 0;
        }
        self.ats_sold(ci, product, location, self.category_of(product, hint), own)
    }

    /// Whether channel `ci` sells from `location` (in its network, not excluded).
    fn sells_at(&self, ci: usize, location: Sym) -> bool {
        let channel = &self.channels[ci];
        !channel.excluded.contains(&location) && self.in_network(channel.sym, location)
    }

    /// `ats` at a location the channel sells from, the product's category known.
    fn ats_sold(
        &self,
        ci: usize,
        product: Sym,
        location: Sym,
        category: Option<Sym>,
        own: i64,
    ) -> i64 {
        let Some(pos) = self.positions.get(&(product, location)) else {
            return 0;
        };
        self.ats_of(ci, pos, product, location, category, own)
    }

    /// `ats_sold` of the position at (product, location).
    #[inline]
    fn ats_of(
        &self,
        ci: usize,
        pos: &Position,
        product: Sym,
        location: Sym,
        category: Option<Sym>,
        own: i64,
    ) -> i64 {
        let channel = &self.channels[ci];
        let numbers = channel.numbers(product, location, category);
        // At a full allocation `used` plays no part: not reading the position's counters
        // saves a read of memory of their own for every position of a network read.
        let used = if numbers.allocation_bps >= BPS_FULL {
            0
        } else {
            pos.used(channel.sym) - own
        };
        available_to_sell(numbers, pos.allocation_base, used, pos.on_hand + own)
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
                    entitlement: if numbers.allocation_bps >= BPS_FULL {
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
        let part = self.holds.get(&sym).filter(|p| !p.tombstone)?;
        let mut view = self.view(part);
        if view.state == HoldState::Active && part.expires_at <= now {
            view.state = HoldState::Expired;
            view.ended_at = Some(part.expires_at);
        }
        Some(view)
    }

    pub(super) fn view(&self, part: &HoldPart) -> HoldView {
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
            open: part.lines.iter().map(|l| part.reserved(l)).sum(),
            version: part.version,
            ended_at: part.ended_at(),
        }
    }

    /// The events emitted since the last drain, without taking them.
    pub fn pending_events(&self) -> &[Event] {
        &self.events
    }

    /// The IQs that turned ACTIVE or INACTIVE since the last drain, in order.
    pub fn pending_iq_changes(&self) -> &[crate::event::IqChange] {
        &self.iq_changes
    }

    /// Every hold part, for recovery's completeness check.
    pub fn hold_views(&self) -> Vec<HoldView> {
        self.holds
            .values()
            .filter(|p| !p.tombstone)
            .map(|p| self.view(p))
            .collect()
    }

    /// The hold parts that do not hold their whole request (the hold spans shards, or a
    /// shard-count change split it): only these can be left half-written by a crash.
    pub fn split_hold_views(&self) -> Vec<HoldView> {
        self.holds
            .values()
            .filter(|p| p.answered_lines != p.total_lines && !p.tombstone)
            .map(|p| self.view(p))
            .collect()
    }
}
