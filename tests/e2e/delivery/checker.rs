//! Jepsen's total-queue check over a workload's history and the collector's store: every call
//! the runtime answered must have exactly one stored event, found by its correlation id.
//!
//! - `lost`: answered calls without a stored event;
//! - `duplicated`: calls with more than one stored event;
//! - `recovered`: unanswered calls whose event arrived anyway (allowed: the runtime committed
//!   the call and died before answering);
//! - `unexpected`: stored events of no call, or of a call refused as not audited.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use qtrail_proto::qtrail::audit::v1 as audit;

use crate::delivery::workload::{Call, Outcome};
use crate::servers::Collector;

/// How long the events of answered calls may take to reach the store once faults stop.
const SETTLE: Duration = Duration::from_secs(60);

/// The counts of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Calls made.
    pub sent: usize,
    /// Calls answered OK or with an audited refusal.
    pub acknowledged: usize,
    /// Calls refused UNAVAILABLE because their event could not be made durable.
    pub unaudited: usize,
    /// Calls without an answer.
    pub unknown: usize,
    /// Stored events that belong to calls of the history.
    pub stored: usize,
    /// Answered calls without a stored event.
    pub lost: usize,
    /// Calls with more than one stored event.
    pub duplicated: usize,
    /// Unanswered calls whose event is stored.
    pub recovered: usize,
    /// Stored events of no call, or of a call that promised none.
    pub unexpected: usize,
}

impl Tally {
    /// Returns the counts of `calls` against the `stored` events.
    pub fn of(calls: &[Call], stored: &[audit::StoredEvent]) -> Self {
        let mut per_call: HashMap<&str, usize> = HashMap::new();
        let mut strangers = 0;
        let known: HashMap<&str, Outcome> =
            calls.iter().map(|call| (call.correlation_id.as_str(), call.outcome)).collect();
        for record in stored {
            let correlation_id = record.event.as_ref().map_or("", |event| event.correlation_id.as_str());
            match known.get_key_value(correlation_id) {
                Some((key, _)) => *per_call.entry(key).or_default() += 1,
                None => strangers += 1,
            }
        }
        let mut tally = Tally { sent: calls.len(), unexpected: strangers, ..Tally::default() };
        for call in calls {
            let copies = per_call.get(call.correlation_id.as_str()).copied().unwrap_or(0);
            tally.stored += copies;
            if copies > 1 {
                tally.duplicated += 1;
            }
            match call.outcome {
                Outcome::Ok | Outcome::Refused(_) => {
                    tally.acknowledged += 1;
                    if copies == 0 {
                        tally.lost += 1;
                    }
                }
                Outcome::Unaudited => {
                    tally.unaudited += 1;
                    tally.unexpected += copies;
                }
                Outcome::Unknown => {
                    tally.unknown += 1;
                    if copies > 0 {
                        tally.recovered += 1;
                    }
                }
            }
        }
        tally
    }

    /// Prints the counts on one line, which `cargo test -- --nocapture` shows.
    pub fn print(&self, scenario: &str) {
        println!("delivery {scenario}: {self}");
    }

    /// Asserts that nothing answered was lost and nothing was stored twice or out of thin air.
    pub fn assert_exact(&self, scenario: &str) {
        assert_eq!((self.lost, self.duplicated, self.unexpected), (0, 0, 0), "{scenario}: {self}");
        assert_eq!(self.stored, self.acknowledged + self.recovered, "{scenario}: {self}");
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent={} acknowledged={} stored={} lost={} duplicated={} (unknown={} recovered={} unaudited={} unexpected={})",
            self.sent,
            self.acknowledged,
            self.stored,
            self.lost,
            self.duplicated,
            self.unknown,
            self.recovered,
            self.unaudited,
            self.unexpected
        )
    }
}

/// Waits until every answered call of `calls` has its event stored in `location` (or the
/// settle time is over), then returns the stored events and the counts. Returning rather than
/// panicking at the deadline lets the caller report how many were lost.
pub async fn settle(collector: &Collector, location: &str, calls: &[Call]) -> (Vec<audit::StoredEvent>, Tally) {
    let settled = qtrail_server::poll::until(SETTLE, || async move {
        let stored = collector.events(location).await;
        let tally = Tally::of(calls, &stored);
        (tally.lost == 0).then_some((stored, tally))
    })
    .await;
    match settled {
        Some(settled) => settled,
        None => {
            let stored = collector.events(location).await;
            let tally = Tally::of(calls, &stored);
            (stored, tally)
        }
    }
}

/// Asserts that each publisher's events were stored in the order of its sequence numbers, with
/// no gap, and that the collector's accounting of each publisher agrees with the store.
pub fn assert_publisher_order(stored: &[audit::StoredEvent], publishers: &[audit::PublisherState]) {
    let mut last: HashMap<(&str, u64), u64> = HashMap::new();
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for record in stored {
        let publisher = record.publisher.as_ref().expect("stored events name their publisher");
        let previous = last.insert((publisher.id.as_str(), publisher.epoch), publisher.seq);
        if let Some(previous) = previous {
            assert!(
                publisher.seq > previous,
                "publisher {} epoch {} stored seq {} after seq {previous} (location_seq {})",
                publisher.id,
                publisher.epoch,
                publisher.seq,
                record.location_seq
            );
        }
        *counts.entry(publisher.id.as_str()).or_default() += 1;
    }
    for state in publishers {
        assert!(state.gaps.is_empty(), "publisher {} has gaps {:?}", state.publisher_id, state.gaps);
        let count = counts.get(state.publisher_id.as_str()).copied().unwrap_or(0);
        assert_eq!(state.event_count, count, "events of publisher {}", state.publisher_id);
        if state.epoch == 1 {
            // One epoch from seq 1 without gaps: the highest seq is the number of events.
            assert_eq!(state.stored_seq, state.event_count, "highest seq of publisher {}", state.publisher_id);
        }
    }
}
