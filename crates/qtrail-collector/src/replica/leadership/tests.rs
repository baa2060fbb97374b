//! Three replicas competing for the lock on a real PostgreSQL server: one leads at a time, and
//! another takes over when the leader's session or process dies, or the server restarts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use qtrail_cadf::checkpoint::SigningKey;
use qtrail_testkit::Postgres;

use super::*;
use crate::checkpointer::{Keys, run};
use crate::store::conformance::location;
use crate::store::{EventStore as _, FileStore};

const DEADLINE: Duration = Duration::from_secs(30);
/// How soon a replica must lead again once the leader is gone: a try every second, a second
/// for the server to notice a dead session, and slack for a loaded machine.
const TAKEOVER: Duration = Duration::from_secs(5);

/// The replicas, each with its own stop (its process dying).
struct Replicas {
    leaderships: Vec<Arc<Leadership>>,
    stops: Vec<CancellationToken>,
}

impl Replicas {
    fn leaders(&self) -> Vec<usize> {
        (0..self.leaderships.len()).filter(|index| self.leaderships[*index].role().is_leader()).collect()
    }

    /// Waits until exactly one replica leads, by its role and by its session's own word (a
    /// leader whose session just died may not know yet), and returns it and how long that took.
    async fn one_leader(&self) -> (usize, Duration) {
        let started = tokio::time::Instant::now();
        let deadline = started + DEADLINE;
        loop {
            if let [leader] = self.leaders()[..]
                && self.leaderships[leader].ensure_leader().await
            {
                eprintln!("replica-{leader} leads after {:?}", started.elapsed());
                return (leader, started.elapsed());
            }
            assert!(tokio::time::Instant::now() < deadline, "leaders: {:?}", self.leaders());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs a critical section on every replica while it leads, counting those inside; `overlap`
/// is set if two are ever inside at once, seen on entry or by a sampler.
fn guard_critical_section(replicas: &Replicas, stop: &CancellationToken) -> Arc<AtomicBool> {
    let (inside, overlap) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    for leadership in &replicas.leaderships {
        let (mut role, stop) = (leadership.role(), stop.clone());
        let (inside, overlap) = (inside.clone(), overlap.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = role.wait_until(true) => {}
                    () = stop.cancelled() => return,
                }
                if inside.fetch_add(1, Ordering::SeqCst) > 0 {
                    overlap.store(true, Ordering::SeqCst);
                }
                tokio::select! {
                    () = role.wait_until(false) => {}
                    () = stop.cancelled() => {}
                }
                inside.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }
    let (sampled, stop) = (overlap.clone(), stop.clone());
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            if inside.load(Ordering::SeqCst) > 1 {
                sampled.store(true, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    overlap
}

fn psql(postgres: &Postgres, sql: &str) {
    let output = postgres.client("psql").args(["--dbname", "postgres", "--command", sql]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_at_a_time_and_another_takes_over() {
    let mut postgres = Postgres::start().unwrap();
    let stop = CancellationToken::new();
    let stops: Vec<CancellationToken> = (0..3).map(|_| stop.child_token()).collect();
    let leaderships = stops
        .iter()
        .enumerate()
        .map(|(index, stop)| Arc::new(Leadership::spawn(postgres.url(), format!("replica-{index}"), stop.clone())))
        .collect();
    let replicas = Replicas { leaderships, stops };
    let overlap = guard_critical_section(&replicas, &stop);

    let (first, _) = replicas.one_leader().await;
    for (index, leadership) in replicas.leaderships.iter().enumerate() {
        assert_eq!(leadership.ensure_leader().await, index == first, "replica {index} asked its session");
    }

    // The leader's session dies: a replica leads again (the old one may win the race).
    psql(&postgres, "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted");
    let (second, took) = replicas.one_leader().await;
    assert!(took < TAKEOVER, "a leader again after {took:?}");
    assert!(replicas.leaderships[second].ensure_leader().await);

    // The leader's process stops: another one takes over, and the lock went with the session.
    replicas.stops[second].cancel();
    replicas.leaderships[second].stopped().await;
    assert!(!replicas.leaderships[second].ensure_leader().await);
    let (third, took) = replicas.one_leader().await;
    assert_ne!(third, second);
    assert!(took < TAKEOVER, "another took over after {took:?}");

    // The whole server crashes and comes back: nobody leads meanwhile, one afterwards.
    postgres.kill();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !replicas.leaders().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "still leading: {:?}", replicas.leaders());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    postgres.restart().unwrap();
    let (fourth, took) = replicas.one_leader().await;
    assert!(took < TAKEOVER, "a leader after the restart after {took:?}");
    assert!(replicas.leaderships[fourth].ensure_leader().await);

    assert!(!overlap.load(Ordering::SeqCst), "two replicas led at once");
    stop.cancel();
    for leadership in &replicas.leaderships {
        leadership.stopped().await;
    }
}

/// Without a shared store the collector leads alone, for ever.
#[tokio::test]
async fn alone_it_always_leads() {
    let leadership = Leadership::always();
    assert!(leadership.role().is_leader());
    assert!(leadership.ensure_leader().await);
}

/// Returns the number of the newest checkpoint of `us-east` in `store`, 0 without one.
fn newest_checkpoint(store: &FileStore) -> u64 {
    let location = location("us-east");
    store.checkpoints(&location, None, 1).unwrap().first().map_or(0, |entry| entry.number)
}

/// Waits until the newest checkpoint in `store` is at least `number`.
async fn checkpoints_reach(store: &FileStore, number: u64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while newest_checkpoint(store) < number {
        assert!(tokio::time::Instant::now() < deadline, "checkpoint {} of {number}", newest_checkpoint(store));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two replicas' checkpointers, each over a store of its own so that each one's checkpoints can
/// be told apart: only the leader's signs, and when it stops the other one takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_signs_checkpoints() {
    let postgres = Postgres::start().unwrap();
    let stop = CancellationToken::new();
    let stops: Vec<CancellationToken> = (0..2).map(|_| stop.child_token()).collect();
    let leaderships: Vec<Arc<Leadership>> = stops
        .iter()
        .enumerate()
        .map(|(index, stop)| Arc::new(Leadership::spawn(postgres.url(), format!("replica-{index}"), stop.clone())))
        .collect();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let stores: Vec<Arc<FileStore>> =
        dirs.iter().map(|dir| Arc::new(FileStore::open(dir.path(), 1024 * 1024).unwrap())).collect();
    let pem = SigningKey::generate_pem().unwrap();
    let mut signers = Vec::new();
    for (store, leadership) in stores.iter().zip(&leaderships) {
        store.create_collector(&location("us-east"), prost_types::Timestamp::default()).unwrap();
        let keys = Keys { current: SigningKey::from_pem(pem.as_bytes()).unwrap(), previous: Vec::new() };
        let signing = run(
            store.clone(),
            keys,
            "qtrail.local".into(),
            None,
            Duration::from_millis(20),
            leadership.clone(),
            stop.clone(),
        );
        signers.push(tokio::spawn(signing));
    }
    let replicas = Replicas { leaderships, stops };
    let (leader, _) = replicas.one_leader().await;
    let other = 1 - leader;
    checkpoints_reach(&stores[leader], 3).await;
    assert_eq!(newest_checkpoint(&stores[other]), 0, "the other replica signs nothing");

    replicas.stops[leader].cancel();
    replicas.leaderships[leader].stopped().await;
    checkpoints_reach(&stores[other], 3).await;
    // Read once the other one signs, so that no checkpoint of the old leader is still on its way.
    let signed_by_leader = newest_checkpoint(&stores[leader]);
    checkpoints_reach(&stores[other], 6).await;
    assert_eq!(newest_checkpoint(&stores[leader]), signed_by_leader, "the old leader stopped signing");

    stop.cancel();
    for signer in signers {
        signer.await.unwrap();
    }
}
