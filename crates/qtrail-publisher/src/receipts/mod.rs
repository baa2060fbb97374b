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
//! calls). Waiting events are kept in the store, written before the outbox forgets them, so
//! they outlive a restart; they are bounded: past [`ReceiptConfig::max_pending`] the oldest
//! are dropped without a receipt, counted.

mod store;
mod task;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use qtrail_proto::qtrail::audit::v1::{self as proto, AckedEvent};
use qtrail_tlog::Hash;
pub use store::{ReceiptStore, StoreError};
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};
use tracing::{error, warn};

use crate::publisher::Endpoints;
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
    max_pending: usize,
    stats: Arc<ReceiptStats>,
    store: Arc<ReceiptStore>,
    stop: CancellationToken,
}

impl Receipts {
    /// Opens the store and starts the task for `location`'s log at the current one of `endpoints`.
    pub(crate) fn spawn(
        config: &ReceiptConfig,
        location: String,
        endpoints: Arc<Endpoints>,
        authorization: Option<MetadataValue<Ascii>>,
    ) -> Result<Self, StoreError> {
        let store = Arc::new(ReceiptStore::open(&config.path, config.capacity)?);
        let stats = Arc::new(ReceiptStats::default());
        let stop = CancellationToken::new();
        let task = task::ReceiptTask {
            keys: Keys::new(config.keys.clone(), location.clone()),
            location,
            endpoints,
            authorization,
            store: store.clone(),
            stats: stats.clone(),
            interval: config.interval,
            stop: stop.clone(),
        };
        tokio::spawn(task.run());
        Ok(Self { max_pending: config.max_pending.max(1), stats, store, stop })
    }

    /// Records acknowledged events as waiting for their receipt, durably: the caller removes
    /// them from the outbox only after this returns. A store that cannot be written does not
    /// stop publishing: the events are counted as dropped and logged.
    pub(crate) async fn acked(&self, events: Vec<Acked>) {
        if events.is_empty() {
            return;
        }
        let (store, max, count) = (self.store.clone(), self.max_pending, events.len() as u64);
        match blocking(move || store.add_pending(&events, max)).await {
            Ok(dropped) => self.stats.dropped.fetch_add(dropped, Ordering::Relaxed),
            Err(err) => {
                warn!(error = %err, events = count, "cannot record events waiting for a receipt, dropping them");
                self.stats.dropped.fetch_add(count, Ordering::Relaxed)
            }
        };
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

/// Returns the RFC 6962 leaf hash of an outbox event: of its canonical bytes, as the
/// collector computes them. `None` for bytes that are not a valid event (the collector rejects
/// those).
pub(crate) fn event_leaf(encoded: &[u8]) -> Option<Hash> {
    let event = <proto::AuditEvent as prost::Message>::decode(encoded).ok()?;
    let event = qtrail_cadf::AuditEvent::try_from(event).ok()?;
    Some(qtrail_tlog::leaf_hash(&qtrail_cadf::canonical::canonical_bytes(&event)))
}

/// Pairs the Ack's positions with the leaf hashes the publisher computed, by publisher seq;
/// a position for a seq the publisher did not send is ignored.
pub(crate) fn acked_events(leaves: &[(u64, Hash)], stored: &[AckedEvent]) -> Vec<Acked> {
    stored
        .iter()
        .filter_map(|position| {
            let index = leaves.binary_search_by_key(&position.seq, |(seq, _)| *seq).ok()?;
            Some(Acked {
                event_id: position.event_id.clone(),
                location_seq: position.location_seq,
                leaf: leaves[index].1,
            })
        })
        .filter(|acked| acked.location_seq > 0)
        .collect()
}

/// Runs receipt store I/O off the async worker threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|err| StoreError::task(&err))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_positions_pair_with_the_publishers_own_leaves_by_seq() {
        let leaves = [(4, [4; 32]), (5, [5; 32]), (7, [7; 32])];
        let position = |seq, location_seq| AckedEvent { event_id: format!("e{seq}"), seq, location_seq };
        // Seq 6 was never sent with a leaf (it did not decode): no receipt for it; a position of
        // 0 is not a leaf.
        let stored = [position(5, 11), position(6, 12), position(7, 13), position(4, 0)];
        let acked = acked_events(&leaves, &stored);
        let got: Vec<_> = acked.iter().map(|a| (a.event_id.as_str(), a.location_seq, a.leaf[0])).collect();
        assert_eq!(got, [("e5", 11, 5), ("e7", 13, 7)]);
    }

    #[test]
    fn bytes_that_are_not_an_event_have_no_leaf() {
        assert_eq!(event_leaf(b"not an event"), None);
    }
}
