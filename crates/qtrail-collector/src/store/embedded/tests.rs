//! Tests of the redb backend beyond the conformance suite: its own formats and limits.

use super::*;
use crate::store::{NewEvent, conformance};

fn open(dir: &Path) -> RedbStore {
    RedbStore::open(dir, 4 * 1024 * 1024).unwrap()
}

#[test]
fn conformance_suite() {
    conformance::run_all(&|dir: &Path| -> Box<dyn EventStore> { Box::new(open(dir)) });
}

/// Buckets of 4 positions, so that queries cross many buckets.
#[test]
fn conformance_suite_with_tiny_index_buckets() {
    conformance::run_all(&|dir: &Path| -> Box<dyn EventStore> {
        Box::new(RedbStore::open_with_bucket_bits(dir, 4 * 1024 * 1024, 2).unwrap())
    });
}

#[test]
fn a_store_keeps_its_bucket_width() {
    let dir = tempfile::tempdir().unwrap();
    drop(RedbStore::open_with_bucket_bits(dir.path(), 1024 * 1024, 3).unwrap());
    assert_eq!(RedbStore::open(dir.path(), 1024 * 1024).unwrap().index.bucket_bits, 3);
}

/// Stores `count` events in `location` and indexes them.
fn load_indexed(store: &RedbStore, location: &str, count: u64) {
    let location: Location = location.parse().unwrap();
    store.create_collector(&location, Timestamp::default()).unwrap();
    let events = (1..=count)
        .map(|seq| {
            let event = conformance::event(location.as_str(), qtrail_cadf::Action::JobRead, "IBMid-1", "j", 200, 0);
            NewEvent::new(seq, &event)
        })
        .collect();
    let batch = AppendBatch {
        location,
        publisher_id: "p".into(),
        epoch: 1,
        credential: "runtime".into(),
        events,
        rejected_seqs: vec![],
    };
    store.append(vec![batch], Timestamp::default()).unwrap();
    while store.index_step(1000).unwrap().lag > 0 {}
}

fn initiator_count(store: &RedbStore, location: &str) -> usize {
    let filter = Filter { initiator_id: Some("IBMid-1".into()), ..Filter::default() };
    store.query(&location.parse().unwrap(), &filter, Order::NewestFirst, None, 1000).unwrap().len()
}

#[test]
fn a_lost_index_file_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    load_indexed(&store, "us-east", 30);
    drop(store);
    std::fs::remove_file(dir.path().join(RedbStore::INDEX_FILE_NAME)).unwrap();
    let store = open(dir.path());
    let location: Location = "us-east".parse().unwrap();
    assert_eq!(store.indexed_seq(&location).unwrap(), 0);
    assert_eq!(initiator_count(&store, "us-east"), 30);
    assert_eq!(store.index_step(1000).unwrap(), IndexStep { indexed: 30, lag: 0 });
    assert_eq!(initiator_count(&store, "us-east"), 30);
}

/// A chain file restored from elsewhere holds other records at the indexed positions: the
/// index of that location is dropped and rebuilt, the others are kept.
#[test]
fn an_index_that_no_longer_fits_the_chain_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    load_indexed(&store, "us-east", 30);
    load_indexed(&store, "eu-de", 5);
    drop(store);
    {
        let db = Database::open(dir.path().join(RedbStore::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn.open_table(EventsDef::new(&events_table_name("us-east"))).unwrap();
            let mut record = proto::StoredEvent::decode(events.get(30).unwrap().unwrap().value()).unwrap();
            record.chain_hash = vec![9; 32];
            events.insert(30, record.encode_to_vec().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.indexed_seq(&"us-east".parse().unwrap()).unwrap(), 0);
    assert_eq!(store.indexed_seq(&"eu-de".parse().unwrap()).unwrap(), 5);
    assert_eq!(initiator_count(&store, "us-east"), 30);
    assert_eq!(store.index_step(1000).unwrap(), IndexStep { indexed: 30, lag: 0 });
    assert_eq!(initiator_count(&store, "us-east"), 30);
}

/// A record that no longer decodes (damaged on disk) is found by no filter whether it is
/// indexed yet or not, and a mark on it survives a reopen instead of forcing a rebuild.
#[test]
fn an_undecodable_record_is_left_out_alike_at_any_lag() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    load_indexed(&store, "us-east", 30);
    drop(store);
    std::fs::remove_file(dir.path().join(RedbStore::INDEX_FILE_NAME)).unwrap();
    {
        let db = Database::open(dir.path().join(RedbStore::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(EventsDef::new(&events_table_name("us-east")))
            .unwrap()
            .insert(30, [0xff; 8].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let store = open(dir.path());
    let location: Location = "us-east".parse().unwrap();
    assert_eq!(initiator_count(&store, "us-east"), 29, "unindexed");
    assert_eq!(store.index_step(1000).unwrap(), IndexStep { indexed: 30, lag: 0 });
    assert_eq!(initiator_count(&store, "us-east"), 29, "indexed");
    drop(store);
    assert_eq!(open(dir.path()).indexed_seq(&location).unwrap(), 30, "the mark is kept");
}

/// An index file that is not a database any more (overwritten, truncated) is set aside and
/// rebuilt; the collector starts and answers queries in full.
#[test]
fn an_unreadable_index_file_is_set_aside_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    load_indexed(&store, "us-east", 30);
    drop(store);
    let path = dir.path().join(RedbStore::INDEX_FILE_NAME);
    // Longer than redb's header, so that it reads as a file with a wrong magic number.
    let garbage = vec![0xab_u8; 16 * 1024];
    std::fs::write(&path, &garbage).unwrap();
    let store = open(dir.path());
    assert_eq!(store.indexed_seq(&"us-east".parse().unwrap()).unwrap(), 0);
    assert_eq!(initiator_count(&store, "us-east"), 30);
    assert_eq!(store.index_step(1000).unwrap(), IndexStep { indexed: 30, lag: 0 });
    assert_eq!(initiator_count(&store, "us-east"), 30);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(&format!("{}.unreadable-", RedbStore::INDEX_FILE_NAME)))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(dir.path().join(&aside[0])).unwrap(), garbage);
}

/// An index file of an older layout is rebuilt, not read with the new one's rules.
#[test]
fn an_index_file_of_another_layout_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    load_indexed(&store, "us-east", 30);
    drop(store);
    {
        let db = Database::open(dir.path().join(RedbStore::INDEX_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<&str, u64>::new("meta")).unwrap().insert("index_format", 1).unwrap();
        txn.commit().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.indexed_seq(&"us-east".parse().unwrap()).unwrap(), 0);
    assert_eq!(initiator_count(&store, "us-east"), 30);
    assert_eq!(store.index_step(1000).unwrap(), IndexStep { indexed: 30, lag: 0 });
    drop(store);
    assert_eq!(open(dir.path()).indexed_seq(&"us-east".parse().unwrap()).unwrap(), 30, "the new layout stays");
}

#[test]
fn the_indexes_of_the_old_layout_leave_the_chain_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::create(dir.path().join(RedbStore::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<&str, u64>::new("meta")).unwrap().insert("index_bucket_bits", 16).unwrap();
        txn.open_table(TableDefinition::<(i64, u64), ()>::new("time/us-east")).unwrap();
        txn.open_table(TableDefinition::<u64, u64>::new("index/us-east")).unwrap();
        txn.open_table(EventsDef::new(&events_table_name("us-east"))).unwrap();
        txn.commit().unwrap();
    }
    drop(open(dir.path()));
    let db = Database::open(dir.path().join(RedbStore::FILE_NAME)).unwrap();
    let txn = db.begin_read().unwrap();
    let mut tables: Vec<String> = txn.list_tables().unwrap().map(|table| table.name().to_owned()).collect();
    tables.sort();
    assert_eq!(tables, ["collectors", "events/us-east", "publishers"]);
}

#[test]
fn backend_errors_read_like_ours() {
    assert_eq!(
        error_text(&"Database already open. Cannot acquire lock."),
        "database already open. Cannot acquire lock"
    );
    let dir = tempfile::tempdir().unwrap();
    let _open = open(dir.path());
    let second = RedbStore::open(dir.path(), 1024 * 1024).unwrap_err().to_string();
    assert!(second.starts_with("storage failure: "), "{second}");
    assert!(!second.ends_with('.'), "{second}");
}
