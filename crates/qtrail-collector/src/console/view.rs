//! What the console API answers, as JSON: the wire messages of the service code turned into
//! plain fields the page can show (names for enums, RFC 3339 for times, hex for hashes).

use prost_types::Timestamp;
use qtrail_cadf::EventTime;
use qtrail_proto::qtrail::audit::v1 as proto;
use serde::Serialize;

use super::alerts::FiringView;
use crate::error::Result;
use crate::query::{self, Timeline};

/// One event in the list.
#[derive(Debug, Serialize)]
pub(crate) struct EventRow {
    /// Position in the location's chain.
    pub(crate) location_seq: u64,
    /// The event id.
    pub(crate) id: String,
    /// When the action happened, RFC 3339 with milliseconds.
    pub(crate) time: String,
    /// `quantum-computing.<object>.<verb>`.
    pub(crate) action: String,
    /// `success`, `failure` or `pending`.
    pub(crate) outcome: &'static str,
    /// `normal`, `warning` or `critical`.
    pub(crate) severity: &'static str,
    /// Initiator IAM id.
    pub(crate) initiator_id: String,
    /// Initiator name.
    pub(crate) initiator_name: String,
    /// Target CRN.
    pub(crate) target_id: String,
    /// Target name (program name, job id), possibly empty.
    pub(crate) target_name: String,
    /// HTTP-equivalent status.
    pub(crate) reason_code: u32,
    /// Why it failed, for failures.
    pub(crate) reason_for_failure: String,
    /// The one-line summary.
    pub(crate) message: String,
    /// Correlation id, possibly empty.
    pub(crate) correlation_id: String,
}

/// Returns the list row of a stored event.
pub(crate) fn row(record: &proto::StoredEvent) -> EventRow {
    let event = record.event.clone().unwrap_or_default();
    let initiator = event.initiator.unwrap_or_default();
    let target = event.target.unwrap_or_default();
    let reason = event.reason.unwrap_or_default();
    EventRow {
        location_seq: record.location_seq,
        id: event.id,
        time: event.event_time.as_ref().map(event_time).unwrap_or_default(),
        action: event.action,
        outcome: qtrail_cadf::proto::outcome_from_wire(event.outcome).map_or("unknown", |outcome| outcome.as_str()),
        severity: qtrail_cadf::proto::severity_from_wire(event.severity)
            .map_or("unknown", |severity| severity.as_str()),
        initiator_id: initiator.id,
        initiator_name: initiator.name,
        target_id: target.id,
        target_name: target.name,
        reason_code: reason.reason_code,
        reason_for_failure: reason.reason_for_failure,
        message: event.message,
        correlation_id: event.correlation_id,
    }
}

/// A page of the list.
#[derive(Debug, Serialize)]
pub(crate) struct Page {
    /// The events, in the order asked for.
    pub(crate) events: Vec<EventRow>,
    /// Token of the next page; empty on the last.
    pub(crate) next_page_token: String,
    /// The chain's length just before the page was read: a live view that starts after it
    /// misses nothing the page lacks.
    pub(crate) head_seq: u64,
}

/// Who published an event, and where in its own sequence.
#[derive(Debug, Serialize)]
pub(crate) struct PublisherView {
    /// Publisher id.
    pub(crate) id: String,
    /// Publisher epoch.
    pub(crate) epoch: u64,
    /// Position in the publisher's sequence.
    pub(crate) seq: u64,
    /// Name of the token that delivered it.
    pub(crate) credential: String,
}

/// Everything about one event.
#[derive(Debug, Serialize)]
pub(crate) struct EventDetail {
    /// The list row.
    #[serde(flatten)]
    pub(crate) row: EventRow,
    /// The location whose chain holds it.
    pub(crate) location: String,
    /// Its chain hash, hex.
    pub(crate) chain_hash: String,
    /// The chain hash of the record before it, hex.
    pub(crate) prev_chain_hash: String,
    /// Who published it.
    pub(crate) publisher: PublisherView,
    /// When the collector stored it, RFC 3339.
    pub(crate) receive_time: String,
    /// The Activity Tracker form, indented.
    pub(crate) at_json: String,
    /// The CADF form, indented.
    pub(crate) cadf_json: String,
}

/// Returns the detail of a stored event.
///
/// # Errors
/// A corrupt-store error when the event no longer validates (the JSON forms need a valid event).
pub(crate) fn detail(record: &proto::StoredEvent) -> Result<EventDetail> {
    let event = query::decode(record)?;
    let publisher = record.publisher.clone().unwrap_or_default();
    Ok(EventDetail {
        row: row(record),
        location: record.location.clone(),
        chain_hash: hex::encode(&record.chain_hash),
        prev_chain_hash: hex::encode(&record.prev_chain_hash),
        publisher: PublisherView {
            id: publisher.id,
            epoch: publisher.epoch,
            seq: publisher.seq,
            credential: publisher.credential,
        },
        receive_time: record.receive_time.as_ref().map(timestamp).unwrap_or_default(),
        at_json: qtrail_cadf::at_json::to_string_pretty(&event),
        cadf_json: qtrail_cadf::cadf_json::to_string_pretty(&event),
    })
}

/// The result of a chain check.
#[derive(Debug, Serialize)]
pub(crate) struct Verdict {
    /// True when every checked record fits.
    pub(crate) ok: bool,
    /// Records checked.
    pub(crate) checked: u64,
    /// First position checked.
    pub(crate) from_seq: u64,
    /// Last position checked.
    pub(crate) to_seq: u64,
    /// Recomputed head hash, hex; empty unless ok with records.
    pub(crate) head_chain_hash: String,
    /// The first fault, when not ok.
    pub(crate) fault: Option<FaultView>,
    /// Signed checkpoints in the range compared with the chain.
    pub(crate) checkpoints_checked: u64,
}

/// The first place where a chain does not hold.
#[derive(Debug, Serialize)]
pub(crate) struct FaultView {
    /// The position at fault.
    pub(crate) location_seq: u64,
    /// `modified`, `missing`, `inserted`, `reordered` or `checkpoint damaged`.
    pub(crate) kind: &'static str,
    /// Details.
    pub(crate) detail: String,
    /// The damaged checkpoint entry, for `checkpoint damaged`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) checkpoint_number: Option<u64>,
}

/// Returns the view of a chain check.
pub(crate) fn verdict(response: proto::VerifyChainResponse) -> Verdict {
    Verdict {
        ok: response.ok,
        checked: response.checked,
        from_seq: response.from_seq,
        to_seq: response.to_seq,
        head_chain_hash: hex::encode(&response.head_chain_hash),
        fault: response.fault.map(|fault| FaultView {
            location_seq: fault.location_seq,
            kind: fault_kind(fault.kind),
            detail: fault.detail,
            checkpoint_number: Some(fault.checkpoint_number).filter(|&number| number > 0),
        }),
        checkpoints_checked: response.checkpoints_checked,
    }
}

fn fault_kind(kind: i32) -> &'static str {
    match proto::ChainFaultKind::try_from(kind) {
        Ok(proto::ChainFaultKind::Modified) => "modified",
        Ok(proto::ChainFaultKind::Missing) => "missing",
        Ok(proto::ChainFaultKind::Inserted) => "inserted",
        Ok(proto::ChainFaultKind::Reordered) => "reordered",
        Ok(proto::ChainFaultKind::CheckpointDamaged) => "checkpoint damaged",
        Ok(proto::ChainFaultKind::Unspecified) | Err(_) => "unknown",
    }
}

/// A collector, for the list of locations.
#[derive(Debug, Serialize)]
pub(crate) struct CollectorView {
    /// Its location.
    pub(crate) location: String,
    /// Events in its chain.
    pub(crate) event_count: u64,
    /// Its head chain hash, hex.
    pub(crate) head_chain_hash: String,
    /// When it was created, RFC 3339.
    pub(crate) create_time: String,
}

/// Returns the view of a collector.
pub(crate) fn collector(collector: proto::Collector) -> CollectorView {
    CollectorView {
        location: collector.location,
        event_count: collector.event_count,
        head_chain_hash: hex::encode(&collector.head_chain_hash),
        create_time: collector.create_time.as_ref().map(timestamp).unwrap_or_default(),
    }
}

/// The signed-in auditor.
#[derive(Debug, Serialize)]
pub(crate) struct Who {
    /// The token's name.
    pub(crate) name: String,
    /// The token's role.
    pub(crate) role: &'static str,
    /// Seconds before the session ends.
    pub(crate) expires_in_secs: u64,
}

/// A signed checkpoint of a chain head.
#[derive(Debug, Serialize)]
pub(crate) struct CheckpointView {
    /// Its number within the location, from 1.
    pub(crate) number: u64,
    /// When it was signed, RFC 3339.
    pub(crate) time: String,
    /// The chain position it covers.
    pub(crate) location_seq: u64,
    /// The chain hash there, hex.
    pub(crate) head_chain_hash: String,
    /// The signing key's id.
    pub(crate) key_id: String,
    /// The Ed25519 signature, hex.
    pub(crate) signature: String,
    /// Leaves of the Merkle tree its note signs (0 and no root before the tree).
    pub(crate) tree_size: u64,
    /// The tree's root, hex; empty for a checkpoint signed before the tree.
    pub(crate) root: String,
    /// The C2SP signed note of the tree head; empty before the tree.
    pub(crate) note: String,
}

/// Returns the view of a checkpoint.
pub(crate) fn checkpoint(checkpoint: proto::Checkpoint) -> CheckpointView {
    CheckpointView {
        number: checkpoint.number,
        time: checkpoint.time.as_ref().map(timestamp).unwrap_or_default(),
        location_seq: checkpoint.location_seq,
        head_chain_hash: hex::encode(&checkpoint.head_chain_hash),
        key_id: checkpoint.key_id,
        signature: hex::encode(&checkpoint.signature),
        tree_size: checkpoint.tree_size,
        root: hex::encode(&checkpoint.root),
        note: checkpoint.note,
    }
}

/// Counts of events over a time window, for the timeline.
#[derive(Debug, Serialize)]
pub(crate) struct TimelineView {
    /// Start of the window, RFC 3339 (inclusive).
    pub(crate) start: String,
    /// End of the window, RFC 3339 (exclusive).
    pub(crate) end: String,
    /// Width of every bucket in seconds.
    pub(crate) bucket_seconds: i64,
    /// The buckets, oldest first.
    pub(crate) buckets: Vec<BucketView>,
    /// Events counted.
    pub(crate) counted: u64,
    /// False when counting stopped at its cap, so that older buckets may miss events.
    pub(crate) complete: bool,
    /// The alert firings of the location recorded in the window, newest first.
    pub(crate) firings: Vec<FiringView>,
}

/// One bucket of the timeline.
#[derive(Debug, Serialize)]
pub(crate) struct BucketView {
    /// Where the bucket starts, RFC 3339; it ends where the next starts.
    pub(crate) start: String,
    /// Events that succeeded.
    pub(crate) success: u64,
    /// Events that failed or were refused.
    pub(crate) failure: u64,
    /// Events accepted and not finished.
    pub(crate) pending: u64,
}

/// Returns the view of a timeline, with the firings to mark on it.
pub(crate) fn timeline(timeline: Timeline, firings: Vec<FiringView>) -> TimelineView {
    let width = timeline.bucket_millis;
    let buckets = (0_i64..)
        .zip(timeline.buckets)
        .map(|(index, bucket)| BucketView {
            start: millis(timeline.origin_millis.saturating_add(index.saturating_mul(width))),
            success: bucket.success,
            failure: bucket.failure,
            pending: bucket.pending,
        })
        .collect();
    TimelineView {
        start: millis(timeline.start_millis),
        end: millis(timeline.end_millis),
        bucket_seconds: width / 1000,
        buckets,
        counted: timeline.counted,
        complete: timeline.complete,
        firings,
    }
}

/// Returns milliseconds since the epoch in RFC 3339.
fn millis(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

/// Returns an event time (whole milliseconds) in RFC 3339.
fn event_time(time: &Timestamp) -> String {
    EventTime::from_unix_parts(time.seconds, time.nanos).map(EventTime::to_rfc3339).unwrap_or_else(|_| timestamp(time))
}

/// Returns any timestamp in RFC 3339, with as many fraction digits as it needs.
pub(crate) fn timestamp(time: &Timestamp) -> String {
    let nanos = u32::try_from(time.nanos).unwrap_or(0);
    chrono::DateTime::from_timestamp(time.seconds, nanos)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}
