//! The console's JSON API: thin HTTP adapters over the service code that gRPC uses. Each
//! handler checks the session, turns path and query parameters into the request message the
//! service takes, calls it, and answers a [view](super::view).
//!
//! | route | answers |
//! |---|---|
//! | `POST /api/session` `{"token": "…"}` | signs in an auditor token: a session cookie (429 after too many failures from an address) |
//! | `GET /api/session` | who is signed in |
//! | `DELETE /api/session` | signs out |
//! | `GET /api/collectors` | every collector |
//! | `GET /api/locations/{location}/events?…` | a page of events (QueryEvents) |
//! | `GET /api/locations/{location}/events/{seq}` | one event with its AT-JSON and CADF-JSON |
//! | `GET /api/locations/{location}/verify?from_seq&to_seq` | a chain check (VerifyChain) |
//! | `GET /api/locations/{location}/export?format=at-json\|cadf-json&…` | JSON lines (ExportEvents) |
//! | `GET /api/locations/{location}/timeline?…` | events per bucket by outcome over the filter's time range, and the alert firings in it |
//! | `GET /api/locations/{location}/alerts` | the rules and the newest firings with their deliveries, see [`super::alerts`] |
//! | `GET /api/locations/{location}/live?…&from_seq` | server-sent events (TailEvents), see [`super::live`] |
//!
//! Filters are query parameters named like `EventFilter`'s fields: `start_time` and `end_time`
//! (RFC 3339), `action` (an action or a prefix at a dot), `outcome`, `severity`,
//! `initiator_id`, `target_id` (a CRN or a CRN prefix) and `correlation_id`. Empty values mean
//! "any"; unknown or repeated parameters are refused, so that a typo never silently widens a
//! search.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use qtrail_proto::qtrail::audit::v1 as proto;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{info, warn};

use super::error::{ApiError, json};
use super::session::{self, SignedIn};
use super::{Console, alerts, usage, view};
use crate::access;
use crate::error::Error;
use crate::tokens::Role;
use crate::usage::{Use, User};
use qtrail_cadf::Action;

/// Page size of the console's list when the request names none.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 50;

/// Messages an export buffers before it waits for the browser.
const EXPORT_BUFFER: usize = 4;

/// Parameters of every route that filters events (list, export, live view), in the order an
/// error lists them.
const FILTER_PARAMS: [&str; 8] =
    ["start_time", "end_time", "action", "outcome", "severity", "initiator_id", "target_id", "correlation_id"];

/// Parameters of the list beyond the filter: paging.
const EVENTS_PARAMS: [&str; 3] = ["page_size", "page_token", "order"];

/// Parameters of an export beyond the filter: format and range.
const EXPORT_PARAMS: [&str; 3] = ["format", "from_seq", "to_seq"];

pub(crate) type Shared = State<Arc<Console>>;
type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// A request from a signed-in auditor; extracting it is the session check, and records the
/// read in the access log and, for reads of a location's events, on its trail
/// ([`usage::read_use`]): the read is refused when it cannot be recorded.
#[derive(Debug)]
pub(crate) struct Auditor(pub(crate) SignedIn);

impl FromRequestParts<Arc<Console>> for Auditor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Self, ApiError> {
        let id = session::cookie(&parts.headers).ok_or(ApiError::SignedOut)?;
        let signed_in = console.sessions.get(id, session::unix_now()).ok_or(ApiError::SignedOut)?;
        let path = parts.uri.path();
        let location = path.strip_prefix("/api/locations/").and_then(|rest| rest.split('/').next()).unwrap_or("");
        access::read(&signed_in.caller.name, &format!("console {} {path}", parts.method), location);
        if let Some(used) = usage::read_use(parts, &signed_in.caller.name, location) {
            console.usage.record(used, &Ok(())).await?;
        }
        Ok(Auditor(signed_in))
    }
}

/// The body of a sign-in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `POST /api/session`: trades an auditor token for a session cookie; refused with 429 for an
/// address that failed too often (see [`session::SignInLimiter`]). Every sign-in, admitted or
/// refused, is recorded on the trail of each hosted location before it is answered.
pub(crate) async fn sign_in(
    State(console): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let now = Instant::now();
    let admitted = admit(&console, peer, &headers, &body, now);
    let (name, outcome) = usage::sign_in_outcome(&admitted);
    let used = Use::log(Action::ConsoleLogin, User::of_http(&name, peer.ip(), &headers), "");
    console.usage.record_everywhere(used, &outcome).await?;
    let caller = admitted?;
    let id = console.sessions.create(&caller, session::unix_now()).ok_or(ApiError::UnknownToken)?;
    info!(token = %caller.name, "console sign-in");
    let ttl = console.sessions.ttl();
    let who = view::Who { name: caller.name, role: caller.role.as_str(), expires_in_secs: ttl.as_secs() };
    Ok(([(header::SET_COOKIE, session::set_cookie(&id, ttl, console.https))], json(StatusCode::OK, &who))
        .into_response())
}

/// Checks a sign-in and returns the auditor it signs in.
fn admit(
    console: &Console,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &Bytes,
    now: Instant,
) -> Result<crate::tokens::Caller, ApiError> {
    // Before the token is looked at, so that a refused address learns nothing about it.
    if let Some(wait) = console.sign_ins.wait(peer.ip(), now) {
        access::refused(Role::Auditor.as_str(), "console sign-in from an address that failed too often");
        return Err(ApiError::TooManySignIns(wait));
    }
    // JSON only: a cross-site form cannot send it without a CORS preflight, which this server
    // never grants, so no other site can sign a browser in.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(';').next().is_some_and(|kind| kind.trim() == "application/json"));
    if !is_json {
        return Err(Error::invalid("invalid sign-in: content-type must be application/json").into());
    }
    // Parse errors would quote the body, which holds the token: answer without details.
    let sign_in: SignIn =
        serde_json::from_slice(body).map_err(|_| Error::invalid(r#"invalid sign-in body: expected {"token": "…"}"#))?;
    let token = sign_in.token.trim();
    if token.is_empty() {
        return Err(Error::invalid("missing token").into());
    }
    match console.tokens.authorize(Some(token), Role::Auditor) {
        Ok(caller) => Ok(caller),
        // In the access log, beside the gRPC calls refused for their token.
        Err(Error::Unauthenticated) => {
            console.sign_ins.failed(peer.ip(), now);
            access::refused(Role::Auditor.as_str(), "console sign-in with an unknown token");
            Err(ApiError::UnknownToken)
        }
        Err(err) => {
            console.sign_ins.failed(peer.ip(), now);
            access::refused(Role::Auditor.as_str(), &format!("console sign-in: {err}"));
            Err(err.into())
        }
    }
}

/// `GET /api/session`: who is signed in.
pub(crate) async fn session(Auditor(signed_in): Auditor) -> Response {
    let who = view::Who {
        name: signed_in.caller.name,
        role: signed_in.caller.role.as_str(),
        expires_in_secs: signed_in.remaining.as_secs(),
    };
    json(StatusCode::OK, &who)
}

/// `DELETE /api/session`: signs out (also without a live session, so that it always clears
/// the cookie).
pub(crate) async fn sign_out(State(console): Shared, headers: HeaderMap) -> Response {
    let now = session::unix_now();
    if let Some(signed_in) = session::cookie(&headers).and_then(|id| console.sessions.get(id, now)) {
        info!(token = %signed_in.caller.name, "console sign-out");
        let shared = console.clone();
        let revoked = tokio::task::spawn_blocking(move || shared.sessions.revoke(&signed_in, now)).await;
        if let Err(err) = revoked.map_err(std::io::Error::other).and_then(|revoked| revoked) {
            // The browser forgets the cookie all the same; only a copy of it outlives the sign-out.
            warn!(error = %err, "cannot keep a console sign-out in the revoked sessions");
        }
    }
    ([(header::SET_COOKIE, session::clear_cookie(console.https))], StatusCode::NO_CONTENT).into_response()
}

/// `GET /api/collectors`: every collector.
pub(crate) async fn collectors(State(console): Shared, _: Auditor) -> Result<Response, ApiError> {
    let collectors: Vec<_> = console.registry.list().await?.into_iter().map(view::collector).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "collectors": collectors })))
}

/// `GET /api/locations/{location}/events`: a page of events.
pub(crate) async fn events(
    State(console): Shared,
    Auditor(signed_in): Auditor,
    located: Located,
) -> Result<Response, ApiError> {
    let (location, filter, mut params) = located.filtered(&EVENTS_PARAMS)?;
    let page_size = params.number("page_size")?.map_or(Ok(DEFAULT_PAGE_SIZE), |size| {
        u32::try_from(size).map_err(|_| Error::invalid(format!("page_size {size} is too large")))
    })?;
    let order = match params.take("order").as_deref() {
        None | Some("newest") => proto::Order::NewestFirst,
        Some("oldest") => proto::Order::OldestFirst,
        Some(other) => return Err(invalid_value("order", other, "newest or oldest")),
    };
    let request = proto::QueryEventsRequest {
        location: location.clone(),
        filter: Some(filter),
        page_size,
        page_token: params.take("page_token").unwrap_or_default(),
        order: order as i32,
    };
    // Read before the page, so that a live view from head_seq + 1 misses nothing.
    let head_seq = console.registry.get(&location).await?.event_count;
    let page = console.query.query_events(request, &signed_in.caller.scope).await?;
    let events = page.events.iter().map(view::row).collect();
    Ok(json(StatusCode::OK, &view::Page { events, next_page_token: page.next_page_token, head_seq }))
}

/// `GET /api/locations/{location}/events/{seq}`: one event in full.
pub(crate) async fn event(
    State(console): Shared,
    Auditor(signed_in): Auditor,
    segments: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (location, seq) = path(segments)?;
    let seq = seq.parse::<u64>().map_err(|_| invalid_value("location_seq", &seq, "a position from 1"))?;
    let record = console.query.event(&location, seq, &signed_in.caller.scope).await?;
    Ok(json(StatusCode::OK, &view::detail(&record)?))
}

/// `GET /api/locations/{location}/verify`: a chain check.
pub(crate) async fn verify(
    State(console): Shared,
    Auditor(signed_in): Auditor,
    located: Located,
) -> Result<Response, ApiError> {
    let (location, mut params) = located.params(&["from_seq", "to_seq"])?;
    let range = proto::SeqRange {
        from_seq: params.number("from_seq")?.unwrap_or(0),
        to_seq: params.number("to_seq")?.unwrap_or(0),
    };
    let request = proto::VerifyChainRequest { location: location.clone(), range: Some(range) };
    let response = console.query.verify_chain(request).await?;
    info!(location = %location, token = %signed_in.caller.name, ok = response.ok, checked = response.checked,
          "console chain check");
    Ok(json(StatusCode::OK, &view::verdict(response)))
}

/// Most checkpoints one page lists, and the default.
const MAX_CHECKPOINTS: u64 = 1000;
const DEFAULT_CHECKPOINTS: u64 = 20;

/// `GET /api/locations/{location}/checkpoints?limit=…&before_number=…`: signed checkpoints,
/// newest first, and the page's damaged entries (`damaged`: number and detail). Their signatures are for auditors to check with the public key; the page
/// shows what the collector holds.
pub(crate) async fn checkpoints(State(console): Shared, _: Auditor, located: Located) -> Result<Response, ApiError> {
    let (location, mut params) = located.params(&["limit", "before_number"])?;
    let limit = params.number("limit")?.unwrap_or(DEFAULT_CHECKPOINTS);
    if !(1..=MAX_CHECKPOINTS).contains(&limit) {
        return Err(invalid_value("limit", &limit.to_string(), "1 to 1000"));
    }
    let request = proto::ListCheckpointsRequest {
        location,
        page_size: u32::try_from(limit).unwrap_or(1000),
        before_number: params.number("before_number")?.unwrap_or(0),
    };
    let listed = console.query.list_checkpoints(request).await?;
    let checkpoints: Vec<_> = listed.checkpoints.into_iter().map(view::checkpoint).collect();
    let damaged: Vec<_> = listed
        .damaged
        .into_iter()
        .map(|entry| serde_json::json!({ "number": entry.number, "detail": entry.detail }))
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "checkpoints": checkpoints, "damaged": damaged })))
}

/// `GET /api/locations/{location}/export`: the matching events as JSON lines, a download.
pub(crate) async fn export(
    State(console): Shared,
    Auditor(signed_in): Auditor,
    located: Located,
) -> Result<Response, ApiError> {
    let (location, filter, mut params) = located.filtered(&EXPORT_PARAMS)?;
    let (format, name) = match params.take("format").as_deref() {
        Some("at-json") => (proto::ExportFormat::AtJson, "at-json"),
        Some("cadf-json") => (proto::ExportFormat::CadfJson, "cadf-json"),
        None => return Err(Error::invalid("missing format: at-json or cadf-json").into()),
        Some(other) => return Err(invalid_value("format", other, "at-json or cadf-json")),
    };
    let range = proto::SeqRange {
        from_seq: params.number("from_seq")?.unwrap_or(0),
        to_seq: params.number("to_seq")?.unwrap_or(0),
    };
    let request =
        proto::ExportEventsRequest { location, format: format as i32, range: Some(range), filter: Some(filter) };
    let export = console.query.open_export(&request, &signed_in.caller.scope).await?;
    let (sender, receiver) = mpsc::channel(EXPORT_BUFFER);
    console.tasks.spawn(console.query.clone().export(export, sender));
    // An error mid-way cuts the body short, so a partial download cannot pass for a whole one.
    let body = ReceiverStream::new(receiver).map(|chunk| match chunk {
        Ok(chunk) => Ok(Bytes::from(chunk.lines.iter().map(|line| format!("{line}\n")).collect::<String>())),
        Err(err) => Err(std::io::Error::other(err.to_string())),
    });
    // The location is validated by now: it holds only lowercase letters, digits and dashes.
    let disposition = format!("attachment; filename=\"qtrail-{}-{name}.jsonl\"", request.location);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        Body::from_stream(body),
    )
        .into_response())
}

/// `GET /api/locations/{location}/timeline?…`: the matching events counted per bucket by
/// outcome, over the filter's time range (by default the last hour), and the alert firings
/// recorded in it.
pub(crate) async fn timeline(
    State(console): Shared,
    Auditor(signed_in): Auditor,
    located: Located,
) -> Result<Response, ApiError> {
    let (location, filter, _) = located.filtered(&[])?;
    let now = chrono::Utc::now().timestamp_millis();
    let scope = &signed_in.caller.scope;
    let timeline = console.query.timeline(&location, Some(&filter), now, scope).await?;
    let (start, end) = (timeline.start_millis, timeline.end_millis);
    let firings = alerts::marks(console.alert_state.clone(), location, start, end, scope).await?;
    Ok(json(StatusCode::OK, &view::timeline(timeline, firings)))
}

/// Any other path: JSON 404 under `/api`, plain 404 elsewhere.
pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return ApiError::NoRoute.into_response();
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Returns the value of a path extraction, or a message that names the path.
pub(crate) fn path<T>(extracted: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    extracted.map(|Path(value)| value).map_err(|_| Error::invalid("invalid path: not valid utf-8").into())
}

/// The location a route under `/api/locations/{location}` names, and the route's query string,
/// both checked by the handler so that a bad one is refused in the console's shape.
pub(crate) struct Located {
    location: Result<Path<String>, PathRejection>,
    query: RawQuery,
}

impl<S: Send + Sync> FromRequestParts<S> for Located {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let location = Path::from_request_parts(parts, state).await;
        let query = Query::from_request_parts(parts, state).await;
        Ok(Self { location, query })
    }
}

impl Located {
    /// Returns the location and the query's parameters, which must be among `allowed`.
    pub(crate) fn params(self, allowed: &[&str]) -> Result<(String, Params), ApiError> {
        let location = path(self.location)?;
        Ok((location, Params::new(self.query, allowed)?))
    }

    /// Returns the location of a route that filters events, its filter, and its other
    /// parameters, which are the filter's and `more`.
    pub(crate) fn filtered(self, more: &[&str]) -> Result<(String, proto::EventFilter, Params), ApiError> {
        let allowed: Vec<&str> = FILTER_PARAMS.iter().chain(more).copied().collect();
        let (location, mut params) = self.params(&allowed)?;
        let filter = params.filter()?;
        Ok((location, filter, params))
    }
}

/// Returns the error for parameter `name` whose `value` is not `expected`.
fn invalid_value(name: &str, value: &str, expected: &str) -> ApiError {
    Error::invalid(format!("invalid {name} `{}`: expected {expected}", qtrail_cadf::text::escape_control(value))).into()
}

/// The action prefix the console filters on when none is asked for: the audited service's.
pub(crate) const DEFAULT_ACTION: &str = qtrail_cadf::crn::SERVICE_NAME;

/// The query parameters of a request, checked against the names a route takes.
#[derive(Debug)]
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    /// Returns the parameters, refusing unknown and repeated names; empty values count as absent.
    pub(crate) fn new(query: RawQuery, allowed: &[&str]) -> Result<Self, ApiError> {
        let Query(pairs) = query.map_err(|_| Error::invalid("invalid query string"))?;
        let mut params = HashMap::new();
        for (name, value) in pairs {
            if !allowed.contains(&name.as_str()) {
                let expected = if allowed.is_empty() {
                    "this route takes none".to_owned()
                } else {
                    format!("expected one of {}", allowed.join(", "))
                };
                let name = qtrail_cadf::text::escape_control(&name);
                return Err(Error::invalid(format!("unknown parameter `{name}`: {expected}")).into());
            }
            if params.contains_key(&name) {
                return Err(Error::invalid(format!("parameter `{name}` given twice")).into());
            }
            if !value.is_empty() {
                params.insert(name, value);
            }
        }
        Ok(Self(params))
    }

    /// Takes the value of `name`.
    pub(crate) fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    /// Takes the value of `name` as a non-negative number.
    pub(crate) fn number(&mut self, name: &str) -> Result<Option<u64>, ApiError> {
        self.take(name)
            .map(|value| value.parse::<u64>().map_err(|_| invalid_value(name, &value, "a non-negative whole number")))
            .transpose()
    }

    /// Takes the filter parameters as an `EventFilter`; the service checks the rest. Without an
    /// action, the console shows the audited service's events ([`DEFAULT_ACTION`]): the trail's
    /// own use (`qtrail.*`) would otherwise put each page load of the console at the top of the
    /// list it shows. Asking for `qtrail` shows that use.
    pub(crate) fn filter(&mut self) -> Result<proto::EventFilter, ApiError> {
        let outcome = match self.take("outcome") {
            None => proto::Outcome::Unspecified,
            Some(value) => value
                .parse::<qtrail_cadf::Outcome>()
                .map(qtrail_cadf::proto::outcome_to_wire)
                .map_err(|_| invalid_value("outcome", &value, "success, failure or pending"))?,
        };
        let severity = match self.take("severity") {
            None => proto::Severity::Unspecified,
            Some(value) => value
                .parse::<qtrail_cadf::Severity>()
                .map(qtrail_cadf::proto::severity_to_wire)
                .map_err(|_| invalid_value("severity", &value, "normal, warning or critical"))?,
        };
        Ok(proto::EventFilter {
            start_time: self.time("start_time")?,
            end_time: self.time("end_time")?,
            action: self.take("action").unwrap_or_else(|| DEFAULT_ACTION.to_owned()),
            outcome: outcome as i32,
            severity: severity as i32,
            initiator_id: self.take("initiator_id").unwrap_or_default(),
            target_id: self.take("target_id").unwrap_or_default(),
            correlation_id: self.take("correlation_id").unwrap_or_default(),
        })
    }

    fn time(&mut self, name: &str) -> Result<Option<prost_types::Timestamp>, ApiError> {
        let Some(value) = self.take(name) else {
            return Ok(None);
        };
        let time = chrono::DateTime::parse_from_rfc3339(&value)
            .map_err(|_| invalid_value(name, &value, "an rfc 3339 time such as 2024-05-01T12:00:00Z"))?;
        let nanos = i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0);
        Ok(Some(prost_types::Timestamp { seconds: time.timestamp(), nanos }))
    }
}
