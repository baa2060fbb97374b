//! The Merkle tree of each location as Go-tlog stored hashes: table `hashes/L`, stored index →
//! hash, written in the append's own transaction so that the tree never lags the events. Stores
//! made before the tree existed are backfilled when opened.

use prost::Message as _;
use qtrail_tlog::{Hash, HashReader, append_hashes, leaf_hash, stored_hash_count};
use redb::{Database, Durability, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use tracing::{info, warn};

use super::{EventsDef, events_table_name, missing_is_none};
use crate::store::{Result, StoreError, canonical_of, tree_error};

pub(super) type HashesDef<'a> = TableDefinition<'a, u64, [u8; 32]>;

/// Leaves hashed per transaction of a backfill, which bounds its memory and its transactions.
const BACKFILL_CHUNK: u64 = 16 * 1024;

/// Returns the name of the stored-hashes table of `location`.
pub(super) fn hashes_table_name(location: &str) -> String {
    format!("hashes/{location}")
}

/// A hashes table as a [`HashReader`].
struct TableReader<'t, T>(&'t T);

impl<T: ReadableTable<u64, [u8; 32]>> HashReader for TableReader<'_, T> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, qtrail_tlog::Error> {
        indexes
            .iter()
            .map(|&index| match self.0.get(index) {
                Ok(Some(hash)) => Ok(hash.value()),
                Ok(None) => Err(qtrail_tlog::Error::Storage(format!("stored hash {index} is missing"))),
                Err(err) => Err(qtrail_tlog::Error::Storage(err.to_string())),
            })
            .collect()
    }
}

/// Appends the stored hashes of `leaves` to the tree of `location`, which has `old_size` leaves.
pub(super) fn append_leaves(txn: &WriteTransaction, location: &str, old_size: u64, leaves: &[Hash]) -> Result<()> {
    if leaves.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(HashesDef::new(&hashes_table_name(location)))?;
    // Appending after a tree longer than the events, or not a tree at all, would overwrite
    // stored hashes or leave holes in the tree; it is damage for someone to look at.
    let have = hash_count(&table)?;
    let expected = stored_hash_count(old_size);
    if have != Some(expected) {
        return Err(StoreError::Corrupt(format!(
            "merkle tree of location `{location}` holds {} stored hashes, a tree of {old_size} leaves has {expected}: \
             not appending to it",
            have.map_or_else(|| "more than 2^64".to_owned(), |have| have.to_string())
        )));
    }
    let hashes = append_hashes(old_size, leaves, &TableReader(&table)).map_err(|err| tree_error(location, &err))?;
    for (index, hash) in (stored_hash_count(old_size)..).zip(hashes) {
        table.insert(index, hash)?;
    }
    Ok(())
}

/// Returns how many stored hashes `table` holds, by its last index (`None` when that is the
/// largest index there is, which only damage writes).
///
/// # Errors
/// When the table cannot be read.
fn hash_count(table: &impl ReadableTable<u64, [u8; 32]>) -> Result<Option<u64>> {
    Ok(table.last()?.map_or(Some(0), |(key, _)| key.value().checked_add(1)))
}

/// Reads stored hashes of `location` from the snapshot `txn`.
pub(super) fn read(txn: &ReadTransaction, location: &str, indexes: &[u64]) -> Result<Vec<Hash>> {
    let Some(table) = missing_is_none(txn.open_table(HashesDef::new(&hashes_table_name(location))))? else {
        return Err(StoreError::NoCollector(location.to_owned()));
    };
    TableReader(&table).read_hashes(indexes).map_err(|err| tree_error(location, &err))
}

/// Returns how many leaves a tree of `count` stored hashes has, when `count` is a tree's count.
fn leaves_of(count: u64, max: u64) -> Option<u64> {
    // A tree of n leaves has at least n stored hashes, and no tree has 2^62 leaves: the bound
    // keeps `stored_hash_count` from overflowing on a damaged count.
    let (mut lo, mut hi) = (0, max.min(count).min(1 << 62));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if stored_hash_count(mid) <= count { lo = mid } else { hi = mid - 1 }
    }
    (stored_hash_count(lo) == count).then_some(lo)
}

/// Completes the tree of every location whose events go further than its stored hashes, a
/// chunk per durable transaction (so an interrupted backfill resumes where it stopped).
pub(super) fn backfill(db: &Database, locations: &[String]) -> Result<()> {
    for location in locations {
        let mut logged = false;
        while let Some(done) = backfill_chunk(db, location)? {
            if !logged {
                info!(location = %location, from_leaf = done, "building the merkle tree of events stored before it");
                logged = true;
            }
        }
    }
    Ok(())
}

/// Hashes the next chunk of leaves of `location`; returns the leaves hashed before it, or `None`
/// when the tree is complete.
fn backfill_chunk(db: &Database, location: &str) -> Result<Option<u64>> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let events = txn.open_table(EventsDef::new(&events_table_name(location)))?;
    let last_seq = events.last()?.map_or(0, |(key, _)| key.value());
    let count = hash_count(&txn.open_table(HashesDef::new(&hashes_table_name(location)))?)?;
    // A tree that is not shorter than the events (the usual case), or not a tree at all, is left
    // as it is: a store cut short or damaged is for verification and the checkpointer to
    // report (appends refuse it), not a reason to refuse to start.
    let Some(done) = count.and_then(|count| leaves_of(count, count)) else {
        warn!(location = %location, hashes = ?count, "the stored merkle tree holds no tree's number of hashes");
        return Ok(None);
    };
    if done >= last_seq {
        return Ok(None);
    }
    let end = last_seq.min(done + BACKFILL_CHUNK);
    let mut leaves = Vec::with_capacity((end - done) as usize);
    for seq in done + 1..=end {
        let stored = events.get(seq)?.map(|bytes| bytes.value().to_vec()).unwrap_or_default();
        let canonical = qtrail_proto::qtrail::audit::v1::StoredEvent::decode(stored.as_slice())
            .ok()
            .and_then(|record| canonical_of(&record));
        // A damaged or missing record gets the leaf of what is on disk: the tree then commits to
        // the damage, which verification reports, instead of keeping the collector from starting.
        let leaf = canonical.map_or_else(
            || {
                warn!(location = %location, location_seq = seq, "record does not decode; its leaf covers its stored bytes");
                leaf_hash(&stored)
            },
            |canonical| leaf_hash(&canonical),
        );
        leaves.push(leaf);
    }
    drop(events);
    append_leaves(&txn, location, done, &leaves)?;
    txn.commit()?;
    Ok(Some(done))
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;
    use qtrail_cadf::{Action, Location};
    use qtrail_tlog::{consistency_proof, tree_hash, verify_consistency};

    use super::*;
    use crate::store::embedded::RedbStore;
    use crate::store::{AppendBatch, EventStore, NewEvent, TreeReader, conformance};

    fn open(dir: &std::path::Path) -> RedbStore {
        RedbStore::open(dir, 4 * 1024 * 1024).unwrap()
    }

    fn append(store: &RedbStore, location: &Location, seqs: std::ops::RangeInclusive<u64>) {
        let events = seqs
            .map(|seq| {
                let event = conformance::event(location.as_str(), Action::JobRead, "IBMid-1", "j", 200, seq as i64);
                NewEvent::new(seq, &event)
            })
            .collect();
        let batch = AppendBatch {
            location: location.clone(),
            publisher_id: "p".into(),
            epoch: 1,
            credential: "runtime".into(),
            events,
            rejected_seqs: vec![],
        };
        store.append(vec![batch], Timestamp::default()).unwrap();
    }

    /// Removes the tree of `location`, as in a data dir written before it existed.
    fn drop_tree(dir: &std::path::Path, location: &str) {
        let db = Database::open(dir.join(RedbStore::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(HashesDef::new(&hashes_table_name(location))).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_store_without_a_tree_is_backfilled_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let location: Location = "us-east".parse().unwrap();
        let store = open(dir.path());
        store.create_collector(&location, Timestamp::default()).unwrap();
        append(&store, &location, 1..=(BACKFILL_CHUNK + 300));
        let size = store.tree_size(&location).unwrap();
        let root = tree_hash(size, &TreeReader { store: &store, location: &location }).unwrap();
        drop(store);
        drop_tree(dir.path(), "us-east");

        let store = open(dir.path());
        let reader = TreeReader { store: &store, location: &location };
        assert_eq!(tree_hash(size, &reader).unwrap(), root);
        // Appends continue the backfilled tree, which stays consistent with its old head.
        append(&store, &location, size + 1..=size + 5);
        let proof = consistency_proof(size, size + 5, &reader).unwrap();
        let new_root = tree_hash(size + 5, &reader).unwrap();
        assert_eq!(verify_consistency(size, size + 5, &root, &new_root, &proof), Ok(()));
    }

    #[test]
    fn a_damaged_record_does_not_stop_a_backfill() {
        let dir = tempfile::tempdir().unwrap();
        let location: Location = "us-east".parse().unwrap();
        let store = open(dir.path());
        store.create_collector(&location, Timestamp::default()).unwrap();
        append(&store, &location, 1..=10);
        drop(store);
        drop_tree(dir.path(), "us-east");
        {
            let db = Database::open(dir.path().join(RedbStore::FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(EventsDef::new(&events_table_name("us-east")))
                .unwrap()
                .insert(4, [0xff; 8].as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.read_hashes(&location, &[stored_hash_count(3)]).unwrap(), [leaf_hash(&[0xff; 8])]);
        assert_eq!(store.read_hashes(&location, &(0..stored_hash_count(10)).collect::<Vec<_>>()).unwrap().len(), 18);
    }

    #[test]
    fn leaf_counts_are_found_from_hash_counts() {
        for n in 0..600 {
            assert_eq!(leaves_of(stored_hash_count(n), 1000), Some(n));
        }
        assert_eq!(leaves_of(2, 1000), None);
        assert_eq!(leaves_of(stored_hash_count(20), 10), None);
        // A damaged count near the top of u64 neither overflows nor searches without bound.
        assert_eq!(leaves_of(u64::MAX, u64::MAX), None);
        assert_eq!(leaves_of(u64::MAX - 1, u64::MAX), None);
    }

    /// Writes `hash` at stored index `index` of `location`'s tree.
    fn set_hash(dir: &std::path::Path, location: &str, index: u64, hash: Hash) {
        let db = Database::open(dir.join(RedbStore::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(HashesDef::new(&hashes_table_name(location))).unwrap().insert(index, hash).unwrap();
        txn.commit().unwrap();
    }

    /// A tree longer than the events, or with its last index at the top of u64, is refused as
    /// corrupt rather than overwritten or extended with a hole; the store still opens.
    #[test]
    fn appends_refuse_a_tree_that_does_not_fit_the_events() {
        for index in [stored_hash_count(10) + 3, u64::MAX] {
            let dir = tempfile::tempdir().unwrap();
            let location: Location = "us-east".parse().unwrap();
            let store = open(dir.path());
            store.create_collector(&location, Timestamp::default()).unwrap();
            append(&store, &location, 1..=10);
            drop(store);
            set_hash(dir.path(), "us-east", index, [7; 32]);
            let store = open(dir.path());
            let batch = AppendBatch {
                location: location.clone(),
                publisher_id: "p".into(),
                epoch: 1,
                credential: "runtime".into(),
                events: vec![NewEvent::new(
                    11,
                    &conformance::event("us-east", Action::JobRead, "IBMid-1", "j", 200, 11),
                )],
                rejected_seqs: vec![],
            };
            let err = store.append(vec![batch], Timestamp::default()).unwrap_err();
            assert!(matches!(&err, StoreError::Corrupt(detail) if detail.contains("not appending")), "{err}");
            assert_eq!(store.read_hashes(&location, &[index]).unwrap(), [[7; 32]], "nothing overwritten");
        }
    }
}
