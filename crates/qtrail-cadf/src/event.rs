//! The audit event and its parts, as one canonical model from which the protobuf, AT-JSON and
//! CADF-JSON forms are derived.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use uuid::Uuid;

use crate::action::{Action, ResourceKind};
use crate::crn::Crn;
use crate::error::EventError;

/// A JSON object, as carried in `requestData` and `responseData`.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Activity Tracker `initiator.typeURI` of a user (`IBMid-…`).
pub const INITIATOR_USER: &str = "service/security/account/user";
/// Activity Tracker `initiator.typeURI` of a service id (`iam-ServiceId-…`).
pub const INITIATOR_SERVICE_ID: &str = "service/security/account/serviceid";

/// Initiator type URIs an event may carry (Activity Tracker event fields). Every one is also a
/// valid CADF resource type, since all start with the taxonomy node `service/security`.
pub const INITIATOR_TYPES: [&str; 5] = [
    INITIATOR_USER,
    INITIATOR_SERVICE_ID,
    "service/security/client/certificateid",
    "service/security/clientid",
    "service/security/account/service",
];

/// Activity Tracker `initiator.credential.type` values; empty means none was presented.
pub const CREDENTIAL_TYPES: [&str; 10] = [
    "token",
    "user",
    "apikey",
    "certificate",
    "public-access",
    "hmac",
    "compute-resource",
    "instance-identity-token",
    "apikey-serviceid",
    "s2s-authorization",
];

/// When an event happened: whole milliseconds since the Unix epoch, UTC. Millisecond precision
/// is what Activity Tracker timestamps carry, so every form of an event says the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(i64);

/// Earliest accepted event time, 1970-01-01T00:00:00Z.
const MIN_MILLIS: i64 = 0;
/// Latest accepted event time, 9999-12-31T23:59:59.999Z, so every form has a four-digit year.
const MAX_MILLIS: i64 = 253_402_300_799_999;

impl EventTime {
    /// Returns the current time, truncated to the millisecond.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }

    /// Returns the time `millis` milliseconds after the Unix epoch.
    ///
    /// # Errors
    /// Fails outside 1970-01-01 to 9999-12-31.
    pub fn from_unix_millis(millis: i64) -> Result<Self, EventError> {
        if !(MIN_MILLIS..=MAX_MILLIS).contains(&millis) {
            return Err(EventError::InvalidTime(format!("{millis} ms since the epoch")));
        }
        Ok(Self(millis))
    }

    /// Returns the time from seconds and nanoseconds, as a protobuf `Timestamp` holds it.
    ///
    /// # Errors
    /// Fails when the nanoseconds are not whole milliseconds or the time is out of range.
    pub fn from_unix_parts(seconds: i64, nanos: i32) -> Result<Self, EventError> {
        let describe = || format!("{seconds}s {nanos}ns since the epoch");
        if !(0..1_000_000_000).contains(&nanos) || nanos % 1_000_000 != 0 {
            return Err(EventError::InvalidTime(describe()));
        }
        let millis = seconds
            .checked_mul(1000)
            .and_then(|ms| ms.checked_add(i64::from(nanos / 1_000_000)))
            .ok_or_else(|| EventError::InvalidTime(describe()))?;
        Self::from_unix_millis(millis).map_err(|_| EventError::InvalidTime(describe()))
    }

    /// Returns milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i64 {
        self.0
    }

    fn datetime(self) -> DateTime<Utc> {
        // The range is checked at construction, so the conversion always succeeds.
        Utc.timestamp_millis_opt(self.0).single().unwrap_or_default()
    }

    /// Returns the RFC 3339 form with milliseconds, `2024-05-01T12:34:56.780Z`.
    pub fn to_rfc3339(self) -> String {
        self.datetime().to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Returns the Activity Tracker form, `2024-05-01T12:34:56.780+0000`. IBM documents the
    /// pattern as Java's `yyyy-MM-dd'T'HH:mm:ss.SSZ`, whose `SS` prints milliseconds; three
    /// digits are always written so that the value is unambiguous.
    pub fn to_at_string(self) -> String {
        self.datetime().format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
    }

    /// Returns the CADF form (DSP0262: an offset, never `Z`), `2024-05-01T12:34:56.780000+00:00`.
    pub fn to_cadf_string(self) -> String {
        self.datetime().format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

impl FromStr for EventTime {
    type Err = EventError;

    /// Parses RFC 3339 as well as the Activity Tracker and CADF forms (offset with or without a
    /// colon). Fractions finer than a millisecond must be zero.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || EventError::InvalidTime(s.to_owned());
        let parsed = DateTime::parse_from_rfc3339(s)
            .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
            .map_err(|_| invalid())?;
        if parsed.timestamp_subsec_nanos() % 1_000_000 != 0 {
            return Err(invalid());
        }
        Self::from_unix_millis(parsed.timestamp_millis()).map_err(|_| invalid())
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Whether an action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It succeeded.
    Success,
    /// It failed or was refused.
    Failure,
    /// It was accepted and has not finished.
    Pending,
}

impl Outcome {
    /// Returns the lowercase name used by both JSON forms.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Pending => "pending",
        }
    }
}

impl FromStr for Outcome {
    type Err = EventError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "success" => Ok(Outcome::Success),
            "failure" => Ok(Outcome::Failure),
            "pending" => Ok(Outcome::Pending),
            _ => Err(EventError::UnknownValue { field: "outcome", value: s.to_owned() }),
        }
    }
}

/// How much an event matters; ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Routine.
    Normal,
    /// Worth a look: changes and failures.
    Warning,
    /// Security-relevant: deletes and refused access.
    Critical,
}

impl Severity {
    /// Returns the lowercase name used by both JSON forms.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Normal => "normal",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl FromStr for Severity {
    type Err = EventError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "normal" => Ok(Severity::Normal),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            _ => Err(EventError::UnknownValue { field: "severity", value: s.to_owned() }),
        }
    }
}

/// Who performed the action. Never holds the credential itself, only its type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Initiator {
    /// IAM id, e.g. `IBMid-550003ABCD`.
    pub id: String,
    /// Human name, e.g. an e-mail address.
    pub name: String,
    /// One of [`INITIATOR_TYPES`].
    pub type_uri: String,
    /// One of [`CREDENTIAL_TYPES`], or empty when no credential was presented.
    pub credential_type: String,
    /// Originating IP address.
    pub host_address: String,
    /// Client software (`user-agent`).
    pub host_agent: String,
}

impl Initiator {
    /// Returns `IPv6` for an address with a colon and `IPv4` otherwise, as Activity Tracker's
    /// `initiator.host.addressType` expects.
    pub fn host_address_type(&self) -> &'static str {
        if self.host_address.contains(':') { "IPv6" } else { "IPv4" }
    }
}

/// The resource the action was performed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// CRN of the service instance (for lists and failed creates) or of a program or job.
    pub crn: Crn,
    /// Human name: the program name or job id; may be empty.
    pub name: String,
}

impl Target {
    /// Returns the kind of resource targeted, or `None` when the target is the service instance.
    pub fn resource_kind(&self) -> Option<ResourceKind> {
        match self.crn.resource_type() {
            "program" => Some(ResourceKind::Program),
            "job" => Some(ResourceKind::Job),
            "log" => Some(ResourceKind::Log),
            "console" => Some(ResourceKind::Console),
            "alert-rule" => Some(ResourceKind::AlertRule),
            _ => None,
        }
    }

    /// Returns the Activity Tracker type URI, `quantum-computing/<instance|program|job>`.
    pub fn type_uri(&self) -> String {
        let object = if self.crn.is_instance() { "instance" } else { self.crn.resource_type() };
        format!("{}/{object}", self.crn.service_name())
    }

    /// Returns the CADF taxonomy resource type: `service/compute` for a Qiskit Runtime
    /// instance, `data/workload/app` for a program, `data/workload/job` for a job; on the
    /// collector, `service/security` for the collector (and its console), `data/file/log` for a
    /// location's log, `data/security/policy` for an alert rule.
    pub fn cadf_type_uri(&self) -> &'static str {
        match self.resource_kind() {
            None if self.crn.service_name() == crate::action::COLLECTOR_SERVICE_NAME => "service/security",
            None => "service/compute",
            Some(ResourceKind::Program) => "data/workload/app",
            Some(ResourceKind::Job) => "data/workload/job",
            Some(ResourceKind::Log) => "data/file/log",
            Some(ResourceKind::Console) => "service/security",
            Some(ResourceKind::AlertRule) => "data/security/policy",
        }
    }
}

/// Why an action ended the way it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// HTTP-equivalent status code.
    pub code: u16,
    /// Reason phrase, e.g. `Conflict`.
    pub reason_type: String,
    /// For failures: what went wrong; empty otherwise.
    pub reason_for_failure: String,
}

/// One audit event. Build it with [`crate::EventBuilder`], or decode it from a wire or JSON
/// form; both paths escape control characters and validate (see [`AuditEvent::into_valid`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Unique id (UUIDv7 from qtrail publishers).
    pub id: Uuid,
    /// What was done.
    pub action: Action,
    /// Whether it succeeded.
    pub outcome: Outcome,
    /// How much it matters.
    pub severity: Severity,
    /// When it happened.
    pub event_time: EventTime,
    /// True for data events; every Qiskit Runtime action is one.
    pub data_event: bool,
    /// Who did it.
    pub initiator: Initiator,
    /// What it was done to.
    pub target: Target,
    /// Why it ended that way.
    pub reason: Reason,
    /// Service-defined request details; never secrets.
    pub request_data: Option<JsonObject>,
    /// Service-defined response details.
    pub response_data: Option<JsonObject>,
    /// Correlates the events of one logical operation.
    pub correlation_id: String,
    /// CRN of the service instance that generated the event.
    pub log_source_crn: Crn,
    /// Whether the generating service keeps a copy.
    pub save_service_copy: bool,
    /// One-line human summary.
    pub message: String,
}

impl AuditEvent {
    /// Returns the location of the event: the location segment of its log source CRN. Only the
    /// collector of this location may store it.
    pub fn location(&self) -> &str {
        self.log_source_crn.location()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_forms() {
        let time: EventTime = "2024-05-01T12:34:56.78Z".parse().unwrap();
        assert_eq!(time.unix_millis(), 1_714_566_896_780);
        assert_eq!(time.to_rfc3339(), "2024-05-01T12:34:56.780Z");
        assert_eq!(time.to_at_string(), "2024-05-01T12:34:56.780+0000");
        assert_eq!(time.to_cadf_string(), "2024-05-01T12:34:56.780000+00:00");
        for form in
            [time.to_rfc3339(), time.to_at_string(), time.to_cadf_string(), "2024-05-01T14:34:56.78+02:00".into()]
        {
            assert_eq!(form.parse::<EventTime>().unwrap(), time, "{form}");
        }
        // The real Activity Tracker sample with two fractional digits.
        assert_eq!(
            "2022-06-30T03:12:49.63+0000".parse::<EventTime>().unwrap().to_at_string(),
            "2022-06-30T03:12:49.630+0000"
        );
    }

    #[test]
    fn event_time_rejects_bad_values() {
        for bad in
            ["", "yesterday", "2024-05-01", "2024-05-01T12:34:56.7801Z", "1969-12-31T23:59:59Z", "2024-13-01T00:00:00Z"]
        {
            assert!(matches!(bad.parse::<EventTime>(), Err(EventError::InvalidTime(_))), "{bad:?}");
        }
        assert!(EventTime::from_unix_parts(1, 1).is_err());
        assert!(EventTime::from_unix_parts(1, -1_000_000).is_err());
        assert!(EventTime::from_unix_parts(i64::MAX, 0).is_err());
        assert!(EventTime::from_unix_millis(-1).is_err());
        assert!(EventTime::from_unix_millis(MAX_MILLIS + 1).is_err());
        assert_eq!(EventTime::from_unix_parts(2, 5_000_000).unwrap().unix_millis(), 2005);
    }
}
