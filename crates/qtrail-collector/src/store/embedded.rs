//! The embedded backend: two redb files. The chain file (`collector.redb`) is written with
//! immediate durability (fsync), so that an acknowledged batch survives a crash; the index file
//! (`index.redb`, see [`super::index`]) holds the query indexes, which follow the chain through
//! [`EventStore::index_step`].
//!
//! # Layout of the chain file
//!
//! Shared tables:
//! - `collectors`: location → protobuf `Collector` (creation time, event count, head hash);
//! - `publishers`: (location, publisher id) → protobuf `PublisherState`.
//!
//! Tables of each location `L`, created with its collector:
//! - `events/L`: `location_seq` (u64) → protobuf `StoredEvent` without `location` and
//!   `location_seq`, which the key and table name give;
//! - `ids/L`: event id (u128) → `location_seq`, for deduplication;
//! - `hashes/L`: stored index (u64) → SHA-256, the location's Merkle tree as Go-tlog stored
//!   hashes (see [`hashes`]), appended with the events;
//! - `checkpoints/L`: checkpoint number → protobuf `Checkpoint`, the signed checkpoints (created
//!   with the first).
//!
//! That is all an append writes, per event: the record, its id entry and its stored hashes (two
//! on average). Stores made before the
//! index file existed kept `time/L`, `index/L` and `meta` here; opening drops them.
//!
//! # Queries
//!
//! A query reads the index file's snapshot first, then the chain's: every position the index
//! counts as indexed is then in the chain's snapshot. Positions up to a location's index mark
//! are found through the indexes; positions after it, which the indexer has not reached yet, are
//! read one by one and filtered with the same rule ([`Filter::matches`]). So a query sees every
//! event committed before it began, however far behind the indexer is.

mod chain;
mod expiry;
mod hashes;

use std::path::{Path, PathBuf};

use prost::Message as _;
use prost_types::Timestamp;
use qtrail_cadf::{ChainHash, Location, chain_hash_of_bytes};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{Hash, leaf_hash};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle as _,
    WriteTransaction,
};
use uuid::Uuid;

use chain::{RedbChain, RedbChains};

use super::index::{self, Index, missing_is_none};

use super::expiry::PruneOutcome;
use super::record::RecordOrigin;
use super::{
    AppendBatch, AppendOutcome, Appended, CheckpointEntry, EventStore, IndexStep, Result, StoreError, StoredBytes,
    canonical_of, error_text, publisher, record,
};
use crate::filter::{Filter, Order};

const COLLECTORS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("collectors");
const PUBLISHERS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("publishers");

/// Index bucket width of new index files: 65536 positions per bucket.
pub const DEFAULT_BUCKET_BITS: u32 = 16;

/// Returns the name of the events table of `location` (see the module docs for its types).
pub fn events_table_name(location: &str) -> String {
    format!("events/{location}")
}

fn ids_table_name(location: &str) -> String {
    format!("ids/{location}")
}

fn checkpoints_table_name(location: &str) -> String {
    format!("checkpoints/{location}")
}

/// Returns whether a table of the chain file belongs to the layout before the index file.
fn is_legacy_table(name: &str) -> bool {
    name == "meta" || name.starts_with("time/") || name.starts_with("index/")
}

type EventsDef<'a> = TableDefinition<'a, u64, &'static [u8]>;
type IdsDef<'a> = TableDefinition<'a, u128, u64>;
type CheckpointsDef<'a> = TableDefinition<'a, u64, &'static [u8]>;

/// The redb-backed [`EventStore`].
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    index: Index,
    /// The data directory, for the size of the files.
    dir: PathBuf,
}

macro_rules! backend_errors {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(err: $error) -> Self {
                StoreError::Backend(error_text(&err))
            }
        }
    )*};
}

backend_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl RedbStore {
    /// File name of the chain file inside the data directory.
    pub const FILE_NAME: &'static str = "collector.redb";

    /// File name of the index file inside the data directory.
    pub const INDEX_FILE_NAME: &'static str = index::FILE_NAME;

    /// Opens (or creates) the store in `data_dir`, with a page cache of `cache_bytes` shared
    /// between its two files.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the directory or a file cannot be created or opened, for
    /// instance because another process holds it.
    pub fn open(data_dir: &Path, cache_bytes: usize) -> Result<Self> {
        Self::open_with_bucket_bits(data_dir, cache_bytes, DEFAULT_BUCKET_BITS)
    }

    /// Opens (or creates) the store; a new index file gets buckets of `2^bucket_bits`
    /// positions, an existing one keeps the width it was created with. Small widths let tests
    /// cover many buckets with few events.
    ///
    /// # Errors
    /// As [`RedbStore::open`].
    pub fn open_with_bucket_bits(data_dir: &Path, cache_bytes: usize, bucket_bits: u32) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|err| StoreError::Backend(format!("cannot create data dir {}: {err}", data_dir.display())))?;
        let db = Database::builder().set_cache_size(cache_bytes / 2).create(data_dir.join(Self::FILE_NAME))?;
        let txn = db.begin_write()?;
        {
            txn.open_table(COLLECTORS)?;
            txn.open_table(PUBLISHERS)?;
        }
        let legacy: Vec<_> = txn.list_tables()?.filter(|table| is_legacy_table(table.name())).collect();
        for table in legacy {
            txn.delete_table(table)?;
        }
        txn.commit()?;
        hashes::backfill(&db, &Self::locations(&db.begin_read()?)?)?;
        let index = Index::open(data_dir, cache_bytes - cache_bytes / 2, bucket_bits, &RedbChains(&db.begin_read()?))?;
        Ok(Self { db, index, dir: data_dir.to_owned() })
    }

    fn begin_durable_write(&self) -> Result<WriteTransaction> {
        let mut txn = self.db.begin_write()?;
        // Immediate durability: commit returns only after fsync, so an Ack follows the disk.
        txn.set_durability(Durability::Immediate)?;
        Ok(txn)
    }

    /// Returns the locations that have a collector, from the chain's snapshot `txn`.
    fn locations(txn: &ReadTransaction) -> Result<Vec<String>> {
        let table = txn.open_table(COLLECTORS)?;
        let mut locations = Vec::new();
        for entry in table.iter()? {
            locations.push(entry?.0.value().to_owned());
        }
        Ok(locations)
    }
}

fn decode<M: prost::Message + Default>(what: &str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|err| StoreError::Corrupt(format!("{what} does not decode: {err}")))
}

fn read_collector(txn: &ReadTransaction, location: &str) -> Result<Option<proto::Collector>> {
    let table = txn.open_table(COLLECTORS)?;
    let Some(bytes) = table.get(location)? else {
        return Ok(None);
    };
    decode(&format!("collector `{location}`"), bytes.value()).map(Some)
}

/// Returns the decoded record at `seq` with its position filled in.
fn load(
    table: &impl ReadableTable<u64, &'static [u8]>,
    location: &Location,
    seq: u64,
) -> Result<Option<proto::StoredEvent>> {
    let Some(bytes) = table.get(seq)? else {
        return Ok(None);
    };
    let mut record: proto::StoredEvent =
        decode(&format!("record at location_seq {seq} of location `{location}`"), bytes.value())?;
    record.location = location.to_string();
    record.location_seq = seq;
    Ok(Some(record))
}

impl EventStore for RedbStore {
    fn create_collector(&self, location: &Location, create_time: Timestamp) -> Result<proto::Collector> {
        let txn = self.begin_durable_write()?;
        let collector = {
            let mut collectors = txn.open_table(COLLECTORS)?;
            if collectors.get(location.as_str())?.is_some() {
                return Err(StoreError::CollectorExists(location.to_string()));
            }
            let collector = proto::Collector {
                location: location.to_string(),
                create_time: Some(create_time),
                event_count: 0,
                head_chain_hash: Vec::new(),
            };
            collectors.insert(location.as_str(), collector.encode_to_vec().as_slice())?;
            let loc = location.as_str();
            txn.open_table(EventsDef::new(&events_table_name(loc)))?;
            txn.open_table(IdsDef::new(&ids_table_name(loc)))?;
            txn.open_table(hashes::HashesDef::new(&hashes::hashes_table_name(loc)))?;
            collector
        };
        txn.commit()?;
        Ok(collector)
    }

    fn file_bytes(&self) -> Option<u64> {
        let size = |name: &str| std::fs::metadata(self.dir.join(name)).ok().map(|metadata| metadata.len());
        Some(size(Self::FILE_NAME)? + size(Self::INDEX_FILE_NAME)?)
    }

    fn collector(&self, location: &Location) -> Result<Option<proto::Collector>> {
        read_collector(&self.db.begin_read()?, location.as_str())
    }

    fn collectors(&self) -> Result<Vec<proto::Collector>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(COLLECTORS)?;
        let mut collectors = Vec::new();
        // Keys are location names, so the table's order is the order by location.
        for entry in table.iter()? {
            let (key, value) = entry?;
            collectors.push(decode(&format!("collector `{}`", key.value()), value.value())?);
        }
        Ok(collectors)
    }

    fn append(&self, batches: Vec<AppendBatch>, receive_time: Timestamp) -> Result<Vec<AppendOutcome>> {
        let txn = self.begin_durable_write()?;
        let outcomes = publisher::add_in_order(batches, |batch| append_batch(&txn, batch, receive_time))?;
        txn.commit()?;
        Ok(outcomes)
    }

    fn index_step(&self, limit: u64) -> Result<IndexStep> {
        let chain = self.db.begin_read()?;
        let locations = Self::locations(&chain)?;
        self.index.step(&RedbChains(&chain), &locations, limit)
    }

    fn indexed_seq(&self, location: &Location) -> Result<u64> {
        Index::indexed_seq(&self.index.begin_read()?, location.as_str())
    }

    fn publisher(&self, location: &Location, publisher_id: &str) -> Result<Option<proto::PublisherState>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PUBLISHERS)?;
        let Some(bytes) = table.get((location.as_str(), publisher_id))? else {
            return Ok(None);
        };
        decode(&format!("publisher `{publisher_id}`"), bytes.value()).map(Some)
    }

    fn publishers(&self, location: &Location, after: Option<&str>, limit: usize) -> Result<Vec<proto::PublisherState>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PUBLISHERS)?;
        let loc = location.as_str();
        let mut publishers = Vec::new();
        for entry in table.range((loc, after.unwrap_or(""))..)? {
            if publishers.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let (key_location, publisher_id) = key.value();
            if key_location != loc {
                break;
            }
            if Some(publisher_id) == after {
                continue;
            }
            publishers.push(decode(&format!("publisher `{publisher_id}`"), value.value())?);
        }
        Ok(publishers)
    }

    fn stored_bytes(&self, location: &Location, from_seq: u64, limit: usize) -> Result<Vec<StoredBytes>> {
        let txn = self.db.begin_read()?;
        let Some(table) = missing_is_none(txn.open_table(EventsDef::new(&events_table_name(location.as_str()))))?
        else {
            return Ok(Vec::new());
        };
        let mut records = Vec::new();
        for entry in table.range(from_seq..)?.take(limit) {
            let (key, value) = entry?;
            records.push(StoredBytes { location_seq: key.value(), bytes: value.value().to_vec() });
        }
        Ok(records)
    }

    fn last_seq(&self, location: &Location) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let Some(table) = missing_is_none(txn.open_table(EventsDef::new(&events_table_name(location.as_str()))))?
        else {
            return Ok(0);
        };
        let newest = table.last()?.map_or(0, |(key, _)| key.value());
        // A prune may have removed the newest records; the collector row still counts them.
        let counted = read_collector(&txn, location.as_str())?.map_or(0, |collector| collector.event_count);
        Ok(newest.max(counted))
    }

    fn prune(
        &self,
        location: &Location,
        through_seq: u64,
        keep: &dyn Fn(&proto::StoredEvent) -> bool,
    ) -> Result<PruneOutcome> {
        let last = match self.collector(location)? {
            Some(collector) => collector.event_count,
            None => return Err(StoreError::NoCollector(location.to_string())),
        };
        let txn = self.begin_durable_write()?;
        let outcome = expiry::prune(&txn, location, through_seq, last, keep)?;
        txn.commit()?;
        Ok(outcome)
    }

    fn pruned_through(&self, location: &Location) -> Result<u64> {
        Ok(expiry::read(&self.db.begin_read()?)?.pruned_through(location.as_str()))
    }

    fn retention(&self, location: &Location) -> Result<proto::RetentionPolicy> {
        Ok(expiry::read(&self.db.begin_read()?)?.retention(location.as_str()))
    }

    fn set_retention(&self, policy: &proto::RetentionPolicy) -> Result<()> {
        let txn = self.begin_durable_write()?;
        expiry::change(&txn, |record| {
            record.set_retention(policy);
            Ok(())
        })?;
        Ok(txn.commit()?)
    }

    fn holds(&self) -> Result<Vec<proto::LegalHold>> {
        Ok(expiry::read(&self.db.begin_read()?)?.holds)
    }

    fn set_hold(&self, hold: &proto::LegalHold, on: bool) -> Result<()> {
        let txn = self.begin_durable_write()?;
        expiry::change(&txn, |record| record.set_hold(hold, on))?;
        Ok(txn.commit()?)
    }

    fn read_hashes(&self, location: &Location, indexes: &[u64]) -> Result<Vec<Hash>> {
        hashes::read(&self.db.begin_read()?, location.as_str(), indexes)
    }

    fn seq_of_event_id(&self, location: &Location, id: Uuid) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        let Some(ids) = missing_is_none(txn.open_table(IdsDef::new(&ids_table_name(location.as_str()))))? else {
            return Ok(None);
        };
        Ok(ids.get(id.as_u128())?.map(|seq| seq.value()))
    }

    fn seq_of_chain_hash(&self, location: &Location, hash: &ChainHash) -> Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        let Some(table) = missing_is_none(txn.open_table(EventsDef::new(&events_table_name(location.as_str()))))?
        else {
            return Ok(None);
        };
        for entry in table.iter()? {
            let (key, value) = entry?;
            let Ok(record) = proto::StoredEvent::decode(value.value()) else {
                continue;
            };
            if record.chain_hash == hash.as_bytes() {
                return Ok(Some(key.value()));
            }
        }
        Ok(None)
    }

    fn add_checkpoint(&self, checkpoint: &proto::Checkpoint) -> Result<()> {
        let loc = checkpoint.location.as_str();
        let txn = self.begin_durable_write()?;
        {
            if txn.open_table(COLLECTORS)?.get(loc)?.is_none() {
                return Err(StoreError::NoCollector(loc.to_owned()));
            }
            let mut table = txn.open_table(CheckpointsDef::new(&checkpoints_table_name(loc)))?;
            let newest = table.last()?.map_or(0, |(number, _)| number.value());
            if checkpoint.number != newest + 1 {
                return Err(StoreError::Backend(format!(
                    "checkpoint {} of location `{loc}` does not follow checkpoint {newest}",
                    checkpoint.number
                )));
            }
            table.insert(checkpoint.number, checkpoint.encode_to_vec().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn checkpoints(&self, location: &Location, before: Option<u64>, limit: usize) -> Result<Vec<CheckpointEntry>> {
        let txn = self.db.begin_read()?;
        let name = checkpoints_table_name(location.as_str());
        let Some(table) = missing_is_none(txn.open_table(CheckpointsDef::new(&name)))? else {
            return Ok(Vec::new());
        };
        let mut checkpoints = Vec::new();
        for entry in table.range(..before.unwrap_or(u64::MAX))?.rev().take(limit) {
            let (number, bytes) = entry?;
            checkpoints.push(CheckpointEntry::read(location, number.value(), bytes.value()));
        }
        Ok(checkpoints)
    }

    fn query(
        &self,
        location: &Location,
        filter: &Filter,
        order: Order,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<proto::StoredEvent>> {
        // The index's snapshot first (see the module docs).
        let index_txn = self.index.begin_read()?;
        let txn = self.db.begin_read()?;
        let Some(events) = missing_is_none(txn.open_table(EventsDef::new(&events_table_name(location.as_str()))))?
        else {
            return Ok(Vec::new());
        };
        let chain = RedbChain(events);
        let query = index::Query { location, filter, order, after, limit };
        self.index.matching(&index_txn, &chain, &query, |seq| {
            Ok(load(&chain.0, location, seq)?.filter(|record| filter.matches(record)))
        })
    }
}

/// Stores one batch inside the group's transaction: the records, their ids and the publisher
/// state, which is what the delivery guarantees need; the indexes follow later.
fn append_batch(txn: &WriteTransaction, batch: AppendBatch, receive_time: Timestamp) -> Result<AppendOutcome> {
    let loc = batch.location.as_str();
    let mut collectors = txn.open_table(COLLECTORS)?;
    let mut collector: proto::Collector = match collectors.get(loc)? {
        Some(bytes) => decode(&format!("collector `{loc}`"), bytes.value())?,
        None => return Err(StoreError::NoCollector(loc.to_owned())),
    };
    let mut publishers = txn.open_table(PUBLISHERS)?;
    // Protobuf, so a state stored before a field existed (the rejected count and ranges) reads
    // with that field empty.
    let mut state = match publishers.get((loc, batch.publisher_id.as_str()))? {
        Some(bytes) => decode(&format!("publisher `{}`", batch.publisher_id), bytes.value())?,
        None => publisher::new_state(&batch.publisher_id, batch.epoch),
    };
    // Checked here, in the writer's transaction, where two streams racing for a new id meet.
    if let Some(refused) = publisher::admit(&mut state, &batch, receive_time) {
        return Ok(refused);
    }

    let mut events = txn.open_table(EventsDef::new(&events_table_name(loc)))?;
    let mut ids = txn.open_table(IdsDef::new(&ids_table_name(loc)))?;

    let mut prev = ChainHash::from_slice(&collector.head_chain_hash).unwrap_or(ChainHash::GENESIS);
    let tree_size = collector.event_count;
    let mut next_seq = tree_size + 1;
    let mut leaves = Vec::with_capacity(batch.events.len());
    let origin = RecordOrigin {
        publisher_id: &batch.publisher_id,
        epoch: batch.epoch,
        credential: &batch.credential,
        receive_time,
    };
    let mut outcome = AppendOutcome::default();
    let mut bytes = Vec::new();
    for new in batch.events {
        let id = new.id.as_u128();
        // One lookup for new ids (the usual case): insert, and put back what a duplicate displaced.
        let existing = ids.insert(id, next_seq)?.map(|seq| seq.value());
        if let Some(existing) = existing {
            ids.insert(id, existing)?;
            let stored = load(&events, &batch.location, existing)?;
            let same = stored.as_ref().and_then(canonical_of).is_some_and(|canonical| canonical == new.canonical);
            record::settle_known_id(&mut outcome, &mut state, batch.epoch, &new, existing, same);
            continue;
        }
        let hash = chain_hash_of_bytes(&prev, &new.canonical);
        let location_seq = next_seq;
        // Stored without its location and position, which the table's name and key hold.
        let mut record = origin.record(new.seq, &prev, &hash);
        bytes.clear();
        record::encode_stored(&new.encoded, &record, &mut bytes)?;
        events.insert(location_seq, bytes.as_slice())?;
        leaves.push(leaf_hash(&new.canonical));
        publisher::record_stored(&mut state, batch.epoch, new.seq);
        record.location = loc.to_owned();
        record.location_seq = location_seq;
        outcome.positions.push(record::acked(&new, location_seq));
        outcome.stored.push(Appended { record, event: new.encoded });
        outcome.accepted += 1;
        prev = hash;
        next_seq += 1;
    }
    hashes::append_leaves(txn, loc, tree_size, &leaves)?;
    collector.event_count = next_seq - 1;
    if collector.event_count > 0 {
        collector.head_chain_hash = prev.as_bytes().to_vec();
    }
    collectors.insert(loc, collector.encode_to_vec().as_slice())?;
    publishers.insert((loc, batch.publisher_id.as_str()), state.encode_to_vec().as_slice())?;
    Ok(outcome)
}

#[cfg(test)]
mod tests;
