//! Witnesses against split views, with real processes: a collector acting as a C2SP
//! tlog-witness (`--witness-key-file`) for the log of another (`--witness-url`). Its
//! cosignatures reach the served checkpoints and `qtrail events verify --witness-key` requires
//! them; a fork (two copies of one data dir that diverged, both served) and a rollback (an old
//! copy of a data dir restored) are refused by the witness, and verify then fails on them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qtrail_cadf::checkpoint::SigningKey;
use qtrail_testkit::wait_until;
use qtrail_tlog::{Cosigner, NoteVerifier};
use serde_json::Value;

use crate::copy_dir;
use crate::servers::{AUDITOR_TOKEN, Collector};
use crate::up::{Output, run_qtrail};

const LOCATION: &str = "us-east";
const WITNESS_NAME: &str = "witness.test/w1";

/// The keys of one test and the witness serving them.
struct Setup {
    dir: tempfile::TempDir,
    witness: Collector,
    /// The witness's cosignature verifier key.
    witness_key: String,
    /// The log's checkpoint key and its public half.
    log_key: PathBuf,
    log_public_key: PathBuf,
}

/// Writes a new Ed25519 key to `path`; returns it.
fn new_key(path: &Path) -> SigningKey {
    let pem = SigningKey::generate_pem().unwrap();
    std::fs::write(path, &pem).unwrap();
    SigningKey::from_pem(pem.as_bytes()).unwrap()
}

impl Setup {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (log_key, log_public_key) = (dir.path().join("log-key.pem"), dir.path().join("log-key.pub.pem"));
        let log = new_key(&log_key);
        std::fs::write(&log_public_key, log.public_pem()).unwrap();
        let log_vkey = NoteVerifier::new(&format!("qtrail.local/{LOCATION}"), log.public_key()).unwrap().to_string();
        let witness_pem = dir.path().join("witness-key.pem");
        let witness_key = new_key(&witness_pem);
        let witness_key = Cosigner::new(WITNESS_NAME, witness_key.key_pair()).unwrap().verifier().to_string();
        let args = vec!["--witness-key-file".into(), witness_pem.into_os_string()];
        let args = [args, strings(&["--witness-name", WITNESS_NAME, "--witness-log", &log_vkey])].concat();
        let witness = Collector::start_with("witness", dir.path(), args, None).await;
        Self { dir, witness, witness_key, log_key, log_public_key }
    }

    /// Starts a log collector named `name` (data in `<dir>/<name>-data`) that submits its
    /// checkpoints to the witness, every second.
    async fn log(&self, name: &str) -> Collector {
        let witness_url = format!("http://{}/witness", self.witness.http_addr());
        let args = vec!["--checkpoint-key".into(), self.log_key.clone().into_os_string()];
        let more = ["--checkpoint-interval-secs", "1", "--witness-url", &witness_url];
        let args = [args, strings(&more), strings(&["--witness-verifier-key", &self.witness_key])].concat();
        Collector::start_with(name, self.dir.path(), args, None).await
    }

    /// Runs `qtrail events verify` against `log` with the log key and `extra` flags.
    fn verify(&self, log: &Collector, extra: &[&str]) -> Output {
        let public_key = self.log_public_key.to_str().unwrap();
        let url = log.url();
        let mut args = vec!["--collector", &url, "--token", AUDITOR_TOKEN, "--location", LOCATION];
        args.extend(["--output", "json", "events", "verify", "--public-key", public_key]);
        args.extend_from_slice(extra);
        run_qtrail(self.dir.path(), &args)
    }

    /// Waits until `log`'s newest checkpoint covers `size` leaves and carries the witness's
    /// cosignature; returns verify's verdict.
    async fn wait_cosigned(&self, log: &Collector, size: u64) -> Value {
        wait_until(&format!("a cosigned checkpoint of {size} leaves"), Duration::from_secs(60), || {
            let verified = self.verify(log, &["--witness-key", &self.witness_key]);
            let verdict = (verified.code == 0).then(|| verified.json());
            // At least: each verify is itself recorded on the trail, so the log grows as it is polled.
            std::future::ready(verdict.filter(|verdict| verdict["witnesses"]["treeSize"].as_u64() >= Some(size)))
        })
        .await
    }

    /// Waits until `log`'s newest checkpoint covers `size` leaves and lacks the witness's
    /// cosignature; returns verify's refusal.
    async fn wait_refused(&self, log: &Collector, size: u64) -> Output {
        wait_until(&format!("an uncosigned checkpoint of {size} leaves"), Duration::from_secs(60), || {
            let verified = self.verify(log, &["--witness-key", &self.witness_key]);
            // Of `size` leaves or more: each verify is itself recorded on the trail.
            let refused = verified.code == 10 && uncosigned_size(&verified.stderr).is_some_and(|leaves| leaves >= size);
            std::future::ready(refused.then_some(verified))
        })
        .await
    }

    /// Waits until the witness has refused a checkpoint as a fork or a conflict at least once.
    async fn wait_witness_refused_a_view(&self) {
        let metric = "qtrail_collector_witness_requests_total";
        wait_until("the witness to refuse a view", Duration::from_secs(60), || async {
            let fork = self.witness.metric(metric, &[("result", "fork")]).await;
            let conflict = self.witness.metric(metric, &[("result", "conflict")]).await;
            (fork + conflict >= 1.0).then_some(())
        })
        .await;
    }

    /// Waits until the witness has answered `result` at least once.
    async fn wait_witness_answered(&self, result: &str) {
        let metric = "qtrail_collector_witness_requests_total";
        wait_until(&format!("the witness to answer {result}"), Duration::from_secs(60), || async {
            (self.witness.metric(metric, &[("result", result)]).await >= 1.0).then_some(())
        })
        .await;
    }
}

/// Returns the newest checkpoint `log` lists.
fn newest_checkpoint(setup: &Setup, log: &Collector) -> Value {
    let url = log.url();
    let args = ["--collector", &url, "--token", AUDITOR_TOKEN, "--location", LOCATION, "--output", "json"];
    let listed = run_qtrail(setup.dir.path(), &[&args[..], &["events", "checkpoints", "--limit", "1"]].concat());
    assert_eq!(listed.code, 0, "{listed:?}");
    listed.json()["checkpoints"][0].clone()
}

fn strings(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Publishes four events to `log` with the example service (its own catalogue in `catalogue`,
/// so each run's events are new ones).
async fn publish_four(log: &Collector, catalogue: &Path) {
    let mut command = std::process::Command::new(qtrail_testkit::binary("audited-service"));
    qtrail_testkit::without_tls_env(&mut command)
        .args(["--collector", &log.url(), "--location", LOCATION, "--data-dir"])
        .arg(catalogue)
        .env("AUDITED_SERVICE_TOKEN", crate::servers::PUBLISHER_TOKEN);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    assert!(output.status.success(), "audited-service: {}", String::from_utf8_lossy(&output.stderr));
}

/// Checkpoints get the witness's cosignature (served in the tiles' checkpoint too), and
/// `events verify --witness-key` passes with its key, fails with another key or a quorum the
/// keys given cannot meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_cosigned_and_verify_requires_the_witness() {
    let setup = Setup::start().await;
    let log = setup.log("log").await;
    log.create_collector(LOCATION).await;
    publish_four(&log, &setup.dir.path().join("catalogue")).await;
    let verdict = setup.wait_cosigned(&log, 4).await;
    assert_eq!(verdict["witnesses"]["cosignedBy"][0], WITNESS_NAME, "{verdict}");

    let note = newest_checkpoint(&setup, &log)["note"].as_str().unwrap().to_owned();
    assert!(note.contains(&format!("\n\u{2014} {WITNESS_NAME} ")), "the listed note carries the cosignature: {note}");

    let other = new_key(&setup.dir.path().join("other.pem"));
    let other = Cosigner::new(WITNESS_NAME, other.key_pair()).unwrap().verifier().to_string();
    let wrong = setup.verify(&log, &["--witness-key", &other]);
    assert_eq!(wrong.code, 10, "{wrong:?}");
    assert!(wrong.stderr.contains("cosigned by 0 of the 1 witnesses required"), "{wrong:?}");
    let quorum =
        setup.verify(&log, &["--witness-key", &setup.witness_key, "--witness-key", &other, "--witness-quorum", "2"]);
    assert_eq!(quorum.code, 10, "{quorum:?}");
    let one_of_two =
        setup.verify(&log, &["--witness-key", &setup.witness_key, "--witness-key", &other, "--witness-quorum", "1"]);
    assert_eq!(one_of_two.code, 0, "{one_of_two:?}");
    assert!(log.metric("qtrail_collector_cosignatures_total", &[("result", "ok")]).await >= 1.0);
}

/// Two copies of one data dir that diverge, both served and both submitting to one witness: the
/// second view is refused, and verify of its checkpoints with the witness key fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_is_refused_by_the_witness() {
    let setup = Setup::start().await;
    let mut first = setup.log("first").await;
    first.create_collector(LOCATION).await;
    publish_four(&first, &setup.dir.path().join("catalogue-1")).await;
    setup.wait_cosigned(&first, 4).await;
    first.process().terminate().await;
    copy_dir(&setup.dir.path().join("first-data"), &setup.dir.path().join("second-data"));

    first.process().restart().await;
    publish_four(&first, &setup.dir.path().join("catalogue-2")).await;
    setup.wait_cosigned(&first, 8).await;

    // The copy grows by other events to the same size: another root for size 8.
    let second = setup.log("second").await;
    publish_four(&second, &setup.dir.path().join("catalogue-3")).await;
    setup.wait_refused(&second, 8).await;
    // A fork, or a conflict when the second view is still smaller than what the witness has
    // seen of the first (each verify of the first adds its own event to it).
    setup.wait_witness_refused_a_view().await;
    assert!(second.metric("qtrail_collector_cosignatures_total", &[("result", "failed")]).await >= 1.0);
    // The first view still verifies.
    setup.wait_cosigned(&first, 8).await;
}

/// An old copy of a data dir restored over a newer one: the witness refuses the smaller
/// checkpoint, so verify with its key fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_is_refused_by_the_witness() {
    let setup = Setup::start().await;
    let mut log = setup.log("log").await;
    log.create_collector(LOCATION).await;
    publish_four(&log, &setup.dir.path().join("catalogue-1")).await;
    setup.wait_cosigned(&log, 4).await;
    log.process().terminate().await;
    let data = setup.dir.path().join("log-data");
    let saved = setup.dir.path().join("saved-data");
    copy_dir(&data, &saved);

    log.process().restart().await;
    publish_four(&log, &setup.dir.path().join("catalogue-2")).await;
    setup.wait_cosigned(&log, 8).await;
    log.process().terminate().await;
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::rename(&saved, &data).unwrap();

    log.process().restart().await;
    setup.wait_refused(&log, 4).await;
    // This process's submissions fail (a normal restart's succeed on the retry after the 409):
    // the witness holds 8 leaves and the log only 4.
    assert!(log.metric("qtrail_collector_cosignatures_total", &[("result", "failed")]).await >= 1.0);
    assert_eq!(log.metric("qtrail_collector_cosignatures_total", &[("result", "ok")]).await, 0.0);
    setup.wait_witness_answered("conflict").await;
}

/// Returns the size of the checkpoint verify reports as cosigned by no witness, if it says so.
fn uncosigned_size(stderr: &str) -> Option<u64> {
    let end = stderr.find(" leaves) is cosigned by 0")?;
    let start = stderr[..end].rfind('(')? + 1;
    stderr[start..end].parse().ok()
}
