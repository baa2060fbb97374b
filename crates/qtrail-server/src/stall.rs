//! The write-stall deadline both sides put on their connections: a peer that stops reading
//! leaves the server's responses unsent for good, and with them the calls they belong to, the
//! memory they hold, and the connection's place under the cap (it never counts as idle).
//!
//! A peer stops reading in one of two ways, and each is timed where it shows:
//! - It stops reading its socket (a TCP zero window): the server's writes stay pending.
//!   [`WriteDeadline`] wraps a connection's socket, under TLS where there is TLS, and fails a
//!   write or flush that has made no progress for the timeout; the server then drops the
//!   connection.
//! - It reads its socket but never opens its HTTP/2 flow-control window: h2 buffers the
//!   response (up to its per-stream send buffer) and hyper stops writing it, so no write is
//!   ever pending while the peer answers pings and the connection looks alive. What shows is
//!   that hyper does not come back for the response's next frame: hyper takes a frame only
//!   once the last one is on its way. The response body wrapper (`Guarded`) notes when it
//!   handed a frame over and when hyper came back; a connection with a frame waiting longer
//!   than the timeout is closed ([`crate::incoming`] through its read side, the HTTP side by
//!   its connection task). So each response message must reach the wire within the timeout:
//!   for the largest (an export chunk of 1 MiB) about 35 KiB/s at the least.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long writing to a connection may make no progress (the peer's TCP window closed, the
/// kernel's send buffer full), or a response frame may wait for the peer's HTTP/2 window,
/// before the connection is closed and the calls on it end. Far beyond a slow but live
/// reader's pause; a peer that reads nothing holds its place no longer.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection whose writes fail with [`io::ErrorKind::TimedOut`] once they have made no
/// progress for the timeout: the server then drops the connection.
#[derive(Debug)]
pub(crate) struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed (`stalled` set) when a write or flush first returns pending, disarmed by any
    /// progress.
    sleep: Pin<Box<Sleep>>,
    stalled: bool,
}

impl<S> WriteDeadline<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout, sleep: Box::pin(tokio::time::sleep(timeout)), stalled: false }
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Passes on a write's outcome: progress disarms the deadline, pending arms it (once) and
    /// turns into an error when it has passed.
    fn watch<T>(&mut self, cx: &mut Context<'_>, outcome: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.stalled = false;
            return outcome;
        }
        if !self.stalled {
            self.stalled = true;
            self.sleep.as_mut().reset(Instant::now() + self.timeout);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("peer read nothing for {} seconds", self.timeout.as_secs_f64()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, outcome)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, outcome)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, outcome)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
