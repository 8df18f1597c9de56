//! `EventService`: the event log over gRPC. `WatchEvents` replays retained events from
//! disk, then follows the live feed; `ListEvents` reads pages.
//!
//! A watch is a task of its own feeding a bounded channel to its HTTP/2 stream. It
//! subscribes to the live feed before it reads the published sequence, so the switch
//! from replay to live loses nothing; events seen twice are skipped by sequence. When the
//! feed's ring moves a whole `watch_buffer` past a watch (a burst such as a bulk SetStock,
//! or a consumer slower than events arrive), the watch reads on from the retained log, so
//! a consumer that keeps reading is never cut off by a burst. A consumer more than
//! `watch_buffer` behind that takes nothing for `EVENTS_WATCH_STALL_MS` gets
//! RESOURCE_EXHAUSTED naming where it was. The writer never waits for anyone.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::access::check_channel;
use super::convert::{invalid, millis, timestamp};
use super::status::{ApiError, to_status};
use crate::limits::{
    EVENTS_LIST_PAGE_DEFAULT, EVENTS_LIST_PAGE_MAX, EVENTS_REPLAY_PAGE, EVENTS_WATCH_SEND_BUFFER,
    EVENTS_WATCH_STALL_MS, EVENTS_WATCHERS_MAX,
};
use crate::metrics as m;
use crate::proto::inventory::v1 as pb;
use crate::proto::inventory::v1::event_service_server::EventService;
use crate::proto::inventory::v1::watch_events_request::Start;
use crate::storage::events::record::KINDS;
use crate::storage::events::{EventsError, Filter, Page, Shared, Stored};

/// The event service over the running event log.
#[derive(Clone)]
pub struct EventApi {
    events: Arc<Shared>,
    watchers: Arc<Semaphore>,
    /// Turns true when the server drains: every watch ends (UNAVAILABLE, naming where to
    /// resume), so its connection can close.
    closing: watch::Receiver<bool>,
}

impl EventApi {
    pub fn new(events: Arc<Shared>, closing: watch::Receiver<bool>) -> EventApi {
        EventApi {
            events,
            watchers: Arc::new(Semaphore::new(EVENTS_WATCHERS_MAX)),
            closing,
        }
    }
}

type Sent = Result<pb::WatchEventsResponse, Status>;

/// The channel a request's filter names ("" when it names none).
fn filter_channel(filter: Option<&pb::EventFilter>) -> &str {
    filter.map_or("", |f| f.channel_ref.as_str())
}

#[tonic::async_trait]
impl EventService for EventApi {
    type WatchEventsStream = ReceiverStream<Sent>;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        // A caller scoped to channels sees only the events of a channel it may use.
        check_channel(&request, filter_channel(request.get_ref().filter.as_ref()))?;
        let req = request.into_inner();
        let filter = filter(req.filter)?;
        let start = Start::try_from(req.start)
            .map_err(|_| to_status(invalid("start", "is not a known start")))?;
        // Subscribed before `published` is read: every later event comes through `live`.
        let live = self.events.subscribe();
        let next = match start {
            Start::Unspecified | Start::Now => self.events.published() + 1,
            Start::Oldest => self.events.oldest(),
            Start::AtSequence if req.from_sequence == 0 => {
                return Err(to_status(invalid(
                    "from_sequence",
                    "must be at least 1 with START_AT_SEQUENCE",
                )));
            }
            Start::AtSequence => req.from_sequence,
        };
        if next < self.events.oldest() {
            return Err(to_status(ApiError::Events(EventsError::Expired {
                asked: next,
                oldest: self.events.oldest(),
            })));
        }
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            to_status(ApiError::Events(EventsError::TooManyWatchers {
                max: EVENTS_WATCHERS_MAX,
            }))
        })?;
        let (tx, rx) = mpsc::channel(EVENTS_WATCH_SEND_BUFFER);
        let watch = Watch {
            events: self.events.clone(),
            live,
            next,
            filter,
            tx,
            closing: self.closing.clone(),
            scratch: Vec::new(),
        };
        tokio::spawn(async move {
            let _permit = permit;
            m::events_watchers(1.0);
            watch.run().await;
            m::events_watchers(-1.0);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        // A caller scoped to channels sees only the events of a channel it may use.
        check_channel(&request, filter_channel(request.get_ref().filter.as_ref()))?;
        let req = request.into_inner();
        let filter = filter(req.filter)?;
        let size = match req.page_size as usize {
            0 => EVENTS_LIST_PAGE_DEFAULT,
            n if n > EVENTS_LIST_PAGE_MAX => {
                return Err(to_status(invalid(
                    "page_size",
                    format!("must be at most {EVENTS_LIST_PAGE_MAX}"),
                )));
            }
            n => n,
        };
        let from = match req.from_sequence {
            0 => self.events.oldest(),
            n => n,
        };
        let page = read(&self.events, from, size, filter)
            .await
            .map_err(|e| to_status(ApiError::Events(e)))?;
        Ok(Response::new(pb::ListEventsResponse {
            events: page.events.iter().map(to_proto).collect(),
            next_sequence: page.next,
            oldest_sequence: self.events.oldest(),
            last_sequence: self.events.published(),
        }))
    }

    async fn get_position_history(
        &self,
        request: Request<pb::GetPositionHistoryRequest>,
    ) -> Result<Response<pb::GetPositionHistoryResponse>, Status> {
        // The history shows every channel's quantities: not for a caller scoped to some.
        check_channel(&request, "")?;
        super::history::get_position_history(&self.events, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_channel_report(
        &self,
        request: Request<pb::GetChannelReportRequest>,
    ) -> Result<Response<pb::GetChannelReportResponse>, Status> {
        check_channel(&request, &request.get_ref().channel_ref)?;
        super::reports::get_channel_report(&self.events, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// Reads a page off the async workers (file reads).
async fn read(
    events: &Arc<Shared>,
    from: u64,
    limit: usize,
    filter: Filter,
) -> Result<Page, EventsError> {
    let events = events.clone();
    tokio::task::spawn_blocking(move || events.read(from, limit, &filter))
        .await
        .map_err(|e| EventsError::Unavailable(format!("event read failed: {e}")))?
}

/// One open watch.
struct Watch {
    events: Arc<Shared>,
    live: broadcast::Receiver<Arc<Stored>>,
    /// The next sequence to examine: everything before it was sent or filtered out.
    next: u64,
    filter: Filter,
    tx: mpsc::Sender<Sent>,
    closing: watch::Receiver<bool>,
    /// Where events are encoded before they are copied out (`event_wire`).
    scratch: Vec<u8>,
}

/// Why a watch stopped following.
enum Stop {
    /// The consumer went away, or stockd is stopping.
    Gone,
    Error(EventsError),
}

impl Watch {
    async fn run(mut self) {
        let mut closing = self.closing.clone();
        let next = tokio::select! {
            () = self.stream() => return,
            _ = closing.wait_for(|c| *c) => self.next,
        };
        let e = EventsError::ShuttingDown { next };
        let _ = self.tx.try_send(Err(to_status(ApiError::Events(e))));
    }

    async fn stream(&mut self) {
        loop {
            if let Err(stop) = self.replay().await {
                return self.end(stop).await;
            }
            match self.follow().await {
                // The ring moved past it during the replay: read the rest from disk.
                Ok(()) => self.live = self.events.subscribe(),
                Err(stop) => return self.end(stop).await,
            }
        }
    }

    async fn end(&mut self, stop: Stop) {
        if let Stop::Error(e) = stop {
            m::events_watch_ended(match e {
                EventsError::Behind { .. } => "behind",
                EventsError::Expired { .. } => "expired",
                _ => "unavailable",
            });
            let _ = self.tx.send(Err(to_status(ApiError::Events(e)))).await;
        }
    }

    /// Sends the retained events from `next` up to the published sequence.
    async fn replay(&mut self) -> Result<(), Stop> {
        while self.next <= self.events.published() {
            let before = self.next;
            let page = read(
                &self.events,
                before,
                EVENTS_REPLAY_PAGE,
                self.filter.clone(),
            )
            .await
            .map_err(Stop::Error)?;
            for event in &page.events {
                self.send(event).await?;
                self.next = event.seq + 1;
            }
            if page.next == before {
                // Nothing readable yet at `next` (a segment just rolled): try live.
                break;
            }
            self.next = page.next;
        }
        Ok(())
    }

    /// Follows the live feed. `Ok` when it must go back to disk: a gap in what it received
    /// (it lagged before it sent anything live).
    async fn follow(&mut self) -> Result<(), Stop> {
        loop {
            let received = match self.live.try_recv() {
                // What is already in the ring is taken without waiting (no select, no
                // waker, per event), within the task's cooperative budget, so that a burst
                // does not hold the runtime thread.
                Ok(event) => {
                    tokio::task::coop::consume_budget().await;
                    Ok(event)
                }
                Err(TryRecvError::Empty) => tokio::select! {
                    received = self.live.recv() => received,
                    // The consumer went away while nothing happened: free its slot now.
                    () = self.tx.closed() => return Err(Stop::Gone),
                },
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
            };
            let event = match received {
                Ok(event) => event,
                Err(RecvError::Closed) => return Err(Stop::Gone),
                // The ring lapped this watch (a burst, or a consumer slower than events
                // arrive): it reads on from the retained log, at its consumer's pace.
                Err(RecvError::Lagged(_)) => return Ok(()),
            };
            if event.seq < self.next {
                continue;
            }
            if event.seq > self.next {
                return Ok(());
            }
            if self.filter.matches(&event.record) {
                self.send(&event).await?;
            }
            self.next = event.seq + 1;
        }
    }

    /// Sends one event. A watch more than the watch buffer behind whose consumer takes
    /// nothing for `EVENTS_WATCH_STALL_MS` is cut off (a consumer that reads, however
    /// slowly, is served from the retained log instead).
    async fn send(&mut self, event: &Stored) -> Result<(), Stop> {
        let message = Ok(pb::WatchEventsResponse::encoded(
            super::event_wire::watch_response(event, &mut self.scratch),
        ));
        let message = match self.tx.try_send(message) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop::Gone),
            Err(mpsc::error::TrySendError::Full(message)) => message,
        };
        // The consumer takes nothing for now: wait in steps, and cut it off once it has
        // been stalled for EVENTS_WATCH_STALL_MS while more than the buffer behind.
        let step = Duration::from_millis(EVENTS_WATCH_STALL_MS / 10);
        let buffer = self.events.watch_buffer();
        let mut stalled = Duration::ZERO;
        loop {
            match tokio::time::timeout(step, self.tx.reserve()).await {
                Ok(Ok(permit)) => {
                    permit.send(message);
                    return Ok(());
                }
                Ok(Err(_)) => return Err(Stop::Gone),
                Err(_) if self.events.published().saturating_sub(self.next) > buffer as u64 => {
                    stalled += step;
                    if stalled >= Duration::from_millis(EVENTS_WATCH_STALL_MS) {
                        return Err(Stop::Error(EventsError::Behind {
                            last_sent: self.next - 1,
                            buffer,
                        }));
                    }
                }
                Err(_) => stalled = Duration::ZERO,
            }
        }
    }
}

/// The request's filter, checked.
fn filter(f: Option<pb::EventFilter>) -> Result<Filter, Status> {
    let f = f.unwrap_or_default();
    let mut kinds = Vec::with_capacity(f.kinds.len());
    for k in &f.kinds {
        match usize::try_from(*k).ok().and_then(|k| k.checked_sub(1)) {
            Some(i) if i < KINDS.len() => kinds.push(KINDS[i]),
            _ => {
                return Err(to_status(invalid(
                    "filter.kinds",
                    format!("{k} is not a known kind"),
                )));
            }
        }
    }
    let named = |field: &str, value: String| -> Result<Option<String>, Status> {
        if value.is_empty() {
            return Ok(None);
        }
        stockd_domain::refs::check_ref(&value).map_err(|r| to_status(invalid(field, r)))?;
        Ok(Some(value))
    };
    let from = millis("filter.from_time", f.from_time.as_ref()).map_err(to_status)?;
    let to = millis("filter.to_time", f.to_time.as_ref()).map_err(to_status)?;
    Ok(Filter {
        kinds,
        channel: named("filter.channel_ref", f.channel_ref)?,
        product: named("filter.product_ref", f.product_ref)?,
        location: named("filter.location_ref", f.location_ref)?,
        from_at: from,
        to_at: to,
        touches: None,
    })
}

/// The event as the API shows it (ListEvents; WatchEvents writes the same bytes directly,
/// `event_wire`).
pub(crate) fn to_proto(event: &Stored) -> pb::Event {
    let r = &event.record;
    let rejected = r.kind() == Some(stockd_domain::EventKind::ReserveRejected);
    pb::Event {
        sequence: event.seq,
        time: Some(timestamp(r.at)),
        kind: r.kind as i32 + 1,
        channel_ref: r.channel.clone().unwrap_or_default(),
        hold_ref: r.hold.clone().unwrap_or_default(),
        order_ref: r.order.clone().unwrap_or_default(),
        product_ref: r.product.clone().unwrap_or_default(),
        location_ref: r.location.clone().unwrap_or_default(),
        quantity: r.quantity,
        requested: if rejected { r.quantity } else { 0 },
        available: r.available,
        on_hand: r.on_hand,
        ats: r.ats,
        primary: r.primary,
        hold_created_time: r.hold_created_at.map(timestamp),
        quantity_changes_omitted: r.iqs_omitted,
        quantity_changes: r
            .iqs
            .iter()
            .map(|iq| {
                let ((product_ref, location_ref), quantity) = super::history::quantity(r, iq);
                pb::QuantityChange {
                    product_ref,
                    location_ref,
                    quantity: Some(quantity),
                }
            })
            .collect(),
    }
}
