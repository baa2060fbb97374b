//! The runtime's Prometheus metrics: what the publisher sent and the collector acknowledged or
//! refused, the outbox's depth, bytes and oldest age against its bound, and the calls refused
//! because the outbox was full (docs/operations.md, "Metrics and logs").
//!
//! The publisher and the service keep plain atomic counters; a small task copies them into the
//! process-wide `metrics` registry every second, so that the hot path never touches the
//! registry and the outbox is read once per second rather than once per call.

use std::sync::Arc;
use std::time::Duration;

use qtrail_publisher::receipts::ReceiptStats;
use qtrail_publisher::{Outbox, PublisherStats};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::service::RuntimeService;

/// How often the metrics are refreshed.
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Everything the metrics are read from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The publisher's counters.
    pub publisher: Arc<PublisherStats>,
    /// The receipt task's counters, when receipts are on.
    pub receipts: Option<Arc<ReceiptStats>>,
    /// The outbox, for depth and age.
    pub outbox: Outbox,
    /// The service, for refused calls.
    pub service: Arc<RuntimeService>,
    /// The data directory, for its disk's headroom.
    pub data_dir: std::path::PathBuf,
}

/// Copies the current values into the metrics registry once. Every series carries the label
/// `publisher` (the outbox's publisher id), which tells runtimes apart when several share a
/// process or a Prometheus.
pub fn refresh(sources: &Sources) {
    let publisher = sources.outbox.publisher_id().to_owned();
    let stats = sources.publisher.snapshot();
    metrics::counter!("qtrail_runtime_events_published_total", "publisher" => publisher.clone())
        .absolute(stats.published);
    metrics::counter!("qtrail_runtime_publish_batches_total", "publisher" => publisher.clone()).absolute(stats.batches);
    metrics::counter!("qtrail_runtime_events_acked_total", "publisher" => publisher.clone()).absolute(stats.acked);
    metrics::counter!("qtrail_runtime_events_duplicate_total", "publisher" => publisher.clone())
        .absolute(stats.duplicates);
    metrics::counter!("qtrail_runtime_events_rejected_total", "publisher" => publisher.clone())
        .absolute(stats.rejected);
    metrics::counter!("qtrail_runtime_publish_reconnects_total", "publisher" => publisher.clone())
        .absolute(stats.reconnects);
    metrics::gauge!("qtrail_runtime_publisher_connected", "publisher" => publisher.clone()).set(if stats.connected {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("qtrail_runtime_publisher_endpoint", "publisher" => publisher.clone()).set(stats.endpoint as f64);
    metrics::counter!("qtrail_runtime_calls_refused_total", "publisher" => publisher.clone(), "reason" => "outbox_full")
        .absolute(sources.service.refused_outbox_full());

    if let Some(receipts) = &sources.receipts {
        record_receipts(&publisher, receipts);
    }
    qtrail_server::disk::record("qtrail_runtime", &sources.data_dir, &[("publisher", publisher.clone())]);
    let limits = sources.outbox.limits();
    metrics::gauge!("qtrail_runtime_outbox_capacity_events", "publisher" => publisher.clone())
        .set(limits.max_events as f64);
    metrics::gauge!("qtrail_runtime_outbox_capacity_bytes", "publisher" => publisher.clone())
        .set(limits.max_bytes as f64);
    match sources.outbox.depth() {
        Ok(depth) => {
            metrics::gauge!("qtrail_runtime_outbox_events", "publisher" => publisher.clone()).set(depth.events as f64);
            metrics::gauge!("qtrail_runtime_outbox_bytes", "publisher" => publisher.clone()).set(depth.bytes as f64);
            let age = depth.oldest_age.unwrap_or_default().as_secs_f64();
            metrics::gauge!("qtrail_runtime_outbox_oldest_age_seconds", "publisher" => publisher.clone()).set(age);
        }
        Err(err) => warn!(error = %err, "cannot read the outbox depth for metrics"),
    }
}

/// Records the receipt counters: failures by kind, the alarm, verified, waiting and dropped.
fn record_receipts(publisher: &str, receipts: &ReceiptStats) {
    let stats = receipts.snapshot();
    for (kind, count) in
        [("signature", stats.signature_failures), ("proof", stats.proof_failures), ("fork", stats.forks)]
    {
        metrics::counter!("qtrail_receipt_failures_total", "publisher" => publisher.to_owned(), "kind" => kind)
            .absolute(count);
    }
    metrics::gauge!("qtrail_receipt_alarm", "publisher" => publisher.to_owned()).set(if receipts.alarmed() {
        1.0
    } else {
        0.0
    });
    metrics::counter!("qtrail_receipts_verified_total", "publisher" => publisher.to_owned()).absolute(stats.verified);
    metrics::counter!("qtrail_receipts_dropped_total", "publisher" => publisher.to_owned()).absolute(stats.dropped);
    metrics::gauge!("qtrail_receipts_pending", "publisher" => publisher.to_owned()).set(stats.pending as f64);
}

/// Refreshes the metrics every second until `stop` is cancelled.
pub async fn refresh_until(sources: Sources, stop: CancellationToken) {
    let mut interval = tokio::time::interval(REFRESH_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = interval.tick() => refresh(&sources),
        }
    }
    // A last refresh, so a scrape during shutdown sees the final counts.
    refresh(&sources);
}
