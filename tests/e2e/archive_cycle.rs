//! The full retention cycle end to end (issue #21): a collector archives to a real S3-compatible
//! server (`s3s-fs`), a retention policy set through the CLI makes the events due, the sweep
//! prunes what is archived and verified while a legal hold on one account keeps that account's
//! events; then `qtrail archive verify` is green, queries no longer return the pruned events,
//! what remains verifies against the original (pre-prune) checkpoint and proves inclusion in it,
//! and the archive restored into a scratch collector verifies against the same checkpoint.
//!
//! Policies count in days: the collector runs with the hidden, test-only
//! `--retention-clock-ahead 2days`, so its sweep reckons "now" two days ahead and a one-day
//! policy makes every event due at once.

use std::time::Duration;

use qtrail_proto::qtrail::audit::v1::StoredEvent;
use qtrail_testkit::wait_until;

use crate::archive::{LOCATION, Setup, against, contiguous, publish_four, publish_four_as};
use crate::servers::{ADMIN_TOKEN, Collector};
use crate::up::{Output, run_qtrail};

/// The account whose legal hold keeps its events.
const BOB: &str = "acc-bob";

/// Runs `qtrail` against `collector` as an admin.
fn admin(setup: &Setup, collector: &Collector, args: &[&str]) -> Output {
    let url = collector.url();
    let base = ["--collector", url.as_str(), "--token", ADMIN_TOKEN, "--output", "json"];
    run_qtrail(setup.dir.path(), &[&base[..], args].concat())
}

/// The first twelve events: what the catalogues published (the trail's own use of each query
/// follows them in the same log).
fn published(events: &[StoredEvent]) -> Vec<StoredEvent> {
    events.iter().filter(|event| event.location_seq <= 12).cloned().collect()
}

/// Whether `event` belongs to bob's account (its target names it).
fn bobs(event: &StoredEvent) -> bool {
    let target = event.event.as_ref().and_then(|event| event.target.as_ref());
    target.is_some_and(|target| target.id.contains(&format!(":a/{BOB}:")))
}

/// What a test knows before the prune: the twelve published events, bob's positions among
/// them, and the original signed checkpoint of the twelve (kept as `original.note`).
struct Before {
    events: Vec<StoredEvent>,
    bob_seqs: Vec<u64>,
}

/// Starts collector `name` (two days ahead for retention), publishes twelve events (the middle
/// four bob's), waits until they are archived, holds bob's account and keeps the checkpoint.
async fn prepare(setup: &Setup, name: &str) -> (Collector, Before) {
    let collector = setup.collector_with(name, 4, &["--retention-clock-ahead", "2days"]).await;
    collector.create_collector(LOCATION).await;
    publish_four(&collector, &setup.dir.path().join("catalogue-0")).await;
    publish_four_as(&collector, &setup.dir.path().join("catalogue-bob"), BOB).await;
    publish_four(&collector, &setup.dir.path().join("catalogue-2")).await;
    contiguous(&setup.wait_archived(12).await);
    let events = published(&collector.events(LOCATION).await);
    assert_eq!(events.len(), 12);
    let bob_seqs: Vec<u64> = events.iter().filter(|event| bobs(event)).map(|event| event.location_seq).collect();
    assert_eq!(bob_seqs.len(), 4, "bob's catalogue published four events");
    let held = admin(setup, &collector, &["collectors", "hold", "add", "--account", BOB, "--reason", "case 21"]);
    assert_eq!(held.code, 0, "{held:?}");

    // The signed tree head of the twelve (archived ranges end at checkpoints), kept out of band
    // before anything is pruned.
    let listed = against(setup, &collector, &["events", "checkpoints", "--limit", "1000"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    let notes = listed.json()["checkpoints"].as_array().unwrap().clone();
    let note = notes
        .iter()
        .filter_map(|checkpoint| checkpoint["note"].as_str())
        .find(|note| note.lines().nth(1) == Some("12"));
    std::fs::write(setup.dir.path().join("original.note"), note.expect("a checkpoint of the twelve")).unwrap();
    (collector, Before { events, bob_seqs })
}

/// Waits until only bob's events remain of the twelve, and checks they are his four.
async fn wait_pruned(collector: &Collector, before: &Before) {
    let kept = wait_until("the prune of everyone's but bob's events", Duration::from_secs(60), || async {
        let events = published(&collector.events(LOCATION).await);
        (events.iter().all(bobs) && events.len() == 4).then_some(events)
    })
    .await;
    assert_eq!(kept.iter().map(|event| event.location_seq).collect::<Vec<_>>(), before.bob_seqs);
}

/// Checks the archive and what remains of the log, against the original checkpoint.
fn assert_verifies(setup: &Setup, collector: &Collector) {
    let archived = setup.archive("verify", &[]);
    assert_eq!(archived.code, 0, "the archive still holds all twelve: {archived:?}");
    let key = setup.public_key.to_str().unwrap();
    let remaining =
        against(setup, collector, &["events", "verify", "--public-key", key, "--checkpoint", "original.note"]);
    assert_eq!(remaining.code, 0, "what remains verifies against the original checkpoint: {remaining:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_prune_verify_restore_keeps_held_events_and_the_original_checkpoints() {
    let setup = Setup::start();
    let (collector, before) = prepare(&setup, "cycle").await;
    let set = admin(&setup, &collector, &["collectors", "retention", "set", LOCATION, "1"]);
    assert_eq!(set.code, 0, "{set:?}");
    wait_pruned(&collector, &before).await;
    assert_verifies(&setup, &collector);
    let key = setup.public_key.to_str().unwrap();

    // A kept event proves its inclusion in the original tree of twelve, offline.
    let seq = before.bob_seqs[0].to_string();
    let prove = ["events", "prove", "--seq", seq.as_str(), "--tree-size", "12", "-o", "kept.tlog-proof"];
    let proved = against(&setup, &collector, &prove);
    assert_eq!(proved.code, 0, "{proved:?}");
    let checked = run_qtrail(setup.dir.path(), &["proof", "verify", "kept.tlog-proof", "--public-key", key]);
    assert_eq!(checked.code, 0, "{checked:?}");

    // The archive restored into a scratch collector holds all twelve, against the same checkpoint.
    let scratch_dir = setup.dir.path().join("scratch-data");
    let restored = setup.archive("restore", &["--data-dir", scratch_dir.to_str().unwrap()]);
    assert_eq!(restored.code, 0, "{restored:?}");
    let scratch = Collector::start("scratch", setup.dir.path()).await;
    let restored_events = published(&scratch.events(LOCATION).await);
    let hashes =
        |events: &[StoredEvent]| -> Vec<Vec<u8>> { events.iter().map(|event| event.chain_hash.clone()).collect() };
    assert_eq!(hashes(&restored_events), hashes(&before.events));
    let verified =
        against(&setup, &scratch, &["events", "verify", "--public-key", key, "--checkpoint", "original.note"]);
    assert_eq!(verified.code, 0, "{verified:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_as_it_prunes_loses_nothing_unarchived_and_finishes_the_prune_on_restart() {
    let setup = Setup::start();
    let (mut collector, before) = prepare(&setup, "pruning").await;
    let set = admin(&setup, &collector, &["collectors", "retention", "set", LOCATION, "1"]);
    assert_eq!(set.code, 0, "{set:?}");
    // SIGKILL as soon as the prune shows: the sweep of the next round, the archiver and the
    // checkpointer are all under way then.
    wait_until("the prune to begin", Duration::from_secs(60), || async {
        (published(&collector.events(LOCATION).await).len() < 12).then_some(())
    })
    .await;
    collector.process().kill();
    collector.process().restart().await;
    wait_pruned(&collector, &before).await;
    assert_verifies(&setup, &collector);
    let chain = collector.verify_chain(LOCATION).await;
    assert!(chain.ok, "{chain:?}");
}
