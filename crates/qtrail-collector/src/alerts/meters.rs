//! The alerts' Prometheus metrics, beside the collector's own ([`crate::meters`]).
//!
//! The `rule` label is `location/name`: at most 100 rules per location keep it bounded.
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `qtrail_collector_alert_firings_total{rule, kind}` | counter | notices recorded, `fired` or `resolved` |
//! | `qtrail_collector_alert_deliveries_total{rule, outcome}` | counter | webhook attempts by `delivered`, `retry`, `failed` |
//! | `qtrail_collector_alert_delivery_seconds{rule}` | histogram | from firing recorded to webhook answered 2xx |
//! | `qtrail_collector_alert_queue_depth{rule}` | gauge | deliveries a channel has pending |
//! | `qtrail_collector_alert_overflows_total{rule}` | counter | firings not delivered because the channel's queue was full |
//! | `qtrail_collector_alert_evaluation_errors_total{location}` | counter | evaluations of a location's rules that failed (retried on the next tick) |

use metrics::{counter, gauge, histogram};

/// Counts a recorded notice.
pub(crate) fn firing(rule: &str, kind: &'static str) {
    counter!("qtrail_collector_alert_firings_total", "rule" => rule.to_owned(), "kind" => kind).increment(1);
}

/// Counts a delivery attempt by outcome.
pub(crate) fn attempt(rule: &str, outcome: &'static str) {
    counter!("qtrail_collector_alert_deliveries_total", "rule" => rule.to_owned(), "outcome" => outcome).increment(1);
}

/// Records the time from firing to delivery.
pub(crate) fn delivered_after(rule: &str, seconds: f64) {
    histogram!("qtrail_collector_alert_delivery_seconds", "rule" => rule.to_owned()).record(seconds);
}

/// Sets a channel's pending deliveries.
pub(crate) fn queue_depth(rule: &str, depth: u64) {
    gauge!("qtrail_collector_alert_queue_depth", "rule" => rule.to_owned()).set(depth as f64);
}

/// Counts a firing dropped from delivery by a full queue.
pub(crate) fn overflow(rule: &str) {
    counter!("qtrail_collector_alert_overflows_total", "rule" => rule.to_owned()).increment(1);
}

/// Counts a failed evaluation of a location's rules.
pub(crate) fn evaluation_error(location: &str) {
    counter!("qtrail_collector_alert_evaluation_errors_total", "location" => location.to_owned()).increment(1);
}
