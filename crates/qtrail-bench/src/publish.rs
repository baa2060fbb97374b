//! The ingest load generator: N publisher streams, each on a connection of its own as separate
//! runtimes would be, sending prepared batches with up to the allowed number unacknowledged,
//! and counting what the server acknowledges. Events go as the publisher sends them: encoded
//! once, when made, and sent as bytes (`PublishedEvent.event`) on the generated client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use qtrail_proto::limits::{MAX_MESSAGE_BYTES, MAX_UNACKED_BATCHES};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::PublishRequest;
use qtrail_proto::qtrail::audit::v1::ingest_client::IngestClient;
use qtrail_proto::qtrail::audit::v1::publish_request::Kind;
use qtrail_proto::qtrail::audit::v1::publish_response::Kind as ResponseKind;
use qtrail_server::tls::ClientTls;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::events::LOCATION;
use crate::process::Server;

/// Batches of one stream, produced on demand, their events encoded already.
pub type Batches = Box<dyn Iterator<Item = PublishRequest> + Send>;

/// What a load run achieved.
#[derive(Debug, Clone, Copy)]
pub struct LoadResult {
    /// Events acknowledged as accepted.
    pub accepted: u64,
    /// From the first batch sent to the last Ack received.
    pub elapsed: Duration,
}

impl LoadResult {
    /// Returns accepted events per second.
    pub fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }
}

/// Returns a request carrying `token` as a bearer token.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Connects to `url` with a connection of its own.
///
/// # Errors
/// When the server cannot be reached.
pub async fn connect(url: &str) -> anyhow::Result<tonic::transport::Channel> {
    connect_over(url, &ClientTls::default()).await
}

/// Connects to `url` with a connection of its own, over TLS with `tls` for an `https://` URL.
///
/// # Errors
/// When the TLS files are unusable or the server cannot be reached.
pub async fn connect_over(url: &str, tls: &ClientTls) -> anyhow::Result<tonic::transport::Channel> {
    tls.endpoint(url)?.tcp_nodelay(true).connect().await.with_context(|| format!("cannot connect to {url}"))
}

/// Publishes every stream's batches to `server` as publisher `<run>-<stream>`, in parallel,
/// and returns what was acknowledged. Every event must be accepted.
///
/// # Errors
/// When a stream fails or an Ack does not accept its whole batch.
pub async fn publish(
    server: &Server,
    token: &str,
    run: &str,
    streams: Vec<Batches>,
    expected: u64,
) -> anyhow::Result<LoadResult> {
    let targets = streams
        .into_iter()
        .enumerate()
        .map(|(index, batches)| Target {
            url: server.url(),
            tls: server.client_tls(),
            location: LOCATION.to_owned(),
            publisher_id: format!("{run}-{index}"),
            batches,
        })
        .collect();
    publish_to(targets, token, expected).await
}

/// One publisher stream of [`publish_to`]: where it goes, for which location, as whom.
pub struct Target {
    /// The server's URL.
    pub url: String,
    /// How to reach it.
    pub tls: ClientTls,
    /// The location its Hello names (its events' location).
    pub location: String,
    /// Its publisher id.
    pub publisher_id: String,
    /// What it sends.
    pub batches: Batches,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("url", &self.url).field("location", &self.location).finish_non_exhaustive()
    }
}

/// Publishes every target's batches, in parallel, each on a connection of its own (so streams
/// may go to different servers, as publishers spread over replicas), and returns what was
/// acknowledged. Every event must be accepted.
///
/// # Errors
/// When a stream fails or an Ack does not accept its whole batch.
pub async fn publish_to(targets: Vec<Target>, token: &str, expected: u64) -> anyhow::Result<LoadResult> {
    let mut connected = Vec::new();
    for target in targets {
        let channel = connect_over(&target.url, &target.tls).await?;
        connected.push((target, channel));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (target, channel) in connected {
        let token = token.to_owned();
        tasks.push(tokio::spawn(async move {
            stream(channel, &token, target.publisher_id, &target.location, target.batches).await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.context("a publisher stream panicked")??;
    }
    let elapsed = started.elapsed();
    if accepted != expected {
        bail!("{accepted} of {expected} events accepted");
    }
    Ok(LoadResult { accepted, elapsed })
}

async fn stream(
    channel: tonic::transport::Channel,
    token: &str,
    publisher_id: String,
    location: &str,
    batches: Batches,
) -> anyhow::Result<u64> {
    let (sender, receiver) = mpsc::channel(MAX_UNACKED_BATCHES as usize + 1);
    let hello = proto::Hello { publisher_id, location: location.to_owned(), epoch: 1 };
    sender.send(PublishRequest { kind: Some(Kind::Hello(hello)) }).await?;
    let mut client = IngestClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut responses = client.publish(authed(ReceiverStream::new(receiver), token)).await?.into_inner();
    match responses.message().await?.and_then(|response| response.kind) {
        Some(ResponseKind::Welcome(_)) => {}
        other => bail!("expected a welcome, got {other:?}"),
    }
    let window = Arc::new(Semaphore::new(MAX_UNACKED_BATCHES as usize));
    let (sent_count, mut sent) = mpsc::unbounded_channel::<u64>();
    let feeder = {
        let window = window.clone();
        tokio::spawn(async move {
            for request in batches {
                let Ok(permit) = window.acquire().await else {
                    break;
                };
                permit.forget();
                let events = match &request.kind {
                    Some(Kind::Batch(batch)) => batch.events.len() as u64,
                    _ => 0,
                };
                if sender.send(request).await.is_err() || sent_count.send(events).is_err() {
                    break;
                }
            }
            // Dropping the sender ends the stream once every Ack is in.
        })
    };
    let mut accepted = 0;
    while let Some(events) = sent.recv().await {
        let response = responses.message().await?.context("stream ended before its last ack")?;
        let Some(ResponseKind::Ack(ack)) = response.kind else {
            bail!("expected an ack");
        };
        if u64::from(ack.accepted) != events {
            bail!(
                "batch {} accepted {} of {events} events (duplicates {}, rejected {:?})",
                ack.batch_seq,
                ack.accepted,
                ack.duplicates,
                ack.rejected.first()
            );
        }
        accepted += events;
        window.add_permits(1);
    }
    feeder.await?;
    Ok(accepted)
}
