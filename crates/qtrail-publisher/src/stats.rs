//! Counters a publisher keeps for metrics: what it sent, what the collector acknowledged or
//! refused, and how its connection fares. Gauges of the outbox itself come from
//! [`crate::Outbox::depth`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Counters of one publisher, updated by its task and read by anyone.
#[derive(Debug, Default)]
pub struct PublisherStats {
    published: AtomicU64,
    batches: AtomicU64,
    acked: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    reconnects: AtomicU64,
    connected: AtomicBool,
    endpoint: AtomicUsize,
}

/// A copy of a publisher's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Events sent in batches, resends included.
    pub published: u64,
    /// Batches sent.
    pub batches: u64,
    /// Events the collector acknowledged as stored (duplicates included).
    pub acked: u64,
    /// Events the collector had stored already.
    pub duplicates: u64,
    /// Events the collector refused for good; they are dropped from the outbox.
    pub rejected: u64,
    /// Streams that ended in an error and were retried.
    pub reconnects: u64,
    /// Whether a stream is open and welcomed right now.
    pub connected: bool,
    /// Index of the collector endpoint in use: 0 for `collector_url`, then the failover URLs.
    pub endpoint: usize,
}

impl PublisherStats {
    /// Returns the current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            published: self.published.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            endpoint: self.endpoint.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn batch_sent(&self, events: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.published.fetch_add(events as u64, Ordering::Relaxed);
    }

    pub(crate) fn batch_acked(&self, stored: u64, duplicates: u64, rejected: u64) {
        self.acked.fetch_add(stored + duplicates, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        self.rejected.fetch_add(rejected, Ordering::Relaxed);
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    pub(crate) fn set_endpoint(&self, index: usize) {
        self.endpoint.store(index, Ordering::Relaxed);
    }

    pub(crate) fn reconnecting(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}
