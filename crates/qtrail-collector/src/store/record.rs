//! What every backend does with each event of a batch it appends: the stored record it builds,
//! the bytes it stores, and how an event whose id is already stored is counted. Shared so that
//! the backends store the same records and answer duplicates and conflicts alike.

use prost::Message as _;
use prost_types::Timestamp;
use qtrail_cadf::ChainHash;
use qtrail_proto::qtrail::audit::v1 as proto;

use super::{AppendOutcome, NewEvent, Result, StoreError, publisher};

/// Who delivered a batch and when it was stored: what each of its records repeats.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordOrigin<'a> {
    pub(crate) publisher_id: &'a str,
    pub(crate) epoch: u64,
    pub(crate) credential: &'a str,
    pub(crate) receive_time: Timestamp,
}

impl RecordOrigin<'_> {
    /// Returns the record of the event at publisher position `seq`, chained from `prev` to
    /// `hash`, without its event and with no location or position (the caller sets those where
    /// its format keeps them).
    pub(crate) fn record(&self, seq: u64, prev: &ChainHash, hash: &ChainHash) -> proto::StoredEvent {
        proto::StoredEvent {
            event: None,
            location: String::new(),
            location_seq: 0,
            chain_hash: hash.as_bytes().to_vec(),
            prev_chain_hash: prev.as_bytes().to_vec(),
            publisher: Some(proto::PublisherRef {
                id: self.publisher_id.to_owned(),
                epoch: self.epoch,
                seq,
                credential: self.credential.to_owned(),
            }),
            receive_time: Some(self.receive_time),
        }
    }
}

/// Appends the stored form of `record` with its event to `into`: a protobuf `StoredEvent`
/// whose field 1 is the event's bytes as encoded before the writer (an embedded message and a
/// bytes field are the same on the wire), then the record's other fields.
///
/// # Errors
/// [`StoreError::Backend`] when the record does not encode.
pub(crate) fn encode_stored(event: &[u8], record: &proto::StoredEvent, into: &mut Vec<u8>) -> Result<()> {
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, into);
    prost::encoding::encode_varint(event.len() as u64, into);
    into.extend_from_slice(event);
    record.encode(into).map_err(|err| StoreError::Backend(format!("cannot encode a record: {err}")))
}

/// Counts `new`, whose id the location holds at `existing`: a duplicate when the stored event
/// has the same canonical bytes (`same`), otherwise rejected, in the outcome and in the
/// publisher's state.
pub(crate) fn settle_known_id(
    outcome: &mut AppendOutcome,
    state: &mut proto::PublisherState,
    epoch: u64,
    new: &NewEvent,
    existing: u64,
    same: bool,
) {
    if same {
        outcome.duplicates += 1;
        outcome.positions.push(acked(new, existing));
        return;
    }
    publisher::record_rejected(state, epoch, new.seq);
    outcome.rejected.push(proto::RejectedEvent {
        event_id: new.id.to_string(),
        seq: new.seq,
        reason: format!("conflicting event id: location_seq {existing} holds a different event with this id"),
    });
}

/// Returns where `new` is stored, for its Ack.
pub(crate) fn acked(new: &NewEvent, location_seq: u64) -> proto::AckedEvent {
    proto::AckedEvent { event_id: new.id.to_string(), seq: new.seq, location_seq }
}
