//! The HTTP side of a qtrail server: Prometheus metrics at `/metrics`, liveness at `/healthz`,
//! and whatever else a service adds to the router (the collector's web console), over TLS when
//! the server has a certificate.
//!
//! Metrics use the process-wide `metrics` recorder, installed once: `qtrail up` runs the
//! runtime and the collector in one process, and both register into, and render from, the same
//! registry. Metric names carry their service (`qtrail_runtime_…`, `qtrail_collector_…`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse as _;
use axum::routing::get;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::auth::bearer;
use crate::config::ConfigError;
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
    fn admits(&self, headers: &HeaderMap) -> bool {
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

/// Most connections open at once, TLS handshakes included. At the cap a new connection takes
/// the place of the one that has waited on its client the longest (idle, in its handshake,
/// or sending its request), which is closed; when every connection is serving a request the
/// new one is closed at once rather than queued. A flood of slow connections then only ever
/// evicts itself, and a scrape of `/metrics` or `/healthz` still gets in.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long a client may take to send its request headers (HTTP/1) before its connection is
/// dropped; the same timer bounds how long a kept-alive connection may sit between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's body once its headers are in: a body that
/// trickles in a byte at a time would otherwise hold the connection for as long as it likes.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request body, in bytes; larger ones are refused with 413 before they are read. The
/// biggest body any route takes is a console sign-in, a token in a line of JSON.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a connection may go without a request in progress before it is closed: HTTP/2
/// keep-alive pings are answered by any live peer, so they alone never end an idle one.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often an idle HTTP/2 connection is pinged, and how long the answer may take: a peer that
/// does not answer is dropped.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The limits of the HTTP side; [`HttpLimits::default`] has the constants above, tests lower
/// them to see them act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`BODY_READ_TIMEOUT`].
    pub body_read_timeout: Duration,
    /// See [`MAX_BODY_BYTES`].
    pub max_body_bytes: usize,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_read_timeout: BODY_READ_TIMEOUT,
            max_body_bytes: MAX_BODY_BYTES,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
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
/// [`HANDSHAKE_TIMEOUT`], then the request headers' and the body's, and the idle timeout
/// between requests. Handlers see the whole body, read in advance within its limits, and the
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
                () = activity.idle_over(limits.idle_timeout) => debug!(peer = %peer, "idle http connection closed"),
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

/// The open connections: their number, and whom to evict at the cap.
#[derive(Debug)]
struct Connections {
    max: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    by_id: HashMap<u64, Arc<Activity>>,
}

/// A connection's place among the open ones, given up on drop.
#[derive(Debug)]
struct Slot {
    connections: Arc<Connections>,
    id: u64,
    activity: Arc<Activity>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.open.lock().unwrap_or_else(PoisonError::into_inner).by_id.remove(&self.id);
    }
}

impl Connections {
    fn new(max: usize) -> Self {
        Self { max, open: Mutex::new(Open::default()) }
    }

    /// Returns a place for a new connection: a free one, or that of the connection waiting on
    /// its client the longest, which is told to close. `None` when every one is serving.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.by_id.len() >= self.max {
            let longest_idle = open
                .by_id
                .iter()
                .filter_map(|(id, activity)| activity.idle_since().map(|since| (since, *id)))
                .min()
                .map(|(_, id)| id)?;
            if let Some(evicted) = open.by_id.remove(&longest_idle) {
                evicted.evicted.cancel();
            }
        }
        let id = open.next_id;
        open.next_id += 1;
        let activity = Arc::new(Activity::new());
        open.by_id.insert(id, activity.clone());
        Some(Slot { connections: self.clone(), id, activity })
    }
}

/// Whether a connection is serving requests, and since when it has not been; shared with
/// the gRPC side's connections ([`crate::incoming`]).
#[derive(Debug)]
pub(crate) struct Activity {
    state: Mutex<ActivityState>,
    /// Cancelled when the connection must close to make room for a new one.
    evicted: CancellationToken,
}

#[derive(Debug)]
struct ActivityState {
    /// Requests in progress, from their whole body received to their whole response sent.
    busy: usize,
    /// When `busy` last became 0 (or the connection opened).
    idle_since: Instant,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(ActivityState { busy: 0, idle_since: Instant::now() }),
            evicted: CancellationToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns when the connection last became idle; `None` while it serves a request.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        let state = self.lock();
        (state.busy == 0).then_some(state.idle_since)
    }

    /// Marks a request in progress until the returned guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.lock().busy += 1;
        Busy(self.clone())
    }

    /// Completes once the connection has had no request in progress for `timeout`.
    async fn idle_over(&self, timeout: Duration) {
        loop {
            let wait = match self.idle_since() {
                Some(since) if since.elapsed() >= timeout => return,
                Some(since) => timeout - since.elapsed(),
                None => timeout,
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request in progress on a connection.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.busy -= 1;
        if state.busy == 0 {
            state.idle_since = Instant::now();
        }
    }
}

/// The service of one connection: reads each request's body within the limits, tells the
/// handlers who the client is, and keeps the connection marked busy from the whole request
/// received to the whole response sent.
#[derive(Debug, Clone)]
struct Tracked {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
    peer: SocketAddr,
    limits: HttpLimits,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let body = match read_body(body, &parts.headers, this.limits).await {
                Ok(body) => body,
                Err(refused) => return Ok(refused),
            };
            parts.extensions.insert(ConnectInfo(this.peer));
            let busy = this.activity.busy();
            let response = this.inner.call(Request::from_parts(parts, Body::from(body))).await?;
            Ok(response.map(|body| Body::new(Guarded { body, _busy: busy })))
        })
    }
}

/// Reads a request's whole body within `limits`, or returns the answer that refuses it.
async fn read_body(body: Incoming, headers: &HeaderMap, limits: HttpLimits) -> Result<Bytes, Response<Body>> {
    let refuse = |status: StatusCode, message: String| {
        let mut response = Response::new(Body::from(format!("{message}\n")));
        *response.status_mut() = status;
        // The rest of the body is not read, so the connection cannot carry another request.
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large: at most {} bytes", limits.max_body_bytes),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_body_bytes as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_read_timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(refuse(StatusCode::BAD_REQUEST, "invalid request body".into())),
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!("request body not received within {} seconds", limits.body_read_timeout.as_secs_f64()),
        )),
    }
}

/// A response body that keeps its connection marked busy until it is sent or dropped.
#[derive(Debug)]
pub(crate) struct Guarded<B> {
    pub(crate) body: B,
    pub(crate) _busy: Busy,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
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
        let server = tokio::spawn(serve(listener, base_router(None), None, async move {
            let _ = stopped.await;
        }));
        metrics::counter!("qtrail_test_requests_total").increment(3);

        let metrics_text = http_get(addr, "/metrics").await;
        assert!(metrics_text.contains("qtrail_test_requests_total 3"), "{metrics_text}");
        assert!(http_get(addr, "/healthz").await.ends_with("ok\n"));

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_metrics_token_guards_metrics_but_not_health() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("metrics-token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let token = MetricsToken::load(&file).unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        std::fs::write(&file, " \n").unwrap();
        assert!(MetricsToken::load(&file).unwrap_err().to_string().ends_with("the file holds no token"));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, base_router(Some(token)), None, async move {
            let _ = stopped.await;
        }));
        let scrape = |authorization: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET /metrics HTTP/1.0\r\nHost: x\r\n{authorization}\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        for refused in ["", "Authorization: Bearer wrong\r\n", "Authorization: Basic s3cret\r\n"] {
            let response = scrape(refused).await;
            assert_eq!(response.split(' ').nth(1), Some("401"), "{response}");
            assert!(response.to_lowercase().contains("www-authenticate: bearer"), "{response}");
        }
        let response = scrape("Authorization: Bearer s3cret\r\n").await;
        assert_eq!(response.split(' ').nth(1), Some("200"), "{response}");
        assert!(http_get(addr, "/healthz").await.ends_with("ok\n"), "health stays open");
    }

    /// Starts a server with `limits`; returns its address and what stops it.
    async fn start(limits: HttpLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_with_limits(listener, base_router(None), None, limits, async move {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// Opens a connection that sends the head of a sign-in promising a body of `length` bytes,
    /// and one byte of it: the slowloris of the issue.
    async fn slow_sign_in(addr: SocketAddr, length: usize) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\n\r\n{{"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
    }

    /// Reads what the server sends until it closes the connection (an error counts as closed).
    async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response).into_owned()
    }

    /// A deadline far beyond what a local request needs, far below the limits under test.
    const ANSWER: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn a_flood_of_slow_connections_leaves_metrics_and_health_reachable() {
        // Timers long enough that only making room at the cap can let a scrape in.
        let limits = HttpLimits {
            max_connections: 8,
            header_read_timeout: Duration::from_secs(600),
            body_read_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(600),
            ..HttpLimits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut flood = Vec::new();
        for _ in 0..3 * limits.max_connections {
            flood.push(slow_sign_in(addr, 60_000).await);
        }
        for path in ["/metrics", "/healthz", "/metrics"] {
            let answered = tokio::time::timeout(ANSWER, http_get(addr, path)).await;
            assert!(answered.is_ok(), "{path} did not answer under the flood");
        }
        // The oldest slow connections made room: the server closed them, unanswered.
        let oldest = &mut flood[0];
        let closed = tokio::time::timeout(ANSWER, read_until_closed(oldest)).await.expect("the oldest was evicted");
        assert_eq!(closed, "");
    }

    #[tokio::test]
    async fn slow_and_large_bodies_and_idle_connections_are_cut() {
        use tokio::io::AsyncWriteExt;
        let limits = HttpLimits {
            header_read_timeout: Duration::from_millis(300),
            body_read_timeout: Duration::from_millis(300),
            max_body_bytes: 1000,
            ..HttpLimits::default()
        };
        let (addr, _stop) = start(limits).await;

        let mut slow = slow_sign_in(addr, 500).await;
        let answer = tokio::time::timeout(ANSWER, read_until_closed(&mut slow)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request body not received within 0.3 seconds"), "{answer}");

        let mut large = tokio::net::TcpStream::connect(addr).await.unwrap();
        large.write_all(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n").await.unwrap();
        let answer = tokio::time::timeout(ANSWER, read_until_closed(&mut large)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("request body too large: at most 1000 bytes"), "{answer}");

        // Chunked, so that only counting the bytes finds it too large.
        let mut chunked = tokio::net::TcpStream::connect(addr).await.unwrap();
        let body = format!(
            "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{}\r\n0\r\n\r\n",
            "x".repeat(2000)
        );
        chunked.write_all(body.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(ANSWER, read_until_closed(&mut chunked)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let answer = tokio::time::timeout(ANSWER, read_until_closed(&mut idle)).await.unwrap();
        assert!(!answer.starts_with("HTTP/1.1 2"), "{answer}");

        // A body within the limits still arrives whole.
        assert!(http_get(addr, "/healthz").await.ends_with("ok\n"));
    }

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_closed() {
        use tokio::io::AsyncWriteExt;
        let limits = HttpLimits {
            header_read_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let answer = tokio::time::timeout(ANSWER, read_until_closed(&mut kept)).await.expect("closed when idle");
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"), "{answer}");
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
