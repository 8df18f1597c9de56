//! The protobuf JSON mapping of the request messages `stockd-load` can send.
//!
//! Like `protojson` (which ghz uses), a field may be named by its JSON name
//! (`channelRef`) or its proto name (`channel_ref`); 64-bit integers may be JSON numbers
//! or decimal strings; `null` means the field's default; an unknown field is an error.

use prost::Message;
use serde_json::{Map, Value};
use stockd::proto::inventory::v1 as pb;
use tonic_health::pb::HealthCheckRequest;

/// The request message types with a JSON mapping here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    GetAvailability,
    Reserve,
    ConfirmHold,
    ReleaseHold,
    GetHold,
    FulfilOrder,
    CancelOrder,
    HealthCheck,
}

/// Parses `value` as the given message type and encodes it.
pub fn encode(input: Input, value: &Value) -> Result<Vec<u8>, String> {
    Ok(match input {
        Input::GetAvailability => get_availability(value)?.encode_to_vec(),
        Input::Reserve => reserve(value)?.encode_to_vec(),
        Input::ConfirmHold => confirm_hold(value)?.encode_to_vec(),
        Input::ReleaseHold => hold_ref_only(value, "inventory.v1.ReleaseHoldRequest")
            .map(|hold_ref| pb::ReleaseHoldRequest { hold_ref })?
            .encode_to_vec(),
        Input::GetHold => hold_ref_only(value, "inventory.v1.GetHoldRequest")
            .map(|hold_ref| pb::GetHoldRequest { hold_ref })?
            .encode_to_vec(),
        Input::FulfilOrder => fulfil_order(value)?.encode_to_vec(),
        Input::CancelOrder => cancel_order(value)?.encode_to_vec(),
        Input::HealthCheck => health_check(value)?.encode_to_vec(),
    })
}

/// A JSON object being read as one message, with the path used in error messages.
struct Obj<'a> {
    map: Option<&'a Map<String, Value>>,
    path: String,
}

impl<'a> Obj<'a> {
    /// `value` must be an object (or null, the empty message) with only `fields`, each
    /// given as (JSON name, proto name).
    fn new(
        value: &'a Value,
        path: String,
        type_name: &str,
        fields: &[(&str, &str)],
    ) -> Result<Obj<'a>, String> {
        let map = match value {
            Value::Null => None,
            Value::Object(m) => Some(m),
            other => {
                return Err(format!(
                    "{}: {type_name} must be a JSON object, got {}",
                    shown(&path),
                    kind(other)
                ));
            }
        };
        if let Some(m) = map {
            for key in m.keys() {
                if !fields
                    .iter()
                    .any(|(json, proto)| key == json || key == proto)
                {
                    let known: Vec<&str> = fields.iter().map(|(j, _)| *j).collect();
                    return Err(format!(
                        "{}: unknown field {key:?} in {type_name} (fields: {})",
                        shown(&path),
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(Obj { map, path })
    }

    fn get(&self, json: &str, proto: &str) -> (Option<&'a Value>, String) {
        let value = self
            .map
            .and_then(|m| m.get(json).or_else(|| m.get(proto)))
            .filter(|v| !v.is_null());
        let path = if self.path.is_empty() {
            json.to_string()
        } else {
            format!("{}.{json}", self.path)
        };
        (value, path)
    }

    fn string(&self, json: &str, proto: &str) -> Result<String, String> {
        match self.get(json, proto) {
            (None, _) => Ok(String::new()),
            (Some(Value::String(s)), _) => Ok(s.clone()),
            (Some(other), path) => Err(format!("{path}: expected a string, got {}", kind(other))),
        }
    }

    fn int64(&self, json: &str, proto: &str) -> Result<i64, String> {
        match self.get(json, proto) {
            (None, _) => Ok(0),
            (Some(Value::Number(n)), path) => n
                .as_i64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                        .map(|f| f as i64)
                })
                .ok_or_else(|| format!("{path}: {n} is not a 64-bit integer")),
            (Some(Value::String(s)), path) => s
                .trim()
                .parse()
                .map_err(|_| format!("{path}: {s:?} is not a 64-bit integer")),
            (Some(other), path) => Err(format!("{path}: expected an integer, got {}", kind(other))),
        }
    }

    fn boolean(&self, json: &str, proto: &str) -> Result<bool, String> {
        match self.get(json, proto) {
            (None, _) => Ok(false),
            (Some(Value::Bool(b)), _) => Ok(*b),
            (Some(other), path) => Err(format!(
                "{path}: expected true or false, got {}",
                kind(other)
            )),
        }
    }

    fn list<T>(
        &self,
        json: &str,
        proto: &str,
        item: impl Fn(&Value, String) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        match self.get(json, proto) {
            (None, _) => Ok(Vec::new()),
            (Some(Value::Array(items)), path) => items
                .iter()
                .enumerate()
                .map(|(i, v)| item(v, format!("{path}[{i}]")))
                .collect(),
            (Some(other), path) => Err(format!("{path}: expected an array, got {}", kind(other))),
        }
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() { "request" } else { path }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const PRODUCT: (&str, &str) = ("productRef", "product_ref");
const LOCATION: (&str, &str) = ("locationRef", "location_ref");
const CHANNEL: (&str, &str) = ("channelRef", "channel_ref");
const HOLD: (&str, &str) = ("holdRef", "hold_ref");
const ORDER: (&str, &str) = ("orderRef", "order_ref");
const QUANTITY: (&str, &str) = ("quantity", "quantity");

pub fn get_availability(v: &Value) -> Result<pb::GetAvailabilityRequest, String> {
    let o = Obj::new(
        v,
        String::new(),
        "inventory.v1.GetAvailabilityRequest",
        &[CHANNEL, ("keys", "keys")],
    )?;
    Ok(pb::GetAvailabilityRequest {
        channel_ref: o.string(CHANNEL.0, CHANNEL.1)?,
        keys: o.list("keys", "keys", |v, path| {
            let k = Obj::new(v, path, "inventory.v1.PositionKey", &[PRODUCT, LOCATION])?;
            Ok(pb::PositionKey {
                product_ref: k.string(PRODUCT.0, PRODUCT.1)?,
                location_ref: k.string(LOCATION.0, LOCATION.1)?,
            })
        })?,
    })
}

pub fn reserve(v: &Value) -> Result<pb::ReserveRequest, String> {
    let o = Obj::new(
        v,
        String::new(),
        "inventory.v1.ReserveRequest",
        &[
            HOLD,
            CHANNEL,
            ("lines", "lines"),
            ("ttlSeconds", "ttl_seconds"),
            ("allowPartial", "allow_partial"),
        ],
    )?;
    Ok(pb::ReserveRequest {
        hold_ref: o.string(HOLD.0, HOLD.1)?,
        channel_ref: o.string(CHANNEL.0, CHANNEL.1)?,
        lines: o.list("lines", "lines", |v, path| {
            let l = Obj::new(
                v,
                path,
                "inventory.v1.ReserveLine",
                &[PRODUCT, LOCATION, QUANTITY, ("category", "category")],
            )?;
            Ok(pb::ReserveLine {
                product_ref: l.string(PRODUCT.0, PRODUCT.1)?,
                location_ref: l.string(LOCATION.0, LOCATION.1)?,
                quantity: l.int64(QUANTITY.0, QUANTITY.1)?,
                category: l.string("category", "category")?,
            })
        })?,
        ttl_seconds: o.int64("ttlSeconds", "ttl_seconds")?,
        allow_partial: o.boolean("allowPartial", "allow_partial")?,
    })
}

pub fn confirm_hold(v: &Value) -> Result<pb::ConfirmHoldRequest, String> {
    let o = Obj::new(
        v,
        String::new(),
        "inventory.v1.ConfirmHoldRequest",
        &[HOLD, ORDER, ("reacquire", "reacquire")],
    )?;
    Ok(pb::ConfirmHoldRequest {
        hold_ref: o.string(HOLD.0, HOLD.1)?,
        order_ref: o.string(ORDER.0, ORDER.1)?,
        reacquire: o.boolean("reacquire", "reacquire")?,
    })
}

fn hold_ref_only(v: &Value, type_name: &str) -> Result<String, String> {
    Obj::new(v, String::new(), type_name, &[HOLD])?.string(HOLD.0, HOLD.1)
}

fn order_lines(o: &Obj<'_>) -> Result<Vec<pb::OrderLine>, String> {
    o.list("lines", "lines", |v, path| {
        let l = Obj::new(
            v,
            path,
            "inventory.v1.OrderLine",
            &[PRODUCT, LOCATION, QUANTITY],
        )?;
        Ok(pb::OrderLine {
            product_ref: l.string(PRODUCT.0, PRODUCT.1)?,
            location_ref: l.string(LOCATION.0, LOCATION.1)?,
            quantity: l.int64(QUANTITY.0, QUANTITY.1)?,
        })
    })
}

pub fn fulfil_order(v: &Value) -> Result<pb::FulfilOrderRequest, String> {
    let o = Obj::new(
        v,
        String::new(),
        "inventory.v1.FulfilOrderRequest",
        &[ORDER, ("lines", "lines")],
    )?;
    Ok(pb::FulfilOrderRequest {
        order_ref: o.string(ORDER.0, ORDER.1)?,
        lines: order_lines(&o)?,
    })
}

pub fn cancel_order(v: &Value) -> Result<pb::CancelOrderRequest, String> {
    let o = Obj::new(
        v,
        String::new(),
        "inventory.v1.CancelOrderRequest",
        &[ORDER],
    )?;
    Ok(pb::CancelOrderRequest {
        order_ref: o.string(ORDER.0, ORDER.1)?,
    })
}

pub fn health_check(v: &Value) -> Result<HealthCheckRequest, String> {
    let o = Obj::new(
        v,
        String::new(),
        "grpc.health.v1.HealthCheckRequest",
        &[("service", "service")],
    )?;
    Ok(HealthCheckRequest {
        service: o.string("service", "service")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reserve_accepts_json_and_proto_names() {
        let r = reserve(&json!({
            "holdRef": "h1",
            "channel_ref": "web",
            "lines": [{"productRef": "p1", "location_ref": "wh", "quantity": "3"}],
            "ttlSeconds": 60,
            "allowPartial": true
        }))
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
        assert_eq!(health_check(&json!({})).unwrap().service, "");
        assert_eq!(health_check(&Value::Null).unwrap().service, "");
        let g = get_availability(&json!({"channelRef": null, "keys": null})).unwrap();
        assert!(g.keys.is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let e = reserve(&json!({"holdRef": "h", "lines": [{"quantity": 1.5}]})).unwrap_err();
        assert!(e.contains("lines[0].quantity"), "{e}");
        let e = reserve(&json!({"hold": "h"})).unwrap_err();
        assert!(e.contains("unknown field \"hold\""), "{e}");
        let e = get_availability(&json!({"keys": [{"productRef": 5}]})).unwrap_err();
        assert!(e.contains("keys[0].productRef"), "{e}");
        assert!(confirm_hold(&json!([1])).is_err());
    }

    #[test]
    fn encodes_every_input() {
        for input in [
            Input::GetAvailability,
            Input::Reserve,
            Input::ConfirmHold,
            Input::ReleaseHold,
            Input::GetHold,
            Input::FulfilOrder,
            Input::CancelOrder,
            Input::HealthCheck,
        ] {
            encode(input, &json!({})).unwrap();
        }
        let bytes = encode(Input::ReleaseHold, &json!({"holdRef": "abc"})).unwrap();
        assert_eq!(
            pb::ReleaseHoldRequest::decode(bytes.as_slice())
                .unwrap()
                .hold_ref,
            "abc"
        );
    }
}
