//! The gRPC side's connections, the same for both services: TCP_NODELAY, TCP keep-alive, a cap
//! on how many are open at once, and an idle timeout.
//!
//! tonic serves every connection it is handed for as long as the peer keeps it; without a cap
//! a client that opens sockets and never uses them exhausts the file descriptors that the
//! store, the HTTP side and every other client need. HTTP/2 keep-alive pings (set on the
//! server in [`crate::tls::grpc_server`]) and TCP keep-alive find peers that vanished without
//! closing; a live peer answers pings, so a connection without a call in progress for
//! [`GRPC_IDLE_TIMEOUT`] is closed as well. Which calls are in progress the server tells
//! through [`CappedIncoming::activity_layer`], a layer on the server's services.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::http::{Extensions, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming, TlsConnectInfo};
use tracing::debug;

use crate::http::{Activity, Busy, Guarded};

/// Most gRPC connections open at once; beyond it new ones are closed at once. Publishers and
/// CLI calls each hold one; the number is far above any real deployment's and far below the
/// file descriptors a server is given.
pub const MAX_GRPC_CONNECTIONS: usize = 4096;

/// Idle time after which the kernel probes a TCP connection, so that a peer that vanished
/// (a half-open connection) is found even when HTTP/2 pings cannot be sent.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// How long a gRPC connection may go without a call in progress before it is closed. A
/// publisher keeps its Publish stream open, a tail its stream; a client between calls
/// reconnects by itself.
pub const GRPC_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Returns the connections `listener` accepts, at most `max` open at once, each closed after
/// [`GRPC_IDLE_TIMEOUT`] without a call in progress. The server must carry
/// [`CappedIncoming::activity_layer`], or every connection counts as idle.
pub fn incoming(listener: TcpListener, max: usize) -> CappedIncoming {
    incoming_with_idle_timeout(listener, max, GRPC_IDLE_TIMEOUT)
}

/// As [`incoming`], with connections closed after `idle_timeout` without a call in progress.
pub fn incoming_with_idle_timeout(listener: TcpListener, max: usize, idle_timeout: Duration) -> CappedIncoming {
    // Without TCP_NODELAY, the tail of a response waits for the client's delayed ACK (40 ms on
    // Linux): measured as every query taking 44 ms.
    let inner = TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(TCP_KEEPALIVE));
    CappedIncoming { inner, permits: Arc::new(Semaphore::new(max)), registry: Registry::default(), idle_timeout }
}

/// The open connections' activity, by the client's address (which tonic hands each request).
type Registry = Arc<Mutex<HashMap<SocketAddr, Arc<Activity>>>>;

/// The router of a gRPC server layered with [`CappedIncoming::activity_layer`], as both services
/// build it: named so that a service can build its router in one step and serve it in another.
pub type GrpcRouter =
    tonic::transport::server::Router<tower::layer::util::Stack<ActivityLayer, tower::layer::util::Identity>>;

/// Accepted connections under a cap; see [`incoming`].
#[derive(Debug)]
pub struct CappedIncoming {
    inner: TcpIncoming,
    permits: Arc<Semaphore>,
    registry: Registry,
    idle_timeout: Duration,
}

impl CappedIncoming {
    /// Returns the address the listener is bound to.
    ///
    /// # Errors
    /// When the socket cannot tell.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Returns the layer that marks this incoming's connections busy while they carry a call
    /// (`Server::layer`).
    pub fn activity_layer(&self) -> ActivityLayer {
        ActivityLayer { registry: self.registry.clone() }
    }
}

impl Stream for CappedIncoming {
    type Item = std::io::Result<CappedStream>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let stream = match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(stream)) => stream,
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => return Poll::Ready(None),
            };
            let Ok(permit) = this.permits.clone().try_acquire_owned() else {
                debug!(peer = ?stream.peer_addr().ok(), "too many grpc connections, closing the new one");
                continue;
            };
            let activity = Arc::new(Activity::new());
            let peer = stream.peer_addr().ok();
            if let Some(peer) = peer {
                this.registry.lock().unwrap_or_else(PoisonError::into_inner).insert(peer, activity.clone());
            }
            let idle =
                Idle { activity, timeout: this.idle_timeout, sleep: Box::pin(tokio::time::sleep(this.idle_timeout)) };
            let registry = this.registry.clone();
            return Poll::Ready(Some(Ok(CappedStream { stream, _permit: permit, idle, registry, peer })));
        }
    }
}

/// A connection that holds its place under the cap until it closes, and reads as ended once
/// it has been idle too long.
#[derive(Debug)]
pub struct CappedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Idle,
    registry: Registry,
    peer: Option<SocketAddr>,
}

#[derive(Debug)]
struct Idle {
    activity: Arc<Activity>,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl Idle {
    /// Returns whether the connection has been without a call for the timeout; otherwise
    /// arranges for `cx` to be woken when it may have been.
    fn is_over(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let next_check = match self.activity.idle_since() {
                Some(since) if since.elapsed() >= self.timeout => return true,
                Some(since) => since + self.timeout,
                None => Instant::now() + self.timeout,
            };
            self.sleep.as_mut().reset(next_check.into());
        }
    }
}

impl Drop for CappedStream {
    fn drop(&mut self) {
        let Some(peer) = self.peer else {
            return;
        };
        // A new connection may already have the same address (the kernel frees a port as soon
        // as a connection is reset): remove the entry only if it is still this connection's.
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if registry.get(&peer).is_some_and(|activity| Arc::ptr_eq(activity, &self.idle.activity)) {
            registry.remove(&peer);
        }
    }
}

impl Connected for CappedStream {
    // The plain TCP information, so that `Request::remote_addr` works as without the cap.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(read) = Pin::new(&mut this.stream).poll_read(cx, buf) {
            return Poll::Ready(read);
        }
        // Idle too long: the end of the stream, on which the server closes the connection.
        if this.idle.is_over(cx) {
            debug!(peer = ?this.peer, "idle grpc connection closed");
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Marks the connection of each call busy until the call's response has been sent; see
/// [`CappedIncoming::activity_layer`].
#[derive(Debug, Clone)]
pub struct ActivityLayer {
    registry: Registry,
}

impl<S> tower::Layer<S> for ActivityLayer {
    type Service = ActivityService<S>;

    fn layer(&self, inner: S) -> ActivityService<S> {
        ActivityService { inner, registry: self.registry.clone() }
    }
}

/// The service [`ActivityLayer`] wraps around a server's services.
#[derive(Debug, Clone)]
pub struct ActivityService<S> {
    inner: S,
    registry: Registry,
}

impl<S, B> tower::Service<Request<B>> for ActivityService<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let busy = self.busy(request.extensions());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match busy {
                Some(busy) => response.map(|body| tonic::body::Body::new(Guarded { body, _busy: busy })),
                None => response,
            })
        })
    }
}

impl<S> ActivityService<S> {
    /// Marks the connection a request came over busy, if it is one of the registry's.
    fn busy(&self, extensions: &Extensions) -> Option<Busy> {
        let tcp = extensions
            .get::<TcpConnectInfo>()
            .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().map(TlsConnectInfo::get_ref))?;
        let activity = self.registry.lock().unwrap_or_else(PoisonError::into_inner).get(&tcp.remote_addr()?)?.clone();
        Some(activity.busy())
    }
}
