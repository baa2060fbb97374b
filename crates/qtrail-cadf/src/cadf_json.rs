//! The strict DMTF CADF JSON form of an event (DSP0262), shaped so that the reference
//! implementation, pyCADF, accepts it.
//!
//! CADF has a closed vocabulary where Activity Tracker has service-specific names, so the
//! mapping is:
//!
//! - `action`: the CADF taxonomy action (`create`, `read`, `read/list` for a read of the whole
//!   instance, `update`, `delete`, `update/cancel`); the native action
//!   (`quantum-computing.job.cancel`) is kept as the attachment `action`;
//! - resources carry taxonomy `typeURI`s: the initiator's Activity Tracker type (all under
//!   `service/security`), `data/workload/job` for jobs, `data/workload/app` for programs,
//!   `service/compute` for the service instance;
//! - `observer` is the service instance that observed the action: its CRN (the Activity
//!   Tracker `logSourceCRN`) as `id`, `service/compute` as `typeURI`;
//! - `reason` is `{"reasonType": "HTTP", "reasonCode": "<code as a string>"}`;
//! - `name` is the event's message; the correlation id is the tag
//!   `correlation_id?value=<id>` (keystonemiddleware's convention);
//! - what CADF has no field for travels as attachments: `action`, `reasonPhrase`,
//!   `reasonForFailure`, `credentialType`, `dataEvent`, `saveServiceCopy`, `requestData`,
//!   `responseData`. The credential itself is never present: pyCADF's `credential` requires a
//!   token, and an audit trail must not hold one.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::action::Action;
use crate::error::EventError;
use crate::event::{AuditEvent, Initiator, Reason, Target};
use crate::proto::parse_crn;

/// Name of this form in error messages.
const FORM: &str = "cadf-json";

/// `typeURI` of a CADF 1.0 event.
pub const EVENT_TYPE_URI: &str = "http://schemas.dmtf.org/cloud/audit/1.0/event";

/// The CADF `typeURI` of the observer, the service instance.
const OBSERVER_TYPE_URI: &str = "service/compute";

/// Prefix of the tag that carries the correlation id.
const CORRELATION_TAG: &str = "correlation_id?value=";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CadfEvent {
    #[serde(rename = "typeURI")]
    type_uri: String,
    event_type: String,
    id: String,
    event_time: String,
    action: String,
    outcome: String,
    severity: String,
    name: String,
    observer: CadfResource,
    initiator: CadfResource,
    target: CadfResource,
    reason: CadfReason,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<CadfAttachment>,
}

#[derive(Serialize, Deserialize)]
struct CadfResource {
    id: String,
    #[serde(rename = "typeURI")]
    type_uri: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<CadfHost>,
}

#[derive(Serialize, Deserialize)]
struct CadfHost {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    agent: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CadfReason {
    reason_type: String,
    reason_code: String,
}

#[derive(Serialize, Deserialize)]
struct CadfAttachment {
    #[serde(rename = "typeURI")]
    type_uri: String,
    name: String,
    content: Value,
}

impl CadfAttachment {
    fn string(name: &str, content: &str) -> Self {
        Self { type_uri: "xs:string".into(), name: name.into(), content: Value::String(content.into()) }
    }

    fn boolean(name: &str, content: bool) -> Self {
        Self { type_uri: "xs:boolean".into(), name: name.into(), content: Value::Bool(content) }
    }

    fn json(name: &str, content: Value) -> Self {
        Self { type_uri: "application/json".into(), name: name.into(), content }
    }
}

impl From<&AuditEvent> for CadfEvent {
    fn from(event: &AuditEvent) -> Self {
        let initiator = &event.initiator;
        let has_host = !initiator.host_address.is_empty() || !initiator.host_agent.is_empty();
        let mut attachments = vec![
            CadfAttachment::string("action", event.action.as_str()),
            CadfAttachment::string("reasonPhrase", &event.reason.reason_type),
        ];
        if !event.reason.reason_for_failure.is_empty() {
            attachments.push(CadfAttachment::string("reasonForFailure", &event.reason.reason_for_failure));
        }
        if !initiator.credential_type.is_empty() {
            attachments.push(CadfAttachment::string("credentialType", &initiator.credential_type));
        }
        attachments.push(CadfAttachment::boolean("dataEvent", event.data_event));
        attachments.push(CadfAttachment::boolean("saveServiceCopy", event.save_service_copy));
        if let Some(data) = &event.request_data {
            attachments.push(CadfAttachment::json("requestData", Value::Object(data.clone())));
        }
        if let Some(data) = &event.response_data {
            attachments.push(CadfAttachment::json("responseData", Value::Object(data.clone())));
        }
        let tags = if event.correlation_id.is_empty() {
            Vec::new()
        } else {
            vec![format!("{CORRELATION_TAG}{}", event.correlation_id)]
        };

        CadfEvent {
            type_uri: EVENT_TYPE_URI.to_owned(),
            event_type: "activity".to_owned(),
            id: event.id.to_string(),
            event_time: event.event_time.to_cadf_string(),
            action: event.action.cadf_action(event.target.crn.is_instance()).to_owned(),
            outcome: event.outcome.as_str().to_owned(),
            severity: event.severity.as_str().to_owned(),
            name: event.message.clone(),
            observer: CadfResource {
                id: event.log_source_crn.to_string(),
                type_uri: OBSERVER_TYPE_URI.to_owned(),
                name: String::new(),
                host: None,
            },
            initiator: CadfResource {
                id: initiator.id.clone(),
                type_uri: initiator.type_uri.clone(),
                name: initiator.name.clone(),
                host: has_host
                    .then(|| CadfHost { address: initiator.host_address.clone(), agent: initiator.host_agent.clone() }),
            },
            target: CadfResource {
                id: event.target.crn.to_string(),
                type_uri: event.target.cadf_type_uri().to_owned(),
                name: event.target.name.clone(),
                host: None,
            },
            reason: CadfReason { reason_type: "HTTP".to_owned(), reason_code: event.reason.code.to_string() },
            tags,
            attachments,
        }
    }
}

fn json_error(detail: impl Into<String>) -> EventError {
    EventError::Json { form: FORM, detail: detail.into() }
}

impl TryFrom<CadfEvent> for AuditEvent {
    type Error = EventError;

    fn try_from(cadf: CadfEvent) -> Result<Self, Self::Error> {
        if cadf.type_uri != EVENT_TYPE_URI {
            return Err(json_error(format!("typeURI `{}` is not `{EVENT_TYPE_URI}`", cadf.type_uri)));
        }
        if cadf.event_type != "activity" {
            return Err(json_error(format!("eventType `{}` is not `activity`", cadf.event_type)));
        }
        let attachments = Attachments(cadf.attachments);
        let action: Action = attachments.string("action").ok_or(EventError::Missing("action attachment"))?.parse()?;
        let target_crn = parse_crn("target", &cadf.target.id)?;
        let expected_action = action.cadf_action(target_crn.is_instance());
        if cadf.action != expected_action {
            return Err(json_error(format!(
                "action `{}` does not match `{action}`, expected `{expected_action}`",
                cadf.action
            )));
        }
        let target = Target { crn: target_crn, name: cadf.target.name };
        if cadf.target.type_uri != target.cadf_type_uri() {
            return Err(EventError::TargetTypeMismatch {
                given: cadf.target.type_uri,
                expected: target.cadf_type_uri().to_owned(),
            });
        }
        let code = cadf
            .reason
            .reason_code
            .parse::<u16>()
            .map_err(|_| json_error(format!("reasonCode `{}` is not a status code", cadf.reason.reason_code)))?;
        let host = cadf.initiator.host.unwrap_or(CadfHost { address: String::new(), agent: String::new() });
        let correlation_id =
            cadf.tags.iter().find_map(|tag| tag.strip_prefix(CORRELATION_TAG)).unwrap_or_default().to_owned();

        AuditEvent {
            id: Uuid::parse_str(&cadf.id).map_err(|_| EventError::InvalidId(cadf.id.clone()))?,
            action,
            outcome: cadf.outcome.parse()?,
            severity: cadf.severity.parse()?,
            event_time: cadf.event_time.parse()?,
            data_event: attachments.boolean("dataEvent"),
            initiator: Initiator {
                id: cadf.initiator.id,
                name: cadf.initiator.name,
                type_uri: cadf.initiator.type_uri,
                credential_type: attachments.string("credentialType").unwrap_or_default().to_owned(),
                host_address: host.address,
                host_agent: host.agent,
            },
            target,
            reason: Reason {
                code,
                reason_type: attachments.string("reasonPhrase").unwrap_or_default().to_owned(),
                reason_for_failure: attachments.string("reasonForFailure").unwrap_or_default().to_owned(),
            },
            request_data: attachments.object("requestData")?,
            response_data: attachments.object("responseData")?,
            correlation_id,
            log_source_crn: parse_crn("log source", &cadf.observer.id)?,
            save_service_copy: attachments.boolean("saveServiceCopy"),
            message: cadf.name,
        }
        .into_valid()
    }
}

/// Lookup of attachments by name.
struct Attachments(Vec<CadfAttachment>);

impl Attachments {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|attachment| attachment.name == name).map(|attachment| &attachment.content)
    }

    fn string(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    fn boolean(&self, name: &str) -> bool {
        self.get(name).and_then(Value::as_bool).unwrap_or(false)
    }

    fn object(&self, name: &str) -> Result<Option<crate::event::JsonObject>, EventError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(object)) => Ok(Some(object.clone())),
            Some(_) => Err(json_error(format!("attachment `{name}` is not a json object"))),
        }
    }
}

/// Returns the CADF-JSON form of an event as a JSON value.
pub fn to_value(event: &AuditEvent) -> Value {
    // Serialising plain structs of strings and JSON values cannot fail.
    serde_json::to_value(CadfEvent::from(event)).unwrap_or_default()
}

/// Returns the CADF-JSON form of an event as one line of compact JSON.
pub fn to_string(event: &AuditEvent) -> String {
    serde_json::to_string(&CadfEvent::from(event)).unwrap_or_default()
}

/// Returns the CADF-JSON form of an event, indented for people.
pub fn to_string_pretty(event: &AuditEvent) -> String {
    serde_json::to_string_pretty(&CadfEvent::from(event)).unwrap_or_default()
}

/// Parses and validates an event in CADF-JSON form.
///
/// # Errors
/// [`EventError::Json`] when the text is not a CADF event of this profile; any validation error
/// otherwise.
pub fn from_str(text: &str) -> Result<AuditEvent, EventError> {
    let cadf: CadfEvent = serde_json::from_str(text).map_err(|err| json_error(err.to_string()))?;
    AuditEvent::try_from(cadf)
}
