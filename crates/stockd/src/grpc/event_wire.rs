//! WatchEvents' events, encoded straight from the stored record into protobuf bytes.
//!
//! A live watcher receives every event stockd writes, about one per Reserve, so what one
//! event costs to send is paid on the Reserve path's core (issue #14: Reserve with a
//! watcher ≥ 0.95× without). Building a `pb::Event` copies every ref into a `String`
//! (eight or more allocations for a Reserve's event), prost then walks it twice, and it is
//! freed. Here the record's strings are borrowed and written once into one buffer.
//!
//! The bytes are exactly those prost writes for `WatchEventsResponse` with the event
//! `events::to_proto` builds (fields in tag order, proto3 defaults left out, the same
//! timestamps and refs from `history::IqView`); the tests hold the two equal.

use bytes::Bytes;
use prost::encoding::WireType;

use super::convert::timestamp;
use super::history::IqView;
use crate::storage::events::Stored;
use stockd_domain::{EventKind, Millis};

/// The protobuf bytes of a `WatchEventsResponse` carrying `event`. They are written into
/// `scratch` (a watch keeps one, so its capacity is reused), then copied into a buffer of
/// their exact size: one allocation per event.
pub fn watch_response(event: &Stored, scratch: &mut Vec<u8>) -> Bytes {
    scratch.clear();
    nested(scratch, 1, |b| write_event(b, event));
    let bytes = Bytes::copy_from_slice(scratch);
    // An event with a thousand IQ changes is large: a watch does not keep that much.
    scratch.shrink_to(SCRATCH_KEEP);
    bytes
}

/// The most scratch capacity a watch keeps between events (a Reserve's event is ~200 B).
const SCRATCH_KEEP: usize = 4_096;

/// `inventory.v1.Event`, field by field in tag order.
fn write_event(b: &mut Vec<u8>, event: &Stored) {
    let r = &event.record;
    let rejected = r.kind() == Some(EventKind::ReserveRejected);
    uint(b, 1, event.seq);
    time(b, 2, Some(r.at));
    int(b, 3, i64::from(r.kind) + 1);
    text(b, 4, r.channel.as_deref().unwrap_or_default());
    text(b, 5, r.hold.as_deref().unwrap_or_default());
    text(b, 6, r.order.as_deref().unwrap_or_default());
    text(b, 7, r.product.as_deref().unwrap_or_default());
    text(b, 8, r.location.as_deref().unwrap_or_default());
    int(b, 9, r.quantity);
    int(b, 10, if rejected { r.quantity } else { 0 });
    int(b, 11, r.available);
    optional(b, 12, r.on_hand);
    optional(b, 13, r.ats);
    if r.primary {
        uint(b, 14, 1);
    }
    time(b, 15, r.hold_created_at);
    for iq in &r.iqs {
        nested(b, 16, |b| quantity_change(b, &IqView::of(r, iq)));
    }
    uint(b, 17, u64::from(r.iqs_omitted));
}

/// `inventory.v1.QuantityChange` with its `InventoryQuantity`.
fn quantity_change(b: &mut Vec<u8>, v: &IqView) {
    text(b, 1, v.product);
    text(b, 2, v.location);
    nested(b, 3, |b| {
        // The ref is never empty (it holds two ':'), so it is always written.
        nested(b, 1, |b| {
            b.extend_from_slice(v.product.as_bytes());
            b.push(b':');
            b.extend_from_slice(v.location.as_bytes());
            b.push(b':');
            decimal(b, v.id);
        });
        int(b, 2, i64::from(v.r#type));
        int(b, 3, v.quantity);
        int(b, 4, i64::from(v.status));
        text(b, 5, v.channel);
        text(b, 6, v.hold);
        text(b, 7, v.order);
        text(b, 8, v.adjustment);
        time(b, 9, v.created_at);
        time(b, 10, Some(v.updated_at));
        time(b, 11, v.occurred_at);
        time(b, 12, v.expires_at);
    });
}

/// A length-delimited field whose body `body` writes: the length is patched in after.
fn nested(b: &mut Vec<u8>, tag: u32, body: impl FnOnce(&mut Vec<u8>)) {
    key(b, tag, WireType::LengthDelimited);
    let at = b.len();
    b.push(0);
    body(b);
    let len = b.len() - at - 1;
    if len < 0x80 {
        b[at] = len as u8;
    } else {
        let mut prefix = [0; 10];
        let n = varint_into(&mut prefix, len as u64);
        b.splice(at..=at, prefix[..n].iter().copied());
    }
}

/// A field's key: its tag and wire type.
fn key(b: &mut Vec<u8>, tag: u32, wire_type: WireType) {
    varint(b, (u64::from(tag) << 3) | wire_type as u64);
}

/// A base-128 varint, least significant group first.
fn varint(b: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        b.push(value as u8);
    } else {
        let mut bytes = [0; 10];
        let n = varint_into(&mut bytes, value);
        b.extend_from_slice(&bytes[..n]);
    }
}

/// Writes `value` as a varint at the start of `out`; returns its length.
fn varint_into(out: &mut [u8; 10], mut value: u64) -> usize {
    let mut n = 0;
    while value >= 0x80 {
        out[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    out[n] = value as u8;
    n + 1
}

/// `value` in decimal ASCII, as `format!("{value}")` writes it.
fn decimal(b: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    b.extend_from_slice(&digits[at..]);
}

/// A uint64 / uint32 field, left out when 0 (proto3).
fn uint(b: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        key(b, tag, WireType::Varint);
        varint(b, value);
    }
}

/// An int64 / int32 / enum field, left out when 0; negatives take ten bytes, as in prost.
fn int(b: &mut Vec<u8>, tag: u32, value: i64) {
    uint(b, tag, value as u64);
}

/// A proto3 `optional int64`: written whenever it is set, 0 included.
fn optional(b: &mut Vec<u8>, tag: u32, value: Option<i64>) {
    if let Some(value) = value {
        key(b, tag, WireType::Varint);
        varint(b, value as u64);
    }
}

/// A string field, left out when empty.
fn text(b: &mut Vec<u8>, tag: u32, value: &str) {
    if !value.is_empty() {
        key(b, tag, WireType::LengthDelimited);
        varint(b, value.len() as u64);
        b.extend_from_slice(value.as_bytes());
    }
}

/// A `google.protobuf.Timestamp` field, when set (an empty one still has its key).
fn time(b: &mut Vec<u8>, tag: u32, at: Option<Millis>) {
    if let Some(at) = at {
        let t = timestamp(at);
        nested(b, tag, |b| {
            int(b, 1, t.seconds);
            int(b, 2, i64::from(t.nanos));
        });
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;
    use crate::proto::inventory::v1 as pb;
    use crate::storage::events::record::{EventRecord, IQ_KINDS, IqRecord, KINDS, Origin, Owner};

    /// What prost writes for the event `to_proto` builds: the reference.
    fn prost_bytes(event: &Stored) -> Vec<u8> {
        pb::WatchEventsResponse::new(super::super::events::to_proto(event)).encode_to_vec()
    }

    fn check(event: &Stored) {
        let ours = watch_response(event, &mut Vec::new());
        assert_eq!(ours.as_ref(), prost_bytes(event).as_slice(), "{event:?}");
        let decoded = pb::WatchEventsResponse::decode(ours).expect("decodes");
        assert_eq!(
            decoded.event,
            Some(super::super::events::to_proto(event)),
            "{event:?}"
        );
    }

    fn reserve_event() -> Stored {
        Stored {
            seq: 42,
            record: EventRecord {
                at: 1_764_000_000_123,
                kind: 0,
                channel: Some("WEB".into()),
                hold: Some("cart-1".into()),
                product: Some("sku-1".into()),
                location: Some("dc-1".into()),
                quantity: 2,
                on_hand: Some(10),
                ats: Some(8),
                primary: true,
                origin: Origin::default(),
                iqs: vec![IqRecord {
                    id: 7,
                    kind: 5,
                    active: true,
                    quantity: -2,
                    owner: Owner::Hold,
                    occurred_at: 1_764_000_000_123,
                    expires_at: Some(1_764_000_900_123),
                    ..IqRecord::default()
                }],
                ..EventRecord::default()
            },
        }
    }

    #[test]
    fn a_reserve_event_encodes_as_prost_does() {
        check(&reserve_event());
    }

    #[test]
    fn defaults_zeroes_and_negatives_encode_as_prost_does() {
        let mut e = reserve_event();
        // Everything left at its default: only the time (always set) is written.
        e.seq = 0;
        e.record = EventRecord::default();
        check(&e);
        // Set optionals at 0 are written; negative times and quantities take ten bytes.
        e.record.on_hand = Some(0);
        e.record.ats = Some(-3);
        e.record.at = -1_500;
        e.record.quantity = i64::MIN;
        e.record.available = -1;
        e.record.hold_created_at = Some(0);
        e.record.iqs_omitted = u32::MAX;
        check(&e);
    }

    #[test]
    fn long_events_take_a_longer_length_prefix() {
        let mut e = reserve_event();
        e.record.hold = Some("h".repeat(200));
        check(&e);
        let iq = e.record.iqs[0].clone();
        e.record.iqs = vec![iq; 1_000];
        assert!(watch_response(&e, &mut Vec::new()).len() > 16_384);
        check(&e);
    }

    fn text_strategy() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some(String::new())),
            "[a-zA-Z0-9:_-]{1,12}".prop_map(Some),
            "[a-z]{120,140}".prop_map(Some),
        ]
    }

    fn owner_strategy() -> impl Strategy<Value = Owner> {
        prop_oneof![
            Just(Owner::None),
            Just(Owner::Hold),
            Just(Owner::Order),
            "[a-z0-9-]{0,10}".prop_map(Owner::Other),
        ]
    }

    fn iq_strategy() -> impl Strategy<Value = IqRecord> {
        (
            (text_strategy(), text_strategy(), any::<u64>()),
            (0..IQ_KINDS.len() as u8 + 1, any::<bool>(), any::<i64>()),
            (text_strategy(), owner_strategy()),
            (any::<i64>(), proptest::option::of(any::<i64>())),
        )
            .prop_map(|(pos, what, who, times)| IqRecord {
                product: pos.0,
                location: pos.1,
                id: pos.2,
                kind: what.0,
                active: what.1,
                quantity: what.2,
                channel: who.0,
                owner: who.1,
                occurred_at: times.0,
                expires_at: times.1,
            })
    }

    fn event_strategy() -> impl Strategy<Value = Stored> {
        let refs = (
            text_strategy(),
            text_strategy(),
            text_strategy(),
            text_strategy(),
            text_strategy(),
        );
        let numbers = (
            any::<i64>(),
            any::<i64>(),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i64>()),
        );
        let rest = (
            any::<bool>(),
            proptest::option::of(any::<i64>()),
            proptest::collection::vec(iq_strategy(), 0..4),
            any::<u32>(),
        );
        (
            any::<u64>(),
            any::<i64>(),
            0..KINDS.len() as u8,
            refs,
            numbers,
            rest,
        )
            .prop_map(|(seq, at, kind, refs, numbers, rest)| Stored {
                seq,
                record: EventRecord {
                    at,
                    kind,
                    channel: refs.0,
                    hold: refs.1,
                    order: refs.2,
                    product: refs.3,
                    location: refs.4,
                    quantity: numbers.0,
                    available: numbers.1,
                    on_hand: numbers.2,
                    ats: numbers.3,
                    primary: rest.0,
                    origin: Origin::default(),
                    hold_created_at: rest.1,
                    iqs: rest.2,
                    iqs_omitted: rest.3,
                },
            })
    }

    proptest! {
        /// Any stored event, whatever its refs, numbers and IQ changes, goes on the wire
        /// as the generated message would put it.
        #[test]
        fn any_event_encodes_as_prost_does(event in event_strategy()) {
            let ours = watch_response(&event, &mut Vec::new());
            let theirs = prost_bytes(&event);
            prop_assert_eq!(ours.as_ref(), theirs.as_slice());
        }
    }
}
