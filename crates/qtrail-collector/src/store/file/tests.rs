//! Tests of the file store: the conformance suite, and what only an append-only log has to get
//! right (torn tails, damage, a second process, the index against the log).

use std::path::Path;

use super::*;
use crate::store::NewEvent;
use crate::store::conformance;

pub(super) fn open(dir: &Path) -> FileStore {
    FileStore::open(dir, 4 * 1024 * 1024).unwrap()
}

#[test]
fn conformance_suite() {
    conformance::run_all(&|dir: &Path| -> Box<dyn EventStore> { Box::new(open(dir)) });
}

/// Buckets of 4 positions, so that queries cross many buckets.
#[test]
fn conformance_suite_with_tiny_index_buckets() {
    conformance::run_all(&|dir: &Path| -> Box<dyn EventStore> {
        Box::new(FileStore::open_with_bucket_bits(dir, 4 * 1024 * 1024, 2).unwrap())
    });
}

pub(super) fn location() -> Location {
    "us-east".parse().unwrap()
}

/// Appends one batch of `count` events of publisher `p` from seq `from`.
pub(super) fn append(store: &FileStore, from: u64, count: u64) {
    append_batch(store, events(from, count));
}

/// Returns events `from..from + count` of publisher `p`, each with an id of its own.
pub(super) fn events(from: u64, count: u64) -> Vec<NewEvent> {
    (from..from + count)
        .map(|seq| {
            let event = conformance::event("us-east", qtrail_cadf::Action::JobRead, "IBMid-1", "j", 200, seq as i64);
            NewEvent::new(seq, &event)
        })
        .collect()
}

/// Appends one batch of publisher `p` and returns its outcome.
pub(super) fn append_batch(store: &FileStore, events: Vec<NewEvent>) -> crate::store::AppendOutcome {
    let batch = AppendBatch {
        location: location(),
        publisher_id: "p".into(),
        epoch: 1,
        credential: "runtime".into(),
        events,
        rejected_seqs: vec![],
    };
    store.append(vec![batch], Timestamp::default()).unwrap().remove(0)
}

pub(super) fn log_path(dir: &Path) -> PathBuf {
    dir.join(FileStore::FILE_NAME)
}

/// Makes a store with a collector and three group commits; returns the log's length after each.
pub(super) fn three_commits(dir: &Path) -> Vec<u64> {
    let store = open(dir);
    store.create_collector(&location(), Timestamp::default()).unwrap();
    let mut ends = vec![std::fs::metadata(log_path(dir)).unwrap().len()];
    for (from, count) in [(1, 3), (4, 2), (6, 1)] {
        append(&store, from, count);
        ends.push(std::fs::metadata(log_path(dir)).unwrap().len());
    }
    ends
}

#[test]
fn a_torn_tail_is_cut_at_any_byte_and_acknowledged_frames_stay() {
    let dir = tempfile::tempdir().unwrap();
    let ends = three_commits(dir.path());
    let whole = std::fs::read(log_path(dir.path())).unwrap();
    let (before_last, last) = (ends[2], ends[3]);
    for cut in before_last..last {
        let copy = tempfile::tempdir().unwrap();
        std::fs::write(log_path(copy.path()), &whole[..cut as usize]).unwrap();
        let store = open(copy.path());
        assert_eq!(store.last_seq(&location()).unwrap(), 5, "cut at {cut}");
        assert_eq!(store.events(&location(), 1, 10).unwrap().len(), 5);
        assert_eq!(store.publisher(&location(), "p").unwrap().unwrap().stored_seq, 5);
        // The tail is gone from the file, and appends continue the chain.
        assert_eq!(std::fs::metadata(log_path(copy.path())).unwrap().len(), before_last);
        if cut % 64 == 0 {
            append(&store, 6, 1);
            drop(store);
            assert_eq!(open(copy.path()).last_seq(&location()).unwrap(), 6);
        }
    }
}

#[test]
fn zeros_after_the_last_frame_are_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let ends = three_commits(dir.path());
    let mut bytes = std::fs::read(log_path(dir.path())).unwrap();
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(log_path(dir.path()), &bytes).unwrap();
    let store = open(dir.path());
    assert_eq!(store.last_seq(&location()).unwrap(), 6);
    assert_eq!(std::fs::metadata(log_path(dir.path())).unwrap().len(), ends[3]);
}

#[test]
fn damage_before_the_last_frame_refuses_to_open_and_names_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let ends = three_commits(dir.path());
    let mut bytes = std::fs::read(log_path(dir.path())).unwrap();
    // A byte inside the second group commit's body.
    let at = ends[1] + FRAME_HEADER_FOR_TESTS + 20;
    bytes[at as usize] ^= 0x40;
    std::fs::write(log_path(dir.path()), &bytes).unwrap();
    let err = FileStore::open(dir.path(), 1024 * 1024).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains(&format!("at offset {}", ends[1])), "{err}");
    // Nothing was cut: the acknowledged frames after the damage are all still there.
    assert_eq!(std::fs::read(log_path(dir.path())).unwrap(), bytes);
}

pub(super) const FRAME_HEADER_FOR_TESTS: u64 = log::FRAME_HEADER;

/// Flips a bit of the length field of the frame at `at` and returns the open's error.
fn open_with_len_flipped(dir: &Path, at: u64, bit: u8) -> StoreError {
    let mut bytes = std::fs::read(log_path(dir)).unwrap();
    bytes[at as usize + 3] ^= bit;
    std::fs::write(log_path(dir), &bytes).unwrap();
    let err = FileStore::open(dir, 1024 * 1024).unwrap_err();
    // Nothing was cut, and no tail was kept: nothing was taken for torn.
    assert_eq!(std::fs::read(log_path(dir)).unwrap(), bytes);
    assert!(!dir.join(format!("commit.log.torn-{at}")).exists());
    err
}

#[test]
fn a_damaged_length_in_the_middle_refuses_to_open_instead_of_cutting_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let ends = three_commits(dir.path());
    // The high bit makes the frame claim to run far past the end of the file.
    let err = open_with_len_flipped(dir.path(), ends[1], 0x10);
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains(&format!("at offset {}", ends[1])), "{err}");
    assert!(err.to_string().contains("frame header"), "{err}");
}

#[test]
fn a_damaged_length_in_the_last_frame_refuses_to_open_too() {
    let dir = tempfile::tempdir().unwrap();
    let ends = three_commits(dir.path());
    let err = open_with_len_flipped(dir.path(), ends[2], 0x01);
    assert!(err.to_string().contains(&format!("at offset {}", ends[2])), "{err}");
}

#[test]
fn a_cut_torn_tail_is_kept_next_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let ends = three_commits(dir.path());
    let whole = std::fs::read(log_path(dir.path())).unwrap();
    let cut = ends[3] - 3;
    std::fs::write(log_path(dir.path()), &whole[..cut as usize]).unwrap();
    assert_eq!(open(dir.path()).last_seq(&location()).unwrap(), 5);
    let kept = std::fs::read(dir.path().join(format!("commit.log.torn-{}", ends[2]))).unwrap();
    assert_eq!(kept, whole[ends[2] as usize..cut as usize]);
}

#[test]
fn a_log_of_the_first_format_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(log_path(dir.path()), log::MAGIC_V1).unwrap();
    let err = FileStore::open(dir.path(), 1024 * 1024).unwrap_err();
    assert!(err.to_string().contains("QTRLOG01"), "{err}");
}

#[test]
fn a_second_open_is_refused_while_the_first_holds_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let second = FileStore::open(dir.path(), 1024 * 1024).unwrap_err().to_string();
    assert!(second.starts_with("storage failure: cannot lock"), "{second}");
    assert!(!second.ends_with('.'), "{second}");
}

#[test]
fn positions_survive_a_reopen_with_the_index_from_before() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.create_collector(&location(), Timestamp::default()).unwrap();
        append(&store, 1, 30);
        while store.index_step(7).unwrap().lag > 0 {}
    }
    let store = open(dir.path());
    assert_eq!(store.indexed_seq(&location()).unwrap(), 30);
    let filter = Filter { initiator_id: Some("IBMid-1".into()), ..Filter::default() };
    let found = store.query(&location(), &filter, Order::OldestFirst, None, 100).unwrap();
    assert_eq!(found.iter().map(|record| record.location_seq).collect::<Vec<_>>(), (1..=30).collect::<Vec<_>>());
}

/// Index entries removed behind the store's back: filtered queries stay complete (the
/// unchecked index is not used), the check finds the index off its digest and it is rebuilt.
#[test]
fn a_tampered_index_is_not_trusted_and_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.create_collector(&location(), Timestamp::default()).unwrap();
        append(&store, 1, 30);
        while store.index_step(1000).unwrap().lag > 0 {}
    }
    {
        let db = redb::Database::open(dir.path().join(FileStore::INDEX_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut index =
                txn.open_table(redb::TableDefinition::<(u8, u32, &str, u64), ()>::new("index/us-east")).unwrap();
            // Every initiator entry but the first: an initiator filter would find one event.
            index.retain(|(field, _, _, seq), ()| field != 4 || seq == 1).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open(dir.path());
    let filter = Filter { initiator_id: Some("IBMid-1".into()), ..Filter::default() };
    let count = |store: &FileStore| store.query(&location(), &filter, Order::NewestFirst, None, 100).unwrap().len();
    assert_eq!(count(&store), 30, "before the check");
    assert_eq!(store.index_step(1000).unwrap(), IndexStep { indexed: 30, lag: 0 }, "rebuilt");
    assert_eq!(count(&store), 30, "after the rebuild");
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.index_step(1000).unwrap(), IndexStep { indexed: 0, lag: 0 }, "the rebuilt index is kept");
    assert_eq!(count(&store), 30);
}

/// A mark raised alone, to a record whose chain hash it then carries, passes the check
/// against the chain; the digest holds the mark, so the index is still rebuilt and filtered
/// queries find the positions the mark skipped.
#[test]
fn a_raised_mark_is_not_trusted_and_the_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let hash = {
        let store = open(dir.path());
        store.create_collector(&location(), Timestamp::default()).unwrap();
        append(&store, 1, 30);
        assert_eq!(store.index_step(20).unwrap(), IndexStep { indexed: 20, lag: 10 });
        store.events(&location(), 30, 1).unwrap()[0].chain_hash.clone()
    };
    {
        let db = redb::Database::open(dir.path().join(FileStore::INDEX_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(super::index::MARKS).unwrap().insert("us-east", (30, hash.as_slice())).unwrap();
        txn.commit().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.index_step(1000).unwrap(), IndexStep { indexed: 30, lag: 0 }, "rebuilt");
    let filter = Filter { initiator_id: Some("IBMid-1".into()), ..Filter::default() };
    assert_eq!(store.query(&location(), &filter, Order::NewestFirst, None, 100).unwrap().len(), 30);
}

/// The tree file is derived: lost, cut short or left longer than the log, it is made whole
/// again from the log at open, with the same hashes.
#[test]
fn the_merkle_tree_is_repaired_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree").join("us-east.hashes");
    let hashes = |store: &FileStore| {
        let count = qtrail_tlog::stored_hash_count(store.tree_size(&location()).unwrap());
        store.read_hashes(&location(), &(0..count).collect::<Vec<_>>()).unwrap()
    };
    let expected = {
        let store = open(dir.path());
        store.create_collector(&location(), Timestamp::default()).unwrap();
        append(&store, 1, 20);
        append(&store, 21, 13);
        hashes(&store)
    };
    let whole = std::fs::read(&tree).unwrap();
    for damage in [Vec::new(), whole[..whole.len() - 40].to_vec(), [whole.clone(), vec![7; 96]].concat()] {
        std::fs::write(&tree, &damage).unwrap();
        let store = open(dir.path());
        assert_eq!(hashes(&store), expected);
        assert_eq!(std::fs::read(&tree).unwrap(), whole);
    }
}

/// A tree file grown past the log while the store is open (or cut short) is not appended to
/// at the wrong place: the next append rebuilds it from the log first.
#[test]
fn an_append_never_writes_over_or_past_a_tree_file_that_does_not_fit() {
    let hashes = |store: &FileStore| {
        let count = qtrail_tlog::stored_hash_count(store.tree_size(&location()).unwrap());
        store.read_hashes(&location(), &(0..count).collect::<Vec<_>>()).unwrap()
    };
    // The stored hashes of the store's own events, rebuilt from nothing.
    let rebuilt = |store: &FileStore| {
        let leaves: Vec<qtrail_tlog::Hash> = store
            .events(&location(), 1, 100)
            .unwrap()
            .iter()
            .map(|record| qtrail_tlog::leaf_hash(&crate::store::canonical_of(record).unwrap()))
            .collect();
        let reader = crate::store::TreeReader { store, location: &location() };
        qtrail_tlog::append_hashes(0, &leaves, &reader).unwrap()
    };
    for damage in [vec![7; 96], Vec::new()] {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree").join("us-east.hashes");
        let store = open(dir.path());
        store.create_collector(&location(), Timestamp::default()).unwrap();
        append(&store, 1, 20);
        let mut bytes = std::fs::read(&tree).unwrap();
        if damage.is_empty() {
            bytes.truncate(bytes.len() - 64);
        }
        bytes.extend_from_slice(&damage);
        std::fs::write(&tree, &bytes).unwrap();
        append(&store, 21, 5);
        assert_eq!(store.tree_size(&location()).unwrap(), 25);
        assert_eq!(hashes(&store), rebuilt(&store));
    }
}

/// Records read in runs (one pread per stretch of the log) are the records read one by one, in
/// either order, with other locations' records between them.
#[test]
fn runs_of_records_read_as_single_records_do() {
    use crate::store::index::{Chain as _, SeqBounds};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_collector(&location(), Timestamp::default()).unwrap();
    store.create_collector(&"eu-de".parse().unwrap(), Timestamp::default()).unwrap();
    for round in 0..6 {
        append(&store, round * 100 + 1, 100);
        let other = conformance::event("eu-de", qtrail_cadf::Action::JobRead, "IBMid-2", "j", 200, round as i64);
        let batch = AppendBatch {
            location: "eu-de".parse().unwrap(),
            publisher_id: "q".into(),
            epoch: 1,
            credential: "runtime".into(),
            events: vec![NewEvent::new(round + 1, &other)],
            rejected_seqs: vec![],
        };
        store.append(vec![batch], Timestamp::default()).unwrap();
    }
    let chains = store.chains();
    let chain = chains.of("us-east").unwrap();
    let single: Vec<(u64, Vec<u8>)> = (1..=600).map(|seq| (seq, chain.record(seq).unwrap().unwrap())).collect();
    for (low, high) in [(1, 600), (3, 517), (250, 260), (600, 900), (0, 1)] {
        let bounds = SeqBounds { low, high };
        let expected: Vec<_> = single.iter().filter(|(seq, _)| (low..=high).contains(seq)).cloned().collect();
        let ascending: Vec<_> = chain.records(bounds, false).unwrap().map(Result::unwrap).collect();
        assert_eq!(ascending, expected, "{low}..={high}");
        let mut descending: Vec<_> = chain.records(bounds, true).unwrap().map(Result::unwrap).collect();
        descending.reverse();
        assert_eq!(descending, expected, "{low}..={high} descending");
    }
}
