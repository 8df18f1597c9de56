//! The API as data: a prost-reflect `DescriptorPool` of the inventory API and
//! grpc.health.v1, the methods `--call` may name, and `-d` JSON turned into protobuf.
//!
//! `-d` follows the protobuf JSON mapping (as ghz's `protojson` does): a field may be named
//! by its JSON name (`channelRef`) or its proto name (`channel_ref`), 64-bit integers may
//! be numbers or decimal strings, `null` means the field's default, and an unknown field
//! is an error. Errors name the field by its path (`lines[0].quantity`).

use std::sync::LazyLock;

use prost::Message as _;
use prost::bytes::Bytes;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor};
use serde_path_to_error::{Path, Segment, Track};
use tonic::codegen::http::uri::PathAndQuery;

use crate::template::MethodNames;

/// The services whose unary methods `--call` may name: the storefront API and health.
/// AdminService is left out on purpose: it changes stock and configuration, which the
/// scenarios do themselves, once, when they seed.
const CALLABLE_SERVICES: [&str; 2] = ["inventory.v1.InventoryService", "grpc.health.v1.Health"];

/// The methods the scenarios call, resolved once when the catalog is built.
const GET_AVAILABILITY: &str = "inventory.v1.InventoryService.GetAvailability";
const RESERVE: &str = "inventory.v1.InventoryService.Reserve";
const CONFIRM_HOLD: &str = "inventory.v1.InventoryService.ConfirmHold";
const RELEASE_HOLD: &str = "inventory.v1.InventoryService.ReleaseHold";
const HEALTH_CHECK: &str = "grpc.health.v1.Health.Check";

/// A callable unary method. It indexes the catalog, so it is `Copy` and its index is
/// the slot of its statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(usize);

/// One callable method with what each call needs, computed once.
struct Entry {
    descriptor: MethodDescriptor,
    /// `/inventory.v1.InventoryService/Reserve`
    path: PathAndQuery,
    names: MethodNames,
}

/// Every callable method, in the order of `CALLABLE_SERVICES` and then of the proto.
struct Catalog {
    entries: Vec<Entry>,
    known: Known,
}

/// The methods the scenarios call.
struct Known {
    get_availability: Method,
    reserve: Method,
    confirm_hold: Method,
    release_hold: Method,
    health_check: Method,
}

/// Built on first use from descriptor sets compiled into the binary: failing to decode
/// them is a build defect, not an operating error.
static CATALOG: LazyLock<Catalog> = LazyLock::new(Catalog::build);

impl Catalog {
    fn build() -> Catalog {
        let mut pool = DescriptorPool::new();
        pool.decode_file_descriptor_set(stockd::proto::FILE_DESCRIPTOR_SET)
            .expect("the inventory API's descriptor set decodes");
        pool.decode_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .expect("grpc.health.v1's descriptor set decodes");
        let entries: Vec<Entry> = CALLABLE_SERVICES
            .iter()
            .map(|name| {
                pool.get_service_by_name(name)
                    .unwrap_or_else(|| panic!("{name} is in the descriptor pool"))
            })
            .flat_map(|service| service.methods().collect::<Vec<_>>())
            .filter(|m| !m.is_client_streaming() && !m.is_server_streaming())
            .map(Entry::new)
            .collect();
        let find = |full_name: &str| {
            entries
                .iter()
                .position(|e| e.names.fully_qualified == full_name)
                .map(Method)
                .unwrap_or_else(|| panic!("{full_name} is a callable method"))
        };
        let known = Known {
            get_availability: find(GET_AVAILABILITY),
            reserve: find(RESERVE),
            confirm_hold: find(CONFIRM_HOLD),
            release_hold: find(RELEASE_HOLD),
            health_check: find(HEALTH_CHECK),
        };
        Catalog { entries, known }
    }
}

impl Entry {
    fn new(descriptor: MethodDescriptor) -> Entry {
        let service = descriptor.parent_service();
        let path = format!("/{}/{}", service.full_name(), descriptor.name());
        let names = MethodNames {
            fully_qualified: descriptor.full_name().to_string(),
            method: descriptor.name().to_string(),
            service: service.name().to_string(),
            input: descriptor.input().full_name().to_string(),
            output: descriptor.output().full_name().to_string(),
        };
        Entry {
            path: PathAndQuery::try_from(path).expect("a method path is a valid URI path"),
            descriptor,
            names,
        }
    }
}

impl Method {
    pub fn get_availability() -> Method {
        CATALOG.known.get_availability
    }

    pub fn reserve() -> Method {
        CATALOG.known.reserve
    }

    pub fn confirm_hold() -> Method {
        CATALOG.known.confirm_hold
    }

    pub fn release_hold() -> Method {
        CATALOG.known.release_hold
    }

    pub fn health_check() -> Method {
        CATALOG.known.health_check
    }

    /// How many methods are callable: the number of statistics slots.
    pub fn count() -> usize {
        CATALOG.entries.len()
    }

    /// Every callable method, in catalog order.
    pub fn all() -> impl Iterator<Item = Method> {
        (0..Method::count()).map(Method)
    }

    /// The index of this method's statistics.
    pub fn slot(self) -> usize {
        self.0
    }

    fn entry(self) -> &'static Entry {
        &CATALOG.entries[self.0]
    }

    /// The method's own name (`Reserve`, `Check`).
    pub fn name(self) -> &'static str {
        &self.entry().names.method
    }

    /// The HTTP/2 path: `/inventory.v1.InventoryService/Reserve`.
    pub fn path(self) -> PathAndQuery {
        self.entry().path.clone()
    }

    /// The names ghz's templates can refer to.
    pub fn names(self) -> &'static MethodNames {
        &self.entry().names
    }

    /// Parses ghz's `--call`: `package.Service.Method` or `package.Service/Method`
    /// (a leading `/` is accepted too).
    pub fn parse(call: &str) -> Result<Method, String> {
        let call = call.trim().trim_start_matches('/');
        let (service, method) = call
            .rsplit_once('/')
            .or_else(|| call.rsplit_once('.'))
            .ok_or_else(|| format!("--call {call:?}: expected package.Service.Method"))?;
        let full_name = format!("{service}.{method}");
        Method::all()
            .find(|m| m.names().fully_qualified == full_name)
            .ok_or_else(|| {
                let known: Vec<&str> = Method::all()
                    .map(|m| m.names().fully_qualified.as_str())
                    .collect();
                format!(
                    "--call {call:?}: unknown method; stockd-load can call:\n  {}",
                    known.join("\n  ")
                )
            })
    }

    /// Parses `text` (the protobuf JSON mapping) as this method's request and encodes it.
    pub fn encode_json(self, text: &str) -> Result<Bytes, String> {
        let input = self.entry().descriptor.input();
        // `null` is the empty message, as it is for any field.
        if text.trim() == "null" {
            return Ok(Bytes::new());
        }
        let mut json = serde_json::Deserializer::from_str(text);
        let mut track = Track::new();
        let message = DynamicMessage::deserialize(
            input.clone(),
            serde_path_to_error::Deserializer::new(&mut json, &mut track),
        )
        .map_err(|e| explain(&input, &track.path(), &e))?;
        json.end()
            .map_err(|e| format!("-d is not valid JSON: {e}"))?;
        Ok(Bytes::from(message.encode_to_vec()))
    }
}

/// An error message that names the field at `path` (or the message type at the top),
/// and, for an unknown field, the fields that message has.
fn explain(input: &MessageDescriptor, path: &Path, error: &serde_json::Error) -> String {
    if error.is_syntax() || error.is_eof() {
        return format!("-d is not valid JSON: {error}");
    }
    let at = if path.iter().next().is_some() {
        path.to_string()
    } else {
        input.full_name().to_string()
    };
    let mut text = format!("{at}: {error}");
    if error.to_string().starts_with("unrecognized field name")
        && let Some(message) = message_at(input, path)
    {
        let fields: Vec<String> = message
            .fields()
            .map(|f| f.json_name().to_string())
            .collect();
        let of = if message == *input {
            String::new()
        } else {
            format!(" of {}", message.full_name())
        };
        text.push_str(&format!(" (fields{of}: {})", fields.join(", ")));
    }
    text
}

/// The message type at `path` below `root`: the message whose unknown field was named.
fn message_at(root: &MessageDescriptor, path: &Path) -> Option<MessageDescriptor> {
    let mut message = root.clone();
    for segment in path {
        match segment {
            Segment::Map { key } => {
                let field = message
                    .get_field_by_json_name(key)
                    .or_else(|| message.get_field_by_name(key))?;
                match field.kind() {
                    Kind::Message(m) => message = m,
                    _ => return None,
                }
            }
            // An element of a repeated field: its kind is the field's.
            Segment::Seq { .. } => {}
            _ => return None,
        }
    }
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockd::proto::inventory::v1 as pb;

    fn reserve(text: &str) -> Result<pb::ReserveRequest, String> {
        let bytes = Method::reserve().encode_json(text)?;
        Ok(pb::ReserveRequest::decode(bytes).unwrap())
    }

    #[test]
    fn call_names() {
        assert_eq!(
            Method::parse("inventory.v1.InventoryService.Reserve").unwrap(),
            Method::reserve()
        );
        assert_eq!(
            Method::parse("inventory.v1.InventoryService/GetAvailability").unwrap(),
            Method::get_availability()
        );
        assert_eq!(
            Method::parse("/grpc.health.v1.Health/Check").unwrap(),
            Method::health_check()
        );
        assert!(Method::parse("inventory.v1.InventoryService.Nope").is_err());
        assert!(Method::parse("inventory.v1.AdminService.SetStock").is_err());
        assert!(Method::parse("grpc.health.v1.Health.Watch").is_err());
        assert!(Method::parse("Reserve").is_err());
        let names: Vec<&str> = Method::all().map(Method::name).collect();
        assert_eq!(
            names,
            [
                "GetAvailability",
                "Reserve",
                "ConfirmHold",
                "ReleaseHold",
                "GetHold",
                "ListHolds",
                "GetOrder",
                "FulfilOrder",
                "CancelOrder",
                "GetNetworkAvailability",
                "GetFulfilmentOptions",
                "Check"
            ]
        );
        for m in Method::all() {
            let n = m.names();
            let service = n.fully_qualified.rsplit_once('.').unwrap().0;
            assert_eq!(m.path().as_str(), format!("/{service}/{}", m.name()));
        }
        let n = Method::reserve().names();
        assert_eq!(n.fully_qualified, "inventory.v1.InventoryService.Reserve");
        assert_eq!(n.service, "InventoryService");
        assert_eq!(n.input, "inventory.v1.ReserveRequest");
        assert_eq!(n.output, "inventory.v1.ReserveResponse");
        assert_eq!(
            Method::health_check().names().input,
            "grpc.health.v1.HealthCheckRequest"
        );
    }

    #[test]
    fn reserve_accepts_json_and_proto_names() {
        let r = reserve(
            r#"{"holdRef": "h1", "channel_ref": "web", "ttlSeconds": 60, "allowPartial": true,
                "lines": [{"productRef": "p1", "location_ref": "wh", "quantity": "3"}]}"#,
        )
        .unwrap();
        assert_eq!(r.hold_ref, "h1");
        assert_eq!(r.channel_ref, "web");
        assert_eq!(r.lines.len(), 1);
        assert_eq!(r.lines[0].quantity, 3);
        assert_eq!(r.lines[0].location_ref, "wh");
        assert_eq!(r.ttl_seconds, 60);
        assert!(r.allow_partial);
    }

    #[test]
    fn nulls_and_empty_objects_are_defaults() {
        let check = Method::health_check();
        assert!(check.encode_json("{}").unwrap().is_empty());
        assert!(check.encode_json("null").unwrap().is_empty());
        let g = Method::get_availability()
            .encode_json(r#"{"channelRef": null, "keys": null}"#)
            .unwrap();
        assert!(
            pb::GetAvailabilityRequest::decode(g)
                .unwrap()
                .keys
                .is_empty()
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = reserve(r#"{"holdRef": "h", "lines": [{"quantity": 1.5}]}"#).unwrap_err();
        assert!(e.contains("lines[0].quantity"), "{e}");
        let e = reserve(r#"{"hold": "h"}"#).unwrap_err();
        assert!(e.contains("unrecognized field name 'hold'"), "{e}");
        assert!(e.contains("holdRef, channelRef"), "{e}");
        let e = reserve(r#"{"lines": [{"sku": "x"}]}"#).unwrap_err();
        assert!(e.contains("'sku'"), "{e}");
        assert!(e.contains("inventory.v1.ReserveLine"), "{e}");
        let e = Method::get_availability()
            .encode_json(r#"{"keys": [{"productRef": 5}]}"#)
            .unwrap_err();
        assert!(e.contains("keys[0].productRef"), "{e}");
        assert!(Method::confirm_hold().encode_json("[1]").is_err());
        let e = reserve(r#"{"holdRef": "h""#).unwrap_err();
        assert!(e.starts_with("-d is not valid JSON"), "{e}");
        assert!(reserve(r#"{} {}"#).is_err());
    }

    #[test]
    fn encodes_every_input() {
        for m in Method::all() {
            m.encode_json("{}").unwrap();
        }
        let bytes = Method::release_hold()
            .encode_json(r#"{"holdRef": "abc"}"#)
            .unwrap();
        assert_eq!(
            pb::ReleaseHoldRequest::decode(bytes).unwrap().hold_ref,
            "abc"
        );
    }

    /// `rpc::ReserveOutcomeOnly` reads field 1 of ReserveResponse as the outcome.
    #[test]
    fn reserve_outcome_is_field_1() {
        let output = Method::reserve().entry().descriptor.output();
        let field = output.get_field_by_name("outcome").unwrap();
        assert_eq!(field.number(), 1);
        assert!(matches!(field.kind(), Kind::Enum(_)));
    }
}
