//! The query indexes of the embedded backend, kept behind the chain in a redb file of their own
//! (`index.redb`).
//!
//! Acknowledging a batch needs only what the delivery guarantees need: the records at their
//! positions with their chain hashes, the id entries that remove duplicates and the publisher
//! state. The indexes serve queries only, so [`Index::step`] adds them later, from the stored
//! records, in transactions of their own. Their file has its own writer lock, so indexing runs
//! beside the chain's single writer instead of taking turns with it.
//!
//! # Layout
//!
//! - `meta`: the index bucket width (`index_bucket_bits`), fixed when the file is created, and
//!   the layout's version (`index_format`): a file of another version is rebuilt;
//! - `marks`: location → (`indexed_seq`, chain hash of the record at `indexed_seq`): every
//!   position up to `indexed_seq` is indexed, no position after it is. The mark is written in
//!   the transaction that writes the entries, so a crash keeps both or neither;
//! - `time/L`: (bucket, event time in ms, `location_seq`) → ();
//! - `index/L`: (field, bucket, value, `location_seq`) → () for the event's kind (action,
//!   outcome and severity in one value, `<action>|<outcome>|<severity>` with the wire numbers),
//!   initiator id, target id and correlation id (field codes in [`IndexField`]), where bucket is
//!   `location_seq >> bucket_bits`.
//!
//! A time window or a target prefix selects positions that are not in chain order within the
//! index (they are ordered by time, or by target). They are read one bucket at a time, sorted
//! within the bucket and passed on before the next bucket is read, so a query holds at most
//! one bucket's positions and a page stops reading once it is full, however much of the chain
//! the window or prefix spans.
//!
//! Action, outcome and severity share one entry because each has few values: a filter on any of
//! them reads the postings of every kind it allows (at most 8 × 3 × 3) merged in chain order,
//! and each event costs four index entries instead of six.
//!
//! Index keys end with `location_seq`, so within a bucket the entries of one value come in chain
//! order, and buckets are consecutive ranges of the chain: reading a value's entries bucket by
//! bucket yields them in chain order, and a page of an exact-value query stops when it is full.
//! The bucket keeps writes local: new entries of every value land in the newest bucket's small
//! subtree, instead of all over a tree that grows with the store (correlation ids and targets
//! are nearly unique, so unbucketed they would dirty one page per event at every commit).
//! Measured over 1M events (4 streams, batches of 1000, 2 cores), with the indexes still in the
//! chain's transaction: unbucketed, the writer slowed from 51–55k to 33k events/s; bucketed, it
//! stayed at 58–61k/s.
//!
//! # Staying true to the chain
//!
//! Records are never removed or renumbered, so an index entry, once right, stays right. At
//! opening, each mark is checked against the chain: when the record at `indexed_seq` is absent
//! or has another chain hash (the chain file was replaced, restored from a backup or tampered
//! with), that location's index is dropped and rebuilt from position 1. A missing index file is
//! rebuilt the same way.

use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use prost::Message as _;
use qtrail_cadf::{Action, Location};
use qtrail_proto::qtrail::audit::v1 as proto;
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tracing::warn;

use super::{EventsDef, events_table_name, missing_is_none};
use crate::filter::{Filter, TargetMatch};
use crate::store::{IndexStep, Result, StoreError};

/// File name of the index store inside the data directory.
pub(super) const FILE_NAME: &str = "index.redb";

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const MARKS: TableDefinition<'_, &str, (u64, &[u8])> = TableDefinition::new("marks");

/// Key in `meta` of the index bucket width, in bits of `location_seq`.
const BUCKET_BITS_KEY: &str = "index_bucket_bits";

/// Key in `meta` of the layout version.
const FORMAT_KEY: &str = "index_format";

/// Version of the layout: 2 merged the action, outcome and severity entries into one, 3 put
/// time entries in buckets.
const FORMAT: u64 = 3;

/// Index commits that may skip their fsync in a row. Such a commit is lost in a crash (a clean
/// close makes it durable), which costs only re-indexing from the last durable mark; a durable
/// commit now and then bounds that work and lets redb reuse the pages freed since.
const MAX_LAZY_COMMITS: u32 = 64;

/// Longest time between durable index commits. Under a light load every chain commit is
/// followed by an index step; making each durable would double the collector's fsyncs.
const DURABLE_INTERVAL: Duration = Duration::from_secs(1);

pub(super) type TimeDef<'a> = TableDefinition<'a, (u32, i64, u64), ()>;
pub(super) type IndexDef<'a> = TableDefinition<'a, (u8, u32, &'static str, u64), ()>;
type IndexTable = redb::ReadOnlyTable<(u8, u32, &'static str, u64), ()>;
type TimeTable = redb::ReadOnlyTable<(u32, i64, u64), ()>;
type EventsTable = redb::ReadOnlyTable<u64, &'static [u8]>;

/// One entry of a range over the `index/L` table.
type IndexEntry<'a> = std::result::Result<
    (redb::AccessGuard<'a, (u8, u32, &'static str, u64)>, redb::AccessGuard<'a, ()>),
    redb::StorageError,
>;

/// A boxed iterator of chain positions.
pub(super) type Seqs<'a> = Box<dyn Iterator<Item = Result<u64>> + 'a>;

fn time_table_name(location: &str) -> String {
    format!("time/{location}")
}

fn index_table_name(location: &str) -> String {
    format!("index/{location}")
}

/// Fields of the `index/L` table, by their code in the key. Codes 1 to 3 (action, outcome,
/// severity) belong to the first layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum IndexField {
    /// The initiator id.
    Initiator = 4,
    /// The target CRN.
    Target = 5,
    /// The correlation id (empty ones are not indexed).
    Correlation = 6,
    /// The event's kind: `<action>|<outcome>|<severity>`, see [`kind_value`].
    Kind = 7,
}

/// Wire values of the outcomes and severities, which validation allows alone.
const LEVELS: [i32; 3] = [1, 2, 3];

/// Returns the `Kind` value of an event, `<action>|<outcome>|<severity>`; one of 72 strings made
/// once, so that indexing allocates nothing.
fn kind_value(action: &str, outcome: i32, severity: i32) -> Option<&'static str> {
    static VALUES: OnceLock<Vec<String>> = OnceLock::new();
    let values = VALUES.get_or_init(|| {
        let mut values = Vec::with_capacity(Action::ALL.len() * LEVELS.len() * LEVELS.len());
        for action in Action::ALL {
            for outcome in LEVELS {
                for severity in LEVELS {
                    values.push(format!("{}|{outcome}|{severity}", action.as_str()));
                }
            }
        }
        values
    });
    let action = Action::ALL.iter().position(|known| known.as_str() == action)?;
    let outcome = LEVELS.iter().position(|level| *level == outcome)?;
    let severity = LEVELS.iter().position(|level| *level == severity)?;
    values.get((action * LEVELS.len() + outcome) * LEVELS.len() + severity).map(String::as_str)
}

/// Returns the `Kind` values a filter's action, outcome and severity allow, or `None` when it
/// sets none of them.
fn kind_values(filter: &Filter) -> Option<Vec<&'static str>> {
    if filter.actions.is_none() && filter.outcome.is_none() && filter.severity.is_none() {
        return None;
    }
    let all_actions: Vec<&'static str> = Action::ALL.iter().map(|action| action.as_str()).collect();
    let actions = filter.actions.as_ref().unwrap_or(&all_actions);
    let pick = |wanted: Option<i32>| LEVELS.iter().copied().filter(move |level| wanted.is_none_or(|w| w == *level));
    let mut values = Vec::new();
    for action in actions {
        for outcome in pick(filter.outcome) {
            for severity in pick(filter.severity) {
                values.extend(kind_value(action, outcome, severity));
            }
        }
    }
    Some(values)
}

/// The parts of a stored record that indexing reads. Decoding only these skips the rest of the
/// record (request and response data above all) without building it.
#[derive(Clone, PartialEq, prost::Message)]
struct RecordView {
    /// `StoredEvent.event`.
    #[prost(message, optional, tag = "1")]
    event: Option<EventView>,
    /// `StoredEvent.chain_hash`.
    #[prost(bytes = "vec", tag = "4")]
    chain_hash: Vec<u8>,
}

/// The indexed fields of `AuditEvent`, at their tags.
#[derive(Clone, PartialEq, prost::Message)]
struct EventView {
    #[prost(string, tag = "2")]
    action: String,
    #[prost(int32, tag = "3")]
    outcome: i32,
    #[prost(int32, tag = "4")]
    severity: i32,
    #[prost(message, optional, tag = "5")]
    event_time: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "7")]
    initiator: Option<IdView>,
    #[prost(message, optional, tag = "8")]
    target: Option<IdView>,
    #[prost(string, tag = "12")]
    correlation_id: String,
}

impl EventView {
    /// Returns whether `filter` matches the event these fields come from: the filters test
    /// nothing else, so the one match rule applies to the fields alone.
    fn matches(self, filter: &Filter) -> bool {
        let event = proto::AuditEvent {
            action: self.action,
            outcome: self.outcome,
            severity: self.severity,
            event_time: self.event_time,
            initiator: self.initiator.map(|initiator| proto::Initiator { id: initiator.id, ..Default::default() }),
            target: self.target.map(|target| proto::Target { id: target.id, ..Default::default() }),
            correlation_id: self.correlation_id,
            ..Default::default()
        };
        filter.matches(&proto::StoredEvent { event: Some(event), ..Default::default() })
    }
}

/// The `id` (tag 1) of an `Initiator` or a `Target`.
#[derive(Clone, PartialEq, prost::Message)]
struct IdView {
    #[prost(string, tag = "1")]
    id: String,
}

/// The index file.
#[derive(Debug)]
pub(super) struct Index {
    db: Database,
    /// Index bucket width (see the module docs), fixed when the file is created.
    pub(super) bucket_bits: u32,
    /// When the last durable commit was made, and how many commits skipped their fsync since.
    durable: Mutex<(Instant, u32)>,
}

impl Index {
    /// Opens (or creates) the index file in `dir` and drops the index of every location whose
    /// mark no longer fits the chain read by `chain`.
    pub(super) fn open(dir: &Path, cache_bytes: usize, bucket_bits: u32, chain: &ReadTransaction) -> Result<Self> {
        let db = open_or_set_aside(&dir.join(FILE_NAME), cache_bytes)?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let bucket_bits = {
            let mut meta = txn.open_table(META)?;
            let stored = meta.get(BUCKET_BITS_KEY)?.map(|bits| bits.value());
            match stored {
                Some(bits) => u32::try_from(bits)
                    .ok()
                    .filter(|bits| *bits < 64)
                    .ok_or_else(|| StoreError::Corrupt(format!("invalid {BUCKET_BITS_KEY} {bits}")))?,
                None => {
                    meta.insert(BUCKET_BITS_KEY, u64::from(bucket_bits))?;
                    bucket_bits
                }
            }
        };
        let format = txn.open_table(META)?.get(FORMAT_KEY)?.map(|format| format.value());
        if format != Some(FORMAT) {
            drop_every_index(&txn, format)?;
            txn.open_table(META)?.insert(FORMAT_KEY, FORMAT)?;
        }
        drop_stale_marks(&txn, chain)?;
        txn.commit()?;
        Ok(Self { db, bucket_bits, durable: Mutex::new((Instant::now(), 0)) })
    }

    /// Starts a read of the indexes. Begin it before the chain's read, so that every position
    /// it counts as indexed is in the chain's snapshot too.
    pub(super) fn begin_read(&self) -> Result<ReadTransaction> {
        Ok(self.db.begin_read()?)
    }

    /// Indexes up to `limit` positions after the marks of `locations`, whose records `chain`
    /// reads, in one transaction; returns what it did and what is left.
    pub(super) fn step(&self, chain: &ReadTransaction, locations: &[String], limit: u64) -> Result<IndexStep> {
        let mut txn = self.db.begin_write()?;
        let mut step = IndexStep::default();
        for location in locations {
            let Some(events) = missing_is_none(chain.open_table(EventsDef::new(&events_table_name(location))))? else {
                continue;
            };
            let newest = events.last()?.map_or(0, |(key, _)| key.value());
            let mark = read_mark(&txn, location)?;
            let take = newest.saturating_sub(mark).min(limit - step.indexed);
            if take > 0 {
                index_range(&txn, &events, location, mark, mark + take, self.bucket_bits)?;
                step.indexed += take;
            }
            step.lag += newest.saturating_sub(mark + take);
        }
        if step.indexed == 0 {
            txn.abort()?;
            return Ok(step);
        }
        let mut durable = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
        let (since, lazy) = *durable;
        if lazy >= MAX_LAZY_COMMITS || since.elapsed() >= DURABLE_INTERVAL {
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
            *durable = (Instant::now(), 0);
        } else {
            txn.set_durability(Durability::None)?;
            txn.commit()?;
            *durable = (since, lazy + 1);
        }
        Ok(step)
    }

    /// Returns the mark of `location` in the read `txn`: positions up to it are indexed.
    pub(super) fn indexed_seq(txn: &ReadTransaction, location: &str) -> Result<u64> {
        let Some(marks) = missing_is_none(txn.open_table(MARKS))? else {
            return Ok(0);
        };
        Ok(marks.get(location)?.map_or(0, |mark| mark.value().0))
    }
}

/// Opens (or creates) the index file at `path`. A file redb finds corrupt or of a format it no
/// longer reads is moved aside (kept for inspection, under a name of its own) and a new one is
/// created: it holds nothing the chain does not, and this process holds the chain file's lock,
/// so no other collector uses it. Any other error (I/O, permissions, disk full) is returned:
/// the file may be fine, and rebuilding a large index takes minutes.
fn open_or_set_aside(path: &Path, cache_bytes: usize) -> Result<Database> {
    let err = match Database::builder().set_cache_size(cache_bytes).create(path) {
        Ok(db) => return Ok(db),
        Err(err) => err,
    };
    let unreadable = match &err {
        redb::DatabaseError::UpgradeRequired(_) | redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => {
            true
        }
        // What redb reports for a file that is not a redb database (InvalidData) or is cut short.
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
            matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof)
        }
        _ => false,
    };
    if !unreadable {
        return Err(err.into());
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    let aside = path.with_file_name(format!("{FILE_NAME}.unreadable-{stamp}"));
    warn!(error = %err, aside = %aside.display(), "the index file cannot be read, setting it aside and rebuilding it");
    std::fs::rename(path, &aside)
        .map_err(|err| StoreError::Backend(format!("cannot move {} aside: {err}", path.display())))?;
    Ok(Database::builder().set_cache_size(cache_bytes).create(path)?)
}

/// Returns the mark of `location` as the write `txn` sees it.
fn read_mark(txn: &WriteTransaction, location: &str) -> Result<u64> {
    let marks = txn.open_table(MARKS)?;
    Ok(marks.get(location)?.map_or(0, |mark| mark.value().0))
}

/// Drops the index and mark of every location whose mark names a record the chain does not
/// hold with that hash.
fn drop_stale_marks(txn: &WriteTransaction, chain: &ReadTransaction) -> Result<()> {
    let mut stale = Vec::new();
    {
        let marks = txn.open_table(MARKS)?;
        for entry in marks.iter()? {
            let (location, mark) = entry?;
            let (location, (seq, hash)) = (location.value(), mark.value());
            let events = missing_is_none(chain.open_table(EventsDef::new(&events_table_name(location))))?;
            let stored = match &events {
                Some(events) => events.get(seq)?.map(|bytes| RecordView::decode(bytes.value()).ok()),
                None => None,
            };
            // A mark on a record that does not decode holds no hash (see `index_range`); it
            // fits as long as that record is still there undecodable.
            let fits = match stored {
                Some(Some(record)) => record.chain_hash == hash,
                Some(None) => hash.is_empty(),
                None => false,
            };
            if !fits {
                stale.push((location.to_owned(), seq));
            }
        }
    }
    for (location, seq) in stale {
        warn!(location = %location, indexed_seq = seq, "the index does not match the chain, rebuilding it");
        drop_index(txn, &location)?;
    }
    Ok(())
}

/// Drops the index tables and the mark of `location`, so that it is indexed again from 1.
fn drop_index(txn: &WriteTransaction, location: &str) -> Result<()> {
    txn.delete_table(TimeDef::new(&time_table_name(location)))?;
    txn.delete_table(IndexDef::new(&index_table_name(location)))?;
    txn.open_table(MARKS)?.remove(location)?;
    Ok(())
}

/// Drops every location's index and mark: the file was written in layout `format` (none for a
/// new file), not this one.
fn drop_every_index(txn: &WriteTransaction, format: Option<u64>) -> Result<()> {
    let marks: Vec<String> = {
        let marks = txn.open_table(MARKS)?;
        let mut locations = Vec::new();
        for entry in marks.iter()? {
            locations.push(entry?.0.value().to_owned());
        }
        locations
    };
    if let Some(format) = format.filter(|_| !marks.is_empty()) {
        warn!(format, current = FORMAT, "the index file has an older layout, rebuilding it");
    }
    for location in marks {
        drop_index(txn, &location)?;
    }
    Ok(())
}

/// Indexes the records of positions `after + 1 ..= through` and moves the mark to `through`.
fn index_range(
    txn: &WriteTransaction,
    events: &EventsTable,
    location: &str,
    after: u64,
    through: u64,
    bucket_bits: u32,
) -> Result<()> {
    let mut views = Vec::with_capacity(usize::try_from(through - after).unwrap_or(0));
    let mut last_hash = Vec::new();
    for entry in events.range(after + 1..=through)? {
        let (key, value) = entry?;
        let seq = key.value();
        match RecordView::decode(value.value()) {
            Ok(view) => {
                if seq == through {
                    last_hash.clone_from(&view.chain_hash);
                }
                if let Some(event) = view.event {
                    views.push((seq, event));
                }
            }
            // A record that does not decode can be found by no filter; VerifyChain reports it.
            Err(err) => warn!(location = %location, location_seq = seq, error = %err, "record not indexed"),
        }
    }
    let mut time = txn.open_table(TimeDef::new(&time_table_name(location)))?;
    let mut index = txn.open_table(IndexDef::new(&index_table_name(location)))?;
    insert_entries(&mut time, &mut index, &views, bucket_bits)?;
    txn.open_table(MARKS)?.insert(location, (through, last_hash.as_slice()))?;
    Ok(())
}

/// Returns the index bucket of a position.
fn bucket_of(seq: u64, bucket_bits: u32) -> u32 {
    // Saturating: a bucket past u32::MAX would need more than 2^48 events at the default width.
    u32::try_from(seq >> bucket_bits).unwrap_or(u32::MAX)
}

/// Inserts the entries of `views` in key order: new entries of a value then land together, and
/// random values (correlation ids) walk the tree once instead of once per event.
fn insert_entries(
    time: &mut redb::Table<'_, (u32, i64, u64), ()>,
    index: &mut redb::Table<'_, (u8, u32, &'static str, u64), ()>,
    views: &[(u64, EventView)],
    bucket_bits: u32,
) -> Result<()> {
    let mut times = Vec::with_capacity(views.len());
    let mut owned: Vec<(u8, u32, String, u64)> = Vec::new();
    let mut entries: Vec<(u8, u32, &str, u64)> = Vec::with_capacity(views.len() * 4);
    for (seq, event) in views {
        let seq = *seq;
        let bucket = bucket_of(seq, bucket_bits);
        if let Some(event_time) = &event.event_time {
            times.push((bucket, crate::filter::event_millis(event_time), seq));
        }
        let initiator = event.initiator.as_ref().map_or("", |initiator| initiator.id.as_str());
        let target = event.target.as_ref().map_or("", |target| target.id.as_str());
        for (field, value) in [
            (IndexField::Initiator, initiator),
            (IndexField::Target, target),
            (IndexField::Correlation, event.correlation_id.as_str()),
        ] {
            if !value.is_empty() {
                entries.push((field as u8, bucket, value, seq));
            }
        }
        // Stored events are valid, so their kind is one of the 72; anything else is indexed as
        // it is, and no filter asks for it.
        match kind_value(&event.action, event.outcome, event.severity) {
            Some(kind) => entries.push((IndexField::Kind as u8, bucket, kind, seq)),
            None => owned.push((
                IndexField::Kind as u8,
                bucket,
                format!("{}|{}|{}", event.action, event.outcome, event.severity),
                seq,
            )),
        }
    }
    entries.extend(owned.iter().map(|(field, bucket, value, seq)| (*field, *bucket, value.as_str(), *seq)));
    entries.sort_unstable();
    for key in entries {
        index.insert(key, ())?;
    }
    times.sort_unstable();
    for key in times {
        time.insert(key, ())?;
    }
    Ok(())
}

/// Inclusive bounds on `location_seq`.
#[derive(Debug, Clone, Copy)]
pub(super) struct SeqBounds {
    pub(super) low: u64,
    pub(super) high: u64,
}

impl SeqBounds {
    fn contains(self, seq: u64) -> bool {
        (self.low..=self.high).contains(&seq)
    }
}

/// The index tables of one location in a read transaction.
pub(super) struct Tables {
    index: IndexTable,
    time: TimeTable,
}

impl Tables {
    /// Opens the index tables of `location`; `None` when nothing of it is indexed yet.
    pub(super) fn open(txn: &ReadTransaction, location: &Location) -> Result<Option<Self>> {
        let loc = location.as_str();
        let Some(index) = missing_is_none(txn.open_table(IndexDef::new(&index_table_name(loc))))? else {
            return Ok(None);
        };
        let Some(time) = missing_is_none(txn.open_table(TimeDef::new(&time_table_name(loc))))? else {
            return Ok(None);
        };
        Ok(Some(Self { index, time }))
    }
}

/// What a query's candidate positions are read from and within.
struct Plan<'a> {
    index: &'a IndexTable,
    bucket_bits: u32,
    bounds: SeqBounds,
    descending: bool,
}

impl<'a> Plan<'a> {
    /// Returns the buckets that `bounds` spans, in result order.
    fn buckets(&self) -> Box<dyn Iterator<Item = u32>> {
        let first = bucket_of(self.bounds.low, self.bucket_bits);
        let last = bucket_of(self.bounds.high, self.bucket_bits);
        if self.descending { Box::new((first..=last).rev()) } else { Box::new(first..=last) }
    }

    /// Returns the positions indexed under `field` = `value` within the bounds, in result order,
    /// reading one bucket at a time.
    fn posting(&self, field: IndexField, value: &str) -> Seqs<'a> {
        Box::new(Posting {
            index: self.index,
            field: field as u8,
            value: value.to_owned(),
            bounds: self.bounds,
            descending: self.descending,
            buckets: self.buckets(),
            current: None,
        })
    }

    /// Returns the positions indexed under any of the `Kind` values `kinds`, in result order.
    fn kinds(&self, kinds: &[&str]) -> Seqs<'a> {
        let postings = kinds.iter().map(|kind| self.posting(IndexField::Kind, kind)).collect();
        merge(postings, self.descending)
    }

    /// Returns the positions of targets starting with `prefix` (at a segment boundary), in
    /// result order, reading one bucket at a time.
    fn target_prefix(&self, prefix: &str) -> Seqs<'a> {
        let (index, bounds, descending) = (self.index, self.bounds, self.descending);
        let prefix = prefix.to_owned();
        let field = IndexField::Target as u8;
        let bucket_seqs = move |bucket: u32| -> Result<Vec<u64>> {
            let mut seqs = Vec::new();
            for entry in index.range((field, bucket, prefix.as_str(), 0)..)? {
                let (key, _) = entry?;
                let (entry_field, entry_bucket, target, seq) = key.value();
                if entry_field != field || entry_bucket != bucket || !target.starts_with(prefix.as_str()) {
                    break;
                }
                if bounds.contains(seq) && crate::filter::prefix_matches(&prefix, target) {
                    seqs.push(seq);
                }
            }
            Ok(seqs)
        };
        Box::new(self.buckets().flat_map(move |bucket| match bucket_seqs(bucket) {
            Ok(seqs) => sorted(seqs, descending),
            Err(err) => Box::new(std::iter::once(Err(err))),
        }))
    }

    /// Returns the positions of events in the filter's time range, in result order, reading one
    /// bucket at a time; with `kinds`, only those of the kinds.
    fn time_window(&self, time: &'a TimeTable, filter: &Filter, kinds: Option<Vec<&'static str>>) -> Seqs<'a> {
        let (index, bucket_bits, bounds, descending) = (self.index, self.bucket_bits, self.bounds, self.descending);
        let start = filter.start_millis.unwrap_or(i64::MIN);
        let end = filter.end_millis.unwrap_or(i64::MAX);
        Box::new(self.buckets().flat_map(move |bucket| -> Seqs<'a> {
            let window = match bucket_window(time, bucket, start, end, bounds) {
                Ok(window) => window,
                Err(err) => return Box::new(std::iter::once(Err(err))),
            };
            let (Some(&low), Some(&high)) = (window.first(), window.last()) else {
                return Box::new(std::iter::empty());
            };
            let Some(kinds) = &kinds else {
                return sorted(window, descending);
            };
            // An action is common and a time window can lie deep in the chain: walking the
            // action's entries from the newest would load every newer record only to drop it
            // (measured: 300 ms for a first page over 1M events). Instead, the positions in the
            // window bound the walk, and only positions in the window are loaded.
            let within = Plan { index, bucket_bits, bounds: SeqBounds { low, high }, descending };
            Box::new(within.kinds(kinds).filter(move |seq| match seq {
                Ok(seq) => window.binary_search(seq).is_ok(),
                Err(_) => true,
            }))
        }))
    }
}

/// Reads a posting list bucket by bucket; buckets are consecutive ranges of the chain, so the
/// concatenation is in chain order.
struct Posting<'a> {
    index: &'a IndexTable,
    field: u8,
    value: String,
    bounds: SeqBounds,
    descending: bool,
    buckets: Box<dyn Iterator<Item = u32>>,
    current: Option<Seqs<'a>>,
}

impl Iterator for Posting<'_> {
    type Item = Result<u64>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(seq) = self.current.as_mut().and_then(Iterator::next) {
                return Some(seq);
            }
            let bucket = self.buckets.next()?;
            let (low, high) = (self.bounds.low, self.bounds.high);
            let range = match self
                .index
                .range((self.field, bucket, self.value.as_str(), low)..=(self.field, bucket, self.value.as_str(), high))
            {
                Ok(range) => range,
                Err(err) => return Some(Err(err.into())),
            };
            let seqs = |entry: IndexEntry<'_>| entry.map(|(key, _)| key.value().3).map_err(StoreError::from);
            self.current =
                Some(if self.descending { Box::new(range.rev().map(seqs)) } else { Box::new(range.map(seqs)) });
        }
    }
}

/// Returns the candidate positions for `filter` within `bounds`, all of them indexed, in result
/// order. Exact-value indexes come first (their entries are in chain order, so a page stops
/// early), most selective first by rule of thumb: correlation id, initiator, exact target, then
/// the kinds an action filter allows (with a time range, only within the range's positions). A
/// target prefix or a time range reads its positions a bucket at a time and sorts them. Kinds that
/// only an outcome or a severity narrows select a large share of events and come last; with no
/// filter, the chain itself is scanned.
pub(super) fn candidates<'a>(
    events: &'a EventsTable,
    tables: &'a Tables,
    bucket_bits: u32,
    bounds: SeqBounds,
    descending: bool,
    filter: &Filter,
) -> Result<Seqs<'a>> {
    let plan = Plan { index: &tables.index, bucket_bits, bounds, descending };
    if let Some(value) = &filter.correlation_id {
        return Ok(plan.posting(IndexField::Correlation, value));
    }
    if let Some(value) = &filter.initiator_id {
        return Ok(plan.posting(IndexField::Initiator, value));
    }
    if let Some(TargetMatch::Exact(value)) = &filter.target {
        return Ok(plan.posting(IndexField::Target, value));
    }
    let kinds = kind_values(filter);
    if let (Some(kinds), Some(_)) = (&kinds, &filter.actions) {
        if filter.start_millis.is_none() && filter.end_millis.is_none() {
            return Ok(plan.kinds(kinds));
        }
        return Ok(plan.time_window(&tables.time, filter, Some(kinds.clone())));
    }
    if let Some(TargetMatch::Prefix(prefix)) = &filter.target {
        return Ok(plan.target_prefix(prefix));
    }
    if filter.start_millis.is_some() || filter.end_millis.is_some() {
        return Ok(plan.time_window(&tables.time, filter, None));
    }
    if let Some(kinds) = &kinds {
        return Ok(plan.kinds(kinds));
    }
    chain_range(events, bounds, descending)
}

/// Returns every position stored within `bounds`, in result order.
pub(super) fn chain_range(events: &EventsTable, bounds: SeqBounds, descending: bool) -> Result<Seqs<'_>> {
    let range = events.range(bounds.low..=bounds.high)?;
    let keys = |entry: std::result::Result<(redb::AccessGuard<'_, u64>, redb::AccessGuard<'_, &[u8]>), _>| {
        entry.map(|(key, _)| key.value()).map_err(StoreError::from)
    };
    Ok(if descending { Box::new(range.rev().map(keys)) } else { Box::new(range.map(keys)) })
}

/// Returns the positions within `bounds` whose records match `filter`, in result order, reading
/// the records one by one: how positions the indexes do not cover yet are searched. Only the
/// fields that filters test are decoded. A record that does not decode is passed on, for the
/// caller's full read to report.
pub(super) fn unindexed<'a>(
    events: &'a EventsTable,
    bounds: SeqBounds,
    descending: bool,
    filter: &'a Filter,
) -> Result<Seqs<'a>> {
    let range = events.range(bounds.low..=bounds.high)?;
    let keep = move |entry: std::result::Result<(redb::AccessGuard<'_, u64>, redb::AccessGuard<'_, &[u8]>), _>| {
        let (key, value) = match entry {
            Ok(entry) => entry,
            Err(err) => return Some(Err(StoreError::from(err))),
        };
        match RecordView::decode(value.value()) {
            Ok(RecordView { event: Some(event), .. }) => event.matches(filter).then_some(Ok(key.value())),
            // As when indexing: a record that does not decode can be found by no filter, at any
            // lag; VerifyChain reports it.
            Ok(RecordView { event: None, .. }) | Err(_) => None,
        }
    };
    Ok(if descending { Box::new(range.rev().filter_map(keep)) } else { Box::new(range.filter_map(keep)) })
}

/// Returns the positions of one bucket, within `bounds`, of the events whose time is in
/// `start..end`, ascending. Holds at most a bucket's positions.
fn bucket_window(time: &TimeTable, bucket: u32, start: i64, end: i64, bounds: SeqBounds) -> Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in time.range((bucket, start, 0)..(bucket, end, 0))? {
        let (key, _) = entry?;
        let seq = key.value().2;
        if bounds.contains(seq) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    seqs.dedup();
    Ok(seqs)
}

fn sorted<'a>(mut seqs: Vec<u64>, descending: bool) -> Seqs<'a> {
    seqs.sort_unstable();
    seqs.dedup();
    if descending {
        seqs.reverse();
    }
    Box::new(seqs.into_iter().map(Ok))
}

/// Merges position streams that are each in result order into one stream in result order.
fn merge(mut streams: Vec<Seqs<'_>>, descending: bool) -> Seqs<'_> {
    let mut heads: Vec<Option<u64>> = Vec::new();
    let mut started = false;
    Box::new(std::iter::from_fn(move || {
        if !started {
            started = true;
            for stream in &mut streams {
                match stream.next() {
                    Some(Ok(seq)) => heads.push(Some(seq)),
                    Some(Err(err)) => return Some(Err(err)),
                    None => heads.push(None),
                }
            }
        }
        let (slot, seq) = heads
            .iter()
            .enumerate()
            .filter_map(|(slot, head)| head.map(|seq| (slot, seq)))
            .reduce(|best, next| if (next.1 > best.1) == descending { next } else { best })?;
        heads[slot] = match streams[slot].next() {
            Some(Ok(next)) => Some(next),
            Some(Err(err)) => return Some(Err(err)),
            None => None,
        };
        Some(Ok(seq))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_interleaves_in_order() {
        let stream = |seqs: Vec<u64>| -> Seqs<'static> { Box::new(seqs.into_iter().map(Ok)) };
        let merged: Vec<u64> =
            merge(vec![stream(vec![1, 4, 9]), stream(vec![2, 3]), stream(vec![])], false).map(|s| s.unwrap()).collect();
        assert_eq!(merged, vec![1, 2, 3, 4, 9]);
        let merged: Vec<u64> =
            merge(vec![stream(vec![9, 4, 1]), stream(vec![3, 2])], true).map(|s| s.unwrap()).collect();
        assert_eq!(merged, vec![9, 4, 3, 2, 1]);
    }

    #[test]
    fn kinds_cover_what_a_filter_allows() {
        assert_eq!(kind_value("quantum-computing.job.read", 2, 3), Some("quantum-computing.job.read|2|3"));
        assert_eq!(kind_value("quantum-computing.job.read", 4, 1), None);
        assert_eq!(kind_value("nonsense", 1, 1), None);
        assert_eq!(kind_values(&Filter::default()), None);
        let severe = Filter { severity: Some(3), ..Filter::default() };
        let severe = kind_values(&severe).unwrap();
        assert_eq!(severe.len(), 8 * 3);
        assert!(severe.iter().all(|kind| kind.ends_with("|3")));
        let job_failures =
            Filter { actions: Some(vec!["quantum-computing.job.cancel"]), outcome: Some(2), ..Filter::default() };
        assert_eq!(
            kind_values(&job_failures).unwrap(),
            [
                "quantum-computing.job.cancel|2|1",
                "quantum-computing.job.cancel|2|2",
                "quantum-computing.job.cancel|2|3"
            ]
        );
    }

    #[test]
    fn record_views_read_the_indexed_fields_of_a_stored_record() {
        use qtrail_proto::qtrail::audit::v1 as proto;
        let event =
            crate::store::conformance::event("us-east", qtrail_cadf::Action::JobCancel, "IBMid-7", "j-1", 409, 5);
        let record = proto::StoredEvent {
            event: Some(proto::AuditEvent::from(&event)),
            chain_hash: vec![7; 32],
            location_seq: 3,
            ..Default::default()
        };
        let view = RecordView::decode(record.encode_to_vec().as_slice()).unwrap();
        let wire = record.event.unwrap();
        let indexed = view.event.unwrap();
        assert_eq!(view.chain_hash, vec![7; 32]);
        assert_eq!(indexed.action, wire.action);
        assert_eq!((indexed.outcome, indexed.severity), (wire.outcome, wire.severity));
        assert_eq!(indexed.event_time, wire.event_time);
        assert_eq!(indexed.initiator.unwrap().id, "IBMid-7");
        assert_eq!(indexed.target.unwrap().id, wire.target.unwrap().id);
        assert_eq!(indexed.correlation_id, wire.correlation_id);
    }
}
