//! The one error type of the runtime's calls and its mapping to gRPC status codes.
//!
//! Messages are lowercase, have no trailing period, name the field at fault and never carry a
//! secret. Caller-supplied values in them are escaped and shortened.

use qtrail_cadf::text::{escape_control, truncate};

use crate::store::StoreError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No API key, or one no principal has.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A request field is missing or malformed.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field, as named in the proto.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The request body is not the method's message (e.g. a string field is not UTF-8); the
    /// handler never saw it.
    #[error("invalid request: {0}")]
    Undecodable(String),
    /// The resource does not exist or belongs to another account.
    #[error("{kind} `{id}` not found")]
    NotFound {
        /// `program` or `job`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A program of that name already exists in the account.
    #[error("program name `{0}` already exists in this account")]
    NameTaken(String),
    /// The caller may see the resource but not change it.
    #[error("{0}")]
    PermissionDenied(String),
    /// The resource is in a state that does not allow the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A quota is used up, such as the jobs an account may have queued or running.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The outbox is full: no call may be answered until the publisher drains it.
    #[error("audit outbox full")]
    OutboxFull,
    /// The call's audit event could not be made durable, so the call did nothing.
    #[error("audit log unavailable")]
    AuditUnavailable,
    /// A receipt from the collector failed verification and `--on-receipt-failure refuse` is
    /// set: no call is answered until the runtime restarts.
    #[error("audit log failed verification: calls refused until the runtime restarts")]
    ReceiptFailed,
    /// The store failed; the call did nothing.
    #[error("storage failed")]
    Store(#[source] StoreError),
}

/// Longest error message a caller gets and an event records, in bytes. Messages quote caller
/// input (a parser error names the offending identifier); cut here, the one place every message
/// passes through, an answer stays small and its event always fits in 16 KiB.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// Shorthand for call results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Returns an INVALID_ARGUMENT error for `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument { field, reason: reason.into() }
    }

    /// Returns a NOT_FOUND error for a program or job id given by the caller.
    pub fn not_found(kind: &'static str, id: &str) -> Self {
        Error::NotFound { kind, id: quote(id) }
    }

    /// Returns the message for the caller and the event: control characters escaped, at most
    /// [`MAX_MESSAGE_BYTES`], with a visible marker where it was cut.
    pub fn message(&self) -> String {
        let full = self.to_string();
        truncate(&escape_control(&full), MAX_MESSAGE_BYTES).into_owned()
    }

    /// Returns the gRPC code of the error. Exhaustive, so a new variant must pick one.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Error::InvalidArgument { .. } | Error::Undecodable(_) => tonic::Code::InvalidArgument,
            Error::NotFound { .. } => tonic::Code::NotFound,
            Error::NameTaken(_) => tonic::Code::AlreadyExists,
            Error::PermissionDenied(_) => tonic::Code::PermissionDenied,
            Error::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            Error::ResourceExhausted(_) => tonic::Code::ResourceExhausted,
            Error::OutboxFull | Error::AuditUnavailable | Error::ReceiptFailed => tonic::Code::Unavailable,
            Error::Store(StoreError::Database(_)) => tonic::Code::Unavailable,
            Error::Store(StoreError::Corrupt { .. }) => tonic::Code::Internal,
        }
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        Error::Store(err)
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        tonic::Status::new(err.code(), err.message())
    }
}

/// Returns a caller-supplied value fit for an error message: control characters escaped, at
/// most 64 characters.
pub fn quote(value: &str) -> String {
    let escaped = escape_control(value);
    if escaped.chars().count() <= 64 {
        return escaped.into_owned();
    }
    let mut short: String = escaped.chars().take(61).collect();
    short.push_str("...");
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_name_the_field() {
        let cases = [
            (
                Error::invalid("limit", "must be 0 to 1000, got -1"),
                tonic::Code::InvalidArgument,
                "invalid limit: must be 0 to 1000, got -1",
            ),
            (Error::not_found("job", "a\nb"), tonic::Code::NotFound, "job `a\\nb` not found"),
            (
                Error::NameTaken("x".into()),
                tonic::Code::AlreadyExists,
                "program name `x` already exists in this account",
            ),
            (Error::OutboxFull, tonic::Code::Unavailable, "audit outbox full"),
            (Error::AuditUnavailable, tonic::Code::Unavailable, "audit log unavailable"),
            (
                Error::ReceiptFailed,
                tonic::Code::Unavailable,
                "audit log failed verification: calls refused until the runtime restarts",
            ),
        ];
        for (err, code, message) in cases {
            let status = tonic::Status::from(err);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), message);
        }
        assert_eq!(quote(&"x".repeat(100)).len(), 64);
        let huge = Error::invalid("source", format!("unknown gate `{}`", "g".repeat(20_000)));
        let status = tonic::Status::from(huge);
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        assert!(status.message().starts_with("invalid source: unknown gate `ggg"));
        assert!(status.message().ends_with(qtrail_cadf::text::TRUNCATION_MARKER));
    }
}
