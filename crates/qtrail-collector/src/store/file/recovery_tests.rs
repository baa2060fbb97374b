//! Tests of how the file store comes back from what a crash or a full disk leaves: torn tails
//! told apart from damage by the frames that follow, a tree file damaged inside, an index
//! file whose write failed, an index read that fails under a query.

use std::path::Path;

use super::tests::{FRAME_HEADER_FOR_TESTS, append, location, log_path, open, three_commits};
use super::*;
use crate::filter::Order;
use crate::store::{NewEvent, conformance};

/// Overwrites `bytes` of the log at `at`.
fn overwrite(dir: &Path, at: u64, bytes: &[u8]) {
    let mut log = std::fs::read(log_path(dir)).unwrap();
    log[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    std::fs::write(log_path(dir), &log).unwrap();
}

/// A crash that wrote the later pages of the last frame but not the one with its header: no
/// valid frame follows the damaged header, so it is a torn tail, whatever bytes it left.
#[test]
fn a_last_frame_without_its_header_is_a_torn_tail() {
    for header in [[0_u8; 12], [0xa5; 12]] {
        let dir = tempfile::tempdir().unwrap();
        let ends = three_commits(dir.path());
        overwrite(dir.path(), ends[2], &header);
        let store = open(dir.path());
        assert_eq!(store.last_seq(&location()).unwrap(), 5);
        assert_eq!(std::fs::metadata(log_path(dir.path())).unwrap().len(), ends[2]);
        assert!(dir.path().join(format!("commit.log.torn-{}", ends[2])).exists());
        append(&store, 6, 1);
        drop(store);
        assert_eq!(open(dir.path()).last_seq(&location()).unwrap(), 6);
    }
}

/// Bytes after the last frame that are not zeros but hold no valid frame are a torn tail too.
#[test]
fn garbage_after_the_last_frame_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let ends = three_commits(dir.path());
    let mut log = std::fs::read(log_path(dir.path())).unwrap();
    log.extend((0..5000_u32).map(|i| (i * 7 + 3) as u8));
    std::fs::write(log_path(dir.path()), &log).unwrap();
    assert_eq!(open(dir.path()).last_seq(&location()).unwrap(), 6);
    assert_eq!(std::fs::metadata(log_path(dir.path())).unwrap().len(), ends[3]);
}

/// A frame whose header is lost while a valid frame follows was acknowledged: the open refuses,
/// naming both offsets, and cuts nothing.
#[test]
fn a_damaged_frame_followed_by_a_valid_one_refuses_to_open() {
    for header in [[0_u8; 12], [0xa5; 12]] {
        let dir = tempfile::tempdir().unwrap();
        let ends = three_commits(dir.path());
        overwrite(dir.path(), ends[1], &header);
        let before = std::fs::read(log_path(dir.path())).unwrap();
        let err = FileStore::open(dir.path(), 1024 * 1024).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("damaged at offset {}", ends[1])), "{text}");
        assert!(text.contains(&format!("a valid frame follows it at offset {}", ends[2])), "{text}");
        assert_eq!(std::fs::read(log_path(dir.path())).unwrap(), before);
    }
    // A body that fails its check, followed by a valid frame, likewise.
    let dir = tempfile::tempdir().unwrap();
    let ends = three_commits(dir.path());
    overwrite(dir.path(), ends[1] + FRAME_HEADER_FOR_TESTS + 4, &[0; 8]);
    let err = FileStore::open(dir.path(), 1024 * 1024).unwrap_err().to_string();
    assert!(err.contains(&format!("offset {}: the frame body", ends[1])), "{err}");
}

/// Returns every stored hash of the store's tree.
fn hashes(store: &FileStore) -> Vec<qtrail_tlog::Hash> {
    let count = qtrail_tlog::stored_hash_count(store.tree_size(&location()).unwrap());
    store.read_hashes(&location(), &(0..count).collect::<Vec<_>>()).unwrap()
}

/// Stored hashes in memory.
struct Hashes<'a>(&'a [qtrail_tlog::Hash]);

impl qtrail_tlog::HashReader for Hashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<qtrail_tlog::Hash>, qtrail_tlog::Error> {
        Ok(indexes.iter().map(|index| self.0[*index as usize]).collect())
    }
}

/// Adds checkpoint `number` of the tree as it is now.
fn checkpoint(store: &FileStore, number: u64) {
    let size = store.tree_size(&location()).unwrap();
    let us = location();
    let root = qtrail_tlog::tree_hash(size, &crate::store::TreeReader { store, location: &us }).unwrap();
    let checkpoint = proto::Checkpoint {
        location: us.to_string(),
        number,
        location_seq: size,
        head_chain_hash: store.events(&us, size, 1).unwrap()[0].chain_hash.clone(),
        tree_size: size,
        root: root.to_vec(),
        ..Default::default()
    };
    store.add_checkpoint(&checkpoint).unwrap();
}

/// Bytes inside the tree file changed without changing its length (what a crash can leave of
/// hashes never synced, or of a file synced and then damaged): the open finds them, after the
/// newest checkpoint by computing those hashes again from the log, before it by the
/// checkpoint's root, and repairs the file; proofs and tiles read the log's tree again.
#[test]
fn a_tree_file_damaged_inside_is_repaired_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree").join("us-east.hashes");
    let expected = {
        let store = open(dir.path());
        store.create_collector(&location(), Timestamp::default()).unwrap();
        append(&store, 1, 16);
        checkpoint(&store, 1);
        append(&store, 17, 13);
        hashes(&store)
    };
    let whole = std::fs::read(&tree).unwrap();
    // The root of the checkpoint's 16 leaves, and hashes written after it.
    let root_of_16 = qtrail_tlog::stored_hash_index(4, 0) as usize * 32;
    let after = qtrail_tlog::stored_hash_count(16) as usize * 32;
    for (at, len) in [(after + 40, 50), (whole.len() - 32, 32), (root_of_16, 32), (0, whole.len())] {
        let mut damaged = whole.clone();
        damaged[at..at + len].fill(0);
        std::fs::write(&tree, &damaged).unwrap();
        let store = open(dir.path());
        assert_eq!(std::fs::read(&tree).unwrap(), whole, "damage at {at}");
        assert_eq!(hashes(&store), expected);
        let us = location();
        let verdict = crate::chain::verify(&store, &us, crate::chain::CheckRange { from_seq: 1, to_seq: 29 }, 29);
        let verdict = verdict.unwrap();
        assert!(verdict.ok, "{verdict:?}");
        let reader = crate::store::TreeReader { store: &store, location: &us };
        for tile in qtrail_tlog::tiles_for_size(29) {
            let served = qtrail_tlog::read_tile_data(tile, &reader).unwrap();
            let from_log = qtrail_tlog::read_tile_data(tile, &Hashes(&expected)).unwrap();
            assert_eq!(served, from_log, "{tile:?}");
        }
    }
}

/// Checks the chain and the tree of the first `count` events of the store.
fn assert_verified(store: &FileStore, count: u64) {
    let range = crate::chain::CheckRange { from_seq: 1, to_seq: count };
    let verdict = crate::chain::verify(store, &location(), range, count).unwrap();
    assert!(verdict.ok, "{verdict:?}");
}

/// Without any checkpoint, the state snapshot records each tree's head, so an open checks the
/// tree file against it and hashes again only the leaves after it (10 of 50 here), repairing
/// damage there; damage below the head fails its root, and the tree is rebuilt whole.
#[test]
fn without_checkpoints_an_open_rehashes_only_the_leaves_after_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree").join("us-east.hashes");
    let expected = {
        let store = open(dir.path());
        store.create_collector(&location(), Timestamp::default()).unwrap();
        append(&store, 1, 25);
        append(&store, 26, 15);
        assert!(store.snapshot(0).unwrap());
        append(&store, 41, 10);
        hashes(&store)
    };
    let whole = std::fs::read(&tree).unwrap();
    let after = qtrail_tlog::stored_hash_count(40) as usize * 32;
    // The hash of leaves 0..32, on the path of the root of 40 leaves.
    let below = qtrail_tlog::stored_hash_index(5, 0) as usize * 32;
    // Intact, damaged after the snapshot's tree (inside, and the last hash), then below it.
    for (at, len, rehashed) in [(0, 0, 10), (after + 40, 50, 10), (whole.len() - 32, 32, 10), (below, 32, 50)] {
        let mut damaged = whole.clone();
        damaged[at..at + len].fill(0);
        std::fs::write(&tree, &damaged).unwrap();
        let store = open(dir.path());
        assert_eq!(store.trees.rehashed(), rehashed, "damage at {at}");
        assert_eq!(std::fs::read(&tree).unwrap(), whole, "damage at {at}");
        assert_eq!(hashes(&store), expected);
        assert_verified(&store, 50);
    }
    // Without the snapshot the whole log is hashed again, as before it recorded trees.
    std::fs::remove_file(dir.path().join(snapshot::FILE_NAME)).unwrap();
    let store = open(dir.path());
    assert_eq!(store.trees.rehashed(), 50);
    assert_eq!(std::fs::read(&tree).unwrap(), whole);
}

/// A size-limited tmpfs mounted for one test, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. `8m`); `None`, with the reason printed, when this process
    /// may not mount, unless `QTRAIL_REQUIRE_TMPFS` is set (as `scripts/test` does), which makes
    /// that a failure instead.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let why = match mounted {
            Ok(output) if output.status.success() => return Some(Self { dir }),
            Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            Err(err) => err.to_string(),
        };
        assert!(std::env::var_os("QTRAIL_REQUIRE_TMPFS").is_none(), "cannot mount a tmpfs: {why}");
        eprintln!("skipped: this process cannot mount a tmpfs for the full-disk test ({why})");
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A batch of 100 events of publisher `p` from seq `from`.
fn hundred(from: u64) -> AppendBatch {
    let events = (from..from + 100)
        .map(|seq| {
            let event = conformance::event("us-east", qtrail_cadf::Action::JobRead, "IBMid-1", "j", 200, seq as i64);
            NewEvent::new(seq, &event)
        })
        .collect();
    AppendBatch {
        location: location(),
        publisher_id: "p".into(),
        epoch: 1,
        credential: "runtime".into(),
        events,
        rejected_seqs: vec![],
    }
}

/// Returns how many events a filtered query finds, in pages of 1000.
fn found(store: &FileStore, initiator: &str) -> usize {
    let filter = Filter { initiator_id: Some(initiator.into()), ..Filter::default() };
    store.query(&location(), &filter, Order::NewestFirst, None, 100_000).unwrap().len()
}

/// On a full disk an append is refused with a clear error (RESOURCE_EXHAUSTED on the wire)
/// and nothing acknowledged is lost, the partial frame is cut; the index cannot follow, and
/// filtered queries read the log instead. Once there is space again, in the same process,
/// appends resume and the index file, closed after its failed write, is opened again and
/// catches up.
#[test]
fn a_full_disk_refuses_the_batch_loses_nothing_and_resumes() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let dir = disk.dir.path().join("data");
    let store = open(&dir);
    store.create_collector(&location(), Timestamp::default()).unwrap();
    // Most of the space taken by something else.
    let filler = disk.dir.path().join("filler");
    std::fs::write(&filler, vec![1_u8; 5 << 20]).unwrap();
    let mut acknowledged = 0;
    let err = loop {
        match store.append(vec![hundred(acknowledged + 1)], Timestamp::default()) {
            Ok(_) => acknowledged += 100,
            Err(err) => break err,
        }
        assert!(acknowledged < 100_000, "the disk never filled");
    };
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    assert_eq!(err.to_string(), "storage full: cannot write the commit log: no space left on device (os error 28)");
    let status = tonic::Status::from(crate::error::Error::Store(err));
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(acknowledged > 0);
    assert_eq!(store.last_seq(&location()).unwrap(), acknowledged);
    // Nothing partial stays behind the last acknowledged frame.
    let end = store.lock_writer().end;
    assert_eq!(std::fs::metadata(log_path(&dir)).unwrap().len(), end);

    // Small steps, so that one of them is durable (see `MAX_LAZY_COMMITS`) and must write.
    let failed = loop {
        match store.index_step(25) {
            Ok(step) => assert!(step.lag > 0, "the whole index fit on the full disk"),
            Err(err) => break err,
        }
    };
    assert!(failed.to_string().to_lowercase().contains("no space left on device"), "{failed}");
    assert_eq!(found(&store, "IBMid-1") as u64, acknowledged, "queries read the log while the index is closed");
    assert_eq!(found(&store, "IBMid-2"), 0);

    std::fs::remove_file(&filler).unwrap();
    append(&store, acknowledged + 1, 10);
    let total = acknowledged + 10;
    while store.index_step(10_000).unwrap().lag > 0 {}
    assert_eq!(store.indexed_seq(&location()).unwrap(), total, "indexing resumed without a restart");
    assert_eq!(found(&store, "IBMid-1") as u64, total);
    assert_eq!(found(&store, "IBMid-2"), 0);
    drop(store);

    let store = open(&dir);
    assert_eq!(store.last_seq(&location()).unwrap(), total);
    assert_eq!(store.index_step(10_000).unwrap().indexed, 0, "the resumed index was kept");
    assert_eq!(found(&store, "IBMid-1") as u64, total);
    let us = location();
    let range = crate::chain::CheckRange { from_seq: 1, to_seq: total };
    let verdict = crate::chain::verify(&store, &us, range, total).unwrap();
    assert!(verdict.ok, "{verdict:?}");
}

/// Returns the positions a query finds.
fn seqs(store: &FileStore, order: Order, after: Option<u64>, limit: usize) -> Vec<u64> {
    let filter = Filter { initiator_id: Some("IBMid-1".into()), ..Filter::default() };
    let page = store.query(&location(), &filter, order, after, limit).unwrap();
    page.iter().map(|record| record.location_seq).collect()
}

/// An index read that fails while a query reads it (redb's "previous I/O error" after a step
/// failed, until the indexer closes the file) does not fail the query: it is answered from
/// the log alone, with the same events in the same order, none twice.
#[test]
fn a_query_whose_index_read_fails_is_answered_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_collector(&location(), Timestamp::default()).unwrap();
    store.append(vec![hundred(1)], Timestamp::default()).unwrap();
    while store.index_step(10_000).unwrap().lag > 0 {}
    // Positions the index has not reached yet.
    append(&store, 101, 10);
    let asked = [
        (Order::NewestFirst, None, 1000),
        (Order::OldestFirst, None, 1000),
        (Order::NewestFirst, Some(90), 25),
        (Order::OldestFirst, Some(20), 25),
    ];
    let expected: Vec<_> = asked.iter().map(|&(order, after, limit)| seqs(&store, order, after, limit)).collect();
    assert_eq!(expected[0], (1..=110).rev().collect::<Vec<_>>());
    assert_eq!(expected[3], (21..=45).collect::<Vec<_>>());
    for fail_after in [0, 30] {
        store.index.faults.fail_index_reads_after(Some(fail_after));
        for (&(order, after, limit), expected) in asked.iter().zip(&expected) {
            assert_eq!(
                &seqs(&store, order, after, limit),
                expected,
                "{order:?} after {after:?}, failing after {fail_after}"
            );
        }
    }
}
