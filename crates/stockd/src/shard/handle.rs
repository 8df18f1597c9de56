//! The cheap, cloneable handle to a shard actor: a bounded mailbox sender.
//!
//! A request carries its own reply channel. When the mailbox is full the handle answers
//! `Overloaded` at once (RESOURCE_EXHAUSTED) rather than queueing without limit.

use tokio::sync::{mpsc, oneshot};

use stockd_domain::{
    ChannelConfig, Command, Error, HoldView, LineView, Millis, OrderLine, Outcome, PositionView,
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
    Channels {
        respond: Respond<Vec<ChannelConfig>>,
    },
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
        match self.tx.try_send(make(respond)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                crate::metrics::overloaded(self.id);
                return Err(ShardError::Overloaded(self.id));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ShardError::Stopped(self.id)),
        }
        answer.await.map_err(|_| ShardError::Stopped(self.id))?
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

    pub async fn channels(&self) -> Result<Vec<ChannelConfig>, ShardError> {
        self.call(|respond| Msg::Channels { respond }).await
    }
}
