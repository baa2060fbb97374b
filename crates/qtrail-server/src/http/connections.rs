//! Open connections: the cap on their number, whom to evict at the cap, and which of them are
//! serving a request and since when the others have not been. The HTTP side keeps its
//! connections here, and the gRPC side ([`crate::incoming`]) too: one way of making room for
//! both.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

use super::limits::{HttpLimits, read_body};

/// The open connections: their number, and whom to evict at the cap.
#[derive(Debug)]
pub(crate) struct Connections {
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
pub(crate) struct Slot {
    connections: Arc<Connections>,
    id: u64,
    pub(crate) activity: Arc<Activity>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.open.lock().unwrap_or_else(PoisonError::into_inner).by_id.remove(&self.id);
    }
}

impl Connections {
    pub(crate) fn new(max: usize) -> Self {
        Self { max, open: Mutex::new(Open::default()) }
    }

    /// Returns a place for a new connection: a free one, or that of the connection waiting on
    /// its client the longest, which is told to close. `None` when every one is serving.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Slot> {
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

/// Whether a connection is serving requests, and since when it has not been.
#[derive(Debug)]
pub(crate) struct Activity {
    state: Mutex<ActivityState>,
    /// Cancelled when the connection must close to make room for a new one.
    pub(crate) evicted: CancellationToken,
}

#[derive(Debug)]
struct ActivityState {
    /// Requests in progress, from their whole body received (the HTTP side) or their headers
    /// (the gRPC side, whose calls stream) to their whole response sent.
    busy: usize,
    /// When `busy` last became 0 (or the connection opened).
    idle_since: Instant,
    /// Whether a request has arrived (its headers at least): until then the connection is
    /// under the shorter first-request deadline, which a peer that connects and says nothing
    /// (or only the HTTP/2 preface) meets.
    started: bool,
    /// Responses that handed the server a frame it has not yet come back for, by request,
    /// with when: hyper takes a response's next frame only once the last one is on its way, so
    /// one waiting long is a peer that does not read (see [`crate::stall`]).
    handed: HashMap<u64, Instant>,
    /// The next request's key in `handed`.
    next_request: u64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(ActivityState {
                busy: 0,
                idle_since: Instant::now(),
                started: false,
                handed: HashMap::new(),
                next_request: 0,
            }),
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

    /// Notes that a request has arrived, so the first-request deadline no longer applies.
    pub(crate) fn started(&self) {
        self.lock().started = true;
    }

    /// Marks a request in progress until the returned guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        let mut state = self.lock();
        state.busy += 1;
        state.started = true;
        state.next_request += 1;
        Busy { activity: self.clone(), request: state.next_request }
    }

    /// Returns since when the oldest frame a response handed over has waited for the peer to
    /// make room for it; `None` when none waits.
    pub(crate) fn stalled_since(&self) -> Option<Instant> {
        self.lock().handed.values().min().copied()
    }

    /// Completes once a response has waited [`Activity::stalled_since`] for `timeout`.
    pub(super) async fn stall_over(&self, timeout: Duration) {
        loop {
            let next_check = match self.stalled_since() {
                Some(since) if since + timeout <= Instant::now() => return,
                Some(since) => since + timeout,
                // A frame handed over now wakes no one here, so look again later.
                None => Instant::now() + timeout,
            };
            tokio::time::sleep_until(next_check.into()).await;
        }
    }

    /// Returns when the connection is to close for want of requests: `first_request` after it
    /// opened while none has arrived, then `idle` after it last became idle; `None` while it
    /// serves a request.
    pub(crate) fn quiet_deadline(&self, first_request: Duration, idle: Duration) -> Option<Instant> {
        let state = self.lock();
        (state.busy == 0).then(|| state.idle_since + if state.started { idle } else { first_request })
    }

    /// Completes once [`Activity::quiet_deadline`] has passed.
    pub(super) async fn quiet_over(&self, first_request: Duration, idle: Duration) {
        loop {
            let next_check = match self.quiet_deadline(first_request, idle) {
                Some(deadline) if deadline <= Instant::now() => return,
                // A request may start and end before the deadline, which then moves to the
                // request's end plus `idle`: possibly sooner, when that is the shorter.
                Some(deadline) => deadline.min(Instant::now() + idle),
                // Serving: whatever ends the request wakes no one here, so look again later.
                None => Instant::now() + idle,
            };
            tokio::time::sleep_until(next_check.into()).await;
        }
    }
}

/// A request in progress on a connection.
#[derive(Debug)]
pub(crate) struct Busy {
    activity: Arc<Activity>,
    request: u64,
}

impl Busy {
    /// Notes whether the response has a frame waiting for the server to come back for it.
    fn handed(&self, waiting: bool) {
        let mut state = self.activity.lock();
        if waiting {
            state.handed.insert(self.request, Instant::now());
        } else {
            state.handed.remove(&self.request);
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.activity.lock();
        state.handed.remove(&self.request);
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
pub(super) struct Tracked {
    pub(super) inner: TowerToHyperService<Router>,
    pub(super) activity: Arc<Activity>,
    pub(super) peer: SocketAddr,
    pub(super) limits: HttpLimits,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            this.activity.started();
            let (mut parts, body) = request.into_parts();
            let body = match read_body(body, &parts.headers, this.limits).await {
                Ok(body) => body,
                Err(refused) => return Ok(refused),
            };
            parts.extensions.insert(ConnectInfo(this.peer));
            let busy = this.activity.busy();
            let response = this.inner.call(Request::from_parts(parts, Body::from(body))).await?;
            Ok(response.map(|body| Body::new(Guarded { body, busy })))
        })
    }
}

/// A response body that keeps its connection marked busy until it is sent or dropped, and
/// tells it how long the frame it handed over last has waited to be sent.
#[derive(Debug)]
pub(crate) struct Guarded<B> {
    pub(crate) body: B,
    pub(crate) busy: Busy,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        // Back for the next frame: the last is on its way. A frame now handed over waits until
        // hyper comes back, which it does once the peer has made room for it.
        self.busy.handed(matches!(polled, std::task::Poll::Ready(Some(Ok(_)))));
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
