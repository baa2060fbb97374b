//! The gRPC side's connections, the same for both services: TCP_NODELAY, TCP keep-alive, and
//! a cap on how many are open at once.
//!
//! tonic serves every connection it is handed for as long as the peer keeps it; without a cap
//! a client that opens sockets and never uses them exhausts the file descriptors that the
//! store, the HTTP side and every other client need. HTTP/2 keep-alive pings (set on the
//! server in [`crate::tls::grpc_server`]) and TCP keep-alive find peers that vanished without
//! closing.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
use tracing::debug;

/// Most gRPC connections open at once; beyond it new ones are closed at once. Publishers and
/// CLI calls each hold one; the number is far above any real deployment's and far below the
/// file descriptors a server is given.
pub const MAX_GRPC_CONNECTIONS: usize = 4096;

/// Idle time after which the kernel probes a TCP connection, so that a peer that vanished
/// (a half-open connection) is found even when HTTP/2 pings cannot be sent.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Returns the connections `listener` accepts, at most `max` open at once.
pub fn incoming(listener: TcpListener, max: usize) -> CappedIncoming {
    // Without TCP_NODELAY, the tail of a response waits for the client's delayed ACK (40 ms on
    // Linux): measured as every query taking 44 ms.
    let inner = TcpIncoming::from(listener).with_nodelay(Some(true)).with_keepalive(Some(TCP_KEEPALIVE));
    CappedIncoming { inner, permits: Arc::new(Semaphore::new(max)) }
}

/// Accepted connections under a cap; see [`incoming`].
#[derive(Debug)]
pub struct CappedIncoming {
    inner: TcpIncoming,
    permits: Arc<Semaphore>,
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
            return Poll::Ready(Some(Ok(CappedStream { stream, _permit: permit })));
        }
    }
}

/// A connection that holds its place under the cap until it closes.
#[derive(Debug)]
pub struct CappedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
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
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
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
