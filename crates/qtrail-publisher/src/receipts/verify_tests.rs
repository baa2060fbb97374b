//! The receipt rules over a real tree and real signed checkpoints: an honest receipt passes;
//! a forged path, a wrong key, a wrong leaf, same-size-different-root and an inconsistent pair
//! each fail as their kind.

use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{
    Checkpoint, Error, Hash, HashReader, NoteSigner, append_hashes, consistency_proof, inclusion_proof, leaf_hash,
    sign_note, tree_hash,
};
use ring::signature::Ed25519KeyPair;

use super::{Acked, Keys, ReceiptFailure};

const ORIGIN: &str = "qtrail.test/us-east";

/// A log in memory: its stored hashes, grown leaf by leaf.
#[derive(Default)]
struct Log(Vec<Hash>, u64);

impl HashReader for Log {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
        Ok(indexes.iter().map(|&i| self.0[i as usize]).collect())
    }
}

impl Log {
    fn with(entries: &[&str]) -> Self {
        let mut log = Self::default();
        for entry in entries {
            let hashes = append_hashes(log.1, &[leaf_hash(entry.as_bytes())], &log).unwrap();
            log.0.extend(hashes);
            log.1 += 1;
        }
        log
    }

    /// The note of the whole tree signed by `key`.
    fn note(&self, key: &Ed25519KeyPair) -> String {
        let head = Checkpoint {
            origin: ORIGIN.into(),
            size: self.1,
            root: tree_hash(self.1, self).unwrap(),
            extensions: vec![],
        };
        sign_note(&head.to_text(), &NoteSigner::new(ORIGIN, key).unwrap()).unwrap()
    }

    fn answer(&self, index: u64, entry: &str, key: &Ed25519KeyPair) -> proto::GetInclusionProofResponse {
        proto::GetInclusionProofResponse {
            leaf_index: index,
            tree_size: self.1,
            proof: inclusion_proof(index, self.1, self).unwrap().iter().map(|hash| hash.to_vec()).collect(),
            note: self.note(key),
            leaf: entry.as_bytes().to_vec(),
        }
    }
}

fn key(seed: u8) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap()
}

fn keys(key: &Ed25519KeyPair) -> Keys {
    use ring::signature::KeyPair as _;
    Keys::new(vec![key.public_key().as_ref().try_into().unwrap()], "us-east")
}

fn acked(location_seq: u64, entry: &str) -> Acked {
    Acked { event_id: format!("event-{location_seq}"), location_seq, leaf: leaf_hash(entry.as_bytes()) }
}

const ENTRIES: [&str; 5] = ["a", "b", "c", "d", "e"];

#[test]
fn an_honest_receipt_verifies_offline_as_a_proof_file() {
    let (key, log) = (key(1), Log::with(&ENTRIES));
    let rules = keys(&key);
    let head = rules.open(&log.note(&key)).unwrap();
    for (index, entry) in ENTRIES.iter().enumerate() {
        let proof =
            rules.include(&head, &acked(index as u64 + 1, entry), &log.answer(index as u64, entry, &key)).unwrap();
        let verifier = NoteSigner::new(ORIGIN, &key).unwrap().verifier();
        let parsed = qtrail_tlog::ProofFile::parse(&proof.encode()).unwrap();
        assert_eq!(parsed.verify(&[verifier]).unwrap().size, 5);
        assert_eq!(parsed.extra.as_deref(), Some(entry.as_bytes()));
    }
}

#[test]
fn a_forged_path_fails_as_a_proof_failure() {
    let (key, log) = (key(1), Log::with(&ENTRIES));
    let rules = keys(&key);
    let head = rules.open(&log.note(&key)).unwrap();
    let mut answer = log.answer(2, "c", &key);
    answer.proof[0][0] ^= 1;
    assert!(matches!(rules.include(&head, &acked(3, "c"), &answer), Err(ReceiptFailure::Proof(_))));
    let mut short = log.answer(2, "c", &key);
    short.proof.pop();
    assert!(matches!(rules.include(&head, &acked(3, "c"), &short), Err(ReceiptFailure::Proof(_))));
    // A proof of another index does not prove this event either.
    assert!(matches!(rules.include(&head, &acked(3, "c"), &log.answer(1, "c", &key)), Err(ReceiptFailure::Proof(_))));
}

#[test]
fn a_wrong_key_or_origin_fails_as_a_signature_failure() {
    let (signer, log) = (key(1), Log::with(&ENTRIES));
    let err = keys(&key(2)).open(&log.note(&signer)).unwrap_err();
    assert_eq!(err.kind(), "signature", "{err}");
    let other_location = Keys::new(vec![[0; 32]], "eu-de");
    assert_eq!(other_location.open(&log.note(&signer)).unwrap_err().kind(), "signature");
    let mut tampered = log.note(&signer);
    tampered = tampered.replacen("\n5\n", "\n6\n", 1);
    assert_eq!(keys(&signer).open(&tampered).unwrap_err().kind(), "signature");
    // A rotated-in key is accepted next to the old one.
    use ring::signature::KeyPair as _;
    let both = Keys::new(
        vec![key(2).public_key().as_ref().try_into().unwrap(), signer.public_key().as_ref().try_into().unwrap()],
        "us-east",
    );
    assert!(both.open(&log.note(&signer)).is_ok());
}

#[test]
fn a_leaf_other_than_the_publishers_own_fails_even_with_a_valid_path() {
    // The collector proves what it stored ("x"), a valid proof of another event than was sent.
    let (key, log) = (key(1), Log::with(&["a", "b", "x", "d", "e"]));
    let rules = keys(&key);
    let head = rules.open(&log.note(&key)).unwrap();
    let err = rules.include(&head, &acked(3, "c"), &log.answer(2, "x", &key)).unwrap_err();
    assert_eq!(err.kind(), "proof", "{err}");
    // Nor does claiming the publisher's bytes help: they do not hash into the root.
    let err = rules.include(&head, &acked(3, "c"), &log.answer(2, "c", &key)).unwrap_err();
    assert_eq!(err.kind(), "proof", "{err}");
}

#[test]
fn same_size_with_another_root_is_a_fork() {
    let key = key(1);
    let rules = keys(&key);
    let honest = rules.open(&Log::with(&ENTRIES).note(&key)).unwrap();
    let forked = Log::with(&["a", "b", "c", "d", "z"]);
    let err = rules.extend(&honest, rules.open(&forked.note(&key)).unwrap(), &[]).unwrap_err();
    assert_eq!(err.kind(), "fork", "{err}");
    // Also when the other root only shows in an inclusion proof's note.
    let err = rules.include(&honest, &acked(1, "a"), &forked.answer(0, "a", &key)).unwrap_err();
    assert_eq!(err.kind(), "fork", "{err}");
    // The same head again is no fork.
    assert!(rules.extend(&honest, honest.clone(), &[]).is_ok());
}

#[test]
fn an_inconsistent_pair_or_a_shrunk_log_is_a_fork() {
    let key = key(1);
    let rules = keys(&key);
    let old = Log::with(&ENTRIES[..3]);
    let grown = Log::with(&ENTRIES);
    let old_head = rules.open(&old.note(&key)).unwrap();
    let proof = consistency_proof(3, 5, &grown).unwrap();
    assert!(rules.extend(&old_head, rules.open(&grown.note(&key)).unwrap(), &proof).is_ok());
    // A log that rewrote its first three leaves and grew: the honest-looking proof of the
    // rewritten log does not connect it to the old head.
    let rewritten = Log::with(&["a", "B", "c", "d", "e"]);
    let proof = consistency_proof(3, 5, &rewritten).unwrap();
    let err = rules.extend(&old_head, rules.open(&rewritten.note(&key)).unwrap(), &proof).unwrap_err();
    assert_eq!(err.kind(), "fork", "{err}");
    // A rolled-back log is smaller than the head already accepted.
    let grown_head = rules.open(&grown.note(&key)).unwrap();
    let err = rules.extend(&grown_head, old_head, &[]).unwrap_err();
    assert_eq!(err.kind(), "fork", "{err}");
}
