//! Conformance: queries — every filter and order against a scan of the chain, while the index
//! lags and after a reopen with the index behind.

use std::path::Path;

use qtrail_cadf::{Action, AuditEvent};
use qtrail_proto::qtrail::audit::v1 as proto;

use super::{Factory, append_all, at, batch, event, location, simple_events};
use crate::filter::{Filter, Order};
use crate::store::{EventStore, IndexStep};

/// Returns 60 events of `us-east` that vary in every filtered field.
fn varied_events() -> Vec<AuditEvent> {
    let actions = [Action::JobRead, Action::JobCancel, Action::ProgramCreate, Action::ProgramDelete, Action::JobCreate];
    let mut events = Vec::new();
    for i in 0..60_i64 {
        let action = actions[(i % 5) as usize];
        let target = if i % 4 == 0 { String::new() } else { format!("r-{}", i % 7) };
        let code = [200, 404, 403, 201][(i % 4) as usize];
        // Event times are not in chain order: the time index must not assume they are.
        let millis = 1_700_000_000_000 + ((i * 37) % 60) * 1000;
        events.push(event("us-east", action, &format!("IBMid-{}", i % 3), &target, code, millis));
    }
    events
}

/// Stores `events` in `us-east` as batches of 25 of publisher `p`, from publisher seq `first`.
fn append_in_batches(store: &dyn EventStore, events: &[AuditEvent], first: u64) {
    let items: Vec<(u64, &AuditEvent)> = events.iter().enumerate().map(|(i, e)| (first + i as u64, e)).collect();
    for chunk in items.chunks(25) {
        store.append(vec![batch("us-east", "p", 1, chunk)], at(1)).unwrap();
    }
}

/// Returns filters of every kind over the events of [`varied_events`].
fn varied_filters() -> Vec<proto::EventFilter> {
    let instance = "crn:v1:bluemix:public:quantum-computing:us-east:a/acc-1:inst-1";
    vec![
        proto::EventFilter::default(),
        proto::EventFilter { action: "quantum-computing.job".into(), ..Default::default() },
        proto::EventFilter { action: "quantum-computing.program.delete".into(), ..Default::default() },
        proto::EventFilter { outcome: proto::Outcome::Failure as i32, ..Default::default() },
        proto::EventFilter { severity: proto::Severity::Critical as i32, ..Default::default() },
        proto::EventFilter { initiator_id: "IBMid-2".into(), ..Default::default() },
        proto::EventFilter { target_id: format!("{instance}:job:r-3"), ..Default::default() },
        proto::EventFilter { target_id: instance.into(), ..Default::default() },
        proto::EventFilter { target_id: format!("{instance}:job"), ..Default::default() },
        proto::EventFilter { correlation_id: "corr-1".into(), ..Default::default() },
        proto::EventFilter {
            start_time: Some(at(1_700_000_010)),
            end_time: Some(at(1_700_000_030)),
            ..Default::default()
        },
        proto::EventFilter {
            start_time: Some(at(1_700_000_010)),
            action: "quantum-computing.job".into(),
            initiator_id: "IBMid-1".into(),
            ..Default::default()
        },
        proto::EventFilter {
            action: "quantum-computing.job".into(),
            start_time: Some(at(1_700_000_010)),
            end_time: Some(at(1_700_000_040)),
            ..Default::default()
        },
        proto::EventFilter {
            action: "quantum-computing.program.create".into(),
            end_time: Some(at(1_700_000_030)),
            ..Default::default()
        },
        proto::EventFilter {
            action: "quantum-computing.job.cancel".into(),
            start_time: Some(at(1_800_000_000)),
            ..Default::default()
        },
        proto::EventFilter { initiator_id: "nobody".into(), ..Default::default() },
        proto::EventFilter {
            action: "quantum-computing.job".into(),
            severity: proto::Severity::Critical as i32,
            ..Default::default()
        },
        proto::EventFilter {
            outcome: proto::Outcome::Failure as i32,
            severity: proto::Severity::Warning as i32,
            ..Default::default()
        },
        proto::EventFilter {
            outcome: proto::Outcome::Success as i32,
            start_time: Some(at(1_700_000_020)),
            ..Default::default()
        },
    ]
}

/// Checks every filter of [`varied_filters`] against a brute-force evaluation over the chain of
/// `us-east`, in both orders, paging with small pages, so that neither the index choice nor how
/// far the index has got changes what a query returns.
fn assert_queries_match_a_scan(store: &dyn EventStore, context: &str) {
    let all = store.events(&location("us-east"), 1, 1000).unwrap();
    for wire in &varied_filters() {
        let filter = Filter::from_wire(Some(wire)).unwrap();
        let expected: Vec<u64> = all.iter().filter(|r| filter.matches(r)).map(|r| r.location_seq).collect();
        for order in [Order::OldestFirst, Order::NewestFirst] {
            let mut expected = expected.clone();
            if order == Order::NewestFirst {
                expected.reverse();
            }
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let page = store.query(&location("us-east"), &filter, order, after, 7).unwrap();
                assert!(page.len() <= 7);
                got.extend(page.iter().map(|r| r.location_seq));
                if page.len() < 7 {
                    break;
                }
                after = page.last().map(|r| r.location_seq);
            }
            assert_eq!(got, expected, "{context}: filter {wire:?} order {order:?}");
        }
    }
}

/// Indexes until nothing is left, in steps of `step`, and returns the steps' outcomes.
fn index_fully(store: &dyn EventStore, step: u64) -> Vec<IndexStep> {
    let mut steps = Vec::new();
    loop {
        let done = store.index_step(step).unwrap();
        assert!(done.indexed <= step, "{done:?} exceeds the limit {step}");
        steps.push(done);
        if done.lag == 0 {
            return steps;
        }
        assert!(steps.len() < 10_000, "indexing does not finish");
    }
}

/// Checks every kind of filter against a brute-force evaluation, fully indexed.
pub(super) fn filters_and_paging(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    store.create_collector(&location("us-east"), at(1)).unwrap();
    store.create_collector(&location("eu-de"), at(1)).unwrap();
    append_in_batches(store.as_ref(), &varied_events(), 1);
    let decoy = simple_events("eu-de", 3);
    append_all(store.as_ref(), "eu-de", &decoy);
    index_fully(store.as_ref(), 1000);
    assert_eq!(store.indexed_seq(&location("us-east")).unwrap(), 60);
    assert_queries_match_a_scan(store.as_ref(), "fully indexed");

    // A few sanity anchors, so that the brute force is not trivially empty.
    let count = |wire: proto::EventFilter| {
        let filter = Filter::from_wire(Some(&wire)).unwrap();
        store.query(&location("us-east"), &filter, Order::OldestFirst, None, 1000).unwrap().len()
    };
    assert_eq!(count(proto::EventFilter::default()), 60);
    assert_eq!(count(proto::EventFilter { action: "quantum-computing.job".into(), ..Default::default() }), 36);
    assert_eq!(count(varied_filters()[6].clone()), 4);
    assert_eq!(store.query(&location("au-syd"), &Filter::default(), Order::NewestFirst, None, 10).unwrap().len(), 0);
}

/// Queries return what a scan of the chain returns whatever part of it is indexed: nothing,
/// part of a batch, everything but the newest events.
pub(super) fn queries_while_the_index_lags(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    store.create_collector(&location("us-east"), at(1)).unwrap();
    store.create_collector(&location("eu-de"), at(1)).unwrap();
    let events = varied_events();
    append_in_batches(store.as_ref(), &events[..50], 1);
    append_all(store.as_ref(), "eu-de", &simple_events("eu-de", 3));
    let behind = store.indexed_seq(&location("us-east")).unwrap();
    assert!(behind <= 50, "indexed through {behind} of 50");
    assert_queries_match_a_scan(store.as_ref(), "not indexed");

    // Part of the chain: the step covers the first 17 positions of us-east.
    let step = store.index_step(17).unwrap();
    assert!(step.indexed <= 17);
    let partly = store.indexed_seq(&location("us-east")).unwrap();
    assert!(partly <= 50);
    assert_queries_match_a_scan(store.as_ref(), "partly indexed");

    // Events committed after the index caught up are found before the indexer sees them.
    index_fully(store.as_ref(), 7);
    assert_eq!(store.indexed_seq(&location("us-east")).unwrap(), 50);
    assert_eq!(store.indexed_seq(&location("eu-de")).unwrap(), 3);
    append_in_batches(store.as_ref(), &events[50..], 51);
    assert_queries_match_a_scan(store.as_ref(), "newest ten not indexed");
    let newest = Filter::from_wire(Some(&proto::EventFilter { initiator_id: "IBMid-2".into(), ..Default::default() }));
    let page = store.query(&location("us-east"), &newest.unwrap(), Order::NewestFirst, None, 1).unwrap();
    assert_eq!(page[0].location_seq, 60, "the newest event of IBMid-2 comes first");

    // A backend that indexes with the append (PostgreSQL) has nothing left to index here.
    let before = store.indexed_seq(&location("us-east")).unwrap();
    let steps = index_fully(store.as_ref(), 4);
    assert_eq!(steps.iter().map(|step| step.indexed).sum::<u64>(), events.len() as u64 - before);
    assert_eq!(store.indexed_seq(&location("us-east")).unwrap(), 60);
    assert_queries_match_a_scan(store.as_ref(), "indexed again");
    // Nothing left: a step does nothing.
    assert_eq!(store.index_step(10).unwrap(), IndexStep { indexed: 0, lag: 0 });
}

/// A store reopened with its index behind the chain answers queries right at once, and
/// indexing resumes where it stopped.
pub(super) fn reopen_with_the_index_behind(factory: Factory<'_>, dir: &Path) {
    let events = varied_events();
    {
        let store = factory(dir);
        store.create_collector(&location("us-east"), at(1)).unwrap();
        append_in_batches(store.as_ref(), &events[..40], 1);
        store.index_step(13).unwrap();
    }
    let store = factory(dir);
    let resumed = store.indexed_seq(&location("us-east")).unwrap();
    assert!(resumed <= 40, "indexed through {resumed} of 40");
    assert_queries_match_a_scan(store.as_ref(), "reopened behind");
    append_in_batches(store.as_ref(), &events[40..], 41);
    assert_queries_match_a_scan(store.as_ref(), "reopened behind, then appended");
    index_fully(store.as_ref(), 9);
    assert_eq!(store.indexed_seq(&location("us-east")).unwrap(), 60);
    assert_queries_match_a_scan(store.as_ref(), "reopened and caught up");
    drop(store);
    let store = factory(dir);
    assert_eq!(store.indexed_seq(&location("us-east")).unwrap(), 60, "a caught-up index is durable");
    assert_queries_match_a_scan(store.as_ref(), "reopened caught up");
}
