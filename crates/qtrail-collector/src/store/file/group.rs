//! One group commit of the file store, built in memory before anything is written: the
//! batches' admission, deduplication, positions and chain hashes, worked out against the state
//! and what the group itself adds, and encoded as one frame of the commit log.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;

use prost::Message as _;
use prost_types::Timestamp;
use qtrail_cadf::{ChainHash, chain_hash_of_bytes};
use qtrail_proto::qtrail::audit::v1 as proto;

use super::log::{FRAME_HEADER, FrameBuilder, Item, put_location};
use super::state::{Position, State, read_record};
use crate::store::record::{self, RecordOrigin};
use crate::store::{AppendBatch, AppendOutcome, Appended, Result, StoreError, canonical_of, publisher};

/// A location's chain as the group leaves it.
struct Head {
    next_seq: u64,
    prev: ChainHash,
    /// Ids the group stores: id → (`location_seq`, canonical bytes).
    new_ids: HashMap<u128, (u64, Vec<u8>)>,
}

/// An event the group stores, to add to the state once the frame is durable.
pub(super) struct Pending {
    pub(super) location: String,
    pub(super) id: u128,
    pub(super) chain_hash: Vec<u8>,
    /// The event's leaf hash in the location's Merkle tree.
    pub(super) leaf: qtrail_tlog::Hash,
    /// Offset of the record in the frame body, and its length.
    body_offset: usize,
    len: u32,
}

impl Pending {
    /// Returns where the record is once the frame is written at `frame_offset`.
    pub(super) fn position(&self, frame_offset: u64) -> Position {
        Position { offset: frame_offset + FRAME_HEADER + self.body_offset as u64, len: self.len }
    }
}

/// A group commit under construction.
pub(super) struct Group<'s> {
    state: &'s State,
    file: &'s File,
    frame: FrameBuilder,
    heads: HashMap<String, Head>,
    publishers: BTreeMap<(String, String), proto::PublisherState>,
    pending: Vec<Pending>,
    buffer: Vec<u8>,
}

/// What a built group writes and then applies.
pub(super) struct Built {
    pub(super) frame: Vec<u8>,
    pub(super) pending: Vec<Pending>,
    pub(super) publishers: BTreeMap<(String, String), proto::PublisherState>,
}

impl<'s> Group<'s> {
    pub(super) fn new(state: &'s State, file: &'s File) -> Self {
        Self {
            state,
            file,
            frame: FrameBuilder::default(),
            heads: HashMap::new(),
            publishers: BTreeMap::new(),
            pending: Vec::new(),
            buffer: Vec::new(),
        }
    }

    /// Adds one batch: refused whole, or its events stored, duplicates counted and conflicting
    /// ids rejected, as [`crate::store::EventStore::append`] says.
    pub(super) fn add(&mut self, batch: AppendBatch, receive_time: Timestamp) -> Result<AppendOutcome> {
        let loc = batch.location.as_str();
        let Some(location) = self.state.location(loc) else {
            return Err(StoreError::NoCollector(loc.to_owned()));
        };
        let key = (loc.to_owned(), batch.publisher_id.clone());
        let mut state = match self.publishers.get(&key).or_else(|| self.state.publishers.get(&key)) {
            Some(state) => state.clone(),
            None => publisher::new_state(&batch.publisher_id, batch.epoch),
        };
        if let Some(refused) = publisher::admit(&mut state, &batch, receive_time) {
            return Ok(refused);
        }
        let head = self.heads.entry(key.0.clone()).or_insert_with(|| Head {
            next_seq: location.positions.len() as u64 + 1,
            prev: ChainHash::from_slice(&location.collector.head_chain_hash).unwrap_or(ChainHash::GENESIS),
            new_ids: HashMap::new(),
        });
        let origin = RecordOrigin {
            publisher_id: &batch.publisher_id,
            epoch: batch.epoch,
            credential: &batch.credential,
            receive_time,
        };
        let mut outcome = AppendOutcome::default();
        for new in batch.events {
            let id = new.id.as_u128();
            let existing = match head.new_ids.get(&id) {
                Some((seq, canonical)) => Some((*seq, *canonical == new.canonical)),
                None => match location.ids.get(id) {
                    Some(seq) => {
                        Some((seq, stored_canonical(self.file, location, seq)? == Some(new.canonical.clone())))
                    }
                    None => None,
                },
            };
            if let Some((existing, same)) = existing {
                record::settle_known_id(&mut outcome, &mut state, batch.epoch, &new, existing, same);
                continue;
            }
            let hash = chain_hash_of_bytes(&head.prev, &new.canonical);
            let mut record = origin.record(new.seq, &head.prev, &hash);
            record.location = loc.to_owned();
            record.location_seq = head.next_seq;
            let start = self.frame.start_item(Item::Event);
            record::encode_stored(&new.encoded, &record, self.frame.buffer())?;
            let len = u32::try_from(self.frame.buffer().len() - start)
                .map_err(|_| StoreError::Backend("a record is larger than 4 GiB".into()))?;
            self.frame.finish_item(start)?;
            self.pending.push(Pending {
                location: key.0.clone(),
                id,
                chain_hash: record.chain_hash.clone(),
                leaf: qtrail_tlog::leaf_hash(&new.canonical),
                body_offset: start,
                len,
            });
            outcome.positions.push(record::acked(&new, head.next_seq));
            head.new_ids.insert(id, (head.next_seq, new.canonical));
            publisher::record_stored(&mut state, batch.epoch, new.seq);
            outcome.stored.push(Appended { record, event: new.encoded });
            outcome.accepted += 1;
            head.prev = hash;
            head.next_seq += 1;
        }
        self.publishers.insert(key, state);
        Ok(outcome)
    }

    /// Ends the group: the publisher states follow the events in the frame.
    pub(super) fn build(mut self) -> Result<Built> {
        for ((location, _), state) in &self.publishers {
            self.buffer.clear();
            put_location(&mut self.buffer, location)?;
            state
                .encode(&mut self.buffer)
                .map_err(|err| StoreError::Backend(format!("cannot encode a publisher state: {err}")))?;
            self.frame.item(Item::Publisher, &self.buffer)?;
        }
        Ok(Built { frame: self.frame.finish()?, pending: self.pending, publishers: self.publishers })
    }
}

/// Returns the canonical bytes of the event stored at `seq`, `None` when it no longer decodes.
fn stored_canonical(file: &File, location: &super::state::LocationState, seq: u64) -> Result<Option<Vec<u8>>> {
    // A compacted record's stub holds its id, not its bytes: the id stays refused.
    let Some(position) = usize::try_from(seq - 1)
        .ok()
        .and_then(|index| location.positions.get(index))
        .filter(|position| !position.is_stub())
    else {
        return Ok(None);
    };
    let bytes = read_record(file, *position)?;
    Ok(proto::StoredEvent::decode(bytes.as_slice()).ok().as_ref().and_then(canonical_of))
}
