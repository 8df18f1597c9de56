//! One event as the event log stores it: the domain's event with its refs resolved, the
//! position's on_hand / ATS after the change, the Inventory Quantities it turned ACTIVE or
//! INACTIVE (a position's history, `IqRecord`), and where it came from (shard, shard LSN).
//!
//! The sequence number is not in the record: it is the event log's LSN (the frame's), so
//! it is dense by construction. `origin` lets recovery tell which shard records already
//! have their events in the event log (`storage::events::open`).
//!
//! Format versions: 1 (no IQ changes, no hold creation time) is still read, as a record
//! with neither; 2 is written.

use serde::{Deserialize, Serialize};

use crate::limits::EVENTS_IQS_PER_EVENT_MAX;
use stockd_domain::{Command, Engine, Event, EventKind, IqChange, IqKind, Millis};

/// Version of the event payload. Bump it with any change to `EventRecord`, and keep
/// reading the older ones (`decode`).
pub const EVENT_FORMAT_VERSION: u8 = 2;

/// The first version, without `hold_created_at` and `iqs`: still read.
const EVENT_FORMAT_V1: u8 = 1;

/// Every IQ type, in the order of their stored codes.
pub const IQ_KINDS: [IqKind; 7] = [
    IqKind::LastOnHand,
    IqKind::Delta,
    IqKind::Correction,
    IqKind::Returned,
    IqKind::Sale,
    IqKind::SoftReserve,
    IqKind::Reserved,
];

/// Every kind, in the order of their stored codes (a kind's code is its index here).
pub const KINDS: [EventKind; 14] = [
    EventKind::HoldCreated,
    EventKind::HoldUpdated,
    EventKind::HoldConfirmed,
    EventKind::HoldReleased,
    EventKind::HoldExpired,
    EventKind::ReserveRejected,
    EventKind::OrderFulfilled,
    EventKind::OrderCancelled,
    EventKind::StockCounted,
    EventKind::StockAdjusted,
    EventKind::Rebalanced,
    EventKind::OutOfStock,
    EventKind::BackInStock,
    EventKind::NegativeOnHand,
];

/// The stored code of a kind.
pub fn kind_code(kind: EventKind) -> u8 {
    KINDS
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is listed") as u8
}

/// Where an event came from: the shard record whose change emitted it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    /// The storage generation (shard layout) of the shard log.
    pub generation: u32,
    pub shard: u32,
    /// The shard-log LSN of the record; 0 for an event of a request that changed nothing
    /// (a rejected reserve), which no shard record carries.
    pub lsn: u64,
    /// The event's place among the events of its record.
    pub index: u32,
}

/// One stored event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub at: Millis,
    /// `kind_code` of the kind.
    pub kind: u8,
    pub channel: Option<String>,
    pub hold: Option<String>,
    pub order: Option<String>,
    pub product: Option<String>,
    pub location: Option<String>,
    /// The quantity the change moved; for RESERVE_REJECTED the quantity requested.
    pub quantity: i64,
    /// For RESERVE_REJECTED the ATS there was; for stock events the new on_hand; for
    /// OUT_OF_STOCK / BACK_IN_STOCK the channel's new ATS.
    pub available: i64,
    /// The position's on_hand after the change, for events that name a position.
    pub on_hand: Option<i64>,
    /// The channel's ATS at the position after the change, for events that name both.
    pub ats: Option<i64>,
    /// Whether this event speaks for the whole hold (its first line's shard); a hold on
    /// several shards has one hold event per shard, each with that shard's quantity.
    pub primary: bool,
    pub origin: Origin,
    /// HOLD_CONFIRMED: when the hold was first reserved (its time to confirmation).
    pub hold_created_at: Option<Millis>,
    /// The IQs this change turned ACTIVE or INACTIVE, at any position (at most
    /// `EVENTS_IQS_PER_EVENT_MAX`, and none if they would make the record too large).
    pub iqs: Vec<IqRecord>,
    /// How many IQ changes of this event are not in `iqs` (a count that superseded more).
    pub iqs_omitted: u32,
}

/// Whose an IQ is, relative to its event (most name the event's hold or order: stored
/// as one byte, not the ref again).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Owner {
    #[default]
    None,
    /// The event's hold.
    Hold,
    /// The event's order.
    Order,
    /// Another ref (an adjustment's; an order a count superseded a SALE of).
    Other(String),
}

/// One IQ that turned ACTIVE or INACTIVE. Refs equal to the event's are not stored again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IqRecord {
    /// `None`: the event's product.
    pub product: Option<String>,
    /// `None`: the event's location.
    pub location: Option<String>,
    pub id: u64,
    /// `IQ_KINDS` index.
    pub kind: u8,
    /// ACTIVE (added to the ledger) or INACTIVE (taken out).
    pub active: bool,
    pub quantity: i64,
    /// `None`: the event's channel; `Some("")`: none.
    pub channel: Option<String>,
    pub owner: Owner,
    pub occurred_at: Millis,
    pub expires_at: Option<Millis>,
}

impl IqRecord {
    pub fn kind(&self) -> Option<IqKind> {
        IQ_KINDS.get(self.kind as usize).copied()
    }

    /// (product, location) of the IQ, within event `e`.
    pub fn position<'a>(&'a self, e: &'a EventRecord) -> (Option<&'a str>, Option<&'a str>) {
        (
            self.product.as_deref().or(e.product.as_deref()),
            self.location.as_deref().or(e.location.as_deref()),
        )
    }

    /// The IQ's channel, within event `e`.
    pub fn channel<'a>(&'a self, e: &'a EventRecord) -> Option<&'a str> {
        match self.channel.as_deref() {
            Some("") => None,
            Some(c) => Some(c),
            None => e.channel.as_deref(),
        }
    }

    /// The IQ's owner ref (hold, order or adjustment), within event `e`.
    pub fn owner<'a>(&'a self, e: &'a EventRecord) -> Option<&'a str> {
        match &self.owner {
            Owner::None => None,
            Owner::Hold => e.hold.as_deref(),
            Owner::Order => e.order.as_deref(),
            Owner::Other(o) => Some(o),
        }
    }
}

/// Version 1's record, as it was stored.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct EventRecordV1 {
    at: Millis,
    kind: u8,
    channel: Option<String>,
    hold: Option<String>,
    order: Option<String>,
    product: Option<String>,
    location: Option<String>,
    quantity: i64,
    available: i64,
    on_hand: Option<i64>,
    ats: Option<i64>,
    primary: bool,
    origin: Origin,
}

impl From<EventRecordV1> for EventRecord {
    fn from(v: EventRecordV1) -> EventRecord {
        EventRecord {
            at: v.at,
            kind: v.kind,
            channel: v.channel,
            hold: v.hold,
            order: v.order,
            product: v.product,
            location: v.location,
            quantity: v.quantity,
            available: v.available,
            on_hand: v.on_hand,
            ats: v.ats,
            primary: v.primary,
            origin: v.origin,
            hold_created_at: None,
            iqs: Vec::new(),
            iqs_omitted: 0,
        }
    }
}

impl EventRecord {
    pub fn kind(&self) -> Option<EventKind> {
        KINDS.get(self.kind as usize).copied()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![EVENT_FORMAT_VERSION]).expect("in-memory encoding")
    }

    /// Encodes the record within `max` bytes: one too large (its IQ changes) is stored
    /// without them, counted in `iqs_omitted`, rather than refused by the log.
    pub fn encode_within(&mut self, max: usize) -> Vec<u8> {
        let bytes = self.encode();
        if bytes.len() <= max || self.iqs.is_empty() {
            return bytes;
        }
        self.iqs_omitted = self.iqs_omitted.saturating_add(self.iqs.len() as u32);
        self.iqs = Vec::new();
        self.encode()
    }

    pub fn decode(bytes: &[u8]) -> Result<EventRecord, String> {
        match bytes.split_first() {
            Some((&EVENT_FORMAT_VERSION, rest)) => {
                postcard::from_bytes(rest).map_err(|e| format!("event does not decode: {e}"))
            }
            Some((&EVENT_FORMAT_V1, rest)) => postcard::from_bytes::<EventRecordV1>(rest)
                .map(EventRecord::from)
                .map_err(|e| format!("event (version 1) does not decode: {e}")),
            Some((v, _)) => Err(format!(
                "event has format version {v}, this stockd reads {EVENT_FORMAT_VERSION}"
            )),
            None => Err("empty event record".into()),
        }
    }
}

/// The hold ref a command names: a RESERVE_REJECTED of a new hold has no interned ref
/// (nothing was created), so its record takes it from the command.
pub fn command_hold(command: &Command) -> Option<&str> {
    match command {
        Command::Reserve { request, .. }
        | Command::Reacquire { request, .. }
        | Command::ReserveTagged { request, .. } => Some(request.hold_ref.as_str()),
        _ => None,
    }
}

/// Resolves drained events against the engine they came from, right after the change
/// (before a later drain may release their refs), numbering them from `origin.index`;
/// `hold` names the hold of a rejected reserve that has none. The IQ changes of the same
/// change go with the event that caused them (`cause`). The same change replayed by
/// recovery gives the same records.
pub fn resolve(
    engine: &Engine,
    events: &[Event],
    origin: Origin,
    hold: Option<&str>,
) -> Vec<EventRecord> {
    let mut records: Vec<EventRecord> = events
        .iter()
        .enumerate()
        .map(|(i, e)| resolve_one(engine, e, origin.index + i as u32, origin, hold))
        .collect();
    for change in engine.pending_iq_changes() {
        if let Some(i) = cause(events, change) {
            if records[i].iqs.len() >= EVENTS_IQS_PER_EVENT_MAX {
                records[i].iqs_omitted += 1;
                continue;
            }
            let iq = iq_record(engine, change, &records[i]);
            records[i].iqs.push(iq);
        }
    }
    records
}

fn resolve_one(
    engine: &Engine,
    e: &Event,
    index: u32,
    origin: Origin,
    hold: Option<&str>,
) -> EventRecord {
    let name = |s: Option<stockd_domain::refs::Sym>| s.map(|s| engine.resolve(s).to_owned());
    let (product, location, channel) = (name(e.product), name(e.location), name(e.channel));
    let (on_hand, ats) = match (&product, &location) {
        (Some(p), Some(l)) => {
            let on_hand = engine.position(p, l, false).map(|v| v.on_hand);
            let ats = channel
                .as_deref()
                .and_then(|c| engine.availability(c, p, l).ok());
            (on_hand, ats)
        }
        _ => (None, None),
    };
    let hold = match (name(e.hold), e.kind) {
        (None, EventKind::ReserveRejected) => hold.map(str::to_owned),
        (h, _) => h,
    };
    let hold_created_at = match (e.kind, &hold) {
        (EventKind::HoldConfirmed, Some(h)) => engine.hold(e.at, h).map(|v| v.created_at),
        _ => None,
    };
    EventRecord {
        at: e.at,
        kind: kind_code(e.kind),
        channel,
        hold,
        order: name(e.order),
        product,
        location,
        quantity: e.quantity,
        available: e.available,
        on_hand,
        ats,
        primary: e.primary,
        origin: Origin { index, ..origin },
        hold_created_at,
        iqs: Vec::new(),
        iqs_omitted: 0,
    }
}

/// Whether an event's kind changes IQs (crossings, rebalances and rejections do not).
fn causes_iqs(kind: EventKind) -> bool {
    !matches!(
        kind,
        EventKind::OutOfStock
            | EventKind::BackInStock
            | EventKind::NegativeOnHand
            | EventKind::Rebalanced
            | EventKind::ReserveRejected
    )
}

/// The index of the event that caused `c`: the first event after it (or else the last
/// before it: an undo says so before it acts) that names its owner (hold or order) or, for
/// a stock event, its position; failing that, the nearest event that changes IQs.
fn cause(events: &[Event], c: &IqChange) -> Option<usize> {
    let names = |e: &Event| {
        let owner = c.owner.is_some() && (e.hold == c.owner || e.order == c.owner);
        let here = e.product == Some(c.product) && e.location == Some(c.location);
        let order_event = matches!(
            e.kind,
            EventKind::OrderFulfilled | EventKind::OrderCancelled
        );
        match e.kind {
            EventKind::StockCounted | EventKind::StockAdjusted => here,
            _ if order_event => owner && here,
            _ => owner,
        }
    };
    let split = events.partition_point(|e| e.seq < c.after_seq);
    let (before, after) = events.split_at(split);
    let find = |pred: &dyn Fn(&Event) -> bool| {
        after
            .iter()
            .position(|e| causes_iqs(e.kind) && pred(e))
            .map(|i| split + i)
            .or_else(|| before.iter().rposition(|e| causes_iqs(e.kind) && pred(e)))
    };
    find(&names)
        .or_else(|| find(&|_| true))
        .or_else(|| (!events.is_empty()).then_some(0))
}

fn iq_record(engine: &Engine, c: &IqChange, e: &EventRecord) -> IqRecord {
    let text = |s: stockd_domain::refs::Sym| engine.resolve(s);
    let unless_same = |s: stockd_domain::refs::Sym, same: &Option<String>| {
        let t = text(s);
        (same.as_deref() != Some(t)).then(|| t.to_owned())
    };
    let channel = match c.channel {
        Some(ch) => unless_same(ch, &e.channel),
        None if e.channel.is_some() => Some(String::new()),
        None => None,
    };
    let owner = match c.owner.map(text) {
        None => Owner::None,
        Some(o) if e.hold.as_deref() == Some(o) => Owner::Hold,
        Some(o) if e.order.as_deref() == Some(o) => Owner::Order,
        Some(o) => Owner::Other(o.to_owned()),
    };
    IqRecord {
        product: unless_same(c.product, &e.product),
        location: unless_same(c.location, &e.location),
        id: c.id,
        kind: IQ_KINDS
            .iter()
            .position(|k| *k == c.kind)
            .expect("every IQ kind is listed") as u8,
        active: c.active,
        quantity: c.quantity,
        channel,
        owner,
        occurred_at: c.occurred_at,
        expires_at: c.expires_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_other_versions() {
        let record = EventRecord {
            at: 5,
            kind: kind_code(EventKind::ReserveRejected),
            channel: Some("WEB".into()),
            quantity: 3,
            available: 1,
            origin: Origin {
                generation: 1,
                shard: 2,
                lsn: 9,
                index: 0,
            },
            ..EventRecord::default()
        };
        let bytes = record.encode();
        assert_eq!(EventRecord::decode(&bytes).unwrap(), record);
        assert_eq!(record.kind(), Some(EventKind::ReserveRejected));
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(
            EventRecord::decode(&other)
                .unwrap_err()
                .contains("version 9")
        );
    }

    #[test]
    fn a_record_too_large_keeps_its_event_without_its_iqs() {
        let mut record = EventRecord {
            iqs: vec![IqRecord::default(); 100],
            ..EventRecord::default()
        };
        let small = record.encode_within(64);
        let read = EventRecord::decode(&small).unwrap();
        assert!(small.len() <= 64 && read.iqs.is_empty());
        assert_eq!(read.iqs_omitted, 100);
    }

    #[test]
    fn version_1_records_are_still_read() {
        let v1 = EventRecordV1 {
            at: 7,
            kind: kind_code(EventKind::HoldCreated),
            channel: Some("WEB".into()),
            hold: Some("cart-1".into()),
            order: None,
            product: None,
            location: None,
            quantity: 2,
            available: 0,
            on_hand: None,
            ats: None,
            primary: true,
            origin: Origin::default(),
        };
        let bytes = postcard::to_extend(&v1, vec![1]).unwrap();
        let read = EventRecord::decode(&bytes).unwrap();
        assert_eq!(read.hold.as_deref(), Some("cart-1"));
        assert_eq!(read.quantity, 2);
        assert!(read.iqs.is_empty() && read.hold_created_at.is_none());
    }

    #[test]
    fn iq_refs_equal_to_the_events_are_not_stored_again() {
        let event = EventRecord {
            channel: Some("WEB".into()),
            hold: Some("cart-1".into()),
            product: Some("P".into()),
            location: Some("L".into()),
            ..EventRecord::default()
        };
        let iq = IqRecord {
            owner: Owner::Hold,
            channel: Some(String::new()),
            ..IqRecord::default()
        };
        assert_eq!(iq.position(&event), (Some("P"), Some("L")));
        assert_eq!(iq.owner(&event), Some("cart-1"));
        assert_eq!(iq.channel(&event), None);
    }

    #[test]
    fn every_kind_has_its_own_code() {
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(kind_code(*k) as usize, i);
        }
    }
}
