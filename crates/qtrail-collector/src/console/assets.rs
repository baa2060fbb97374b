//! The console's page, script and style, compiled into the binary: no CDN, no build step, nothing
//! fetched at run time. The page is the same for `/` (the list of collectors) and for
//! `/console/{location}`; it carries no data, only the shell that the script fills from the API.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// `GET /` and `GET /console/{location}`: the page.
pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /assets/console.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /assets/console.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // `no-cache` revalidates on every load, so a new binary's console is never mixed with an
    // old script from the cache.
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
