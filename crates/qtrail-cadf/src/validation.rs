//! Validation of events: the structural rules every stored event obeys, whichever form it
//! arrived in.

use crate::canonical::canonical_bytes;
use crate::crn::{Crn, SERVICE_NAME};
use crate::error::EventError;
use crate::event::{AuditEvent, CREDENTIAL_TYPES, INITIATOR_TYPES};
use crate::proto::normalize_numbers;
use crate::status::outcome_fits;
use crate::text::escape_in_place;

/// Largest event accepted: 16 KiB of canonical bytes, Activity Tracker's per-event limit.
pub const MAX_EVENT_BYTES: usize = 16 * 1024;

/// Largest id-like text field (initiator id, correlation id).
pub const MAX_ID_BYTES: usize = 256;

/// A valid event with its canonical bytes. Validation computes them for the 16 KiB check;
/// whoever chains or hashes the event next takes them from here rather than computing them
/// again. Only validation makes one, so the bytes are always the event's own: a chain hash
/// taken from them is the event's.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    /// The event, escaped and valid.
    event: AuditEvent,
    /// `canonical_bytes(&event)`.
    canonical: Vec<u8>,
}

impl ValidEvent {
    /// Returns the event.
    pub fn event(&self) -> &AuditEvent {
        &self.event
    }

    /// Returns the event's canonical bytes.
    pub fn canonical(&self) -> &[u8] {
        &self.canonical
    }

    /// Returns the event and its canonical bytes.
    pub fn into_parts(self) -> (AuditEvent, Vec<u8>) {
        (self.event, self.canonical)
    }
}

impl AuditEvent {
    /// Escapes control characters in every text field (see [`crate::text`]).
    pub fn escape_text(&mut self) {
        let initiator = &mut self.initiator;
        for field in [
            &mut initiator.id,
            &mut initiator.name,
            &mut initiator.type_uri,
            &mut initiator.credential_type,
            &mut initiator.host_address,
            &mut initiator.host_agent,
        ] {
            escape_in_place(field);
        }
        for field in [
            &mut self.target.name,
            &mut self.reason.reason_type,
            &mut self.reason.reason_for_failure,
            &mut self.correlation_id,
            &mut self.message,
        ] {
            escape_in_place(field);
        }
    }

    /// Checks the event against the model's rules.
    ///
    /// # Errors
    /// Returns the first rule broken, e.g. [`EventError::MissingInitiatorId`] or
    /// [`EventError::TooLarge`].
    pub fn validate(&self) -> Result<(), EventError> {
        self.checked_canonical_bytes().map(drop)
    }

    /// Checks the event against the model's rules and returns its canonical bytes, which the
    /// size check computes anyway.
    fn checked_canonical_bytes(&self) -> Result<Vec<u8>, EventError> {
        if self.id.is_nil() {
            return Err(EventError::MissingId);
        }
        self.validate_initiator()?;
        check_instance_crn("log source", &self.log_source_crn, self.action.service())?;
        self.validate_target()?;
        self.validate_reason()?;
        check_length("correlation id", &self.correlation_id, MAX_ID_BYTES)?;
        if self.message.is_empty() {
            return Err(EventError::Missing("message"));
        }
        let canonical = canonical_bytes(self);
        if canonical.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge { size: canonical.len(), limit: MAX_EVENT_BYTES });
        }
        Ok(canonical)
    }

    /// Escapes control characters and normalises numbers in request and response data (see
    /// [`crate::canonical`]), then validates: what every constructor of an event runs.
    ///
    /// # Errors
    /// As [`AuditEvent::validate`].
    pub fn into_valid(self) -> Result<Self, EventError> {
        self.into_valid_event().map(|valid| valid.event)
    }

    /// As [`AuditEvent::into_valid`], and keeps the canonical bytes that validation computed.
    ///
    /// # Errors
    /// As [`AuditEvent::validate`].
    pub fn into_valid_event(mut self) -> Result<ValidEvent, EventError> {
        self.escape_text();
        for data in [&mut self.request_data, &mut self.response_data].into_iter().flatten() {
            data.values_mut().for_each(normalize_numbers);
        }
        let canonical = self.checked_canonical_bytes()?;
        Ok(ValidEvent { event: self, canonical })
    }

    fn validate_initiator(&self) -> Result<(), EventError> {
        let initiator = &self.initiator;
        if initiator.id.is_empty() {
            return Err(EventError::MissingInitiatorId);
        }
        check_length("initiator id", &initiator.id, MAX_ID_BYTES)?;
        if !INITIATOR_TYPES.contains(&initiator.type_uri.as_str()) {
            return Err(EventError::UnknownValue { field: "initiator type", value: initiator.type_uri.clone() });
        }
        let credential = initiator.credential_type.as_str();
        if !credential.is_empty() && !CREDENTIAL_TYPES.contains(&credential) {
            return Err(EventError::UnknownValue { field: "credential type", value: credential.to_owned() });
        }
        Ok(())
    }

    fn validate_target(&self) -> Result<(), EventError> {
        let target = &self.target.crn;
        if target.service_name() != self.action.service() {
            return Err(EventError::ForeignService { field: "target", service: target.service_name().to_owned() });
        }
        // The account may differ: a public program of one account is read from another, and
        // the event belongs to the caller's account while the program keeps its owner's CRN.
        let same_instance = target.location() == self.log_source_crn.location()
            && target.service_instance() == self.log_source_crn.service_instance();
        if !same_instance {
            return Err(EventError::TargetOutsideLogSource {
                target: target.to_string(),
                log_source: self.log_source_crn.to_string(),
            });
        }
        let kind_fits = target.is_instance() || self.target.resource_kind() == Some(self.action.resource_kind());
        if !kind_fits {
            return Err(EventError::TargetKindMismatch {
                action: self.action.to_string(),
                resource_type: target.resource_type().to_owned(),
            });
        }
        Ok(())
    }

    fn validate_reason(&self) -> Result<(), EventError> {
        let code = self.reason.code;
        if !(100..=599).contains(&code) {
            return Err(EventError::InvalidReasonCode(u32::from(code)));
        }
        if !outcome_fits(self.outcome, code) {
            return Err(EventError::OutcomeMismatch { outcome: self.outcome.as_str(), code });
        }
        Ok(())
    }
}

/// Checks that `crn` names an instance of `service`: a `quantum-computing` service instance owned
/// by an account, or a `qtrail` collector, which no account owns.
fn check_instance_crn(field: &'static str, crn: &Crn, service: &str) -> Result<(), EventError> {
    if crn.service_name() != service {
        return Err(EventError::ForeignService { field, service: crn.service_name().to_owned() });
    }
    let owned = crn.account().is_some() || service != SERVICE_NAME;
    if !crn.is_instance() || !owned || crn.service_instance().is_empty() {
        return Err(EventError::NotAnInstance { field, crn: crn.to_string() });
    }
    Ok(())
}

fn check_length(field: &'static str, value: &str, limit: usize) -> Result<(), EventError> {
    if value.len() > limit {
        return Err(EventError::FieldTooLong { field, len: value.len(), limit });
    }
    Ok(())
}
