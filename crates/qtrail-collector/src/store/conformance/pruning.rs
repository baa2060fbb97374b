//! Conformance: pruning ([`EventStore::prune`]) and the retention record — removed records
//! are gone from every read, held ones stay, the tree, checkpoints, collector and event ids
//! stay, and all of it survives a reopen.

use std::path::Path;

use qtrail_cadf::{Action, AuditEvent};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{Hash, leaf_hash, tree_hash};

use super::{Factory, at, batch, event, location};
use crate::filter::{Filter, Order};
use crate::store::{EventStore, PruneOutcome, TreeReader, canonical_of};

/// The target of the events a hold covers.
const HELD_TARGET: &str = "held-job";

/// Fifty events, the 5th and 20th owned by the held account.
fn events() -> Vec<AuditEvent> {
    (1..=50)
        .map(|i| {
            let target = if i == 5 || i == 20 { HELD_TARGET } else { "" };
            event("us-east", Action::JobRead, "IBMid-1", target, 200, 1_700_000_000_000 + i)
        })
        .collect()
}

fn held(record: &proto::StoredEvent) -> bool {
    record.event.as_ref().and_then(|event| event.target.as_ref()).is_some_and(|target| target.name == HELD_TARGET)
}

fn seqs(records: &[proto::StoredEvent]) -> Vec<u64> {
    records.iter().map(|record| record.location_seq).collect()
}

/// Asserts what a store pruned through 30 but for 5 and 20 shows, tree root `root` at 50.
fn assert_pruned(store: &dyn EventStore, root: Hash, third: uuid::Uuid) {
    let loc = location("us-east");
    let expected: Vec<u64> = [5, 20].into_iter().chain(31..=50).collect();
    assert_eq!(store.pruned_through(&loc).unwrap(), 30);
    assert_eq!(seqs(&store.events(&loc, 1, usize::MAX).unwrap()), expected);
    let oldest = store.query(&loc, &Filter::default(), Order::OldestFirst, None, 100).unwrap();
    assert_eq!(seqs(&oldest), expected, "queries skip removed records");
    let newest = store.query(&loc, &Filter::default(), Order::NewestFirst, None, 100).unwrap();
    assert_eq!(seqs(&newest), expected.iter().rev().copied().collect::<Vec<_>>());
    // Positions, the tree and the checkpoints stay: proofs for the rest stay valid.
    assert_eq!(store.last_seq(&loc).unwrap(), 50);
    assert_eq!(store.collector(&loc).unwrap().unwrap().event_count, 50);
    assert_eq!(tree_hash(50, &TreeReader { store, location: &loc }).unwrap(), root);
    assert_eq!(store.checkpoints(&loc, None, 10).unwrap().len(), 1);
    assert_eq!(store.seq_of_event_id(&loc, third).unwrap(), Some(3), "event ids stay");
}

pub(super) fn prune_removes_all_but_held(factory: Factory<'_>, dir: &Path) {
    let loc = location("us-east");
    let events = events();
    let numbered: Vec<(u64, &AuditEvent)> = (1..).zip(&events).collect();
    let root = {
        let store = factory(dir);
        store.create_collector(&loc, at(1)).unwrap();
        store.append(vec![batch("us-east", "p1", 1, &numbered)], at(2)).unwrap();
        let root = tree_hash(50, &TreeReader { store: store.as_ref(), location: &loc }).unwrap();
        let checkpoint = proto::Checkpoint {
            location: loc.to_string(),
            number: 1,
            location_seq: 50,
            tree_size: 50,
            root: root.to_vec(),
            ..Default::default()
        };
        store.add_checkpoint(&checkpoint).unwrap();
        assert_eq!(store.pruned_through(&loc).unwrap(), 0);
        let outcome = store.prune(&loc, 30, &held).unwrap();
        assert_eq!(outcome, PruneOutcome { removed: 28, kept: 2, pruned_through: 30 });
        assert_pruned(store.as_ref(), root, events[2].id);
        // Pruning again to the same place removes nothing more.
        assert_eq!(store.prune(&loc, 30, &held).unwrap(), PruneOutcome { removed: 0, kept: 2, pruned_through: 30 });
        root
    };
    let store = factory(dir);
    assert_pruned(store.as_ref(), root, events[2].id);
    // An old event published again is not stored again.
    let again = store.append(vec![batch("us-east", "p1", 2, &[(1, &events[2])])], at(3)).unwrap();
    assert_eq!(again[0].accepted, 0);
    assert_eq!(again[0].duplicates + again[0].rejected.len() as u32, 1);
    assert_eq!(store.last_seq(&loc).unwrap(), 50);
    // The chain goes on after a prune; its new leaves extend the same tree.
    let next = event("us-east", Action::JobRead, "IBMid-1", "", 200, 1_800_000_000_000);
    store.append(vec![batch("us-east", "p1", 2, &[(2, &next)])], at(4)).unwrap();
    assert_eq!(store.last_seq(&loc).unwrap(), 51);
    let leaves: Vec<Hash> = events.iter().chain([&next]).map(|e| leaf_hash(&qtrail_cadf::canonical_bytes(e))).collect();
    assert_eq!(
        tree_hash(51, &TreeReader { store: store.as_ref(), location: &loc }).unwrap(),
        qtrail_tlog::testing::reference_root(&leaves)
    );
    let record = store.events(&loc, 51, 1).unwrap();
    assert_eq!(canonical_of(&record[0]), Some(qtrail_cadf::canonical_bytes(&next)));
    // The hold lifted: the kept records go too; a prune never reaches past the last position.
    let outcome = store.prune(&loc, 1000, &|_| false).unwrap();
    assert_eq!(outcome, PruneOutcome { removed: 2 + 21, kept: 0, pruned_through: 51 });
    assert!(store.events(&loc, 1, usize::MAX).unwrap().is_empty());
    assert!(store.query(&loc, &Filter::default(), Order::NewestFirst, None, 10).unwrap().is_empty());
    assert_eq!(store.last_seq(&loc).unwrap(), 51);
    drop(store);
    let store = factory(dir);
    assert_eq!(store.last_seq(&loc).unwrap(), 51);
    assert!(store.events(&loc, 1, usize::MAX).unwrap().is_empty());
    assert!(store.prune(&location("eu-de"), 1, &|_| false).is_err(), "no collector");
}

pub(super) fn retention_and_holds_are_durable(factory: Factory<'_>, dir: &Path) {
    let loc = location("us-east");
    let hold = |location: &str, account: &str| proto::LegalHold {
        location: location.into(),
        account: account.into(),
        reason: "case 7".into(),
        create_time: Some(at(5)),
        created_by: "admin".into(),
    };
    {
        let store = factory(dir);
        store.create_collector(&loc, at(1)).unwrap();
        assert_eq!(store.retention(&loc).unwrap().days, 0, "off by default");
        assert!(store.holds().unwrap().is_empty());
        store.set_retention(&proto::RetentionPolicy { location: loc.to_string(), days: 30 }).unwrap();
        store.set_hold(&hold("", "acc-2"), true).unwrap();
        store.set_hold(&hold("us-east", ""), true).unwrap();
        store.set_hold(&hold("", "acc-1"), true).unwrap();
    }
    let store = factory(dir);
    assert_eq!(store.retention(&loc).unwrap(), proto::RetentionPolicy { location: loc.to_string(), days: 30 });
    assert_eq!(store.holds().unwrap(), vec![hold("us-east", ""), hold("", "acc-1"), hold("", "acc-2")]);
    store.set_hold(&hold("", "acc-1"), false).unwrap();
    store.set_retention(&proto::RetentionPolicy { location: loc.to_string(), days: 0 }).unwrap();
    drop(store);
    let store = factory(dir);
    assert_eq!(store.retention(&loc).unwrap().days, 0);
    assert_eq!(store.holds().unwrap(), vec![hold("us-east", ""), hold("", "acc-2")]);
}
