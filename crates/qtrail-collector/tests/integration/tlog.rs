//! The transparency log over HTTP: checkpoint notes any note verifier accepts, hash and entry
//! tiles that rebuild the signed tree, and the refusals of bad, unauthorized or premature asks.

use std::time::Duration;

use qtrail_cadf::checkpoint::SigningKey;
use qtrail_collector::Config;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{Checkpoint, EMPTY_TREE_HASH, Hash, NoteVerifier, leaf_hash, node_hash, open_note, unpack_entries};

use crate::common::{self, AUDITOR, PUBLISHER, TestServer, authed, events};

const EVENTS: usize = 300;

/// A collector that signs every 50 ms, with `EVENTS` events in us-east and a checkpoint over them.
async fn signed_server(dir: &std::path::Path, public_tiles: bool) -> TestServer {
    let key_file = dir.join("checkpoint-key.pem");
    std::fs::write(&key_file, SigningKey::generate_pem().unwrap()).unwrap();
    let mut config = Config::for_test(dir.join("data"), common::tokens());
    config.checkpoint_key = Some(key_file);
    config.checkpoint_interval = Duration::from_millis(50);
    config.public_tiles = public_tiles;
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

async fn newest_checkpoint(server: &TestServer) -> Option<proto::Checkpoint> {
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

/// RFC 6962 MTH, from the definition.
fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_TREE_HASH,
        1 => leaves[0],
        n => {
            let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

fn hashes(tile: &[u8]) -> Vec<Hash> {
    tile.chunks(32).map(|hash| hash.try_into().unwrap()).collect()
}

#[tokio::test]
async fn tiles_rebuild_the_signed_tree() {
    let dir = tempfile::tempdir().unwrap();
    let server = signed_server(dir.path(), false).await;
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
    assert_eq!((status, cache.as_str()), (200, "no-cache"));
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
    let server = signed_server(dir.path(), false).await;
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
    let server = signed_server(dir.path(), true).await;
    let (status, _, body) = server.http().get_bytes("/tlog/us-east/tile/0/000", &[]).await;
    assert_eq!((status, body.len()), (200, 256 * 32));
    server.stop().await;
}
