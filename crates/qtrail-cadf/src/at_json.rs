//! The IBM Cloud Activity Tracker JSON form of an event (AT-JSON).
//!
//! Field names, value formats and the fixed `observer.name` follow IBM's "Event fields"
//! reference; the event `id` (optional in Activity Tracker) is always written so that events
//! can be matched across exports. Parsing accepts what writing produces, ignores fields it does
//! not know (such as `resourceGroupId`) and validates the result like any other event.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::EventError;
use crate::event::{AuditEvent, Initiator, JsonObject, Reason, Target};
use crate::proto::parse_crn;

/// Name of this form in error messages.
const FORM: &str = "at-json";

/// Activity Tracker's fixed observer name.
pub const OBSERVER_NAME: &str = "ActivityTracker";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AtEvent {
    id: String,
    action: String,
    outcome: String,
    severity: String,
    event_time: String,
    data_event: bool,
    initiator: AtInitiator,
    target: AtTarget,
    #[serde(default)]
    observer: AtObserver,
    reason: AtReason,
    #[serde(default)]
    request_data: Option<JsonObject>,
    #[serde(default)]
    response_data: Option<JsonObject>,
    #[serde(default)]
    correlation_id: String,
    #[serde(rename = "logSourceCRN")]
    log_source_crn: String,
    #[serde(default)]
    save_service_copy: bool,
    message: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AtInitiator {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "typeURI")]
    type_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credential: Option<AtCredential>,
    #[serde(default)]
    host: AtHost,
}

#[derive(Serialize, Deserialize)]
struct AtCredential {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AtHost {
    #[serde(default)]
    address: String,
    #[serde(default)]
    address_type: String,
    #[serde(default)]
    agent: String,
}

#[derive(Serialize, Deserialize)]
struct AtTarget {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "typeURI", default)]
    type_uri: String,
}

#[derive(Serialize, Deserialize)]
struct AtObserver {
    name: String,
}

impl Default for AtObserver {
    fn default() -> Self {
        Self { name: OBSERVER_NAME.to_owned() }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AtReason {
    reason_code: u32,
    #[serde(default)]
    reason_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason_for_failure: String,
}

impl From<&AuditEvent> for AtEvent {
    fn from(event: &AuditEvent) -> Self {
        let initiator = &event.initiator;
        AtEvent {
            id: event.id.to_string(),
            action: event.action.to_string(),
            outcome: event.outcome.as_str().to_owned(),
            severity: event.severity.as_str().to_owned(),
            event_time: event.event_time.to_at_string(),
            data_event: event.data_event,
            initiator: AtInitiator {
                id: initiator.id.clone(),
                name: initiator.name.clone(),
                type_uri: initiator.type_uri.clone(),
                credential: (!initiator.credential_type.is_empty())
                    .then(|| AtCredential { kind: initiator.credential_type.clone() }),
                host: AtHost {
                    address: initiator.host_address.clone(),
                    address_type: initiator.host_address_type().to_owned(),
                    agent: initiator.host_agent.clone(),
                },
            },
            target: AtTarget {
                id: event.target.crn.to_string(),
                name: event.target.name.clone(),
                type_uri: event.target.type_uri(),
            },
            observer: AtObserver::default(),
            reason: AtReason {
                reason_code: u32::from(event.reason.code),
                reason_type: event.reason.reason_type.clone(),
                reason_for_failure: event.reason.reason_for_failure.clone(),
            },
            request_data: event.request_data.clone(),
            response_data: event.response_data.clone(),
            correlation_id: event.correlation_id.clone(),
            log_source_crn: event.log_source_crn.to_string(),
            save_service_copy: event.save_service_copy,
            message: event.message.clone(),
        }
    }
}

impl TryFrom<AtEvent> for AuditEvent {
    type Error = EventError;

    fn try_from(at: AtEvent) -> Result<Self, Self::Error> {
        let id = Uuid::parse_str(&at.id).map_err(|_| EventError::InvalidId(at.id.clone()))?;
        let target = Target { crn: parse_crn("target", &at.target.id)?, name: at.target.name }
            .with_checked_type_uri(&at.target.type_uri)?;
        let code =
            u16::try_from(at.reason.reason_code).map_err(|_| EventError::InvalidReasonCode(at.reason.reason_code))?;
        AuditEvent {
            id,
            action: at.action.parse()?,
            outcome: at.outcome.parse()?,
            severity: at.severity.parse()?,
            event_time: at.event_time.parse()?,
            data_event: at.data_event,
            initiator: Initiator {
                id: at.initiator.id,
                name: at.initiator.name,
                type_uri: at.initiator.type_uri,
                credential_type: at.initiator.credential.map(|c| c.kind).unwrap_or_default(),
                host_address: at.initiator.host.address,
                host_agent: at.initiator.host.agent,
            },
            target,
            reason: Reason {
                code,
                reason_type: at.reason.reason_type,
                reason_for_failure: at.reason.reason_for_failure,
            },
            request_data: at.request_data,
            response_data: at.response_data,
            correlation_id: at.correlation_id,
            log_source_crn: parse_crn("log source", &at.log_source_crn)?,
            save_service_copy: at.save_service_copy,
            message: at.message,
        }
        .into_valid()
    }
}

/// Returns the AT-JSON form of an event as a JSON value.
pub fn to_value(event: &AuditEvent) -> serde_json::Value {
    // Serialising plain structs of strings, numbers and JSON values cannot fail.
    serde_json::to_value(AtEvent::from(event)).unwrap_or_default()
}

/// Returns the AT-JSON form of an event as one line of compact JSON.
pub fn to_string(event: &AuditEvent) -> String {
    serde_json::to_string(&AtEvent::from(event)).unwrap_or_default()
}

/// Returns the AT-JSON form of an event, indented for people.
pub fn to_string_pretty(event: &AuditEvent) -> String {
    serde_json::to_string_pretty(&AtEvent::from(event)).unwrap_or_default()
}

/// Parses and validates an event in AT-JSON form.
///
/// # Errors
/// [`EventError::Json`] when the text is not an AT-JSON event; any validation error otherwise.
pub fn from_str(text: &str) -> Result<AuditEvent, EventError> {
    let at: AtEvent =
        serde_json::from_str(text).map_err(|err| EventError::Json { form: FORM, detail: err.to_string() })?;
    AuditEvent::try_from(at)
}
