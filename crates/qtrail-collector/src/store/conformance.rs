//! The conformance suite every [`EventStore`] backend must pass: plain functions that take a
//! factory opening a store in a directory. Calling the factory again on the same directory after
//! dropping the first store is a reopen, which is how durability is checked.

use std::path::Path;
use std::sync::{Arc, Barrier};

use prost_types::Timestamp;
use qtrail_cadf::{
    Action, AuditEvent, ChainHash, Crn, EventBuilder, EventTime, Initiator, Location, chain_hash_of_bytes,
};
use qtrail_proto::qtrail::audit::v1 as proto;

use super::{AppendBatch, EventStore, IndexStep, NewEvent, StoreError, canonical_of};
use crate::filter::{Filter, Order};

/// Opens a store in a directory.
pub(crate) type Factory<'a> = &'a dyn Fn(&Path) -> Box<dyn EventStore>;

/// One conformance check: a factory and a fresh directory to open stores in.
type Check = fn(Factory<'_>, &Path);

/// Runs every conformance check, each in a fresh directory.
pub(crate) fn run_all(factory: Factory<'_>) {
    let checks: [(&str, Check); 14] = [
        ("collectors", collectors),
        ("concurrent_creates", concurrent_creates),
        ("dense_seqs_and_chain", dense_seqs_and_chain),
        ("dedup", dedup),
        ("failed_group_stores_nothing", failed_group_stores_nothing),
        ("reopen_after_close", reopen_after_close),
        ("gaps", gaps),
        ("gap_limit", gap_limit),
        ("filters_and_paging", filters_and_paging),
        ("queries_while_the_index_lags", queries_while_the_index_lags),
        ("reopen_with_the_index_behind", reopen_with_the_index_behind),
        ("chain_lookups", chain_lookups),
        ("checkpoints", checkpoints),
        ("publisher_binding", publisher_binding),
    ];
    for (name, check) in checks {
        let dir = tempfile::tempdir().expect("temp dir");
        eprintln!("conformance: {name}");
        check(factory, dir.path());
    }
}

fn location(name: &str) -> Location {
    name.parse().expect("valid location")
}

fn at(seconds: i64) -> Timestamp {
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
fn batch(location: &str, publisher: &str, epoch: u64, events: &[(u64, &AuditEvent)]) -> AppendBatch {
    AppendBatch {
        location: self::location(location),
        publisher_id: publisher.into(),
        epoch,
        credential: format!("token-{publisher}"),
        events: events.iter().map(|(seq, event)| NewEvent::new(*seq, event)).collect(),
    }
}

fn simple_events(location: &str, count: usize) -> Vec<AuditEvent> {
    (0..count).map(|i| event(location, Action::JobRead, "IBMid-1", "", 200, 1_700_000_000_000 + i as i64)).collect()
}

fn append_all(store: &dyn EventStore, location: &str, events: &[AuditEvent]) {
    let items: Vec<(u64, &AuditEvent)> = events.iter().enumerate().map(|(i, e)| (i as u64 + 1, e)).collect();
    store.append(vec![batch(location, "pub-1", 1, &items)], at(1)).expect("append");
}

fn collectors(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    assert!(store.collectors().unwrap().is_empty());
    for name in ["us-east", "eu-de", "jp-tok"] {
        let created = store.create_collector(&location(name), at(5)).unwrap();
        assert_eq!((created.location.as_str(), created.event_count), (name, 0));
        assert!(created.head_chain_hash.is_empty());
    }
    let again = store.create_collector(&location("eu-de"), at(6)).unwrap_err();
    assert!(matches!(again, StoreError::CollectorExists(ref l) if l == "eu-de"), "{again:?}");
    let listed: Vec<String> = store.collectors().unwrap().into_iter().map(|c| c.location).collect();
    assert_eq!(listed, ["eu-de", "jp-tok", "us-east"]);
    assert_eq!(store.collector(&location("eu-de")).unwrap().unwrap().create_time, Some(at(5)));
    assert!(store.collector(&location("au-syd")).unwrap().is_none());
}

fn concurrent_creates(factory: Factory<'_>, dir: &Path) {
    let store: Arc<dyn EventStore> = Arc::from(factory(dir));
    let threads = 16;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.create_collector(&location("us-east"), at(1)).is_ok()
            })
        })
        .collect();
    let wins = handles.into_iter().map(|h| h.join().unwrap()).filter(|won| *won).count();
    assert_eq!(wins, 1);
}

fn dense_seqs_and_chain(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    store.create_collector(&location("us-east"), at(1)).unwrap();
    store.create_collector(&location("eu-de"), at(1)).unwrap();
    let first = simple_events("us-east", 3);
    let second = simple_events("us-east", 2);
    let other = simple_events("eu-de", 2);
    // Two batches of one location and one of another, committed as one group.
    let outcomes = store
        .append(
            vec![
                batch("us-east", "pub-1", 1, &[(1, &first[0]), (2, &first[1]), (3, &first[2])]),
                batch("eu-de", "pub-2", 1, &[(1, &other[0]), (2, &other[1])]),
                batch("us-east", "pub-3", 1, &[(1, &second[0]), (2, &second[1])]),
            ],
            at(7),
        )
        .unwrap();
    let seqs: Vec<Vec<u64>> =
        outcomes.iter().map(|o| o.stored.iter().map(|r| r.record.location_seq).collect()).collect();
    assert_eq!(seqs, vec![vec![1, 2, 3], vec![1, 2], vec![4, 5]]);
    assert_eq!(outcomes.iter().map(|o| o.accepted).collect::<Vec<_>>(), [3, 2, 2]);

    let records = store.events(&location("us-east"), 1, 100).unwrap();
    assert_eq!(records.len(), 5);
    let mut prev = ChainHash::GENESIS;
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.location_seq, index as u64 + 1);
        assert_eq!(record.location, "us-east");
        assert_eq!(record.prev_chain_hash, prev.as_bytes());
        let expected = chain_hash_of_bytes(&prev, &canonical_of(record).unwrap());
        assert_eq!(record.chain_hash, expected.as_bytes());
        assert_eq!(record.receive_time, Some(at(7)));
        prev = expected;
    }
    let expected = proto::PublisherRef { id: "pub-3".into(), epoch: 1, seq: 1, credential: "token-pub-3".into() };
    assert_eq!(records[3].publisher, Some(expected));
    let collector = store.collector(&location("us-east")).unwrap().unwrap();
    assert_eq!((collector.event_count, collector.head_chain_hash), (5, prev.as_bytes().to_vec()));
    assert_eq!(store.last_seq(&location("us-east")).unwrap(), 5);
    assert_eq!(store.collector(&location("eu-de")).unwrap().unwrap().event_count, 2);
    // What is served is the event as validated.
    assert_eq!(records[0].event, Some(proto::AuditEvent::from(&first[0])));
}

fn dedup(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    store.create_collector(&location("us-east"), at(1)).unwrap();
    let events = simple_events("us-east", 2);
    let mut conflicting = events[0].clone();
    conflicting.message = "Qiskit Runtime: list jobs (altered)".into();
    let outcomes = store
        .append(vec![batch("us-east", "p", 1, &[(1, &events[0]), (2, &events[0]), (3, &events[1])])], at(1))
        .unwrap();
    assert_eq!((outcomes[0].accepted, outcomes[0].duplicates), (2, 1));
    let outcomes = store
        .append(vec![batch("us-east", "p", 1, &[(1, &events[0]), (2, &conflicting), (4, &events[1])])], at(2))
        .unwrap();
    assert_eq!((outcomes[0].accepted, outcomes[0].duplicates), (0, 2));
    assert_eq!(outcomes[0].rejected.len(), 1);
    let rejected = &outcomes[0].rejected[0];
    assert_eq!((rejected.event_id.as_str(), rejected.seq), (events[0].id.to_string().as_str(), 2));
    assert!(rejected.reason.contains("conflicting event id"), "{}", rejected.reason);
    assert_eq!(store.last_seq(&location("us-east")).unwrap(), 2);
}

fn failed_group_stores_nothing(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    store.create_collector(&location("us-east"), at(1)).unwrap();
    let events = simple_events("us-east", 2);
    let foreign = simple_events("eu-de", 1);
    let err = store
        .append(
            vec![
                batch("us-east", "p", 1, &[(1, &events[0]), (2, &events[1])]),
                batch("eu-de", "p", 1, &[(1, &foreign[0])]),
            ],
            at(1),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::NoCollector(ref l) if l == "eu-de"), "{err:?}");
    assert_eq!(store.last_seq(&location("us-east")).unwrap(), 0);
    assert!(store.publisher(&location("us-east"), "p").unwrap().is_none());
    assert_eq!(store.collector(&location("us-east")).unwrap().unwrap().event_count, 0);
}

fn reopen_after_close(factory: Factory<'_>, dir: &Path) {
    let events = simple_events("us-east", 4);
    {
        let store = factory(dir);
        store.create_collector(&location("us-east"), at(1)).unwrap();
        append_all(store.as_ref(), "us-east", &events[..3]);
    }
    let store = factory(dir);
    let again = store.create_collector(&location("us-east"), at(2)).unwrap_err();
    assert!(matches!(again, StoreError::CollectorExists(_)));
    let stored = store.events(&location("us-east"), 1, 10).unwrap();
    assert_eq!(stored.len(), 3);
    // Deduplication and the chain both survive the reopen.
    let outcomes =
        store.append(vec![batch("us-east", "pub-1", 1, &[(3, &events[2]), (4, &events[3])])], at(3)).unwrap();
    assert_eq!((outcomes[0].accepted, outcomes[0].duplicates), (1, 1));
    let last = &outcomes[0].stored[0].record;
    assert_eq!(last.location_seq, 4);
    assert_eq!(last.prev_chain_hash, stored[2].chain_hash);
    let state = store.publisher(&location("us-east"), "pub-1").unwrap().unwrap();
    assert_eq!((state.stored_seq, state.event_count), (4, 4));
}

fn gaps(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    store.create_collector(&location("us-east"), at(1)).unwrap();
    let events = simple_events("us-east", 6);
    store.append(vec![batch("us-east", "p", 1, &[(1, &events[0]), (2, &events[1]), (6, &events[2])])], at(10)).unwrap();
    store.append(vec![batch("us-east", "p", 1, &[(4, &events[3])])], at(11)).unwrap();
    let state = store.publisher(&location("us-east"), "p").unwrap().unwrap();
    let gaps: Vec<(u64, u64, u64)> = state.gaps.iter().map(|g| (g.epoch, g.from_seq, g.to_seq)).collect();
    assert_eq!(gaps, vec![(1, 3, 3), (1, 5, 5)]);
    assert_eq!((state.epoch, state.stored_seq, state.event_count), (1, 6, 4));
    assert_eq!(state.last_seen, Some(at(11)));
    // A new epoch restarts the sequence and keeps the old gaps.
    store.append(vec![batch("us-east", "p", 2, &[(2, &events[4])])], at(12)).unwrap();
    store.append(vec![batch("us-east", "a", 1, &[(1, &events[5])])], at(12)).unwrap();
    let publishers = store.publishers(&location("us-east"), None, 10).unwrap();
    assert_eq!(publishers.iter().map(|p| p.publisher_id.as_str()).collect::<Vec<_>>(), ["a", "p"]);
    let gaps: Vec<(u64, u64, u64)> = publishers[1].gaps.iter().map(|g| (g.epoch, g.from_seq, g.to_seq)).collect();
    assert_eq!(gaps, vec![(1, 3, 3), (1, 5, 5), (2, 1, 1)]);
    assert_eq!((publishers[1].epoch, publishers[1].stored_seq), (2, 2));
    assert!(store.publishers(&location("eu-de"), None, 10).unwrap().is_empty());
    // Pages: `limit` of them, then those after the last one.
    let ids = |page: Vec<proto::PublisherState>| page.into_iter().map(|p| p.publisher_id).collect::<Vec<_>>();
    assert_eq!(ids(store.publishers(&location("us-east"), None, 1).unwrap()), ["a"]);
    assert_eq!(ids(store.publishers(&location("us-east"), Some("a"), 1).unwrap()), ["p"]);
    assert!(store.publishers(&location("us-east"), Some("p"), 1).unwrap().is_empty());
    assert_eq!(ids(store.publishers(&location("us-east"), Some("b"), 5).unwrap()), ["p"], "after an id not stored");
}

/// A batch that would leave its publisher more than the limit of gaps is refused whole, the
/// other batches of its group stored; one that opens no gap is still stored.
fn gap_limit(factory: Factory<'_>, dir: &Path) {
    use super::publisher::MAX_GAPS_PER_PUBLISHER;

    let store = factory(dir);
    store.create_collector(&location("us-east"), at(1)).unwrap();
    let events = simple_events("us-east", MAX_GAPS_PER_PUBLISHER + 3);
    // Every other seq, 1000 events a batch: one gap each.
    let even: Vec<(u64, &AuditEvent)> =
        events[..MAX_GAPS_PER_PUBLISHER].iter().enumerate().map(|(i, e)| (2 * (i as u64 + 1), e)).collect();
    for chunk in even.chunks(1000) {
        store.append(vec![batch("us-east", "p", 1, chunk)], at(2)).unwrap();
    }
    let full = store.publisher(&location("us-east"), "p").unwrap().unwrap();
    assert_eq!(full.gaps.len(), MAX_GAPS_PER_PUBLISHER);
    let highest = full.stored_seq;

    let [over, other, next] =
        [&events[MAX_GAPS_PER_PUBLISHER], &events[MAX_GAPS_PER_PUBLISHER + 1], &events[MAX_GAPS_PER_PUBLISHER + 2]];
    let outcomes = store
        .append(vec![batch("us-east", "p", 1, &[(highest + 2, over)]), batch("us-east", "q", 1, &[(1, other)])], at(3))
        .unwrap();
    assert!(outcomes[0].too_many_gaps && outcomes[0].accepted == 0, "{:?}", outcomes[0]);
    assert_eq!((outcomes[1].too_many_gaps, outcomes[1].accepted), (false, 1));
    let state = store.publisher(&location("us-east"), "p").unwrap().unwrap();
    assert_eq!(state, full, "nothing of the refused batch recorded");
    assert_eq!(store.last_seq(&location("us-east")).unwrap(), MAX_GAPS_PER_PUBLISHER as u64 + 1);

    // A later batch of the refused publisher in the same group is refused with it, though it
    // alone would open no gap.
    let outcomes = store
        .append(vec![batch("us-east", "p", 1, &[(highest + 2, over)]), batch("us-east", "p", 1, &[(1, next)])], at(3))
        .unwrap();
    assert!(outcomes.iter().all(|outcome| outcome.too_many_gaps && outcome.accepted == 0), "{outcomes:?}");

    let outcome = store.append(vec![batch("us-east", "p", 1, &[(highest + 1, over), (1, next)])], at(4)).unwrap();
    assert_eq!((outcome[0].too_many_gaps, outcome[0].accepted), (false, 2));
    assert_eq!(store.publisher(&location("us-east"), "p").unwrap().unwrap().gaps.len(), MAX_GAPS_PER_PUBLISHER - 1);
}

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
fn filters_and_paging(factory: Factory<'_>, dir: &Path) {
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
fn queries_while_the_index_lags(factory: Factory<'_>, dir: &Path) {
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

    let steps = index_fully(store.as_ref(), 4);
    assert_eq!(steps.iter().map(|step| step.indexed).sum::<u64>() as usize, events.len() - 50);
    assert_eq!(store.indexed_seq(&location("us-east")).unwrap(), 60);
    assert_queries_match_a_scan(store.as_ref(), "indexed again");
    // Nothing left: a step does nothing.
    assert_eq!(store.index_step(10).unwrap(), IndexStep { indexed: 0, lag: 0 });
}

/// A store reopened with its index behind the chain answers queries right at once, and
/// indexing resumes where it stopped.
fn reopen_with_the_index_behind(factory: Factory<'_>, dir: &Path) {
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

fn chain_lookups(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    store.create_collector(&location("us-east"), at(1)).unwrap();
    append_all(store.as_ref(), "us-east", &simple_events("us-east", 5));
    let records = store.chain_records(&location("us-east"), 2, 2).unwrap();
    assert_eq!(records.iter().map(|r| r.location_seq).collect::<Vec<_>>(), [2, 3]);
    let third = records[1].record.clone().unwrap();
    let hash = ChainHash::from_slice(&third.chain_hash).unwrap();
    assert_eq!(store.seq_of_chain_hash(&location("us-east"), &hash).unwrap(), Some(3));
    assert_eq!(store.seq_of_chain_hash(&location("us-east"), &ChainHash([7; 32])).unwrap(), None);
    assert!(store.chain_records(&location("us-east"), 6, 10).unwrap().is_empty());
    assert_eq!(store.last_seq(&location("eu-de")).unwrap(), 0);
}

/// Checkpoints are kept per location, densely numbered, newest first, durably.
fn checkpoints(factory: Factory<'_>, dir: &Path) {
    let checkpoint = |location: &str, number: u64| proto::Checkpoint {
        location: location.into(),
        number,
        location_seq: number * 10,
        head_chain_hash: vec![u8::try_from(number).unwrap_or(0); 32],
        time: Some(at(i64::try_from(number).unwrap_or(0))),
        key_id: "k".into(),
        signature: vec![1, 2, 3],
    };
    let store = factory(dir);
    let err = store.add_checkpoint(&checkpoint("us-east", 1)).unwrap_err();
    assert!(matches!(err, StoreError::NoCollector(_)), "{err}");
    for name in ["us-east", "eu-de"] {
        store.create_collector(&location(name), at(0)).unwrap();
    }
    assert!(store.checkpoints(&location("us-east"), None, 10).unwrap().is_empty());
    for number in 1..=5 {
        store.add_checkpoint(&checkpoint("us-east", number)).unwrap();
    }
    store.add_checkpoint(&checkpoint("eu-de", 1)).unwrap();
    for wrong in [3, 7] {
        let err = store.add_checkpoint(&checkpoint("us-east", wrong)).unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err}");
    }
    drop(store);

    let store = factory(dir);
    let numbers = |before, limit| -> Vec<u64> {
        store.checkpoints(&location("us-east"), before, limit).unwrap().iter().map(|c| c.number).collect()
    };
    let intact = |name: &str, limit| -> Vec<proto::Checkpoint> {
        let entries = store.checkpoints(&location(name), None, limit).unwrap();
        entries.into_iter().map(|entry| entry.checkpoint.expect("intact")).collect()
    };
    assert_eq!(numbers(None, 10), [5, 4, 3, 2, 1]);
    assert_eq!(numbers(None, 2), [5, 4]);
    assert_eq!(numbers(Some(4), 2), [3, 2]);
    assert_eq!(numbers(Some(1), 2), Vec::<u64>::new());
    assert_eq!(intact("us-east", 1), [checkpoint("us-east", 5)]);
    assert_eq!(intact("eu-de", 10), [checkpoint("eu-de", 1)]);
    assert!(store.checkpoints(&location("jp-tok"), None, 10).unwrap().is_empty());
}

/// A publisher id is bound to the credential of its first batch: a batch of another is refused
/// whole and changes nothing, in the same group as accepted ones.
fn publisher_binding(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    store.create_collector(&location("us-east"), at(0)).unwrap();
    let events = simple_events("us-east", 3);
    let outcomes = store.append(vec![batch("us-east", "pub-1", 1, &[(1, &events[0])])], at(1)).unwrap();
    assert_eq!(outcomes[0].accepted, 1);

    let mut intruder = batch("us-east", "pub-1", 1, &[(2, &events[1])]);
    intruder.credential = "token-other".into();
    let honest = batch("us-east", "pub-1", 1, &[(3, &events[2])]);
    let outcomes = store.append(vec![intruder, honest], at(2)).unwrap();
    assert_eq!((outcomes[0].accepted, outcomes[0].rejected.len()), (0, 0));
    assert_eq!(outcomes[0].bound_to.as_deref(), Some("token-pub-1"));
    assert_eq!(outcomes[1].bound_to, None);
    assert_eq!(outcomes[1].accepted, 1, "the bound credential goes on publishing");

    let state = store.publisher(&location("us-east"), "pub-1").unwrap().unwrap();
    assert_eq!((state.credential.as_str(), state.event_count, state.stored_seq), ("token-pub-1", 2, 3));
    let records = store.events(&location("us-east"), 1, 10).unwrap();
    let credentials: Vec<&str> =
        records.iter().map(|record| record.publisher.as_ref().unwrap().credential.as_str()).collect();
    assert_eq!(credentials, ["token-pub-1", "token-pub-1"]);
}
