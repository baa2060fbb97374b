//! The replicas' Prometheus metrics (see `crate::meters` for the recorder): each replica's
//! role, how far its tail follower is behind the shared store, and how often its
//! notifications' connection was lost.

use metrics::{counter, gauge};

/// Sets whether `replica` signs checkpoints (1) or not (0).
pub(super) fn leader(replica: &str, leading: bool) {
    gauge!("qtrail_replica_leader", "replica" => replica.to_owned()).set(if leading { 1.0 } else { 0.0 });
}

/// Sets how many of `location`'s stored events the tail follower has not published yet.
pub(super) fn tail_lag(location: &str, events: u64) {
    gauge!("qtrail_replica_tail_lag_events", "location" => location.to_owned()).set(events as f64);
}

/// Counts a reconnect of the connection that listens for other replicas' appends.
pub(super) fn notify_reconnected() {
    counter!("qtrail_replica_notify_reconnects_total").increment(1);
}
