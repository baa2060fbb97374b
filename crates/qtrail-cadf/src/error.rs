//! The one error type of the event model: everything that can be wrong with an event, whether
//! it was built in code, decoded from protobuf or parsed from one of the JSON forms.

use crate::crn::CrnError;

/// Why an event is not acceptable. Messages are lowercase and name the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The event has no id.
    #[error("missing event id")]
    MissingId,
    /// The event id is not a UUID.
    #[error("invalid event id `{0}`: not a uuid")]
    InvalidId(String),
    /// The action is not one of the eight Qiskit Runtime actions.
    #[error("unknown action `{0}`")]
    UnknownAction(String),
    /// A required field is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// An enumerated field holds a value outside its vocabulary.
    #[error("unknown {field} `{value}`")]
    UnknownValue {
        /// Which field.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// The event time is malformed, out of range or finer than a millisecond.
    #[error("invalid event time `{0}`")]
    InvalidTime(String),
    /// The initiator has no id.
    #[error("missing initiator id")]
    MissingInitiatorId,
    /// A CRN field does not hold a valid CRN.
    #[error("invalid {field} crn: {source}")]
    BadCrn {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        source: CrnError,
    },
    /// A CRN names a resource where a service instance is required, or the reverse.
    #[error("{field} must be a quantum-computing service instance crn, got `{crn}`")]
    NotAnInstance {
        /// Which field.
        field: &'static str,
        /// The CRN.
        crn: String,
    },
    /// A CRN belongs to another service than `quantum-computing`.
    #[error("{field} crn names service `{service}`, expected `quantum-computing`")]
    ForeignService {
        /// Which field.
        field: &'static str,
        /// The service the CRN names.
        service: String,
    },
    /// The target is not the log source's service instance (same location and instance id) or
    /// one of its resources.
    #[error("target `{target}` is not part of log source `{log_source}`")]
    TargetOutsideLogSource {
        /// The target CRN.
        target: String,
        /// The log source CRN.
        log_source: String,
    },
    /// The target is a resource of another kind than the action's.
    #[error("action `{action}` cannot target a `{resource_type}` resource")]
    TargetKindMismatch {
        /// The action.
        action: String,
        /// The target's resource type.
        resource_type: String,
    },
    /// The target type URI does not match the target CRN.
    #[error("target type `{given}` does not match the target crn, expected `{expected}`")]
    TargetTypeMismatch {
        /// The type URI given.
        given: String,
        /// The type URI the CRN implies.
        expected: String,
    },
    /// The reason code is not an HTTP status code.
    #[error("reason code {0} is not an http status code (100 to 599)")]
    InvalidReasonCode(u32),
    /// The outcome contradicts the reason code.
    #[error("outcome `{outcome}` contradicts reason code {code}")]
    OutcomeMismatch {
        /// The outcome.
        outcome: &'static str,
        /// The reason code.
        code: u16,
    },
    /// A text field is longer than its limit.
    #[error("{field} is {len} bytes, over the limit of {limit}")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The whole event is larger than the 16 KiB limit.
    #[error("event is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Size of the event's canonical bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A number in request or response data is NaN or infinite.
    #[error("{0} holds a number that is not finite")]
    NonFiniteNumber(&'static str),
    /// Protobuf bytes are not an `AuditEvent`.
    #[error("event does not decode: {0}")]
    Undecodable(String),
    /// A JSON document is not an event of the expected form.
    #[error("invalid {form}: {detail}")]
    Json {
        /// Which form (`at-json`, `cadf-json`).
        form: &'static str,
        /// What the parser said.
        detail: String,
    },
}
