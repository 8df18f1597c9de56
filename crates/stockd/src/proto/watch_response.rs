//! `WatchEventsResponse`, written by hand instead of generated, so that the server can
//! send an event it encoded itself.
//!
//! A live watcher gets every event stockd writes, about one per Reserve. Building the
//! generated message for each (every ref copied into a `String`, encoded, then freed) was
//! most of what a watcher cost the Reserve path (issue #14). `grpc::event_wire` encodes
//! the stored event straight into bytes; this type carries them to tonic's encoder as
//! they are. Decoding (clients, tests) fills `event` as the generated type would, and a
//! response built from `event` encodes as the generated type would: the wire format is
//! the proto's either way.

use bytes::{Buf, BufMut, Bytes};
use prost::DecodeError;
use prost::encoding::{DecodeContext, WireType};

use super::inventory::v1::{Event, WatchEventsRequest};

/// One event of a watch (`inventory.v1.WatchEventsResponse`).
#[derive(Clone, PartialEq, Default, Debug)]
pub struct WatchEventsResponse {
    pub event: Option<Event>,
    /// The whole response already encoded (field 1 and the event); when set, it is what
    /// goes on the wire and `event` is not read.
    encoded: Option<Bytes>,
}

/// The tag of `event`.
const EVENT_TAG: u32 = 1;

impl WatchEventsResponse {
    /// A response with this event.
    pub fn new(event: Event) -> WatchEventsResponse {
        WatchEventsResponse {
            event: Some(event),
            encoded: None,
        }
    }

    /// A response whose encoding is `encoded`: the protobuf bytes of a
    /// `WatchEventsResponse` (field 1, the event), as `grpc::event_wire` writes them.
    pub fn encoded(encoded: Bytes) -> WatchEventsResponse {
        WatchEventsResponse {
            event: None,
            encoded: Some(encoded),
        }
    }
}

impl prost::Message for WatchEventsResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match (&self.encoded, &self.event) {
            (Some(bytes), _) => buf.put_slice(bytes),
            (None, Some(event)) => prost::encoding::message::encode(EVENT_TAG, event, buf),
            (None, None) => {}
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != EVENT_TAG {
            return prost::encoding::skip_field(wire_type, tag, buf, ctx);
        }
        self.encoded = None;
        let event = self.event.get_or_insert_with(Event::default);
        prost::encoding::message::merge(wire_type, event, buf, ctx).map_err(|mut e| {
            e.push("WatchEventsResponse", "event");
            e
        })
    }

    fn encoded_len(&self) -> usize {
        match (&self.encoded, &self.event) {
            (Some(bytes), _) => bytes.len(),
            (None, Some(event)) => prost::encoding::message::encoded_len(EVENT_TAG, event),
            (None, None) => 0,
        }
    }

    fn clear(&mut self) {
        self.event = None;
        self.encoded = None;
    }
}

/// A `WatchEventsResponse` of which only the event's sequence is decoded: prost skips the
/// rest unparsed. For consumers that only count and check the sequence (`stockd-load
/// --watch`, the events bench), so that their decoding costs little of a shared core.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SequenceOnly {
    #[prost(message, optional, tag = "1")]
    pub event: Option<EventSequence>,
}

/// The sequence of an `Event`, and nothing else of it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventSequence {
    #[prost(uint64, tag = "1")]
    pub sequence: u64,
}

/// WatchEvents on `channel`, each answer decoded as [`SequenceOnly`].
pub async fn watch_sequences(
    channel: tonic::transport::Channel,
    request: WatchEventsRequest,
) -> Result<tonic::Streaming<SequenceOnly>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/inventory.v1.EventService/WatchEvents",
    );
    let codec = tonic_prost::ProstCodec::<WatchEventsRequest, SequenceOnly>::default();
    let response = grpc
        .server_streaming(tonic::Request::new(request), path, codec)
        .await?;
    Ok(response.into_inner())
}
