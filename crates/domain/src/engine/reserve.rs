//! Reserve: creating, re-sending and updating a hold on this engine, and undoing that.
//!
//! The largest operation (domain.md, "Holds"), cut into its steps: what the hold already
//! is here (`prior_part`), the ATS check of each line (`check_lines`), and either the
//! rejection (`reject`) or the change (`apply_reserve`).

use super::Engine;
use crate::Millis;
use crate::error::Error;
use crate::event::{Event, EventKind};
use crate::hold::{HoldPart, HoldState, PartLine, PartUpdate, UpdateTag};
use crate::limits::MS_PER_SECOND;
use crate::position::NO_SYM;
use crate::refs::{HOLD_NS, Sym, fnv1a};
use crate::request::{ReserveLine, ReserveRequest};

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
    pub previous: Option<Box<crate::snapshot::HoldSnap>>,
}

/// What one reserve call works with, computed once.
struct ReserveCtx<'a> {
    req: &'a ReserveRequest,
    /// The request lines this engine answers for.
    mine: &'a [u32],
    /// The channel's index and symbol.
    ci: usize,
    channel: Sym,
    /// Digest of the whole request: equal digests mean the same cart.
    digest: u64,
    /// The hold's symbol, if the ref is known here.
    hold: Option<Sym>,
    /// A confirm's reacquire: a hold that ended here may be made again.
    reacquire: bool,
    /// The cart version and the shards of a reserve that spans shards.
    tag: Option<&'a UpdateTag>,
}

/// What the hold already is on this engine.
enum Prior {
    /// No live part: a new hold (or one that ended).
    None,
    /// An active part with other lines: a cart update.
    Active,
    /// The same request again: the answer, nothing changed.
    Resent(ReservePart),
}

impl Engine {
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
    ///
    /// A hold ref whose hold has ended here (released, expired, or past its deadline) or
    /// was confirmed is FAILED_PRECONDITION naming that state, while the finished hold is
    /// retained; once it is forgotten the ref is free again.
    ///
    /// `req` must be valid (`ReserveRequest::validate`): the caller checks it once.
    pub fn reserve(
        &mut self,
        now: Millis,
        req: &ReserveRequest,
        mine: &[u32],
    ) -> Result<ReservePart, Error> {
        self.reserve_as(now, req, mine, false, None)
    }

    /// A confirm's reacquire (domain.md, "Confirm"): `reserve`, except that a hold that
    /// ended here (released or expired) is made again under its ref. A confirmed hold is
    /// still refused.
    pub fn reacquire(
        &mut self,
        now: Millis,
        req: &ReserveRequest,
        mine: &[u32],
    ) -> Result<ReservePart, Error> {
        self.reserve_as(now, req, mine, true, None)
    }

    /// `reserve` (or, with `reacquire`, `reacquire`) as one of the shards of a reserve
    /// that spans shards: the part written keeps the cart version `tag.version`, and, when
    /// the tag names several shards, a record of the update and of the part it replaced
    /// (a shard left without a line keeps a tombstone instead of dropping its part), until
    /// the update is known complete. Recovery uses them to make the update whole or undo
    /// it whole (`resolve_update`).
    pub fn reserve_tagged(
        &mut self,
        now: Millis,
        req: &ReserveRequest,
        mine: &[u32],
        reacquire: bool,
        tag: &UpdateTag,
    ) -> Result<ReservePart, Error> {
        self.reserve_as(now, req, mine, reacquire, Some(tag))
    }

    fn reserve_as(
        &mut self,
        now: Millis,
        req: &ReserveRequest,
        mine: &[u32],
        reacquire: bool,
        tag: Option<&UpdateTag>,
    ) -> Result<ReservePart, Error> {
        debug_assert_eq!(req.validate(), Ok(()), "reserve of an unvalidated request");
        let ci = self.channel_index(&req.channel_ref)?;
        let ctx = ReserveCtx {
            req,
            mine,
            ci,
            channel: self.channels[ci].sym,
            digest: Self::request_digest(req),
            hold: self.interner.get_in(HOLD_NS, &req.hold_ref),
            reacquire,
            tag,
        };
        let update = match self.prior_part(now, &ctx)? {
            Prior::Resent(part) => return Ok(part),
            Prior::Active => true,
            Prior::None => false,
        };
        if mine.is_empty() && !update {
            return Ok(ReservePart {
                kind: ReserveKind::Untouched,
                lines: Vec::new(),
                undo: None,
            });
        }
        let (lines, short) = self.check_lines(&ctx, update);
        if short && !req.allow_partial {
            return Ok(self.reject(now, &ctx, lines));
        }
        Ok(self.apply_reserve(now, &ctx, update, lines))
    }

    /// What the hold already is on this engine: nothing (a new hold, or an ended one a
    /// reacquire makes again), an active part to update, or the same request again. An
    /// ended part (a due active part counts as expired, whatever its timer) refuses a plain
    /// reserve and changes nothing.
    fn prior_part(&self, now: Millis, ctx: &ReserveCtx<'_>) -> Result<Prior, Error> {
        // A tombstone holds nothing: the hold has no part here.
        let Some(part) = ctx
            .hold
            .and_then(|s| self.holds.get(&s))
            .filter(|p| !p.tombstone)
        else {
            return Ok(Prior::None);
        };
        match part.state {
            HoldState::Confirmed => Err(Error::HoldConfirmed {
                hold_ref: ctx.req.hold_ref.clone(),
                order_ref: self
                    .interner
                    .resolve(part.order.unwrap_or(NO_SYM))
                    .to_string(),
            }),
            // Only an ended hold is reacquired; a live one answers as to any reserve.
            HoldState::Active | HoldState::Released | HoldState::Expired
                if ctx.reacquire && (part.state != HoldState::Active || part.expires_at <= now) =>
            {
                Ok(Prior::None)
            }
            HoldState::Active if part.expires_at <= now => {
                Err(Error::HoldExpired(ctx.req.hold_ref.clone()))
            }
            HoldState::Active if part.channel != ctx.channel => Err(Error::HoldChannelMismatch {
                hold_ref: ctx.req.hold_ref.clone(),
                channel_ref: self.interner.resolve(part.channel).to_string(),
            }),
            // The same request again is idempotent: it reports what the hold holds (a
            // partial hold may hold less than asked) and changes nothing.
            HoldState::Active if part.digest == ctx.digest => {
                Ok(Prior::Resent(self.resent_part(ctx, part)))
            }
            HoldState::Active => Ok(Prior::Active),
            HoldState::Released => Err(Error::HoldReleased(ctx.req.hold_ref.clone())),
            HoldState::Expired => Err(Error::HoldExpired(ctx.req.hold_ref.clone())),
        }
    }

    /// The answer to a resend: what the part holds at each of this engine's lines.
    fn resent_part(&self, ctx: &ReserveCtx<'_>, part: &HoldPart) -> ReservePart {
        let lines = ctx
            .mine
            .iter()
            .map(|&i| {
                let line = &ctx.req.lines[i as usize];
                let reserved = part
                    .lines
                    .iter()
                    .filter(|l| {
                        self.interner.resolve(l.product) == line.product_ref
                            && self.interner.resolve(l.location) == line.location_ref
                    })
                    .map(|l| l.quantity)
                    .sum();
                LineResult {
                    index: i,
                    requested: line.quantity,
                    reserved,
                    available: self.line_available(ctx.ci, line, Some(part)),
                }
            })
            .collect();
        ReservePart {
            kind: ReserveKind::Unchanged,
            lines,
            undo: None,
        }
    }

    /// Checks each of this engine's lines against ATS (a cart update counts the hold's own
    /// units as free). Returns the line results and whether any line is short.
    fn check_lines(&self, ctx: &ReserveCtx<'_>, update: bool) -> (Vec<LineResult>, bool) {
        let existing = if update {
            ctx.hold.and_then(|s| self.holds.get(&s))
        } else {
            None
        };
        let mut lines = Vec::with_capacity(ctx.mine.len());
        let mut short = false;
        for &i in ctx.mine {
            let line = &ctx.req.lines[i as usize];
            let available = self.line_available(ctx.ci, line, existing);
            let reserved = if ctx.req.allow_partial {
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
        (lines, short)
    }

    /// An all-or-nothing reserve that is short somewhere: nothing changes, every short line
    /// emits RESERVE_REJECTED (the stockout signal).
    fn reject(
        &mut self,
        now: Millis,
        ctx: &ReserveCtx<'_>,
        mut lines: Vec<LineResult>,
    ) -> ReservePart {
        for r in &mut lines {
            r.reserved = 0;
        }
        for r in lines.iter().filter(|r| r.requested > r.available) {
            let line = &ctx.req.lines[r.index as usize];
            let mut e = Event::new(EventKind::ReserveRejected, now);
            e.channel = Some(ctx.channel);
            e.hold = ctx.hold;
            e.product = self.interner.get(&line.product_ref);
            e.location = self.interner.get(&line.location_ref);
            e.quantity = line.quantity;
            e.available = r.available;
            e.primary = r.index == 0;
            self.emit(e);
        }
        ReservePart {
            kind: ReserveKind::Rejected,
            lines,
            undo: None,
        }
    }

    /// Takes the old part out and puts the new one in; returns how to undo that.
    ///
    /// A cart update that leaves this engine no line of the request drops the part rather
    /// than keep an empty one: an empty part holds nothing, and left behind it outlives
    /// the hold's other parts in other states (a confirm or recovery would then see a hold
    /// half released: issue #12, defects 4 and 5). Its ref is released once unused. In a
    /// reserve tagged with several shards, it keeps a tombstone instead (`tombstone_of`).
    fn apply_reserve(
        &mut self,
        now: Millis,
        ctx: &ReserveCtx<'_>,
        update: bool,
        lines: Vec<LineResult>,
    ) -> ReservePart {
        let hold = self.interner.intern_in(HOLD_NS, &ctx.req.hold_ref);
        let previous = self.holds.get(&hold).map(|p| {
            let mut snap = self.snap_part(p);
            snap.update = None;
            Box::new(snap)
        });
        let created_at = match (update, self.holds.get(&hold)) {
            (true, Some(p)) => p.created_at,
            _ => now,
        };
        self.remove_part(now, hold);
        let mut part = self.new_part(now, ctx, hold, created_at, &lines);
        if let Some(tag) = ctx.tag {
            self.settle_below(tag.settled_below);
            part.version = tag.version;
            if tag.participants.len() > 1 {
                self.update_records.insert((tag.version, hold));
                part.update = Some(Box::new(PartUpdate {
                    participants: tag.participants.clone(),
                    previous: previous.as_deref().filter(|p| !p.tombstone).cloned(),
                }));
            }
        }
        let keep = !ctx.mine.is_empty();
        let mut e = Event::new(
            if update {
                EventKind::HoldUpdated
            } else {
                EventKind::HoldCreated
            },
            now,
        );
        e.channel = Some(ctx.channel);
        e.hold = Some(hold);
        e.quantity = part.lines.iter().map(|l| l.quantity).sum();
        e.primary = part.primary;
        if keep {
            self.insert_part(now, part);
        } else if part.update.is_some() {
            let tombstone = self.tombstone_of(now, part);
            self.insert_part(now, tombstone);
        } else {
            self.release_if_unused(hold);
        }
        self.emit(e);
        ReservePart {
            kind: if update {
                ReserveKind::Updated
            } else {
                ReserveKind::Created
            },
            lines,
            undo: Some(ReserveUndo {
                hold_ref: ctx.req.hold_ref.clone(),
                previous,
            }),
        }
    }

    /// The tombstone a cross-shard update leaves on an engine it took every line from:
    /// no line, no stock, read as no part, carrying the update's record (with the part it
    /// replaced) for recovery. It is forgotten a millisecond before the retention runs out,
    /// so before any other participant's record of the same update (each ends at or after
    /// the update, and is kept the retention after it ends).
    fn tombstone_of(&self, now: Millis, mut part: HoldPart) -> HoldPart {
        part.lines.clear();
        part.state = HoldState::Released;
        part.primary = false;
        part.tombstone = true;
        part.forget_at = Some(now + self.settings.hold_retention_ms.saturating_sub(1).max(1));
        part
    }

    /// The new ACTIVE part: the lines that got something, a fresh timer.
    fn new_part(
        &mut self,
        now: Millis,
        ctx: &ReserveCtx<'_>,
        hold: Sym,
        created_at: Millis,
        lines: &[LineResult],
    ) -> HoldPart {
        let ttl = self.resolve_ttl(ctx.req, ctx.ci);
        let part_lines = lines
            .iter()
            .filter(|r| r.reserved > 0)
            .map(|r| {
                let line = &ctx.req.lines[r.index as usize];
                PartLine {
                    product: self.interner.intern(&line.product_ref),
                    location: self.interner.intern(&line.location_ref),
                    quantity: r.reserved,
                    open: 0,
                }
            })
            .collect();
        HoldPart {
            hold,
            channel: ctx.channel,
            state: HoldState::Active,
            lines: part_lines,
            created_at,
            updated_at: now,
            expires_at: now + Millis::from(ttl) * MS_PER_SECOND,
            order: None,
            digest: ctx.digest,
            total_lines: ctx.req.lines.len() as u32,
            answered_lines: ctx.mine.len() as u32,
            primary: ctx.mine.contains(&0),
            forget_at: None,
            last_fulfil: None,
            cancelled: false,
            version: 0,
            update: None,
            tombstone: false,
        }
    }

    /// ATS for a request line, counting the hold's own units there as free.
    fn line_available(&self, ci: usize, line: &ReserveLine, existing: Option<&HoldPart>) -> i64 {
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
    ///
    /// The ref may have been released since the reserve (a part dropped by an update is
    /// released one event drain later): a part to put back interns it again.
    pub fn undo_reserve(&mut self, now: Millis, undo: &ReserveUndo) {
        let hold = match &undo.previous {
            Some(_) => self.interner.intern_in(HOLD_NS, &undo.hold_ref),
            None => match self.interner.get_in(HOLD_NS, &undo.hold_ref) {
                Some(hold) => hold,
                None => return,
            },
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
}

impl Engine {
    /// Settles this engine's record of the cross-shard update `version` of a hold, as
    /// recovery decided from every shard: `complete` drops the record (the part stays as
    /// the update wrote it); otherwise the part the update replaced is put back (or the
    /// part removed, if there was none). Returns whether this engine had that record.
    pub fn resolve_update(
        &mut self,
        now: Millis,
        hold_ref: &str,
        version: u64,
        complete: bool,
    ) -> bool {
        let Some(hold) = self.interner.get_in(HOLD_NS, hold_ref) else {
            return false;
        };
        let Some(part) = self.holds.get(&hold) else {
            return false;
        };
        if part.version != version || part.update.is_none() {
            return false;
        }
        if complete {
            if let Some(part) = self.holds.get_mut(&hold) {
                part.update = None;
            }
            return true;
        }
        let previous = part
            .update
            .as_ref()
            .and_then(|u| u.previous.clone())
            .map(Box::new);
        let undo = ReserveUndo {
            hold_ref: hold_ref.to_string(),
            previous,
        };
        self.undo_reserve(now, &undo);
        true
    }

    /// Drops the records of the cross-shard updates below `version`: the router says each
    /// of them answered on all its shards. Runs only inside a reserve that is logged, so a
    /// replay drops the same records at the same point.
    fn settle_below(&mut self, version: u64) {
        while let Some(&(v, hold)) = self.update_records.first() {
            if v >= version {
                break;
            }
            self.update_records.pop_first();
            let current = self.holds.get(&hold);
            if current.is_some_and(|p| p.version == v && p.update.is_some())
                && let Some(part) = self.holds.get_mut(&hold)
            {
                part.update = None;
            }
        }
    }

    /// Every record of a cross-shard update not yet known complete (recovery's input).
    pub fn pending_updates(&self) -> Vec<crate::hold::PendingUpdate> {
        self.holds
            .values()
            .filter_map(|p| {
                let update = p.update.as_ref()?;
                Some(crate::hold::PendingUpdate {
                    hold_ref: self.interner.resolve(p.hold).to_string(),
                    version: p.version,
                    participants: update.participants.clone(),
                })
            })
            .collect()
    }

    /// The cart version of this engine's record of a hold, and whether it is a tombstone
    /// (`None`: no record at all).
    pub fn hold_record(&self, hold_ref: &str) -> Option<(u64, bool)> {
        let sym = self.interner.get_in(HOLD_NS, hold_ref)?;
        self.holds.get(&sym).map(|p| (p.version, p.tombstone))
    }

    /// The highest cart version of any hold record here: a router numbers new versions
    /// above it.
    pub fn max_hold_version(&self) -> u64 {
        self.holds.values().map(|p| p.version).max().unwrap_or(0)
    }
}
