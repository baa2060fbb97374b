//! Conformance: the Merkle tree of each location — its stored hashes follow the events, in
//! the append's transaction, across batches, groups, duplicates and reopens.

use std::path::Path;

use qtrail_cadf::AuditEvent;
use qtrail_tlog::testing::reference_root;
use qtrail_tlog::{Hash, leaf_hash, stored_hash_count, tree_hash};

use super::{Factory, at, batch, location, simple_events};
use crate::store::{EventStore, StoreError, TreeReader, canonical_of};

/// Checks the stored tree of `name` against the canonical bytes of its stored events, at every
/// size up to the newest.
fn assert_tree_matches_events(store: &dyn EventStore, name: &str) {
    let location = location(name);
    let records = store.events(&location, 1, usize::MAX).unwrap();
    let leaves: Vec<Hash> = records.iter().map(|record| leaf_hash(&canonical_of(record).unwrap())).collect();
    let size = store.tree_size(&location).unwrap();
    assert_eq!(size, leaves.len() as u64, "{name}");
    assert_eq!(size, store.last_seq(&location).unwrap());
    let reader = TreeReader { store, location: &location };
    for n in 0..=size {
        assert_eq!(tree_hash(n, &reader).unwrap(), reference_root(&leaves[..n as usize]), "{name} size {n}");
    }
    let count = stored_hash_count(size);
    let stored = store.read_hashes(&location, &(0..count).collect::<Vec<_>>()).unwrap();
    assert_eq!(stored.len() as u64, count);
    assert!(store.read_hashes(&location, &[count]).is_err(), "no hash beyond the tree");
}

fn numbered(events: &[AuditEvent], first_seq: u64) -> Vec<(u64, &AuditEvent)> {
    (first_seq..).zip(events).collect()
}

pub(super) fn tree_follows_the_events(factory: Factory<'_>, dir: &Path) {
    let east = simple_events("us-east", 300);
    let de = simple_events("eu-de", 40);
    {
        let store = factory(dir);
        store.create_collector(&location("us-east"), at(1)).unwrap();
        store.create_collector(&location("eu-de"), at(1)).unwrap();
        assert_tree_matches_events(store.as_ref(), "us-east");
        // One group: two batches of one location around one of another, the second with
        // duplicates of the first, which add no leaves.
        let mut second = numbered(&east[100..170], 1);
        second.extend(numbered(&east[0..5], 71));
        store
            .append(
                vec![
                    batch("us-east", "p1", 1, &numbered(&east[..100], 1)),
                    batch("eu-de", "p2", 1, &numbered(&de[..13], 1)),
                    batch("us-east", "p3", 1, &second),
                ],
                at(2),
            )
            .unwrap();
        assert_tree_matches_events(store.as_ref(), "us-east");
        assert_tree_matches_events(store.as_ref(), "eu-de");
        // Batches of one event each, so that every shape of right edge is appended to.
        for (seq, event) in numbered(&east[170..200], 101) {
            store.append(vec![batch("us-east", "p1", 1, &[(seq, event)])], at(3)).unwrap();
        }
        assert_tree_matches_events(store.as_ref(), "us-east");
    }
    let store = factory(dir);
    assert_tree_matches_events(store.as_ref(), "us-east");
    store.append(vec![batch("us-east", "p1", 1, &numbered(&east[200..], 131))], at(4)).unwrap();
    store.append(vec![batch("eu-de", "p2", 1, &numbered(&de[13..], 14))], at(4)).unwrap();
    assert_tree_matches_events(store.as_ref(), "us-east");
    assert_tree_matches_events(store.as_ref(), "eu-de");
    assert_eq!(store.tree_size(&location("us-east")).unwrap(), 300);
}

pub(super) fn tree_is_atomic_with_the_append(factory: Factory<'_>, dir: &Path) {
    let store = factory(dir);
    store.create_collector(&location("us-east"), at(1)).unwrap();
    let events = simple_events("us-east", 3);
    let foreign = simple_events("eu-de", 1);
    store
        .append(
            vec![batch("us-east", "p", 1, &numbered(&events[..2], 1)), batch("eu-de", "p", 1, &numbered(&foreign, 1))],
            at(1),
        )
        .unwrap_err();
    assert_eq!(store.tree_size(&location("us-east")).unwrap(), 0);
    assert!(matches!(store.read_hashes(&location("us-east"), &[0]), Err(StoreError::Corrupt(_))));
    store.append(vec![batch("us-east", "p", 1, &numbered(&events, 1))], at(2)).unwrap();
    assert_tree_matches_events(store.as_ref(), "us-east");
    let unknown = store.read_hashes(&location("eu-de"), &[0]).unwrap_err();
    assert!(matches!(unknown, StoreError::NoCollector(ref l) if l == "eu-de"), "{unknown:?}");
}
