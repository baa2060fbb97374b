//! Decoding an event from its protobuf bytes, with request and response data read straight
//! into JSON objects.
//!
//! prost decodes a `google.protobuf.Struct` into a map of boxed `Value`s that validation would
//! only convert into a JSON object and drop: for every event a collector receives, that is most
//! of the allocations of decoding it. [`ValidEvent::decode`] decodes the event's other fields
//! with prost (`shallow::AuditEvent`) and its two `Struct`s directly into [`JsonObject`]s, then escapes
//! and validates as `AuditEvent::try_from(proto::AuditEvent)` does, to the same event.
//!
//! Fields that occur more than once, which no encoder writes but the protobuf rules allow, read
//! as prost reads them: occurrences of a message field merge (request data given twice is one
//! `Struct` with the entries of both; a `Value` holding a `Struct` or `ListValue` twice merges
//! them), a later scalar or another kind of a `Value` replaces the earlier, and a duplicate map
//! key keeps its last entry. So the event stored is the one every other reader sees in the
//! bytes sent.

use prost::Message as _;
use prost::bytes::Buf as _;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use qtrail_proto::qtrail::audit::v1 as proto;
use serde_json::Value;

use crate::error::EventError;
use crate::event::JsonObject;
use crate::proto::{json_number, unchecked};
use crate::validation::{MAX_EVENT_BYTES, ValidEvent};

/// Largest encoded event decoded: eight times [`MAX_EVENT_BYTES`] of canonical JSON, since
/// protobuf may take several times the bytes of it (a number is 9 bytes where JSON writes `0`).
/// Checked before anything is decoded: data given in parts is decoded from a copy of their
/// concatenation at every level it is split at, so a message-sized event could otherwise cost
/// its size many times over before validation refused it.
pub const MAX_ENCODED_EVENT_BYTES: usize = 8 * MAX_EVENT_BYTES;

/// Deepest message nesting accepted, counted as prost counts it (every `Struct`, map entry,
/// `Value` and `ListValue` is a level): prost's own recursion limit.
const MAX_DEPTH: u32 = 100;

/// The level of request or response data inside a `PublishRequest` (`Batch`, `PublishedEvent`,
/// `AuditEvent`, then the `Struct`): the deepest message an event travels in. Counting from
/// there accepts exactly what prost accepts in a `PublishRequest` read with its events decoded
/// (as a peer that declares `PublishedEvent.event` an `AuditEvent` reads it), so every stored
/// event also decodes in the shallower messages that carry it back out (`StoredEvent`,
/// `QueryEventsResponse`, …).
const DATA_DEPTH: u32 = 4;

/// The event as decoded here, named as the generated type is so that decoding errors name the
/// same message.
mod shallow {
    use qtrail_proto::qtrail::audit::v1 as proto;

    /// `qtrail.audit.v1.AuditEvent` with request and response data left encoded: the generated
    /// message's fields at the same tags, except tags 10 and 11, which hold `google.protobuf.Struct`
    /// bytes.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct AuditEvent {
        #[prost(string, tag = "1")]
        pub(super) id: String,
        #[prost(string, tag = "2")]
        pub(super) action: String,
        #[prost(int32, tag = "3")]
        pub(super) outcome: i32,
        #[prost(int32, tag = "4")]
        pub(super) severity: i32,
        #[prost(message, optional, tag = "5")]
        pub(super) event_time: Option<prost_types::Timestamp>,
        #[prost(bool, tag = "6")]
        pub(super) data_event: bool,
        #[prost(message, optional, tag = "7")]
        pub(super) initiator: Option<proto::Initiator>,
        #[prost(message, optional, tag = "8")]
        pub(super) target: Option<proto::Target>,
        #[prost(message, optional, tag = "9")]
        pub(super) reason: Option<proto::Reason>,
        /// Every occurrence of field 10: merging them is decoding them one after the other.
        #[prost(bytes = "vec", repeated, tag = "10")]
        pub(super) request_data: Vec<Vec<u8>>,
        /// Every occurrence of field 11.
        #[prost(bytes = "vec", repeated, tag = "11")]
        pub(super) response_data: Vec<Vec<u8>>,
        #[prost(string, tag = "12")]
        pub(super) correlation_id: String,
        #[prost(string, tag = "13")]
        pub(super) log_source_crn: String,
        #[prost(bool, tag = "14")]
        pub(super) save_service_copy: bool,
        #[prost(string, tag = "15")]
        pub(super) message: String,
    }
}

impl ValidEvent {
    /// Decodes an encoded `qtrail.audit.v1.AuditEvent` and validates it: the event and the
    /// errors of `proto::AuditEvent::decode` followed by `ValidEvent::try_from`.
    ///
    /// # Errors
    /// [`EventError::TooLarge`] for more than [`MAX_ENCODED_EVENT_BYTES`],
    /// [`EventError::Undecodable`] when the bytes are not an `AuditEvent`, or any rule of
    /// validation the event breaks.
    pub fn decode(bytes: &[u8]) -> Result<Self, EventError> {
        if bytes.len() > MAX_ENCODED_EVENT_BYTES {
            return Err(EventError::TooLarge { size: bytes.len(), limit: MAX_ENCODED_EVENT_BYTES });
        }
        let shallow = shallow::AuditEvent::decode(bytes).map_err(|err| EventError::Undecodable(err.to_string()))?;
        let (request, response) = (shallow.request_data, shallow.response_data);
        let mut event = unchecked(proto::AuditEvent {
            id: shallow.id,
            action: shallow.action,
            outcome: shallow.outcome,
            severity: shallow.severity,
            event_time: shallow.event_time,
            data_event: shallow.data_event,
            initiator: shallow.initiator,
            target: shallow.target,
            reason: shallow.reason,
            request_data: None,
            response_data: None,
            correlation_id: shallow.correlation_id,
            log_source_crn: shallow.log_source_crn,
            save_service_copy: shallow.save_service_copy,
            message: shallow.message,
        })?;
        event.request_data = json_object("request data", &request)?;
        event.response_data = json_object("response data", &response)?;
        event.into_valid_event()
    }
}

/// Returns the id of an encoded `qtrail.audit.v1.AuditEvent` alone, reading past every other
/// field whatever it holds, as prost decodes a message of that one field: `None` when even that
/// does not decode. For naming an event that [`ValidEvent::decode`] refused.
pub fn encoded_event_id(bytes: &[u8]) -> Option<String> {
    let mut id = String::new();
    read_fields("id", bytes, |tag, wire_type, buf| {
        if tag != 1 {
            return Ok(false);
        }
        expect("id", wire_type, WireType::LengthDelimited)?;
        id = take_string("id", buf)?;
        Ok(true)
    })
    .ok()?;
    Some(id)
}

/// Returns the encoded message of a message field read as the `occurrences` of a `bytes` field,
/// `None` when it has none. Protobuf merges a message field given more than once, which is the
/// message of their concatenation; one occurrence (the usual case) is borrowed, not copied.
fn merged<T: AsRef<[u8]>>(occurrences: &[T]) -> Option<std::borrow::Cow<'_, [u8]>> {
    match occurrences {
        [] => None,
        [bytes] => Some(bytes.as_ref().into()),
        parts => Some(parts.iter().flat_map(|part| part.as_ref().iter().copied()).collect::<Vec<u8>>().into()),
    }
}

fn undecodable(field: &'static str, detail: impl std::fmt::Display) -> EventError {
    EventError::Undecodable(format!("{field}: {detail}"))
}

/// Returns the JSON object of a `google.protobuf.Struct` field from the bytes of its
/// occurrences, `None` when it has none. A message given in parts is the message of their
/// concatenation (protobuf's merge rule).
fn json_object(field: &'static str, occurrences: &[Vec<u8>]) -> Result<Option<JsonObject>, EventError> {
    merged(occurrences).map(|bytes| read_struct(field, &bytes, DATA_DEPTH)).transpose()
}

/// Reads the fields of one message from `buf`, calling `each` with every field's tag, wire
/// type and the buffer positioned at its value; `each` consumes the value or returns `false`
/// for a field it does not know, which is skipped.
fn read_fields<'a>(
    field: &'static str,
    mut buf: &'a [u8],
    mut each: impl FnMut(u32, WireType, &mut &'a [u8]) -> Result<bool, EventError>,
) -> Result<(), EventError> {
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(|err| undecodable(field, err))?;
        if !each(tag, wire_type, &mut buf)? {
            skip_field(wire_type, tag, &mut buf, DecodeContext::default()).map_err(|err| undecodable(field, err))?;
        }
    }
    Ok(())
}

/// Splits the next length-delimited value off `buf`.
fn take_bytes<'a>(field: &'static str, buf: &mut &'a [u8]) -> Result<&'a [u8], EventError> {
    let len = decode_varint(buf).map_err(|err| undecodable(field, err))?;
    let len = usize::try_from(len)
        .ok()
        .filter(|len| *len <= buf.len())
        .ok_or_else(|| undecodable(field, "buffer underflow"))?;
    let (value, rest) = buf.split_at(len);
    *buf = rest;
    Ok(value)
}

fn take_string(field: &'static str, buf: &mut &[u8]) -> Result<String, EventError> {
    let bytes = take_bytes(field, buf)?;
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| undecodable(field, "invalid string value: data is not UTF-8 encoded"))
}

/// Checks that a field has the wire type its tag requires.
fn expect(field: &'static str, wire_type: WireType, expected: WireType) -> Result<(), EventError> {
    if wire_type == expected {
        return Ok(());
    }
    Err(undecodable(field, format!("invalid wire type: {wire_type:?} (expected {expected:?})")))
}

/// `Struct`: `map<string, Value> fields = 1`, each entry a message of key (1) and value (2).
fn read_struct(field: &'static str, bytes: &[u8], depth: u32) -> Result<JsonObject, EventError> {
    if depth > MAX_DEPTH {
        return Err(undecodable(field, "recursion limit reached"));
    }
    let mut object = JsonObject::new();
    read_fields(field, bytes, |tag, wire_type, buf| {
        if tag != 1 {
            return Ok(false);
        }
        expect(field, wire_type, WireType::LengthDelimited)?;
        let entry = take_bytes(field, buf)?;
        let mut key = String::new();
        let mut value_parts: Vec<&[u8]> = Vec::new();
        read_fields(field, entry, |tag, wire_type, buf| match tag {
            1 => {
                expect(field, wire_type, WireType::LengthDelimited)?;
                key = take_string(field, buf)?;
                Ok(true)
            }
            2 => {
                expect(field, wire_type, WireType::LengthDelimited)?;
                value_parts.push(take_bytes(field, buf)?);
                Ok(true)
            }
            _ => Ok(false),
        })?;
        // The map entry is a message of its own, one level down; a value given in parts is the
        // value of their concatenation.
        let value = read_value(field, &merged(&value_parts).unwrap_or_default(), depth + 2)?;
        object.insert(key, value);
        Ok(true)
    })?;
    Ok(object)
}

/// `Value`: a oneof of null (1), number (2), string (3), bool (4), struct (5) and list (6); a
/// `Value` holding none reads as null, as `json_from_struct` reads it.
fn read_value(field: &'static str, bytes: &[u8], depth: u32) -> Result<Value, EventError> {
    if depth > MAX_DEPTH {
        return Err(undecodable(field, "recursion limit reached"));
    }
    let mut value = Value::Null;
    read_fields(field, bytes, |tag, wire_type, buf| {
        // A `Struct` or `ListValue` given again merges with the one read before; any other
        // kind replaces what was read.
        match (tag, &mut value) {
            (5, Value::Object(object)) => {
                expect(field, wire_type, WireType::LengthDelimited)?;
                object.extend(read_struct(field, take_bytes(field, buf)?, depth + 1)?);
                return Ok(true);
            }
            (6, Value::Array(items)) => {
                expect(field, wire_type, WireType::LengthDelimited)?;
                items.extend(read_list(field, take_bytes(field, buf)?, depth + 1)?);
                return Ok(true);
            }
            _ => {}
        }
        value = match tag {
            1 => {
                expect(field, wire_type, WireType::Varint)?;
                decode_varint(buf).map_err(|err| undecodable(field, err))?;
                Value::Null
            }
            2 => {
                expect(field, wire_type, WireType::SixtyFourBit)?;
                if buf.remaining() < 8 {
                    return Err(undecodable(field, "buffer underflow"));
                }
                Value::Number(json_number(field, buf.get_f64_le())?)
            }
            3 => {
                expect(field, wire_type, WireType::LengthDelimited)?;
                Value::String(take_string(field, buf)?)
            }
            4 => {
                expect(field, wire_type, WireType::Varint)?;
                Value::Bool(decode_varint(buf).map_err(|err| undecodable(field, err))? != 0)
            }
            5 => {
                expect(field, wire_type, WireType::LengthDelimited)?;
                Value::Object(read_struct(field, take_bytes(field, buf)?, depth + 1)?)
            }
            6 => {
                expect(field, wire_type, WireType::LengthDelimited)?;
                Value::Array(read_list(field, take_bytes(field, buf)?, depth + 1)?)
            }
            _ => return Ok(false),
        };
        Ok(true)
    })?;
    Ok(value)
}

/// `ListValue`: `repeated Value values = 1`.
fn read_list(field: &'static str, bytes: &[u8], depth: u32) -> Result<Vec<Value>, EventError> {
    let mut items = Vec::new();
    read_fields(field, bytes, |tag, wire_type, buf| {
        if tag != 1 {
            return Ok(false);
        }
        expect(field, wire_type, WireType::LengthDelimited)?;
        items.push(read_value(field, take_bytes(field, buf)?, depth + 1)?);
        Ok(true)
    })?;
    Ok(items)
}

#[cfg(test)]
mod tests {
    use prost_types::value::Kind;
    use serde_json::json;

    use super::*;
    use crate::{Action, AuditEvent, Crn, EventBuilder, Initiator, Location};

    fn event(request: Value) -> AuditEvent {
        let location: Location = "us-east".parse().unwrap();
        let initiator = Initiator {
            id: "IBMid-1".into(),
            name: "alice\n@example.com".into(),
            type_uri: crate::event::INITIATOR_USER.into(),
            credential_type: "apikey".into(),
            host_address: "192.0.2.1".into(),
            host_agent: "agent".into(),
        };
        EventBuilder::new(Action::JobRead, Crn::instance(&location, "acc-1", "inst-1").unwrap(), initiator)
            .target("j-1", "")
            .request_data(request.as_object().cloned().unwrap())
            .response_data(json!({"status": "COMPLETED", "shots": 4000}).as_object().cloned().unwrap())
            .status(200)
            .build()
            .unwrap()
    }

    /// What the generated types and `ValidEvent::try_from` make of `bytes`.
    fn through_prost(bytes: &[u8]) -> Result<ValidEvent, EventError> {
        let wire = proto::AuditEvent::decode(bytes).map_err(|err| EventError::Undecodable(err.to_string()))?;
        ValidEvent::try_from(wire)
    }

    #[test]
    fn decodes_what_prost_and_validation_make_of_the_same_bytes() {
        let nested = json!({
            "": "empty key",
            "n": [1, -2.5, 1e300, null, true, false, "", [], {}, {"deep": [[{"x": "y"}]]}],
            "text": "tab\there \u{1b}[31m é",
            "object": {"b": null, "a": {"c": 3}},
        });
        for request in [json!({}), json!({"jobId": "j-1"}), nested] {
            let event = event(request);
            let bytes = proto::AuditEvent::from(&event).encode_to_vec();
            assert_eq!(ValidEvent::decode(&bytes).unwrap(), through_prost(&bytes).unwrap());
            assert_eq!(ValidEvent::decode(&bytes).unwrap().event(), &event);
        }
    }

    #[test]
    fn rejects_what_prost_or_validation_rejects() {
        let event = event(json!({"a": 1}));
        let mut wire = proto::AuditEvent::from(&event);
        // NaN cannot be JSON.
        let mut data = wire.request_data.clone().unwrap();
        data.fields.insert("nan".into(), prost_types::Value { kind: Some(Kind::NumberValue(f64::NAN)) });
        wire.request_data = Some(data);
        let bytes = wire.encode_to_vec();
        assert_eq!(ValidEvent::decode(&bytes).unwrap_err(), through_prost(&bytes).unwrap_err());
        // Truncated bytes do not decode; neither does a string that is not UTF-8.
        let good = proto::AuditEvent::from(&event).encode_to_vec();
        assert!(matches!(ValidEvent::decode(&good[..good.len() - 3]), Err(EventError::Undecodable(_))));
        // In the same words, naming the same message and field.
        let truncated = &good[..good.len() - 3];
        assert_eq!(ValidEvent::decode(truncated).unwrap_err(), through_prost(truncated).unwrap_err());
        let mut bad = proto::AuditEvent::from(&event);
        bad.request_data = None;
        let mut bytes = bad.encode_to_vec();
        // Field 10, a Struct with one entry whose key is the byte 0xff.
        bytes.extend_from_slice(&[0x52, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0xff]);
        assert!(matches!(ValidEvent::decode(&bytes), Err(EventError::Undecodable(_))));
        assert!(through_prost(&bytes).is_err());
        // An empty message is a decodable event without an id.
        assert_eq!(ValidEvent::decode(&[]).unwrap_err(), EventError::MissingId);
    }

    /// Fields given more than once, as the protobuf rules allow: request data twice, and a map
    /// entry whose value is given in parts (two lists, which merge; a string then a number, which
    /// replaces): the same event as prost reads, and so as every other reader of the bytes.
    #[test]
    fn repeated_fields_merge_as_prost_merges_them() {
        use prost::encoding::{encode_key, encode_varint};
        use prost_types::{ListValue, Value as PValue};

        let list = |n: f64| PValue {
            kind: Some(Kind::ListValue(ListValue { values: vec![PValue { kind: Some(Kind::NumberValue(n)) }] })),
        };
        // One map entry of key "k" whose value field occurs for every part.
        let entry_in_parts = |parts: &[PValue]| {
            let mut entry = Vec::new();
            encode_key(1, WireType::LengthDelimited, &mut entry);
            encode_varint(1, &mut entry);
            entry.push(b'k');
            for part in parts {
                encode_key(2, WireType::LengthDelimited, &mut entry);
                encode_varint(part.encoded_len() as u64, &mut entry);
                part.encode(&mut entry).unwrap();
            }
            let mut data = Vec::new();
            encode_key(1, WireType::LengthDelimited, &mut data);
            encode_varint(entry.len() as u64, &mut data);
            data.extend_from_slice(&entry);
            // The event's request data (field 10) holding that `Struct`.
            let mut field = Vec::new();
            encode_key(10, WireType::LengthDelimited, &mut field);
            encode_varint(data.len() as u64, &mut field);
            field.extend_from_slice(&data);
            field
        };
        let data_only = |json: Value| {
            let data = crate::proto::struct_from_json(json.as_object().unwrap());
            proto::AuditEvent { request_data: Some(data), ..Default::default() }.encode_to_vec()
        };
        let base = proto::AuditEvent::from(&event(json!({"a": 1, "k": "first"}))).encode_to_vec();
        let text = PValue { kind: Some(Kind::StringValue("s".into())) };
        let cases = [
            [base.clone(), data_only(json!({"b": 2, "a": 3}))].concat(),
            [base.clone(), entry_in_parts(&[list(1.0), list(2.0)])].concat(),
            [base.clone(), entry_in_parts(&[text, list(3.0), PValue { kind: Some(Kind::NumberValue(4.0)) }])].concat(),
            [base.clone(), entry_in_parts(&[]), data_only(json!({"c": {"d": [true]}}))].concat(),
        ];
        for bytes in cases {
            let ours = ValidEvent::decode(&bytes).unwrap();
            assert_eq!(ours, through_prost(&bytes).unwrap());
        }
        let merged = ValidEvent::decode(&[base, entry_in_parts(&[list(1.0), list(2.0)])].concat()).unwrap();
        assert_eq!(merged.event().request_data.as_ref().unwrap()["k"], json!([1, 2]));
    }

    /// Request data nested `levels` deep, in lists or in objects.
    fn nested_event(levels: usize, in_lists: bool) -> proto::AuditEvent {
        let mut value = json!("leaf");
        for _ in 0..levels {
            value = if in_lists { json!([value]) } else { json!({"a": value}) };
        }
        let mut wire = proto::AuditEvent::from(&event(json!({})));
        wire.request_data = Some(crate::proto::struct_from_json(json!({"deep": value}).as_object().unwrap()));
        wire
    }

    /// `qtrail.audit.v1.PublishRequest` as a peer that declares `PublishedEvent.event` an
    /// `AuditEvent` reads it: every level down to the event's data decoded.
    mod message_typed {
        use qtrail_proto::qtrail::audit::v1 as proto;

        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct PublishRequest {
            #[prost(message, optional, tag = "2")]
            pub(super) batch: Option<Batch>,
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct Batch {
            #[prost(message, repeated, tag = "2")]
            pub(super) events: Vec<PublishedEvent>,
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub(super) struct PublishedEvent {
            #[prost(message, optional, tag = "2")]
            pub(super) event: Option<proto::AuditEvent>,
        }
    }

    /// The deepest nesting accepted is what prost accepts inside a `PublishRequest` read with its
    /// events decoded, the deepest message an event travels in, so every stored event decodes in
    /// every message that carries it (`StoredEvent`, `QueryEventsResponse`, `TailEventsResponse`).
    #[test]
    fn nesting_is_limited_as_prost_limits_it_inside_a_publish_request() {
        for in_lists in [true, false] {
            for levels in 20..60 {
                let wire = nested_event(levels, in_lists);
                let request = message_typed::PublishRequest {
                    batch: Some(message_typed::Batch {
                        events: vec![message_typed::PublishedEvent { event: Some(wire.clone()) }],
                    }),
                };
                let bytes = request.encode_to_vec();
                let prost_accepts = message_typed::PublishRequest::decode(bytes.as_slice()).is_ok();
                let accepted = ValidEvent::decode(&wire.encode_to_vec()).is_ok();
                assert_eq!(
                    accepted,
                    prost_accepts,
                    "{levels} levels of {}",
                    if in_lists { "lists" } else { "objects" }
                );
            }
        }
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused_without_overflowing_the_stack() {
        let mut value = json!("leaf");
        for _ in 0..200 {
            value = json!([value]);
        }
        let mut wire = proto::AuditEvent::from(&event(json!({})));
        wire.request_data = Some(crate::proto::struct_from_json(json!({"deep": value}).as_object().unwrap()));
        let bytes = wire.encode_to_vec();
        assert!(matches!(ValidEvent::decode(&bytes), Err(EventError::Undecodable(_))));
    }

    /// The id of an event reads whatever the rest holds, and not from bytes that do not decode.
    #[test]
    fn an_encoded_event_id_reads_past_every_other_field() {
        let event = event(json!({"k": 1}));
        let (encoded, id) = (event.encode_proto(), event.id.to_string());
        assert_eq!(encoded_event_id(&encoded), Some(id.clone()));
        // Request data (field 10) whose one entry's key is the byte 0xff: not UTF-8.
        let not_utf8 = [encoded.as_slice(), &[0x52, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0xff]].concat();
        assert!(ValidEvent::decode(&not_utf8).is_err());
        assert_eq!(encoded_event_id(&not_utf8), Some(id));
        assert_eq!(encoded_event_id(&encoded[..encoded.len() - 3]), None);
        assert_eq!(encoded_event_id(&[]), Some(String::new()));
    }
}
