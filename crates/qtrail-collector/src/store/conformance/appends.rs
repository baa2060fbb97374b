//! Conformance: collectors and appends — dense positions, the hash chain, duplicates, failed
//! groups, reopening, and looking records up by chain hash.

use std::path::Path;
use std::sync::{Arc, Barrier};

use qtrail_cadf::{ChainHash, chain_hash_of_bytes};
use qtrail_proto::qtrail::audit::v1 as proto;

use super::{Factory, append_all, at, batch, location, simple_events};
use crate::store::{EventStore, StoreError, canonical_of};

pub(super) fn collectors(factory: Factory<'_>, dir: &Path) {
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

pub(super) fn concurrent_creates(factory: Factory<'_>, dir: &Path) {
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

pub(super) fn dense_seqs_and_chain(factory: Factory<'_>, dir: &Path) {
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

pub(super) fn dedup(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    store.create_collector(&location("us-east"), at(1)).unwrap();
    let events = simple_events("us-east", 2);
    let mut conflicting = events[0].clone();
    conflicting.message = "Qiskit Runtime: list jobs (altered)".into();
    let outcomes = store
        .append(vec![batch("us-east", "p", 1, &[(1, &events[0]), (2, &events[0]), (3, &events[1])])], at(1))
        .unwrap();
    assert_eq!((outcomes[0].accepted, outcomes[0].duplicates), (2, 1));
    // Every stored or duplicate event says where it is, a duplicate where its first copy is.
    let positions = |outcome: &crate::store::AppendOutcome| {
        outcome.positions.iter().map(|p| (p.event_id.clone(), p.seq, p.location_seq)).collect::<Vec<_>>()
    };
    let (first, second) = (events[0].id.to_string(), events[1].id.to_string());
    assert_eq!(positions(&outcomes[0]), [(first.clone(), 1, 1), (first.clone(), 2, 1), (second.clone(), 3, 2)]);
    let outcomes = store
        .append(vec![batch("us-east", "p", 1, &[(1, &events[0]), (2, &conflicting), (4, &events[1])])], at(2))
        .unwrap();
    assert_eq!((outcomes[0].accepted, outcomes[0].duplicates), (0, 2));
    assert_eq!(positions(&outcomes[0]), [(first, 1, 1), (second, 4, 2)]);
    assert_eq!(outcomes[0].rejected.len(), 1);
    let rejected = &outcomes[0].rejected[0];
    assert_eq!((rejected.event_id.as_str(), rejected.seq), (events[0].id.to_string().as_str(), 2));
    assert!(rejected.reason.contains("conflicting event id"), "{}", rejected.reason);
    assert_eq!(store.last_seq(&location("us-east")).unwrap(), 2);
}

pub(super) fn failed_group_stores_nothing(factory: Factory<'_>, dir: &Path) {
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

pub(super) fn reopen_after_close(factory: Factory<'_>, dir: &Path) {
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

pub(super) fn chain_lookups(factory: Factory<'_>, dir: &Path) {
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
    // Event ids find their position, in their own location only; they survive a reopen.
    let id: uuid::Uuid = third.event.unwrap().id.parse().unwrap();
    assert_eq!(store.seq_of_event_id(&location("us-east"), id).unwrap(), Some(3));
    assert_eq!(store.seq_of_event_id(&location("eu-de"), id).unwrap(), None);
    assert_eq!(store.seq_of_event_id(&location("us-east"), uuid::Uuid::nil()).unwrap(), None);
    drop(store);
    let store = factory(dir);
    assert_eq!(store.seq_of_event_id(&location("us-east"), id).unwrap(), Some(3));
}
