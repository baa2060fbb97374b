//! Tests of the compaction of the commit log (see [`super::compaction`]): the log shrinks by
//! what a prune removed, everything kept reads back the same, and each state a kill -9 can
//! leave on the disk during a compaction opens with nothing kept missing.

use std::path::Path;

use qtrail_cadf::{Action, AuditEvent};
use qtrail_tlog::tree_hash;

use super::tests::log_path;
use super::*;
use crate::chain::{CheckRange, verify_with_tree};
use crate::store::TreeReader;
use crate::store::conformance::{self, at, batch, event, location};

/// Opens the store, compacting whatever a prune removed.
fn open_compacting(dir: &Path) -> FileStore {
    FileStore::open_compacting(dir, 0).expect("open")
}

/// Opens the store without compacting.
fn open_plain(dir: &Path) -> FileStore {
    FileStore::open_compacting(dir, u64::MAX).expect("open")
}

#[test]
fn conformance_suite_compacting_at_every_open() {
    conformance::run_all(&|dir: &Path| -> Box<dyn EventStore> { Box::new(open_compacting(dir)) });
}

/// Events of `name`, the 5th and 20th held, with padding so that a record is large next to
/// its stub.
fn events(name: &str, count: i64) -> Vec<AuditEvent> {
    (1..=count)
        .map(|i| {
            let target = if i == 5 || i == 20 { "held-job" } else { "" };
            let mut event = event(name, Action::JobRead, "IBMid-1", target, 200, 1_700_000_000_000 + i);
            event.message = "x".repeat(300);
            event
        })
        .collect()
}

fn held(record: &proto::StoredEvent) -> bool {
    record.event.as_ref().and_then(|event| event.target.as_ref()).is_some_and(|target| target.name == "held-job")
}

/// A store of two locations, 60 events each in batches of 10 (frames mixing both), a
/// checkpoint of us-east at 60, a snapshot, us-east pruned through 40 but for 5 and 20.
fn fixture(dir: &Path) -> Vec<AuditEvent> {
    let store = open_plain(dir);
    let (us, eu) = (events("us-east", 60), events("eu-de", 60));
    for name in ["us-east", "eu-de"] {
        store.create_collector(&location(name), at(1)).expect("create");
    }
    for chunk in 0..6 {
        let range = chunk * 10..chunk * 10 + 10;
        let numbered = |events: &[AuditEvent]| -> Vec<(u64, AuditEvent)> {
            range.clone().map(|i| (i as u64 + 1, events[i].clone())).collect()
        };
        let (a, b) = (numbered(&us), numbered(&eu));
        let batches = vec![batch("us-east", "p1", 1, &refs(&a)), batch("eu-de", "p2", 1, &refs(&b))];
        store.append(batches, at(2)).expect("append");
    }
    let loc = location("us-east");
    let root = tree_hash(60, &TreeReader { store: &store, location: &loc }).expect("root");
    let checkpoint = proto::Checkpoint {
        location: loc.to_string(),
        number: 1,
        location_seq: 60,
        head_chain_hash: store.collector(&loc).expect("collector").expect("some").head_chain_hash,
        tree_size: 60,
        root: root.to_vec(),
        ..Default::default()
    };
    store.add_checkpoint(&checkpoint).expect("checkpoint");
    assert!(store.snapshot(0).expect("snapshot"));
    assert_eq!(store.index_step(u64::MAX).expect("index").lag, 0);
    assert_eq!(store.prune(&loc, 40, &held).expect("prune").removed, 38);
    us
}

fn refs(numbered: &[(u64, AuditEvent)]) -> Vec<(u64, &AuditEvent)> {
    numbered.iter().map(|(seq, event)| (*seq, event)).collect()
}

/// Everything a reader can see of both locations.
#[derive(Debug, PartialEq)]
struct Seen {
    collectors: Vec<proto::Collector>,
    events: Vec<Vec<proto::StoredEvent>>,
    newest_first: Vec<Vec<proto::StoredEvent>>,
    /// Through the query indexes, indexed before the prune.
    by_correlation: Vec<Vec<proto::StoredEvent>>,
    bytes: Vec<Vec<(u64, Vec<u8>)>>,
    checkpoints: Vec<Vec<CheckpointEntry>>,
    roots: Vec<qtrail_tlog::Hash>,
    publishers: Vec<Vec<proto::PublisherState>>,
    pruned_through: Vec<u64>,
}

fn seen(store: &FileStore) -> Seen {
    let locations = [location("us-east"), location("eu-de")];
    fn each<T>(locations: &[Location], read: impl Fn(&Location) -> T) -> Vec<T> {
        locations.iter().map(read).collect()
    }
    Seen {
        collectors: store.collectors().expect("collectors"),
        events: each(&locations, |loc| store.events(loc, 1, usize::MAX).expect("events")),
        newest_first: each(&locations, |loc| {
            store.query(loc, &Filter::default(), Order::NewestFirst, None, 500).expect("query")
        }),
        by_correlation: each(&locations, |loc| {
            let filter = crate::filter::Filter { correlation_id: Some("corr-1".into()), ..Default::default() };
            store.query(loc, &filter, Order::OldestFirst, None, 500).expect("query")
        }),
        bytes: locations
            .iter()
            .map(|loc| {
                let stored = store.stored_bytes(loc, 1, 500).expect("bytes");
                stored.into_iter().map(|stored| (stored.location_seq, stored.bytes)).collect()
            })
            .collect(),
        checkpoints: each(&locations, |loc| store.checkpoints(loc, None, 10).expect("checkpoints")),
        roots: each(&locations, |loc| tree_hash(60, &TreeReader { store, location: loc }).expect("root")),
        publishers: each(&locations, |loc| store.publishers(loc, None, 10).expect("publishers")),
        pruned_through: each(&locations, |loc| store.pruned_through(loc).expect("pruned")),
    }
}

fn log_len(dir: &Path) -> u64 {
    std::fs::metadata(log_path(dir)).expect("log").len()
}

/// Checks the chain and the tree of a location of 60 positions.
fn assert_verified(store: &FileStore, name: &str) {
    let range = CheckRange { from_seq: 1, to_seq: 60 };
    let verdict = verify_with_tree(store, &location(name), range, 60, None).expect("verify");
    assert!(verdict.ok, "{name}: {verdict:?}");
}

#[test]
fn a_compaction_gives_the_pruned_bytes_back_and_keeps_everything_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    let us = fixture(dir.path());
    let before = seen(&open_plain(dir.path()));
    let (len_before, removed_bytes) = {
        let store = open_plain(dir.path());
        (log_len(dir.path()), compaction::reclaimable(&store.read_state()))
    };
    let store = open_compacting(dir.path());
    let len_after = log_len(dir.path());
    let stubs = 38 * compaction::STUB as u64;
    assert!(removed_bytes > 38 * 300, "{removed_bytes}");
    assert!(len_after + removed_bytes - stubs - 200 <= len_before, "{len_before} -> {len_after}");
    assert!(!dir.path().join(snapshot::FILE_NAME).exists(), "the old log's snapshot is gone");
    assert_eq!(seen(&store), before);
    let us_seqs: Vec<u64> = before.events[0].iter().map(|record| record.location_seq).collect();
    assert_eq!(us_seqs, [5, 20].into_iter().chain(41..=60).collect::<Vec<_>>());
    assert_eq!(before.events[1].len(), 60);
    assert_eq!(before.by_correlation[1].len(), 20, "every third event has corr-1");
    assert_eq!(store.indexed_seq(&location("eu-de")).expect("indexed"), 60, "the index stays");
    assert_verified(&store, "us-east");
    assert_verified(&store, "eu-de");
    // Nothing more to give back: the next open leaves the log as it is.
    drop(store);
    let store = open_compacting(dir.path());
    assert_eq!(log_len(dir.path()), len_after);
    assert_eq!(seen(&store), before);
    // A pruned event's id stays known: published again, it is not stored again.
    let loc = location("us-east");
    assert_eq!(store.seq_of_event_id(&loc, us[2].id).expect("id"), Some(3));
    let again = store.append(vec![batch("us-east", "p1", 2, &[(61, &us[2])])], at(3)).expect("append");
    assert_eq!((again[0].accepted, again[0].duplicates + again[0].rejected.len() as u32), (0, 1));
    assert_eq!(store.last_seq(&loc).expect("last"), 60);
}

/// The chain goes on after a compaction, a second prune and compaction go over the stubs of
/// the first, and a lost tree file is rebuilt from the stubs' leaf hashes.
#[test]
fn stubs_survive_appends_a_second_compaction_and_a_lost_tree() {
    let dir = tempfile::tempdir().expect("temp dir");
    fixture(dir.path());
    let loc = location("us-east");
    let before = seen(&open_compacting(dir.path()));
    {
        let store = open_compacting(dir.path());
        let next = events("us-east", 61).pop().expect("event");
        store.append(vec![batch("us-east", "p1", 1, &[(61, &next)])], at(4)).expect("append");
        assert_eq!(store.last_seq(&loc).expect("last"), 61);
        assert_eq!(store.prune(&loc, 50, &|_| false).expect("prune").removed, 12);
    }
    let len = log_len(dir.path());
    let store = open_compacting(dir.path());
    assert!(log_len(dir.path()) < len);
    let seqs: Vec<u64> = store.events(&loc, 1, 100).expect("events").iter().map(|r| r.location_seq).collect();
    assert_eq!(seqs, (51..=61).collect::<Vec<_>>());
    assert_eq!(tree_hash(60, &TreeReader { store: &store, location: &loc }).expect("root"), before.roots[0]);
    drop(store);
    std::fs::remove_file(dir.path().join("tree").join("us-east.hashes")).expect("remove tree");
    let store = open_plain(dir.path());
    assert_eq!(tree_hash(60, &TreeReader { store: &store, location: &loc }).expect("root"), before.roots[0]);
    assert_eq!(store.collector(&loc).expect("collector").expect("some").event_count, 61);
}

/// A kill -9 before the rename leaves the old log and a copy, whole or cut, with the snapshot
/// still there or already removed: the open removes the copy and opens the old log, nothing
/// lost; the compaction done again then takes effect.
#[test]
fn a_compaction_cut_before_its_rename_leaves_the_old_log() {
    for (cut, without_snapshot) in [(None, false), (Some(100), false), (None, true), (Some(0), true)] {
        let dir = tempfile::tempdir().expect("temp dir");
        fixture(dir.path());
        let before = seen(&open_plain(dir.path()));
        let len = log_len(dir.path());
        let work = tempfile::tempdir().expect("temp dir");
        copy_dir(dir.path(), work.path());
        drop(open_compacting(work.path()));
        let mut copy = std::fs::read(log_path(work.path())).expect("compacted");
        copy.truncate(cut.unwrap_or(copy.len()));
        std::fs::write(dir.path().join(compaction::TMP_NAME), &copy).expect("leave the copy");
        if without_snapshot {
            std::fs::remove_file(dir.path().join(snapshot::FILE_NAME)).expect("remove snapshot");
        }
        let store = open_plain(dir.path());
        assert!(!dir.path().join(compaction::TMP_NAME).exists(), "{cut:?}");
        assert_eq!(log_len(dir.path()), len);
        assert_eq!(seen(&store), before);
        drop(store);
        let store = open_compacting(dir.path());
        assert!(log_len(dir.path()) < len);
        assert_eq!(seen(&store), before);
    }
}

/// A kill -9 after the rename, with the old log's snapshot still on the disk (the removal not
/// durable yet): the snapshot does not fit the new log, the state is replayed from it whole.
#[test]
fn a_compacted_log_with_the_old_snapshot_is_replayed_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    fixture(dir.path());
    let before = seen(&open_plain(dir.path()));
    let old_snapshot = std::fs::read(dir.path().join(snapshot::FILE_NAME)).expect("snapshot");
    drop(open_compacting(dir.path()));
    std::fs::write(dir.path().join(snapshot::FILE_NAME), old_snapshot).expect("put back");
    let store = open_plain(dir.path());
    assert_eq!(seen(&store), before);
    assert_verified(&store, "us-east");
    // A snapshot of the compacted log is used, stubs and all.
    assert!(store.snapshot(0).expect("snapshot"));
    drop(store);
    assert_eq!(seen(&open_plain(dir.path())), before);
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Below the default threshold (8 MiB and a tenth of the log) an open leaves the log as it is.
#[test]
fn an_open_does_not_compact_below_the_threshold() {
    let dir = tempfile::tempdir().expect("temp dir");
    fixture(dir.path());
    let len = log_len(dir.path());
    let store = FileStore::open(dir.path(), 1 << 20).expect("open");
    assert!(compaction::reclaimable(&store.read_state()) > 0);
    assert_eq!(log_len(dir.path()), len);
}

/// A location pruned to its last record keeps its head chain hash through a compaction, and
/// the chain goes on from it: the next record links to the last one removed.
#[test]
fn a_location_pruned_whole_goes_on_from_its_head() {
    let dir = tempfile::tempdir().expect("temp dir");
    let loc = location("us-east");
    let all = events("us-east", 11);
    let head = {
        let store = open_plain(dir.path());
        store.create_collector(&loc, at(1)).expect("create");
        let numbered: Vec<(u64, &AuditEvent)> = (1..).zip(&all[..10]).collect();
        store.append(vec![batch("us-east", "p1", 1, &numbered)], at(2)).expect("append");
        assert_eq!(store.prune(&loc, 10, &|_| false).expect("prune").removed, 10);
        store.collector(&loc).expect("collector").expect("some")
    };
    let len = log_len(dir.path());
    let store = open_compacting(dir.path());
    assert!(log_len(dir.path()) < len);
    assert_eq!(store.collector(&loc).expect("collector").expect("some"), head);
    assert!(store.events(&loc, 1, 100).expect("events").is_empty());
    store.append(vec![batch("us-east", "p1", 1, &[(11, &all[10])])], at(3)).expect("append");
    let next = store.events(&loc, 1, 100).expect("events");
    assert_eq!(next.iter().map(|record| record.location_seq).collect::<Vec<_>>(), [11]);
    assert_eq!(next[0].prev_chain_hash, head.head_chain_hash, "it links to the last record removed");
    let verdict = verify_with_tree(&store, &loc, CheckRange { from_seq: 1, to_seq: 11 }, 11, None).expect("verify");
    assert!(verdict.ok, "{verdict:?}");
    assert_eq!(verdict.pruned_through, 10);
}
