//! The witness over HTTP: `POST /witness/add-checkpoint` (C2SP tlog-witness, submission prefix
//! `/witness`), on a collector's HTTP side or on a listener of its own ([`serve`], as `qtrail
//! up` runs it). As the spec says, requests carry no credentials: the log's signature on the
//! checkpoint is what admits them.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::net::TcpListener;

use super::{Refusal, Witness};

/// Largest request body accepted: 63 proof lines and a note with a few signatures fit many
/// times over.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Returns the witness's routes.
pub fn router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/witness/add-checkpoint", post(add_checkpoint))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(witness)
}

/// Serves the witness alone on `listener` until `shutdown` completes.
///
/// # Errors
/// When serving fails.
pub async fn serve(
    listener: TcpListener,
    witness: Arc<Witness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    qtrail_server::http::serve(listener, router(witness), None, shutdown).await
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, body: String) -> Response {
    let answered = tokio::task::spawn_blocking(move || witness.add_checkpoint(&body)).await;
    let plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    match answered {
        Ok(Ok(line)) => (StatusCode::OK, plain, line).into_response(),
        Ok(Err(Refusal::OldSize { size, .. })) => {
            (StatusCode::CONFLICT, [(header::CONTENT_TYPE, qtrail_tlog::SIZE_CONTENT_TYPE)], format!("{size}\n"))
                .into_response()
        }
        Ok(Err(refusal)) => {
            let status = match &refusal {
                Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
                Refusal::UnknownLog(_) => StatusCode::NOT_FOUND,
                Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
                Refusal::OldSize { .. } | Refusal::Fork { .. } => StatusCode::CONFLICT,
                Refusal::BadProof { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                Refusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, plain, format!("{refusal}\n")).into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, plain, "witness task failed\n").into_response(),
    }
}
