//! The bounds a slow or greedy client meets on the HTTP side: how long it may take over its
//! first request and each request's headers and body, how large a body may be, how long a
//! connection may sit idle or leave its responses unread, and how many connections may be open
//! at once.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use crate::stall::WRITE_STALL_TIMEOUT;

/// Most connections open at once, TLS handshakes included. At the cap a new connection takes
/// the place of the one that has waited on its client the longest (idle, in its handshake,
/// or sending its request), which is closed; when every connection is serving a request the
/// new one is closed at once rather than queued. A flood of slow connections then only ever
/// evicts itself, and a scrape of `/metrics` or `/healthz` still gets in.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long a client may take to send its request headers (HTTP/1) before its connection is
/// dropped; the same timer bounds how long a kept-alive connection may sit between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a new connection may go before its first request's headers are in, TLS handshake
/// included: HTTP/1's header timer starts with the connection, HTTP/2 has none, so without it a
/// peer that sends only the HTTP/2 preface holds its connection until the idle timeout.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's body once its headers are in: a body that
/// trickles in a byte at a time would otherwise hold the connection for as long as it likes.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request body, in bytes; larger ones are refused with 413 before they are read. The
/// biggest body any route takes is a console sign-in, a token in a line of JSON.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a connection may go without a request in progress before it is closed: HTTP/2
/// keep-alive pings are answered by any live peer, so they alone never end an idle one.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often an idle HTTP/2 connection is pinged, and how long the answer may take: a peer that
/// does not answer is dropped.
pub(super) const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The limits of the HTTP side; [`HttpLimits::default`] has the constants above, tests lower
/// them to see them act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`BODY_READ_TIMEOUT`].
    pub body_read_timeout: Duration,
    /// See [`MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`FIRST_REQUEST_TIMEOUT`].
    pub first_request_timeout: Duration,
    /// See [`crate::stall::WRITE_STALL_TIMEOUT`].
    pub write_stall_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_read_timeout: BODY_READ_TIMEOUT,
            max_body_bytes: MAX_BODY_BYTES,
            idle_timeout: IDLE_TIMEOUT,
            first_request_timeout: FIRST_REQUEST_TIMEOUT,
            write_stall_timeout: WRITE_STALL_TIMEOUT,
        }
    }
}

/// Reads a request's whole body within `limits`, or returns the answer that refuses it.
pub(super) async fn read_body(
    body: Incoming,
    headers: &HeaderMap,
    limits: HttpLimits,
) -> Result<Bytes, Response<Body>> {
    let refuse = |status: StatusCode, message: String| {
        let mut response = Response::new(Body::from(format!("{message}\n")));
        *response.status_mut() = status;
        // The rest of the body is not read, so the connection cannot carry another request.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large: at most {} bytes", limits.max_body_bytes),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_body_bytes as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_read_timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(refuse(StatusCode::BAD_REQUEST, "invalid request body".into())),
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!("request body not received within {} seconds", limits.body_read_timeout.as_secs_f64()),
        )),
    }
}
