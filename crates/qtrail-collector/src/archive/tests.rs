//! The archiver, verifier and restorer over a `file://` archive and real file stores: ranges end
//! at signed checkpoints, verify offline, restore to the same chain and checkpoints, and a
//! changed manifest or object fails its range.

use std::sync::Arc;
use std::time::Duration;

use qtrail_cadf::checkpoint::{SigningKey, VerifyingKey};
use tokio_util::sync::CancellationToken;

use super::verify::verify_location;
use super::*;
use crate::checkpointer::{Keys, checkpoint_all};
use crate::store::conformance::{append_all, location, simple_events};
use crate::store::{EventStore, FileStore};
use crate::writer::now;

const ORIGIN_PREFIX: &str = "qtrail.local";

fn signing_key() -> SigningKey {
    SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap()
}

/// A store of `us-east` with 12 events and checkpoints at sizes 7 and 12.
fn store_with_checkpoints(dir: &std::path::Path, pem: &str) -> Arc<dyn EventStore> {
    let store: Arc<dyn EventStore> = Arc::new(FileStore::open(dir, 1 << 20).unwrap());
    store.create_collector(&location("us-east"), now()).unwrap();
    let keys = Keys { current: SigningKey::from_pem(pem.as_bytes()).unwrap(), previous: Vec::new() };
    let events = simple_events("us-east", 12);
    append_all(store.as_ref(), "us-east", &events[..7]);
    checkpoint_all(store.as_ref(), &keys, ORIGIN_PREFIX, None, &|| true).unwrap();
    let rest: Vec<(u64, &qtrail_cadf::AuditEvent)> = (8..).zip(&events[7..]).collect();
    let batch = crate::store::conformance::batch("us-east", "pub-1", 1, &rest);
    store.append(vec![batch], now()).unwrap();
    checkpoint_all(store.as_ref(), &keys, ORIGIN_PREFIX, None, &|| true).unwrap();
    store
}

#[tokio::test]
async fn a_file_archive_verifies_restores_and_catches_changes() {
    let pem = SigningKey::generate_pem().unwrap();
    let key = SigningKey::from_pem(pem.as_bytes()).unwrap();
    let public = VerifyingKey::from_pem(key.public_pem().as_bytes()).unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = store_with_checkpoints(dirs.0.path(), &pem);
    let url = format!("file://{}/archive", dirs.1.path().display());
    let archive = Archive::open(&url, &[]).unwrap();
    let config = ArchiverConfig { every: Duration::from_secs(1), max_events: 5, origin_prefix: ORIGIN_PREFIX.into() };
    let archiver = Archiver::new(archive.clone(), store.clone(), key, config);
    assert_eq!(archiver.verified_through(&location("us-east")).unwrap(), 0);
    archiver.round(&CancellationToken::new()).await.unwrap();
    // No checkpoint within 5 events of the start: the first range runs to the first one.
    assert_eq!(archiver.verified_through(&location("us-east")).unwrap(), 12);
    let reports = verify_location(&archive, "us-east", std::slice::from_ref(&public), false).await.unwrap();
    let spans: Vec<(u64, u64, bool)> = reports.iter().map(|r| (r.first, r.last, r.result.is_ok())).collect();
    assert_eq!(spans, vec![(1, 7, true), (8, 12, true)]);

    // A fresh archiver finds where the archive ends from the manifests alone; one with another
    // key trusts none of them, and neither archives over them nor removes them.
    let config = ArchiverConfig { every: Duration::from_secs(1), max_events: 5, origin_prefix: ORIGIN_PREFIX.into() };
    let fresh =
        Archiver::new(archive.clone(), store.clone(), SigningKey::from_pem(pem.as_bytes()).unwrap(), config.clone());
    fresh.round(&CancellationToken::new()).await.unwrap();
    assert_eq!(fresh.verified_through(&location("us-east")).unwrap(), 12);
    let other = Archiver::new(archive.clone(), store.clone(), signing_key(), config);
    other.round(&CancellationToken::new()).await.unwrap();
    assert_eq!(other.verified_through(&location("us-east")).unwrap(), 0);
    assert_eq!(archive.manifests("us-east").await.unwrap().len(), 2);

    // Restored: the same chain and the same signed checkpoints.
    let restored =
        restore::restore(&archive, "us-east", std::slice::from_ref(&public), dirs.2.path(), None).await.unwrap();
    assert_eq!(restored, restore::Restored { ranges: 2, last: 12, checkpoints: 2 });
    let scratch = FileStore::open(dirs.2.path(), 1 << 20).unwrap();
    let chain = |store: &dyn EventStore| -> Vec<Vec<u8>> {
        store.events(&location("us-east"), 1, 100).unwrap().into_iter().map(|record| record.chain_hash).collect()
    };
    assert_eq!(chain(&scratch), chain(store.as_ref()));
    let checkpoints = |store: &dyn EventStore| store.checkpoints(&location("us-east"), None, 10).unwrap();
    assert_eq!(checkpoints(&scratch), checkpoints(store.as_ref()));

    // Another key verifies nothing; a changed manifest or object fails its range only.
    let stranger = VerifyingKey::from_pem(signing_key().public_pem().as_bytes()).unwrap();
    let reports = verify_location(&archive, "us-east", &[stranger], false).await.unwrap();
    assert!(reports.iter().all(|report| report.result.is_err()));
    let listed = archive.manifests("us-east").await.unwrap();
    let manifest_file = dirs.1.path().join("archive/us-east").join(listed[1].path.filename().unwrap());
    let text = std::fs::read_to_string(&manifest_file).unwrap();
    std::fs::write(&manifest_file, text.replace("\"events\":5", "\"events\":6")).unwrap();
    let reports = verify_location(&archive, "us-east", std::slice::from_ref(&public), false).await.unwrap();
    assert!(reports[0].result.is_ok());
    assert!(reports[1].line("us-east").contains("manifest signature"), "{}", reports[1].line("us-east"));
    std::fs::write(&manifest_file, text).unwrap();
    let object_file = dirs.1.path().join("archive/us-east").join(format!("{}.jsonl.zst", format::range_name(1, 7)));
    let mut bytes = std::fs::read(&object_file).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&object_file, bytes).unwrap();
    let reports = verify_location(&archive, "us-east", std::slice::from_ref(&public), false).await.unwrap();
    assert!(reports[0].line("us-east").starts_with("FAILED us-east 1..=7: object"), "{}", reports[0].line("us-east"));
    assert!(reports[1].result.is_ok());
}
