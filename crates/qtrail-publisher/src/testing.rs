//! An in-memory collector for tests of publishing services (feature `testing`).
//!
//! [`CollectorStub`] implements `qtrail.audit.v1.Ingest` the way the real collector behaves on
//! the wire: it answers a Hello with the highest seq it stored for that `(publisher, epoch)`,
//! stores each event once by id, and acknowledges every batch. Tests steer it (hold acks, reject
//! events, refuse streams, close a stream after some batches) and read back everything it
//! received. It is served on a real socket by [`CollectorStub::serve`].
//!
//! [`AuditSink::discard`] is the sink of a service without auditing, the baseline of the
//! audit-overhead benchmark; it lives here so that only builds with this feature can reach it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prost::Message as _;
use qtrail_proto::qtrail::audit::v1::ingest_server::{Ingest, IngestServer};
use qtrail_proto::qtrail::audit::v1::{
    Ack, AuditEvent, Hello, PublishRequest, PublishResponse, RejectedEvent, Welcome, publish_request, publish_response,
};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::AuditSink;

impl AuditSink {
    /// Returns the sink that drops every event: the service as it would be without auditing.
    pub const fn discard() -> Self {
        Self { discard: true }
    }
}

/// An event the stub stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Publisher that sent it.
    pub publisher_id: String,
    /// Its epoch.
    pub epoch: u64,
    /// Its seq.
    pub seq: u64,
    /// The event.
    pub event: AuditEvent,
}

/// A batch the stub received.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedBatch {
    /// Number of the stream it came on, from 1 in the order streams opened.
    pub stream: usize,
    /// Its batch_seq.
    pub batch_seq: u64,
    /// The seqs of its events.
    pub seqs: Vec<u64>,
    /// The ids of its events.
    pub event_ids: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    streams: usize,
    hellos: Vec<Hello>,
    authorizations: Vec<Option<String>>,
    batches: Vec<ReceivedBatch>,
    stored: Vec<StoredEvent>,
    stored_ids: HashSet<String>,
    stored_seqs: HashMap<(String, u64), u64>,
    refuse: Option<(tonic::Code, String)>,
    hold_acks: bool,
    held: Vec<(mpsc::Sender<Result<PublishResponse, Status>>, Ack)>,
    reject_ids: HashSet<String>,
    close_after: Option<usize>,
    unacked: BTreeMap<usize, u64>,
    max_unacked: u64,
}

/// The in-memory collector. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct CollectorStub {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

/// A [`CollectorStub`] served on a socket.
#[derive(Debug)]
pub struct StubServer {
    addr: SocketAddr,
    streams_done: CancellationToken,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl StubServer {
    /// Returns the address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the URL a publisher connects to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Ends every open stream with UNAVAILABLE and stops serving; the port is free afterwards.
    pub async fn stop(self) {
        self.streams_done.cancel();
        self.shutdown.cancel();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
            task.abort();
        }
    }
}

impl CollectorStub {
    /// Returns a stub that acknowledges everything.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; keep going.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Serves the stub on `listener` until [`StubServer::stop`].
    ///
    /// # Panics
    /// If the listener has no local address.
    pub fn serve(&self, listener: TcpListener) -> StubServer {
        let addr = listener.local_addr().expect("listener has an address");
        let streams_done = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let service = StubService { stub: self.clone(), streams_done: streams_done.clone() };
        let signal = shutdown.clone();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(IngestServer::new(service))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    signal.cancelled_owned(),
                )
                .await;
        });
        StubServer { addr, streams_done, shutdown, task }
    }

    /// Binds 127.0.0.1:0 and serves the stub there.
    ///
    /// # Panics
    /// If binding fails.
    pub async fn start(&self) -> StubServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a port");
        self.serve(listener)
    }

    /// Makes every new stream fail with this code and message (None: accept streams again).
    pub fn refuse_streams(&self, refusal: Option<(tonic::Code, &str)>) {
        self.state().refuse = refusal.map(|(code, message)| (code, message.to_owned()));
    }

    /// Holds acknowledgements back until [`CollectorStub::release_acks`] (events are stored on
    /// arrival all the same).
    pub fn hold_acks(&self, hold: bool) {
        self.state().hold_acks = hold;
    }

    /// Sends every held acknowledgement.
    pub fn release_acks(&self) {
        let held = std::mem::take(&mut self.state().held);
        for (responses, ack) in held {
            let _ = responses.try_send(Ok(PublishResponse { kind: Some(publish_response::Kind::Ack(ack)) }));
        }
        let mut state = self.state();
        state.unacked.clear();
    }

    /// Rejects the event with this id whenever it arrives.
    pub fn reject_event(&self, event_id: &str) {
        self.state().reject_ids.insert(event_id.to_owned());
    }

    /// Closes the next stream (with UNAVAILABLE) right after its `n`-th batch arrives, without
    /// storing or acknowledging that batch.
    pub fn close_next_stream_after(&self, batches: usize) {
        self.state().close_after = Some(batches);
    }

    /// Pretends that the stub already stored `(publisher_id, epoch)` up to `seq`.
    pub fn set_stored_seq(&self, publisher_id: &str, epoch: u64, seq: u64) {
        self.state().stored_seqs.insert((publisher_id.to_owned(), epoch), seq);
    }

    /// Returns the events stored, in arrival order.
    pub fn stored(&self) -> Vec<StoredEvent> {
        self.state().stored.clone()
    }

    /// Returns every batch received, in arrival order.
    pub fn batches(&self) -> Vec<ReceivedBatch> {
        self.state().batches.clone()
    }

    /// Returns every Hello received.
    pub fn hellos(&self) -> Vec<Hello> {
        self.state().hellos.clone()
    }

    /// Returns the `authorization` header of every stream, in order.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.state().authorizations.clone()
    }

    /// Returns the number of streams opened so far.
    pub fn streams(&self) -> usize {
        self.state().streams
    }

    /// Returns the most batches that were unacknowledged at once on one stream.
    pub fn max_unacked(&self) -> u64 {
        self.state().max_unacked
    }

    /// Waits until `done` holds for the stored events, or `timeout` passes; returns whether it held.
    pub async fn wait_for(&self, timeout: Duration, mut done: impl FnMut(&CollectorStub) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(self);
            }
        }
    }

    fn accept_batch(
        &self,
        stream: usize,
        batch: qtrail_proto::qtrail::audit::v1::Batch,
        hello: &Hello,
        responses: &mpsc::Sender<Result<PublishResponse, Status>>,
    ) -> BatchOutcome {
        // Events come encoded; one that does not decode is stored as the empty event.
        let events: Vec<(u64, AuditEvent)> = batch
            .events
            .iter()
            .map(|published| (published.seq, AuditEvent::decode(published.event.as_ref()).unwrap_or_default()))
            .collect();
        let mut state = self.state();
        state.batches.push(ReceivedBatch {
            stream,
            batch_seq: batch.batch_seq,
            seqs: events.iter().map(|(seq, _)| *seq).collect(),
            event_ids: events.iter().map(|(_, event)| event.id.clone()).collect(),
        });
        if let Some(remaining) = state.close_after.as_mut() {
            *remaining -= 1;
            if *remaining == 0 {
                state.close_after = None;
                return BatchOutcome::Close;
            }
        }
        let mut ack = Ack { batch_seq: batch.batch_seq, ..Ack::default() };
        let key = (hello.publisher_id.clone(), hello.epoch);
        for (seq, event) in events {
            if state.reject_ids.contains(&event.id) {
                ack.rejected.push(RejectedEvent {
                    event_id: event.id.clone(),
                    seq,
                    reason: "rejected by the test".to_owned(),
                });
                continue;
            }
            let stored_seq = state.stored_seqs.entry(key.clone()).or_default();
            *stored_seq = (*stored_seq).max(seq);
            if !state.stored_ids.insert(event.id.clone()) {
                ack.duplicates += 1;
                continue;
            }
            ack.accepted += 1;
            state.stored.push(StoredEvent { publisher_id: hello.publisher_id.clone(), epoch: hello.epoch, seq, event });
        }
        let unacked = state.unacked.entry(stream).or_default();
        *unacked += 1;
        let unacked = *unacked;
        state.max_unacked = state.max_unacked.max(unacked);
        if state.hold_acks {
            // Held under the same lock that recorded the batch, so a concurrent release sees it.
            state.held.push((responses.clone(), ack));
            return BatchOutcome::Held;
        }
        if let Some(count) = state.unacked.get_mut(&stream) {
            *count -= 1;
        }
        BatchOutcome::Ack(ack)
    }
}

enum BatchOutcome {
    Ack(Ack),
    Held,
    Close,
}

struct StubService {
    stub: CollectorStub,
    streams_done: CancellationToken,
}

#[tonic::async_trait]
impl Ingest for StubService {
    type PublishStream = ReceiverStream<Result<PublishResponse, Status>>;

    async fn publish(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<Self::PublishStream>, Status> {
        let authorization =
            request.metadata().get("authorization").and_then(|value| value.to_str().ok()).map(str::to_owned);
        let stream = {
            let mut state = self.stub.state();
            state.authorizations.push(authorization);
            state.streams += 1;
            if let Some((code, message)) = state.refuse.clone() {
                drop(state);
                self.stub.changed.notify_waiters();
                return Err(Status::new(code, message));
            }
            state.streams
        };
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(PublishRequest { kind: Some(publish_request::Kind::Hello(hello)) }) => hello,
            _ => return Err(Status::invalid_argument("first message must be a hello")),
        };
        let stored_seq = {
            let mut state = self.stub.state();
            state.hellos.push(hello.clone());
            state.stored_seqs.get(&(hello.publisher_id.clone(), hello.epoch)).copied().unwrap_or_default()
        };
        self.stub.changed.notify_waiters();
        let (responses, outgoing) = mpsc::channel(64);
        let _ = responses
            .send(Ok(PublishResponse { kind: Some(publish_response::Kind::Welcome(Welcome { stored_seq })) }))
            .await;
        let stub = self.stub.clone();
        let done = self.streams_done.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = inbound.message() => message,
                    _ = done.cancelled() => {
                        let _ = responses.send(Err(Status::unavailable("collector shutting down"))).await;
                        return;
                    }
                };
                let batch = match message {
                    Ok(Some(PublishRequest { kind: Some(publish_request::Kind::Batch(batch)) })) => batch,
                    Ok(None) | Err(_) => return,
                    Ok(Some(_)) => {
                        let _ = responses.send(Err(Status::invalid_argument("expected a batch"))).await;
                        return;
                    }
                };
                let outcome = stub.accept_batch(stream, batch, &hello, &responses);
                stub.changed.notify_waiters();
                match outcome {
                    BatchOutcome::Ack(ack) => {
                        let ack = PublishResponse { kind: Some(publish_response::Kind::Ack(ack)) };
                        if responses.send(Ok(ack)).await.is_err() {
                            return;
                        }
                    }
                    BatchOutcome::Held => {}
                    BatchOutcome::Close => {
                        let _ = responses.send(Err(Status::unavailable("stream closed by the test"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(outgoing)))
    }
}
