//! The collector's one error type and its single mapping to gRPC status codes.
//!
//! Service code returns [`Error`]; only the gRPC adapters turn it into a [`tonic::Status`], through
//! the one exhaustive `From` below, so that adding a variant forces a decision about its code.
//! Messages are lowercase, carry no trailing period and name the field at fault.

use crate::store::StoreError;

/// Result of collector operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a collector request can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// The location has no collector (read side and admin).
    #[error("no collector for location `{0}`")]
    CollectorNotFound(String),
    /// The location's chain holds no event at the position asked for.
    #[error("no event at location_seq {location_seq} of location `{location}`")]
    EventNotFound {
        /// The location.
        location: String,
        /// The position asked for.
        location_seq: u64,
    },
    /// What a proof was asked for does not exist: no such event, or no checkpoint of that size.
    #[error("{0}")]
    LeafNotFound(String),
    /// A collector already exists for the location.
    #[error("a collector for location `{0}` already exists")]
    CollectorExists(String),
    /// The request is valid but the collector's state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller sends more than the collector accepts.
    #[error("{0}")]
    ResourceExhausted(String),
    /// No bearer token, or one the tokens file does not list.
    #[error("missing or unknown bearer token in `authorization`")]
    Unauthenticated,
    /// The token is known but its role may not call this service.
    #[error("token `{name}` has role `{role}`, this service needs role `{needed}`")]
    PermissionDenied {
        /// The token's name from the tokens file (never the token itself).
        name: String,
        /// The token's role.
        role: &'static str,
        /// The role the service needs.
        needed: &'static str,
    },
    /// A publisher token opened a Publish stream for a location its `locations` do not name.
    #[error("token `{name}` may not publish to location `{location}`")]
    LocationDenied {
        /// The token's name.
        name: String,
        /// The location of the Hello.
        location: String,
    },
    /// A Publish stream claims a publisher id bound to another token, or to the same token with
    /// another client certificate (`NAME@cert:sha256:…`).
    #[error("publisher `{publisher_id}` is bound to token `{bound}`, not `{caller}`")]
    PublisherBound {
        /// The publisher id claimed.
        publisher_id: String,
        /// The credential the id is bound to: a token name, or a name and certificate.
        bound: String,
        /// The stream's credential.
        caller: String,
    },
    /// A Publish stream without a client certificate, where publishers are bound to one
    /// (mutual TLS requires one, so only a misconfigured server gets here).
    #[error("publishing needs a client certificate: publishers are bound to client certificates")]
    NoClientCertificate,
    /// No alert rule of that name in the location.
    #[error("no alert rule `{name}` in location `{location}`")]
    AlertRuleNotFound {
        /// The location.
        location: String,
        /// The rule's name.
        name: String,
    },
    /// The location has an alert rule of that name already.
    #[error("alert rule `{name}` already exists in location `{location}`")]
    AlertRuleExists {
        /// The location.
        location: String,
        /// The rule's name.
        name: String,
    },
    /// The collector is shutting down; the caller should retry elsewhere or later.
    #[error("collector is shutting down")]
    ShuttingDown,
    /// A read (or change) could not be recorded on the trail, so it was refused: the trail's
    /// own use is recorded before it is answered ([`crate::usage`]).
    #[error("cannot record this read on the trail: {0}")]
    NotRecorded(String),
    /// The store failed or holds data it cannot read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// Returns an [`Error::InvalidArgument`] with `message`, which must name the field: the one
    /// way bad input is refused, on the gRPC side and in the console's API alike.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }
}

/// Most bytes of an error message sent to a caller. Messages quote the field at fault, which a
/// caller can make megabytes long; sent whole, the status would overflow the HTTP/2 header limit
/// and reach the caller as a bare INTERNAL protocol error instead of its code.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 1024;

/// Returns `message` cut to [`MAX_STATUS_MESSAGE_BYTES`] at a character boundary, marked with `…`.
fn bounded(mut message: String) -> String {
    if message.len() <= MAX_STATUS_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_STATUS_MESSAGE_BYTES - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push('…');
    message
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let message = bounded(err.to_string());
        match err {
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            Error::CollectorNotFound(_) => tonic::Status::not_found(message),
            Error::EventNotFound { .. } => tonic::Status::not_found(message),
            Error::LeafNotFound(_) => tonic::Status::not_found(message),
            Error::CollectorExists(_) => tonic::Status::already_exists(message),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            Error::ResourceExhausted(_) => tonic::Status::resource_exhausted(message),
            Error::Unauthenticated => tonic::Status::unauthenticated(message),
            Error::PermissionDenied { .. } => tonic::Status::permission_denied(message),
            Error::LocationDenied { .. } => tonic::Status::permission_denied(message),
            Error::PublisherBound { .. } => tonic::Status::permission_denied(message),
            Error::NoClientCertificate => tonic::Status::unauthenticated(message),
            Error::AlertRuleNotFound { .. } => tonic::Status::not_found(message),
            Error::AlertRuleExists { .. } => tonic::Status::already_exists(message),
            Error::ShuttingDown => tonic::Status::unavailable(message),
            Error::NotRecorded(_) => tonic::Status::unavailable(message),
            Error::Store(store) => match store {
                StoreError::CollectorExists(_) => tonic::Status::already_exists(message),
                StoreError::NoCollector(_) => tonic::Status::not_found(message),
                // A record that no longer decodes is lost data, not a passing failure.
                StoreError::Corrupt(_) => tonic::Status::data_loss(message),
                // Storage failures are worth retrying: nothing was acknowledged.
                StoreError::Backend(_) => tonic::Status::unavailable(message),
                // Nothing was acknowledged either, and retrying helps only once room is made.
                StoreError::Full(_) => tonic::Status::resource_exhausted(message),
                // The store cannot do it at all: the collector's state, not the request, is why.
                StoreError::Unsupported(_) => tonic::Status::failed_precondition(message),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_are_bounded_whatever_the_input_they_quote() {
        let status = tonic::Status::from(Error::invalid(format!("invalid filter.action `{}`", "é".repeat(100_000))));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().len() <= MAX_STATUS_MESSAGE_BYTES, "{}", status.message().len());
        assert!(status.message().starts_with("invalid filter.action `éé") && status.message().ends_with('…'));
        let short = tonic::Status::from(Error::invalid("page_size 2000 is over the limit of 1000"));
        assert_eq!(short.message(), "page_size 2000 is over the limit of 1000");
    }
}
