//! The console's page, scripts and style, compiled into the binary: no CDN, no build step,
//! nothing fetched at run time. The page is the same for `/` (the list of collectors) and for
//! `/console/{location}`; it carries no data, only the shell that the scripts fill from the API.

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("assets/index.html");

const SCRIPT: &str = "text/javascript; charset=utf-8";
const STYLE: &str = "text/css; charset=utf-8";

/// Every file under `/assets/`: its name, content type and content. The page loads the scripts
/// in this order (each one's concern in its own file; `console.js` starts the page, last).
const ASSETS: [(&str, &str, &str); 5] = [
    ("console.css", STYLE, include_str!("assets/console.css")),
    ("timeline.js", SCRIPT, include_str!("assets/timeline.js")),
    ("chain.js", SCRIPT, include_str!("assets/chain.js")),
    ("alerts.js", SCRIPT, include_str!("assets/alerts.js")),
    ("console.js", SCRIPT, include_str!("assets/console.js")),
];

/// `GET /` and `GET /console/{location}`: the page.
pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /assets/{name}`: a script or the style.
pub(crate) async fn named(name: Result<Path<String>, PathRejection>) -> Response {
    let found = name.ok().and_then(|Path(name)| ASSETS.iter().find(|(known, _, _)| *known == name));
    match found {
        Some((_, content_type, body)) => asset(content_type, body),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // `no-cache` revalidates on every load, so a new binary's console is never mixed with an
    // old script from the cache.
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
