//! The protobuf bytes of an event, written straight from the model.
//!
//! [`AuditEvent::encode_proto`] writes exactly what encoding `proto::AuditEvent::from(&event)`
//! with prost writes, without building that message: no copy of every string, no
//! `google.protobuf.Struct` maps of request and response data, and no second walk of them to
//! measure nested lengths. Every hop that stores or sends an event encodes it (the runtime's
//! outbox, the collector's records), so this is on the path of every audited call.
//!
//! The layout follows prost's encoding of proto3: fields in tag order; strings, numbers and
//! booleans left out when they hold their default; a set message field always written, even
//! when empty; a map as one entry message per key (key tag 1, left out when empty; value tag 2),
//! in key order; a oneof case always written, even when it holds a default.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use serde_json::Value;

use crate::event::{AuditEvent, JsonObject};
use crate::proto::{outcome_to_wire, severity_to_wire};

impl AuditEvent {
    /// Returns the protobuf encoding of `proto::AuditEvent::from(self)`, byte for byte.
    pub fn encode_proto(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(768);
        self.encode_proto_to(&mut buf);
        buf
    }

    /// Appends the protobuf encoding of `proto::AuditEvent::from(self)` to `buf`.
    pub fn encode_proto_to(&self, buf: &mut Vec<u8>) {
        let mut id = uuid::Uuid::encode_buffer();
        put_str(1, self.id.hyphenated().encode_lower(&mut id), buf);
        put_str(2, self.action.as_str(), buf);
        put_int(3, outcome_to_wire(self.outcome) as i32, buf);
        put_int(4, severity_to_wire(self.severity) as i32, buf);
        let millis = self.event_time.unix_millis();
        let (seconds, nanos) = (millis.div_euclid(1000), millis.rem_euclid(1000) * 1_000_000);
        put_len_header(5, int_len(1, seconds) + int_len(2, nanos), buf);
        put_int(1, seconds, buf);
        put_int(2, nanos, buf);
        put_bool(6, self.data_event, buf);

        let initiator = &self.initiator;
        let initiator_fields = [
            (1, initiator.id.as_str()),
            (2, initiator.name.as_str()),
            (3, initiator.type_uri.as_str()),
            (4, initiator.credential_type.as_str()),
            (5, initiator.host_address.as_str()),
            (6, initiator.host_agent.as_str()),
        ];
        put_strings(7, &initiator_fields, buf);

        let type_uri = self.target.type_uri();
        let target_fields = [(1, self.target.crn.as_str()), (2, self.target.name.as_str()), (3, &*type_uri)];
        put_strings(8, &target_fields, buf);

        let reason = &self.reason;
        let code = i64::from(reason.code);
        put_len_header(
            9,
            int_len(1, code) + str_len(2, &reason.reason_type) + str_len(3, &reason.reason_for_failure),
            buf,
        );
        put_int(1, code, buf);
        put_str(2, &reason.reason_type, buf);
        put_str(3, &reason.reason_for_failure, buf);

        for (tag, data) in [(10, &self.request_data), (11, &self.response_data)] {
            if let Some(object) = data {
                put_len_header(tag, struct_len(object), buf);
                put_struct(object, buf);
            }
        }
        put_str(12, &self.correlation_id, buf);
        put_str(13, self.log_source_crn.as_str(), buf);
        put_bool(14, self.save_service_copy, buf);
        put_str(15, &self.message, buf);
    }
}

/// Writes a message field `tag` whose fields are all strings, given with their tags.
fn put_strings(tag: u32, fields: &[(u32, &str)], buf: &mut Vec<u8>) {
    put_len_header(tag, fields.iter().map(|(tag, value)| str_len(*tag, value)).sum(), buf);
    for (tag, value) in fields {
        put_str(*tag, value, buf);
    }
}

/// Writes the key and length of a length-delimited field (a string, bytes or a message).
fn put_len_header(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn str_len(tag: u32, value: &str) -> usize {
    if value.is_empty() { 0 } else { key_len(tag) + encoded_len_varint(value.len() as u64) + value.len() }
}

fn put_str(tag: u32, value: &str, buf: &mut Vec<u8>) {
    if !value.is_empty() {
        put_len_header(tag, value.len(), buf);
        buf.extend_from_slice(value.as_bytes());
    }
}

/// The varint of a signed integer as protobuf writes `int32` and `int64`: negative values
/// sign-extended to 64 bits.
fn varint_of(value: impl Into<i64>) -> u64 {
    value.into() as u64
}

fn int_len(tag: u32, value: impl Into<i64>) -> usize {
    let value = varint_of(value);
    if value == 0 { 0 } else { key_len(tag) + encoded_len_varint(value) }
}

fn put_int(tag: u32, value: impl Into<i64>, buf: &mut Vec<u8>) {
    let value = varint_of(value);
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

fn put_bool(tag: u32, value: bool, buf: &mut Vec<u8>) {
    if value {
        encode_key(tag, WireType::Varint, buf);
        buf.push(1);
    }
}

/// Returns the keys of `object` in byte order, as a protobuf map (a `BTreeMap`) holds them,
/// whatever order the JSON map keeps.
fn sorted_keys(object: &JsonObject) -> Vec<&String> {
    let mut keys: Vec<&String> = object.keys().collect();
    if !keys.is_sorted() {
        keys.sort();
    }
    keys
}

/// Length of a `google.protobuf.Struct` holding `object`, without its own header.
fn struct_len(object: &JsonObject) -> usize {
    object
        .iter()
        .map(|(key, value)| {
            let entry = entry_len(key, value);
            key_len(1) + encoded_len_varint(entry as u64) + entry
        })
        .sum()
}

/// Length of one map entry: its key (tag 1, left out when empty) and its value (tag 2).
fn entry_len(key: &str, value: &Value) -> usize {
    let value = value_len(value);
    str_len(1, key) + key_len(2) + encoded_len_varint(value as u64) + value
}

fn put_struct(object: &JsonObject, buf: &mut Vec<u8>) {
    for key in sorted_keys(object) {
        let value = &object[key.as_str()];
        put_len_header(1, entry_len(key, value), buf);
        put_str(1, key, buf);
        put_len_header(2, value_len(value), buf);
        put_value(value, buf);
    }
}

/// Length of a `google.protobuf.Value` holding `value`, without its own header. Its `kind` is a
/// oneof, whose case is written even when it holds a default.
fn value_len(value: &Value) -> usize {
    match value {
        Value::Null => key_len(1) + 1,
        Value::Number(_) => key_len(2) + 8,
        Value::String(text) => key_len(3) + encoded_len_varint(text.len() as u64) + text.len(),
        Value::Bool(_) => key_len(4) + 1,
        Value::Object(object) => {
            let len = struct_len(object);
            key_len(5) + encoded_len_varint(len as u64) + len
        }
        Value::Array(items) => {
            let len = list_len(items);
            key_len(6) + encoded_len_varint(len as u64) + len
        }
    }
}

/// Length of a `google.protobuf.ListValue`: every item, as a repeated message field (tag 1).
fn list_len(items: &[Value]) -> usize {
    items
        .iter()
        .map(|item| {
            let len = value_len(item);
            key_len(1) + encoded_len_varint(len as u64) + len
        })
        .sum()
}

fn put_value(value: &Value, buf: &mut Vec<u8>) {
    match value {
        Value::Null => {
            encode_key(1, WireType::Varint, buf);
            buf.push(0);
        }
        Value::Number(number) => {
            encode_key(2, WireType::SixtyFourBit, buf);
            // As `Struct` requires, every number is a double (serde_json numbers always have one).
            buf.extend_from_slice(&number.as_f64().unwrap_or_default().to_le_bytes());
        }
        Value::String(text) => {
            put_len_header(3, text.len(), buf);
            buf.extend_from_slice(text.as_bytes());
        }
        Value::Bool(flag) => {
            encode_key(4, WireType::Varint, buf);
            buf.push(u8::from(*flag));
        }
        Value::Object(object) => {
            put_len_header(5, struct_len(object), buf);
            put_struct(object, buf);
        }
        Value::Array(items) => {
            put_len_header(6, list_len(items), buf);
            for item in items {
                put_len_header(1, value_len(item), buf);
                put_value(item, buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use qtrail_proto::qtrail::audit::v1 as proto;
    use serde_json::json;

    use super::*;
    use crate::{Action, Crn, EventBuilder, Initiator, Location};

    fn event(request: Value, response: Option<Value>, failure: bool) -> AuditEvent {
        let location: Location = "us-east".parse().unwrap();
        let source = Crn::instance(&location, "acc-1", "inst-1").unwrap();
        let initiator = Initiator {
            id: "IBMid-1".into(),
            name: "alice@example.com".into(),
            type_uri: crate::event::INITIATOR_USER.into(),
            credential_type: String::new(),
            host_address: "2001:db8::1".into(),
            host_agent: "agent/1.0".into(),
        };
        let mut builder = EventBuilder::new(Action::JobCancel, source, initiator)
            .target("j-1", "")
            .request_data(request.as_object().cloned().unwrap());
        if let Some(response) = response {
            builder = builder.response_data(response.as_object().cloned().unwrap());
        }
        let builder = if failure { builder.failure(409, "already done") } else { builder.status(200) };
        builder.build().unwrap()
    }

    #[test]
    fn the_bytes_are_prost_s_bytes() {
        let nested = json!({
            "": "empty key",
            "shots": 1024,
            "ratio": -0.25,
            "big": 9_007_199_254_740_993_u64,
            "none": null,
            "flags": [true, false, null, [], {}, [1, "two", {"three": 3}]],
            "object": {"b": {"c": []}, "a": "", "z": {"": null}},
            "text": "é\u{1b}\"quoted\"",
            "long": "x".repeat(300),
        });
        let cases = [
            event(json!({}), None, false),
            event(json!({"jobId": "j-1"}), Some(json!({"status": "CANCELLED"})), false),
            event(nested.clone(), Some(nested), true),
            event(json!({"many": (0..200).map(|i| json!({"i": i})).collect::<Vec<_>>()}), Some(json!({})), true),
        ];
        for event in cases {
            assert_eq!(event.encode_proto(), proto::AuditEvent::from(&event).encode_to_vec(), "{event:?}");
        }
    }

    #[test]
    fn times_within_the_first_second_and_default_fields_encode_like_prost() {
        let mut event = event(json!({"a": 1}), None, false);
        event.event_time = crate::EventTime::from_unix_millis(999).unwrap();
        event.data_event = false;
        event.save_service_copy = false;
        event.correlation_id.clear();
        assert_eq!(event.encode_proto(), proto::AuditEvent::from(&event).encode_to_vec());
        event.event_time = crate::EventTime::from_unix_millis(0).unwrap();
        assert_eq!(event.encode_proto(), proto::AuditEvent::from(&event).encode_to_vec());
    }
}
