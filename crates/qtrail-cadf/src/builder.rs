//! Building events from what a service knows about a call, deriving the rest: target CRN, type
//! and name, outcome, reason phrase, severity, message, event id and time.

use uuid::Uuid;

use crate::action::{Action, Verb};
use crate::crn::{Crn, encode_resource_id};
use crate::error::EventError;
use crate::event::{AuditEvent, EventTime, Initiator, JsonObject, Reason, Target};
use crate::status::{outcome_for, reason_phrase, severity_for};
use crate::text::truncate;

/// Service name at the start of every Qiskit Runtime message.
const SERVICE_DISPLAY_NAME: &str = "Qiskit Runtime";
/// Longest failure reason kept, in bytes: a reason quoting caller input (a 20,000-character
/// identifier in a syntax error) must not push the event over its 16 KiB limit and lose it.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest target name kept, in bytes, for the same reason (the message repeats it).
pub const MAX_TARGET_NAME_BYTES: usize = 512;

/// Builds one [`AuditEvent`]. Defaults: the target is the service instance, the status is 200,
/// the id is a new UUIDv7, the time is now, and the correlation id is a new UUIDv4.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    action: Action,
    log_source: Crn,
    initiator: Initiator,
    resource: Option<(String, String)>,
    /// The account that owns the target resource, when not the log source's.
    resource_account: Option<String>,
    code: u16,
    reason_for_failure: String,
    request_data: Option<JsonObject>,
    response_data: Option<JsonObject>,
    correlation_id: Option<String>,
    id: Option<Uuid>,
    event_time: Option<EventTime>,
}

impl EventBuilder {
    /// Starts an event for `action`, observed by the service instance `log_source` and
    /// performed by `initiator`.
    pub fn new(action: Action, log_source: Crn, initiator: Initiator) -> Self {
        Self {
            action,
            log_source,
            initiator,
            resource: None,
            resource_account: None,
            code: 200,
            reason_for_failure: String::new(),
            request_data: None,
            response_data: None,
            correlation_id: None,
            id: None,
            event_time: None,
        }
    }

    /// Targets the program or job (by the action's kind) with this id and human name. The id
    /// may come straight from a caller: characters a CRN cannot hold are percent-encoded and it
    /// is cut at 256 bytes; the name is cut at [`MAX_TARGET_NAME_BYTES`]. An empty id leaves the
    /// target at the service instance.
    pub fn target(mut self, id: &str, name: &str) -> Self {
        self.resource =
            (!id.is_empty()).then(|| (encode_resource_id(id), truncate(name, MAX_TARGET_NAME_BYTES).into_owned()));
        self
    }

    /// Names `account` as the owner of the target resource, in its CRN's scope: an event
    /// belongs to the initiator's account (the log source's) and to the target's, so a read of
    /// another account's program shows up for both. Without it the target is the log source's.
    pub fn target_account(mut self, account: &str) -> Self {
        self.resource_account = Some(account.to_owned());
        self
    }

    /// Records that the call succeeded with this HTTP-equivalent status (200 by default).
    pub fn status(mut self, code: u16) -> Self {
        self.code = code;
        self
    }

    /// Records that the call failed with this HTTP-equivalent status and reason, cut to
    /// [`MAX_REASON_BYTES`].
    pub fn failure(mut self, code: u16, reason: impl Into<String>) -> Self {
        self.code = code;
        let mut reason = reason.into();
        if let std::borrow::Cow::Owned(short) = truncate(&reason, MAX_REASON_BYTES) {
            reason = short;
        }
        self.reason_for_failure = reason;
        self
    }

    /// Sets the request details. Update actions should carry `updateType`, `initialValue` and
    /// `newValue`; nothing secret may go here.
    pub fn request_data(mut self, data: JsonObject) -> Self {
        self.request_data = Some(data);
        self
    }

    /// Sets the response details.
    pub fn response_data(mut self, data: JsonObject) -> Self {
        self.response_data = Some(data);
        self
    }

    /// Sets the correlation id (for example from an `x-correlation-id` header).
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the event id instead of a new UUIDv7.
    pub fn id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the event time instead of now.
    pub fn event_time(mut self, time: EventTime) -> Self {
        self.event_time = Some(time);
        self
    }

    /// Derives the remaining fields and validates the event.
    ///
    /// # Errors
    /// Any [`EventError`] the event breaks, e.g. a missing initiator id or an oversized event.
    pub fn build(self) -> Result<AuditEvent, EventError> {
        let kind = self.action.resource_kind().as_str();
        let target = match &self.resource {
            Some((id, name)) => {
                let bad_target = |source| EventError::BadCrn { field: "target", source };
                let owner = match &self.resource_account {
                    Some(account) => self.log_source.with_account(account).map_err(bad_target)?,
                    None => self.log_source.clone(),
                };
                Target { crn: owner.resource(kind, id).map_err(bad_target)?, name: name.clone() }
            }
            None => Target { crn: self.log_source.clone(), name: String::new() },
        };
        let outcome = outcome_for(self.code);
        let message = self.message(&target, outcome == crate::event::Outcome::Failure);
        AuditEvent {
            id: self.id.unwrap_or_else(Uuid::now_v7),
            action: self.action,
            outcome,
            severity: severity_for(self.action, self.code),
            event_time: self.event_time.unwrap_or_else(EventTime::now),
            data_event: true,
            initiator: self.initiator,
            target,
            reason: Reason {
                code: self.code,
                reason_type: reason_phrase(self.code).to_owned(),
                reason_for_failure: self.reason_for_failure,
            },
            request_data: self.request_data,
            response_data: self.response_data,
            correlation_id: self.correlation_id.unwrap_or_else(|| Uuid::new_v4().to_string()),
            log_source_crn: self.log_source,
            save_service_copy: true,
            message,
        }
        .into_valid()
    }

    /// Returns the Activity Tracker message, `<service>: <verb> <object> <name>[ -failure]`; a
    /// read of the whole instance reads `list <object>s`. The collector's own events start
    /// with `qtrail`, e.g. `qtrail: export events us-east`.
    fn message(&self, target: &Target, failed: bool) -> String {
        let service = if self.action.is_collector() { self.action.service() } else { SERVICE_DISPLAY_NAME };
        let kind = self.action.object();
        let suffix = if failed { " -failure" } else { "" };
        if target.crn.is_instance() {
            if self.action.verb() == Verb::Read {
                return format!("{service}: list {kind}s{suffix}");
            }
            return format!("{service}: {} {kind}{suffix}", self.action.verb().as_str());
        }
        let name = if target.name.is_empty() { target.crn.resource_id() } else { &target.name };
        format!("{service}: {} {kind} {name}{suffix}", self.action.verb().as_str())
    }
}
