//! The HTTP side of a qtrail server: Prometheus metrics at `/metrics`, liveness at `/healthz`,
//! and whatever else a service adds to the router (the collector's web console), over TLS when
//! the server has a certificate.
//!
//! Metrics use the process-wide `metrics` recorder, installed once: `qtrail up` runs the
//! runtime and the collector in one process, and both register into, and render from, the same
//! registry. Metric names carry their service (`qtrail_runtime_…`, `qtrail_collector_…`).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tracing::{debug, warn};

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

/// Returns a router serving `/metrics` (Prometheus text format) and `/healthz`, to which a
/// service can merge its own routes.
pub fn base_router() -> Router {
    // Install the recorder now, so metrics recorded before the first scrape are kept.
    let handle = prometheus();
    Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/healthz", get(|| std::future::ready("ok\n")))
}

/// Serves `router` on `listener` until `shutdown` completes: over TLS with `tls`, plaintext
/// without.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(tls) => serve_tls(listener, router, tls, shutdown).await,
        None => axum::serve(listener, router).with_graceful_shutdown(shutdown).await,
    }
}

/// How long a client may take over its TLS handshake before its connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` over TLS. Each connection shakes hands in a task of its own, so a client
/// that stalls its handshake holds up nobody else; at `shutdown` the listener closes and the
/// open connections finish their requests, as `axum::serve` does for plaintext.
async fn serve_tls(
    listener: TcpListener,
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors or the like: the next accept may succeed.
                Err(err) => {
                    warn!(error = %err, "http accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (acceptor, watcher) = (acceptor.clone(), graceful.watcher());
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => return debug!(peer = %peer, error = %err, "tls handshake failed"),
                Err(_) => return debug!(peer = %peer, "tls handshake timed out"),
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(connection.into_owned()).await {
                debug!(peer = %peer, error = %err, "https connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, base_router(), None, async move {
            let _ = stopped.await;
        }));
        metrics::counter!("qtrail_test_requests_total").increment(3);

        let metrics_text = http_get(addr, "/metrics").await;
        assert!(metrics_text.contains("qtrail_test_requests_total 3"), "{metrics_text}");
        assert!(http_get(addr, "/healthz").await.ends_with("ok\n"));

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    /// Minimal HTTP/1.0 GET, enough for a test without an HTTP client dependency.
    async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }
}
