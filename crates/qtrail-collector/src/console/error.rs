//! The console API's errors and their one mapping to HTTP statuses.
//!
//! Every failure answers `{"error": "<message>"}`: lowercase, no trailing period, naming the
//! parameter at fault, like the gRPC side's messages (service errors keep their own text). JSON
//! is written with `<`, `>` and `&` escaped, so that no answer contains markup even when it
//! quotes what a caller sent.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::warn;

use crate::error::Error;
use crate::store::StoreError;

/// Everything a console API request can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No session cookie, or one that names no live session.
    #[error("not signed in: sign in with an auditor token")]
    SignedOut,
    /// The sign-in token is not in the tokens file.
    #[error("unknown token")]
    UnknownToken,
    /// No API route at this path.
    #[error("no such api route")]
    NoRoute,
    /// The client's address failed to sign in too often; it may try again after the wait.
    #[error("too many failed sign-ins from this address: try again in {} seconds", whole_seconds(*.0))]
    TooManySignIns(Duration),
    /// What the service code returned, and a malformed parameter, path segment or body: the
    /// console refuses those with the gRPC side's [`Error::invalid`], so bad input has one shape.
    #[error(transparent)]
    Service(#[from] Error),
}

impl ApiError {
    /// Returns the HTTP status of the error; every variant decides its own.
    fn status(&self) -> StatusCode {
        match self {
            ApiError::SignedOut | ApiError::UnknownToken => StatusCode::UNAUTHORIZED,
            ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::TooManySignIns(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Service(err) => match err {
                Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
                Error::CollectorNotFound(_)
                | Error::EventNotFound { .. }
                | Error::LeafNotFound(_)
                | Error::AlertRuleNotFound { .. } => StatusCode::NOT_FOUND,
                Error::CollectorExists(_) | Error::AlertRuleExists { .. } => StatusCode::CONFLICT,
                Error::FailedPrecondition(_) => StatusCode::PRECONDITION_FAILED,
                Error::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
                Error::Unauthenticated | Error::NoClientCertificate => StatusCode::UNAUTHORIZED,
                Error::PermissionDenied { .. } | Error::LocationDenied { .. } | Error::PublisherBound { .. } => {
                    StatusCode::FORBIDDEN
                }
                Error::ShuttingDown | Error::NotRecorded(_) => StatusCode::SERVICE_UNAVAILABLE,
                Error::Store(store) => match store {
                    StoreError::CollectorExists(_) => StatusCode::CONFLICT,
                    StoreError::NoCollector(_) => StatusCode::NOT_FOUND,
                    // Lost data is the server's fault, not a passing condition.
                    StoreError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    // Worth retrying, as on the gRPC side.
                    StoreError::Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
                    StoreError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
                    StoreError::Unsupported(_) => StatusCode::CONFLICT,
                },
            },
        }
    }
}

/// Returns `wait` in whole seconds, rounded up, so that a client that waits that long gets in.
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The body of every error answer.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody {
    /// What went wrong.
    pub(crate) error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.to_string();
        if status.is_server_error() {
            warn!(status = status.as_u16(), error = %message, "console request failed");
        }
        let mut response = json(status, &ErrorBody { error: message });
        if let ApiError::TooManySignIns(wait) = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(wait)));
        }
        response
    }
}

/// Returns `value` as a JSON answer with `status`, with `<`, `>` and `&` written as `\u003c`,
/// `\u003e` and `\u0026` (JSON has those characters only inside strings, where the escapes
/// mean the same).
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = match serde_json::to_string(value) {
        Ok(body) => escape_markup(&body),
        // Our views are plain data; this would be a bug, answered without leaking details.
        Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "failed to encode the answer").into_response(),
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Returns JSON text with the characters HTML gives meaning to escaped.
pub(crate) fn escape_markup(json: &str) -> String {
    let mut escaped = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => escaped.push_str("\\u003c"),
            '>' => escaped.push_str("\\u003e"),
            '&' => escaped.push_str("\\u0026"),
            _ => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_and_the_json_means_the_same() {
        let text = r#"<img src=x onerror="alert(1)"> & more"#;
        let escaped = escape_markup(&serde_json::to_string(&ErrorBody { error: text.into() }).unwrap());
        assert!(!escaped.contains('<') && !escaped.contains('>') && !escaped.contains('&'), "{escaped}");
        let back: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(back["error"], text);
    }

    #[test]
    fn statuses_follow_the_kind_of_error() {
        let status = |err: ApiError| err.status().as_u16();
        assert_eq!(status(ApiError::SignedOut), 401);
        assert_eq!(status(ApiError::TooManySignIns(Duration::from_secs(1))), 429);
        assert_eq!(status(ApiError::Service(Error::invalid("bad"))), 400);
        assert_eq!(status(ApiError::Service(Error::CollectorNotFound("x".into()))), 404);
        let denied = Error::PermissionDenied { name: "ops".into(), role: "admin", needed: "auditor" };
        assert_eq!(status(ApiError::Service(denied)), 403);
        assert_eq!(status(ApiError::Service(Error::Store(StoreError::Corrupt("x".into())))), 500);
        assert_eq!(status(ApiError::Service(Error::ShuttingDown)), 503);
    }
}
