//! What verification needs of each stored record — its two links, the chain hash its content
//! gives and its Merkle leaf hash — computed from the record's bytes in one reading, on every
//! core.
//!
//! A record is decoded once, shallowly: the event's bytes go straight to
//! [`ValidEvent::decode`], which validates them and yields the canonical bytes without building
//! the generated message (its request and response `Struct`s are most of the cost of a full
//! decode). Both hashes come from those canonical bytes. A record's chain hash depends only on
//! its own stored `prev_chain_hash`, so every record of a chunk is hashed independently; only
//! the comparison of each `prev` with the hash before it is sequential, and that is the walk's.
//!
//! This reading is a fast way to confirm that a record is intact, never to judge one that is
//! not: whatever it cannot confirm (a record that does not read this way, whose link or hash
//! does not fit) the walk re-reads fully and classifies as it always has, so the verdicts are
//! the same whichever way a record is read.

use prost::Message as _;
use qtrail_cadf::{ChainHash, ValidEvent, chain_hash_of_bytes};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{Hash, leaf_hash};

use crate::store::StoredBytes;

/// Fewest records worth a thread of their own: below it, starting the thread costs more than
/// it saves.
const MIN_RECORDS_PER_THREAD: usize = 64;

/// A record's links as stored and the hashes of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest {
    /// The stored `prev_chain_hash`.
    pub(crate) prev: ChainHash,
    /// The stored `chain_hash`.
    pub(crate) hash: ChainHash,
    /// SHA-256(prev || canonical bytes): what `hash` must be.
    pub(crate) recomputed: ChainHash,
    /// The RFC 6962 leaf hash of the canonical bytes.
    pub(crate) leaf: Hash,
}

impl Digest {
    /// Returns whether the record links to `expected_prev` and its content gives its stored
    /// hash: then the full check would find it intact too.
    pub(crate) fn fits(&self, expected_prev: &ChainHash) -> bool {
        self.prev == *expected_prev && self.recomputed == self.hash
    }
}

/// `qtrail.audit.v1.StoredEvent` with its event left encoded. Every other field is declared as
/// the generated message declares it, so that bytes this decodes also decode fully; the event
/// is a repeated field so that a record holding it more than once (which a full decode merges)
/// is seen and left to the full reading.
#[derive(Clone, PartialEq, prost::Message)]
struct ShallowRecord {
    #[prost(bytes = "vec", repeated, tag = "1")]
    event: Vec<Vec<u8>>,
    #[prost(string, tag = "2")]
    location: String,
    #[prost(uint64, tag = "3")]
    location_seq: u64,
    #[prost(bytes = "vec", tag = "4")]
    chain_hash: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    prev_chain_hash: Vec<u8>,
    #[prost(message, optional, tag = "6")]
    publisher: Option<proto::PublisherRef>,
    #[prost(message, optional, tag = "7")]
    receive_time: Option<prost_types::Timestamp>,
}

/// Returns the digest of a stored record, `None` when it does not read this way (it may still
/// be intact: the full reading decides).
pub(crate) fn digest(bytes: &[u8]) -> Option<Digest> {
    let record = ShallowRecord::decode(bytes).ok()?;
    let [event] = record.event.as_slice() else {
        return None;
    };
    let prev = ChainHash::from_slice(&record.prev_chain_hash)?;
    let hash = ChainHash::from_slice(&record.chain_hash)?;
    let valid = ValidEvent::decode(event).ok()?;
    let canonical = valid.canonical();
    Some(Digest { prev, hash, recomputed: chain_hash_of_bytes(&prev, canonical), leaf: leaf_hash(canonical) })
}

/// Returns the digests of `records`, in order, computed on as many threads as there are cores
/// and records to share.
pub(crate) fn digest_all(records: &[StoredBytes]) -> Vec<Option<Digest>> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = cores.min(records.len() / MIN_RECORDS_PER_THREAD).max(1);
    let digest_part = |part: &[StoredBytes]| part.iter().map(|stored| digest(&stored.bytes)).collect::<Vec<_>>();
    if threads == 1 {
        return digest_part(records);
    }
    let share = records.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut parts = records.chunks(share);
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> = parts.map(|part| scope.spawn(move || digest_part(part))).collect();
        let mut digests = digest_part(first);
        for other in others {
            // A panic in a digest is a bug; it is the walk's to propagate, as on one thread.
            digests.extend(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        digests
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::simple_events;
    use qtrail_cadf::{AuditEvent, canonical_bytes};

    fn stored(event: &AuditEvent, prev: ChainHash) -> (proto::StoredEvent, ChainHash) {
        let hash = chain_hash_of_bytes(&prev, &canonical_bytes(event));
        let record = proto::StoredEvent {
            event: Some(event.clone().into()),
            chain_hash: hash.as_bytes().to_vec(),
            prev_chain_hash: prev.as_bytes().to_vec(),
            ..Default::default()
        };
        (record, hash)
    }

    #[test]
    fn an_intact_record_gives_the_hashes_of_its_canonical_bytes() {
        let event = &simple_events("us-east", 1)[0];
        let (record, hash) = stored(event, ChainHash::GENESIS);
        let digest = digest(&record.encode_to_vec()).unwrap();
        assert_eq!(digest.hash, hash);
        assert!(digest.fits(&ChainHash::GENESIS));
        assert!(!digest.fits(&hash));
        assert_eq!(digest.leaf, leaf_hash(&canonical_bytes(event)));
    }

    #[test]
    fn what_the_fast_reading_cannot_confirm_is_left_to_the_full_one() {
        let events = simple_events("us-east", 2);
        let (record, _) = stored(&events[0], ChainHash::GENESIS);
        let bytes = record.encode_to_vec();
        // The event twice: a full decode merges the two, so this reading does not guess.
        let (second, _) = stored(&events[1], ChainHash::GENESIS);
        let twice = [bytes.clone(), proto::StoredEvent { event: second.event, ..Default::default() }.encode_to_vec()];
        assert_eq!(digest(&twice.concat()), None);
        assert_eq!(digest(&proto::StoredEvent { event: None, ..record.clone() }.encode_to_vec()), None);
        assert_eq!(digest(&proto::StoredEvent { chain_hash: vec![1; 31], ..record.clone() }.encode_to_vec()), None);
        assert_eq!(digest(&bytes[..bytes.len() - 1]), None);
        // Modified content still reads, and no longer fits its hash.
        let mut modified = record.clone();
        if let Some(event) = modified.event.as_mut() {
            event.message.push('!');
        }
        assert!(!digest(&modified.encode_to_vec()).unwrap().fits(&ChainHash::GENESIS));
    }

    #[test]
    fn digests_on_several_threads_keep_the_records_order() {
        let events = simple_events("us-east", 300);
        let mut prev = ChainHash::GENESIS;
        let records: Vec<StoredBytes> = events
            .iter()
            .zip(1..)
            .map(|(event, location_seq)| {
                let (record, hash) = stored(event, prev);
                prev = hash;
                StoredBytes { location_seq, bytes: record.encode_to_vec() }
            })
            .collect();
        let digests = digest_all(&records);
        let one_by_one: Vec<_> = records.iter().map(|stored| digest(&stored.bytes)).collect();
        assert_eq!(digests, one_by_one);
        assert!(digests.windows(2).all(|pair| pair[1].unwrap().fits(&pair[0].unwrap().hash)));
    }
}
