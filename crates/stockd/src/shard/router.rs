//! The router: maps every (product, location) to its shard and coordinates the requests
//! that span shards.
//!
//! Each operation on a hold or an order contacts only the shards it must: those with new
//! lines, plus those the hold directory (`directory`) says keep a part of the hold or
//! order. A hold whose lines all sit on one shard costs one message per Reserve, GetHold,
//! ConfirmHold and ReleaseHold, whatever the number of shards. The directory is read and
//! updated under the hold's stripe lock, after the shards answered.
//!
//! A reserve goes to the shards of its lines and to those keeping an older version of the
//! cart; if any shard rejects, is overloaded or has stopped, the shards that changed are
//! told to undo, so no line stays held anywhere. Undo and rollback messages, releases,
//! cancels, a fulfilment once checked, and configuration wait for room in a full mailbox
//! (`ShardHandle::force_write`) instead of being refused: work already begun is always
//! finished or taken back. A confirm of a one-shard hold is one message (the shard decides
//! alone); a confirm of a hold on several shards reads every part first and confirms only
//! the active ones; if a shard refuses, the others are rolled back. Requests on the same
//! hold or order are serialised by a striped lock taken in a fixed order, so two
//! concurrent carts never deadlock and never interleave their halves.
//!
//! A reserve on several shards is a cart version (`UpdateTag`): each shard learns the
//! version and every shard it went to, and the watermark below which every version
//! answered everywhere (`Directory::open_version`), so that recovery can keep a version
//! cut by a crash whole or undo it whole, and shards drop their records of settled ones.
//! A confirm under an order ref the directory places on shards where the hold has no
//! part asks them first, so an order ref confirms one hold across shards.
//!
//! The router keeps routing, locking, scatter/gather and undo messages only. Every
//! request is validated once, here, by the domain's `validate` functions (the shards'
//! engines rely on it), and the per-shard answers are merged by the domain's
//! `stockd_domain::outcome` functions.

use std::sync::Weak;

mod holds_query;
mod network;
pub use holds_query::HoldListing;
pub use network::NetworkView;

use futures::future::join_all;
use tokio::sync::Mutex;

use super::directory::{Directory, Locked, Ns, Seen};
use super::handle::{ShardError, ShardHandle, WriteReply};
use stockd_domain::outcome::{self, ConfirmStep, ReserveMerge};
use stockd_domain::refs::fnv1a;
use stockd_domain::request::{check_batch, check_ref_field, validate_read};
use stockd_domain::{
    AdjustStatus, Adjustment, CategoryConfig, ChannelConfig, Command, CountStatus, Error, FulfilOp,
    HoldState, HoldView, LineView, Millis, OrderLine, Outcome, PositionView, ProductConfig,
    ReserveRequest, ReserveUndo, StockCount, UpdateTag,
};

/// The domain's batch limits, under their old path.
pub use stockd_domain::limits::{READ_KEYS_MAX, STOCK_BATCH_MAX};
/// The reserve outcome types now live in the domain (`stockd_domain::outcome`).
pub use stockd_domain::outcome::{LineOutcome, ReserveOutcome, ReserveResult};

/// Number of lock stripes for holds and orders. Two refs share a stripe with probability
/// 1/4096; sharing costs only waiting, never correctness.
pub const LOCK_STRIPES: usize = 4_096;

/// The shard that owns (product, location): a stable hash, the same on every start.
pub fn shard_of(product_ref: &str, location_ref: &str, shards: usize) -> usize {
    (fnv1a(&[product_ref.as_bytes(), location_ref.as_bytes()]) % shards as u64) as usize
}

/// The cart version a reserve writes, while it is open (see `Router::close_version`).
struct OpenVersion {
    version: u64,
    /// The watermark the reserve carries (`UpdateTag::settled_below`).
    settled_below: u64,
    /// Whether a shard's outcome is unknown (it stopped, or its disk failed).
    unknown: bool,
}

/// A reserve's answer, with what a caller needs to take it back or go on: the undo of
/// every shard it changed and each shard's part after it.
struct Reserved {
    result: ReserveResult,
    undos: Vec<(usize, ReserveUndo)>,
    parts: Vec<(usize, HoldView)>,
}

/// The error to report when several shards failed: a domain refusal (it says what to
/// change) before an overload or outage (which say only "retry").
fn first_error(first: Option<ShardError>, next: ShardError) -> ShardError {
    match first {
        Some(e @ ShardError::Domain(_)) => e,
        Some(_) if matches!(next, ShardError::Domain(_)) => next,
        Some(e) => e,
        None => next,
    }
}

/// The lines of an order's part in a shard's answer (`None`: no part there).
fn order_lines(outcome: Outcome) -> Option<Vec<LineView>> {
    match outcome {
        Outcome::Lines(lines) => lines,
        _ => None,
    }
}

/// Routes requests to shards.
pub struct Router {
    shards: Vec<ShardHandle>,
    /// Where each hold's and order's parts are, and the stripe locks.
    directory: Directory,
    config: Mutex<()>,
    /// The channels, locations and networks as of the last configuration change, loaded
    /// from shard 0 on first use (`network::network`), dropped by every `configure`.
    network: std::sync::Mutex<Option<std::sync::Arc<NetworkView>>>,
}

impl Router {
    /// A router over shards that keep no hold yet.
    pub fn new(shards: Vec<ShardHandle>) -> Self {
        Self::with_directory(
            shards,
            Directory::new(stockd_domain::limits::HOLD_RETENTION_MS_DEFAULT),
        )
    }

    /// A router over recovered shards, with the directory rebuilt from their engines.
    pub fn with_directory(shards: Vec<ShardHandle>, directory: Directory) -> Self {
        assert!(!shards.is_empty(), "a router needs at least one shard");
        Router {
            shards,
            directory,
            config: Mutex::new(()),
            network: std::sync::Mutex::new(None),
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn shard(&self, product_ref: &str, location_ref: &str) -> &ShardHandle {
        &self.shards[shard_of(product_ref, location_ref, self.shards.len())]
    }

    /// Drops from the directory what the shards forgot (`Directory::prune`), every
    /// `DIRECTORY_PRUNE_TICK_MS`, until the router is gone.
    pub async fn prune_forever(router: Weak<Router>) {
        let tick = std::time::Duration::from_millis(crate::limits::DIRECTORY_PRUNE_TICK_MS);
        loop {
            tokio::time::sleep(tick).await;
            let Some(router) = router.upgrade() else {
                return;
            };
            let now = crate::clock::now_millis();
            router.directory.prune(&router.shards, now).await;
        }
    }

    /// Sends one command to every shard, waiting for room in full mailboxes (work that
    /// must apply everywhere or it half applies), and waits for all.
    async fn broadcast(
        &self,
        now: Millis,
        command: &Command,
    ) -> Vec<Result<WriteReply, ShardError>> {
        join_all(
            self.shards
                .iter()
                .map(|s| s.force_write(now, command.clone(), None)),
        )
        .await
    }

    // ----- InventoryService -----

    /// ATS of `channel_ref` at each key, in request order.
    pub async fn availability(
        &self,
        channel_ref: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<i64>, ShardError> {
        validate_read(channel_ref, keys)?;
        let n = self.shards.len();
        let mut by_shard: Vec<Vec<(usize, String, String)>> = vec![Vec::new(); n];
        for (i, (p, l)) in keys.iter().enumerate() {
            by_shard[shard_of(p, l, n)].push((i, p.clone(), l.clone()));
        }
        let calls = by_shard
            .into_iter()
            .enumerate()
            .filter(|(_, k)| !k.is_empty())
            .map(|(s, k)| self.shards[s].availability(channel_ref.to_string(), k));
        let mut out = vec![0; keys.len()];
        for answer in join_all(calls).await {
            for (i, q) in answer? {
                out[i] = q;
            }
        }
        Ok(out)
    }

    /// Reserves a hold (all-or-nothing across shards unless `allow_partial`).
    pub async fn reserve(
        &self,
        now: Millis,
        req: ReserveRequest,
    ) -> Result<ReserveResult, ShardError> {
        req.validate()?;
        let mut locked = self.directory.lock(now, &[&req.hold_ref]).await;
        let mut version = self.open_version();
        let reserved = self
            .reserve_locked(&mut locked, now, req, false, &mut version)
            .await;
        self.close_version(version);
        Ok(reserved?.result)
    }

    /// A new cart version for a reserve (see `Directory::open_version`).
    fn open_version(&self) -> OpenVersion {
        let (version, settled_below) = self.directory.open_version();
        OpenVersion {
            version,
            settled_below,
            unknown: false,
        }
    }

    /// Closes a cart version once its reserve (and any undo) answered on every shard;
    /// one whose outcome on a shard is unknown (a stopped shard, a failed disk) stays
    /// open, so no shard drops its record of it before a restart settles it.
    fn close_version(&self, version: OpenVersion) {
        if !version.unknown {
            self.directory.close_version(version.version);
        }
    }

    /// Sends the (validated) request to the shards of its lines and those keeping a part
    /// of the hold, each with the lines it owns, merges the answers in the domain, and
    /// undoes the shards that changed if the hold failed (a refusal, an overload, a
    /// stopped shard): an error leaves nothing behind. With `reacquire`, a hold that
    /// ended may be made again (a confirm's reacquire).
    async fn reserve_locked(
        &self,
        locked: &mut Locked<'_>,
        now: Millis,
        req: ReserveRequest,
        reacquire: bool,
        version: &mut OpenVersion,
    ) -> Result<Reserved, ShardError> {
        let n = self.shards.len();
        let mut mine: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (i, line) in req.lines.iter().enumerate() {
            mine[shard_of(&line.product_ref, &line.location_ref, n)].push(i as u32);
        }
        let known = locked.shards(Ns::Hold, &req.hold_ref);
        let targets: Vec<usize> = (0..n)
            .filter(|&s| !mine[s].is_empty() || known.contains(&(s as u32)))
            .collect();
        let answers = self
            .send_reserve(now, &req, mine, &targets, reacquire, version)
            .await;
        let mut parts = Vec::with_capacity(targets.len());
        let mut views: Vec<(usize, HoldView)> = Vec::new();
        let mut unchanged: Vec<HoldView> = Vec::new();
        let mut undos: Vec<(usize, ReserveUndo)> = Vec::new();
        let mut error = None;
        for (&shard, answer) in targets.iter().zip(answers) {
            locked.note_hold(&req.hold_ref, shard, &answer, |r| r.hold.as_ref());
            match answer {
                Ok(WriteReply {
                    outcome: Outcome::Reserved(part),
                    hold,
                }) => {
                    match part.undo.clone() {
                        Some(u) => undos.push((shard, u)),
                        None => unchanged.extend(hold.clone()),
                    }
                    views.extend(hold.clone().map(|h| (shard, h)));
                    parts.push((part, hold));
                }
                Ok(other) => unreachable!("a reserve answers Reserved, got {:?}", other.outcome),
                Err(e) => {
                    version.unknown |=
                        !matches!(e, ShardError::Domain(_) | ShardError::Overloaded(_));
                    error = Some(first_error(error, e));
                }
            }
        }
        if let Some(e) = error {
            self.undo(locked, now, undos, &req.hold_ref)
                .await
                .inspect_err(|_| version.unknown = true)?;
            return Err(e);
        }
        match outcome::merge_reserve(&req, parts) {
            ReserveMerge::Accepted(result) => Ok(Reserved {
                result,
                undos,
                parts: views,
            }),
            ReserveMerge::Rejected(lines) => {
                let undone = self.undo(locked, now, undos, &req.hold_ref).await;
                unchanged.extend(undone.inspect_err(|_| version.unknown = true)?);
                Ok(Reserved {
                    result: ReserveResult::rejected(lines, HoldView::merge(unchanged)),
                    undos: Vec::new(),
                    parts: Vec::new(),
                })
            }
        }
    }

    /// Sends a reserve to each of `targets` with its lines (`mine`, by shard), all at once,
    /// as one cart version: every shard learns the version and all the shards it goes to,
    /// so that recovery can make it whole or undo it whole after a crash between them.
    async fn send_reserve(
        &self,
        now: Millis,
        req: &ReserveRequest,
        mut mine: Vec<Vec<u32>>,
        targets: &[usize],
        reacquire: bool,
        version: &OpenVersion,
    ) -> Vec<Result<WriteReply, ShardError>> {
        let tag = UpdateTag {
            version: version.version,
            participants: targets
                .iter()
                .map(|&s| (s as u32, !mine[s].is_empty()))
                .collect(),
            settled_below: version.settled_below,
        };
        join_all(targets.iter().map(|&s| {
            let command = Command::ReserveTagged {
                request: req.clone(),
                mine: std::mem::take(&mut mine[s]),
                reacquire,
                tag: tag.clone(),
            };
            self.shards[s].write(now, command, Some(req.hold_ref.clone()))
        }))
        .await
    }

    /// Takes back changes already made (a failed reserve's, a failed confirm's). These
    /// messages wait for room in a full mailbox rather than being refused, so an undo is
    /// never lost to overload. Returns the hold's parts on those shards afterwards.
    async fn undo(
        &self,
        locked: &mut Locked<'_>,
        now: Millis,
        undos: Vec<(usize, ReserveUndo)>,
        hold_ref: &str,
    ) -> Result<Vec<HoldView>, ShardError> {
        let shards: Vec<usize> = undos.iter().map(|(s, _)| *s).collect();
        let answers = join_all(undos.into_iter().map(|(s, undo)| {
            self.shards[s].force_write(now, Command::UndoReserve(undo), Some(hold_ref.to_string()))
        }))
        .await;
        let mut parts = Vec::new();
        let mut error = None;
        for (shard, a) in shards.into_iter().zip(answers) {
            locked.note_hold(hold_ref, shard, &a, |r| r.hold.as_ref());
            match a {
                Ok(reply) => parts.extend(reply.hold),
                Err(e) => error = Some(first_error(error, e)),
            }
        }
        error.map_or(Ok(parts), Err)
    }

    /// Each part of a hold, with its shard's index, from the shards that keep one.
    async fn hold_parts(
        &self,
        locked: &mut Locked<'_>,
        now: Millis,
        hold_ref: &str,
    ) -> Result<Vec<(usize, HoldView)>, ShardError> {
        let known = locked.shards(Ns::Hold, hold_ref);
        let answers = join_all(
            known
                .iter()
                .map(|&s| self.shards[s as usize].hold(now, hold_ref.to_string())),
        )
        .await;
        let mut parts = Vec::with_capacity(known.len());
        let mut error = None;
        for (&shard, a) in known.iter().zip(answers) {
            let shard = shard as usize;
            locked.note_hold(hold_ref, shard, &a, Option::as_ref);
            match a {
                Ok(part) => parts.extend(part.map(|p| (shard, p))),
                Err(e) => error = Some(first_error(error, e)),
            }
        }
        error.map_or(Ok(parts), Err)
    }

    /// The whole hold, merged from its parts, or from the directory's view of it while it
    /// is active and unchanged (no shard message then).
    pub async fn hold(&self, now: Millis, hold_ref: &str) -> Result<HoldView, ShardError> {
        check_ref_field("hold_ref", hold_ref)?;
        let mut locked = self.directory.lock(now, &[hold_ref]).await;
        if let Some(view) = locked.view(hold_ref) {
            return Ok(view);
        }
        let parts = self.hold_parts(&mut locked, now, hold_ref).await?;
        let until = parts.iter().map(|(_, p)| p.expires_at).min();
        let whole = outcome::whole_hold(hold_ref, parts.into_iter().map(|(_, p)| p).collect())?;
        if let Some(until) = until {
            locked.keep_view(hold_ref, &whole, until);
        }
        Ok(whole)
    }

    /// Notes that a shard's part of a hold now belongs to `order_ref`, if the answer says
    /// it was confirmed as that order (or could not say).
    fn note_confirmed(
        locked: &mut Locked<'_>,
        now: Millis,
        order_ref: &str,
        shard: usize,
        answer: &Result<WriteReply, ShardError>,
    ) {
        let seen = Seen::of(answer, |r| {
            r.hold
                .as_ref()
                .filter(|h| h.state == HoldState::Confirmed)
                .filter(|h| h.order_ref.as_deref() == Some(order_ref))
                .map(|_| now)
        });
        if seen != Some(Seen::Absent) {
            locked.note(Ns::Order, order_ref, shard, seen);
        }
    }

    /// Confirms a hold into an order; with `reacquire`, an ended hold reserves again first.
    /// All or nothing: an error leaves the hold as it was (a reacquired hold is taken back).
    pub async fn confirm(
        &self,
        now: Millis,
        hold_ref: &str,
        order_ref: &str,
        reacquire: bool,
    ) -> Result<HoldView, ShardError> {
        check_ref_field("hold_ref", hold_ref)?;
        check_ref_field("order_ref", order_ref)?;
        let mut locked = self.directory.lock(now, &[hold_ref, order_ref]).await;
        let known = locked.shards(Ns::Hold, hold_ref);
        self.check_order_free(&mut locked, now, hold_ref, order_ref, &known)
            .await?;
        if let [shard] = known[..] {
            let one = self.confirm_one(&mut locked, now, hold_ref, order_ref, shard as usize);
            match one.await {
                Err(ShardError::Domain(Error::HoldExpired(_) | Error::HoldReleased(_)))
                    if reacquire => {}
                answer => return answer,
            }
        }
        let parts = self.hold_parts(&mut locked, now, hold_ref).await?;
        let whole = outcome::whole_hold(hold_ref, parts.iter().map(|(_, p)| p.clone()).collect())?;
        match outcome::confirm_step(whole, order_ref, reacquire)? {
            ConfirmStep::Done(hold) => Ok(hold),
            ConfirmStep::Confirm => {
                self.confirm_parts(&mut locked, now, hold_ref, order_ref, &parts)
                    .await
            }
            ConfirmStep::Reacquire(request) => {
                // The reacquire's cart version stays open until the confirm (or its undo)
                // answered everywhere.
                let mut version = self.open_version();
                let confirmed = self
                    .reacquire_and_confirm(&mut locked, now, order_ref, request, &mut version)
                    .await;
                self.close_version(version);
                confirmed
            }
        }
    }

    /// A confirm's reacquire: the ended hold reserved again, all or nothing, then
    /// confirmed; if the confirm fails, the reacquired parts are taken back.
    async fn reacquire_and_confirm(
        &self,
        locked: &mut Locked<'_>,
        now: Millis,
        order_ref: &str,
        request: ReserveRequest,
        version: &mut OpenVersion,
    ) -> Result<HoldView, ShardError> {
        let hold_ref = request.hold_ref.clone();
        // Built from the stored hold, so valid; checked like any reserve all the same.
        request.validate()?;
        let again = self
            .reserve_locked(locked, now, request, true, version)
            .await?;
        outcome::check_reacquired(&hold_ref, &again.result)?;
        match self
            .confirm_parts(locked, now, &hold_ref, order_ref, &again.parts)
            .await
        {
            Ok(hold) => Ok(hold),
            Err(e) => {
                version.unknown |= !matches!(e, ShardError::Domain(_) | ShardError::Overloaded(_));
                self.undo(locked, now, again.undos, &hold_ref)
                    .await
                    .inspect_err(|_| version.unknown = true)?;
                Err(e)
            }
        }
    }

    /// Refuses a confirm under an order ref that already confirms another hold on a shard
    /// where this hold has no part (on the hold's own shards each engine refuses that
    /// itself): those shards are asked with the confirm itself, which, with no part of
    /// the hold there, changes nothing and is refused if the order is another hold's. A
    /// new order ref has no shard in the directory and costs no message.
    async fn check_order_free(
        &self,
        locked: &mut Locked<'_>,
        now: Millis,
        hold_ref: &str,
        order_ref: &str,
        hold_shards: &[u32],
    ) -> Result<(), ShardError> {
        if hold_shards.is_empty() {
            return Ok(()); // an unknown hold is NOT_FOUND, whatever its order ref
        }
        let others: Vec<u32> = locked
            .shards(Ns::Order, order_ref)
            .into_iter()
            .filter(|s| !hold_shards.contains(s))
            .collect();
        let command = Command::Confirm {
            hold_ref: hold_ref.to_string(),
            order_ref: order_ref.to_string(),
        };
        let answers = join_all(
            others
                .iter()
                .map(|&s| self.shards[s as usize].write(now, command.clone(), None)),
        )
        .await;
        let mut error = None;
        for answer in answers {
            if let Err(e) = answer {
                error = Some(first_error(error, e));
            }
        }
        error.map_or(Ok(()), Err)
    }

    /// The confirm of a hold whose parts all sit on one shard: that shard's part is the
    /// whole hold, so its engine decides alone (confirms an active part, answers a
    /// confirmed one, refuses an ended one), in one message.
    async fn confirm_one(
        &self,
        locked: &mut Locked<'_>,
        now: Millis,
        hold_ref: &str,
        order_ref: &str,
        shard: usize,
    ) -> Result<HoldView, ShardError> {
        let command = Command::Confirm {
            hold_ref: hold_ref.to_string(),
            order_ref: order_ref.to_string(),
        };
        let answer = self.shards[shard]
            .write(now, command, Some(hold_ref.to_string()))
            .await;
        locked.note_hold(hold_ref, shard, &answer, |r| r.hold.as_ref());
        Self::note_confirmed(locked, now, order_ref, shard, &answer);
        let part = answer?.hold;
        Ok(outcome::whole_hold(hold_ref, part.into_iter().collect())?)
    }

    /// The whole hold from the hold parts a broadcast's replies carry.
    fn merge_replies(
        hold_ref: &str,
        answers: Vec<Result<WriteReply, ShardError>>,
    ) -> Result<HoldView, ShardError> {
        let mut parts = Vec::new();
        for a in answers {
            parts.extend(a?.hold);
        }
        Ok(outcome::whole_hold(hold_ref, parts)?)
    }

    /// Confirms the active parts of a hold on their shards; if any shard refuses, the
    /// shards that confirmed are rolled back to their active part, so nothing changed.
    async fn confirm_parts(
        &self,
        locked: &mut Locked<'_>,
        now: Millis,
        hold_ref: &str,
        order_ref: &str,
        parts: &[(usize, HoldView)],
    ) -> Result<HoldView, ShardError> {
        let targets = outcome::confirm_targets(hold_ref, parts)?;
        let command = Command::Confirm {
            hold_ref: hold_ref.to_string(),
            order_ref: order_ref.to_string(),
        };
        let answers = join_all(
            targets
                .iter()
                .map(|&s| self.shards[s].write(now, command.clone(), Some(hold_ref.to_string()))),
        )
        .await;
        let mut views = Vec::with_capacity(parts.len());
        let mut rollbacks = Vec::new();
        let mut error = None;
        for ((shard, before), answer) in parts
            .iter()
            .filter(|(s, _)| targets.contains(s))
            .zip(answers)
        {
            locked.note_hold(hold_ref, *shard, &answer, |r| r.hold.as_ref());
            Self::note_confirmed(locked, now, order_ref, *shard, &answer);
            match answer {
                Ok(reply) => {
                    if matches!(reply.outcome, Outcome::Hold(Some(_))) {
                        rollbacks.push((*shard, outcome::confirm_rollback(before)));
                    }
                    views.extend(reply.hold);
                }
                Err(e) => error = Some(first_error(error, e)),
            }
        }
        if let Some(e) = error {
            self.undo(locked, now, rollbacks, hold_ref).await?;
            return Err(e);
        }
        // Ended parts with no line were left alone; they are still parts of the hold.
        views.extend(
            parts
                .iter()
                .filter(|(s, _)| !targets.contains(s))
                .map(|(_, p)| p.clone()),
        );
        Ok(outcome::whole_hold(hold_ref, views)?)
    }

    /// Releases a hold. Idempotent.
    pub async fn release(&self, now: Millis, hold_ref: &str) -> Result<HoldView, ShardError> {
        check_ref_field("hold_ref", hold_ref)?;
        let mut locked = self.directory.lock(now, &[hold_ref]).await;
        let known = locked.shards(Ns::Hold, hold_ref);
        let command = Command::Release {
            hold_ref: hold_ref.to_string(),
        };
        // A release only frees stock, and one refused on some shards for a full mailbox
        // would leave the hold half released: each shard gets it, waiting for room.
        let answers = join_all(known.iter().map(|&s| {
            self.shards[s as usize].force_write(now, command.clone(), Some(hold_ref.to_string()))
        }))
        .await;
        for (&shard, a) in known.iter().zip(&answers) {
            locked.note_hold(hold_ref, shard as usize, a, |r| r.hold.as_ref());
        }
        Self::merge_replies(hold_ref, answers)
    }

    /// Asks the shards of an order, as the directory knows them, for its lines (a dry run
    /// of shipping everything): `(shard, lines)` of each shard that keeps a part.
    async fn order_parts(
        &self,
        locked: &mut Locked<'_>,
        now: Millis,
        order_ref: &str,
    ) -> Result<Vec<(usize, Vec<LineView>)>, ShardError> {
        let known = locked.shards(Ns::Order, order_ref);
        let answers = join_all(
            known
                .iter()
                .map(|&s| self.shards[s as usize].fulfil_check(now, order_ref.to_string(), None)),
        )
        .await;
        let mut parts = Vec::with_capacity(known.len());
        let mut error = None;
        for (&shard, a) in known.iter().zip(answers) {
            let shard = shard as usize;
            let seen = Seen::of(&a, |lines| lines.as_ref().map(|_| now));
            locked.note(Ns::Order, order_ref, shard, seen);
            match a {
                Ok(lines) => parts.extend(lines.map(|l| (shard, l))),
                Err(e) => error = Some(first_error(error, e)),
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        if parts.is_empty() {
            return Err(Error::OrderNotFound(order_ref.to_string()).into());
        }
        Ok(parts)
    }

    /// Ships an order, whole (`lines` empty) or in part. Checked on each of its shards
    /// first; once every check passed, the shipments wait for room in full mailboxes, so
    /// a fulfilment never half applies.
    pub async fn fulfil(
        &self,
        now: Millis,
        order_ref: &str,
        lines: Vec<OrderLine>,
    ) -> Result<Vec<LineView>, ShardError> {
        OrderLine::validate_fulfil(order_ref, &lines)?;
        let mut locked = self.directory.lock(now, &[order_ref]).await;
        let parts = self.order_parts(&mut locked, now, order_ref).await?;
        let op = FulfilOp::new(order_ref, now, &lines);
        // A whole fulfilment was just checked by reading the parts; a partial one is
        // checked on the shards of its lines before any shard changes.
        let per_shard: Vec<(usize, Option<Vec<OrderLine>>)> = if lines.is_empty() {
            parts.iter().map(|(s, _)| (*s, None)).collect()
        } else {
            let split = self.split_order_lines(lines);
            let checks = join_all(split.iter().map(|(s, l)| {
                self.shards[*s].fulfil_check(now, order_ref.to_string(), Some(l.clone()))
            }))
            .await;
            for c in checks {
                c?;
            }
            split.into_iter().map(|(s, l)| (s, Some(l))).collect()
        };
        let answers = join_all(per_shard.into_iter().map(|(s, l)| {
            let command = Command::Fulfil {
                order_ref: order_ref.to_string(),
                lines: l,
                op: Some(op.clone()),
            };
            async move { (s, self.shards[s].force_write(now, command, None).await) }
        }))
        .await;
        let mut shipped = Vec::with_capacity(answers.len());
        let mut error = None;
        for (shard, a) in answers {
            let seen = Seen::of(&a, |r| {
                matches!(r.outcome, Outcome::Lines(Some(_))).then_some(now)
            });
            locked.note(
                Ns::Order,
                order_ref,
                shard,
                seen.filter(|s| *s != Seen::Absent),
            );
            match a {
                Ok(reply) => shipped.push(order_lines(reply.outcome)),
                Err(e) => error = Some(first_error(error, e)),
            }
        }
        error.map_or_else(|| Ok(outcome::merge_shipped(shipped)), Err)
    }

    /// Each shard's lines of a partial fulfilment: the shards that own them, ascending.
    fn split_order_lines(&self, lines: Vec<OrderLine>) -> Vec<(usize, Vec<OrderLine>)> {
        let n = self.shards.len();
        let mut split: Vec<Vec<OrderLine>> = vec![Vec::new(); n];
        for l in lines {
            split[shard_of(&l.product_ref, &l.location_ref, n)].push(l);
        }
        split
            .into_iter()
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .collect()
    }

    /// Cancels what an order still has reserved. Idempotent. Each shard of the order gets
    /// the cancel, waiting for room in a full mailbox: a cancel never half applies.
    pub async fn cancel_order(
        &self,
        now: Millis,
        order_ref: &str,
    ) -> Result<Vec<LineView>, ShardError> {
        check_ref_field("order_ref", order_ref)?;
        let mut locked = self.directory.lock(now, &[order_ref]).await;
        let known = locked.shards(Ns::Order, order_ref);
        let command = Command::CancelOrder {
            order_ref: order_ref.to_string(),
        };
        let answers = join_all(
            known
                .iter()
                .map(|&s| self.shards[s as usize].force_write(now, command.clone(), None)),
        )
        .await;
        let mut parts = Vec::with_capacity(known.len());
        let mut error = None;
        for (&shard, a) in known.iter().zip(answers) {
            let seen = Seen::of(&a, |r| {
                matches!(r.outcome, Outcome::Lines(Some(_))).then_some(now)
            });
            locked.note(Ns::Order, order_ref, shard as usize, seen);
            match a {
                Ok(reply) => parts.push(order_lines(reply.outcome)),
                Err(e) => error = Some(first_error(error, e)),
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        Ok(outcome::merge_order_lines(order_ref, parts)?)
    }

    // ----- AdminService -----

    /// Applies counts; one status per count, in request order.
    pub async fn set_stock(
        &self,
        now: Millis,
        counts: Vec<StockCount>,
    ) -> Result<Vec<CountStatus>, ShardError> {
        StockCount::validate_batch(&counts, now)?;
        self.scatter(
            now,
            counts,
            |c| (&c.product_ref, &c.location_ref),
            Command::SetStock,
            |outcome| match outcome {
                Outcome::Counts(statuses) => statuses,
                _ => Vec::new(),
            },
            CountStatus::Stale,
        )
        .await
    }

    /// Applies adjustments; one status per adjustment, in request order.
    pub async fn adjust_stock(
        &self,
        now: Millis,
        adjustments: Vec<Adjustment>,
    ) -> Result<Vec<AdjustStatus>, ShardError> {
        Adjustment::validate_batch(&adjustments, now)?;
        self.scatter(
            now,
            adjustments,
            |a| (&a.product_ref, &a.location_ref),
            Command::AdjustStock,
            |outcome| match outcome {
                Outcome::Adjustments(statuses) => statuses,
                _ => Vec::new(),
            },
            AdjustStatus::Duplicate,
        )
        .await
    }

    /// Sends each item to the shard of its position, one command per shard, all shards at
    /// once, and puts the per-item answers back in request order.
    async fn scatter<T, S: Copy>(
        &self,
        now: Millis,
        items: Vec<T>,
        key: impl Fn(&T) -> (&String, &String),
        command: impl Fn(Vec<T>) -> Command,
        answers: impl Fn(Outcome) -> Vec<S>,
        filler: S,
    ) -> Result<Vec<S>, ShardError> {
        let n = self.shards.len();
        let total = items.len();
        let mut split: Vec<(Vec<usize>, Vec<T>)> =
            (0..n).map(|_| (Vec::new(), Vec::new())).collect();
        for (i, item) in items.into_iter().enumerate() {
            let (p, l) = key(&item);
            let s = shard_of(p, l, n);
            split[s].0.push(i);
            split[s].1.push(item);
        }
        let replies = join_all(
            split
                .into_iter()
                .enumerate()
                .filter(|(_, s)| !s.0.is_empty())
                .map(|(s, (idx, items))| {
                    let write = self.shards[s].write(now, command(items), None);
                    async move { (idx, write.await) }
                }),
        )
        .await;
        let mut out = vec![filler; total];
        for (idx, reply) in replies {
            for (i, st) in idx.into_iter().zip(answers(reply?.outcome)) {
                out[i] = st;
            }
        }
        Ok(out)
    }

    /// A position with every channel's view.
    pub async fn position(
        &self,
        product_ref: &str,
        location_ref: &str,
        include_ledger: bool,
    ) -> Result<Option<PositionView>, ShardError> {
        check_ref_field("product_ref", product_ref)?;
        check_ref_field("location_ref", location_ref)?;
        self.shard(product_ref, location_ref)
            .position(
                product_ref.to_string(),
                location_ref.to_string(),
                include_ledger,
            )
            .await
    }

    /// Applies a configuration command on every shard, in the same order everywhere.
    async fn configure(&self, now: Millis, command: Command) -> Result<(), ShardError> {
        let _guard = self.config.lock().await;
        let answers = self.broadcast(now, &command).await;
        *self.network.lock().expect("network cache lock") = None;
        for a in answers {
            a?;
        }
        Ok(())
    }

    pub async fn upsert_channel(
        &self,
        now: Millis,
        channel: ChannelConfig,
    ) -> Result<(), ShardError> {
        channel.validate_request()?;
        self.configure(now, Command::UpsertChannel(channel)).await
    }

    pub async fn delete_channel(&self, now: Millis, channel_ref: &str) -> Result<(), ShardError> {
        check_ref_field("channel_ref", channel_ref)?;
        if !self
            .channels()
            .await?
            .iter()
            .any(|c| c.channel_ref == channel_ref)
        {
            return Err(Error::UnknownChannel(channel_ref.to_string()).into());
        }
        self.configure(now, Command::DeleteChannel(channel_ref.to_string()))
            .await
    }

    pub async fn channels(&self) -> Result<Vec<ChannelConfig>, ShardError> {
        self.shards[0].channels().await
    }

    pub async fn upsert_products(
        &self,
        now: Millis,
        products: Vec<ProductConfig>,
    ) -> Result<(), ShardError> {
        check_batch("products", products.len())?;
        ProductConfig::validate_all(&products)?;
        self.configure(now, Command::UpsertProducts(products)).await
    }

    pub async fn upsert_categories(
        &self,
        now: Millis,
        categories: Vec<CategoryConfig>,
    ) -> Result<(), ShardError> {
        check_batch("categories", categories.len())?;
        CategoryConfig::validate_all(&categories)?;
        self.configure(now, Command::UpsertCategories(categories))
            .await
    }

    pub async fn rebalance(
        &self,
        now: Millis,
        product_ref: Option<String>,
        location_ref: Option<String>,
    ) -> Result<usize, ShardError> {
        if let Some(p) = &product_ref {
            check_ref_field("product_ref", p)?;
        }
        if let Some(l) = &location_ref {
            check_ref_field("location_ref", l)?;
        }
        let command = Command::Rebalance {
            product_ref,
            location_ref,
        };
        let mut total = 0;
        for a in self.broadcast(now, &command).await {
            if let Outcome::Rebalanced(n) = a?.outcome {
                total += n;
            }
        }
        Ok(total)
    }
}
