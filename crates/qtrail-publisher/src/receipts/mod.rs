//! Receipts: proof, kept by the publisher, that the collector logged each of its events.
//!
//! Every Ack says where each event of the batch is stored. The publisher hands the receipt
//! task, per event, its id, its `location_seq` and the RFC 6962 leaf hash it computed itself
//! from its own copy of the event's canonical bytes. The task follows the collector's newest
//! signed checkpoint, checks that it extends the last one accepted (same size and root, or a
//! consistency proof that holds), asks for the inclusion proof of each waiting event the
//! checkpoint covers, checks it against that checkpoint, and keeps it as a C2SP tlog-proof in
//! a bounded [`ReceiptStore`]. Any file it keeps proves offline, with the collector's public
//! key, that the event was logged at its index under that checkpoint. Once it has a head it
//! checks the newest checkpoint every round (one `GetConsistencyProof` a second by default),
//! waiting events or not, so that a rolled-back or forked log is seen on its own.
//!
//! A failed signature, a failed proof or a fork (two checkpoints of one size with different
//! roots, a shrunk log, or a pair that is not consistent) is an alarm: a counter by kind, an
//! error log line, and [`ReceiptStats::alarmed`] for a caller's policy (the runtime can refuse
//! calls). Waiting events are bounded: past [`ReceiptConfig::max_pending`] the oldest are
//! dropped without a receipt, counted.

mod store;
mod task;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

pub use store::{ReceiptStore, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;
use tracing::error;
pub use verify::{Acked, Head, Keys, ReceiptFailure};

/// How receipts are fetched and kept.
#[derive(Debug, Clone)]
pub struct ReceiptConfig {
    /// Raw Ed25519 public keys of the collector's checkpoint key (several during a rotation).
    pub keys: Vec<[u8; 32]>,
    /// The receipt store's file.
    pub path: PathBuf,
    /// Most receipts kept; the oldest are dropped past it.
    pub capacity: u64,
    /// Most acknowledged events waiting for their receipt.
    pub max_pending: usize,
    /// Pause between rounds (and the first retry delay).
    pub interval: Duration,
    /// An auditor token for the collector's EventQuery (proofs are a read); a secret.
    pub token: Option<String>,
}

impl ReceiptConfig {
    /// Returns the defaults for `keys` and `path`: 100 000 receipts, 100 000 waiting, a round
    /// every second.
    pub fn new(keys: Vec<[u8; 32]>, path: PathBuf) -> Self {
        Self { keys, path, capacity: 100_000, max_pending: 100_000, interval: Duration::from_secs(1), token: None }
    }
}

/// Counters of the receipt task, and whether an alarm was raised.
#[derive(Debug, Default)]
pub struct ReceiptStats {
    verified: AtomicU64,
    signature: AtomicU64,
    proof: AtomicU64,
    fork: AtomicU64,
    dropped: AtomicU64,
    pending: AtomicU64,
    alarmed: AtomicBool,
}

/// A copy of the receipt counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiptSnapshot {
    /// Receipts verified and kept.
    pub verified: u64,
    /// Checkpoint notes not signed by a configured key.
    pub signature_failures: u64,
    /// Inclusion proofs that did not prove the event.
    pub proof_failures: u64,
    /// Forks seen.
    pub forks: u64,
    /// Events dropped from the waiting list without a receipt.
    pub dropped: u64,
    /// Events waiting for a receipt.
    pub pending: u64,
}

impl ReceiptStats {
    /// Returns the counters.
    pub fn snapshot(&self) -> ReceiptSnapshot {
        ReceiptSnapshot {
            verified: self.verified.load(Ordering::Relaxed),
            signature_failures: self.signature.load(Ordering::Relaxed),
            proof_failures: self.proof.load(Ordering::Relaxed),
            forks: self.fork.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
        }
    }

    /// Returns true once any receipt failed; it stays raised until the process restarts.
    pub fn alarmed(&self) -> bool {
        self.alarmed.load(Ordering::Acquire)
    }

    fn verified(&self) {
        self.verified.fetch_add(1, Ordering::Relaxed);
    }

    fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn set_pending(&self, pending: usize) {
        self.pending.store(pending as u64, Ordering::Relaxed);
    }

    /// Counts `failure`, raises the alarm and logs it.
    fn alarm(&self, failure: &ReceiptFailure, location: &str, acked: Option<&Acked>) {
        let counter = match failure {
            ReceiptFailure::Signature(_) => &self.signature,
            ReceiptFailure::Proof(_) => &self.proof,
            ReceiptFailure::Fork(_) => &self.fork,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.alarmed.store(true, Ordering::Release);
        error!(
            kind = failure.kind(),
            location,
            event_id = acked.map(|acked| acked.event_id.as_str()),
            location_seq = acked.map(|acked| acked.location_seq),
            detail = %failure,
            "receipt verification failed: the collector's log cannot be trusted"
        );
    }
}

/// A running receipt task.
#[derive(Debug)]
pub struct Receipts {
    sender: mpsc::Sender<Acked>,
    stats: Arc<ReceiptStats>,
    store: Arc<ReceiptStore>,
    stop: CancellationToken,
}

impl Receipts {
    /// Opens the store and starts the task for `location`'s log at `endpoint`.
    pub(crate) fn spawn(
        config: &ReceiptConfig,
        location: String,
        endpoint: Endpoint,
        authorization: Option<MetadataValue<Ascii>>,
    ) -> Result<Self, StoreError> {
        let store = Arc::new(ReceiptStore::open(&config.path, config.capacity)?);
        let stats = Arc::new(ReceiptStats::default());
        let stop = CancellationToken::new();
        // A small channel: the task drains it at once into its own bounded list.
        let (sender, incoming) = mpsc::channel(1024);
        let task = task::ReceiptTask {
            keys: Keys::new(config.keys.clone(), location.clone()),
            location,
            endpoint,
            authorization,
            store: store.clone(),
            stats: stats.clone(),
            incoming,
            interval: config.interval,
            max_pending: config.max_pending.max(1),
            stop: stop.clone(),
        };
        tokio::spawn(task.run());
        Ok(Self { sender, stats, store, stop })
    }

    /// Hands acknowledged events to the task, waiting while its channel is full.
    pub(crate) async fn acked(&self, events: Vec<Acked>) {
        for acked in events {
            if self.sender.send(acked).await.is_err() {
                return;
            }
        }
    }

    /// Returns the counters.
    pub fn stats(&self) -> Arc<ReceiptStats> {
        self.stats.clone()
    }

    /// Returns the store, to read receipts.
    pub fn store(&self) -> Arc<ReceiptStore> {
        self.store.clone()
    }

    /// Stops the task.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Runs receipt store I/O off the async worker threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|err| StoreError::task(&err))?
}
