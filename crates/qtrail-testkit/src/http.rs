//! A plain HTTP/1 GET, for the HTTP side of a server (`/metrics`, `/healthz`, pages).

use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Sends `GET url` and returns the status code and body.
///
/// # Panics
/// When the URL is bad or no answer comes within 30 s.
pub async fn http_get(url: &str) -> (u16, String) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = url.parse().unwrap_or_else(|err| panic!("bad url {url}: {err}"));
    let response = tokio::time::timeout(Duration::from_secs(30), client.get(uri))
        .await
        .unwrap_or_else(|_| panic!("no answer from {url}"))
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("read body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
