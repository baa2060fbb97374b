//! Turning a call and its outcome into its audit event.
//!
//! The service fills an [`AuditRecord`] as a call proceeds (the target once known, request and
//! response details); [`Auditor::event`] adds who called, from where, the log source CRN and the
//! outcome, and builds the event with `qtrail_cadf::EventBuilder`. Request and response data are
//! camelCase, bounded, and never hold a secret or a program's full source.

use qtrail_cadf::event::INITIATOR_USER;
use qtrail_cadf::{Action, AuditEvent, Crn, EventBuilder, EventError, Initiator, JsonObject, Location};
use serde_json::Value;

use crate::auth::{CallContext, Caller};
use crate::error::Error;

/// Initiator id of a caller without a valid API key.
pub const ANONYMOUS: &str = "anonymous";
/// Credential type of an API key.
const APIKEY: &str = "apikey";
/// Longest string kept in request or response data, in characters.
const MAX_DATA_CHARS: usize = 256;

/// Returns the HTTP-equivalent status of a gRPC code, for `reason.reasonCode`. The one place
/// this mapping lives.
pub fn http_status(code: tonic::Code) -> u16 {
    match code {
        tonic::Code::Ok => 200,
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => 400,
        tonic::Code::Unauthenticated => 401,
        tonic::Code::PermissionDenied => 403,
        tonic::Code::NotFound => 404,
        tonic::Code::AlreadyExists | tonic::Code::FailedPrecondition | tonic::Code::Aborted => 409,
        tonic::Code::ResourceExhausted => 429,
        tonic::Code::Cancelled => 499,
        tonic::Code::Unimplemented => 501,
        tonic::Code::Unavailable => 503,
        tonic::Code::DeadlineExceeded => 504,
        tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::DataLoss => 500,
    }
}

/// What a call tells its audit event.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    /// The action.
    pub action: Action,
    /// Target program or job: (id, name); `None` targets the service instance.
    pub target: Option<(String, String)>,
    /// The account that owns the target when it is not the caller's (another account's public
    /// program); `None`: the caller's, which is also what a refused call on a missing or hidden
    /// resource names, so that its event reveals nothing the answer hid.
    pub target_account: Option<String>,
    /// Status of a successful call (200, or 201 for creates).
    pub success_status: u16,
    /// Request details.
    pub request: JsonObject,
    /// Response details.
    pub response: JsonObject,
}

impl AuditRecord {
    /// Starts a record of `action` on the service instance.
    pub fn new(action: Action) -> Self {
        Self {
            action,
            target: None,
            target_account: None,
            success_status: 200,
            request: JsonObject::new(),
            response: JsonObject::new(),
        }
    }

    /// Targets a program or job.
    pub fn target(&mut self, id: &str, name: &str) {
        self.target = Some((id.to_owned(), name.to_owned()));
    }

    /// Names the account that owns the target, once the call knows and may tell.
    pub fn target_owner(&mut self, account: &str) {
        self.target_account = Some(account.to_owned());
    }

    /// Records the id of the program or job a call asks for, as a request detail and as the
    /// target, before anything is checked: a call refused early (a bad key, a bad id) still
    /// names what was asked for, and reads as a read of it rather than a list.
    pub fn requested(&mut self, key: &str, id: &str) {
        self.request(key, id);
        if !id.is_empty() {
            self.target(id, "");
        }
    }

    /// Adds a request detail.
    pub fn request(&mut self, key: &str, value: impl Into<Value>) {
        self.request.insert(key.to_owned(), bounded(value.into()));
    }

    /// Adds a response detail.
    pub fn response(&mut self, key: &str, value: impl Into<Value>) {
        self.response.insert(key.to_owned(), bounded(value.into()));
    }
}

/// Returns `value` with every string escaped and shortened and every list and object cut, so
/// that caller input can neither inject control characters nor push an event over its 16 KiB
/// limit (which would turn a bad request into an unavailable service).
pub fn bounded(value: Value) -> Value {
    bounded_to(value, MAX_DATA_CHARS)
}

/// Most items kept of a list or object in event data.
const MAX_DATA_ITEMS: usize = 16;
/// Longest string kept inside a list or object, in characters.
const MAX_NESTED_CHARS: usize = 64;

fn bounded_to(value: Value, max_chars: usize) -> Value {
    match value {
        Value::String(text) => {
            let escaped = qtrail_cadf::text::escape_control(&text);
            Value::String(escaped.chars().take(max_chars).collect())
        }
        Value::Array(items) => Value::Array(
            items.into_iter().take(MAX_DATA_ITEMS).map(|item| bounded_to(item, MAX_NESTED_CHARS)).collect(),
        ),
        Value::Object(object) => Value::Object(
            object
                .into_iter()
                .take(MAX_DATA_ITEMS)
                .map(|(key, item)| (key.chars().take(MAX_NESTED_CHARS).collect(), bounded_to(item, max_chars)))
                .collect(),
        ),
        other => other,
    }
}

/// Builds the events of one runtime instance.
#[derive(Debug, Clone)]
pub struct Auditor {
    location: Location,
    instance: String,
    operator_account: String,
}

impl Auditor {
    /// Returns an auditor for the instance `instance` in `location`; events of unauthenticated
    /// calls belong to `operator_account`.
    pub fn new(location: Location, instance: String, operator_account: String) -> Self {
        Self { location, instance, operator_account }
    }

    /// Returns the log source CRN of a call: the caller's account, or the operator's.
    ///
    /// # Errors
    /// [`EventError::BadCrn`] when the account or instance cannot be in a CRN (checked at start).
    pub fn log_source(&self, caller: &Caller) -> Result<Crn, EventError> {
        let account = match caller {
            Caller::Principal(principal) => principal.account.as_str(),
            Caller::UnknownKey | Caller::Anonymous => self.operator_account.as_str(),
        };
        Crn::instance(&self.location, account, &self.instance)
            .map_err(|source| EventError::BadCrn { field: "log source", source })
    }

    /// Returns the event of a call that ended with `outcome`.
    ///
    /// # Errors
    /// [`EventError`] when the event breaks a rule of the model (a bug, not caller input).
    pub fn event(
        &self,
        ctx: &CallContext,
        record: &AuditRecord,
        outcome: Result<(), &Error>,
    ) -> Result<AuditEvent, EventError> {
        let initiator = match &ctx.caller {
            Caller::Principal(principal) => Initiator {
                id: principal.iam_id.clone(),
                name: principal.name.clone(),
                type_uri: INITIATOR_USER.to_owned(),
                credential_type: APIKEY.to_owned(),
                host_address: ctx.host_address.clone(),
                host_agent: ctx.user_agent.clone(),
            },
            Caller::UnknownKey | Caller::Anonymous => Initiator {
                id: ANONYMOUS.to_owned(),
                name: String::new(),
                type_uri: INITIATOR_USER.to_owned(),
                credential_type: if ctx.caller == Caller::UnknownKey { APIKEY.to_owned() } else { String::new() },
                host_address: ctx.host_address.clone(),
                host_agent: ctx.user_agent.clone(),
            },
        };
        let mut builder = EventBuilder::new(record.action, self.log_source(&ctx.caller)?, initiator)
            .correlation_id(ctx.correlation_id.clone())
            .request_data(record.request.clone())
            .response_data(record.response.clone());
        if let Some((id, name)) = &record.target {
            builder = builder.target(id, name);
            if let Some(account) = &record.target_account {
                builder = builder.target_account(account);
            }
        }
        builder = match outcome {
            Ok(()) => builder.status(record.success_status),
            Err(err) => builder.failure(http_status(err.code()), err.message()),
        };
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_grpc_codes_to_http_statuses() {
        let cases = [
            (tonic::Code::Ok, 200),
            (tonic::Code::InvalidArgument, 400),
            (tonic::Code::OutOfRange, 400),
            (tonic::Code::Unauthenticated, 401),
            (tonic::Code::PermissionDenied, 403),
            (tonic::Code::NotFound, 404),
            (tonic::Code::AlreadyExists, 409),
            (tonic::Code::FailedPrecondition, 409),
            (tonic::Code::Aborted, 409),
            (tonic::Code::ResourceExhausted, 429),
            (tonic::Code::Cancelled, 499),
            (tonic::Code::Unimplemented, 501),
            (tonic::Code::Unavailable, 503),
            (tonic::Code::DeadlineExceeded, 504),
            (tonic::Code::Internal, 500),
            (tonic::Code::Unknown, 500),
            (tonic::Code::DataLoss, 500),
        ];
        for (code, status) in cases {
            assert_eq!(http_status(code), status, "{code:?}");
        }
    }

    #[test]
    fn bounds_caller_strings_in_event_data() {
        let long = Value::String("a\n".repeat(500));
        let Value::String(kept) = bounded(long) else { panic!("still a string") };
        assert_eq!(kept.chars().count(), MAX_DATA_CHARS);
        assert!(!kept.contains('\n'));
        let many = Value::Array(vec![Value::String("é".repeat(300)); 1000]);
        let Value::Array(items) = bounded(many) else { panic!("still a list") };
        assert_eq!(items.len(), MAX_DATA_ITEMS);
        assert!(items.iter().all(|item| item.as_str().unwrap().chars().count() == MAX_NESTED_CHARS));
    }
}
