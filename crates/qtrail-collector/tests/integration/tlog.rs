//! The transparency log over HTTP: checkpoint notes any note verifier accepts, hash and entry
//! tiles that rebuild the signed tree, and the refusals of bad, unauthorized or premature asks.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use qtrail_cadf::checkpoint::SigningKey;
use qtrail_collector::Config;
use qtrail_collector::store::{EventStore as _, FileStore};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::testing::reference_root as root;
use qtrail_tlog::{
    Checkpoint, Hash, NoteVerifier, leaf_hash, node_hash, open_note, stored_hash_index, unpack_entries,
    verify_consistency,
};

use crate::common::{self, AUDITOR, PUBLISHER, TestServer, authed, events};
use crate::tamper::{tamper_checkpoints, tamper_tree};

pub(crate) const EVENTS: usize = 300;

/// A collector config that signs every 50 ms with a new key.
pub(crate) fn signing_config(dir: &std::path::Path, public_tiles: bool) -> Config {
    let key_file = dir.join("checkpoint-key.pem");
    std::fs::write(&key_file, SigningKey::generate_pem().unwrap()).unwrap();
    let mut config = Config::for_test(dir.join("data"), common::tokens());
    config.checkpoint_key = Some(key_file);
    config.checkpoint_interval = Duration::from_millis(50);
    config.public_tiles = public_tiles;
    config
}

/// A collector that signs every 50 ms, with `EVENTS` events in us-east and a checkpoint over them.
pub(crate) async fn signed_server(config: Config) -> TestServer {
    let server = TestServer::start_with_http_config(config).await;
    server.create_collector("us-east").await;
    assert_eq!(server.publish("us-east", &events("us-east", 0, EVENTS), 1).await.accepted as usize, EVENTS);
    let signed = common::wait_until(Duration::from_secs(20), || async {
        newest_checkpoint(&server).await.is_some_and(|checkpoint| checkpoint.tree_size == EVENTS as u64)
    })
    .await;
    assert!(signed, "a checkpoint covers the events");
    server
}

pub(crate) async fn newest_checkpoint(server: &TestServer) -> Option<proto::Checkpoint> {
    let request = proto::ListCheckpointsRequest { location: "us-east".into(), page_size: 1, before_number: 0 };
    let listed = server.query().await.list_checkpoints(authed(request, AUDITOR)).await.unwrap().into_inner();
    listed.checkpoints.into_iter().next()
}

const BEARER: (&str, &str) = ("authorization", "Bearer auditor-secret");

async fn fetch(server: &TestServer, path: &str) -> (u16, String, Vec<u8>) {
    let (status, headers, body) = server.http().get_bytes(path, &[BEARER]).await;
    let cache = headers.get("cache-control").map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, cache, body)
}

fn hashes(tile: &[u8]) -> Vec<Hash> {
    tile.chunks(32).map(|hash| hash.try_into().unwrap()).collect()
}

#[tokio::test]
async fn tiles_rebuild_the_signed_tree() {
    let dir = tempfile::tempdir().unwrap();
    let server = signed_server(signing_config(dir.path(), false)).await;
    let (status, _, key) = fetch(&server, "/tlog/us-east/key").await;
    assert_eq!(status, 200);
    let verifier = NoteVerifier::parse(String::from_utf8(key).unwrap().trim_end()).unwrap();
    assert_eq!(verifier.name(), "qtrail.local/us-east");
    let (status, cache, note) = fetch(&server, "/tlog/us-east/checkpoint").await;
    assert_eq!((status, cache.as_str()), (200, "no-cache"));
    let note = String::from_utf8(note).unwrap();
    let head = Checkpoint::parse(open_note(&note, &[verifier]).unwrap()).unwrap();
    assert_eq!((head.origin.as_str(), head.size), ("qtrail.local/us-east", EVENTS as u64));
    assert_eq!(newest_checkpoint(&server).await.unwrap().root, head.root);

    // The leaves are the events' canonical bytes, and their hashes the level-0 tiles.
    let (status, cache, full) = fetch(&server, "/tlog/us-east/tile/entries/000").await;
    assert_eq!((status, cache.as_str()), (200, "public, max-age=31536000, immutable"));
    let (status, cache, partial) = fetch(&server, "/tlog/us-east/tile/entries/001.p/44").await;
    assert_eq!((status, cache.as_str()), (200, "public, max-age=31536000, immutable"), "partial tiles never change");
    let mut entries: Vec<Vec<u8>> = unpack_entries(&full).unwrap().into_iter().map(<[u8]>::to_vec).collect();
    entries.extend(unpack_entries(&partial).unwrap().into_iter().map(<[u8]>::to_vec));
    let stored: Vec<Vec<u8>> = server
        .all_events("us-east")
        .await
        .iter()
        .map(|record| qtrail_collector::store::canonical_of(record).unwrap())
        .collect();
    assert_eq!(entries, stored);
    let leaves: Vec<Hash> = entries.iter().map(|entry| leaf_hash(entry)).collect();
    let (_, _, level0) = fetch(&server, "/tlog/us-east/tile/0/000").await;
    let (_, _, level0_partial) = fetch(&server, "/tlog/us-east/tile/0/001.p/44").await;
    assert_eq!([hashes(&level0), hashes(&level0_partial)].concat(), leaves);
    let (status, _, level1) = fetch(&server, "/tlog/us-east/tile/1/000.p/1").await;
    assert_eq!(status, 200);
    assert_eq!(hashes(&level1), [root(&leaves[..256])]);
    assert_eq!(root(&leaves), head.root);
    server.stop().await;
}

#[tokio::test]
async fn tiles_refuse_what_they_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    let server = signed_server(signing_config(dir.path(), false)).await;
    let http = server.http();
    let (status, headers, _) = http.get_bytes("/tlog/us-east/checkpoint", &[]).await;
    assert_eq!((status, headers["www-authenticate"].to_str().unwrap()), (401, "Bearer"));
    let (status, _, body) =
        http.get_bytes("/tlog/us-east/tile/0/000", &[("authorization", &format!("Bearer {PUBLISHER}"))]).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let cases = [
        ("/tlog/us-east/tile/0/1", 400, "invalid tile path"),
        ("/tlog/us-east/tile/0/000.p/256", 400, "invalid tile path"),
        ("/tlog/us-east/tile/64/000", 400, "invalid tile path"),
        ("/tlog/us-east/tile/entries/x000/000", 400, "invalid tile path"),
        ("/tlog/US%20EAST/checkpoint", 400, "invalid location"),
        ("/tlog/eu-de/checkpoint", 404, "no collector for location `eu-de`"),
        ("/tlog/eu-de/key", 404, "no collector for location `eu-de`"),
        ("/tlog/eu-de/tile/0/000", 404, "no collector for location `eu-de`"),
        ("/tlog/us-east/tile/0/001", 404, "beyond the newest signed tree head (300 leaves)"),
        ("/tlog/us-east/tile/entries/002.p/1", 404, "beyond the newest signed tree head"),
        ("/tlog/us-east/tile/2/000.p/1", 404, "beyond the newest signed tree head"),
    ];
    for (path, expected, message) in cases {
        let (status, _, body) = fetch(&server, path).await;
        let body = String::from_utf8(body).unwrap();
        assert_eq!(status, expected, "{path}: {body}");
        assert!(body.contains(message), "{path}: {body}");
        assert_eq!(body, body.to_lowercase().replace("us east", "US EAST"), "{path}: lowercase");
    }
    let (status, _, _) = fetch(&server, &format!("/tlog/us-east/tile/0/{}", "x001/".repeat(40) + "000")).await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn public_tiles_need_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = signed_server(signing_config(dir.path(), true)).await;
    let (status, _, body) = server.http().get_bytes("/tlog/us-east/tile/0/000", &[]).await;
    assert_eq!((status, body.len()), (200, 256 * 32));
    server.stop().await;
}

/// Returns the number of the newest checkpoint of us-east, read from the stopped collector.
pub(crate) fn newest_number(data_dir: &std::path::Path) -> u64 {
    newest_stored(data_dir).number
}

/// Returns the newest checkpoint of us-east, read from the stopped collector.
pub(crate) fn newest_stored(data_dir: &std::path::Path) -> proto::Checkpoint {
    let store = FileStore::open(data_dir, 1024 * 1024).unwrap();
    store.checkpoints(&"us-east".parse().unwrap(), None, 1).unwrap()[0].intact().unwrap().clone()
}

/// A tree whose stored hashes were rewritten under a running collector (here the hash over the
/// first 256 leaves) no longer extends the signed head: the collector signs nothing over it, at
/// its ticks or at its stop. (A restart would repair the derived tree from the log first.)
#[tokio::test]
async fn a_tree_inconsistent_with_its_checkpoint_is_not_signed() {
    let dir = tempfile::tempdir().unwrap();
    let config = signing_config(dir.path(), false);
    let server = TestServer::start_with(config).await;
    server.create_collector("us-east").await;
    assert_eq!(server.publish("us-east", &events("us-east", 0, EVENTS), 1).await.accepted as usize, EVENTS);
    let signed = common::wait_until(Duration::from_secs(20), || async {
        newest_checkpoint(&server).await.is_some_and(|checkpoint| checkpoint.tree_size == EVENTS as u64)
    })
    .await;
    assert!(signed, "a checkpoint covers the events");
    let signed_before = newest_checkpoint(&server).await.unwrap().number;
    let data_dir = dir.path().join("data");
    tamper_tree(&data_dir, "us-east", stored_hash_index(8, 0), [7; 32]);
    assert_eq!(server.publish("us-east", &events("us-east", EVENTS, 1), EVENTS as u64 + 1).await.accepted, 1);
    server.stop().await;
    assert_eq!(newest_number(&data_dir), signed_before, "nothing signed over the rewritten tree");
}

pub(crate) async fn verify(server: &TestServer) -> proto::VerifyChainResponse {
    let request = proto::VerifyChainRequest { location: "us-east".into(), range: None };
    server.query().await.verify_chain(authed(request, AUDITOR)).await.unwrap().into_inner()
}

/// Verification rebuilds the tree from the events: a rewritten leaf hash, a rewritten interior
/// hash and a checkpoint whose root is not the tree's each fail it, where they show.
#[tokio::test]
async fn verify_checks_the_tree_against_the_events_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let config = signing_config(dir.path(), false);
    let server = signed_server(config.clone()).await;
    let verdict = verify(&server).await;
    assert!(verdict.ok, "{verdict:?}");
    server.stop().await;
    let data_dir = dir.path().join("data");
    let detail = |verdict: &proto::VerifyChainResponse| {
        let fault = verdict.fault.as_ref().expect("a fault");
        (fault.location_seq, fault.checkpoint_number, fault.detail.clone())
    };

    let leaf = |seq: u64| {
        let store = FileStore::open(&data_dir, 1024 * 1024).unwrap();
        let record = store.events(&"us-east".parse().unwrap(), seq, 1).unwrap().remove(0);
        leaf_hash(&qtrail_collector::store::canonical_of(&record).unwrap())
    };
    let (first, second, fifth) = (leaf(1), leaf(2), leaf(5));

    // The tree file rewritten under the running collector (a restart repairs it from the log
    // first, below): each rewritten hash is a fault where it shows.
    let server = TestServer::start(&data_dir).await;
    tamper_tree(&data_dir, "us-east", stored_hash_index(0, 4), [7; 32]);
    let (seq, _, text) = detail(&verify(&server).await);
    assert_eq!(seq, 5);
    assert!(text.contains("leaf hash"), "{text}");
    tamper_tree(&data_dir, "us-east", stored_hash_index(0, 4), fifth);
    // An interior hash no tree head reads, but tiles serve and proofs use.
    tamper_tree(&data_dir, "us-east", stored_hash_index(1, 0), [7; 32]);
    let (seq, _, text) = detail(&verify(&server).await);
    assert_eq!(seq, 2);
    assert!(text.contains("hash of level 1 completed here differs"), "{text}");
    tamper_tree(&data_dir, "us-east", stored_hash_index(1, 0), node_hash(&first, &second));
    tamper_tree(&data_dir, "us-east", stored_hash_index(8, 0), [7; 32]);
    let (seq, _, text) = detail(&verify(&server).await);
    assert_eq!(seq, 256, "where the rewritten interior hash is completed");
    assert!(text.contains("hash of level 8 completed here differs"), "{text}");
    server.stop().await;
    // The tree is derived: the next start finds it does not give the signed root and rebuilds it.
    let server = TestServer::start(&data_dir).await;
    let verdict = verify(&server).await;
    assert!(verdict.ok, "{verdict:?}");
    server.stop().await;

    // The tree file is derived: removed, it is rebuilt from the log at the next start.
    std::fs::remove_file(data_dir.join("tree").join("us-east.hashes")).unwrap();
    let newest = newest_stored(&data_dir);
    let rewrite_newest = |rewrite: &dyn Fn(&mut proto::Checkpoint)| {
        tamper_checkpoints(&data_dir, "us-east", |stored| {
            let mut rewritten = newest.clone();
            rewrite(&mut rewritten);
            stored.insert(newest.number, prost::Message::encode_to_vec(&rewritten));
        });
    };
    // The root field is not signed, so it proves nothing and is not what verification compares.
    rewrite_newest(&|checkpoint| checkpoint.root = vec![9; 32]);
    let server = TestServer::start(&data_dir).await;
    let verdict = verify(&server).await;
    assert!(verdict.ok, "{verdict:?}");
    server.stop().await;

    // The note's root line rewritten: without the key it states another root than the tree's,
    // with the key its signature fails.
    let forged_root = BASE64.encode([9; 32]);
    let mut lines: Vec<&str> = newest.note.split('\n').collect();
    lines[2] = &forged_root;
    let forged_note = lines.join("\n");
    rewrite_newest(&|checkpoint| checkpoint.note.clone_from(&forged_note));
    let server = TestServer::start(&data_dir).await;
    let (seq, number, text) = detail(&verify(&server).await);
    assert_eq!((seq, number), (newest.tree_size, newest.number));
    assert!(text.contains("differs from the one signed in checkpoint"), "{text}");
    server.stop().await;
    let server = TestServer::start_with(config).await;
    let (seq, number, text) = detail(&verify(&server).await);
    assert_eq!((seq, number), (newest.tree_size, newest.number));
    assert!(text.contains("has a bad tree head note") && text.contains("signature"), "{text}");
    server.stop().await;
}

/// A note the collector's key signed under its origin, but whose text names another log, is
/// not a tree head of this log: verification with the key names the checkpoint.
#[tokio::test]
async fn verify_requires_the_configured_origin_in_the_note() {
    let dir = tempfile::tempdir().unwrap();
    let config = signing_config(dir.path(), false);
    let server = signed_server(config.clone()).await;
    server.stop().await;
    let data_dir = dir.path().join("data");
    let newest = newest_stored(&data_dir);
    let key = SigningKey::from_pem(&std::fs::read(config.checkpoint_key.as_ref().unwrap()).unwrap()).unwrap();
    let head = Checkpoint::parse(&newest.note[..=newest.note.rfind("\n\n").unwrap()]).unwrap();
    let text = Checkpoint { origin: "elsewhere/us-east".into(), ..head }.to_text();
    let signer = qtrail_tlog::NoteSigner::new("qtrail.local/us-east", key.key_pair()).unwrap();
    let forged = qtrail_tlog::sign_note(&text, &signer).unwrap();
    tamper_checkpoints(&data_dir, "us-east", |stored| {
        let rewritten = proto::Checkpoint { note: forged.clone(), ..newest.clone() };
        stored.insert(newest.number, prost::Message::encode_to_vec(&rewritten));
    });
    let server = TestServer::start_with(config).await;
    let fault = verify(&server).await.fault.expect("a fault");
    assert_eq!(fault.checkpoint_number, newest.number);
    assert!(fault.detail.contains("`elsewhere/us-east` is not this collector's log"), "{}", fault.detail);
    server.stop().await;
}

/// The checkpointer signs on only from a note under its configured origin: restarted with
/// another origin prefix (same key), it signs nothing, rather than start a second log
/// over the same events.
#[tokio::test]
async fn a_changed_origin_prefix_stops_signing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = signing_config(dir.path(), false);
    let server = signed_server(config.clone()).await;
    server.stop().await;
    let data_dir = dir.path().join("data");
    let signed_before = newest_number(&data_dir);
    config.log_origin_prefix = "other.example".into();
    let server = TestServer::start_with(config).await;
    assert_eq!(server.publish("us-east", &events("us-east", EVENTS, 1), EVENTS as u64 + 1).await.accepted, 1);
    server.stop().await;
    assert_eq!(newest_number(&data_dir), signed_before, "nothing signed under the other origin");
}

/// Tiles are served up to the size the newest note states: a `tree_size` field rewritten
/// beyond it (no signature covers the field) serves nothing more.
#[tokio::test]
async fn tiles_stop_at_the_size_the_note_states() {
    let dir = tempfile::tempdir().unwrap();
    let server = signed_server(signing_config(dir.path(), false)).await;
    server.stop().await;
    let data_dir = dir.path().join("data");
    let newest = newest_stored(&data_dir);
    tamper_checkpoints(&data_dir, "us-east", |stored| {
        let rewritten = proto::Checkpoint { tree_size: 1024, ..newest.clone() };
        stored.insert(newest.number, prost::Message::encode_to_vec(&rewritten));
    });
    // Without the key, so that no new checkpoint replaces the rewritten one.
    let server = TestServer::start_with_http(&data_dir).await;
    let (status, _, body) = fetch(&server, "/tlog/us-east/tile/entries/001").await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains(&format!("beyond the newest signed tree head ({EVENTS} leaves)")), "{body}");
    server.stop().await;
}

async fn consistency(
    server: &TestServer,
    location: &str,
    old_size: u64,
) -> Result<proto::GetConsistencyProofResponse, tonic::Status> {
    let request = proto::GetConsistencyProofRequest { location: location.into(), old_size };
    server.query().await.get_consistency_proof(authed(request, AUDITOR)).await.map(tonic::Response::into_inner)
}

/// GetConsistencyProof answers the newest signed head and a proof from any older size, which
/// verifies against the tree's roots; bad asks are refused.
#[tokio::test]
async fn consistency_proofs_lead_to_the_newest_signed_head() {
    let dir = tempfile::tempdir().unwrap();
    let server = signed_server(signing_config(dir.path(), false)).await;
    let leaves: Vec<Hash> = server
        .all_events("us-east")
        .await
        .iter()
        .map(|record| leaf_hash(&qtrail_collector::store::canonical_of(record).unwrap()))
        .collect();
    for old in [1, 100, 256, EVENTS as u64] {
        let answer = consistency(&server, "us-east", old).await.unwrap();
        assert_eq!(answer.tree_size, EVENTS as u64);
        let proof: Vec<Hash> = answer.proof.iter().map(|hash| hash.as_slice().try_into().unwrap()).collect();
        let old_root = root(&leaves[..old as usize]);
        assert_eq!(verify_consistency(old, EVENTS as u64, &old_root, &root(&leaves), &proof), Ok(()), "from {old}");
        assert!(answer.note.starts_with(&format!("qtrail.local/us-east\n{EVENTS}\n")));
    }
    let past = consistency(&server, "us-east", EVENTS as u64 + 1).await.unwrap_err();
    assert_eq!(past.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        past.message(),
        format!("old_size {} is past the newest signed tree head, of size {EVENTS}", EVENTS + 1)
    );
    assert_eq!(consistency(&server, "us-east", 0).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert_eq!(consistency(&server, "eu-de", 1).await.unwrap_err().code(), tonic::Code::NotFound);
    server.stop().await;
}

/// A consistency proof leads to the size the note it answers states, not to the checkpoint's
/// `tree_size` field, which no signature covers: rewritten larger or smaller, it changes neither
/// the size answered nor the proof, and the sizes that may be asked stay those below the note's.
#[tokio::test]
async fn consistency_proofs_are_anchored_to_the_signed_note() {
    let dir = tempfile::tempdir().unwrap();
    let server = signed_server(signing_config(dir.path(), false)).await;
    let leaves: Vec<Hash> = server
        .all_events("us-east")
        .await
        .iter()
        .map(|record| leaf_hash(&qtrail_collector::store::canonical_of(record).unwrap()))
        .collect();
    server.stop().await;
    let data_dir = dir.path().join("data");
    let newest = newest_stored(&data_dir);
    for forged_size in [1024, 100] {
        tamper_checkpoints(&data_dir, "us-east", |stored| {
            let rewritten = proto::Checkpoint { tree_size: forged_size, ..newest.clone() };
            stored.insert(newest.number, prost::Message::encode_to_vec(&rewritten));
        });
        // Without the key, so that no new checkpoint replaces the rewritten one.
        let server = TestServer::start_with_http(&data_dir).await;
        for old in [50, 200, EVENTS as u64] {
            let answer = consistency(&server, "us-east", old).await.unwrap();
            assert_eq!((answer.tree_size, &answer.note), (EVENTS as u64, &newest.note), "forged {forged_size}");
            let proof: Vec<Hash> = answer.proof.iter().map(|hash| hash.as_slice().try_into().unwrap()).collect();
            let old_root = root(&leaves[..old as usize]);
            assert_eq!(verify_consistency(old, EVENTS as u64, &old_root, &root(&leaves), &proof), Ok(()));
        }
        let past = consistency(&server, "us-east", EVENTS as u64 + 1).await.unwrap_err();
        assert_eq!(past.code(), tonic::Code::InvalidArgument, "forged {forged_size}");
        server.stop().await;
    }
}

/// A collector that signs nothing has no tree head to prove consistency to, nor tiles to serve.
#[tokio::test]
async fn without_a_checkpoint_key_there_is_no_tree_head() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_http(dir.path()).await;
    server.create_collector("us-east").await;
    let refused = consistency(&server, "us-east", 1).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(refused.message(), "location `us-east` has no signed tree head yet");
    let (status, _, body) = fetch(&server, "/tlog/us-east/checkpoint").await;
    assert_eq!(
        (status, String::from_utf8(body).unwrap().trim_end()),
        (404, "location `us-east` has no signed tree head yet")
    );
    let (status, _, body) = fetch(&server, "/tlog/us-east/key").await;
    assert_eq!((status, String::from_utf8(body).unwrap().trim_end()), (404, "the collector signs no checkpoints"));
    server.stop().await;
}
