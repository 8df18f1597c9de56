//! One event as the event log stores it: the domain's event with its refs resolved, the
//! position's on_hand / ATS after the change, and where it came from (shard, shard LSN).
//!
//! The sequence number is not in the record: it is the event log's LSN (the frame's), so
//! it is dense by construction. `origin` lets recovery tell which shard records already
//! have their events in the event log (`storage::events::open`).

use serde::{Deserialize, Serialize};

use stockd_domain::{Command, Engine, Event, EventKind, Millis};

/// Version of the event payload. Bump it with any change to `EventRecord`.
pub const EVENT_FORMAT_VERSION: u8 = 1;

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
}

impl EventRecord {
    pub fn kind(&self) -> Option<EventKind> {
        KINDS.get(self.kind as usize).copied()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![EVENT_FORMAT_VERSION]).expect("in-memory encoding")
    }

    pub fn decode(bytes: &[u8]) -> Result<EventRecord, String> {
        match bytes.split_first() {
            Some((&EVENT_FORMAT_VERSION, rest)) => {
                postcard::from_bytes(rest).map_err(|e| format!("event does not decode: {e}"))
            }
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
/// `hold` names the hold of a rejected reserve that has none. The same change replayed by
/// recovery gives the same records.
pub fn resolve(
    engine: &Engine,
    events: &[Event],
    origin: Origin,
    hold: Option<&str>,
) -> Vec<EventRecord> {
    let name = |s: Option<stockd_domain::refs::Sym>| s.map(|s| engine.resolve(s).to_owned());
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
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
            EventRecord {
                at: e.at,
                kind: kind_code(e.kind),
                channel,
                hold: match (name(e.hold), e.kind) {
                    (None, EventKind::ReserveRejected) => hold.map(str::to_owned),
                    (h, _) => h,
                },
                order: name(e.order),
                product,
                location,
                quantity: e.quantity,
                available: e.available,
                on_hand,
                ats,
                primary: e.primary,
                origin: Origin {
                    index: origin.index + i as u32,
                    ..origin
                },
            }
        })
        .collect()
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
    fn every_kind_has_its_own_code() {
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(kind_code(*k) as usize, i);
        }
    }
}
