//! Rotating the checkpoint key: restarted with a new key and the old one's public key as a
//! previous key, the collector signs on; without it, or over a newest checkpoint that only
//! claims the old key, it signs nothing.

use std::path::{Path, PathBuf};

use qtrail_cadf::checkpoint::{SigningKey, VerifyingKey};
use qtrail_collector::Config;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{Checkpoint, NoteSigner, NoteVerifier, open_note, sign_note};

use crate::common::{self, TestServer, events};
use crate::tamper::tamper_checkpoints;
use crate::tlog::{EVENTS, newest_checkpoint, newest_number, newest_stored, signed_server, signing_config, verify};

/// Writes a new checkpoint key into `dir` under `name`, and its public key beside it.
fn new_key(dir: &Path, name: &str) -> (PathBuf, PathBuf, SigningKey) {
    let pem = SigningKey::generate_pem().unwrap();
    let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
    let (private, public) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.pub.pem")));
    std::fs::write(&private, pem).unwrap();
    std::fs::write(&public, key.public_pem()).unwrap();
    (private, public, key)
}

/// Returns the key `config` signs with, and its public key written beside it.
fn old_key(config: &Config) -> (PathBuf, SigningKey) {
    let private = config.checkpoint_key.clone().unwrap();
    let key = SigningKey::from_pem(&std::fs::read(&private).unwrap()).unwrap();
    let public = private.with_extension("pub.pem");
    std::fs::write(&public, key.public_pem()).unwrap();
    (public, key)
}

/// Restarted with a new key and the old public key as a previous one, the collector signs on:
/// the new checkpoints are signed (v1 and note) by the new key, number on, and verification
/// with both keys finds the whole history consistent with the tree.
#[tokio::test]
async fn a_rotated_key_signs_on_after_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = signing_config(dir.path(), false);
    let server = signed_server(config.clone()).await;
    server.stop().await;
    let data_dir = dir.path().join("data");
    let signed_before = newest_number(&data_dir);
    let (old_public, old) = old_key(&config);
    let (new_private, _, new) = new_key(dir.path(), "new-key");
    config.checkpoint_key = Some(new_private);
    config.previous_checkpoint_public_keys = vec![old_public];
    let server = TestServer::start_with(config).await;
    assert_eq!(server.publish("us-east", &events("us-east", EVENTS, 1), EVENTS as u64 + 1).await.accepted, 1);
    let size = EVENTS as u64 + 1;
    let rotated = common::wait_until(std::time::Duration::from_secs(20), || async {
        newest_checkpoint(&server).await.is_some_and(|checkpoint| checkpoint.tree_size == size)
    })
    .await;
    assert!(rotated, "the new key signs on");
    let newest = newest_checkpoint(&server).await.unwrap();
    assert!(newest.number > signed_before);
    assert_eq!(newest.key_id, new.id());
    VerifyingKey::from_pem(new.public_pem().as_bytes()).unwrap().verify(&newest).unwrap();
    let verifier = NoteVerifier::new("qtrail.local/us-east", new.public_key()).unwrap();
    let head = Checkpoint::parse(open_note(&newest.note, &[verifier]).unwrap()).unwrap();
    assert_eq!(head.size, size);
    let verdict = verify(&server).await;
    assert!(verdict.ok, "the history under both keys verifies: {verdict:?}");
    server.stop().await;
    assert_eq!(first_of_key(&data_dir, old.id()), Some(1), "the old key's checkpoints stay");
}

/// Returns the number of the oldest checkpoint of us-east signed by `key_id`.
fn first_of_key(data_dir: &Path, key_id: &str) -> Option<u64> {
    use qtrail_collector::store::{EventStore as _, FileStore};
    let store = FileStore::open(data_dir, 1024 * 1024).unwrap();
    let all = store.checkpoints(&"us-east".parse().unwrap(), None, 1000).unwrap();
    all.iter()
        .filter_map(|entry| entry.intact())
        .filter(|checkpoint| checkpoint.key_id == key_id)
        .map(|c| c.number)
        .min()
}

/// Restarted with a new key but without the old public key, the collector signs nothing: it
/// cannot tell the old key's checkpoint from a forged one.
#[tokio::test]
async fn a_new_key_without_the_previous_one_signs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = signing_config(dir.path(), false);
    let server = signed_server(config.clone()).await;
    server.stop().await;
    let data_dir = dir.path().join("data");
    let signed_before = newest_number(&data_dir);
    config.checkpoint_key = Some(new_key(dir.path(), "new-key").0);
    let server = TestServer::start_with(config).await;
    assert_eq!(server.publish("us-east", &events("us-east", EVENTS, 1), EVENTS as u64 + 1).await.accepted, 1);
    server.stop().await;
    assert_eq!(newest_number(&data_dir), signed_before, "nothing signed under the new key");
}

/// A newest checkpoint that claims the previous key's id but does not verify under it (a v1
/// signature by another key, or the genuine v1 signature with a note by another key) is not
/// one to build on: the rotated collector signs nothing.
#[tokio::test]
async fn a_forged_checkpoint_claiming_the_previous_key_is_refused() {
    let forgeries: [fn(&proto::Checkpoint, &SigningKey) -> proto::Checkpoint; 2] = [
        |genuine, forger| {
            let mut forged = genuine.clone();
            forger.sign(&mut forged);
            proto::Checkpoint { key_id: genuine.key_id.clone(), ..forged }
        },
        |genuine, forger| {
            let text = &genuine.note[..=genuine.note.rfind("\n\n").unwrap()];
            let signer = NoteSigner::new("qtrail.local/us-east", forger.key_pair()).unwrap();
            proto::Checkpoint { note: sign_note(text, &signer).unwrap(), ..genuine.clone() }
        },
    ];
    for forge in forgeries {
        let dir = tempfile::tempdir().unwrap();
        let mut config = signing_config(dir.path(), false);
        let server = signed_server(config.clone()).await;
        server.stop().await;
        let data_dir = dir.path().join("data");
        let genuine = newest_stored(&data_dir);
        let (_, _, forger) = new_key(dir.path(), "forger");
        let forged = forge(&genuine, &forger);
        tamper_checkpoints(&data_dir, "us-east", |stored| {
            stored.insert(genuine.number, prost::Message::encode_to_vec(&forged));
        });
        let (old_public, _) = old_key(&config);
        config.checkpoint_key = Some(new_key(dir.path(), "new-key").0);
        config.previous_checkpoint_public_keys = vec![old_public];
        let server = TestServer::start_with(config).await;
        assert_eq!(server.publish("us-east", &events("us-east", EVENTS, 1), EVENTS as u64 + 1).await.accepted, 1);
        server.stop().await;
        assert_eq!(newest_number(&data_dir), genuine.number, "nothing signed over the forged checkpoint");
    }
}

/// A previous key file that holds no Ed25519 public key stops start-up, naming the file; so
/// does a previous key without a key to sign with.
#[tokio::test]
async fn a_bad_previous_key_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-a-key.pub.pem");
    std::fs::write(&bad, "hello").unwrap();
    let mut config = Config::for_test(dir.path().join("data"), common::tokens());
    config.checkpoint_key = Some(new_key(dir.path(), "key").0);
    config.previous_checkpoint_public_keys = vec![bad];
    let text = start_error(config.clone()).await;
    assert!(text.starts_with("the previous checkpoint public key ") && text.contains("not-a-key.pub.pem"), "{text}");
    config.checkpoint_key = None;
    config.previous_checkpoint_public_keys = vec![new_key(dir.path(), "old").1];
    let text = start_error(config).await;
    assert_eq!(text, "a previous checkpoint public key needs a checkpoint key to sign with");
}

async fn start_error(config: Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = qtrail_collector::run(listener, config, std::future::pending()).await.unwrap_err();
    format!("{err:#}")
}
