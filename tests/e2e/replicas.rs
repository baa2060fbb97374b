//! Three collector replicas over one real PostgreSQL under crashes (issue #20), and a backup
//! of their database with `pg_dump` / `pg_restore` that still verifies.
//!
//! The chaos test runs 3 `qtrail-collector --store postgres://…` replicas sharing one checkpoint
//! key, and 2 runtimes publishing to all three (`--collector` ×3, in different orders) under
//! the delivery tests' workload. For about a minute it kills a random replica with SIGKILL every
//! few seconds and restarts it, and once, in the middle, kills PostgreSQL itself and restarts it.
//! Then it counts with Jepsen's total-queue method (lost 0, duplicated 0 per runtime), verifies
//! every replica's chain and checkpoints, checks that a TailEvents stream kept on each replica
//! (resumed from its last position across its replica's deaths) saw positions 1..=n exactly
//! once in order, and that there was never more than one signer at a time.
//!
//! "One signer at a time" is asserted where it is sound: a replica learns it lost the advisory
//! lock only by checking its session (every second, a check timing out after 2 s), so two
//! replicas may *believe* they lead for up to that detection window — e.g. after PostgreSQL's
//! restart, while the old leader's check is still pending. What must hold is that the store has
//! one checkpoint per number, numbered densely (the checkpointer re-checks the lock right before
//! storing), and that the believed-leader intervals — from the replicas' logs and from sampled
//! `qtrail_replica_leader` gauges — overlap for no longer than the detection window plus a
//! scheduling margin for this loaded machine.

mod observers;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use qtrail_cadf::checkpoint::SigningKey;
use qtrail_proto::qtrail::audit::v1 as audit;
use qtrail_proto::qtrail::audit::v1::event_query_client::EventQueryClient;
use qtrail_testkit::{Postgres, binary, wait_until};

use self::observers::{LeaderSampler, Tail, longest_overlap, signer_intervals, worst_signer_overlap};
use crate::delivery::checker::{Tally, settle};
use crate::delivery::workload::{Call, Driver, History};
use crate::servers::{AUDITOR_TOKEN, Collector, Runtime, RuntimeOptions, authed, lazy_channel};

const LOCATION: &str = "us-east";
const WAIT: Duration = Duration::from_secs(90);
/// How long the faults go on.
const CHAOS: Duration = Duration::from_secs(60);
/// How long two replicas may both believe they lead: a leader checks its lock session every
/// second and a check times out after 2 s (`replica/leadership.rs`), plus 2 s of scheduling
/// margin on a loaded 2-core machine.
const DETECTION_WINDOW: Duration = Duration::from_secs(5);

/// Writes a checkpoint key and its public half into `dir`; returns their paths.
fn checkpoint_keys(dir: &Path) -> (PathBuf, PathBuf) {
    let pem = SigningKey::generate_pem().unwrap();
    let public = SigningKey::from_pem(pem.as_bytes()).unwrap().public_pem();
    let (key, public_path) = (dir.join("checkpoint-key.pem"), dir.join("checkpoint-key.pub.pem"));
    std::fs::write(&key, pem).unwrap();
    std::fs::write(&public_path, public).unwrap();
    (key, public_path)
}

/// Starts replica `name` over the database at `url`, signing every second with `key`.
async fn replica(name: &str, dir: &Path, url: &str, key: &Path) -> Collector {
    let mut args: Vec<OsString> = vec!["--store".into(), url.into(), "--replica-id".into(), name.into()];
    args.extend(["--checkpoint-key".into(), key.as_os_str().to_owned()]);
    args.extend(["--checkpoint-interval-secs".into(), "1".into()]);
    Collector::start_with(name, dir, args, None).await
}

/// A small xorshift generator: random enough to pick a victim, and its seed is printed so a
/// failing run can be replayed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The events the runtimes published (not the replicas' records of auditors' reads).
fn runtime_events(stored: &[audit::StoredEvent]) -> Vec<audit::StoredEvent> {
    let of_runtime = |stored: &&audit::StoredEvent| {
        stored.event.as_ref().is_some_and(|event| event.action.starts_with("quantum-computing"))
    };
    stored.iter().filter(of_runtime).cloned().collect()
}

/// The stored events whose correlation id is one of `calls`' client prefix `driver-`.
fn events_of_driver(stored: &[audit::StoredEvent], driver: &str) -> Vec<audit::StoredEvent> {
    let prefix = format!("{driver}-");
    let of_driver = |stored: &&audit::StoredEvent| {
        stored.event.as_ref().is_some_and(|event| event.correlation_id.starts_with(&prefix))
    };
    stored.iter().filter(of_driver).cloned().collect()
}

/// Runs `qtrail events verify --public-key KEY` against the collector at `url`; returns its
/// exit code and output.
fn cli_verify(url: &str, public_key: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new(binary("qtrail"))
        .args(["--collector", url, "--token", AUDITOR_TOKEN, "--location", LOCATION, "--output", "json"])
        .args(["events", "verify", "--public-key"])
        .arg(public_key)
        .args(extra)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code(), text)
}

/// Returns every checkpoint number of the location, as the replica at `url` lists them.
async fn checkpoint_numbers(url: &str) -> Vec<u64> {
    let mut client = EventQueryClient::new(lazy_channel(url));
    let mut numbers = Vec::new();
    let mut before_number = 0;
    loop {
        let request = audit::ListCheckpointsRequest { location: LOCATION.to_owned(), page_size: 1000, before_number };
        let page =
            client.list_checkpoints(authed(request, AUDITOR_TOKEN)).await.expect("list checkpoints").into_inner();
        assert!(page.damaged.is_empty(), "damaged checkpoints: {:?}", page.damaged);
        let Some(lowest) = page.checkpoints.iter().map(|checkpoint| checkpoint.number).min() else {
            return numbers;
        };
        numbers.extend(page.checkpoints.iter().map(|checkpoint| checkpoint.number));
        if lowest <= 1 {
            return numbers;
        }
        before_number = lowest;
    }
}

/// Kills a random replica every 3–5 s and restarts it a second later, and kills PostgreSQL
/// once half way; returns each replica's kill times. The sleeps are the workload's pacing.
async fn chaos(replicas: &mut [Collector], postgres: &mut Postgres, dice: &mut Dice) -> Vec<Vec<SystemTime>> {
    let mut kills = vec![Vec::new(); replicas.len()];
    let started = Instant::now();
    let mut postgres_killed = false;
    while started.elapsed() < CHAOS {
        if !postgres_killed && started.elapsed() >= CHAOS / 2 {
            postgres_killed = true;
            postgres.kill();
            tokio::time::sleep(Duration::from_secs(2)).await;
            postgres.restart().expect("restart postgresql");
            println!("chaos: postgresql killed and restarted at {:?}", started.elapsed());
        } else {
            let victim = dice.below(replicas.len() as u64) as usize;
            kills[victim].push(SystemTime::now());
            replicas[victim].process().kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            replicas[victim].process().restart().await;
        }
        tokio::time::sleep(Duration::from_millis(3000 + dice.below(2000))).await;
    }
    kills
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_under_kill_9_lose_nothing_and_store_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut postgres = Postgres::start().expect("start postgresql");
    let url = postgres.url();
    let (key, public_key) = checkpoint_keys(dir.path());
    let names = ["replica-1", "replica-2", "replica-3"];
    let mut replicas = Vec::new();
    for name in names {
        replicas.push(replica(name, dir.path(), &url, &key).await);
    }
    replicas[0].create_collector(LOCATION).await;
    let urls: Vec<String> = replicas.iter().map(Collector::url).collect();

    let mut runtimes = Vec::new();
    for (n, order) in [[0, 1, 2], [2, 0, 1]].iter().enumerate() {
        let mut options = RuntimeOptions::new(urls[order[0]].clone()).args(&[
            "--collector",
            &urls[order[1]],
            "--collector",
            &urls[order[2]],
        ]);
        options.name = format!("runtime-{n}");
        options.instance = format!("inst-{n}");
        runtimes.push(Runtime::start(options, dir.path()).await);
    }
    let tails: Vec<Tail> = urls.iter().map(|url| Tail::start(url.clone(), LOCATION)).collect();
    let sampler = LeaderSampler::start(replicas.iter().map(Collector::http_addr).collect(), Duration::from_millis(200));
    let histories = [History::default(), History::default()];
    let drivers: Vec<Driver> = runtimes
        .iter()
        .zip(&histories)
        .enumerate()
        .map(|(n, (runtime, history))| Driver::start(&format!("driver{n}"), &runtime.url(), 1, history))
        .collect();

    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("chaos seed {seed}");
    let kills = chaos(&mut replicas, &mut postgres, &mut Dice(seed)).await;
    for driver in drivers {
        driver.stop().await;
    }

    // Per runtime: every answered call stored exactly once.
    let mut all_calls: Vec<Call> = Vec::new();
    let mut stored = Vec::new();
    for (n, history) in histories.iter().enumerate() {
        let calls = history.calls();
        let (settled, _) = settle(&replicas[n], LOCATION, &calls).await;
        let tally = Tally::of(&calls, &events_of_driver(&settled, &format!("driver{n}")));
        tally.print(&format!("replicas runtime-{n}"));
        tally.assert_exact(&format!("replicas runtime-{n}"));
        all_calls.extend(calls);
        stored = settled;
    }
    let strangers = Tally::of(&all_calls, &runtime_events(&stored)).unexpected;
    assert_eq!(strangers, 0, "runtime events of no call");
    let settled_count = stored.len();

    // Every replica serves the same verified chain and signed checkpoints.
    // Through the CLI, which pages the chain: one VerifyChain call over ~20k events outlasts the
    // test channel's timeout on this machine.
    for replica in &replicas {
        let (code, text) = cli_verify(&replica.url(), &public_key, &[]);
        assert_eq!(code, Some(0), "qtrail events verify at {}: {text}", replica.url());
    }
    let mut numbers = checkpoint_numbers(&replicas[0].url()).await;
    numbers.sort_unstable();
    let dense: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, dense, "checkpoint numbers, one per number, dense from 1");

    // Every tail saw 1..=n exactly once, in order, n at least the events settled above.
    wait_until("every tail caught up", WAIT, || async {
        tails.iter().all(|tail| tail.len() >= settled_count).then_some(())
    })
    .await;
    for (n, tail) in tails.into_iter().enumerate() {
        let seen = tail.stop().await;
        let expected: Vec<u64> = (1..=seen.len() as u64).collect();
        assert!(seen == expected, "tail of {} saw {} events not 1..=n in order", names[n], seen.len());
    }

    // Never more than one signer, beyond the detection window.
    let samples = sampler.stop().await;
    let sampled = longest_overlap(&samples);
    let end = SystemTime::now();
    let intervals: Vec<_> = (0..names.len())
        .flat_map(|n| signer_intervals(n, &dir.path().join(format!("{}.log", names[n])), &kills[n], end))
        .collect();
    let (logged, pair) = worst_signer_overlap(&intervals);
    println!(
        "replicas chaos: kills={} checkpoints={} events={settled_count} signer-intervals={} \
         longest-two-leaders sampled={sampled:?} logged={logged:?}",
        kills.iter().map(Vec::len).sum::<usize>(),
        numbers.len(),
        intervals.len()
    );
    assert!(sampled <= DETECTION_WINDOW, "two leaders sampled for {sampled:?}");
    assert!(logged <= DETECTION_WINDOW, "signers overlapped for {logged:?}: {pair:?}");
    drop(runtimes);
}

/// Makes `count` audited ListPrograms calls through the runtime at `url`.
async fn list_programs(url: &str, count: usize) {
    use qtrail_proto::qtrail::runtime::v1 as runtime;
    use qtrail_proto::qtrail::runtime::v1::program_service_client::ProgramServiceClient;
    let mut client = ProgramServiceClient::new(lazy_channel(url));
    for _ in 0..count {
        let request = authed(runtime::ListProgramsRequest::default(), crate::servers::ALICE_KEY);
        client.list_programs(request).await.expect("a call");
    }
}

/// Waits until `collector` stores `count` runtime events and signs a checkpoint covering them.
async fn wait_signed(collector: &Collector, count: usize) -> usize {
    wait_until(&format!("{count} runtime events stored and signed"), WAIT, || async {
        let stored = collector.events(LOCATION).await;
        let newest = checkpoint_numbers(&collector.url()).await.len();
        (runtime_events(&stored).len() == count && newest > 0).then_some(stored.len())
    })
    .await
}

/// Writes the note of the newest checkpoint the replica at `url` holds into `path`.
async fn save_newest_note(url: &str, path: &Path) {
    let request = audit::ListCheckpointsRequest { location: LOCATION.to_owned(), page_size: 1, before_number: 0 };
    let mut client = EventQueryClient::new(lazy_channel(url));
    let page = client.list_checkpoints(authed(request, AUDITOR_TOKEN)).await.expect("list checkpoints").into_inner();
    let newest = page.checkpoints.first().expect("a checkpoint");
    assert!(!newest.note.is_empty(), "checkpoints carry a tree head note");
    std::fs::write(path, &newest.note).unwrap();
}

/// Runs a PostgreSQL client binary to success.
fn run_client(postgres: &Postgres, name: &str, args: &[&str]) {
    let output = postgres.client(name).args(args).output().unwrap_or_else(|err| panic!("run {name}: {err}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name} {args:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backup_restores_a_trail_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let postgres = Postgres::start().expect("start postgresql");
    let (key, public_key) = checkpoint_keys(dir.path());
    let collector = replica("replica-1", dir.path(), &postgres.url(), &key).await;
    collector.create_collector(LOCATION).await;
    let runtime = Runtime::start(RuntimeOptions::new(collector.url()), dir.path()).await;
    list_programs(&runtime.url(), 10).await;
    wait_signed(&collector, 10).await;

    let before_dump = dir.path().join("before-dump.note");
    save_newest_note(&collector.url(), &before_dump).await;

    // The dump, taken while the replica runs; then more events the backup must not hold.
    // pg_dump runs as `nobody` when the test runs as root: give it a directory it may write.
    let dumps = dir.path().join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    std::fs::set_permissions(&dumps, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let dump = dumps.join("qtrail.dump");
    let dump_arg = dump.to_str().unwrap();
    run_client(&postgres, "pg_dump", &["--format=custom", "--file", dump_arg, "postgres"]);
    list_programs(&runtime.url(), 5).await;
    wait_signed(&collector, 15).await;
    let after_dump = dir.path().join("after-dump.note");
    wait_until("a checkpoint over the events after the dump", WAIT, || async {
        save_newest_note(&collector.url(), &after_dump).await;
        let (code, _) = cli_verify(&collector.url(), &public_key, &["--checkpoint", after_dump.to_str().unwrap()]);
        let note = std::fs::read_to_string(&after_dump).unwrap();
        let before = std::fs::read_to_string(&before_dump).unwrap();
        (code == Some(0) && note != before).then_some(())
    })
    .await;

    run_client(&postgres, "createdb", &["restored"]);
    run_client(&postgres, "pg_restore", &["--dbname", "restored", "--no-owner", dump_arg]);
    let restored = replica("restored", dir.path(), &postgres.url_of("restored"), &key).await;
    let events = runtime_events(&restored.events(LOCATION).await);
    assert_eq!(events.len(), 10, "the runtime's events up to the dump, none after");
    restored.assert_every_chain_verifies().await;
    let (code, text) = cli_verify(&restored.url(), &public_key, &[]);
    assert_eq!(code, Some(0), "qtrail events verify --public-key on the restored trail: {text}");
    let (code, text) = cli_verify(&restored.url(), &public_key, &["--checkpoint", before_dump.to_str().unwrap()]);
    assert_eq!(code, Some(0), "a tree head from before the dump still verifies: {text}");
    // A head auditors saw after the dump is newer than the restored trail: a rollback, reported.
    let (code, text) = cli_verify(&restored.url(), &public_key, &["--checkpoint", after_dump.to_str().unwrap()]);
    assert_eq!(code, Some(10), "a tree head from after the dump shows the rollback: {text}");
}
