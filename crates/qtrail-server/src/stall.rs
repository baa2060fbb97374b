//! The write-stall deadline both sides put on their connections: a peer that stops reading
//! (a TCP zero window) leaves the server's writes pending for good, and with them the calls
//! whose responses they carry, the memory those responses hold, and the connection's place
//! under the cap.
//!
//! [`WriteDeadline`] wraps a connection's socket, under TLS where there is TLS, so the bytes it
//! times are those on the wire. It sees only writes the server attempts: a peer that never
//! opens its HTTP/2 flow-control window makes hyper stop writing to that stream (there is no
//! pending write at all, its response waits inside h2 in a send buffer bounded per stream), and
//! keeps the connection alive by answering pings; that case is left to the per-stream bounds
//! the services set themselves (a tail whose client reads nothing ends after its own stall
//! timeout) and, for the connection, to the cap's eviction not touching it since it is busy.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long writing to a connection may make no progress (the peer's TCP window closed, the
/// kernel's send buffer full) before the connection is closed and the calls on it end. Far
/// beyond a slow but live reader's pause; a peer that reads nothing holds its place no longer.
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
