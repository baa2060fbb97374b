//! `Ingest.Publish`: the per-stream protocol between a publisher and the collector.
//!
//! A stream opens with `Hello{publisher_id, location, epoch}` for a location the stream's token
//! names, answered by `Welcome{stored_seq}`; then each `Batch` (batch_seq 1, 2, …) is validated
//! event by event, handed to the [writer](crate::writer), and answered, in order, by one `Ack`
//! once it is durable. Each event arrives as its encoded bytes (`PublishedEvent.event`) and is
//! decoded here once, straight into the model. Invalid events (one whose bytes do not decode
//! too) and events of another location are rejected in the Ack and never stored (their seqs
//! are recorded as rejected in the publisher's state, even for a batch of nothing else); events already
//! stored are counted as duplicates. At most [`MAX_UNACKED_BATCHES`] batches may await their
//! Ack; one more fails the stream RESOURCE_EXHAUSTED, as does a batch that would leave its
//! publisher too many gaps (see [`publisher`]). A message that is not a request is a protocol
//! error, not the end of the stream. A protocol error first sends the Acks of batches already
//! handed to the writer, then fails the stream. At shutdown the stream stops reading,
//! acknowledges what it has, and ends UNAVAILABLE so the publisher reconnects later.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::{FuturesOrdered, Stream, StreamExt};
use qtrail_cadf::{Location, ValidEvent};
use qtrail_proto::limits::{MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES, MAX_UNACKED_BATCHES};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::publish_request::Kind as RequestKind;
use qtrail_proto::qtrail::audit::v1::publish_response::Kind as ResponseKind;
use tokio::sync::mpsc;
use tonic::{Code, Status};
use tracing::{debug, info, warn};

use crate::access;
use crate::error::{Error, Result};
use crate::lifecycle::Lifecycle;
use crate::meters::{self, Open, Openable};
use crate::store::publisher::{self, MAX_GAPS_PER_PUBLISHER};
use crate::store::{AppendBatch, EventStore, NewEvent};
use crate::tokens::Caller;
use crate::writer::{Sequence, WriterHandle};

/// How a `prost::DecodeError` starts, as tonic's codec passes it on in an INTERNAL status.
const PROST_DECODE_ERROR: &str = "failed to decode Protobuf message";

/// Longest publisher id accepted, in bytes.
const MAX_PUBLISHER_ID_BYTES: usize = 256;

/// An Ack on its way: resolves once the writer has answered.
type PendingAck = Pin<Box<dyn Future<Output = Result<proto::Ack>> + Send>>;

/// The ingest service: opens sessions for Publish streams.
#[derive(Debug, Clone)]
pub(crate) struct Ingest {
    store: Arc<dyn EventStore>,
    writer: WriterHandle,
    lifecycle: Lifecycle,
}

/// The identity of a stream, fixed by its Hello.
#[derive(Debug)]
struct Publisher {
    id: String,
    location: Location,
    epoch: u64,
}

impl Ingest {
    /// Returns the ingest service over `store`, writing through `writer`, ending streams when
    /// `lifecycle` says so.
    pub(crate) fn new(store: Arc<dyn EventStore>, writer: WriterHandle, lifecycle: Lifecycle) -> Self {
        Self { store, writer, lifecycle }
    }

    /// Runs one Publish stream: reads `inbound` and sends responses (or the error that ends the
    /// stream) to `responses`. `caller` is the stream's token: its name for logs, its locations
    /// for the Hello. `credential` is what binds publisher ids and names the stream in stored
    /// records: the token's name, or that and its client certificate (see
    /// [`publisher::cert_credential`]).
    pub(crate) async fn publish<S>(
        self,
        caller: Caller,
        credential: String,
        inbound: S,
        responses: mpsc::Sender<Result<proto::PublishResponse>>,
    ) where
        S: Stream<Item = std::result::Result<proto::PublishRequest, Status>> + Send + Unpin,
    {
        let _open = Open::new(Openable::PublishStream);
        let mut session = Session {
            ingest: self,
            caller: caller.name,
            credential,
            locations: caller.locations,
            inbound,
            responses: responses.clone(),
            pending: FuturesOrdered::new(),
            sequence: Sequence::default(),
        };
        if let Err(err) = session.run().await {
            if matches!(err, Error::ShuttingDown) {
                debug!(token = %session.caller, "publish stream ended by shutdown");
            } else {
                warn!(error = %err, token = %session.caller, "publish stream failed");
            }
            let lifecycle = session.ingest.lifecycle.clone();
            lifecycle.send(&responses, Err(err)).await;
        }
    }
}

/// The state of one Publish stream.
struct Session<S> {
    ingest: Ingest,
    /// The name of the stream's token.
    caller: String,
    /// What binds publisher ids: the token's name, or that and the client certificate.
    credential: String,
    /// The locations the stream's token may publish to.
    locations: Vec<Location>,
    inbound: S,
    responses: mpsc::Sender<Result<proto::PublishResponse>>,
    pending: FuturesOrdered<PendingAck>,
    /// This stream's batches at the writer, which stops committing them after a failure.
    sequence: Sequence,
}

/// What reading the next request gave.
enum Next<T> {
    Message(T),
    /// The publisher closed its side or went away.
    End,
    /// The collector is shutting down.
    Shutdown,
    /// The publisher sent something that is not a request.
    Failed(Error),
}

impl<S> Session<S>
where
    S: Stream<Item = std::result::Result<proto::PublishRequest, Status>> + Send + Unpin,
{
    async fn run(&mut self) -> Result<()> {
        let hello = match self.next_request().await {
            Next::Message(Some(RequestKind::Hello(hello))) => hello,
            Next::Message(Some(RequestKind::Batch(_))) => {
                return Err(Error::invalid("first message must be a hello, got a batch"));
            }
            Next::Message(None) => return Err(Error::invalid("missing publish request kind: expected a hello")),
            Next::End => return Ok(()),
            Next::Shutdown => return Err(Error::ShuttingDown),
            Next::Failed(err) => return Err(err),
        };
        let publisher = self.welcome(hello).await?;
        info!(publisher_id = %publisher.id, location = %publisher.location, epoch = publisher.epoch,
              token = %self.caller, credential = %self.credential, "publisher connected");
        let result = self.batches(&publisher).await;
        // Whatever ended the stream, batches already handed to the writer are committed; their
        // Acks still go out so the publisher need not resend them.
        self.drain_acks().await;
        info!(publisher_id = %publisher.id, location = %publisher.location, "publisher disconnected");
        result
    }

    /// Returns the kind of the next request (`None` for a request without one).
    async fn next_request(&mut self) -> Next<Option<RequestKind>> {
        let next = tokio::select! {
            next = self.inbound.next() => next,
            () = self.ingest.lifecycle.stopping() => return Next::Shutdown,
        };
        match next {
            Some(Ok(request)) => Next::Message(request.kind),
            Some(Err(status)) => match read_failure(&status) {
                Some(err) => Next::Failed(err),
                None => {
                    debug!(error = %status, "publish stream broke");
                    Next::End
                }
            },
            None => Next::End,
        }
    }

    /// Checks the Hello and answers it with the highest seq stored for the publisher's epoch.
    async fn welcome(&mut self, hello: proto::Hello) -> Result<Publisher> {
        if hello.publisher_id.is_empty() {
            return Err(Error::invalid("missing hello.publisher_id"));
        }
        if hello.publisher_id.len() > MAX_PUBLISHER_ID_BYTES || hello.publisher_id.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "invalid hello.publisher_id: at most {MAX_PUBLISHER_ID_BYTES} bytes without control characters"
            )));
        }
        let location: Location = hello.location.parse().map_err(|err| {
            Error::invalid(format!(
                "invalid hello.location `{}`: {err}",
                qtrail_cadf::text::escape_control(&hello.location)
            ))
        })?;
        if hello.epoch == 0 {
            return Err(Error::invalid("invalid hello.epoch 0: epochs start at 1"));
        }
        // The collector's own events (the trail's use) go under this id; a publisher under it
        // could fill their seqs and have the collector's events counted as its duplicates.
        if crate::usage::is_reserved(&hello.publisher_id) {
            return Err(Error::invalid(format!(
                "invalid hello.publisher_id `{}`: reserved for the collector's own events",
                hello.publisher_id
            )));
        }
        if !self.locations.contains(&location) {
            let err = Error::LocationDenied { name: self.caller.clone(), location: location.to_string() };
            access::publish_refused(&self.caller, location.as_str(), &err.to_string());
            return Err(err);
        }
        let store = self.ingest.store.clone();
        let (lookup_location, publisher_id) = (location.clone(), hello.publisher_id.clone());
        let (collector, state) = blocking(move || {
            Ok((store.collector(&lookup_location)?, store.publisher(&lookup_location, &publisher_id)?))
        })
        .await?;
        if collector.is_none() {
            return Err(Error::FailedPrecondition(format!("no collector for location `{location}`")));
        }
        // Refused here for a clear answer; the writer checks again where racing streams meet.
        if let Some(bound) = state.as_ref().and_then(|state| publisher::bound_elsewhere(state, &self.credential)) {
            let err = Error::PublisherBound {
                publisher_id: hello.publisher_id,
                bound: bound.to_owned(),
                caller: self.credential.clone(),
            };
            access::publish_refused(&self.caller, location.as_str(), &err.to_string());
            return Err(err);
        }
        let stored_seq = match state {
            Some(state) if state.epoch > hello.epoch => {
                return Err(Error::FailedPrecondition(format!(
                    "hello.epoch {} is older than epoch {} already seen for publisher `{}`",
                    hello.epoch, state.epoch, hello.publisher_id
                )));
            }
            Some(state) if state.epoch == hello.epoch => state.stored_seq,
            Some(_) | None => 0,
        };
        self.send(ResponseKind::Welcome(proto::Welcome { stored_seq })).await?;
        Ok(Publisher { id: hello.publisher_id, location, epoch: hello.epoch })
    }

    /// Reads batches until the publisher closes the stream, then waits for the last Acks.
    async fn batches(&mut self, publisher: &Publisher) -> Result<()> {
        let mut expected_batch_seq = 1_u64;
        loop {
            tokio::select! {
                // Acks first, so that a publisher that waits for an Ack before sending more
                // never finds its next batch counted against a stale backlog.
                biased;
                Some(ack) = self.pending.next(), if !self.pending.is_empty() => {
                    self.send(ResponseKind::Ack(ack?)).await?;
                }
                // Then shutdown, so that a publisher that keeps sending cannot hold the collector up.
                () = self.ingest.lifecycle.stopping() => return Err(Error::ShuttingDown),
                next = self.inbound.next() => match next {
                    Some(Ok(request)) => {
                        let batch = match request.kind {
                            Some(RequestKind::Batch(batch)) => batch,
                            Some(RequestKind::Hello(_)) => return Err(Error::invalid("hello sent twice: a stream has one hello")),
                            None => return Err(Error::invalid("missing publish request kind: expected a batch")),
                        };
                        self.accept_batch(publisher, expected_batch_seq, batch).await?;
                        expected_batch_seq += 1;
                    }
                    Some(Err(status)) => {
                        if let Some(err) = read_failure(&status) {
                            return Err(err);
                        }
                        debug!(error = %status, publisher_id = %publisher.id, "publish stream broke");
                        return Ok(());
                    }
                    None => return Ok(()),
                },
            }
        }
    }

    /// Checks a batch, rejects its bad events and hands the rest to the writer.
    async fn accept_batch(&mut self, publisher: &Publisher, expected: u64, batch: proto::Batch) -> Result<()> {
        if batch.batch_seq != expected {
            return Err(Error::invalid(format!(
                "batch.batch_seq {} out of order, expected {expected}",
                batch.batch_seq
            )));
        }
        if batch.events.is_empty() {
            return Err(Error::invalid(format!("batch.events of batch {} is empty", batch.batch_seq)));
        }
        if batch.events.len() > MAX_BATCH_EVENTS {
            return Err(Error::ResourceExhausted(format!(
                "batch.events of batch {} holds {} events, over the limit of {MAX_BATCH_EVENTS}",
                batch.batch_seq,
                batch.events.len()
            )));
        }
        if self.pending.len() as u64 >= MAX_UNACKED_BATCHES {
            return Err(Error::ResourceExhausted(format!(
                "batch {} exceeds the limit of {MAX_UNACKED_BATCHES} unacknowledged batches",
                batch.batch_seq
            )));
        }
        let batch_seq = batch.batch_seq;
        let location = publisher.location.clone();
        // Decoding and validating is CPU work for a blocking thread, off the async workers.
        let (events, rejected) = tokio::task::spawn_blocking(move || validate_events(&location, batch.events))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        if !rejected.is_empty() {
            warn!(publisher_id = %publisher.id, batch_seq, rejected = rejected.len(), "events rejected");
        }
        // Even a batch of rejected events only goes to the writer: its seqs arrived, and the
        // publisher's state must record them as rejected, or the next stored seq would leave
        // them as a gap.
        let append = AppendBatch {
            location: publisher.location.clone(),
            publisher_id: publisher.id.clone(),
            epoch: publisher.epoch,
            credential: self.credential.clone(),
            events,
            rejected_seqs: rejected.iter().map(|event| event.seq).collect(),
        };
        let outcome = self.ingest.writer.submit(append, &self.sequence).await.ok_or(Error::ShuttingDown)?;
        let location = publisher.location.clone();
        let (publisher_id, token, caller) = (publisher.id.clone(), self.caller.clone(), self.credential.clone());
        self.pending.push_back(Box::pin(async move {
            let outcome = outcome.await.map_err(|_| Error::ShuttingDown)??;
            // Another stream bound the id between this one's Hello and this batch: the stream
            // fails without an Ack, so that the publisher keeps the events.
            if let Some(bound) = outcome.bound_to {
                let err = Error::PublisherBound { publisher_id, bound, caller };
                access::publish_refused(&token, location.as_str(), &err.to_string());
                return Err(err);
            }
            // Failed without an Ack too: the publisher keeps the events, which it may deliver
            // once it has resent the ones missing.
            if outcome.too_many_gaps {
                return Err(Error::ResourceExhausted(format!(
                    "batch {batch_seq} would leave publisher `{publisher_id}` more than {MAX_GAPS_PER_PUBLISHER} \
                     sequence gaps: resend the missing events first"
                )));
            }
            let mut all_rejected = rejected;
            all_rejected.extend(outcome.rejected);
            all_rejected.sort_by_key(|event| event.seq);
            meters::batch_acknowledged(location.as_str(), outcome.accepted, outcome.duplicates, all_rejected.len());
            Ok(proto::Ack {
                batch_seq,
                accepted: outcome.accepted,
                duplicates: outcome.duplicates,
                rejected: all_rejected,
                stored: outcome.positions,
            })
        }));
        Ok(())
    }

    /// Sends the Acks of every batch handed to the writer, as far as the publisher listens.
    async fn drain_acks(&mut self) {
        while let Some(ack) = self.pending.next().await {
            let Ok(ack) = ack else {
                return;
            };
            if self.send(ResponseKind::Ack(ack)).await.is_err() {
                return;
            }
        }
    }

    async fn send(&mut self, kind: ResponseKind) -> Result<()> {
        // Not sent means the publisher is gone or stuck past the grace period; either way the
        // stream is over.
        let response = Ok(proto::PublishResponse { kind: Some(kind) });
        if self.ingest.lifecycle.send(&self.responses, response).await { Ok(()) } else { Err(Error::ShuttingDown) }
    }
}

/// Returns the error that ends a stream whose next request could not be read because of what
/// the publisher sent, or `None` when the stream merely broke (the publisher went away), which
/// ends it quietly: there is no one left to answer.
fn read_failure(status: &Status) -> Option<Error> {
    match status.code() {
        // tonic's prost codec says INTERNAL for bytes that are not a `PublishRequest`, but they
        // are the publisher's error, answered as one.
        Code::Internal if status.message().starts_with(PROST_DECODE_ERROR) => {
            Some(Error::invalid(format!("publish request does not decode: {}", status.message())))
        }
        // tonic refuses a message over the size limit (or one that inflates past it) unread.
        Code::OutOfRange | Code::ResourceExhausted => {
            Some(Error::ResourceExhausted(format!("publish request over the limit of {MAX_MESSAGE_BYTES} bytes")))
        }
        // tonic's framing errors (a bad compressed flag) are the sender's too; its other
        // INTERNAL errors are a stream cut mid-message.
        Code::Internal if status.message().starts_with("protocol error") => Some(Error::invalid(format!(
            "invalid publish frame: {}",
            status.message().trim_start_matches("protocol error: ")
        ))),
        _ => None,
    }
}

/// Splits a batch into storable events and rejections: events that do not decode or validate,
/// and events whose log source names another location than the stream's. Each event is decoded
/// once, straight into the model.
fn validate_events(
    location: &Location,
    events: Vec<proto::PublishedEvent>,
) -> (Vec<NewEvent>, Vec<proto::RejectedEvent>) {
    let mut accepted = Vec::with_capacity(events.len());
    let mut rejected = Vec::new();
    for published in events {
        let seq = published.seq;
        let reject = |event_id: String, reason: String| proto::RejectedEvent { event_id, seq, reason };
        // An absent `bytes` field reads as empty, and so does an empty `AuditEvent` (all fields
        // default encode as nothing): neither has an id, so both are a missing event.
        let bytes = published.event;
        if bytes.is_empty() {
            rejected.push(reject(String::new(), "missing event".into()));
            continue;
        }
        if seq == 0 {
            rejected.push(reject(rejected_id(&bytes), "invalid seq 0: publisher sequence numbers start at 1".into()));
            continue;
        }
        let valid = match ValidEvent::decode(&bytes) {
            Ok(valid) => valid,
            Err(err) => {
                rejected.push(reject(rejected_id(&bytes), err.to_string()));
                continue;
            }
        };
        // Only the collector records the trail's use: a publisher's `qtrail.*` event would be a
        // forged record of an auditor's read.
        if valid.event().action.is_collector() {
            let reason = format!("action `{}` is the collector's own: no publisher may send it", valid.event().action);
            rejected.push(reject(rejected_id(&bytes), reason));
            continue;
        }
        let event_location = valid.event().location();
        if event_location != location.as_str() {
            let reason = format!("event location `{event_location}` differs from the stream's location `{location}`");
            rejected.push(reject(rejected_id(&bytes), reason));
            continue;
        }
        accepted.push(NewEvent::from_valid(seq, valid));
    }
    (accepted, rejected)
}

/// Returns the id a rejected event carries, escaped, or empty when even that does not decode:
/// only rejections pay for reading it again.
fn rejected_id(bytes: &[u8]) -> String {
    qtrail_cadf::proto::encoded_event_id(bytes)
        .map(|id| qtrail_cadf::text::escape_control(&id).into_owned())
        .unwrap_or_default()
}

/// Runs blocking store work on the blocking pool.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|_| Error::ShuttingDown)?
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;
    use crate::store::{AppendOutcome, FileStore};

    fn request(kind: RequestKind) -> std::result::Result<proto::PublishRequest, Status> {
        Ok(proto::PublishRequest { kind: Some(kind) })
    }

    /// With the writer holding every batch, the batch after the last one allowed unacknowledged
    /// fails the stream RESOURCE_EXHAUSTED, after the Acks of the batches before it.
    #[tokio::test]
    async fn too_many_unacknowledged_batches_exhaust_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn EventStore> = Arc::new(FileStore::open(dir.path(), 1024 * 1024).unwrap());
        let location: Location = "us-east".parse().unwrap();
        store.create_collector(&location, prost_types::Timestamp::default()).unwrap();
        let (writer, mut jobs) = WriterHandle::detached(64);
        let ingest = Ingest::new(store, writer, Lifecycle::new());

        // Capacity 1: a send completes only once the session has taken the message before it.
        let (inbound, inbound_queue) = mpsc::channel(1);
        let (responses, mut answers) = mpsc::channel(64);
        let caller = Caller {
            name: "test".into(),
            role: crate::tokens::Role::Publisher,
            locations: vec![location.clone()],
            scope: crate::scope::Scope::all(),
        };
        let session =
            tokio::spawn(ingest.publish(caller, "test".into(), ReceiverStream::new(inbound_queue), responses));
        let hello = proto::Hello { publisher_id: "p".into(), location: "us-east".into(), epoch: 1 };
        inbound.send(request(RequestKind::Hello(hello))).await.unwrap();
        let event = crate::store::conformance::event("us-east", qtrail_cadf::Action::JobRead, "IBMid-1", "", 200, 0);
        let limit = MAX_UNACKED_BATCHES;
        for batch_seq in 1..=limit + 1 {
            let encoded = proto::AuditEvent::from(&event).encode_to_vec();
            let published = proto::PublishedEvent { seq: batch_seq, event: encoded.into() };
            inbound
                .send(request(RequestKind::Batch(proto::Batch { batch_seq, events: vec![published] })))
                .await
                .unwrap();
        }
        // Sent once the over-limit batch has been taken, and so judged.
        inbound.send(request(RequestKind::Batch(proto::Batch { batch_seq: 99, events: Vec::new() }))).await.unwrap();

        let mut held = Vec::new();
        while (held.len() as u64) < limit {
            let Some(crate::writer::Message::Job(job)) = jobs.recv().await else {
                panic!("expected a job");
            };
            held.push(job);
        }
        for job in held {
            let outcome = AppendOutcome { accepted: job.batch.events.len() as u32, ..Default::default() };
            job.reply.send(Ok(outcome)).unwrap();
        }
        let welcome = answers.recv().await.unwrap().unwrap();
        assert!(matches!(welcome.kind, Some(ResponseKind::Welcome(proto::Welcome { stored_seq: 0 }))));
        for batch_seq in 1..=limit {
            match answers.recv().await.unwrap().unwrap().kind {
                Some(ResponseKind::Ack(ack)) => assert_eq!((ack.batch_seq, ack.accepted), (batch_seq, 1)),
                other => panic!("expected an ack, got {other:?}"),
            }
        }
        let err = answers.recv().await.unwrap().unwrap_err();
        assert!(matches!(err, Error::ResourceExhausted(_)), "{err:?}");
        assert_eq!(err.to_string(), "batch 9 exceeds the limit of 8 unacknowledged batches");
        session.await.unwrap();
        assert!(jobs.try_recv().is_err(), "the over-limit batch never reached the writer");
    }

    /// An event whose bytes do not decode is rejected alone (with its id when that much
    /// decodes); the events around it are kept, decoded into the model the store writes. An
    /// event field given twice is a `bytes` field's: the last one counts, not their merge, so
    /// an event sent in two parts is read as its second part alone and rejected.
    #[test]
    fn an_event_that_does_not_decode_is_rejected_alone() {
        let location: Location = "us-east".parse().unwrap();
        let event =
            |n| crate::store::conformance::event("us-east", qtrail_cadf::Action::JobRead, "IBMid-1", "", 200, n);
        let (good, broken) = (event(0), event(1));
        let encoded = proto::AuditEvent::from(&broken).encode_to_vec();
        let truncated = encoded[..encoded.len() - 3].to_vec();
        // A whole event, then field 10 (a Struct) whose one entry's key is the byte 0xff: not UTF-8.
        let mut without_data = proto::AuditEvent::from(&broken);
        without_data.request_data = None;
        let mut not_utf8 = without_data.encode_to_vec();
        not_utf8.extend_from_slice(&[0x52, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0xff]);
        let split = event(2);
        let mut first_part = proto::AuditEvent::from(&split);
        first_part.message.clear();
        let second_part = proto::AuditEvent { message: split.message.clone(), ..Default::default() };
        let published = |seq, event: Vec<u8>| proto::PublishedEvent { seq, event: event.into() };
        // Field 2 twice: the whole PublishedEvent with the first part, then the second part alone.
        let parted = [
            published(4, first_part.encode_to_vec()).encode_to_vec(),
            published(0, second_part.encode_to_vec()).encode_to_vec(),
        ]
        .concat();
        let events = vec![
            published(1, proto::AuditEvent::from(&good).encode_to_vec()),
            published(2, truncated),
            published(3, not_utf8),
            proto::PublishedEvent::decode(parted.as_slice()).unwrap(),
            published(5, proto::AuditEvent::from(&split).encode_to_vec()),
        ];
        let (accepted, rejected) = validate_events(&location, events);
        let stored = |seq, event: &qtrail_cadf::AuditEvent| {
            NewEvent::from_valid(seq, ValidEvent::try_from(proto::AuditEvent::from(event)).unwrap()).encoded
        };
        let accepted: Vec<_> = accepted.into_iter().map(|new| new.encoded).collect();
        assert_eq!(accepted, vec![stored(1, &good), stored(5, &split)]);
        let rejects: Vec<(u64, &str)> = rejected.iter().map(|r| (r.seq, r.event_id.as_str())).collect();
        let broken_id = broken.id.to_string();
        assert_eq!(rejects, vec![(2, ""), (3, broken_id.as_str()), (4, "")]);
        assert!(rejected[..2].iter().all(|r| r.reason.starts_with("event does not decode")), "{rejected:?}");
        assert_eq!(rejected[2].reason, "missing event id");
    }
}
