//! The witness's rules over real trees, keys and state files: it cosigns a log that grows, and
//! refuses a fork, a rollback, a stale `old`, an unknown log and a forged signature.

use std::sync::Arc;

use qtrail_tlog::{HashReader, NoteSigner, append_hashes, consistency_proof, leaf_hash, sign_note, tree_hash};

use super::*;

const ORIGIN: &str = "qtrail.local/us-east";

/// A log in memory: its stored hashes, leaf count and key.
struct Log {
    hashes: Vec<qtrail_tlog::Hash>,
    size: u64,
    key: SigningKey,
}

impl HashReader for Log {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<qtrail_tlog::Hash>, qtrail_tlog::Error> {
        Ok(indexes.iter().map(|&index| self.hashes[index as usize]).collect())
    }
}

impl Log {
    fn new(key: SigningKey) -> Self {
        Self { hashes: Vec::new(), size: 0, key }
    }

    fn append(&mut self, leaf: &str) {
        let added = append_hashes(self.size, &[leaf_hash(leaf.as_bytes())], &*self).unwrap();
        self.hashes.extend(added);
        self.size += 1;
    }

    fn note(&self) -> String {
        let root = tree_hash(self.size, self).unwrap();
        let text = TreeHead { origin: ORIGIN.into(), size: self.size, root, extensions: Vec::new() }.to_text();
        sign_note(&text, &NoteSigner::new(ORIGIN, self.key.key_pair()).unwrap()).unwrap()
    }

    fn request(&self, old: u64) -> String {
        let proof = if old == 0 { Vec::new() } else { consistency_proof(old, self.size, self).unwrap() };
        AddCheckpoint { old, proof, note: self.note() }.to_body()
    }

    fn verifier(&self) -> NoteVerifier {
        NoteSigner::new(ORIGIN, self.key.key_pair()).unwrap().verifier()
    }
}

fn key() -> SigningKey {
    SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap()
}

thread_local! {
    /// The log key of this test: copies of one log share it, as copies of one data dir would.
    static LOG_KEY: String = SigningKey::generate_pem().unwrap();
}

fn shared_log() -> Log {
    Log::new(SigningKey::from_pem(LOG_KEY.with(Clone::clone).as_bytes()).unwrap())
}

fn copy(log: &Log) -> Log {
    Log { hashes: log.hashes.clone(), size: log.size, ..shared_log() }
}

fn witness(dir: &Path, log: &Log) -> Witness {
    Witness::open(dir, key(), "witness.example/w1", vec![log.verifier()]).unwrap()
}

#[test]
fn a_growing_log_is_cosigned_and_the_size_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = shared_log();
    let witness = witness(dir.path(), &log);
    log.append("a");
    let line = witness.add_checkpoint(&log.request(0)).unwrap();
    let cosigned = format!("{}{line}", log.note());
    assert!(witness.verifier().verify_note(&cosigned).is_ok());
    for leaf in ["b", "c", "d", "e"] {
        log.append(leaf);
    }
    witness.add_checkpoint(&log.request(1)).unwrap();
    // The same checkpoint again is cosigned again (a log with no new events).
    witness.add_checkpoint(&log.request(5)).unwrap();
    drop(witness);
    let reopened = Witness::open(dir.path(), key(), "witness.example/w1", vec![log.verifier()]).unwrap();
    assert!(matches!(reopened.add_checkpoint(&log.request(0)), Err(Refusal::OldSize { old: 0, size: 5 })));
}

#[test]
fn a_fork_is_refused_at_the_same_size_and_beyond() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = shared_log();
    first.append("a");
    let mut second = copy(&first);
    let witness = witness(dir.path(), &first);
    first.append("b");
    second.append("B");
    witness.add_checkpoint(&first.request(0)).unwrap();
    assert!(matches!(witness.add_checkpoint(&second.request(2)), Err(Refusal::Fork { size: 2 })));
    second.append("C");
    // The second copy's own proof from 2 is against its own root, not the witness's.
    assert!(matches!(witness.add_checkpoint(&second.request(2)), Err(Refusal::BadProof { old: 2, size: 3 })));
    first.append("c");
    witness.add_checkpoint(&first.request(2)).unwrap();
}

#[test]
fn a_rollback_and_a_stale_old_size_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = shared_log();
    log.append("a");
    let old_copy = copy(&log);
    log.append("b");
    log.append("c");
    let witness = witness(dir.path(), &log);
    witness.add_checkpoint(&log.request(0)).unwrap();
    // The restored copy knows only size 1: the witness answers with the size it holds.
    assert!(matches!(witness.add_checkpoint(&old_copy.request(0)), Err(Refusal::OldSize { old: 0, size: 3 })));
    // Claiming the witness's size is beyond the copy's own.
    assert!(matches!(witness.add_checkpoint(&old_copy.request(1)), Err(Refusal::OldSize { old: 1, size: 3 })));
    let mut body = old_copy.request(0);
    body.replace_range(..5, "old 3");
    assert!(matches!(witness.add_checkpoint(&body), Err(Refusal::Malformed(_))));
}

#[test]
fn unknown_logs_forged_signatures_and_garbage_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = shared_log();
    log.append("a");
    let witness = witness(dir.path(), &log);
    let mut stranger = Log::new(key());
    stranger.append("a");
    assert!(matches!(witness.add_checkpoint(&stranger.request(0)), Err(Refusal::Forbidden(_))));
    let renamed = log.request(0).replace(ORIGIN, "qtrail.local/eu-de");
    assert!(matches!(witness.add_checkpoint(&renamed), Err(Refusal::UnknownLog(_))));
    assert!(matches!(witness.add_checkpoint("old 0\n"), Err(Refusal::Malformed(_))));
    assert!(matches!(witness.add_checkpoint(""), Err(Refusal::Malformed(_))));
    witness.add_checkpoint(&log.request(0)).unwrap();
}

/// Concurrent requests cannot roll the state back: whatever order they run in, the witness ends
/// holding the largest size, and every cosigned request saw the size before it.
#[test]
fn concurrent_requests_never_roll_the_state_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = shared_log();
    let witness = Arc::new(witness(dir.path(), &log));
    let mut requests = Vec::new();
    let mut previous = 0;
    for leaf in 0..8 {
        log.append(&leaf.to_string());
        requests.push(log.request(previous));
        previous = log.size;
    }
    // Every request is sent until it is cosigned or refused for a size the witness already passed.
    std::thread::scope(|scope| {
        for request in &requests {
            let witness = witness.clone();
            scope.spawn(move || {
                while let Err(Refusal::OldSize { old, size }) = witness.add_checkpoint(request) {
                    if size > old {
                        break;
                    }
                    std::thread::yield_now();
                }
            });
        }
    });
    assert!(matches!(witness.add_checkpoint(&log.request(0)), Err(Refusal::OldSize { size: 8, .. })));
}
