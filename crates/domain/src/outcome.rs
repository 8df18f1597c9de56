//! Outcomes of operations that span shards, and the pure functions that merge the parts.
//!
//! Each shard answers for its own lines; the router gathers the answers and these
//! functions turn them into the one answer the client sees. They do no I/O: the router
//! keeps the routing, locking, scatter/gather and undo messages, the rules live here.

use super::error::Error;
use super::hold::{HoldState, HoldView, LineView};
use super::request::{ReserveLine, ReserveRequest};
use crate::engine::{ReserveKind, ReservePart, ReserveUndo};
use crate::snapshot::{HoldSnap, LineSnap};

/// A reserve's outcome for the whole hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved,
    Partial,
    Rejected,
}

impl ReserveOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReserveOutcome::Reserved => "reserved",
            ReserveOutcome::Partial => "partial",
            ReserveOutcome::Rejected => "rejected",
        }
    }
}

/// One request line's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineOutcome {
    pub product_ref: String,
    pub location_ref: String,
    pub requested: i64,
    pub reserved: i64,
    pub available: i64,
}

/// A reserve's answer.
#[derive(Clone, Debug)]
pub struct ReserveResult {
    pub outcome: ReserveOutcome,
    pub hold: Option<HoldView>,
    pub lines: Vec<LineOutcome>,
}

/// The shards' reserve answers, merged.
// Returned once per reserve and matched at once, never stored: boxing the accepted answer
// would only add an allocation to every reserve.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum ReserveMerge {
    /// Every shard accepted and something is held: the answer as it is.
    Accepted(ReserveResult),
    /// A shard rejected, or nothing at all was held: the shards that changed must undo,
    /// then `ReserveResult::rejected` gives the answer. The lines say what each line saw.
    Rejected(Vec<LineOutcome>),
}

/// Merges every shard's answer to one reserve (each with the hold part it left) into the
/// hold's outcome: all-or-nothing across shards unless the request allows partial holds.
pub fn merge_reserve(
    req: &ReserveRequest,
    parts: Vec<(ReservePart, Option<HoldView>)>,
) -> ReserveMerge {
    let mut lines: Vec<LineOutcome> = req
        .lines
        .iter()
        .map(|l| LineOutcome {
            product_ref: l.product_ref.clone(),
            location_ref: l.location_ref.clone(),
            requested: l.quantity,
            reserved: 0,
            available: 0,
        })
        .collect();
    for (part, _) in &parts {
        for r in &part.lines {
            let line = &mut lines[r.index as usize];
            line.reserved = r.reserved;
            line.available = r.available;
        }
    }
    let rejected = parts.iter().any(|(p, _)| p.kind == ReserveKind::Rejected);
    if rejected || lines.iter().all(|l| l.reserved == 0) {
        return ReserveMerge::Rejected(lines);
    }
    let outcome = if lines.iter().all(|l| l.reserved == l.requested) {
        ReserveOutcome::Reserved
    } else {
        ReserveOutcome::Partial
    };
    let hold = HoldView::merge(parts.into_iter().filter_map(|(_, h)| h).collect());
    ReserveMerge::Accepted(ReserveResult {
        outcome,
        hold,
        lines,
    })
}

impl ReserveResult {
    /// A rejected reserve's answer, once undone: nothing reserved on any line, and the hold
    /// as it is after the undo if it is still active (a cart update leaves the old cart).
    pub fn rejected(mut lines: Vec<LineOutcome>, hold_after: Option<HoldView>) -> ReserveResult {
        for l in &mut lines {
            l.reserved = 0;
        }
        ReserveResult {
            outcome: ReserveOutcome::Rejected,
            hold: hold_after.filter(|h| h.state == HoldState::Active),
            lines,
        }
    }
}

/// The whole hold from its parts (one per shard that has one).
pub fn whole_hold(hold_ref: &str, parts: Vec<HoldView>) -> Result<HoldView, Error> {
    HoldView::merge(parts).ok_or_else(|| Error::HoldNotFound(hold_ref.to_string()))
}

/// What a confirm must do, decided from the whole hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfirmStep {
    /// Already confirmed under this order: the answer, nothing to do.
    Done(HoldView),
    /// Active: confirm it on every shard.
    Confirm,
    /// Ended, and the request asks to reacquire: reserve this again first, all or nothing.
    Reacquire(ReserveRequest),
}

/// Decides a confirm of `hold` as `order_ref` (domain.md, "Confirm").
pub fn confirm_step(
    hold: HoldView,
    order_ref: &str,
    reacquire: bool,
) -> Result<ConfirmStep, Error> {
    match hold.state {
        HoldState::Confirmed if hold.order_ref.as_deref() == Some(order_ref) => {
            Ok(ConfirmStep::Done(hold))
        }
        HoldState::Confirmed => Err(Error::HoldConfirmed {
            hold_ref: hold.hold_ref,
            order_ref: hold.order_ref.unwrap_or_default(),
        }),
        HoldState::Active => Ok(ConfirmStep::Confirm),
        HoldState::Expired | HoldState::Released if reacquire => {
            Ok(ConfirmStep::Reacquire(ReserveRequest {
                hold_ref: hold.hold_ref,
                channel_ref: hold.channel_ref,
                lines: hold
                    .lines
                    .into_iter()
                    .map(|l| ReserveLine {
                        product_ref: l.product_ref,
                        location_ref: l.location_ref,
                        quantity: l.quantity,
                        category: None,
                    })
                    .collect(),
                ttl_seconds: None,
                allow_partial: false,
            }))
        }
        HoldState::Expired => Err(Error::HoldExpired(hold.hold_ref)),
        HoldState::Released => Err(Error::HoldReleased(hold.hold_ref)),
    }
}

/// The shards a confirm of an active hold must change, from each shard's part (as read
/// at the confirm's `now`). Every part that holds a line must be active: one that ended or
/// was confirmed elsewhere fails the whole confirm with FAILED_PRECONDITION naming its
/// state, before any shard changes, so a confirm never half applies. A part with no line
/// that ended holds nothing and is left alone (older versions of stockd kept such parts
/// after a cart update moved every line away from a shard).
pub fn confirm_targets(hold_ref: &str, parts: &[(usize, HoldView)]) -> Result<Vec<usize>, Error> {
    let mut targets = Vec::with_capacity(parts.len());
    for (shard, part) in parts {
        match part.state {
            HoldState::Active => targets.push(*shard),
            _ if part.lines.is_empty() => {}
            HoldState::Expired => return Err(Error::HoldExpired(hold_ref.to_string())),
            HoldState::Released => return Err(Error::HoldReleased(hold_ref.to_string())),
            HoldState::Confirmed => {
                return Err(Error::HoldConfirmed {
                    hold_ref: hold_ref.to_string(),
                    order_ref: part.order_ref.clone().unwrap_or_default(),
                });
            }
        }
    }
    Ok(targets)
}

/// How to take back a confirm that succeeded on one shard when it failed on another: put
/// the active part, as it was read just before, back in place of the order. (A part's
/// last update time is not in its view; its creation time stands in, which no answer
/// shows.)
pub fn confirm_rollback(active: &HoldView) -> ReserveUndo {
    debug_assert_eq!(active.state, HoldState::Active);
    ReserveUndo {
        hold_ref: active.hold_ref.clone(),
        previous: Some(Box::new(HoldSnap {
            hold_ref: active.hold_ref.clone(),
            channel_ref: active.channel_ref.clone(),
            state: HoldState::Active,
            lines: active
                .lines
                .iter()
                .map(|l| LineSnap {
                    product_ref: l.product_ref.clone(),
                    location_ref: l.location_ref.clone(),
                    quantity: l.quantity,
                    open: 0,
                })
                .collect(),
            created_at: active.created_at,
            updated_at: active.created_at,
            expires_at: active.expires_at,
            order_ref: None,
            digest: active.digest,
            total_lines: active.total_lines,
            answered_lines: active.answered_lines,
            primary: active.primary,
            forget_at: None,
            last_fulfil: None,
            cancelled: false,
            version: active.version,
            update: None,
            tombstone: false,
        })),
    }
}

/// Checks that a reacquiring reserve got the whole hold back.
pub fn check_reacquired(hold_ref: &str, result: &ReserveResult) -> Result<(), Error> {
    if result.outcome != ReserveOutcome::Reserved {
        return Err(Error::ReacquireFailed(hold_ref.to_string()));
    }
    Ok(())
}

/// The lines of an order from its shards' answers (`None`: no part of the order there).
/// Fails with ORDER_NOT_FOUND when no shard has a part.
pub fn merge_order_lines(
    order_ref: &str,
    parts: impl IntoIterator<Item = Option<Vec<LineView>>>,
) -> Result<Vec<LineView>, Error> {
    let mut found = false;
    let mut lines = Vec::new();
    for part in parts.into_iter().flatten() {
        found = true;
        lines.extend(part);
    }
    if !found {
        return Err(Error::OrderNotFound(order_ref.to_string()));
    }
    Ok(lines)
}

/// The lines a fulfilment shipped, from its shards' answers.
pub fn merge_shipped(parts: impl IntoIterator<Item = Option<Vec<LineView>>>) -> Vec<LineView> {
    parts.into_iter().flatten().flatten().collect()
}
