//! What a publisher is configured with: the collector, its credentials and limits, TLS, and
//! receipts. Its `Debug` redacts the token.

use std::fmt;
use std::time::Duration;

use qtrail_cadf::Location;
use qtrail_proto::limits::MAX_BATCH_EVENTS;
use tonic::transport::ClientTlsConfig;

use crate::receipts::ReceiptConfig;

/// Where and how a publisher sends events.
#[derive(Clone)]
pub struct PublisherConfig {
    /// URL of the collector service, e.g. `http://127.0.0.1:7000`.
    pub collector_url: String,
    /// Further collectors of the same location (replicas over one store), tried in this order
    /// after `collector_url` when the current one is unreachable or its stream breaks.
    pub failover_urls: Vec<String>,
    /// Token sent as `authorization: Bearer <token>`; a secret, never logged.
    pub token: Option<String>,
    /// Location whose collector stores the events; every event's log source names it.
    pub location: Location,
    /// Most events per batch (at most [`MAX_BATCH_EVENTS`]).
    pub max_batch_events: usize,
    /// Most bytes of encoded events per batch.
    pub max_batch_bytes: usize,
    /// How long a part-filled batch waits for more events while another batch is in flight (with
    /// nothing in flight it goes at once).
    pub linger: Duration,
    /// First retry delay ceiling.
    pub backoff_initial: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// How long connecting to the collector may take.
    pub connect_timeout: Duration,
    /// How long the collector may take to answer: to welcome a new stream, and to acknowledge
    /// the oldest unacknowledged batch. Past it the stream is given up, since a collector or a
    /// network that stopped answering would otherwise hold the publisher forever.
    pub ack_timeout: Duration,
    /// TLS for an `https://` collector URL: the CA to trust and the certificate to present.
    /// `None` checks the collector against the Mozilla roots built into the binary. Must be
    /// `None` with an `http://` URL.
    pub tls: Option<ClientTlsConfig>,
    /// Receipts for the events the collector stores; `None` (the default) fetches none.
    pub receipts: Option<ReceiptConfig>,
}

impl PublisherConfig {
    /// Returns the defaults for a collector URL and location: full batches of
    /// [`MAX_BATCH_EVENTS`] or 4 MiB, 15 ms linger, backoff from 100 ms to 10 s, 30 s for an ack.
    pub fn new(collector_url: impl Into<String>, location: Location) -> Self {
        Self {
            collector_url: collector_url.into(),
            failover_urls: Vec::new(),
            token: None,
            location,
            max_batch_events: MAX_BATCH_EVENTS,
            max_batch_bytes: 4 * 1024 * 1024,
            linger: Duration::from_millis(15),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(30),
            tls: None,
            receipts: None,
        }
    }
}

impl fmt::Debug for PublisherConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublisherConfig")
            .field("collector_url", &self.collector_url)
            .field("failover_urls", &self.failover_urls)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("location", &self.location)
            .field("max_batch_events", &self.max_batch_events)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("linger", &self.linger)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("ack_timeout", &self.ack_timeout)
            .field("tls", &self.tls.is_some())
            .field("receipts", &self.receipts.as_ref().map(|receipts| &receipts.path))
            .finish()
    }
}
