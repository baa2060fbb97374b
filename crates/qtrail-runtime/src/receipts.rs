//! The runtime's side of receipts: the settings that turn them on (the collector's public
//! keys), what a failed one does ([`ReceiptPolicy`]), and `GET /receipts/<event id>` on the
//! HTTP side, which answers a kept receipt as a C2SP tlog-proof that `qtrail proof verify`
//! checks offline.

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use qtrail_cadf::checkpoint::VerifyingKey;
use qtrail_publisher::receipts::{ReceiptConfig, ReceiptStore};
use qtrail_server::http::MetricsToken;

use crate::config::Config;

/// File of the receipt store in the data directory.
pub const RECEIPTS_FILE: &str = "receipts.redb";

/// What a failed receipt does besides its metric and error log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReceiptPolicy {
    /// Nothing more: calls go on.
    Warn,
    /// Every later call is answered UNAVAILABLE until the runtime restarts (an operator who
    /// has looked into the alarm restarts it).
    Refuse,
}

/// Returns the receipt settings of `config`, `None` without collector public keys.
///
/// # Errors
/// A key file that cannot be read or holds no Ed25519 public key.
pub fn receipt_config(config: &Config) -> anyhow::Result<Option<ReceiptConfig>> {
    if config.collector_public_keys.is_empty() {
        return Ok(None);
    }
    let mut keys = Vec::new();
    for path in &config.collector_public_keys {
        let pem =
            std::fs::read(path).with_context(|| format!("cannot read collector public key {}", path.display()))?;
        let key = VerifyingKey::from_pem(&pem)
            .with_context(|| format!("collector public key {} is unusable", path.display()))?;
        keys.push(key.raw());
    }
    let mut receipts = ReceiptConfig::new(keys, config.data_dir.join(RECEIPTS_FILE));
    receipts.capacity = config.receipt_capacity;
    receipts.token = config.receipts_token.as_ref().map(|token| token.expose().to_owned());
    Ok(Some(receipts))
}

/// Returns the route `GET /receipts/{event_id}`: the kept receipt as `text/plain`, 404 when
/// none is kept, behind the `/metrics` token when there is one.
pub fn router(store: Arc<ReceiptStore>, token: Option<MetricsToken>) -> Router {
    let handler = move |Path(event_id): Path<String>, headers: HeaderMap| {
        let (store, token) = (store.clone(), token.clone());
        async move {
            if !token.as_ref().is_none_or(|token| token.admits(&headers)) {
                return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
            }
            answer(store, event_id).await
        }
    };
    Router::new().route("/receipts/{event_id}", get(handler))
}

async fn answer(store: Arc<ReceiptStore>, event_id: String) -> Response {
    if uuid::Uuid::parse_str(&event_id).is_err() {
        return (StatusCode::BAD_REQUEST, "event id must be a uuid\n").into_response();
    }
    match tokio::task::spawn_blocking(move || store.get(&event_id)).await {
        Ok(Ok(Some(proof))) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], proof).into_response(),
        Ok(Ok(None)) => (StatusCode::NOT_FOUND, "no receipt kept for this event\n").into_response(),
        Ok(Err(err)) => {
            tracing::error!(error = %err, "cannot read the receipt store");
            (StatusCode::SERVICE_UNAVAILABLE, "receipt store unavailable\n").into_response()
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "receipt store unavailable\n").into_response(),
    }
}
