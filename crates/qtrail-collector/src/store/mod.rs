//! Durable storage of collectors, events and publisher state, behind [`EventStore`].
//!
//! A backend keeps, per location: the collector row (creation time, event count, head chain
//! hash); the chain of [`proto::StoredEvent`] records at dense positions (`location_seq`) from 1;
//! an event-id index for deduplication; indexes for the query filters; and the state of each
//! publisher (epoch, highest stored seq, gaps). [`EventStore::append`] stores several batches,
//! possibly of several locations and streams, in one atomic and durable transaction: the unit of
//! group commit. Every backend must pass the conformance suite in `conformance`.
//!
//! The query indexes may follow the chain rather than be written with it:
//! [`EventStore::index_step`] brings them forward, and [`EventStore::query`] must return what a
//! scan of the chain would, however far behind they are.
//!
//! Records are exchanged as protobuf messages ([`proto::StoredEvent`], [`proto::Collector`],
//! [`proto::PublisherState`]) because those are exactly what the collector serves.

pub mod embedded;
pub(crate) mod expiry;
pub mod file;
pub(crate) mod index;
pub mod migrate;
pub mod postgres;
pub mod publisher;
pub(crate) mod record;

#[cfg(test)]
pub(crate) mod conformance;

use prost_types::Timestamp;
use qtrail_cadf::{AuditEvent, ChainHash, Location, ValidEvent, canonical_bytes};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{Hash, HashReader};
use uuid::Uuid;

use crate::filter::{Filter, Order};

pub use embedded::RedbStore;
pub use expiry::PruneOutcome;
pub use file::FileStore;
pub use postgres::PgStore;

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A collector for the location exists already.
    #[error("a collector for location `{0}` already exists")]
    CollectorExists(String),
    /// The location has no collector.
    #[error("no collector for location `{0}`")]
    NoCollector(String),
    /// Stored data cannot be read back.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The backend failed (I/O, transaction, commit); the operation had no effect.
    #[error("storage failure: {0}")]
    Backend(String),
    /// The file system is full (or the quota used up); the operation had no effect, and the
    /// same operation succeeds once there is room again.
    #[error("storage full: {0}")]
    Full(String),
    /// This backend does not do what was asked (the PostgreSQL store keeps every event: no
    /// retention, holds or pruning yet); retrying cannot help.
    #[error("not supported by this store: {0}")]
    Unsupported(String),
}

impl StoreError {
    /// A failed file operation: `what` was being done (lowercase, e.g. "cannot read the commit
    /// log"), `err` is why.
    pub(crate) fn io(what: &str, err: &std::io::Error) -> Self {
        let text = format!("{what}: {}", error_text(err));
        if is_full(err) { Self::Full(text) } else { Self::Backend(text) }
    }
}

/// Returns whether `err` says the file system (or the user's quota) has no room left.
pub(crate) fn is_full(err: &std::io::Error) -> bool {
    matches!(err.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

/// Returns an error's message in our style: lowercase start, no trailing period (redb and the
/// operating system write them capitalised, some with a period).
pub(crate) fn error_text(err: &dyn std::fmt::Display) -> String {
    let text = err.to_string();
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A validated event ready to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Position in the publisher's (id, epoch) sequence.
    pub seq: u64,
    /// The event id, the deduplication key.
    pub id: Uuid,
    /// Canonical bytes of the event, which the chain hash covers.
    pub canonical: Vec<u8>,
    /// The event in wire form, protobuf-encoded, as it will be served: made with the rest before
    /// the single writer, which then only copies it.
    pub encoded: Vec<u8>,
}

impl NewEvent {
    /// Returns the storable form of an event validated with its canonical bytes, at publisher
    /// position `seq`.
    pub fn from_valid(seq: u64, valid: ValidEvent) -> Self {
        let (event, canonical) = valid.into_parts();
        Self { seq, id: event.id, canonical, encoded: event.encode_proto() }
    }

    /// Returns the storable form of a validated event at publisher position `seq`.
    pub fn new(seq: u64, event: &AuditEvent) -> Self {
        Self { seq, id: event.id, canonical: canonical_bytes(event), encoded: event.encode_proto() }
    }
}

/// A record as an append stored it. Its event stays encoded: only tails read it, and decoding
/// it is theirs to do.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The record without its event, with `location` and `location_seq` set.
    pub record: proto::StoredEvent,
    /// The event, protobuf-encoded.
    pub event: Vec<u8>,
}

impl Appended {
    /// Returns the record with its event.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the event does not decode.
    pub fn decode(&self) -> Result<proto::StoredEvent> {
        let event = prost::Message::decode(self.event.as_slice()).map_err(|err| {
            StoreError::Corrupt(format!(
                "appended event at location_seq {} does not decode: {err}",
                self.record.location_seq
            ))
        })?;
        Ok(proto::StoredEvent { event: Some(event), ..self.record.clone() })
    }
}

/// A stored checkpoint as read back, under the number it is stored at.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointEntry {
    /// The number it is stored at.
    pub number: u64,
    /// The checkpoint, or what is wrong with the entry: damaged evidence is reported, not
    /// skipped, and does not hide the intact entries around it.
    pub checkpoint: std::result::Result<proto::Checkpoint, String>,
}

impl CheckpointEntry {
    /// Reads the checkpoint stored as `bytes` at `number` of `location`.
    pub fn read(location: &Location, number: u64, bytes: &[u8]) -> Self {
        let what = format!("checkpoint {number} of location `{location}`");
        let checkpoint = match <proto::Checkpoint as prost::Message>::decode(bytes) {
            // An entry copied from another location, or moved to another number, is not what it
            // claims to be, however good its signature.
            Ok(checkpoint) if checkpoint.location != location.as_str() || checkpoint.number != number => {
                Err(format!("{what} holds checkpoint {} of location `{}`", checkpoint.number, checkpoint.location))
            }
            Ok(checkpoint) => Ok(checkpoint),
            Err(err) => Err(format!("{what} does not decode: {err}")),
        };
        Self { number, checkpoint }
    }

    /// Returns the checkpoint if the entry is intact.
    pub fn intact(&self) -> Option<&proto::Checkpoint> {
        self.checkpoint.as_ref().ok()
    }
}

/// Events of one publisher batch for one location.
#[derive(Debug, Clone)]
pub struct AppendBatch {
    /// Location whose chain receives the events; it must have a collector.
    pub location: Location,
    /// The publisher's id.
    pub publisher_id: String,
    /// The publisher's epoch.
    pub epoch: u64,
    /// Who delivered the batch: its token's name, or that and its client certificate
    /// ([`publisher::cert_credential`]); the publisher id is bound to the first.
    pub credential: String,
    /// The events, in publisher order.
    pub events: Vec<NewEvent>,
    /// Seqs of the batch's events rejected before the store (invalid, another location): they
    /// arrived, so the publisher's state records them as rejected rather than as gaps. A batch
    /// may hold only these.
    pub rejected_seqs: Vec<u64>,
}

/// What [`EventStore::append`] did with one batch.
#[derive(Debug, Clone, Default)]
pub struct AppendOutcome {
    /// Events stored.
    pub accepted: u32,
    /// Events not stored because the same event (same id, same canonical bytes) already was.
    pub duplicates: u32,
    /// Events refused because another event with the same id is stored.
    pub rejected: Vec<proto::RejectedEvent>,
    /// The records stored, in chain order.
    pub stored: Vec<Appended>,
    /// Where each stored or duplicate event is, in batch order: what the Ack tells the
    /// publisher (kept apart from `stored`, which the writer hands to tails).
    pub positions: Vec<proto::AckedEvent>,
    /// Set when the batch was refused whole, nothing of it stored: its publisher id is bound to
    /// the token named here, not to the batch's.
    pub bound_to: Option<String>,
    /// Set when the batch was refused whole, nothing of it stored: storing it would leave its
    /// publisher with more than [`publisher::MAX_GAPS_PER_PUBLISHER`] gaps.
    pub too_many_gaps: bool,
}

/// What one [`EventStore::index_step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStep {
    /// Positions indexed by this step.
    pub indexed: u64,
    /// Positions of every location still to index after it.
    pub lag: u64,
}

/// One position of a chain as stored, for verification: `record` is `None` when the stored
/// bytes no longer decode.
#[derive(Debug, Clone)]
pub struct ChainRecord {
    /// The position.
    pub location_seq: u64,
    /// The record, with `location` and `location_seq` set.
    pub record: Option<proto::StoredEvent>,
}

/// One position of a chain as stored, not decoded.
#[derive(Debug, Clone)]
pub struct StoredBytes {
    /// The position.
    pub location_seq: u64,
    /// The protobuf `StoredEvent` as stored (its location and position may be unset).
    pub bytes: Vec<u8>,
}

impl StoredBytes {
    /// Returns the record of `location` these bytes hold, with its location and position set
    /// from where it is stored, whatever it says.
    pub fn decode(&self, location: &Location) -> ChainRecord {
        let record = <proto::StoredEvent as prost::Message>::decode(self.bytes.as_slice()).ok().map(|mut record| {
            record.location = location.to_string();
            record.location_seq = self.location_seq;
            record
        });
        ChainRecord { location_seq: self.location_seq, record }
    }
}

/// Durable storage of the collector. Methods block; async callers use a blocking thread.
pub trait EventStore: Send + Sync + std::fmt::Debug + 'static {
    /// Creates the collector of `location`, with no events.
    ///
    /// # Errors
    /// [`StoreError::CollectorExists`] when the location has one; concurrent calls for one
    /// location see exactly one success.
    fn create_collector(&self, location: &Location, create_time: Timestamp) -> Result<proto::Collector>;

    /// Returns the size of the store on disk in bytes, when it has one and it can be read.
    fn file_bytes(&self) -> Option<u64>;

    /// Returns the collector of `location`, if any.
    fn collector(&self, location: &Location) -> Result<Option<proto::Collector>>;

    /// Returns every collector, ordered by location.
    fn collectors(&self) -> Result<Vec<proto::Collector>>;

    /// Stores the batches in one atomic, durable transaction: when it returns `Ok`, every
    /// accepted event is on disk; when it returns `Err`, nothing of any batch is. Events whose
    /// id is stored already are counted as duplicates (same canonical bytes) or rejected
    /// (different bytes), never stored twice. Each stored event gets the next `location_seq`
    /// and its chain hash; publisher state (highest seq, counts, gaps, rejected seqs: those of
    /// [`AppendBatch::rejected_seqs`] and of conflicting ids) follows. A batch whose
    /// publisher id is bound to another credential is refused whole ([`AppendOutcome::bound_to`]),
    /// nothing of it stored, the other batches of the group unaffected; so is a batch that would
    /// leave its publisher too many gaps ([`publisher::admit`],
    /// [`AppendOutcome::too_many_gaps`]), and with it the later batches of that publisher in
    /// the group.
    ///
    /// # Errors
    /// [`StoreError::NoCollector`] when a batch's location has no collector (nothing stored),
    /// [`StoreError::Backend`] on storage failure (nothing stored).
    fn append(&self, batches: Vec<AppendBatch>, receive_time: Timestamp) -> Result<Vec<AppendOutcome>>;

    /// Indexes up to `limit` positions that the query indexes do not cover yet, oldest first per
    /// location, in a transaction of its own, and returns what it did and what is left. Indexing
    /// is never needed for correctness, only for the speed of queries.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on storage failure (nothing indexed).
    fn index_step(&self, limit: u64) -> Result<IndexStep>;

    /// Saves what an open would otherwise rebuild by reading the stored data, when at least
    /// `min_growth` bytes were stored since the last save (`0`: whenever anything was); returns
    /// whether it saved. Like indexing it is never needed for correctness, only for the speed of
    /// the next open, so it runs in the background; a backend with nothing to save does nothing.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on storage failure (the previous save stays).
    fn snapshot(&self, min_growth: u64) -> Result<bool> {
        let _ = min_growth;
        Ok(false)
    }

    /// Returns the position up to which the query indexes of `location` are complete.
    fn indexed_seq(&self, location: &Location) -> Result<u64>;

    /// Returns what the store knows of one publisher of `location`.
    fn publisher(&self, location: &Location, publisher_id: &str) -> Result<Option<proto::PublisherState>>;

    /// Returns up to `limit` publishers of `location` ordered by id, those with an id after
    /// `after` when given.
    fn publishers(&self, location: &Location, after: Option<&str>, limit: usize) -> Result<Vec<proto::PublisherState>>;

    /// Returns up to `limit` chain positions from `from_seq` on, ascending, as stored; absent
    /// positions are skipped (the caller sees the jump in `location_seq`).
    fn chain_records(&self, location: &Location, from_seq: u64, limit: usize) -> Result<Vec<ChainRecord>> {
        Ok(self.stored_bytes(location, from_seq, limit)?.into_iter().map(|stored| stored.decode(location)).collect())
    }

    /// Returns what [`EventStore::chain_records`] does, with each record's bytes as stored (a
    /// protobuf `StoredEvent`) instead of decoded: verification reads only some of their fields,
    /// and reads them in bulk.
    fn stored_bytes(&self, location: &Location, from_seq: u64, limit: usize) -> Result<Vec<StoredBytes>>;

    /// Returns the highest `location_seq` stored, 0 when none.
    fn last_seq(&self, location: &Location) -> Result<u64>;

    /// Returns the number of leaves of the location's Merkle tree: every stored position is a
    /// leaf (leaf index = `location_seq` − 1), so it equals [`EventStore::last_seq`].
    fn tree_size(&self, location: &Location) -> Result<u64> {
        self.last_seq(location)
    }

    /// Returns the location's stored tree hashes at `indexes` (Go tlog's layout, see
    /// [`qtrail_tlog::stored_hash_index`]), in order. [`EventStore::append`] appends them with
    /// the events, in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::NoCollector`] when the location has none; [`StoreError::Corrupt`] when a
    /// hash is missing (an index beyond the tree, or damage).
    fn read_hashes(&self, location: &Location, indexes: &[u64]) -> Result<Vec<Hash>>;

    /// Returns the position of the event with id `id` in `location`'s chain, if it is stored
    /// there: the deduplication index, so one lookup.
    fn seq_of_event_id(&self, location: &Location, id: Uuid) -> Result<Option<u64>>;

    /// Returns the position of the record whose stored chain hash is `hash`, if any. Used only
    /// to explain a broken chain, so it may scan.
    fn seq_of_chain_hash(&self, location: &Location, hash: &ChainHash) -> Result<Option<u64>>;

    /// Returns up to `limit` events matching `filter` in `order`, strictly after position `after`
    /// in that order (`None` starts at the newest or oldest). Every event committed before the
    /// call is found, indexed or not.
    fn query(
        &self,
        location: &Location,
        filter: &Filter,
        order: Order,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<proto::StoredEvent>>;

    /// Stores a signed checkpoint of its location, durably. Its number must follow the
    /// location's newest checkpoint (1 for the first).
    ///
    /// # Errors
    /// [`StoreError::NoCollector`] when the location has no collector; [`StoreError::Backend`]
    /// on storage failure, or when the number does not follow (nothing stored).
    fn add_checkpoint(&self, checkpoint: &proto::Checkpoint) -> Result<()>;

    /// Returns up to `limit` checkpoints of `location` numbered below `before` (from the newest
    /// when `None`), newest first. A stored checkpoint that no longer decodes, or names another
    /// location or number than the place it is stored at, is returned as damaged, in its place.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on storage failure.
    fn checkpoints(&self, location: &Location, before: Option<u64>, limit: usize) -> Result<Vec<CheckpointEntry>>;

    /// Removes the records of `location` at positions up to `through_seq` (capped at the last
    /// one), except those `keep` keeps (held) and those that no longer decode (evidence of
    /// damage). The Merkle tree's stored hashes, the checkpoints, the collector and the event
    /// ids stay: proofs for what remains, and for archived events, stay valid, and an old event
    /// published again is still a duplicate. Reads skip removed positions. Records kept by an
    /// earlier prune are examined again, so a lifted hold lets them go. Atomic and durable.
    ///
    /// # Errors
    /// [`StoreError::NoCollector`] when the location has none; [`StoreError::Backend`] on
    /// storage failure or when the backend cannot prune (nothing removed).
    fn prune(
        &self,
        location: &Location,
        through_seq: u64,
        keep: &dyn Fn(&proto::StoredEvent) -> bool,
    ) -> Result<PruneOutcome> {
        let _ = (location, through_seq, keep);
        Err(StoreError::Unsupported("it cannot prune".into()))
    }

    /// Returns the position up to which `location` was pruned, 0 when nothing was.
    fn pruned_through(&self, location: &Location) -> Result<u64> {
        let _ = location;
        Ok(0)
    }

    /// Returns the retention policy of `location` (0 days, off, when none is set).
    fn retention(&self, location: &Location) -> Result<proto::RetentionPolicy> {
        Ok(proto::RetentionPolicy { location: location.to_string(), days: 0 })
    }

    /// Sets the retention policy of its location, durably; 0 days removes it.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on storage failure or when the backend cannot keep one.
    fn set_retention(&self, policy: &proto::RetentionPolicy) -> Result<()> {
        let _ = policy;
        Err(StoreError::Unsupported("it cannot keep a retention policy".into()))
    }

    /// Returns the legal holds in force, locations first.
    fn holds(&self) -> Result<Vec<proto::LegalHold>> {
        Ok(Vec::new())
    }

    /// Places (`on`) or lifts the hold on `hold`'s location or account, durably.
    ///
    /// # Errors
    /// [`StoreError::Backend`] on storage failure, when there are too many holds, or when the
    /// backend cannot keep them.
    fn set_hold(&self, hold: &proto::LegalHold, on: bool) -> Result<()> {
        let _ = (hold, on);
        Err(StoreError::Unsupported("it cannot keep legal holds".into()))
    }

    /// Returns up to `limit` decoded events from `from_seq` on, ascending.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when a record in the range no longer decodes.
    fn events(&self, location: &Location, from_seq: u64, limit: usize) -> Result<Vec<proto::StoredEvent>> {
        self.chain_records(location, from_seq, limit)?
            .into_iter()
            .map(|entry| {
                entry.record.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "record at location_seq {} of location `{location}` does not decode",
                        entry.location_seq
                    ))
                })
            })
            .collect()
    }
}

/// Reads a location's tree from a store, for the tree functions of [`qtrail_tlog`].
#[derive(Debug, Clone, Copy)]
pub struct TreeReader<'a> {
    /// The store.
    pub store: &'a dyn EventStore,
    /// The location whose tree it reads.
    pub location: &'a Location,
}

impl HashReader for TreeReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, qtrail_tlog::Error> {
        self.store.read_hashes(self.location, indexes).map_err(|err| qtrail_tlog::Error::Storage(err.to_string()))
    }
}

/// Returns a tree error of `location` as a store error: the stored hashes do not make a tree.
pub(crate) fn tree_error(location: &str, err: &qtrail_tlog::Error) -> StoreError {
    StoreError::Corrupt(format!("merkle tree of location `{location}`: {err}"))
}

/// Returns the canonical bytes of a stored record's event, or `None` when the event is missing
/// or no longer valid.
pub fn canonical_of(record: &proto::StoredEvent) -> Option<Vec<u8>> {
    let event = AuditEvent::try_from(record.event.clone()?).ok()?;
    Some(canonical_bytes(&event))
}
