//! The web console: a page per location's collector for auditors, and the small JSON API it
//! reads, served by the collector's HTTP side next to `/metrics`.
//!
//! The page (HTML, CSS and JavaScript in [`assets`], embedded in the binary) is a shell without
//! data: everything it shows comes from `/api/…`, which answers only a signed-in auditor. The
//! API handlers ([`api`], [`live`], [`alerts`]) are thin adapters over the same [`Query`],
//! [`Registry`] and [`Alerts`] that serve gRPC, so the console cannot disagree with `EventQuery`
//! or `AlertService`; they map errors to HTTP statuses in one place ([`error`]).
//!
//! Sign-in takes an auditor token once and answers with a signed, expiring session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` over HTTPS; [`session`]) that every collector
//! holding the same session key ([`key`]) and tokens file accepts, across restarts; sign-outs are
//! kept in [`revocations`]. The token never reaches a URL, a log line or a page.
//! Event text is user-controlled: the page builds its DOM with `textContent` only, and every
//! response carries a `Content-Security-Policy` without inline script, so that even a mistake
//! there could not run a script.

mod alerts;
mod api;
mod assets;
mod error;
mod key;
mod live;
mod revocations;
mod session;
mod usage;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use tokio_util::task::TaskTracker;

use crate::alerts::{AlertStore, Alerts};
use crate::query::Query;
use crate::registry::Registry;
use crate::tokens::Tokens;

pub(crate) use key::load_or_generate as session_key;
pub(crate) use revocations::{FILE as REVOCATIONS_FILE, Revocations};
pub(crate) use session::{Sessions, SignInLimiter, unix_now};

/// Everything the console's handlers share.
#[derive(Debug)]
pub(crate) struct Console {
    /// The read side, shared with gRPC `EventQuery`.
    pub(crate) query: Query,
    /// The collectors, shared with gRPC `CollectorAdmin`.
    pub(crate) registry: Registry,
    /// The tokens file, for sign-in.
    pub(crate) tokens: Arc<Tokens>,
    /// The alert service, shared with gRPC `AlertService`.
    pub(crate) alerts: Alerts,
    /// The alerts' store, for the firings the console lists and marks.
    pub(crate) alert_state: Arc<AlertStore>,
    /// Signed-in sessions.
    pub(crate) sessions: Sessions,
    /// Failed sign-ins per client address.
    pub(crate) sign_ins: SignInLimiter,
    /// Where live views run their tails, so that shutdown waits for them.
    pub(crate) tasks: TaskTracker,
    /// Whether the console is served over HTTPS (its session cookie is then `Secure`).
    pub(crate) https: bool,
    /// Where sign-ins and reads are recorded on the trail.
    pub(crate) usage: crate::usage::Usage,
}

/// The policy every console response carries: only this origin's own script, style, images
/// and connections, no plugins, no framing, no `<base>` tricks, forms post only here.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Returns the console's routes: the page, its assets and the JSON API.
pub(crate) fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(assets::page))
        .route("/console/{location}", get(assets::page))
        .route("/assets/{name}", get(assets::named))
        .route("/api/session", get(api::session).post(api::sign_in).delete(api::sign_out))
        .route("/api/collectors", get(api::collectors))
        .route("/api/locations/{location}/events", get(api::events))
        .route("/api/locations/{location}/events/{seq}", get(api::event))
        .route("/api/locations/{location}/verify", get(api::verify))
        .route("/api/locations/{location}/checkpoints", get(api::checkpoints))
        .route("/api/locations/{location}/export", get(api::export))
        .route("/api/locations/{location}/timeline", get(api::timeline))
        .route("/api/locations/{location}/alerts", get(alerts::alerts))
        .route("/api/locations/{location}/live", get(live::stream))
        .fallback(api::not_found)
        .with_state(Arc::new(console))
        .layer(axum::middleware::map_response(security_headers))
}

/// Adds the headers that keep a browser from running anything but the console's own script,
/// from guessing content types, and from caching API answers.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}
