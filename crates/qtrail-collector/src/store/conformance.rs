//! The conformance suite every [`EventStore`] backend must pass: plain functions that take a
//! factory opening a store in a directory. Calling the factory again on the same directory after
//! dropping the first store is a reopen, which is how durability is checked.

//!
//! The checks are grouped by what they cover: [`appends`], [`publishers`], [`queries`],
//! [`checkpoints`], [`tree`] and [`pruning`]; the builders they share are here.

mod appends;
mod checkpoints;
mod pruning;
mod publishers;
mod queries;
mod tree;

use std::path::Path;

use prost_types::Timestamp;
use qtrail_cadf::{Action, AuditEvent, Crn, EventBuilder, EventTime, Initiator, Location};

use super::{AppendBatch, EventStore, NewEvent};
use appends::{
    chain_lookups, collectors, concurrent_creates, dedup, dense_seqs_and_chain, failed_group_stores_nothing,
    reopen_after_close,
};
use checkpoints::checkpoints;
use pruning::{prune_removes_all_but_held, retention_and_holds_are_durable};
use publishers::{gap_limit, gaps, publisher_binding, rejected_seqs};
use queries::{filters_and_paging, queries_while_the_index_lags, reopen_with_the_index_behind};
use tree::{tree_follows_the_events, tree_is_atomic_with_the_append};

/// Opens a store in a directory.
pub(crate) type Factory<'a> = &'a dyn Fn(&Path) -> Box<dyn EventStore>;

/// One conformance check: a factory and a fresh directory to open stores in.
type Check = fn(Factory<'_>, &Path);

/// The checks of retention: pruning and the durable policies and holds.
const RETENTION_CHECKS: [(&str, Check); 2] = [
    ("prune_removes_all_but_held", prune_removes_all_but_held),
    ("retention_and_holds_are_durable", retention_and_holds_are_durable),
];

/// Runs every conformance check, each in a fresh directory.
pub(crate) fn run_all(factory: Factory<'_>) {
    run_without_retention(factory);
    run(factory, &RETENTION_CHECKS);
}

/// Runs every check but retention's, for a backend that keeps every event (the PostgreSQL
/// store, until it prunes: it refuses retention settings instead).
pub(crate) fn run_without_retention(factory: Factory<'_>) {
    let checks: [(&str, Check); 17] = [
        ("collectors", collectors),
        ("concurrent_creates", concurrent_creates),
        ("dense_seqs_and_chain", dense_seqs_and_chain),
        ("dedup", dedup),
        ("failed_group_stores_nothing", failed_group_stores_nothing),
        ("reopen_after_close", reopen_after_close),
        ("gaps", gaps),
        ("gap_limit", gap_limit),
        ("rejected_seqs", rejected_seqs),
        ("filters_and_paging", filters_and_paging),
        ("queries_while_the_index_lags", queries_while_the_index_lags),
        ("reopen_with_the_index_behind", reopen_with_the_index_behind),
        ("chain_lookups", chain_lookups),
        ("checkpoints", checkpoints),
        ("publisher_binding", publisher_binding),
        ("tree_follows_the_events", tree_follows_the_events),
        ("tree_is_atomic_with_the_append", tree_is_atomic_with_the_append),
    ];
    run(factory, &checks);
}

/// Runs `checks`, each in a fresh directory.
fn run(factory: Factory<'_>, checks: &[(&str, Check)]) {
    for (name, check) in checks {
        let dir = tempfile::tempdir().expect("temp dir");
        eprintln!("conformance: {name}");
        check(factory, dir.path());
    }
}

pub(crate) fn location(name: &str) -> Location {
    name.parse().expect("valid location")
}

pub(crate) fn at(seconds: i64) -> Timestamp {
    Timestamp { seconds, nanos: 0 }
}

/// Returns a valid event of `location` built from a few knobs.
pub(crate) fn event(
    location: &str,
    action: Action,
    initiator: &str,
    target: &str,
    code: u16,
    millis: i64,
) -> AuditEvent {
    let source = Crn::instance(&self::location(location), "acc-1", "inst-1").expect("crn");
    let initiator = Initiator {
        id: initiator.into(),
        name: format!("{initiator}@example.com"),
        type_uri: qtrail_cadf::event::INITIATOR_USER.into(),
        credential_type: "apikey".into(),
        host_address: "192.0.2.1".into(),
        host_agent: "conformance".into(),
    };
    let builder = EventBuilder::new(action, source, initiator)
        .target(target, target)
        .correlation_id(format!("corr-{}", millis % 3))
        .event_time(EventTime::from_unix_millis(millis).expect("time"));
    let builder = if code < 400 { builder.status(code) } else { builder.failure(code, "refused") };
    builder.build().expect("valid event")
}

/// A batch delivered with the token named `token-<publisher>`.
pub(crate) fn batch(location: &str, publisher: &str, epoch: u64, events: &[(u64, &AuditEvent)]) -> AppendBatch {
    AppendBatch {
        location: self::location(location),
        publisher_id: publisher.into(),
        epoch,
        credential: format!("token-{publisher}"),
        events: events.iter().map(|(seq, event)| NewEvent::new(*seq, event)).collect(),
        rejected_seqs: Vec::new(),
    }
}

pub(crate) fn simple_events(location: &str, count: usize) -> Vec<AuditEvent> {
    (0..count).map(|i| event(location, Action::JobRead, "IBMid-1", "", 200, 1_700_000_000_000 + i as i64)).collect()
}

pub(crate) fn append_all(store: &dyn EventStore, location: &str, events: &[AuditEvent]) {
    let items: Vec<(u64, &AuditEvent)> = events.iter().enumerate().map(|(i, e)| (i as u64 + 1, e)).collect();
    store.append(vec![batch(location, "pub-1", 1, &items)], at(1)).expect("append");
}
