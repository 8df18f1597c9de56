//! The router: maps every (product, location) to its shard and coordinates the requests
//! that span shards.
//!
//! A hold's lines may live on several shards. A reserve goes to every shard (a shard
//! with no new line may hold an older version of the cart); if any shard rejects, the
//! shards that changed are told to undo, so no line stays held anywhere. Requests on the
//! same hold or order are serialised by a striped lock taken in a fixed order, so two
//! concurrent carts never deadlock and never interleave their halves.

use futures::future::join_all;
use tokio::sync::{Mutex, MutexGuard};

use super::handle::{ShardError, ShardHandle, WriteReply};
use stockd_domain::refs::fnv1a;
use stockd_domain::request::check_ref_field;
use stockd_domain::{
    AdjustStatus, Adjustment, CategoryConfig, ChannelConfig, Command, CountStatus, Error, FulfilOp,
    HoldState, HoldView, LineView, Millis, OrderLine, Outcome, PositionView, ProductConfig,
    ReserveKind, ReserveLine, ReserveRequest, ReserveUndo, StockCount,
};

/// Number of lock stripes for holds and orders. Two refs share a stripe with probability
/// 1/4096; sharing costs only waiting, never correctness.
pub const LOCK_STRIPES: usize = 4_096;
/// Most keys in one availability read.
pub const READ_KEYS_MAX: usize = 1_000;
/// Most items in one SetStock, AdjustStock or UpsertProducts.
pub const STOCK_BATCH_MAX: usize = 1_000;

/// The shard that owns (product, location): a stable hash, the same on every start.
pub fn shard_of(product_ref: &str, location_ref: &str, shards: usize) -> usize {
    (fnv1a(&[product_ref.as_bytes(), location_ref.as_bytes()]) % shards as u64) as usize
}

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

/// Routes requests to shards.
pub struct Router {
    shards: Vec<ShardHandle>,
    stripes: Vec<Mutex<()>>,
    config: Mutex<()>,
}

impl Router {
    pub fn new(shards: Vec<ShardHandle>) -> Self {
        assert!(!shards.is_empty(), "a router needs at least one shard");
        Router {
            shards,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            config: Mutex::new(()),
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn shard(&self, product_ref: &str, location_ref: &str) -> &ShardHandle {
        &self.shards[shard_of(product_ref, location_ref, self.shards.len())]
    }

    fn stripe(&self, key: &str) -> usize {
        (fnv1a(&[key.as_bytes()]) % LOCK_STRIPES as u64) as usize
    }

    /// Locks the stripes of the given refs in ascending order (no deadlock).
    async fn lock(&self, refs: &[&str]) -> Vec<MutexGuard<'_, ()>> {
        let mut idx: Vec<usize> = refs.iter().map(|r| self.stripe(r)).collect();
        idx.sort_unstable();
        idx.dedup();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            guards.push(self.stripes[i].lock().await);
        }
        guards
    }

    /// Sends one command to every shard and waits for all.
    async fn broadcast(
        &self,
        now: Millis,
        command: &Command,
        hold_ref: Option<&str>,
    ) -> Vec<Result<WriteReply, ShardError>> {
        join_all(
            self.shards
                .iter()
                .map(|s| s.write(now, command.clone(), hold_ref.map(str::to_string))),
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
        check_ref_field("channel_ref", channel_ref)?;
        if keys.is_empty() || keys.len() > READ_KEYS_MAX {
            return Err(Error::invalid(
                "keys",
                format!("must hold 1 to {READ_KEYS_MAX} keys (got {})", keys.len()),
            )
            .into());
        }
        let n = self.shards.len();
        let mut by_shard: Vec<Vec<(usize, String, String)>> = vec![Vec::new(); n];
        for (i, (p, l)) in keys.iter().enumerate() {
            check_ref_field(&format!("keys[{i}].product_ref"), p)?;
            check_ref_field(&format!("keys[{i}].location_ref"), l)?;
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
        let _guards = self.lock(&[&req.hold_ref]).await;
        self.reserve_locked(now, req).await
    }

    async fn reserve_locked(
        &self,
        now: Millis,
        req: ReserveRequest,
    ) -> Result<ReserveResult, ShardError> {
        let n = self.shards.len();
        let mut mine: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (i, line) in req.lines.iter().enumerate() {
            mine[shard_of(&line.product_ref, &line.location_ref, n)].push(i as u32);
        }
        let answers = join_all(self.shards.iter().zip(mine).map(|(s, mine)| {
            s.write(
                now,
                Command::Reserve {
                    request: req.clone(),
                    mine,
                },
                Some(req.hold_ref.clone()),
            )
        }))
        .await;
        let mut parts = Vec::with_capacity(n);
        let mut error = None;
        for (shard, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(WriteReply {
                    outcome: Outcome::Reserved(part),
                    hold,
                }) => parts.push((shard, part, hold)),
                Ok(other) => unreachable!("a reserve answers Reserved, got {:?}", other.outcome),
                Err(e) => error = error.or(Some(e)),
            }
        }
        let undos: Vec<(usize, ReserveUndo)> = parts
            .iter()
            .filter_map(|(s, p, _)| p.undo.clone().map(|u| (*s, u)))
            .collect();
        if let Some(e) = error {
            self.undo(now, undos, &req.hold_ref).await?;
            return Err(e);
        }
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
        for (_, part, _) in &parts {
            for r in &part.lines {
                let line = &mut lines[r.index as usize];
                line.reserved = r.reserved;
                line.available = r.available;
            }
        }
        let rejected = parts
            .iter()
            .any(|(_, p, _)| p.kind == ReserveKind::Rejected);
        let nothing = lines.iter().all(|l| l.reserved == 0);
        if rejected || nothing {
            let views = self.undo(now, undos, &req.hold_ref).await?;
            for l in &mut lines {
                l.reserved = 0;
            }
            return Ok(ReserveResult {
                outcome: ReserveOutcome::Rejected,
                hold: views.filter(|h| h.state == HoldState::Active),
                lines,
            });
        }
        let outcome = if lines.iter().all(|l| l.reserved == l.requested) {
            ReserveOutcome::Reserved
        } else {
            ReserveOutcome::Partial
        };
        let hold = HoldView::merge(parts.into_iter().filter_map(|(_, _, h)| h).collect());
        Ok(ReserveResult {
            outcome,
            hold,
            lines,
        })
    }

    /// Takes back the parts a failed reserve changed; returns the hold as it is after.
    async fn undo(
        &self,
        now: Millis,
        undos: Vec<(usize, ReserveUndo)>,
        hold_ref: &str,
    ) -> Result<Option<HoldView>, ShardError> {
        let answers = join_all(
            undos
                .into_iter()
                .map(|(s, undo)| self.shards[s].write(now, Command::UndoReserve(undo), None)),
        )
        .await;
        for a in answers {
            a?;
        }
        self.hold(now, hold_ref)
            .await
            .map(Some)
            .or_else(|e| match e {
                ShardError::Domain(Error::HoldNotFound(_)) => Ok(None),
                e => Err(e),
            })
    }

    /// The whole hold, merged from its parts.
    pub async fn hold(&self, now: Millis, hold_ref: &str) -> Result<HoldView, ShardError> {
        check_ref_field("hold_ref", hold_ref)?;
        let answers = join_all(
            self.shards
                .iter()
                .map(|s| s.hold(now, hold_ref.to_string())),
        )
        .await;
        let mut parts = Vec::new();
        for a in answers {
            parts.extend(a?);
        }
        HoldView::merge(parts).ok_or_else(|| Error::HoldNotFound(hold_ref.to_string()).into())
    }

    fn merge_replies(
        answers: Vec<Result<WriteReply, ShardError>>,
    ) -> Result<Option<HoldView>, ShardError> {
        let mut parts = Vec::new();
        for a in answers {
            parts.extend(a?.hold);
        }
        Ok(HoldView::merge(parts))
    }

    /// Confirms a hold into an order; with `reacquire`, an ended hold reserves again first.
    pub async fn confirm(
        &self,
        now: Millis,
        hold_ref: &str,
        order_ref: &str,
        reacquire: bool,
    ) -> Result<HoldView, ShardError> {
        check_ref_field("hold_ref", hold_ref)?;
        check_ref_field("order_ref", order_ref)?;
        let _guards = self.lock(&[hold_ref, order_ref]).await;
        let hold = self.hold(now, hold_ref).await?;
        match hold.state {
            HoldState::Confirmed => {
                return if hold.order_ref.as_deref() == Some(order_ref) {
                    Ok(hold)
                } else {
                    Err(Error::HoldConfirmed {
                        hold_ref: hold_ref.to_string(),
                        order_ref: hold.order_ref.unwrap_or_default(),
                    }
                    .into())
                };
            }
            HoldState::Active => {}
            HoldState::Expired | HoldState::Released if reacquire => {
                let request = ReserveRequest {
                    hold_ref: hold_ref.to_string(),
                    channel_ref: hold.channel_ref.clone(),
                    lines: hold
                        .lines
                        .iter()
                        .map(|l| ReserveLine {
                            product_ref: l.product_ref.clone(),
                            location_ref: l.location_ref.clone(),
                            quantity: l.quantity,
                            category: None,
                        })
                        .collect(),
                    ttl_seconds: None,
                    allow_partial: false,
                };
                let again = self.reserve_locked(now, request).await?;
                if again.outcome != ReserveOutcome::Reserved {
                    return Err(Error::ReacquireFailed(hold_ref.to_string()).into());
                }
            }
            HoldState::Expired => return Err(Error::HoldExpired(hold_ref.to_string()).into()),
            HoldState::Released => return Err(Error::HoldReleased(hold_ref.to_string()).into()),
        }
        let command = Command::Confirm {
            hold_ref: hold_ref.to_string(),
            order_ref: order_ref.to_string(),
        };
        let answers = self.broadcast(now, &command, Some(hold_ref)).await;
        Self::merge_replies(answers)?
            .ok_or_else(|| Error::HoldNotFound(hold_ref.to_string()).into())
    }

    /// Releases a hold. Idempotent.
    pub async fn release(&self, now: Millis, hold_ref: &str) -> Result<HoldView, ShardError> {
        check_ref_field("hold_ref", hold_ref)?;
        let _guards = self.lock(&[hold_ref]).await;
        let command = Command::Release {
            hold_ref: hold_ref.to_string(),
        };
        let answers = self.broadcast(now, &command, Some(hold_ref)).await;
        Self::merge_replies(answers)?
            .ok_or_else(|| Error::HoldNotFound(hold_ref.to_string()).into())
    }

    /// Ships an order, whole (`lines` empty) or in part. Checked on every shard first.
    pub async fn fulfil(
        &self,
        now: Millis,
        order_ref: &str,
        lines: Vec<OrderLine>,
    ) -> Result<Vec<LineView>, ShardError> {
        check_ref_field("order_ref", order_ref)?;
        for l in &lines {
            check_ref_field(&format!("lines[{}].product_ref", l.index), &l.product_ref)?;
            check_ref_field(&format!("lines[{}].location_ref", l.index), &l.location_ref)?;
            if !(1..=stockd_domain::request::HOLD_QUANTITY_MAX).contains(&l.quantity) {
                return Err(Error::invalid(
                    format!("lines[{}].quantity", l.index),
                    format!(
                        "must be between 1 and {} (got {})",
                        stockd_domain::request::HOLD_QUANTITY_MAX,
                        l.quantity
                    ),
                )
                .into());
            }
        }
        if lines.len() > stockd_domain::request::HOLD_LINES_MAX {
            return Err(Error::invalid(
                "lines",
                format!(
                    "must hold at most {} lines",
                    stockd_domain::request::HOLD_LINES_MAX
                ),
            )
            .into());
        }
        let _guards = self.lock(&[order_ref]).await;
        let n = self.shards.len();
        let exists = join_all(
            self.shards
                .iter()
                .map(|s| s.fulfil_check(now, order_ref.to_string(), None)),
        )
        .await;
        let mut found = false;
        for e in exists {
            found |= e?.is_some();
        }
        if !found {
            return Err(Error::OrderNotFound(order_ref.to_string()).into());
        }
        let op = FulfilOp {
            id: fnv1a(&[
                order_ref.as_bytes(),
                &now.to_le_bytes(),
                format!("{lines:?}").as_bytes(),
            ]),
            at: now,
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
        };
        let per_shard: Vec<Option<Vec<OrderLine>>> = if lines.is_empty() {
            vec![None; n]
        } else {
            let mut split: Vec<Vec<OrderLine>> = vec![Vec::new(); n];
            for l in lines {
                split[shard_of(&l.product_ref, &l.location_ref, n)].push(l);
            }
            split
                .into_iter()
                .map(|l| {
                    if l.is_empty() {
                        Some(Vec::new())
                    } else {
                        Some(l)
                    }
                })
                .collect()
        };
        // Check every shard's part before any shard changes.
        let involved = |l: &Option<Vec<OrderLine>>| l.as_ref().is_none_or(|l| !l.is_empty());
        let checks = join_all(
            per_shard
                .iter()
                .enumerate()
                .filter(|(_, l)| involved(l))
                .map(|(s, l)| self.shards[s].fulfil_check(now, order_ref.to_string(), l.clone())),
        )
        .await;
        for c in checks {
            c?;
        }
        let answers = join_all(
            per_shard
                .into_iter()
                .enumerate()
                .filter(|(_, l)| involved(l))
                .map(|(s, l)| {
                    self.shards[s].write(
                        now,
                        Command::Fulfil {
                            order_ref: order_ref.to_string(),
                            lines: l,
                            op: Some(op.clone()),
                        },
                        None,
                    )
                }),
        )
        .await;
        let mut shipped = Vec::new();
        for a in answers {
            if let Outcome::Lines(Some(lines)) = a?.outcome {
                shipped.extend(lines);
            }
        }
        Ok(shipped)
    }

    /// Cancels what an order still has reserved. Idempotent.
    pub async fn cancel_order(
        &self,
        now: Millis,
        order_ref: &str,
    ) -> Result<Vec<LineView>, ShardError> {
        check_ref_field("order_ref", order_ref)?;
        let _guards = self.lock(&[order_ref]).await;
        let command = Command::CancelOrder {
            order_ref: order_ref.to_string(),
        };
        let mut found = false;
        let mut cancelled = Vec::new();
        for a in self.broadcast(now, &command, None).await {
            if let Outcome::Lines(Some(lines)) = a?.outcome {
                found = true;
                cancelled.extend(lines);
            }
        }
        if !found {
            return Err(Error::OrderNotFound(order_ref.to_string()).into());
        }
        Ok(cancelled)
    }

    // ----- AdminService -----

    fn check_batch(len: usize, field: &str) -> Result<(), ShardError> {
        if len == 0 || len > STOCK_BATCH_MAX {
            return Err(Error::invalid(
                field,
                format!("must hold 1 to {STOCK_BATCH_MAX} items (got {len})"),
            )
            .into());
        }
        Ok(())
    }

    /// Applies counts; one status per count, in request order.
    pub async fn set_stock(
        &self,
        now: Millis,
        counts: Vec<StockCount>,
    ) -> Result<Vec<CountStatus>, ShardError> {
        Self::check_batch(counts.len(), "counts")?;
        for (i, c) in counts.iter().enumerate() {
            c.validate(&format!("counts[{i}]"))?;
        }
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
        Self::check_batch(adjustments.len(), "adjustments")?;
        for (i, a) in adjustments.iter().enumerate() {
            a.validate(&format!("adjustments[{i}]"))?;
        }
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
        for a in self.broadcast(now, &command, None).await {
            a?;
        }
        Ok(())
    }

    pub async fn upsert_channel(
        &self,
        now: Millis,
        channel: ChannelConfig,
    ) -> Result<(), ShardError> {
        channel
            .validate()
            .map_err(|(field, reason)| Error::invalid(format!("channel.{field}"), reason))?;
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
        Self::check_batch(products.len(), "products")?;
        ProductConfig::validate_all(&products)?;
        self.configure(now, Command::UpsertProducts(products)).await
    }

    pub async fn upsert_categories(
        &self,
        now: Millis,
        categories: Vec<CategoryConfig>,
    ) -> Result<(), ShardError> {
        Self::check_batch(categories.len(), "categories")?;
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
        for a in self.broadcast(now, &command, None).await {
            if let Outcome::Rebalanced(n) = a?.outcome {
                total += n;
            }
        }
        Ok(total)
    }
}
