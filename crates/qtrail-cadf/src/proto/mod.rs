//! The protobuf form of the model (`qtrail.audit.v1.AuditEvent`): conversions between the
//! model and the generated message, and between JSON objects and `google.protobuf.Struct`; the
//! event's bytes written straight from the model (`encode.rs`) and read with request and response
//! data straight into JSON (`decode.rs`).
//!
//! Reading validates: a `proto::AuditEvent` becomes an [`AuditEvent`] only if it obeys every
//! rule of the model, with control characters escaped.

mod decode;
mod encode;

use prost_types::value::Kind;
use qtrail_proto::qtrail::audit::v1 as proto;
use serde_json::{Number, Value};
use uuid::Uuid;

use crate::action::Action;
use crate::crn::Crn;
use crate::error::EventError;
use crate::event::{AuditEvent, EventTime, Initiator, JsonObject, Outcome, Reason, Severity, Target};
use crate::validation::ValidEvent;

pub use decode::{MAX_ENCODED_EVENT_BYTES, encoded_event_id};

/// Largest magnitude at which a double holds every integer exactly (2^53).
const MAX_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

impl TryFrom<proto::AuditEvent> for AuditEvent {
    type Error = EventError;

    fn try_from(message: proto::AuditEvent) -> Result<Self, Self::Error> {
        unchecked(message)?.into_valid()
    }
}

impl TryFrom<proto::AuditEvent> for ValidEvent {
    type Error = EventError;

    /// Decodes and validates as `AuditEvent::try_from` does, keeping the canonical bytes.
    fn try_from(message: proto::AuditEvent) -> Result<Self, Self::Error> {
        unchecked(message)?.into_valid_event()
    }
}

/// Returns the model of a generated `AuditEvent` message, before escaping and validation.
pub(crate) fn unchecked(message: proto::AuditEvent) -> Result<AuditEvent, EventError> {
    if message.id.is_empty() {
        return Err(EventError::MissingId);
    }
    let id = Uuid::parse_str(&message.id).map_err(|_| EventError::InvalidId(message.id.clone()))?;
    let action: Action = message.action.parse()?;
    let outcome = outcome_from_wire(message.outcome)?;
    let severity = severity_from_wire(message.severity)?;
    let time = message.event_time.ok_or(EventError::Missing("event time"))?;
    let event_time = EventTime::from_unix_parts(time.seconds, time.nanos)?;
    let initiator = message.initiator.ok_or(EventError::MissingInitiatorId)?;
    let target = message.target.ok_or(EventError::Missing("target"))?;
    let reason = message.reason.ok_or(EventError::Missing("reason"))?;
    if message.log_source_crn.is_empty() {
        return Err(EventError::Missing("log source crn"));
    }
    let log_source_crn = parse_crn("log source", &message.log_source_crn)?;
    let target =
        Target { crn: parse_crn("target", &target.id)?, name: target.name }.with_checked_type_uri(&target.type_uri)?;
    let code = u16::try_from(reason.reason_code).map_err(|_| EventError::InvalidReasonCode(reason.reason_code))?;

    Ok(AuditEvent {
        id,
        action,
        outcome,
        severity,
        event_time,
        data_event: message.data_event,
        initiator: Initiator {
            id: initiator.id,
            name: initiator.name,
            type_uri: initiator.type_uri,
            credential_type: initiator.credential_type,
            host_address: initiator.host_address,
            host_agent: initiator.host_agent,
        },
        target,
        reason: Reason { code, reason_type: reason.reason_type, reason_for_failure: reason.reason_for_failure },
        request_data: message.request_data.map(|s| json_from_struct("request data", s)).transpose()?,
        response_data: message.response_data.map(|s| json_from_struct("response data", s)).transpose()?,
        correlation_id: message.correlation_id,
        log_source_crn,
        save_service_copy: message.save_service_copy,
        message: message.message,
    })
}

impl From<&AuditEvent> for proto::AuditEvent {
    fn from(event: &AuditEvent) -> Self {
        let millis = event.event_time.unix_millis();
        proto::AuditEvent {
            id: event.id.to_string(),
            action: event.action.to_string(),
            outcome: outcome_to_wire(event.outcome) as i32,
            severity: severity_to_wire(event.severity) as i32,
            event_time: Some(prost_types::Timestamp {
                seconds: millis.div_euclid(1000),
                // At most 999_000_000, so it fits an i32.
                nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
            }),
            data_event: event.data_event,
            initiator: Some(proto::Initiator {
                id: event.initiator.id.clone(),
                name: event.initiator.name.clone(),
                type_uri: event.initiator.type_uri.clone(),
                credential_type: event.initiator.credential_type.clone(),
                host_address: event.initiator.host_address.clone(),
                host_agent: event.initiator.host_agent.clone(),
            }),
            target: Some(proto::Target {
                id: event.target.crn.to_string(),
                name: event.target.name.clone(),
                type_uri: event.target.type_uri(),
            }),
            reason: Some(proto::Reason {
                reason_code: u32::from(event.reason.code),
                reason_type: event.reason.reason_type.clone(),
                reason_for_failure: event.reason.reason_for_failure.clone(),
            }),
            request_data: event.request_data.as_ref().map(struct_from_json),
            response_data: event.response_data.as_ref().map(struct_from_json),
            correlation_id: event.correlation_id.clone(),
            log_source_crn: event.log_source_crn.to_string(),
            save_service_copy: event.save_service_copy,
            message: event.message.clone(),
        }
    }
}

impl From<AuditEvent> for proto::AuditEvent {
    fn from(event: AuditEvent) -> Self {
        proto::AuditEvent::from(&event)
    }
}

impl Target {
    /// Returns the target if `given` is empty or the type URI its CRN implies.
    pub(crate) fn with_checked_type_uri(self, given: &str) -> Result<Self, EventError> {
        let expected = self.type_uri();
        if !given.is_empty() && given != expected {
            return Err(EventError::TargetTypeMismatch { given: given.to_owned(), expected });
        }
        Ok(self)
    }
}

pub(crate) fn parse_crn(field: &'static str, text: &str) -> Result<Crn, EventError> {
    text.parse().map_err(|source| EventError::BadCrn { field, source })
}

/// Returns the model outcome of a message `Outcome` value.
///
/// # Errors
/// [`EventError::Missing`] for `OUTCOME_UNSPECIFIED`, [`EventError::UnknownValue`] for a number
/// outside the enum.
pub fn outcome_from_wire(value: i32) -> Result<Outcome, EventError> {
    match proto::Outcome::try_from(value) {
        Ok(proto::Outcome::Success) => Ok(Outcome::Success),
        Ok(proto::Outcome::Failure) => Ok(Outcome::Failure),
        Ok(proto::Outcome::Pending) => Ok(Outcome::Pending),
        Ok(proto::Outcome::Unspecified) => Err(EventError::Missing("outcome")),
        Err(_) => Err(EventError::UnknownValue { field: "outcome", value: value.to_string() }),
    }
}

/// Returns the message form of an outcome.
pub fn outcome_to_wire(outcome: Outcome) -> proto::Outcome {
    match outcome {
        Outcome::Success => proto::Outcome::Success,
        Outcome::Failure => proto::Outcome::Failure,
        Outcome::Pending => proto::Outcome::Pending,
    }
}

/// Returns the model severity of a message `Severity` value.
///
/// # Errors
/// [`EventError::Missing`] for `SEVERITY_UNSPECIFIED`, [`EventError::UnknownValue`] for a
/// number outside the enum.
pub fn severity_from_wire(value: i32) -> Result<Severity, EventError> {
    match proto::Severity::try_from(value) {
        Ok(proto::Severity::Normal) => Ok(Severity::Normal),
        Ok(proto::Severity::Warning) => Ok(Severity::Warning),
        Ok(proto::Severity::Critical) => Ok(Severity::Critical),
        Ok(proto::Severity::Unspecified) => Err(EventError::Missing("severity")),
        Err(_) => Err(EventError::UnknownValue { field: "severity", value: value.to_string() }),
    }
}

/// Returns the message form of a severity.
pub fn severity_to_wire(severity: Severity) -> proto::Severity {
    match severity {
        Severity::Normal => proto::Severity::Normal,
        Severity::Warning => proto::Severity::Warning,
        Severity::Critical => proto::Severity::Critical,
    }
}

/// Returns a JSON object as a protobuf `Struct`. Numbers become doubles, as `Struct` requires.
pub fn struct_from_json(object: &JsonObject) -> prost_types::Struct {
    prost_types::Struct {
        fields: object.iter().map(|(key, value)| (key.clone(), proto_value_from_json(value))).collect(),
    }
}

/// Returns a protobuf `Struct` as a JSON object. A double with no fractional part and a
/// magnitude of at most 2^53 becomes an integer, so `{"shots": 1024}` reads back as written.
///
/// # Errors
/// [`EventError::NonFiniteNumber`] for NaN or an infinity, which JSON cannot carry; `field`
/// names the field in the error.
pub fn json_from_struct(field: &'static str, value: prost_types::Struct) -> Result<JsonObject, EventError> {
    let mut object = JsonObject::new();
    for (key, value) in value.fields {
        object.insert(key, json_from_proto_value(field, value)?);
    }
    Ok(object)
}

fn proto_value_from_json(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        // Every JSON number has an f64 approximation (serde_json never holds NaN).
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => {
            Kind::ListValue(prost_types::ListValue { values: items.iter().map(proto_value_from_json).collect() })
        }
        Value::Object(object) => Kind::StructValue(struct_from_json(object)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn json_from_proto_value(field: &'static str, value: prost_types::Value) -> Result<Value, EventError> {
    let json = match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => Value::Number(json_number(field, n)?),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values.into_iter().map(|item| json_from_proto_value(field, item)).collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(object)) => Value::Object(json_from_struct(field, object)?),
    };
    Ok(json)
}

pub(crate) fn json_number(field: &'static str, n: f64) -> Result<Number, EventError> {
    if n.fract() == 0.0 && n.abs() <= MAX_EXACT_INTEGER {
        return Ok(Number::from(n as i64));
    }
    Number::from_f64(n).ok_or(EventError::NonFiniteNumber(field))
}

/// Rewrites every number in `value` to what it reads back as after a trip through `Struct`
/// (a double, then [`json_from_struct`]'s integer rule). Events are normalised this way on
/// construction, so their canonical bytes do not change when they cross the message.
pub(crate) fn normalize_numbers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            // serde_json numbers are finite, so both conversions succeed.
            if let Some(normalized) = n.as_f64().and_then(|f| json_number("data", f).ok()) {
                *n = normalized;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_numbers),
        Value::Object(object) => object.values_mut().for_each(normalize_numbers),
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}
