//! Appends: one transaction per group. The heads of the group's locations are locked first
//! (`SELECT … FOR UPDATE`, in location order): the sequencer, where replicas appending to one
//! location take turns and other locations do not wait. Then each batch, in order: publisher
//! admission, deduplication against stored ids and the batch's own, positions, chain and tree
//! hashes as every backend makes them ([`record`], [`qtrail_tlog::append_hashes`]), rows
//! inserted a table at a time from arrays (`UNNEST`), publisher state; last the heads, and
//! `NOTIFY qtrail_appended, '<location>'` for the tail followers of every replica, delivered at
//! commit.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use postgres::{GenericClient, Transaction};
use prost::Message as _;
use prost_types::Timestamp;
use qtrail_cadf::{ChainHash, chain_hash_of_bytes};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{Hash, HashReader, append_hashes, leaf_hash, stored_hash_count};
use tracing::warn;
use uuid::Uuid;

use super::pool::Pool;
use super::{PgError, decode, int, uint};
use crate::filter::event_millis;
use crate::store::record::{self, RecordOrigin};
use crate::store::{AppendBatch, AppendOutcome, Appended, Result, StoreError, canonical_of, publisher, tree_error};

/// The channel that tells every replica's tail followers that a location has new events; the
/// payload is the location's name.
pub const APPENDED_CHANNEL: &str = "qtrail_appended";

/// Times a group is run again after losing a race PostgreSQL detected.
const RETRIES: usize = 4;

/// A location's head as locked for the group.
struct Head {
    event_count: u64,
    chain_hash: ChainHash,
    tree_size: u64,
    changed: bool,
}

/// Stores the group in one transaction (see the module docs), retried when PostgreSQL reports
/// a serialization failure or deadlock.
pub(super) fn append(pool: &Pool, batches: Vec<AppendBatch>, receive_time: Timestamp) -> Result<Vec<AppendOutcome>> {
    let mut attempt = 0;
    loop {
        let result = pool.with(|client| {
            let mut txn = client.transaction()?;
            let outcomes = append_group(&mut txn, batches.clone(), receive_time)?;
            txn.commit()?;
            Ok(outcomes)
        });
        match result {
            Err(err) if err.is_retryable() && attempt < RETRIES => {
                attempt += 1;
                warn!(attempt, error = %StoreError::from(err), "append lost a race in postgresql; running it again");
            }
            other => return Ok(other?),
        }
    }
}

fn append_group(
    txn: &mut Transaction<'_>,
    batches: Vec<AppendBatch>,
    receive_time: Timestamp,
) -> Result<Vec<AppendOutcome>, PgError> {
    let mut locations: Vec<&str> = batches.iter().map(|batch| batch.location.as_str()).collect();
    locations.sort_unstable();
    locations.dedup();
    let sql = "SELECT location, event_count, head_chain_hash, tree_size FROM collectors \
               WHERE location = ANY($1) ORDER BY location COLLATE \"C\" FOR UPDATE";
    let mut heads = HashMap::new();
    for row in txn.query(sql, &[&locations])? {
        let hash: Vec<u8> = row.get(2);
        let head = Head {
            event_count: uint(row.get(1)),
            chain_hash: ChainHash::from_slice(&hash).unwrap_or(ChainHash::GENESIS),
            tree_size: uint(row.get(3)),
            changed: false,
        };
        heads.insert(row.get::<_, String>(0), head);
    }
    if let Some(missing) = locations.iter().find(|location| !heads.contains_key(**location)) {
        return Err(StoreError::NoCollector((*missing).to_owned()).into());
    }
    let outcomes = publisher::add_in_order(batches, |batch| {
        let head = heads.get_mut(batch.location.as_str()).expect("every location's head is locked");
        append_batch(txn, head, batch, receive_time)
    })?;
    for (location, head) in heads.iter().filter(|(_, head)| head.changed) {
        let sql = "UPDATE collectors SET event_count = $2, head_chain_hash = $3, tree_size = $4 WHERE location = $1";
        let hash = head.chain_hash.as_bytes().as_slice();
        txn.execute(sql, &[location, &int(head.event_count), &hash, &int(head.tree_size)])?;
        txn.execute("SELECT pg_notify($1, $2)", &[&APPENDED_CHANNEL, location])?;
    }
    Ok(outcomes)
}

/// The rows of a batch's stored events, a column each, for one `INSERT … SELECT FROM UNNEST`.
#[derive(Default)]
struct EventRows {
    seqs: Vec<i64>,
    ids: Vec<Uuid>,
    chain_hashes: Vec<Vec<u8>>,
    millis: Vec<Option<i64>>,
    actions: Vec<Option<String>>,
    outcomes: Vec<Option<i32>>,
    severities: Vec<Option<i32>>,
    initiators: Vec<Option<String>>,
    targets: Vec<Option<String>>,
    correlations: Vec<Option<String>>,
    records: Vec<Vec<u8>>,
}

impl EventRows {
    /// Adds the event encoded as `event`, stored at `seq` as `record_bytes`.
    fn push(&mut self, seq: u64, id: Uuid, chain_hash: &ChainHash, event: &[u8], record_bytes: Vec<u8>) {
        // The event was encoded from a validated one just before: it decodes. Were it not to,
        // its row still stores, with no column to narrow on (queries then scan past it).
        let event = proto::AuditEvent::decode(event).unwrap_or_default();
        self.seqs.push(int(seq));
        self.ids.push(id);
        self.chain_hashes.push(chain_hash.as_bytes().to_vec());
        self.millis.push(event.event_time.as_ref().map(event_millis));
        self.actions.push(Some(event.action));
        self.outcomes.push(Some(event.outcome));
        self.severities.push(Some(event.severity));
        self.initiators.push(event.initiator.map(|initiator| initiator.id));
        self.targets.push(event.target.map(|target| target.id));
        self.correlations.push(Some(event.correlation_id));
        self.records.push(record_bytes);
    }

    fn insert(&self, txn: &mut Transaction<'_>, location: &str) -> Result<(), PgError> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        let sql = "INSERT INTO events (location, location_seq, event_id, chain_hash, event_millis, action, outcome, \
                   severity, initiator_id, target_id, correlation_id, record) \
                   SELECT $1, * FROM UNNEST($2::bigint[], $3::uuid[], $4::bytea[], $5::bigint[], $6::text[], \
                   $7::integer[], $8::integer[], $9::text[], $10::text[], $11::text[], $12::bytea[])";
        txn.execute(
            sql,
            &[
                &location,
                &self.seqs,
                &self.ids,
                &self.chain_hashes,
                &self.millis,
                &self.actions,
                &self.outcomes,
                &self.severities,
                &self.initiators,
                &self.targets,
                &self.correlations,
                &self.records,
            ],
        )?;
        Ok(())
    }
}

/// Stores one batch in the group's transaction; `head` is its location's, locked.
fn append_batch(
    txn: &mut Transaction<'_>,
    head: &mut Head,
    batch: AppendBatch,
    receive_time: Timestamp,
) -> Result<AppendOutcome, PgError> {
    let loc = batch.location.as_str();
    let sql = "SELECT state FROM publishers WHERE location = $1 AND publisher_id = $2";
    let mut state = match txn.query_opt(sql, &[&loc, &batch.publisher_id])? {
        Some(row) => decode(&format!("publisher `{}`", batch.publisher_id), row.get::<_, &[u8]>(0))?,
        None => publisher::new_state(&batch.publisher_id, batch.epoch),
    };
    // Checked under the head's lock, where two replicas racing for a new id meet.
    if let Some(refused) = publisher::admit(&mut state, &batch, receive_time) {
        return Ok(refused);
    }
    let mut known = stored_ids(txn, loc, &batch)?;
    let origin = RecordOrigin {
        publisher_id: &batch.publisher_id,
        epoch: batch.epoch,
        credential: &batch.credential,
        receive_time,
    };
    let mut outcome = AppendOutcome::default();
    let mut rows = EventRows::default();
    let mut leaves = Vec::with_capacity(batch.events.len());
    let mut stored_here: HashMap<Uuid, (u64, Vec<u8>)> = HashMap::new();
    for new in batch.events {
        let existing = match (known.remove(&new.id), stored_here.get(&new.id)) {
            (Some((seq, stored)), _) => {
                let same = decode::<proto::StoredEvent>("stored record", &stored)
                    .ok()
                    .and_then(|record| canonical_of(&record))
                    .is_some_and(|canonical| canonical == new.canonical);
                // Put back for a second copy later in the batch.
                known.insert(new.id, (seq, stored));
                Some((seq, same))
            }
            (None, Some((seq, canonical))) => Some((*seq, *canonical == new.canonical)),
            (None, None) => None,
        };
        if let Some((seq, same)) = existing {
            record::settle_known_id(&mut outcome, &mut state, batch.epoch, &new, seq, same);
            continue;
        }
        let location_seq = head.event_count + 1;
        let prev = head.chain_hash;
        let hash = chain_hash_of_bytes(&prev, &new.canonical);
        let mut record = origin.record(new.seq, &prev, &hash);
        let mut bytes = Vec::with_capacity(new.encoded.len() + 128);
        record::encode_stored(&new.encoded, &record, &mut bytes)?;
        rows.push(location_seq, new.id, &hash, &new.encoded, bytes);
        leaves.push(leaf_hash(&new.canonical));
        publisher::record_stored(&mut state, batch.epoch, new.seq);
        record.location = loc.to_owned();
        record.location_seq = location_seq;
        outcome.positions.push(record::acked(&new, location_seq));
        stored_here.insert(new.id, (location_seq, new.canonical));
        outcome.stored.push(Appended { record, event: new.encoded });
        outcome.accepted += 1;
        head.event_count = location_seq;
        head.chain_hash = hash;
        head.changed = true;
    }
    rows.insert(txn, loc)?;
    append_leaves(txn, head, loc, &leaves)?;
    let sql = "INSERT INTO publishers (location, publisher_id, state) VALUES ($1, $2, $3) \
               ON CONFLICT (location, publisher_id) DO UPDATE SET state = EXCLUDED.state";
    txn.execute(sql, &[&loc, &batch.publisher_id, &state.encode_to_vec()])?;
    Ok(outcome)
}

/// Returns the stored records of the batch's ids that the location holds already: id →
/// (position, stored bytes). One query for the whole batch.
fn stored_ids(
    txn: &mut Transaction<'_>,
    location: &str,
    batch: &AppendBatch,
) -> Result<HashMap<Uuid, (u64, Vec<u8>)>, PgError> {
    let ids: Vec<Uuid> = batch.events.iter().map(|event| event.id).collect::<HashSet<_>>().into_iter().collect();
    let sql = "SELECT event_id, location_seq, record FROM events WHERE location = $1 AND event_id = ANY($2)";
    let rows = txn.query(sql, &[&location, &ids])?;
    Ok(rows.iter().map(|row| (row.get(0), (uint(row.get(1)), row.get(2)))).collect())
}

/// Appends the stored hashes of `leaves` to the location's tree, of `head.tree_size` leaves.
fn append_leaves(txn: &mut Transaction<'_>, head: &mut Head, location: &str, leaves: &[Hash]) -> Result<(), PgError> {
    if leaves.is_empty() {
        return Ok(());
    }
    let old_size = head.tree_size;
    // A tree longer than its head, or with holes, would be overwritten or extended wrongly: it
    // is damage for someone to look at, as in the other backends.
    let sql = "SELECT COALESCE(max(stored_index) + 1, 0) FROM tree_hashes WHERE location = $1";
    let have = uint(txn.query_one(sql, &[&location])?.get(0));
    let expected = stored_hash_count(old_size);
    if have != expected {
        return Err(StoreError::Corrupt(format!(
            "merkle tree of location `{location}` holds {have} stored hashes, a tree of {old_size} leaves has \
             {expected}: not appending to it"
        ))
        .into());
    }
    let hashes = {
        let reader = TxnReader { txn: RefCell::new(&mut *txn), location };
        append_hashes(old_size, leaves, &reader).map_err(|err| PgError::Store(tree_error(location, &err)))?
    };
    let indexes: Vec<i64> = (expected..).take(hashes.len()).map(int).collect();
    let hashes: Vec<&[u8]> = hashes.iter().map(|hash| hash.as_slice()).collect();
    let sql =
        "INSERT INTO tree_hashes (location, stored_index, hash) SELECT $1, * FROM UNNEST($2::bigint[], $3::bytea[])";
    txn.execute(sql, &[&location, &indexes, &hashes])?;
    head.tree_size = old_size + leaves.len() as u64;
    Ok(())
}

/// Reads the stored hashes at `indexes` of `location`, in order.
///
/// # Errors
/// [`StoreError::Corrupt`] when one is missing or not 32 bytes.
pub(super) fn read_hashes(
    client: &mut impl GenericClient,
    location: &str,
    indexes: &[u64],
) -> Result<Vec<Hash>, PgError> {
    let wanted: Vec<i64> = indexes.iter().copied().map(int).collect();
    let sql = "SELECT stored_index, hash FROM tree_hashes WHERE location = $1 AND stored_index = ANY($2)";
    let found: HashMap<u64, Vec<u8>> =
        client.query(sql, &[&location, &wanted])?.iter().map(|row| (uint(row.get(0)), row.get(1))).collect();
    indexes
        .iter()
        .map(|index| {
            let hash = found.get(index).and_then(|bytes| Hash::try_from(bytes.as_slice()).ok());
            hash.ok_or_else(|| {
                let err = qtrail_tlog::Error::Storage(format!("stored hash {index} is missing"));
                PgError::Store(tree_error(location, &err))
            })
        })
        .collect()
}

/// The tree of a location as the group's transaction sees it, for [`append_hashes`].
struct TxnReader<'a, 't> {
    txn: RefCell<&'a mut Transaction<'t>>,
    location: &'a str,
}

impl HashReader for TxnReader<'_, '_> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, qtrail_tlog::Error> {
        let mut txn = self.txn.borrow_mut();
        read_hashes(&mut **txn, self.location, indexes)
            .map_err(|err| qtrail_tlog::Error::Storage(StoreError::from(err).to_string()))
    }
}
