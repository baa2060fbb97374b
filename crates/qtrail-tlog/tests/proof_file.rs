//! C2SP tlog-proof files over a real tree and a real signed checkpoint: a proof of every leaf
//! verifies, and any change (a hash, the index, the entry in `extra`, the note, the key) fails.

use qtrail_tlog::{
    Checkpoint, Error, Hash, HashReader, NoteSigner, NoteVerifier, ProofFile, append_hashes, inclusion_proof,
    leaf_hash, sign_note, tree_hash,
};
use ring::signature::Ed25519KeyPair;

/// Stored hashes in memory.
struct Stored(Vec<Hash>);

impl HashReader for Stored {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
        Ok(indexes.iter().map(|&i| self.0[i as usize]).collect())
    }
}

const ORIGIN: &str = "qtrail.test/us-east";

fn key(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
}

fn entry(i: u64) -> Vec<u8> {
    format!("{{\"event\":{i}}}").into_bytes()
}

/// A log of `size` entries, its signed checkpoint, and a proof of each entry.
fn proofs(size: u64, key: &Ed25519KeyPair) -> Vec<ProofFile> {
    let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&entry(i))).collect();
    let mut stored = Stored(Vec::new());
    let appended = append_hashes(0, &leaves, &stored).unwrap();
    stored.0 = appended;
    let root = tree_hash(size, &stored).unwrap();
    let head = Checkpoint { origin: ORIGIN.to_owned(), size, root, extensions: Vec::new() };
    let note = sign_note(&head.to_text(), &NoteSigner::new(ORIGIN, key).unwrap()).unwrap();
    (0..size)
        .map(|index| ProofFile {
            extra: Some(entry(index)),
            index,
            proof: inclusion_proof(index, size, &stored).unwrap(),
            checkpoint: note.clone(),
        })
        .collect()
}

fn verifier(key: &Ed25519KeyPair) -> NoteVerifier {
    NoteSigner::new(ORIGIN, key).unwrap().verifier()
}

#[test]
fn every_proof_of_a_signed_tree_verifies_after_a_round_trip() {
    let log_key = key(7);
    for size in [1, 2, 7, 300] {
        for proof in proofs(size, &log_key) {
            let parsed = ProofFile::parse(&proof.encode()).unwrap();
            let head = parsed.verify(&[verifier(&log_key)]).unwrap();
            assert_eq!((head.origin.as_str(), head.size), (ORIGIN, size));
        }
    }
}

#[test]
fn any_change_fails_the_proof() {
    let log_key = key(7);
    let verifiers = [verifier(&log_key)];
    let proof = proofs(13, &log_key).swap_remove(6);
    let mut flipped = proof.clone();
    flipped.proof[1][0] ^= 1;
    assert_eq!(flipped.verify(&verifiers), Err(Error::BadProof("inclusion")));
    let mut moved = proof.clone();
    moved.index = 7;
    assert_eq!(moved.verify(&verifiers), Err(Error::BadProof("inclusion")));
    let mut beyond = proof.clone();
    beyond.index = 13;
    assert_eq!(beyond.verify(&verifiers), Err(Error::OutOfRange { index: 13, size: 13 }));
    let mut other_entry = proof.clone();
    other_entry.extra = Some(entry(5));
    assert_eq!(other_entry.verify(&verifiers), Err(Error::BadProof("inclusion")));
    let mut short = proof.clone();
    short.proof.pop();
    assert_eq!(short.verify(&verifiers), Err(Error::BadProof("inclusion")));
    let mut resized = proof.clone();
    resized.checkpoint = resized.checkpoint.replacen("\n13\n", "\n14\n", 1);
    assert!(matches!(resized.verify(&verifiers), Err(Error::BadSignature { .. })));
    assert_eq!(proof.verify(&[verifier(&key(8))]), Err(Error::UnverifiedNote));
    assert!(proof.verify(&verifiers).is_ok());
}
