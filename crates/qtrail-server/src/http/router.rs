//! The base router every service's HTTP side starts from: Prometheus metrics at `/metrics`,
//! behind an optional bearer token, and liveness at `/healthz`.
//!
//! Metrics use the process-wide `metrics` recorder, installed once: `qtrail up` runs the
//! runtime and the collector in one process, and both register into, and render from, the same
//! registry. Metric names carry their service (`qtrail_runtime_…`, `qtrail_collector_…`).

use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse as _;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sha2::{Digest as _, Sha256};

use crate::auth::bearer;
use crate::config::ConfigError;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Returns the handle of the process-wide Prometheus recorder, installing it on first use. If
/// some other recorder is installed already, metrics are still rendered from this one, which
/// then simply stays empty.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder is installed already; /metrics will be empty");
        }
        handle
    })
}

/// The bearer token `/metrics` asks for, read from a file (`--metrics-token-file`). Only its
/// SHA-256 digest is kept, as for the collector's tokens.
#[derive(Clone)]
pub struct MetricsToken([u8; 32]);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(..)")
    }
}

impl MetricsToken {
    /// Returns the token `text` holds, surrounding white space trimmed; `None` when empty.
    pub fn new(text: &str) -> Option<Self> {
        let token = text.trim();
        (!token.is_empty()).then(|| Self(Sha256::digest(token.as_bytes()).into()))
    }

    /// Reads the token of the file at `path`.
    ///
    /// # Errors
    /// [`ConfigError::Read`] when the file cannot be read, [`ConfigError::Parse`] when it holds
    /// no token.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::new(&text)
            .ok_or_else(|| ConfigError::Parse { path: path.to_owned(), message: "the file holds no token".into() })
    }

    /// Returns whether `headers` carry `authorization: Bearer <this token>`.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let presented = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()).and_then(bearer);
        // Digests compared, so that the time taken says nothing about the token.
        presented.is_some_and(|token| <[u8; 32]>::from(Sha256::digest(token.as_bytes())) == self.0)
    }
}

/// Returns a router serving `/metrics` (Prometheus text format) and `/healthz`, to which a
/// service can merge its own routes. With `metrics_token`, `/metrics` answers only requests
/// that carry it as `authorization: Bearer` (401 otherwise): the metrics name locations,
/// counts and publisher ids. Without one it is open, as Prometheus expects by default.
/// `/healthz` is always open: it tells nothing but that the server is up.
pub fn base_router(metrics_token: Option<MetricsToken>) -> Router {
    // Install the recorder now, so metrics recorded before the first scrape are kept.
    let handle = prometheus();
    let metrics = move |headers: HeaderMap| {
        let admitted = metrics_token.as_ref().is_none_or(|token| token.admits(&headers));
        let response = if admitted {
            handle.render().into_response()
        } else {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
                "missing or wrong bearer token for /metrics\n",
            )
                .into_response()
        };
        std::future::ready(response)
    };
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(|| std::future::ready("ok\n")))
}
