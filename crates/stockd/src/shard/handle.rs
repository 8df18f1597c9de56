//! The cheap, cloneable handle to a shard actor: a bounded mailbox sender.
//!
//! A request carries its own reply channel. When the mailbox is full the handle answers
//! `Overloaded` at once (RESOURCE_EXHAUSTED) rather than queueing without limit. Messages
//! that finish or take back work already begun (the undo of a failed hold, the rollback of
//! a failed confirm) go through `force_write` instead, which waits for room: refusing them
//! would leave half a hold behind (issue #12, defect 1).
//!
//! A shard's task only ends once every handle is gone, so a closed mailbox (or a dropped
//! reply) while a handle still calls means the task died (a panic): the call answers
//! UNAVAILABLE and says so in the log.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use stockd_domain::{
    ChannelConfig, Command, Error, HoldPage, HoldScan, HoldView, LineView, Millis, NetworkSnap,
    OrderLine, OrderView, Outcome, PositionView,
};

/// Why a shard could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Domain(#[from] Error),
    /// The write could not be made durable; nothing was acknowledged.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The shard's mailbox is full.
    #[error("shard {0} is overloaded, retry later")]
    Overloaded(usize),
    /// The shard has stopped (shutdown).
    #[error("shard {0} has stopped")]
    Stopped(usize),
}

/// A write's answer: the outcome, and the hold's part here when the caller asked for it.
#[derive(Debug, Clone)]
pub struct WriteReply {
    pub outcome: Outcome,
    pub hold: Option<HoldView>,
}

pub(crate) type Respond<T> = oneshot::Sender<Result<T, ShardError>>;

/// The messages a shard actor handles, each with its reply channel.
pub(crate) enum Msg {
    Write {
        now: Millis,
        command: Command,
        /// Return this hold's part after the write.
        hold_ref: Option<String>,
        respond: Respond<WriteReply>,
    },
    Availability {
        channel_ref: String,
        keys: Vec<(usize, String, String)>,
        respond: Respond<Vec<(usize, i64)>>,
    },
    /// ATS of a channel over the grid of two lists (shared by every shard a network read
    /// goes to), answered for the pairs where the shard keeps a position
    /// (`Engine::availability_grid`).
    AvailabilityGrid {
        channel_ref: String,
        products: Arc<[String]>,
        locations: Arc<[String]>,
        /// `locations` is a list the router sends again unchanged (a channel's members in
        /// its configuration view): the engine keeps it resolved (`GridLocations::Kept`).
        kept: bool,
        respond: Respond<Vec<(usize, i64)>>,
    },
    Position {
        product_ref: String,
        location_ref: String,
        include_ledger: bool,
        respond: Respond<Option<PositionView>>,
    },
    Hold {
        now: Millis,
        hold_ref: String,
        respond: Respond<Option<HoldView>>,
    },
    FulfilCheck {
        now: Millis,
        order_ref: String,
        lines: Option<Vec<OrderLine>>,
        respond: Respond<Option<Vec<LineView>>>,
    },
    /// One shard's page of a ListHolds.
    ListHolds {
        now: Millis,
        scan: HoldScan,
        respond: Respond<HoldPage>,
    },
    /// The shard's part of an order.
    Order {
        order_ref: String,
        respond: Respond<Option<OrderView>>,
    },
    Channels {
        respond: Respond<Vec<ChannelConfig>>,
    },
    /// Locations and channel networks.
    Network { respond: Respond<NetworkSnap> },
}

impl Msg {
    /// The message's kind, a bounded label for `stockd_shard_messages_total`.
    fn kind(&self) -> &'static str {
        match self {
            Msg::Write { command, .. } => command_kind(command),
            Msg::Availability { .. } | Msg::AvailabilityGrid { .. } | Msg::Position { .. } => {
                "read"
            }
            Msg::Hold { .. } => "hold",
            Msg::FulfilCheck { .. } => "fulfil_check",
            Msg::ListHolds { .. } => "list_holds",
            Msg::Order { .. } => "order",
            Msg::Channels { .. } | Msg::Network { .. } => "config",
        }
    }
}

/// The label of a write's command.
fn command_kind(command: &Command) -> &'static str {
    match command {
        Command::Reserve { .. } | Command::Reacquire { .. } | Command::ReserveTagged { .. } => {
            "reserve"
        }
        Command::UndoReserve(_) | Command::ResolveUpdate { .. } => "undo",
        Command::Confirm { .. } => "confirm",
        Command::Release { .. } => "release",
        Command::Fulfil { .. } => "fulfil",
        Command::CancelOrder { .. } => "cancel",
        Command::SetStock(_) | Command::AdjustStock(_) | Command::Rebalance { .. } => "stock",
        Command::UpsertChannel(_)
        | Command::DeleteChannel(_)
        | Command::UpsertProducts(_)
        | Command::UpsertCategories(_)
        | Command::UpsertLocations(_)
        | Command::DeleteLocation(_)
        | Command::SetNetwork(_) => "config",
        Command::Expire => "expire",
    }
}

/// A handle to one shard actor.
#[derive(Clone)]
pub struct ShardHandle {
    pub(crate) id: usize,
    pub(crate) tx: mpsc::Sender<Msg>,
}

impl ShardHandle {
    pub fn id(&self) -> usize {
        self.id
    }

    async fn call<T>(&self, make: impl FnOnce(Respond<T>) -> Msg) -> Result<T, ShardError> {
        let (respond, answer) = oneshot::channel();
        let msg = make(respond);
        let kind = msg.kind();
        match self.tx.try_send(msg) {
            Ok(()) => crate::metrics::shard_message(kind),
            Err(mpsc::error::TrySendError::Full(_)) => {
                crate::metrics::overloaded(self.id);
                return Err(ShardError::Overloaded(self.id));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.died()),
        }
        answer.await.map_err(|_| self.died())?
    }

    /// Like `call`, but waits for room in the mailbox instead of refusing: for messages
    /// that must arrive (undo, rollback). The shard drains its mailbox without waiting on
    /// any router, so the wait is bounded by one batch.
    async fn force<T>(&self, make: impl FnOnce(Respond<T>) -> Msg) -> Result<T, ShardError> {
        let (respond, answer) = oneshot::channel();
        let msg = make(respond);
        let kind = msg.kind();
        if self.tx.send(msg).await.is_err() {
            return Err(self.died());
        }
        crate::metrics::shard_message(kind);
        answer.await.map_err(|_| self.died())?
    }

    /// The error of a call to a shard whose task has ended while handles remain: it can
    /// only have panicked (a shutdown waits for every handle to drop first).
    fn died(&self) -> ShardError {
        tracing::error!(
            shard = self.id,
            "shard task has stopped; its keys are unavailable"
        );
        ShardError::Unavailable(format!(
            "shard {} has stopped; stockd must restart to recover it",
            self.id
        ))
    }

    /// Applies a command; the reply leaves once the change is durable.
    pub async fn write(
        &self,
        now: Millis,
        command: Command,
        hold_ref: Option<String>,
    ) -> Result<WriteReply, ShardError> {
        self.call(|respond| Msg::Write {
            now,
            command,
            hold_ref,
            respond,
        })
        .await
    }

    /// Applies a command that must not be refused for a full mailbox (an undo or a
    /// rollback of work already begun): waits for room instead.
    pub async fn force_write(
        &self,
        now: Millis,
        command: Command,
        hold_ref: Option<String>,
    ) -> Result<WriteReply, ShardError> {
        self.force(|respond| Msg::Write {
            now,
            command,
            hold_ref,
            respond,
        })
        .await
    }

    /// ATS of a channel at each (index, product, location).
    pub async fn availability(
        &self,
        channel_ref: String,
        keys: Vec<(usize, String, String)>,
    ) -> Result<Vec<(usize, i64)>, ShardError> {
        self.call(|respond| Msg::Availability {
            channel_ref,
            keys,
            respond,
        })
        .await
    }

    /// ATS of a channel over the grid `products` × `locations` at the pairs where this
    /// shard keeps a position, as (product index × `locations.len()` + location index, ATS).
    pub async fn availability_grid(
        &self,
        channel_ref: String,
        products: Arc<[String]>,
        locations: Arc<[String]>,
        kept: bool,
    ) -> Result<Vec<(usize, i64)>, ShardError> {
        self.call(|respond| Msg::AvailabilityGrid {
            channel_ref,
            products,
            locations,
            kept,
            respond,
        })
        .await
    }

    pub async fn position(
        &self,
        product_ref: String,
        location_ref: String,
        include_ledger: bool,
    ) -> Result<Option<PositionView>, ShardError> {
        self.call(|respond| Msg::Position {
            product_ref,
            location_ref,
            include_ledger,
            respond,
        })
        .await
    }

    pub async fn hold(
        &self,
        now: Millis,
        hold_ref: String,
    ) -> Result<Option<HoldView>, ShardError> {
        self.call(|respond| Msg::Hold {
            now,
            hold_ref,
            respond,
        })
        .await
    }

    /// Checks a fulfilment without applying it.
    pub async fn fulfil_check(
        &self,
        now: Millis,
        order_ref: String,
        lines: Option<Vec<OrderLine>>,
    ) -> Result<Option<Vec<LineView>>, ShardError> {
        self.call(|respond| Msg::FulfilCheck {
            now,
            order_ref,
            lines,
            respond,
        })
        .await
    }

    /// This shard's page of a ListHolds.
    pub async fn list_holds(&self, now: Millis, scan: HoldScan) -> Result<HoldPage, ShardError> {
        self.call(|respond| Msg::ListHolds { now, scan, respond })
            .await
    }

    /// This shard's part of an order (`None`: no part here).
    pub async fn order(&self, order_ref: String) -> Result<Option<OrderView>, ShardError> {
        self.call(|respond| Msg::Order { order_ref, respond }).await
    }

    pub async fn channels(&self) -> Result<Vec<ChannelConfig>, ShardError> {
        self.call(|respond| Msg::Channels { respond }).await
    }

    pub async fn network(&self) -> Result<NetworkSnap, ShardError> {
        self.call(|respond| Msg::Network { respond }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard whose task ended while a handle remains (a panic) answers UNAVAILABLE, for
    /// ordinary and forced calls alike, instead of "shutting down" or a hang.
    #[tokio::test]
    async fn a_dead_shard_answers_unavailable() {
        let (tx, rx) = mpsc::channel(4);
        drop(rx);
        let handle = ShardHandle { id: 3, tx };
        let write = handle.write(0, Command::Expire, None).await;
        assert!(
            matches!(&write, Err(ShardError::Unavailable(m)) if m.contains("shard 3")),
            "{write:?}"
        );
        let forced = handle.force_write(0, Command::Expire, None).await;
        assert!(
            matches!(forced, Err(ShardError::Unavailable(_))),
            "{forced:?}"
        );
        let read = handle.hold(0, "h".into()).await;
        assert!(matches!(read, Err(ShardError::Unavailable(_))), "{read:?}");
    }

    /// A shard that drops a request without answering (it panicked mid-batch) is
    /// UNAVAILABLE too.
    #[tokio::test]
    async fn a_dropped_reply_answers_unavailable() {
        let (tx, mut rx) = mpsc::channel(4);
        let handle = ShardHandle { id: 1, tx };
        let dropper = tokio::spawn(async move {
            let msg = rx.recv().await;
            drop(msg);
            rx
        });
        let read = handle.hold(0, "h".into()).await;
        assert!(matches!(read, Err(ShardError::Unavailable(_))), "{read:?}");
        drop(dropper.await);
    }

    /// A forced write waits for room in a full mailbox instead of refusing it.
    #[tokio::test]
    async fn a_forced_write_waits_for_room() {
        let (tx, mut rx) = mpsc::channel(1);
        let handle = ShardHandle { id: 0, tx };
        let (filler, _answer) = oneshot::channel();
        handle
            .tx
            .try_send(Msg::Channels { respond: filler })
            .expect("room for one");
        let refused = handle.write(0, Command::Expire, None).await;
        assert!(
            matches!(refused, Err(ShardError::Overloaded(0))),
            "{refused:?}"
        );
        let shard = tokio::spawn(async move {
            let mut answered = 0;
            while let Some(msg) = rx.recv().await {
                if let Msg::Write { respond, .. } = msg {
                    let _ = respond.send(Ok(WriteReply {
                        outcome: Outcome::Done,
                        hold: None,
                    }));
                    answered += 1;
                }
            }
            answered
        });
        let forced = handle.force_write(0, Command::Expire, None).await;
        assert!(forced.is_ok(), "{forced:?}");
        drop(handle);
        assert_eq!(shard.await.expect("shard task"), 1);
    }
}
