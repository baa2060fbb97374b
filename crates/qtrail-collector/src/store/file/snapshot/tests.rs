//! Tests of the state snapshot: a store opened from a snapshot and the log after it equals the
//! same store replayed whole, and a snapshot that is damaged, cut short or of another log is
//! refused for a full replay.

use std::path::{Path, PathBuf};

use prost_types::Timestamp;

use super::{FILE_NAME, Unusable, load};
use crate::store::file::FileStore;
use crate::store::{EventStore, NewEvent};
use qtrail_proto::qtrail::audit::v1 as proto;

fn open(dir: &Path) -> FileStore {
    FileStore::open(dir, 4 * 1024 * 1024).unwrap()
}

use crate::store::file::tests::{append_batch as append, events, location};

/// Everything the state holds, in a comparable form.
fn summary(store: &FileStore) -> String {
    let state = store.read_state();
    let locations: Vec<_> = state
        .locations
        .iter()
        .map(|(name, l)| (name, &l.collector, &l.positions, l.ids.sorted(), &l.checkpoints))
        .collect();
    format!("{locations:?} {:?} {}", state.publishers, state.end)
}

/// Makes a store with a collector, a checkpoint and 20 events, snapshotted, then 10 more
/// events; returns the first 3 events, to send again.
fn store_with_snapshot_then_more(dir: &Path) -> Vec<NewEvent> {
    let store = open(dir);
    store.create_collector(&location(), Timestamp::default()).unwrap();
    let first = events(1, 10);
    append(&store, first.clone());
    let checkpoint =
        proto::Checkpoint { location: "us-east".into(), number: 1, location_seq: 10, ..Default::default() };
    store.add_checkpoint(&checkpoint).unwrap();
    append(&store, events(11, 10));
    assert!(store.snapshot(0).unwrap(), "something was stored since the open");
    assert!(!store.snapshot(0).unwrap(), "nothing new, no snapshot");
    append(&store, events(21, 10));
    assert!(!store.snapshot(1 << 30).unwrap(), "not grown enough");
    first[..3].to_vec()
}

/// Copies the store in `dir` without its snapshot: what a full replay makes of it.
fn without_snapshot(dir: &Path) -> (tempfile::TempDir, PathBuf) {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join(FileStore::FILE_NAME), copy.path().join(FileStore::FILE_NAME)).unwrap();
    let path = copy.path().to_owned();
    (copy, path)
}

fn why_refused(dir: &Path) -> Unusable {
    let log = std::fs::File::open(dir.join(FileStore::FILE_NAME)).unwrap();
    let len = log.metadata().unwrap().len();
    match load(dir, &log, len) {
        Ok(found) => panic!("the snapshot was used: {}", found.is_some()),
        Err(why) => why,
    }
}

#[test]
fn a_snapshot_and_the_frames_after_it_reopen_as_a_full_replay_does() {
    let dir = tempfile::tempdir().unwrap();
    let repeated = store_with_snapshot_then_more(dir.path());
    let (_full, full_dir) = without_snapshot(dir.path());
    {
        let log = std::fs::File::open(dir.path().join(FileStore::FILE_NAME)).unwrap();
        let (state, _) = load(dir.path(), &log, log.metadata().unwrap().len()).unwrap().expect("a snapshot");
        assert_eq!(state.location("us-east").unwrap().positions.len(), 20, "the snapshot is before the last batch");
        let tree = state.location("us-east").unwrap().snapshot_tree.expect("the tree head is recorded");
        let store = open(dir.path());
        let us = location();
        let root = qtrail_tlog::tree_hash(20, &crate::store::TreeReader { store: &store, location: &us }).unwrap();
        assert_eq!(tree, (20, root));
    }
    let (snapshotted, full) = (open(dir.path()), open(&full_dir));
    assert_eq!(summary(&snapshotted), summary(&full));
    assert_eq!(snapshotted.events(&location(), 1, 100).unwrap(), full.events(&location(), 1, 100).unwrap());
    let by_initiator = crate::filter::Filter { initiator_id: Some("IBMid-1".into()), ..Default::default() };
    let query =
        |store: &FileStore| store.query(&location(), &by_initiator, crate::filter::Order::OldestFirst, None, 100);
    assert_eq!(query(&snapshotted).unwrap().len(), 30);
    assert_eq!(query(&snapshotted).unwrap(), query(&full).unwrap());
    assert_eq!(snapshotted.checkpoints(&location(), None, 10).unwrap().len(), 1);
    assert_eq!(
        snapshotted.read_hashes(&location(), &[0, 1, 2]).unwrap(),
        full.read_hashes(&location(), &[0, 1, 2]).unwrap()
    );
    // The ids from the snapshot deduplicate as the replayed ones do.
    let next = events(31, 1);
    for store in [&snapshotted, &full] {
        let outcome = append(store, [repeated.clone(), next.clone()].concat());
        assert_eq!((outcome.accepted, outcome.duplicates), (1, 3));
    }
    assert_eq!(summary(&snapshotted), summary(&full));
}

/// A snapshot written while ingest goes on folds the recent ids into its sorted array, and
/// lookups see both.
#[test]
fn ids_folded_by_a_snapshot_still_deduplicate() {
    let dir = tempfile::tempdir().unwrap();
    let repeated = store_with_snapshot_then_more(dir.path());
    let store = open(dir.path());
    assert_eq!(append(&store, repeated.clone()).duplicates, 3);
    let later = events(31, 2);
    append(&store, later.clone());
    assert!(store.snapshot(0).unwrap(), "the recent ids are folded into the array");
    let outcome = append(&store, [repeated, later].concat());
    assert_eq!((outcome.accepted, outcome.duplicates), (0, 5));
}

#[test]
fn a_damaged_or_cut_snapshot_is_refused_and_the_whole_log_replayed() {
    for (name, damage) in [
        ("flipped", (|bytes: &mut Vec<u8>| bytes[40] ^= 1) as fn(&mut Vec<u8>)),
        ("cut", |bytes: &mut Vec<u8>| bytes.truncate(bytes.len() - 10)),
        ("empty", |bytes: &mut Vec<u8>| bytes.clear()),
        ("of the first version, without tree heads", |bytes: &mut Vec<u8>| {
            bytes[..8].copy_from_slice(b"QTRSNP01");
            let body = bytes.len() - 4;
            let crc = crc32c::crc32c(&bytes[..body]);
            bytes[body..].copy_from_slice(&crc.to_le_bytes());
        }),
    ] {
        let dir = tempfile::tempdir().unwrap();
        store_with_snapshot_then_more(dir.path());
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(why_refused(dir.path()), Unusable::Damaged(_)), "{name}");
        let (_full, full_dir) = without_snapshot(dir.path());
        assert_eq!(summary(&open(dir.path())), summary(&open(&full_dir)), "{name}");
    }
}

#[test]
fn a_snapshot_of_another_log_or_of_more_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with_snapshot_then_more(dir.path());
    let other = tempfile::tempdir().unwrap();
    store_with_snapshot_then_more(other.path());
    std::fs::copy(other.path().join(FILE_NAME), dir.path().join(FILE_NAME)).unwrap();
    let why = why_refused(dir.path());
    assert!(matches!(why, Unusable::Mismatch(_)), "{why}");
    let (_full, full_dir) = without_snapshot(dir.path());
    assert_eq!(summary(&open(dir.path())), summary(&open(&full_dir)));

    // The log put back to a copy from before the snapshot: the snapshot covers more than it.
    let early = tempfile::tempdir().unwrap();
    {
        let store = open(early.path());
        store.create_collector(&location(), Timestamp::default()).unwrap();
        append(&store, events(1, 10));
        assert!(store.snapshot(0).unwrap());
    }
    let log = std::fs::read(early.path().join(FileStore::FILE_NAME)).unwrap();
    {
        let store = open(early.path());
        append(&store, events(11, 10));
        assert!(store.snapshot(0).unwrap());
    }
    std::fs::write(early.path().join(FileStore::FILE_NAME), log).unwrap();
    let why = why_refused(early.path());
    assert!(why.to_string().contains("does not fit the commit log"), "{why}");
    assert_eq!(open(early.path()).last_seq(&location()).unwrap(), 10);
}

/// The read-back of each location's last record catches a snapshot whose chain head differs
/// from the log's, even when every other check passes.
#[test]
fn a_snapshot_whose_last_record_reads_back_otherwise_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_collector(&location(), Timestamp::default()).unwrap();
    append(&store, events(1, 3));
    assert!(store.snapshot(0).unwrap());
    drop(store);
    let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
    let (mut state, tail) = super::decode(&bytes[..bytes.len() - 4]).unwrap();
    let log = std::fs::File::open(dir.path().join(FileStore::FILE_NAME)).unwrap();
    let len = log.metadata().unwrap().len();
    assert!(super::check(&state, tail, &log, len).is_ok());
    state.locations.get_mut("us-east").unwrap().collector.head_chain_hash[0] ^= 1;
    let why = super::check(&state, tail, &log, len).unwrap_err();
    assert!(why.to_string().contains("the last record of location `us-east` differs"), "{why}");
}
