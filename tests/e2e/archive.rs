//! Archives end to end, against a real S3-compatible server (`s3s-fs`, started per test): a
//! collector with `--archive-url s3://…` archives its sealed ranges; `qtrail archive verify`
//! passes with the checkpoint public key alone and exits 10 naming the range once one object is
//! damaged; `qtrail archive restore` loads the archive into a scratch data dir that a collector
//! serves, and `qtrail events verify` there holds against the original checkpoints; a collector
//! killed with SIGKILL while archiving, then restarted, leaves a complete archive.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qtrail_cadf::checkpoint::SigningKey;
use qtrail_testkit::{S3Server, wait_until};
use serde_json::Value;

use crate::servers::{AUDITOR_TOKEN, Collector};
use crate::up::{Output, run_qtrail};

pub const LOCATION: &str = "us-east";
/// The archive's prefix in the bucket.
pub const PREFIX: &str = "trail";

/// A test's directory, S3 server and checkpoint key.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub s3: S3Server,
    pub key: PathBuf,
    pub public_key: PathBuf,
}

impl Setup {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let s3 = S3Server::start().expect("start s3s-fs (scripts/test installs it)");
        let (key, public_key) = (dir.path().join("key.pem"), dir.path().join("key.pub.pem"));
        let pem = SigningKey::generate_pem().unwrap();
        std::fs::write(&key, &pem).unwrap();
        std::fs::write(&public_key, SigningKey::from_pem(pem.as_bytes()).unwrap().public_pem()).unwrap();
        Self { dir, s3, key, public_key }
    }

    fn url(&self) -> String {
        self.s3.url(PREFIX)
    }

    /// `--archive-option KEY=VALUE` for each setting that points a client at the S3 server.
    fn option_args(&self) -> Vec<String> {
        self.s3
            .env()
            .into_iter()
            .flat_map(|(key, value)| ["--archive-option".to_owned(), format!("{key}={value}")])
            .collect()
    }

    /// Starts a collector named `name` that checkpoints every second and archives every 100 ms,
    /// at most `max_events` a range.
    pub async fn collector(&self, name: &str, max_events: u64) -> Collector {
        self.collector_with(name, max_events, &[]).await
    }

    /// As [`Setup::collector`], with further flags.
    pub async fn collector_with(&self, name: &str, max_events: u64, extra: &[&str]) -> Collector {
        let mut args: Vec<OsString> = vec!["--checkpoint-key".into(), self.key.clone().into_os_string()];
        let url = self.url();
        let max = max_events.to_string();
        let flags = ["--checkpoint-interval-secs", "1", "--archive-url", &url, "--archive-every", "100ms"];
        args.extend(flags.iter().map(OsString::from));
        args.extend(["--archive-max-events", max.as_str()].iter().map(OsString::from));
        args.extend(self.option_args().into_iter().map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        Collector::start_with(name, self.dir.path(), args, None).await
    }

    /// Runs `qtrail archive <args…> URL --public-key KEY` with the S3 options, JSON output.
    pub fn archive(&self, command: &str, extra: &[&str]) -> Output {
        let url = self.url();
        let key = self.public_key.to_str().unwrap().to_owned();
        let mut args = vec!["--output", "json", "--location", LOCATION, "archive", command, &url, "--public-key", &key];
        let options = self.option_args();
        args.extend(options.iter().map(String::as_str));
        args.extend_from_slice(extra);
        run_qtrail(self.dir.path(), &args)
    }

    /// Waits until `archive verify` passes with ranges from 1 through `last`; returns its ranges.
    pub async fn wait_archived(&self, last: u64) -> Vec<Value> {
        wait_until(&format!("the archive to reach {last}"), Duration::from_secs(90), || async {
            let output = self.archive("verify", &[]);
            let ranges = (output.code == 0).then(|| output.json()["ranges"].as_array().cloned()).flatten()?;
            (ranges.last()?["last"].as_u64() == Some(last)).then_some(ranges)
        })
        .await
    }
}

/// Publishes four new events to `collector` with the example service (`catalogue` keeps its
/// state, so each call's events are new ones).
pub async fn publish_four(collector: &Collector, catalogue: &Path) {
    publish_four_as(collector, catalogue, "acc-example").await;
}

/// As [`publish_four`], for a catalogue owned by `account`.
pub async fn publish_four_as(collector: &Collector, catalogue: &Path, account: &str) {
    let mut command = std::process::Command::new(qtrail_testkit::binary("audited-service"));
    qtrail_testkit::without_tls_env(&mut command)
        .args(["--collector", &collector.url(), "--location", LOCATION, "--account", account, "--data-dir"])
        .arg(catalogue)
        .env("AUDITED_SERVICE_TOKEN", crate::servers::PUBLISHER_TOKEN);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    assert!(output.status.success(), "audited-service: {}", String::from_utf8_lossy(&output.stderr));
}

/// Returns the ranges' (first, last), checking that they follow each other from 1.
pub fn contiguous(ranges: &[Value]) -> Vec<(u64, u64)> {
    let spans: Vec<(u64, u64)> =
        ranges.iter().map(|range| (range["first"].as_u64().unwrap(), range["last"].as_u64().unwrap())).collect();
    assert_eq!(spans.first().map(|span| span.0), Some(1), "{spans:?}");
    assert!(spans.windows(2).all(|pair| pair[1].0 == pair[0].1 + 1), "{spans:?}");
    assert!(ranges.iter().all(|range| range["ok"] == true), "{ranges:?}");
    spans
}

/// Runs `qtrail` against `collector` as an auditor.
pub fn against(setup: &Setup, collector: &Collector, args: &[&str]) -> Output {
    let url = collector.url();
    let base = ["--collector", url.as_str(), "--token", AUDITOR_TOKEN, "--location", LOCATION, "--output", "json"];
    run_qtrail(setup.dir.path(), &[&base[..], args].concat())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_verifies_offline_catches_a_damaged_object_and_restores_against_the_original_checkpoints() {
    let setup = Setup::start();
    let collector = setup.collector("origin", 5).await;
    collector.create_collector(LOCATION).await;
    // Ranges end at checkpoints: each round waits for its own, or one range would take all.
    for round in 0..3 {
        publish_four(&collector, &setup.dir.path().join(format!("catalogue-{round}"))).await;
        setup.wait_archived(4 * (round + 1)).await;
    }
    let spans = contiguous(&setup.wait_archived(12).await);
    assert!(spans.len() >= 2 && spans.iter().all(|(first, last)| last - first < 12), "{spans:?}");
    let objects = setup.s3.objects(PREFIX, ".jsonl.zst");
    assert_eq!(setup.s3.objects(PREFIX, ".manifest.json").len(), spans.len());

    // The newest signed tree head of the original collector, kept out of band.
    let listed = against(&setup, &collector, &["events", "checkpoints", "--limit", "1"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    let note = listed.json()["checkpoints"][0]["note"].as_str().unwrap().to_owned();
    assert!(note.lines().nth(1) == Some("12"), "{note}");
    std::fs::write(setup.dir.path().join("kept.note"), &note).unwrap();

    // Restored into a scratch data dir, served by a collector of its own, verified there with
    // the original key and the kept note.
    let restored_dir = setup.dir.path().join("restored-data");
    let restored = setup.archive("restore", &["--data-dir", restored_dir.to_str().unwrap()]);
    assert_eq!(restored.code, 0, "{restored:?}");
    assert_eq!(restored.json()["lastSeq"], 12, "{restored:?}");
    let again = setup.archive("restore", &["--data-dir", restored_dir.to_str().unwrap()]);
    assert_ne!(again.code, 0, "a second restore into the same dir must be refused: {again:?}");
    let scratch = Collector::start("restored", setup.dir.path()).await;
    assert_eq!(scratch.event_count(LOCATION).await, 12);
    let key = setup.public_key.to_str().unwrap();
    let verified = against(&setup, &scratch, &["events", "verify", "--public-key", key]);
    assert_eq!(verified.code, 0, "{verified:?}");
    let kept = against(&setup, &scratch, &["events", "verify", "--public-key", key, "--checkpoint", "kept.note"]);
    assert_eq!(kept.code, 0, "{kept:?}");
    let original_events = collector.events(LOCATION).await;
    let restored_events = scratch.events(LOCATION).await;
    let hashes = |events: &[qtrail_proto::qtrail::audit::v1::StoredEvent]| -> Vec<Vec<u8>> {
        events.iter().map(|event| event.chain_hash.clone()).collect()
    };
    // The first twelve: each query of either collector adds its own use after them.
    assert_eq!(hashes(&restored_events[..12]), hashes(&original_events[..12]));

    // One byte of one object changed: that range fails, named, and the command exits 10.
    let damaged = &objects[objects.len() / 2];
    let mut bytes = std::fs::read(damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(damaged, bytes).unwrap();
    let name = damaged.file_name().unwrap().to_str().unwrap();
    let (first, last) = name.trim_end_matches(".jsonl.zst").split_once('-').unwrap();
    let (first, last): (u64, u64) = (first.parse().unwrap(), last.parse().unwrap());
    let failed = setup.archive("verify", &[]);
    assert_eq!(failed.code, 10, "{failed:?}");
    let report = failed.json();
    let bad: Vec<&Value> = report["ranges"].as_array().unwrap().iter().filter(|range| range["ok"] == false).collect();
    assert_eq!(bad.len(), 1, "{report}");
    assert_eq!((bad[0]["first"].as_u64(), bad[0]["last"].as_u64()), (Some(first), Some(last)), "{report}");
    assert!(bad[0]["line"].as_str().unwrap().contains("sha-256"), "{report}");
    assert!(failed.stderr.contains(&format!("{LOCATION} {first}..={last}")), "{failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_while_archiving_leaves_a_complete_archive_after_restart() {
    let setup = Setup::start();
    let mut collector = setup.collector("killed", 2).await;
    collector.create_collector(LOCATION).await;
    // A first range archived on its own (ranges end at checkpoints), then eight more events,
    // and the collector killed as soon as they are acknowledged: mid-way through their archive.
    publish_four(&collector, &setup.dir.path().join("catalogue-0")).await;
    setup.wait_archived(4).await;
    for round in 1..3 {
        publish_four(&collector, &setup.dir.path().join(format!("catalogue-{round}"))).await;
    }
    collector.process().kill();
    collector.process().restart().await;
    let spans = contiguous(&setup.wait_archived(12).await);
    assert!(spans.len() >= 2, "{spans:?}");
    let verified = setup.archive("verify", &[]);
    assert_eq!(verified.code, 0, "{verified:?}");
}
