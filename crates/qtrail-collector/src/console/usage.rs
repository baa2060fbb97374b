//! What the console records on the trail ([`crate::usage`]): which of its API calls are uses
//! of a location's log, and how a sign-in ended.

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use qtrail_cadf::Action;

use super::error::ApiError;
use crate::error::Error;
use crate::tokens::Caller;
use crate::usage::{Use, User};

/// Most bytes of a call's query string kept in its event (it holds the filter asked for).
const MAX_QUERY_BYTES: usize = 1024;

/// Returns the use of a location's log that a console API call by the token `name` makes, or
/// `None` for calls that read no events (the session, the collectors, the alert rules).
///
/// A call is recorded once the session admits it, with outcome success: a console call
/// refused afterwards for a malformed parameter is in the event's `requestData.query`.
pub(crate) fn read_use(parts: &Parts, name: &str, location: &str) -> Option<Use> {
    let path = parts.uri.path();
    let rest = path.strip_prefix("/api/locations/")?.split_once('/')?.1;
    let action = match rest.split('/').next()? {
        "events" | "timeline" | "checkpoints" => Action::EventsRead,
        "verify" => Action::EventsVerify,
        "export" => Action::EventsExport,
        "live" => Action::EventsTail,
        _ => return None,
    };
    let peer = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>()?.0;
    let query = qtrail_cadf::text::truncate(parts.uri.query().unwrap_or_default(), MAX_QUERY_BYTES).into_owned();
    let used = Use::log(action, User::of_http(name, peer.ip(), &parts.headers), location)
        .with("call", format!("{} {path}", parts.method).into());
    Some(if query.is_empty() { used } else { used.with("query", query.into()) })
}

/// Returns the token name a sign-in names (empty when its token is unknown) and how it ended,
/// as the trail records it.
pub(crate) fn sign_in_outcome(admitted: &Result<Caller, ApiError>) -> (String, Result<(), Error>) {
    let err = match admitted {
        Ok(caller) => return (caller.name.clone(), Ok(())),
        Err(err) => err,
    };
    let recorded = match err {
        ApiError::Service(Error::PermissionDenied { name, role, needed }) => {
            return (name.clone(), Err(Error::PermissionDenied { name: name.clone(), role, needed }));
        }
        ApiError::Service(Error::InvalidArgument(message)) => Error::InvalidArgument(message.clone()),
        ApiError::SignedOut | ApiError::UnknownToken => Error::Unauthenticated,
        ApiError::TooManySignIns(_) => Error::ResourceExhausted(err.to_string()),
        ApiError::NoRoute | ApiError::Service(_) => Error::FailedPrecondition(err.to_string()),
    };
    (String::new(), Err(recorded))
}
