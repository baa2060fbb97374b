//! The HTTP side of a qtrail server: the base router (metrics and liveness, [`router`]) and
//! whatever else a service adds to it (the collector's web console), over TLS when the server
//! has a certificate, each connection within the [`limits`] a slow client meets and among the
//! capped [`connections`].

mod connections;
mod limits;
mod router;

pub(crate) use connections::{Activity, Busy, Connections, Guarded, Slot};
pub use limits::{
    BODY_READ_TIMEOUT, FIRST_REQUEST_TIMEOUT, HEADER_READ_TIMEOUT, HttpLimits, IDLE_TIMEOUT, MAX_BODY_BYTES,
    MAX_CONNECTIONS,
};
pub use router::{MetricsToken, base_router, prometheus};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::stall::WriteDeadline;
use crate::tls::HANDSHAKE_TIMEOUT;
use connections::Tracked;
use limits::H2_KEEP_ALIVE;

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

/// Serves `router` on `listener` until `shutdown` completes: over TLS with `tls`, plaintext
/// HTTP/1.1 without; with the default [`HttpLimits`].
///
/// # Errors
/// None so far; accept errors are logged and retried.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_limits(listener, router, tls, HttpLimits::default(), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` completes: over TLS with `tls`, plaintext
/// HTTP/1.1 without.
///
/// Each connection runs in a task of its own, at most `limits.max_connections` at once (see
/// [`MAX_CONNECTIONS`] for who makes room at the cap), so clients that stall hold up nobody
/// else; every one is under a timer from its first byte: the TLS handshake's
/// [`HANDSHAKE_TIMEOUT`], the first request's [`FIRST_REQUEST_TIMEOUT`], then the request
/// headers' and the body's, the idle timeout between requests, and the write-stall deadline
/// ([`crate::stall`]) while its responses wait on the client to read them. Handlers see the whole body, read in advance within its limits, and the
/// client's address as `ConnectInfo<SocketAddr>`. Over TLS the protocol comes from ALPN
/// (HTTP/2 or HTTP/1.1). At `shutdown` the listener closes, handshakes in progress are
/// dropped, and open connections finish their requests. The connections belong to this
/// future: dropping it (a caller that gives up waiting for them) closes them all.
///
/// # Errors
/// None so far; accept errors are logged and retried.
pub async fn serve_with_limits(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let stopping = CancellationToken::new();
    // Dropped with this future too, aborting every connection task.
    let mut tasks = JoinSet::new();
    let connections = Arc::new(Connections::new(limits.max_connections));
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
        let stream = WriteDeadline::new(stream, limits.write_stall_timeout);
        let Some(slot) = connections.admit() else {
            debug!(peer = %peer, "too many busy http connections, closing the new one");
            continue;
        };
        let (acceptor, watcher, stopping) = (acceptor.clone(), graceful.watcher(), stopping.clone());
        let service =
            Tracked { inner: TowerToHyperService::new(router.clone()), activity: slot.activity.clone(), peer, limits };
        tasks.spawn(async move {
            let activity = slot.activity.clone();
            let connection = async move {
                let Some(acceptor) = acceptor else {
                    return serve_connection(stream, false, service, watcher, peer, limits).await;
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
                serve_connection(stream, h2, service, watcher, peer, limits).await;
            };
            // Dropping the connection closes it, whatever it was doing.
            tokio::select! {
                () = connection => {}
                () = activity.evicted.cancelled() => debug!(peer = %peer, "http connection evicted to make room"),
                () = activity.quiet_over(limits.first_request_timeout, limits.idle_timeout) => {
                    debug!(peer = %peer, "http connection without a request closed");
                }
                () = activity.stall_over(limits.write_stall_timeout) => {
                    debug!(peer = %peer, "http connection whose peer reads nothing closed");
                }
            }
            // Held for the connection's lifetime.
            drop(slot);
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
    service: Tracked,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
    limits: HttpLimits,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
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
mod tests;
