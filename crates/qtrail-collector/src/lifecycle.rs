//! How long-running streams (Publish sessions, tails, exports) learn that the collector stops.
//!
//! Stopping has two stages. `stopping` asks streams to wind down: Publish sessions stop reading
//! and acknowledge what they have, tails and exports end. `aborting` follows when the grace
//! period is over: whatever still waits on a client that does not read gives up, so that one
//! stuck client cannot keep the process from exiting. Nothing durable depends on the second
//! stage: a batch is acknowledged only after its commit, and an Ack that never leaves just means
//! the publisher resends a batch the collector will count as duplicates.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The two stop signals, cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lifecycle {
    stopping: CancellationToken,
    aborting: CancellationToken,
}

impl Lifecycle {
    /// Returns a lifecycle in which nothing is stopping yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Asks streams to wind down.
    pub(crate) fn stop(&self) {
        self.stopping.cancel();
    }

    /// Makes everything still waiting on a client give up; implies [`Lifecycle::stop`].
    pub(crate) fn abort(&self) {
        self.stopping.cancel();
        self.aborting.cancel();
    }

    /// Completes once stopping has begun.
    pub(crate) async fn stopping(&self) {
        self.stopping.cancelled().await;
    }

    /// Returns true once stopping has begun.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Sends `item` unless the receiver is gone or the grace period is over; returns whether it
    /// was sent.
    pub(crate) async fn send<T>(&self, sender: &mpsc::Sender<T>, item: T) -> bool {
        tokio::select! {
            sent = sender.send(item) => sent.is_ok(),
            () = self.aborting.cancelled() => false,
        }
    }
}
