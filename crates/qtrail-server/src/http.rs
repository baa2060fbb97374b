//! The HTTP side of a qtrail server: Prometheus metrics at `/metrics`, liveness at `/healthz`,
//! and whatever else a service adds to the router (the collector's web console).
//!
//! Metrics use the process-wide `metrics` recorder, installed once: `qtrail up` runs the
//! runtime and the collector in one process, and both register into, and render from, the same
//! registry. Metric names carry their service (`qtrail_runtime_…`, `qtrail_collector_…`).

use std::future::Future;
use std::sync::OnceLock;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

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

/// Serves `router` on `listener` until `shutdown` completes.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, base_router(), async move {
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
