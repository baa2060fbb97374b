//! The tamper test: stop the collector, alter, delete, insert and reorder records directly in
//! its commit log (recomputing the frames' CRCs, as someone who knows the format would),
//! restart it, and check that VerifyChain names each fault and its position; and that signed
//! checkpoints expose what the chain alone cannot (a rewrite with recomputed hashes, a chain
//! cut short).

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{AUDITOR, TestServer, authed, event, events};
use prost::Message as _;
use qtrail_cadf::checkpoint::{SigningKey, VerifyingKey};
use qtrail_cadf::{ChainHash, chain_hash};
use qtrail_collector::Config;
use qtrail_collector::store::file::offline::{self, Entry};
use qtrail_collector::store::{EventStore as _, FileStore};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::ChainFaultKind;

const EVENTS: usize = 10;

/// Lets `tamper` rewrite the records of `location`, in chain order (position p at p - 1), in
/// the stopped collector's log.
fn tamper(data_dir: &Path, location: &str, tamper: impl FnOnce(&mut Vec<proto::StoredEvent>)) {
    let entries = offline::read(data_dir).expect("read the log");
    let ours = |entry: &Entry| matches!(entry, Entry::Event(record) if record.location == location);
    let mut records: Vec<proto::StoredEvent> = entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::Event(record) if record.location == location => Some((**record).clone()),
            _ => None,
        })
        .collect();
    tamper(&mut records);
    let mut rewritten = Vec::new();
    for entry in entries.into_iter().filter(|entry| !ours(entry)) {
        let collector = matches!(&entry, Entry::Collector(collector) if collector.location == location);
        rewritten.push(entry);
        if collector {
            rewritten.extend(records.drain(..).map(|record| Entry::Event(Box::new(record))));
        }
    }
    offline::write(data_dir, &rewritten).expect("write the log");
}

async fn verify(server: &TestServer, location: &str, range: Option<(u64, u64)>) -> proto::VerifyChainResponse {
    let request = proto::VerifyChainRequest {
        location: location.into(),
        range: range.map(|(from_seq, to_seq)| proto::SeqRange { from_seq, to_seq }),
    };
    server.query().await.verify_chain(authed(request, AUDITOR)).await.expect("verify").into_inner()
}

fn fault(response: &proto::VerifyChainResponse) -> (u64, ChainFaultKind) {
    assert!(!response.ok, "expected a fault: {response:?}");
    let fault = response.fault.as_ref().expect("fault");
    (fault.location_seq, ChainFaultKind::try_from(fault.kind).unwrap())
}

#[tokio::test]
async fn verify_chain_reports_each_kind_of_tampering_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let locations = ["us-east", "eu-de", "ca-tor", "jp-tok", "br-sao", "au-syd", "in-che", "kr-seo"];
    let server = TestServer::start(dir.path()).await;
    for location in locations {
        server.create_collector(location).await;
        let ack = server.publish(location, &events(location, 0, EVENTS), 1).await;
        assert_eq!(ack.accepted as usize, EVENTS);
        assert!(verify(&server, location, None).await.ok);
    }
    server.stop().await;

    // Altered content, hashes untouched.
    tamper(dir.path(), "us-east", |records| {
        records[3].event.as_mut().unwrap().message = "Qiskit Runtime: nothing to see here".into();
    });
    // The fifth record deleted; in a log, the records after it move down.
    tamper(dir.path(), "eu-de", |records| {
        records.remove(4);
    });
    // The sixth record deleted.
    tamper(dir.path(), "ca-tor", |records| {
        records.remove(5);
    });
    // A forged record with a correctly computed hash inserted at 7, the rest moved up.
    tamper(dir.path(), "jp-tok", |records| {
        let prev = ChainHash::from_slice(&records[5].chain_hash).unwrap();
        let forged_event = event("jp-tok", 99);
        let mut forged = records[5].clone();
        forged.event = Some(proto::AuditEvent::from(&forged_event));
        forged.prev_chain_hash = prev.as_bytes().to_vec();
        forged.chain_hash = chain_hash(&prev, &forged_event).as_bytes().to_vec();
        records.insert(6, forged);
    });
    // A forged record with made-up hashes inserted at 5.
    tamper(dir.path(), "br-sao", |records| {
        let mut forged = records[4].clone();
        forged.event = Some(proto::AuditEvent::from(&event("br-sao", 98)));
        forged.chain_hash = vec![0xAB; 32];
        records.insert(4, forged);
    });
    // Records 3 and 4 swapped.
    tamper(dir.path(), "au-syd", |records| records.swap(2, 3));
    // A forged record put before the first one, linking to the genesis hash.
    tamper(dir.path(), "kr-seo", |records| {
        let forged_event = event("kr-seo", 97);
        let mut forged = records[0].clone();
        forged.event = Some(proto::AuditEvent::from(&forged_event));
        forged.chain_hash = chain_hash(&ChainHash::GENESIS, &forged_event).as_bytes().to_vec();
        records.insert(0, forged);
    });
    // The newest record removed: the log's head is its last record, so the chain alone holds
    // up; only a signed checkpoint exposes a cut (see the next test).
    tamper(dir.path(), "in-che", |records| {
        records.pop();
    });

    let server = TestServer::start(dir.path()).await;
    assert_eq!(fault(&verify(&server, "us-east", None).await), (4, ChainFaultKind::Modified));
    assert_eq!(fault(&verify(&server, "eu-de", None).await), (5, ChainFaultKind::Missing));
    assert_eq!(fault(&verify(&server, "ca-tor", None).await), (6, ChainFaultKind::Missing));
    assert_eq!(fault(&verify(&server, "jp-tok", None).await), (7, ChainFaultKind::Inserted));
    assert_eq!(fault(&verify(&server, "br-sao", None).await), (5, ChainFaultKind::Inserted));
    assert_eq!(fault(&verify(&server, "au-syd", None).await), (3, ChainFaultKind::Reordered));
    let cut = verify(&server, "in-che", None).await;
    assert!(cut.ok && cut.checked == EVENTS as u64 - 1, "{cut:?}");
    assert_eq!(fault(&verify(&server, "kr-seo", None).await), (1, ChainFaultKind::Inserted));

    // The fault is the first one: the chain before it verifies, and the response says how far
    // the check got.
    let before = verify(&server, "us-east", Some((1, 3))).await;
    assert!(before.ok && before.checked == 3, "{before:?}");
    let whole = verify(&server, "us-east", None).await;
    assert_eq!(whole.checked, 3);
    let detail = whole.fault.unwrap().detail;
    assert!(detail.contains("no longer matches"), "{detail}");
    // The rest of the altered chain is intact from the record after the fault on.
    assert!(verify(&server, "us-east", Some((5, EVENTS as u64))).await.ok);

    // Reading a tampered location still works.
    assert_eq!(server.all_events("au-syd").await.len(), EVENTS);
    server.stop().await;
}

async fn checkpoints(server: &TestServer, location: &str) -> Vec<proto::Checkpoint> {
    let request = proto::ListCheckpointsRequest { location: location.into(), page_size: 1000, before_number: 0 };
    server.query().await.list_checkpoints(authed(request, AUDITOR)).await.expect("checkpoints").into_inner().checkpoints
}

/// Someone who can write the store rewrites a chain from position 3 on with recomputed hashes
/// (the chain alone cannot show it), and cuts another one short. The checkpoints the collector signed before expose both; they verify with the public
/// key, and number densely from 1.
#[tokio::test]
async fn signed_checkpoints_expose_a_rewritten_or_shortened_chain() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut config = signing_config(dir.path(), &data_dir);
    let key_file = config.checkpoint_key.clone().unwrap();
    let public = VerifyingKey::from_pem(
        SigningKey::from_pem(&std::fs::read(&key_file).unwrap()).unwrap().public_pem().as_bytes(),
    )
    .unwrap();
    config.checkpoint_interval = Duration::from_millis(50);

    let server = TestServer::start_with(config.clone()).await;
    for location in ["us-east", "eu-de"] {
        server.create_collector(location).await;
        assert_eq!(server.publish(location, &events(location, 0, EVENTS), 1).await.accepted as usize, EVENTS);
    }
    // Both locations: a tick signs them one after the other, eu-de first.
    let signed = common::wait_until(Duration::from_secs(20), || async {
        let mut covered = true;
        for location in ["us-east", "eu-de"] {
            let newest = checkpoints(&server, location).await;
            covered &= newest.first().is_some_and(|checkpoint| checkpoint.location_seq == EVENTS as u64);
        }
        covered
    })
    .await;
    assert!(signed, "a checkpoint covers the events");
    let verdict = verify(&server, "us-east", None).await;
    assert!(verdict.checkpoints_checked >= 1, "{verdict:?}");
    server.stop().await;
    let signed_before = newest_numbers(&data_dir);

    // us-east: record 3 altered, every hash from there on recomputed.
    tamper(&data_dir, "us-east", |records| {
        let mut prev = ChainHash::from_slice(&records[1].chain_hash).unwrap();
        for record in &mut records[2..] {
            let mut event = qtrail_cadf::AuditEvent::try_from(record.event.take().unwrap()).unwrap();
            if record.location_seq == 3 {
                event.message = "Qiskit Runtime: nothing to see here".into();
            }
            let hash = chain_hash(&prev, &event);
            record.event = Some(proto::AuditEvent::from(&event));
            record.prev_chain_hash = prev.as_bytes().to_vec();
            record.chain_hash = hash.as_bytes().to_vec();
            prev = hash;
        }
    });
    // eu-de: the three newest records removed.
    tamper(&data_dir, "eu-de", |records| records.truncate(7));

    // Restarted with its key, the collector finds that the chains no longer fit their newest
    // checkpoints, and signs nothing over the forged heads (at start, at its ticks, at its stop).
    let server = TestServer::start_with(config).await;
    // The rewritten chain alone holds up short of the checkpoint; the Merkle tree, which the
    // rewrite left alone, does not.
    let short_of_checkpoint = verify(&server, "us-east", Some((1, EVENTS as u64 - 1))).await;
    assert_eq!(fault(&short_of_checkpoint), (3, ChainFaultKind::Modified));
    assert!(short_of_checkpoint.fault.unwrap().detail.contains("leaf hash"), "the tree catches it");
    let rewritten = verify(&server, "us-east", None).await;
    assert_eq!(fault(&rewritten), (EVENTS as u64, ChainFaultKind::Modified));
    assert!(rewritten.fault.unwrap().detail.contains("signed in checkpoint"), "names the checkpoint");
    let shortened = verify(&server, "eu-de", None).await;
    assert_eq!(fault(&shortened), (8, ChainFaultKind::Missing));
    let detail = shortened.fault.unwrap().detail;
    assert!(detail.starts_with("the chain ends at 7, but checkpoint "), "{detail}");

    for location in ["us-east", "eu-de"] {
        let listed = checkpoints(&server, location).await;
        let numbers: Vec<u64> = listed.iter().map(|checkpoint| checkpoint.number).collect();
        let expected: Vec<u64> = (1..=listed.len() as u64).rev().collect();
        assert_eq!(numbers, expected, "dense from 1, newest first");
        for checkpoint in &listed {
            public.verify(checkpoint).unwrap();
            assert_eq!(checkpoint.location, location);
        }
    }
    server.stop().await;
    assert_eq!(newest_numbers(&data_dir), signed_before, "nothing signed over the forged heads");
}

/// Returns the newest checkpoint number of us-east and eu-de, read from the stopped
/// collector's store.
fn newest_numbers(data_dir: &Path) -> Vec<u64> {
    let store = FileStore::open(data_dir, 1024 * 1024).unwrap();
    ["us-east", "eu-de"]
        .map(|location| store.checkpoints(&location.parse().unwrap(), None, 1).unwrap()[0].number)
        .to_vec()
}

/// Lets `tamper` rewrite the stored checkpoints of `location` (number → stored bytes) in the
/// stopped collector's log.
pub(crate) fn tamper_checkpoints(data_dir: &Path, location: &str, tamper: impl FnOnce(&mut BTreeMap<u64, Vec<u8>>)) {
    let entries = offline::read(data_dir).expect("read the log");
    let mut stored = BTreeMap::new();
    let mut rewritten = Vec::new();
    for entry in entries {
        match entry {
            Entry::Checkpoint { location: of, number, bytes } if of == location => {
                stored.insert(number, bytes);
            }
            entry => rewritten.push(entry),
        }
    }
    tamper(&mut stored);
    rewritten.extend(stored.into_iter().map(|(number, bytes)| Entry::Checkpoint {
        location: location.to_owned(),
        number,
        bytes,
    }));
    offline::write(data_dir, &rewritten).expect("write the log");
}

/// Returns the stored checkpoints of `location` in the stopped collector's file, newest first.
fn stored_checkpoints(data_dir: &Path, location: &str) -> Vec<proto::Checkpoint> {
    let store = FileStore::open(data_dir, 1024 * 1024).unwrap();
    let entries = store.checkpoints(&location.parse().unwrap(), None, 1000).unwrap();
    entries.into_iter().map(|entry| entry.checkpoint.expect("intact")).collect()
}

async fn list_checkpoints(server: &TestServer, location: &str) -> proto::ListCheckpointsResponse {
    let request = proto::ListCheckpointsRequest { location: location.into(), page_size: 1000, before_number: 0 };
    server.query().await.list_checkpoints(authed(request, AUDITOR)).await.expect("checkpoints").into_inner()
}

/// Returns a test config over `data_dir` that signs checkpoints with a new key kept in `dir`.
fn signing_config(dir: &std::path::Path, data_dir: &std::path::Path) -> Config {
    let key_file = dir.join("checkpoint-key.pem");
    std::fs::write(&key_file, SigningKey::generate_pem().unwrap()).unwrap();
    let mut config = Config::for_test(data_dir, common::tokens());
    config.checkpoint_key = Some(key_file);
    config
}

/// A validly signed checkpoint copied into another location's table (or renumbered) is not
/// that location's: the listing marks it damaged, and VerifyChain fails with a verdict naming it.
#[tokio::test]
async fn a_checkpoint_moved_to_another_location_is_damaged_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let server = TestServer::start_with(signing_config(dir.path(), &data_dir)).await;
    for location in ["us-east", "eu-de"] {
        server.create_collector(location).await;
    }
    server.stop().await;
    // Both got a checkpoint at shutdown, and maybe one at start; eu-de's first takes the place
    // of us-east's.
    let foreign = stored_checkpoints(&data_dir, "eu-de").last().expect("a checkpoint").encode_to_vec();
    tamper_checkpoints(&data_dir, "us-east", |stored| {
        stored.insert(1, foreign);
    });

    let server = TestServer::start(&data_dir).await;
    let listed = list_checkpoints(&server, "us-east").await;
    assert!(listed.checkpoints.iter().all(|checkpoint| checkpoint.number != 1), "{listed:?}");
    assert_eq!(
        listed.damaged,
        [proto::DamagedCheckpoint {
            number: 1,
            detail: "checkpoint 1 of location `us-east` holds checkpoint 1 of location `eu-de`".into(),
        }]
    );
    let verdict = verify(&server, "us-east", None).await;
    assert!(!verdict.ok);
    let fault = verdict.fault.unwrap();
    assert_eq!(fault.kind(), ChainFaultKind::CheckpointDamaged);
    assert_eq!((fault.checkpoint_number, fault.location_seq), (1, 0));
    assert_eq!(fault.detail, "checkpoint 1 of location `us-east` holds checkpoint 1 of location `eu-de`");
    server.stop().await;
}

/// Two stored checkpoints swapped: the listing still answers, with the intact checkpoints and
/// the two damaged entries marked; VerifyChain walks the chain against the intact ones and
/// then fails with a CHECKPOINT_DAMAGED verdict naming the newest damaged entry.
#[tokio::test]
async fn swapped_checkpoints_are_a_failed_verification_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut config = signing_config(dir.path(), &data_dir);
    config.checkpoint_interval = Duration::from_millis(50);
    let server = TestServer::start_with(config).await;
    server.create_collector("us-east").await;
    assert_eq!(server.publish("us-east", &events("us-east", 0, EVENTS), 1).await.accepted as usize, EVENTS);
    let signed = common::wait_until(Duration::from_secs(20), || async {
        checkpoints(&server, "us-east").await.first().is_some_and(|checkpoint| checkpoint.number >= 5)
    })
    .await;
    assert!(signed, "five checkpoints are signed");
    server.stop().await;
    let newest = stored_checkpoints(&data_dir, "us-east")[0].number;
    tamper_checkpoints(&data_dir, "us-east", |stored| {
        let (fourth, fifth) = (stored[&4].clone(), stored[&5].clone());
        stored.insert(4, fifth);
        stored.insert(5, fourth);
    });

    // Started without the key: a collector that signs would refuse to follow damaged entries.
    let server = TestServer::start(&data_dir).await;
    let listed = list_checkpoints(&server, "us-east").await;
    let intact: Vec<u64> = listed.checkpoints.iter().map(|checkpoint| checkpoint.number).collect();
    let expected: Vec<u64> = (1..=newest).rev().filter(|number| ![4, 5].contains(number)).collect();
    assert_eq!(intact, expected);
    let damaged: Vec<(u64, &str)> = listed.damaged.iter().map(|entry| (entry.number, entry.detail.as_str())).collect();
    assert_eq!(
        damaged,
        [
            (5, "checkpoint 5 of location `us-east` holds checkpoint 4 of location `us-east`"),
            (4, "checkpoint 4 of location `us-east` holds checkpoint 5 of location `us-east`"),
        ]
    );

    let verdict = verify(&server, "us-east", None).await;
    assert!(!verdict.ok);
    assert_eq!(verdict.checked, EVENTS as u64, "the chain was walked");
    let fault = verdict.fault.unwrap();
    assert_eq!(fault.kind(), ChainFaultKind::CheckpointDamaged);
    assert_eq!(fault.checkpoint_number, 5);
    assert_eq!(
        fault.detail,
        "checkpoint 5 of location `us-east` holds checkpoint 4 of location `us-east`, and 1 more checkpoint \
         entry is damaged"
    );
    server.stop().await;
}

/// A key file that holds no Ed25519 private key stops start-up, naming the file.
#[tokio::test]
async fn a_bad_checkpoint_key_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("not-a-key.pem");
    std::fs::write(&key_file, "hello").unwrap();
    let mut config = Config::for_test(dir.path().join("data"), common::tokens());
    config.checkpoint_key = Some(key_file);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = qtrail_collector::run(listener, config, std::future::pending()).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(text.starts_with("the checkpoint key ") && text.contains("not-a-key.pem"), "{text}");
    assert!(text.contains("not an ed25519 private key in PEM"), "{text}");
}

/// Overwrites the stored hash at `index` of `location`'s tree file in the stopped collector's
/// data dir (the tree is derived, so its length still fits the log and nothing repairs it).
pub(crate) fn tamper_tree(data_dir: &Path, location: &str, index: u64, hash: [u8; 32]) {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::OpenOptions::new().write(true).open(data_dir.join("tree").join(format!("{location}.hashes")));
    file.unwrap().write_all_at(&hash, index * 32).unwrap();
}

/// The v1 signature covers neither a checkpoint's note nor its `tree_size` and `root` fields:
/// a writer of the store who rewrites the tree and then blanks the newest note, or overwrites
/// its root with the forged tree's, gets no signature over the forged tree, because the
/// collector reads the signed head from the note under its own key.
#[tokio::test]
async fn a_forged_tree_head_in_the_newest_checkpoint_is_not_signed_over() {
    type Forgery = fn(&mut proto::Checkpoint);
    let forgeries: [(&str, Forgery); 2] =
        [("note blanked", |newest| newest.note.clear()), ("root overwritten", |newest| newest.root = vec![7; 32])];
    for (forgery, forge) in forgeries {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let mut config = signing_config(dir.path(), &data_dir);
        config.checkpoint_interval = Duration::from_millis(50);
        let server = TestServer::start_with(config.clone()).await;
        server.create_collector("us-east").await;
        // 8 leaves: the root is the one stored hash at level 3.
        assert_eq!(server.publish("us-east", &events("us-east", 0, 8), 1).await.accepted, 8);
        let signed = common::wait_until(Duration::from_secs(20), || async {
            let listed = checkpoints(&server, "us-east").await;
            listed.iter().filter(|checkpoint| checkpoint.tree_size == 8).count() >= 2
        })
        .await;
        assert!(signed, "two checkpoints cover the events");
        server.stop().await;
        tamper_tree(&data_dir, "us-east", qtrail_tlog::stored_hash_index(3, 0), [7; 32]);
        tamper_checkpoints(&data_dir, "us-east", |stored| {
            let (_, bytes) = stored.iter_mut().next_back().unwrap();
            let mut newest = proto::Checkpoint::decode(bytes.as_slice()).unwrap();
            forge(&mut newest);
            *bytes = newest.encode_to_vec();
        });
        let signed_before = stored_checkpoints(&data_dir, "us-east")[0].number;

        let server = TestServer::start_with(config).await;
        assert_eq!(server.publish("us-east", &events("us-east", 8, 1), 9).await.accepted, 1);
        server.stop().await;
        assert_eq!(stored_checkpoints(&data_dir, "us-east")[0].number, signed_before, "{forgery}: nothing signed");
    }
}
