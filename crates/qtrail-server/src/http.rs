//! The HTTP side of a qtrail server: Prometheus metrics at `/metrics`, liveness at `/healthz`,
//! and whatever else a service adds to the router (the collector's web console), over TLS when
//! the server has a certificate.
//!
//! Metrics use the process-wide `metrics` recorder, installed once: `qtrail up` runs the
//! runtime and the collector in one process, and both register into, and render from, the same
//! registry. Metric names carry their service (`qtrail_runtime_…`, `qtrail_collector_…`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::tls::HANDSHAKE_TIMEOUT;

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

/// Binds the HTTP side's listener at `addr` and installs the Prometheus recorder: before the
/// first metric is recorded, or what is recorded until then is lost.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    prometheus();
    Ok(listener)
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

/// Most connections open at once, TLS handshakes included. Beyond it new connections are closed
/// at once rather than queued: a pile of idle sockets then costs the one who opened them, not
/// the file descriptors that gRPC needs too.
const MAX_CONNECTIONS: usize = 1024;

/// How long a client may take to send its request headers (HTTP/1) before its connection is
/// dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How often an idle HTTP/2 connection is pinged, and how long the answer may take: a peer that
/// does not answer is dropped.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` until `shutdown` completes: over TLS with `tls`, plaintext
/// HTTP/1.1 without.
///
/// Each connection runs in a task of its own, at most [`MAX_CONNECTIONS`] at once, so clients
/// that stall hold up nobody else; every one is under a timer from its first byte (the TLS
/// handshake's [`HANDSHAKE_TIMEOUT`], then the request headers' [`HEADER_READ_TIMEOUT`] or
/// HTTP/2 keep-alive pings). Over TLS the protocol comes from ALPN (HTTP/2 or HTTP/1.1). At
/// `shutdown` the listener closes, handshakes in progress are dropped, and open connections
/// finish their requests. The connections belong to this future: dropping it (a caller that
/// gives up waiting for them) closes them all.
///
/// # Errors
/// None so far; accept errors are logged and retried.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let stopping = CancellationToken::new();
    // Dropped with this future too, aborting every connection task.
    let mut tasks = JoinSet::new();
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            // Reaps ended connections, so that the set holds open ones only.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let Some((stream, peer)) = accepted else {
            continue;
        };
        // Without it, the tail of a response (or a short server-sent event to the console's
        // live view) can wait for the client's delayed ACK, as on the gRPC side.
        let _ = stream.set_nodelay(true);
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            debug!(peer = %peer, "too many http connections, closing the new one");
            continue;
        };
        let (acceptor, watcher, stopping) = (acceptor.clone(), graceful.watcher(), stopping.clone());
        let service = TowerToHyperService::new(router.clone());
        tasks.spawn(async move {
            // Held for the connection's lifetime.
            let _permit = permit;
            let Some(acceptor) = acceptor else {
                return serve_connection(stream, false, service, watcher, peer).await;
            };
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let stream = tokio::select! {
                shaken = handshake => match shaken {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => {
                        debug!(peer = %peer, error = %err, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(peer = %peer, "tls handshake timed out");
                        return;
                    }
                },
                // Shutting down: a connection that has not finished its handshake has no
                // request to finish.
                () = stopping.cancelled() => return,
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            serve_connection(stream, h2, service, watcher, peer).await;
        });
    }
    drop(listener);
    stopping.cancel();
    graceful.shutdown().await;
    Ok(())
}

/// Serves one connection, HTTP/2 when `h2`, else HTTP/1.1, until it ends or the graceful
/// shutdown `watcher` belongs to has ended it.
async fn serve_connection<I>(
    stream: I,
    h2: bool,
    service: TowerToHyperService<Router>,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(H2_KEEP_ALIVE).keep_alive_timeout(H2_KEEP_ALIVE);
    // Without a choice the builder first reads bytes to tell the protocols apart, with no timer
    // on that read; ALPN (or plaintext, which is HTTP/1.1 here) has told already.
    let builder = if h2 { builder.http2_only() } else { builder.http1_only() };
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(err) = watcher.watch(connection.into_owned()).await {
        debug!(peer = %peer, error = %err, "http connection ended with an error");
    }
}

/// Accepts the next connection; `None` after an error that concerns one connection only.
/// Other errors (out of file descriptors, say) would repeat at once, so they are logged and
/// followed by a pause, as `axum::serve` does.
async fn accept(listener: &TcpListener) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener.accept().await {
        Ok(accepted) => Some(accepted),
        Err(err) if is_connection_error(&err) => None,
        Err(err) => {
            warn!(error = %err, "http accept failed, pausing for a second");
            tokio::time::sleep(Duration::from_secs(1)).await;
            None
        }
    }
}

/// Returns whether an accept error concerns only the connection being accepted.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(err.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset)
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
