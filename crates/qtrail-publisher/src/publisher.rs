//! The publisher task: streams the outbox to the collector of the service's location.
//!
//! One `Publish` stream at a time. It opens with `Hello{publisher_id, location, epoch}`; the
//! collector's `Welcome{stored_seq}` says how far it already has this publisher's sequence, and
//! everything up to there is dropped from the outbox. Then the task sends the outbox in seq order
//! as `Batch`es of at most `max_batch_events` events and `max_batch_bytes` bytes, with at most
//! [`MAX_UNACKED_BATCHES`] unacknowledged. A
//! part-filled batch goes at once when no batch is in flight; while one is, it waits for that
//! Ack or for `linger`, whichever comes first, gathering events meanwhile. An `Ack`
//! deletes exactly its batch's events from the outbox; events the collector rejected are
//! deleted too (they are refused for good), with a warning each.
//!
//! Any failure (collector unreachable, no collector for the location, refused credentials, a
//! protocol violation, the stream closing, no Welcome or no Ack within the ack timeout) ends the
//! stream. The task waits with exponential
//! backoff and full jitter and opens a new one, which resends every event still in the outbox,
//! in seq order; the collector removes duplicates by event id. Events meanwhile wait in the
//! outbox, whose bound then decides when the service stops taking calls.
//!
//! With several collector URLs (replicas of the location's collector over one store, see
//! [`Endpoints`]), a failure that says the current one is gone moves the task to the next one at
//! once; it backs off only after every replica has failed in a row.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use qtrail_proto::limits::{MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES, MAX_UNACKED_BATCHES};
use qtrail_proto::qtrail::audit::v1::ingest_client::IngestClient;
use qtrail_proto::qtrail::audit::v1::publish_request::Kind;
use qtrail_proto::qtrail::audit::v1::{
    Ack, Batch, Hello, PublishRequest, PublishResponse, PublishedEvent, publish_response,
};
use qtrail_tlog::Hash;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::metadata::MetadataValue;
use tonic::transport::{ClientTlsConfig, Endpoint};
use tracing::{debug, error, info, warn};

mod config;
mod endpoints;

pub use config::PublisherConfig;
pub(crate) use endpoints::Endpoints;

use crate::backoff::Backoff;
use crate::error::{OutboxError, PublisherError};
use crate::outbox::{Outbox, QueuedBatch};
use crate::receipts::{Receipts, acked_events, event_leaf};
use crate::stats::PublisherStats;

/// How often the task looks at the outbox when nobody wakes it: a safety net for writers that
/// forget [`Outbox::wake_publisher`], and the pace at which a drain notices an empty outbox.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A running publisher task.
#[derive(Debug)]
pub struct Publisher {
    task: JoinHandle<()>,
    drain: CancellationToken,
    stop: CancellationToken,
    stats: Arc<PublisherStats>,
    receipts: Option<Arc<Receipts>>,
}

impl Publisher {
    /// Starts publishing `outbox` as `config` says. Must be called within a tokio runtime.
    ///
    /// # Errors
    /// [`PublisherError`] when the URL, the token or the limits are unusable.
    pub fn spawn(outbox: Outbox, config: PublisherConfig) -> Result<Self, PublisherError> {
        let first = (config.collector_url.clone(), endpoint(&config.collector_url, &config)?);
        let rest = config.failover_urls.iter().map(|url| Ok((url.clone(), endpoint(url, &config)?)));
        let endpoints = Arc::new(Endpoints::new(first, rest.collect::<Result<_, PublisherError>>()?));
        let authorization = config.token.as_deref().map(bearer).transpose()?;
        if config.max_batch_events == 0 || config.max_batch_events > MAX_BATCH_EVENTS {
            return Err(PublisherError::InvalidLimits(format!(
                "max batch events must be 1 to {MAX_BATCH_EVENTS}, got {}",
                config.max_batch_events
            )));
        }
        // Leave room for the batch framing around the events.
        let byte_ceiling = MAX_MESSAGE_BYTES / 2;
        if config.max_batch_bytes == 0 || config.max_batch_bytes > byte_ceiling {
            return Err(PublisherError::InvalidLimits(format!(
                "max batch bytes must be 1 to {byte_ceiling}, got {}",
                config.max_batch_bytes
            )));
        }
        let receipts = match &config.receipts {
            Some(receipts) => {
                let authorization = receipts.token.as_deref().map(bearer).transpose()?;
                let spawned = Receipts::spawn(receipts, config.location.to_string(), endpoints.clone(), authorization)
                    .map_err(|err| PublisherError::Receipts(err.to_string()))?;
                Some(Arc::new(spawned))
            }
            None => None,
        };
        let stats = Arc::new(PublisherStats::default());
        let drain = CancellationToken::new();
        let stop = CancellationToken::new();
        let task = Task {
            outbox,
            round_start: endpoints.index(),
            endpoints,
            authorization,
            backoff: Backoff::new(config.backoff_initial, config.backoff_max),
            config,
            stats: stats.clone(),
            drain: drain.clone(),
            stop: stop.clone(),
            receipts: receipts.clone(),
        };
        Ok(Self { task: tokio::spawn(task.run()), drain, stop, stats, receipts })
    }

    /// Returns the publisher's counters.
    pub fn stats(&self) -> Arc<PublisherStats> {
        self.stats.clone()
    }

    /// Returns the receipt task, when receipts are on.
    pub fn receipts(&self) -> Option<Arc<Receipts>> {
        self.receipts.clone()
    }

    /// Publishes what is in the outbox for at most `timeout`, then stops. Returns true when the
    /// outbox was empty at the end; what is left waits for the next start.
    pub async fn shutdown(self, timeout: Duration) -> bool {
        self.drain.cancel();
        let mut task = self.task;
        let drained = match tokio::time::timeout(timeout, &mut task).await {
            Ok(_) => true,
            Err(_) => {
                self.stop.cancel();
                // The task ends at its next await point once stopped.
                let _ = task.await;
                false
            }
        };
        self.stats.set_connected(false);
        if let Some(receipts) = &self.receipts {
            receipts.stop();
        }
        drained
    }
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("cannot connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    #[error("collector refused the stream: {}", .0.message())]
    Refused(tonic::Status),
    #[error("collector closed the stream")]
    Closed,
    #[error("no ack for batch {0} in time")]
    AckTimeout(u64),
    #[error("no welcome in time")]
    WelcomeTimeout,
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("outbox task failed: {0}")]
    Task(String),
    #[error("a new epoch started")]
    NewEpoch,
}

/// How a stream ended without an error.
enum StreamEnd {
    /// The outbox is empty and a drain was requested.
    Drained,
    /// The task was told to stop.
    Stopped,
}

/// A batch sent and not yet acknowledged.
struct InFlight {
    batch_seq: u64,
    seqs: Vec<u64>,
    /// With receipts on, each event's leaf hash by seq, computed from the outbox's copy.
    leaves: Vec<(u64, Hash)>,
    sent_at: Instant,
}

struct Task {
    outbox: Outbox,
    endpoints: Arc<Endpoints>,
    /// The endpoint the current round of attempts started at: once every endpoint has failed
    /// since, the task backs off before the next round.
    round_start: usize,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    backoff: Backoff,
    config: PublisherConfig,
    stats: Arc<PublisherStats>,
    drain: CancellationToken,
    stop: CancellationToken,
    receipts: Option<Arc<Receipts>>,
}

impl Task {
    async fn run(mut self) {
        let collector = self.endpoints.url(self.endpoints.index());
        info!(publisher_id = %self.outbox.publisher_id(), collector, "publisher started");
        loop {
            let started = Instant::now();
            let mut progressed = false;
            let result = self.stream(&mut progressed).await;
            self.stats.set_connected(false);
            let failed = match result {
                Ok(StreamEnd::Drained) => {
                    info!("outbox drained, publisher stopped");
                    return;
                }
                Ok(StreamEnd::Stopped) => {
                    info!("publisher stopped");
                    return;
                }
                Err(StreamError::NewEpoch) => {
                    self.backoff.reset();
                    continue;
                }
                Err(err) => {
                    self.report(&err);
                    err
                }
            };
            // A stream that made progress or stayed up a while proves the collector healthy, so
            // the next failure starts again from the smallest delay.
            if progressed || started.elapsed() >= self.config.backoff_max {
                self.backoff.reset();
                self.round_start = self.endpoints.index();
            }
            self.stats.reconnecting();
            if self.fail_over(&failed) {
                continue;
            }
            let delay = self.backoff.next_delay();
            debug!(retry_in_ms = delay.as_millis() as u64, "publisher retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => {
                    info!("publisher stopped");
                    return;
                }
            }
        }
    }

    /// Moves to the next endpoint when `err` says the current one is gone (unreachable, or the
    /// stream broke), and returns true when that endpoint is still to be tried in this round,
    /// at once: its replica has not failed yet. The outbox still holds every unacknowledged
    /// event, so the next stream resends them there, and the collector's dedup by event id
    /// keeps them from being stored twice.
    fn fail_over(&mut self, err: &StreamError) -> bool {
        if self.endpoints.len() < 2 || !endpoint_gone(err) {
            return false;
        }
        let from = self.endpoints.index();
        let to = self.endpoints.advance();
        self.stats.set_endpoint(to);
        warn!(from = self.endpoints.url(from), to = self.endpoints.url(to), error = %err, "collector endpoint changed");
        if to == self.round_start {
            return false;
        }
        true
    }

    fn report(&self, err: &StreamError) {
        let queued = self.outbox.depth().map(|depth| depth.events).unwrap_or_default();
        let retry_ceiling_ms = self.backoff.ceiling().as_millis() as u64;
        match err {
            StreamError::Refused(status) if status.code() == tonic::Code::FailedPrecondition => warn!(
                location = %self.config.location,
                queued,
                retry_ceiling_ms,
                reason = %status.message(),
                "no collector for this location, events wait in the outbox"
            ),
            StreamError::Refused(status)
                if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) =>
            {
                error!(
                    code = ?status.code(),
                    queued,
                    retry_ceiling_ms,
                    "collector refused the publisher's credentials, events wait in the outbox"
                )
            }
            StreamError::Outbox(err) => error!(error = %err, queued, retry_ceiling_ms, "outbox failed"),
            StreamError::Protocol(_) => error!(error = %err, queued, retry_ceiling_ms, "collector broke the protocol"),
            _ => warn!(error = %err, queued, retry_ceiling_ms, "publish stream failed, events wait in the outbox"),
        }
    }

    /// Runs one stream until it fails, drains or is stopped. Sets `progressed` when the
    /// collector acknowledged something.
    async fn stream(&mut self, progressed: &mut bool) -> Result<StreamEnd, StreamError> {
        match self.open().await? {
            Opening::Open(mut session) => self.pump(&mut session, progressed).await,
            Opening::Ended(end) => Ok(end),
        }
    }

    /// Opens a stream: connects, says Hello, and on the collector's Welcome drops from the
    /// outbox what the collector already stored.
    async fn open(&mut self) -> Result<Opening, StreamError> {
        if self.stop.is_cancelled() {
            return Ok(Opening::Ended(StreamEnd::Stopped));
        }
        let outbox = self.outbox.clone();
        let (epoch, last_seq) = blocking(move || outbox.position()).await?;
        if self.drain.is_cancelled() && self.outbox.depth()?.events == 0 {
            return Ok(Opening::Ended(StreamEnd::Drained));
        }

        let channel = tokio::select! {
            connected = self.endpoints.current().connect() => connected.map_err(StreamError::Connect)?,
            _ = self.stop.cancelled() => return Ok(Opening::Ended(StreamEnd::Stopped)),
        };
        // Hello, then up to the window of batches, fit in the buffer without waiting.
        let (requests, outgoing) = mpsc::channel::<PublishRequest>(MAX_UNACKED_BATCHES as usize + 1);
        let hello = Hello {
            publisher_id: self.outbox.publisher_id().to_owned(),
            location: self.config.location.to_string(),
            epoch,
        };
        requests.send(PublishRequest { kind: Some(Kind::Hello(hello)) }).await.map_err(|_| StreamError::Closed)?;
        let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        let mut client = IngestClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        // A network that goes silent while the stream opens leaves both waits below hanging
        // (for as long as TCP keeps retrying, many minutes), so the collector gets as long to
        // welcome the stream as it gets to acknowledge a batch.
        let welcome_deadline = Instant::now() + self.config.ack_timeout;
        let mut responses = tokio::select! {
            response = tokio::time::timeout_at(welcome_deadline, client.publish(request)) => {
                response.map_err(|_| StreamError::WelcomeTimeout)?.map_err(StreamError::Refused)?.into_inner()
            }
            _ = self.stop.cancelled() => return Ok(Opening::Ended(StreamEnd::Stopped)),
        };
        let welcome = tokio::select! {
            message = tokio::time::timeout_at(welcome_deadline, responses.message()) => {
                message.map_err(|_| StreamError::WelcomeTimeout)?.map_err(StreamError::Refused)?
            }
            _ = self.stop.cancelled() => return Ok(Opening::Ended(StreamEnd::Stopped)),
        };
        let stored_seq = match welcome.and_then(|response| response.kind) {
            Some(publish_response::Kind::Welcome(welcome)) => welcome.stored_seq,
            Some(publish_response::Kind::Ack(_)) => {
                return Err(StreamError::Protocol("ack before welcome".to_owned()));
            }
            None => return Err(StreamError::Closed),
        };
        if stored_seq > last_seq {
            let outbox = self.outbox.clone();
            let new_epoch = blocking(move || outbox.start_new_epoch()).await?;
            warn!(
                epoch,
                new_epoch,
                stored_seq,
                last_seq,
                "collector holds more of this epoch than the outbox assigned, starting a new epoch"
            );
            return Err(StreamError::NewEpoch);
        }
        let outbox = self.outbox.clone();
        let dropped = blocking(move || outbox.remove_through(stored_seq)).await?;
        info!(epoch, stored_seq, dropped, "publish stream open");
        self.stats.set_connected(true);
        Ok(Opening::Open(Box::new(Session {
            requests,
            responses,
            in_flight: VecDeque::new(),
            next_batch_seq: 1,
            sent_through: 0,
        })))
    }

    /// Pumps an open stream: sends the outbox in batches within the window and reads the Acks,
    /// until the stream fails, drains or is stopped. Sets `progressed` on every Ack.
    async fn pump(&mut self, session: &mut Session, progressed: &mut bool) -> Result<StreamEnd, StreamError> {
        let mut linger_until: Option<Instant> = None;
        let mut draining = self.drain.is_cancelled();
        loop {
            let window_open = session.in_flight.len() < MAX_UNACKED_BATCHES as usize;
            if window_open {
                let outbox = self.outbox.clone();
                let (after, max_events, max_bytes) =
                    (session.sent_through, self.config.max_batch_events, self.config.max_batch_bytes);
                let batch = blocking(move || outbox.read_after(after, max_events, max_bytes)).await?;
                if batch.events.is_empty() {
                    linger_until = None;
                    if draining && session.in_flight.is_empty() {
                        return Ok(StreamEnd::Drained);
                    }
                } else {
                    let lingered = linger_until.is_some_and(|deadline| Instant::now() >= deadline);
                    // Nothing in flight means the collector is idle: waiting would only add
                    // latency. Under load a batch is always in flight, and a part-filled batch
                    // waits for its Ack (or the linger) while more events join it.
                    let idle = session.in_flight.is_empty();
                    if batch.more || lingered || draining || idle {
                        self.send(session, batch).await?;
                        linger_until = None;
                        continue;
                    }
                    linger_until.get_or_insert_with(|| Instant::now() + self.config.linger);
                }
            }
            let linger_deadline = linger_until.unwrap_or_else(|| Instant::now() + POLL_INTERVAL);
            let oldest =
                session.in_flight.front().map(|batch| (batch.batch_seq, batch.sent_at + self.config.ack_timeout));
            let ack_deadline = oldest.map_or_else(|| Instant::now() + POLL_INTERVAL, |(_, deadline)| deadline);
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(StreamEnd::Stopped),
                message = session.responses.message() => {
                    let ack = match message.map_err(StreamError::Refused)?.and_then(|response| response.kind) {
                        Some(publish_response::Kind::Ack(ack)) => ack,
                        Some(publish_response::Kind::Welcome(_)) => {
                            return Err(StreamError::Protocol("second welcome".to_owned()));
                        }
                        None => return Err(StreamError::Closed),
                    };
                    self.acknowledge(session, ack).await?;
                    *progressed = true;
                }
                _ = self.drain.cancelled(), if !draining => draining = true,
                _ = self.outbox.committed(), if window_open && linger_until.is_none() => {}
                _ = tokio::time::sleep_until(linger_deadline), if window_open => {}
                _ = tokio::time::sleep_until(ack_deadline), if oldest.is_some() => {
                    if let Some((batch_seq, deadline)) = oldest
                        && Instant::now() >= deadline
                    {
                        return Err(StreamError::AckTimeout(batch_seq));
                    }
                }
            }
        }
    }

    async fn send(&self, session: &mut Session, batch: QueuedBatch) -> Result<(), StreamError> {
        let batch_seq = session.next_batch_seq;
        let seqs: Vec<u64> = batch.events.iter().map(|queued| queued.seq).collect();
        let count = seqs.len();
        let leaves = if self.receipts.is_some() {
            batch.events.iter().filter_map(|queued| Some((queued.seq, event_leaf(&queued.encoded)?))).collect()
        } else {
            Vec::new()
        };
        // The outbox's bytes as they are, moved rather than copied: no event is decoded to be sent.
        let events = batch
            .events
            .into_iter()
            .map(|queued| PublishedEvent { seq: queued.seq, event: queued.encoded.into() })
            .collect();
        let request = PublishRequest { kind: Some(Kind::Batch(Batch { batch_seq, events })) };
        session.requests.send(request).await.map_err(|_| StreamError::Closed)?;
        session.next_batch_seq += 1;
        session.sent_through = seqs.last().copied().unwrap_or(session.sent_through);
        session.in_flight.push_back(InFlight { batch_seq, seqs, leaves, sent_at: Instant::now() });
        self.stats.batch_sent(count);
        debug!(batch_seq, events = count, "batch sent");
        Ok(())
    }

    async fn acknowledge(&self, session: &mut Session, ack: Ack) -> Result<(), StreamError> {
        let Some(position) = session.in_flight.iter().position(|batch| batch.batch_seq == ack.batch_seq) else {
            return Err(StreamError::Protocol(format!("ack for unknown batch {}", ack.batch_seq)));
        };
        let accounted = u64::from(ack.accepted) + u64::from(ack.duplicates) + ack.rejected.len() as u64;
        let sent = session.in_flight[position].seqs.len() as u64;
        if accounted != sent {
            // The collector has not said what became of every event: keep them all and resend.
            return Err(StreamError::Protocol(format!(
                "ack of batch {} accounts for {accounted} of {sent} events",
                ack.batch_seq
            )));
        }
        let batch = session.in_flight.remove(position).ok_or(StreamError::Closed)?;
        for rejected in &ack.rejected {
            warn!(
                event_id = %qtrail_cadf::text::escape_control(&rejected.event_id),
                seq = rejected.seq,
                reason = %qtrail_cadf::text::escape_control(&rejected.reason),
                "collector rejected an event for good, dropping it"
            );
        }
        // Counted before the removal, so that whoever sees the outbox empty also sees the count:
        // the collector has acknowledged the batch either way, and if the removal fails the
        // stream ends and the resent events are acknowledged (as duplicates) again.
        self.stats.batch_acked(u64::from(ack.accepted), u64::from(ack.duplicates), ack.rejected.len() as u64);
        // Recorded before the removal commits: a crash in between leaves at worst a waiting row
        // for an event that is resent and acknowledged again at the same position.
        if let Some(receipts) = &self.receipts {
            receipts.acked(acked_events(&batch.leaves, &ack.stored)).await;
        }
        let outbox = self.outbox.clone();
        blocking(move || outbox.remove(&batch.seqs)).await?;
        debug!(batch_seq = ack.batch_seq, accepted = ack.accepted, duplicates = ack.duplicates, "batch acknowledged");
        Ok(())
    }
}

/// What opening a stream gave.
enum Opening {
    /// The collector welcomed the stream. Boxed: a session is large, and opening moves it once.
    Open(Box<Session>),
    /// The task stopped, or drained, before a stream was needed.
    Ended(StreamEnd),
}

/// State of one open stream.
struct Session {
    requests: mpsc::Sender<PublishRequest>,
    responses: Streaming<PublishResponse>,
    in_flight: VecDeque<InFlight>,
    next_batch_seq: u64,
    /// Highest seq sent on this stream.
    sent_through: u64,
}

/// Returns whether `err` says the current collector endpoint is gone rather than that the
/// stream was refused for a reason every replica shares (credentials, no collector for the
/// location) or that the outbox failed.
fn endpoint_gone(err: &StreamError) -> bool {
    match err {
        StreamError::Connect(_) | StreamError::Closed | StreamError::AckTimeout(_) | StreamError::WelcomeTimeout => {
            true
        }
        StreamError::Refused(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ),
        StreamError::Protocol(_) | StreamError::Outbox(_) | StreamError::Task(_) | StreamError::NewEpoch => false,
    }
}

/// Returns the endpoint of the collector at `url`, with the connect timeout and TLS of `config`.
fn endpoint(url: &str, config: &PublisherConfig) -> Result<Endpoint, PublisherError> {
    let invalid_url = |reason: String| PublisherError::InvalidUrl { url: url.to_owned(), reason };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|err| invalid_url(err.to_string()))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true);
    match (endpoint.uri().scheme_str() == Some("https"), &config.tls) {
        (true, tls) => {
            let tls = tls.clone().unwrap_or_else(|| ClientTlsConfig::new().with_webpki_roots());
            endpoint = endpoint.tls_config(tls).map_err(|err| invalid_url(format!("tls: {}", root_cause(&err))))?;
        }
        (false, Some(_)) => return Err(invalid_url("tls settings need an https:// url".to_owned())),
        (false, None) => {}
    }
    Ok(endpoint)
}

/// The `authorization` header value for `token`.
fn bearer(token: &str) -> Result<MetadataValue<tonic::metadata::Ascii>, PublisherError> {
    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| PublisherError::InvalidToken)
}

/// Runs outbox I/O (which may wait for an fsync) off the async worker threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, StreamError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(StreamError::Outbox),
        Err(join) => Err(StreamError::Task(join.to_string())),
    }
}

/// Returns the innermost cause of an error: tonic wraps the useful part of a TLS failure (a
/// bad key, an unknown certificate version) in a generic "transport error".
fn root_cause<'a>(err: &'a (dyn std::error::Error + 'static)) -> &'a (dyn std::error::Error + 'static) {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause
}
