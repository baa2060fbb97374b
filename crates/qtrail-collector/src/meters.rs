//! The collector's Prometheus metrics, recorded through the `metrics` facade into the
//! process-wide recorder that `/metrics` renders (see `qtrail_server::http`).
//!
//! Every name starts with `qtrail_collector_`. Labels stay few and bounded: `location` has one
//! value per collector, `result` one of three.
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `qtrail_collector_ingest_batches_total{location}` | counter | batches acknowledged |
//! | `qtrail_collector_ingest_events_total{location, result}` | counter | events by `accepted`, `duplicate`, `rejected` |
//! | `qtrail_collector_publish_streams` | gauge | open Publish streams |
//! | `qtrail_collector_write_group_batches` | histogram | batches per group commit |
//! | `qtrail_collector_write_group_events` | histogram | events per group commit |
//! | `qtrail_collector_commit_seconds` | histogram | duration of one durable group commit |
//! | `qtrail_collector_commit_failures_total` | counter | group commits that failed (nothing stored) |
//! | `qtrail_collector_events_stored{location}` | gauge | events in the location's chain |
//! | `qtrail_collector_store_bytes` | gauge | size of the store files |
//! | `qtrail_collector_index_lag_events` | gauge | stored events the query indexes do not cover yet |
//! | `qtrail_collector_tail_subscribers` | gauge | open tails (gRPC `TailEvents` and console live views) |
//! | `qtrail_collector_tail_buffer_bytes` | gauge | committed records held for tails (at most `Config::tail_buffer_bytes`) |
//! | `qtrail_collector_console_sessions` | gauge | signed-in console sessions |
//! | `qtrail_collector_checkpoints_total{location}` | counter | signed checkpoints stored |
//! | `qtrail_collector_checkpoint_failures_total` | counter | checkpoints that could not be signed or stored |
//! | `qtrail_collector_checkpoint_time_seconds{location}` | gauge | Unix time of the newest checkpoint: alert when it stops moving |
//! | `qtrail_collector_witness_requests_total{result}` | counter | add-checkpoint requests this collector answered as a witness: `cosigned`, `conflict`, `fork`, `bad_proof`, `forbidden`, `unknown_log`, `malformed`, `internal` |
//! | `qtrail_collector_cosignatures_total{witness, result}` | counter | checkpoints submitted to a witness: `ok` (cosignature stored with it) or `failed` |
//! | `qtrail_collector_disk_free_bytes`, `qtrail_collector_disk_size_bytes` | gauge | the data directory's file system (alert at 80 % used) |
//! | `qtrail_store_pool_connections{state}` | gauge | the shared store's pooled connections, `idle` or `busy` ([`store_pool`]) |
//!
//! Replicas over a shared store add `qtrail_replica_*` (see `crate::replica`).

use std::path::PathBuf;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use tokio_util::sync::CancellationToken;

/// How often the disk headroom is read.
const DISK_INTERVAL: Duration = Duration::from_secs(5);

/// Records the headroom of the file system holding `data_dir` at once (so that the first scrape
/// has it), then returns what records it every few seconds until `stop`.
pub(crate) fn watch_disk(data_dir: PathBuf, stop: CancellationToken) -> impl Future<Output = ()> {
    let record = move || qtrail_server::disk::record("qtrail_collector", &data_dir, &[]);
    record();
    async move {
        let start = tokio::time::Instant::now() + DISK_INTERVAL;
        let mut ticks = tokio::time::interval_at(start, DISK_INTERVAL);
        loop {
            tokio::select! {
                _ = ticks.tick() => record(),
                () = stop.cancelled() => return,
            }
        }
    }
}

/// Counts an acknowledged batch of `location` and what became of its events.
pub(crate) fn batch_acknowledged(location: &str, accepted: u32, duplicates: u32, rejected: usize) {
    let location = location.to_owned();
    counter!("qtrail_collector_ingest_batches_total", "location" => location.clone()).increment(1);
    let events = |result: &'static str, count: u64| {
        counter!("qtrail_collector_ingest_events_total", "location" => location.clone(), "result" => result)
            .increment(count);
    };
    events("accepted", u64::from(accepted));
    events("duplicate", u64::from(duplicates));
    events("rejected", rejected as u64);
}

/// Records a durable group commit of `batches` batches and `events` events that took `took`.
pub(crate) fn group_committed(batches: usize, events: usize, took: Duration) {
    histogram!("qtrail_collector_write_group_batches").record(batches as f64);
    histogram!("qtrail_collector_write_group_events").record(events as f64);
    histogram!("qtrail_collector_commit_seconds").record(took.as_secs_f64());
}

/// Records the bytes of committed records held for tails.
pub(crate) fn tail_buffer_bytes(bytes: usize) {
    gauge!("qtrail_collector_tail_buffer_bytes").set(bytes as f64);
}

/// Counts a signed checkpoint of `location` stored at Unix time `seconds`.
pub(crate) fn checkpoint_signed(location: &str, seconds: i64) {
    counter!("qtrail_collector_checkpoints_total", "location" => location.to_owned()).increment(1);
    gauge!("qtrail_collector_checkpoint_time_seconds", "location" => location.to_owned()).set(seconds as f64);
}

/// Counts an add-checkpoint request answered as a witness, by `result`.
pub(crate) fn witness_answered(result: &'static str) {
    counter!("qtrail_collector_witness_requests_total", "result" => result).increment(1);
}

/// Counts a checkpoint submitted to `witness`: cosigned or not.
pub(crate) fn cosignature(witness: &str, ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    counter!("qtrail_collector_cosignatures_total", "witness" => witness.to_owned(), "result" => result).increment(1);
}

/// Counts a checkpoint that could not be signed or stored.
pub(crate) fn checkpoint_failed() {
    counter!("qtrail_collector_checkpoint_failures_total").increment(1);
}

/// Counts a group commit that failed.
pub(crate) fn group_failed() {
    counter!("qtrail_collector_commit_failures_total").increment(1);
}

/// Sets the number of events in the chain of `location`.
pub(crate) fn events_stored(location: &str, count: u64) {
    gauge!("qtrail_collector_events_stored", "location" => location.to_owned()).set(count as f64);
}

/// Sets the size of the store on disk.
pub(crate) fn store_bytes(bytes: u64) {
    gauge!("qtrail_collector_store_bytes").set(bytes as f64);
}

/// Sets how many stored events the query indexes do not cover yet.
pub(crate) fn index_lag(events: u64) {
    gauge!("qtrail_collector_index_lag_events").set(events as f64);
}

/// Sets the shared store's pooled connections: `idle` ones waiting, `busy` ones lent out, as
/// the PostgreSQL store's pool reports them whenever it lends or takes one back.
pub(crate) fn store_pool(idle: usize, busy: usize) {
    gauge!("qtrail_store_pool_connections", "state" => "idle").set(idle as f64);
    gauge!("qtrail_store_pool_connections", "state" => "busy").set(busy as f64);
}

/// Which gauge an [`Open`] guard holds up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Openable {
    /// A Publish stream.
    PublishStream,
    /// A tail.
    Tail,
    /// A console session.
    ConsoleSession,
}

impl Openable {
    fn name(self) -> &'static str {
        match self {
            Openable::PublishStream => "qtrail_collector_publish_streams",
            Openable::Tail => "qtrail_collector_tail_subscribers",
            Openable::ConsoleSession => "qtrail_collector_console_sessions",
        }
    }
}

/// Counts one open thing for as long as it lives, so that every way out (an error, a panic, a
/// dropped future) brings the gauge back down.
#[derive(Debug)]
pub(crate) struct Open(Openable);

impl Open {
    /// Increments the gauge of `what` until the guard drops.
    pub(crate) fn new(what: Openable) -> Self {
        gauge!(what.name()).increment(1.0);
        Self(what)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        gauge!(self.0.name()).decrement(1.0);
    }
}
