//! The rules a receipt must pass, pure so that each can be tested on its own: the checkpoint
//! note is signed by a configured collector key under the location's origin, the proof starts
//! from the leaf hash the publisher computed from its own copy of the event, the path leads to
//! the note's root, and every new checkpoint extends the last one accepted.

use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{
    Checkpoint, Hash, NoteVerifier, ProofFile, leaf_hash, open_note, verify_consistency, verify_inclusion,
};

/// Why a receipt was refused; each kind is an alarm of its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptFailure {
    /// The checkpoint note is not signed by a configured collector key, or is not a checkpoint
    /// of this location.
    #[error("checkpoint signature: {0}")]
    Signature(String),
    /// The inclusion proof does not prove the publisher's own event.
    #[error("inclusion proof: {0}")]
    Proof(String),
    /// Two checkpoints of one size with different roots, or a pair that is not consistent.
    #[error("fork: {0}")]
    Fork(String),
}

impl ReceiptFailure {
    /// Returns the metric label of the failure: `signature`, `proof` or `fork`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Signature(_) => "signature",
            Self::Proof(_) => "proof",
            Self::Fork(_) => "fork",
        }
    }
}

/// An acknowledged event waiting for its receipt: what the publisher knows of it by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The event id.
    pub event_id: String,
    /// Its position in the location's log, as the Ack said.
    pub location_seq: u64,
    /// The RFC 6962 leaf hash of the event's canonical bytes, computed from the publisher's copy.
    pub leaf: Hash,
}

/// A checkpoint accepted as the log's head, with its signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The parsed checkpoint.
    pub checkpoint: Checkpoint,
    /// The signed note, verbatim.
    pub note: String,
}

/// The collector keys (raw Ed25519 public keys; several while a key is rotated) and the
/// location whose log they sign.
#[derive(Debug, Clone)]
pub struct Keys {
    keys: Vec<[u8; 32]>,
    location: String,
}

impl Keys {
    /// Returns the rules for `location`'s log signed by any of `keys`.
    pub fn new(keys: Vec<[u8; 32]>, location: impl Into<String>) -> Self {
        Self { keys, location: location.into() }
    }

    /// Opens a signed checkpoint note: its origin names this location (`<prefix>/<location>`)
    /// and one of the keys signed it under that origin.
    ///
    /// # Errors
    /// [`ReceiptFailure::Signature`] otherwise.
    pub fn open(&self, note: &str) -> Result<Head, ReceiptFailure> {
        let bad = |detail: String| ReceiptFailure::Signature(detail);
        // The origin is read before the signature is checked only to name the key it must
        // be signed under; nothing else of the note is trusted until then.
        let origin = note.split('\n').next().unwrap_or_default();
        if origin.rsplit_once('/').map(|(_, location)| location) != Some(self.location.as_str()) {
            return Err(bad(format!("origin {:?} is not a log of location {}", origin, self.location)));
        }
        let verifiers = self
            .keys
            .iter()
            .map(|key| NoteVerifier::new(origin, *key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| bad(err.to_string()))?;
        let text = open_note(note, &verifiers).map_err(|err| bad(err.to_string()))?;
        let checkpoint = Checkpoint::parse(text).map_err(|err| bad(err.to_string()))?;
        Ok(Head { checkpoint, note: note.to_owned() })
    }

    /// Checks that `next` extends `last`: a larger tree whose consistency `proof` holds, or the
    /// same tree. Returns `next`.
    ///
    /// # Errors
    /// [`ReceiptFailure::Fork`] for the same size with another root, a smaller tree (the log
    /// was rolled back), or a proof that does not hold.
    pub fn extend(&self, last: &Head, next: Head, proof: &[Hash]) -> Result<Head, ReceiptFailure> {
        let (old, new) = (&last.checkpoint, &next.checkpoint);
        if new.size < old.size {
            return Err(ReceiptFailure::Fork(format!(
                "the log shrank from {} to {} leaves since the last checkpoint",
                old.size, new.size
            )));
        }
        if new.size == old.size {
            if new.root != old.root {
                return Err(ReceiptFailure::Fork(format!("two checkpoints of size {} with different roots", new.size)));
            }
            return Ok(next);
        }
        verify_consistency(old.size, new.size, &old.root, &new.root, proof).map_err(|err| {
            ReceiptFailure::Fork(format!("checkpoint of size {} does not extend size {}: {err}", new.size, old.size))
        })?;
        Ok(next)
    }

    /// Checks a `GetInclusionProof` answer for `acked` against `head` (the checkpoint accepted
    /// for its tree size) and returns the receipt as a tlog-proof whose `extra` is the event's
    /// canonical bytes.
    ///
    /// # Errors
    /// [`ReceiptFailure::Signature`] when the answer's note does not open;
    /// [`ReceiptFailure::Fork`] when it is of `head`'s size with another root;
    /// [`ReceiptFailure::Proof`] when the index, the leaf or the path is wrong.
    pub fn include(
        &self,
        head: &Head,
        acked: &Acked,
        answer: &proto::GetInclusionProofResponse,
    ) -> Result<ProofFile, ReceiptFailure> {
        let answered = self.open(&answer.note)?;
        let checkpoint = &answered.checkpoint;
        if checkpoint.size != head.checkpoint.size {
            return Err(ReceiptFailure::Proof(format!(
                "proof is for size {}, asked for {}",
                checkpoint.size, head.checkpoint.size
            )));
        }
        if checkpoint.root != head.checkpoint.root {
            return Err(ReceiptFailure::Fork(format!(
                "two checkpoints of size {} with different roots",
                checkpoint.size
            )));
        }
        let index = acked.location_seq.checked_sub(1).ok_or_else(|| ReceiptFailure::Proof("location_seq 0".into()))?;
        if answer.leaf_index != index {
            return Err(ReceiptFailure::Proof(format!("proof is for leaf {}, asked for {index}", answer.leaf_index)));
        }
        // The publisher's own hash, never the collector's: the leaf bytes only travel with
        // the receipt once they hash to it.
        if leaf_hash(&answer.leaf) != acked.leaf {
            return Err(ReceiptFailure::Proof(format!("leaf {index} is not the event {} as sent", acked.event_id)));
        }
        let path = answer
            .proof
            .iter()
            .map(|hash| Hash::try_from(hash.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ReceiptFailure::Proof("a proof hash is not 32 bytes".into()))?;
        verify_inclusion(index, checkpoint.size, &acked.leaf, &path, &checkpoint.root)
            .map_err(|err| ReceiptFailure::Proof(err.to_string()))?;
        Ok(ProofFile { extra: Some(answer.leaf.clone()), index, proof: path, checkpoint: head.note.clone() })
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
