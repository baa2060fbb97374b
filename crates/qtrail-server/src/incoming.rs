//! The gRPC side's connections, the same for both services: TCP_NODELAY, TCP keep-alive, a cap
//! on how many are open at once, and deadlines for peers that hold a connection without using
//! it.
//!
//! tonic serves every connection it is handed for as long as the peer keeps it; without a cap
//! a client that opens sockets and never uses them exhausts the file descriptors that the
//! store, the HTTP side and every other client need. With a cap alone such a client holds
//! every place instead, so at the cap the connection idle the longest makes room (the HTTP
//! side's [`Connections`], one mechanism for both). HTTP/2 keep-alive pings (set on the
//! server in [`crate::tls::grpc_server`]) and TCP keep-alive find peers that vanished without
//! closing; a live peer answers pings, so a connection that has not started a call within
//! [`GRPC_FIRST_REQUEST_TIMEOUT`], or has had none in progress for [`GRPC_IDLE_TIMEOUT`], is
//! closed as well, and one whose peer stops reading after [`WRITE_STALL_TIMEOUT`]. Which calls
//! are in progress the server tells through [`CappedIncoming::activity_layer`], a layer on the
//! server's services.

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
use tokio::time::Sleep;
use tokio_stream::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming, TlsConnectInfo};
use tracing::debug;

use crate::http::{Activity, Busy, Connections, Guarded, Slot};
use crate::stall::{WRITE_STALL_TIMEOUT, WriteDeadline};

/// Most gRPC connections open at once. At the cap a new connection takes the place of the one
/// that has gone without a call in progress the longest, which is closed; when every one has a
/// call in progress the new one is closed at once. Publishers and CLI calls each hold one; the
/// number is far above any real deployment's and far below the file descriptors a server is
/// given.
pub const MAX_GRPC_CONNECTIONS: usize = 4096;

/// Idle time after which the kernel probes a TCP connection, so that a peer that vanished
/// (a half-open connection) is found even when HTTP/2 pings cannot be sent.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// How long a gRPC connection may go without a call in progress before it is closed. A
/// publisher keeps its Publish stream open, a tail its stream; a client between calls
/// reconnects by itself.
pub const GRPC_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a new gRPC connection may go before its first call arrives: a real client sends
/// one right after the HTTP/2 preface, so only a peer that connects and says nothing (or only
/// the preface) meets it.
pub const GRPC_FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The deadlines of a gRPC connection; [`GrpcTimeouts::default`] has the constants, tests
/// lower them to see them act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcTimeouts {
    /// See [`GRPC_FIRST_REQUEST_TIMEOUT`].
    pub first_request: Duration,
    /// See [`GRPC_IDLE_TIMEOUT`].
    pub idle: Duration,
    /// See [`WRITE_STALL_TIMEOUT`].
    pub write_stall: Duration,
}

impl Default for GrpcTimeouts {
    fn default() -> Self {
        Self { first_request: GRPC_FIRST_REQUEST_TIMEOUT, idle: GRPC_IDLE_TIMEOUT, write_stall: WRITE_STALL_TIMEOUT }
    }
}

/// Returns the connections `listener` accepts, at most `max` open at once, under the default
/// [`GrpcTimeouts`]. The server must carry [`CappedIncoming::activity_layer`], or every
/// connection counts as idle (and, never having had a call, is closed after the first-request
/// deadline).
pub fn incoming(listener: TcpListener, max: usize) -> CappedIncoming {
    incoming_with_timeouts(listener, max, GrpcTimeouts::default())
}

/// As [`incoming`], with connections under `timeouts`.
pub fn incoming_with_timeouts(listener: TcpListener, max: usize, timeouts: GrpcTimeouts) -> CappedIncoming {
    // Without TCP_NODELAY, the tail of a response waits for the client's delayed ACK (40 ms on
    // Linux): measured as every query taking 44 ms.
    let inner = TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(TCP_KEEPALIVE));
    let connections = Arc::new(Connections::new(max));
    CappedIncoming { inner, connections, registry: Registry::default(), timeouts }
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
    connections: Arc<Connections>,
    registry: Registry,
    timeouts: GrpcTimeouts,
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
            let Some(slot) = this.connections.admit() else {
                debug!(peer = ?stream.peer_addr().ok(), "every grpc connection has a call in progress, closing the new one");
                continue;
            };
            let activity = slot.activity.clone();
            let peer = stream.peer_addr().ok();
            if let Some(peer) = peer {
                this.registry.lock().unwrap_or_else(PoisonError::into_inner).insert(peer, activity.clone());
            }
            let timeouts = this.timeouts;
            let first_check = timeouts.first_request.min(timeouts.idle).min(timeouts.write_stall);
            let quiet = Quiet { activity, timeouts, sleep: Box::pin(tokio::time::sleep(first_check)) };
            let evicted = Box::pin(slot.activity.evicted.clone().cancelled_owned());
            let stream = WriteDeadline::new(stream, timeouts.write_stall);
            let registry = this.registry.clone();
            return Poll::Ready(Some(Ok(CappedStream { stream, slot, quiet, evicted, registry, peer })));
        }
    }
}

/// A connection that holds its place under the cap until it closes; it reads as ended once it
/// has gone too long without a call or was evicted to make room, and its writes fail once they
/// have stalled too long.
#[derive(Debug)]
pub struct CappedStream {
    stream: WriteDeadline<TcpStream>,
    slot: Slot,
    quiet: Quiet,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    registry: Registry,
    peer: Option<SocketAddr>,
}

/// The first-request and idle deadlines of one connection.
#[derive(Debug)]
struct Quiet {
    activity: Arc<Activity>,
    timeouts: GrpcTimeouts,
    sleep: Pin<Box<Sleep>>,
}

impl Quiet {
    /// Returns why the connection is to close, when it has gone too long without a call or a
    /// response of its has waited too long for the peer to read; otherwise arranges for `cx`
    /// to be woken when it may be.
    fn is_over(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return None;
            }
            let stalled_since = self.activity.stalled_since();
            if stalled_since.is_some_and(|since| since + self.timeouts.write_stall <= Instant::now()) {
                return Some("grpc connection whose peer reads nothing closed");
            }
            let next_check = match self.activity.quiet_deadline(self.timeouts.first_request, self.timeouts.idle) {
                Some(deadline) if deadline <= Instant::now() => return Some("grpc connection without a call closed"),
                // A call may start and end before the deadline, which then moves to the
                // call's end plus the idle timeout: possibly sooner, when that is the shorter.
                Some(deadline) => deadline.min(Instant::now() + self.timeouts.idle),
                // A call in progress: its end wakes no one here, so look again later.
                None => Instant::now() + self.timeouts.idle,
            };
            // A response may hand over a frame at any moment, with no one to wake here.
            let next_check = next_check.min(stalled_since.unwrap_or_else(Instant::now) + self.timeouts.write_stall);
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
        if registry.get(&peer).is_some_and(|activity| Arc::ptr_eq(activity, &self.slot.activity)) {
            registry.remove(&peer);
        }
    }
}

impl Connected for CappedStream {
    // The plain TCP information, so that `Request::remote_addr` works as without the cap.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.get_ref().connect_info()
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // Evicted, or quiet too long: the end of the stream, on which the server closes the
        // connection.
        if this.evicted.as_mut().poll(cx).is_ready() {
            debug!(peer = ?this.peer, "grpc connection evicted to make room");
            return Poll::Ready(Ok(()));
        }
        if let Poll::Ready(read) = Pin::new(&mut this.stream).poll_read(cx, buf) {
            return Poll::Ready(read);
        }
        if let Some(why) = this.quiet.is_over(cx) {
            debug!(peer = ?this.peer, why);
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
        self.stream.get_ref().is_write_vectored()
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
                Some(busy) => response.map(|body| tonic::body::Body::new(Guarded { body, busy })),
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
