//! Receipts end to end, with a spawned collector that signs checkpoints and a spawned runtime
//! given its public key: every call's event gets a receipt the runtime verified and serves at
//! `/receipts/<event id>`, which proves the event offline with the public key alone; and when
//! the collector's data directory is rolled back to an older copy and it restarts, the
//! runtime's receipt task sees the fork (metric, log line) and, with `--on-receipt-failure
//! refuse`, answers calls UNAVAILABLE.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use qtrail_cadf::checkpoint::SigningKey;
use qtrail_proto::qtrail::runtime::v1 as runtime;
use qtrail_proto::qtrail::runtime::v1::program_service_client::ProgramServiceClient;
use qtrail_testkit::{binary, http_get, wait_until};
use qtrail_tlog::{NoteVerifier, ProofFile};
use tonic::Code;

use crate::copy_dir;
use crate::servers::{ALICE_KEY, AUDITOR_TOKEN, Collector, Runtime, RuntimeOptions, authed, lazy_channel, metric_at};

const WAIT: Duration = Duration::from_secs(60);

/// Writes a new checkpoint key and its public half into `dir`; returns their paths.
fn checkpoint_keys(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let pem = SigningKey::generate_pem().unwrap();
    let public = SigningKey::from_pem(pem.as_bytes()).unwrap().public_pem();
    let (key, public_path) = (dir.join("checkpoint-key.pem"), dir.join("checkpoint-key.pub.pem"));
    std::fs::write(&key, pem).unwrap();
    std::fs::write(&public_path, public).unwrap();
    (key, public_path)
}

/// Makes `count` ListPrograms calls (one event each); returns the codes of the refused ones.
async fn calls(runtime: &Runtime, count: usize) -> Vec<(Code, String)> {
    let mut client = ProgramServiceClient::new(lazy_channel(&runtime.url()));
    let mut refused = Vec::new();
    for _ in 0..count {
        if let Err(status) = client.list_programs(authed(runtime::ListProgramsRequest::default(), ALICE_KEY)).await {
            refused.push((status.code(), status.message().to_owned()));
        }
    }
    refused
}

/// Runs `qtrail proof verify FILE --public-key PEM`; returns its exit code.
fn proof_verify(file: &Path, public: &Path) -> Option<i32> {
    let output = std::process::Command::new(binary("qtrail"))
        .args(["proof", "verify"])
        .arg(file)
        .arg("--public-key")
        .arg(public)
        .output()
        .unwrap();
    output.status.code()
}

async fn receipts_verified(runtime: &Runtime, at_least: u64) {
    wait_until(&format!("{at_least} receipts verified"), WAIT, || async {
        let verified = metric_at(&runtime.http_url(), "qtrail_receipts_verified_total", &[]).await;
        (verified >= at_least as f64).then_some(())
    })
    .await;
}

async fn start(dir: &Path) -> (Collector, Runtime, std::path::PathBuf) {
    let (key, public) = checkpoint_keys(dir);
    let collector = start_collector(dir, &key, 1).await;
    collector.create_collector("us-east").await;
    let runtime = start_runtime(dir, &collector, &public).await;
    (collector, runtime, public)
}

/// Starts (or starts again, on the same data) the collector signing with `key` every
/// `interval_secs`.
async fn start_collector(dir: &Path, key: &Path, interval_secs: u64) -> Collector {
    let args: Vec<OsString> = vec![
        "--checkpoint-key".into(),
        key.into(),
        "--checkpoint-interval-secs".into(),
        interval_secs.to_string().into(),
    ];
    Collector::start_with("collector", dir, args, None).await
}

/// Starts (or starts again, on the same data) the runtime with receipts on.
async fn start_runtime(dir: &Path, collector: &Collector, public: &Path) -> Runtime {
    let mut options = RuntimeOptions::new(collector.url()).args(&[
        "--collector-public-key",
        public.to_str().unwrap(),
        "--receipts-token",
        AUDITOR_TOKEN,
        "--on-receipt-failure",
        "refuse",
    ]);
    options.http = true;
    Runtime::start(options, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_gets_a_receipt_that_proves_it_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, runtime, public) = start(dir.path()).await;
    assert!(calls(&runtime, 5).await.is_empty());
    receipts_verified(&runtime, 5).await;

    let key = qtrail_cadf::checkpoint::VerifyingKey::from_pem(&std::fs::read(&public).unwrap()).unwrap();
    let verifier = NoteVerifier::new("qtrail.local/us-east", key.raw()).unwrap();
    let events = collector.events("us-east").await;
    assert_eq!(events.len(), 5);
    for stored in &events {
        let id = &stored.event.as_ref().unwrap().id;
        let (status, text) = http_get(&format!("{}/receipts/{id}", runtime.http_url())).await;
        assert_eq!(status, 200, "receipt of {id}: {text}");
        let proof = ProofFile::parse(&text).unwrap();
        assert_eq!(proof.index, stored.location_seq - 1);
        let head = proof.verify(std::slice::from_ref(&verifier)).unwrap();
        assert!(head.size >= stored.location_seq);
        // The entry is the event itself: its canonical bytes name its id.
        assert!(String::from_utf8_lossy(proof.extra.as_deref().unwrap()).contains(id.as_str()));
    }
    // The CLI proves a fetched receipt with the public key alone, and refuses a tampered copy.
    let id = &events[0].event.as_ref().unwrap().id;
    let (_, text) = http_get(&format!("{}/receipts/{id}", runtime.http_url())).await;
    let (file, forged) = (dir.path().join("receipt.tlog-proof"), dir.path().join("forged.tlog-proof"));
    std::fs::write(&file, &text).unwrap();
    let mut proof = ProofFile::parse(&text).unwrap();
    let extra = String::from_utf8(proof.extra.take().unwrap()).unwrap();
    proof.extra = Some(extra.replace(id.as_str(), "00000000-0000-4000-8000-000000000001").into_bytes());
    std::fs::write(&forged, proof.encode()).unwrap();
    assert_eq!(proof_verify(&file, &public), Some(0));
    assert_eq!(proof_verify(&forged, &public), Some(10));
    let unknown = "00000000-0000-4000-8000-000000000000";
    assert_eq!(http_get(&format!("{}/receipts/{unknown}", runtime.http_url())).await.0, 404);
    assert_eq!(http_get(&format!("{}/receipts/not-a-uuid", runtime.http_url())).await.0, 400);
    assert_eq!(metric_at(&runtime.http_url(), "qtrail_receipt_alarm", &[]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_acknowledged_before_a_restart_still_get_their_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = checkpoint_keys(dir.path());
    // A checkpoint an hour away: the events are acknowledged long before one covers them.
    let mut collector = start_collector(dir.path(), &key, 3600).await;
    collector.create_collector("us-east").await;
    let mut runtime = start_runtime(dir.path(), &collector, &public).await;
    assert!(calls(&runtime, 5).await.is_empty());
    wait_until("5 events acknowledged", WAIT, || async {
        let acked = metric_at(&runtime.http_url(), "qtrail_runtime_events_acked_total", &[]).await;
        (acked >= 5.0).then_some(())
    })
    .await;
    assert_eq!(metric_at(&runtime.http_url(), "qtrail_receipts_verified_total", &[]).await, 0.0);
    // The runtime stops first, so it never sees the checkpoint the collector signs as it stops.
    runtime.process().terminate().await;
    collector.process().terminate().await;

    let collector = start_collector(dir.path(), &key, 1).await;
    let runtime = start_runtime(dir.path(), &collector, &public).await;
    receipts_verified(&runtime, 5).await;
    for stored in collector.events("us-east").await {
        let id = &stored.event.as_ref().unwrap().id;
        assert_eq!(http_get(&format!("{}/receipts/{id}", runtime.http_url())).await.0, 200, "receipt of {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_collector_is_a_fork_and_refuse_stops_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (mut collector, runtime, _) = start(dir.path()).await;
    assert!(calls(&runtime, 3).await.is_empty());
    receipts_verified(&runtime, 3).await;
    // The copy an attacker (or a bad restore) later puts back.
    let data = dir.path().join("collector-data");
    let copy = dir.path().join("collector-data.copy");
    collector.process().terminate().await;
    copy_dir(&data, &copy);
    collector.process().restart().await;
    assert!(calls(&runtime, 4).await.is_empty());
    receipts_verified(&runtime, 7).await;

    collector.process().terminate().await;
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&copy, &data);
    collector.process().restart().await;
    wait_until("the fork is seen", WAIT, || async {
        let forks = metric_at(&runtime.http_url(), "qtrail_receipt_failures_total", &[("kind", "fork")]).await;
        (forks >= 1.0).then_some(())
    })
    .await;
    assert_eq!(metric_at(&runtime.http_url(), "qtrail_receipt_alarm", &[]).await, 1.0);
    let refused = calls(&runtime, 1).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, Code::Unavailable);
    assert!(refused[0].1.contains("audit log failed verification"), "{}", refused[0].1);
    let log = std::fs::read_to_string(dir.path().join("runtime.log")).unwrap();
    assert!(log.contains("receipt verification failed") && log.contains("fork"), "no alarm log line");
}
