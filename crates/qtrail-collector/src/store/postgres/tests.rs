//! Tests of the PostgreSQL backend against a real server (`initdb` in a temp dir): the
//! conformance suite, replicas racing on one location, schema refusal, a server killed mid-run.

use std::path::Path;
use std::sync::{Arc, Barrier, OnceLock};

use qtrail_cadf::{Action, Location};
use qtrail_testkit::Postgres;

use super::*;
use crate::chain::{CheckRange, verify_with_tree};
use crate::store::{AppendBatch, NewEvent, conformance};

/// One server for the tests of this module (each test uses databases of its own).
fn server() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| Postgres::start().expect("start postgresql"))
}

/// Returns the URL of database `name` on `server`, created if missing.
fn database(server: &Postgres, name: &str) -> String {
    let mut admin = postgres::Client::connect(&server.url(), postgres::NoTls).expect("connect");
    let exists = admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).unwrap().is_some();
    if !exists {
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).unwrap();
    }
    server.url_of(name)
}

/// Returns the database name of a test directory: reopening the directory reopens it.
fn name_of(dir: &Path) -> String {
    use sha2::Digest as _;
    format!("t_{}", &hex::encode(sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes()))[..24])
}

fn open(url: &str) -> PgStore {
    PgStore::open(&PgOptions { pool_size: 4, ..PgOptions::new(url) }).expect("open the postgresql store")
}

#[test]
fn conformance_suite() {
    // Every check but retention's: this store keeps every event (it refuses retention settings).
    conformance::run_without_retention(&|dir: &Path| -> Box<dyn EventStore> {
        Box::new(open(&database(server(), &name_of(dir))))
    });
}

fn batch(location: &Location, publisher: &str, events: Vec<NewEvent>) -> AppendBatch {
    AppendBatch {
        location: location.clone(),
        publisher_id: publisher.into(),
        epoch: 1,
        credential: format!("token-{publisher}"),
        events,
        rejected_seqs: vec![],
    }
}

fn new_event(location: &Location, millis: i64, seq: u64) -> NewEvent {
    NewEvent::new(seq, &conformance::event(location.as_str(), Action::JobRead, "IBMid-1", "j", 200, millis))
}

/// Two stores over one database, as two replicas: their threads append to one location at
/// once; the chain is dense, every event stored once, chain and tree verify.
#[test]
fn replicas_appending_to_one_location_serialize_on_its_head() {
    let url = database(server(), "replicas");
    let replicas = [Arc::new(open(&url)), Arc::new(open(&url))];
    let location: Location = "us-east".parse().unwrap();
    replicas[0].create_collector(&location, conformance::at(1)).unwrap();
    let (threads, batches, per_batch) = (6, 10, 7);
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (store, barrier, location) = (replicas[thread % 2].clone(), barrier.clone(), location.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for b in 0..batches {
                    let events = (0..per_batch)
                        .map(|i| {
                            let seq = (b * per_batch + i + 1) as u64;
                            new_event(&location, 1_700_000_000_000 + (thread * 100_000) as i64 + seq as i64, seq)
                        })
                        .collect();
                    let outcome =
                        store.append(vec![batch(&location, &format!("p{thread}"), events)], conformance::at(2));
                    assert_eq!(outcome.unwrap()[0].accepted, per_batch as u32);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let total = (threads * batches * per_batch) as u64;
    let store = replicas[1].as_ref();
    assert_eq!(store.last_seq(&location).unwrap(), total);
    let records = store.events(&location, 1, usize::MAX).unwrap();
    let seqs: Vec<u64> = records.iter().map(|record| record.location_seq).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    let ids: std::collections::HashSet<_> = records.iter().map(|r| r.event.as_ref().unwrap().id.clone()).collect();
    assert_eq!(ids.len() as u64, total);
    let verdict = verify_with_tree(store, &location, CheckRange { from_seq: 1, to_seq: total }, total, None).unwrap();
    assert!(verdict.ok, "{verdict:?}");
    assert_eq!(store.collector(&location).unwrap().unwrap().event_count, total);
}

/// The same event through both replicas at once is stored once, the other a duplicate.
#[test]
fn one_event_through_two_replicas_at_once_is_stored_once() {
    let url = database(server(), "same_event");
    let replicas = [Arc::new(open(&url)), Arc::new(open(&url))];
    let location: Location = "us-east".parse().unwrap();
    replicas[0].create_collector(&location, conformance::at(1)).unwrap();
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(2));
        let event = new_event(&location, 1_700_000_000_000 + round, round as u64 + 1);
        let handles: Vec<_> = replicas
            .iter()
            .map(|store| {
                let (store, barrier, event, location) =
                    (store.clone(), barrier.clone(), event.clone(), location.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let outcome = store.append(vec![batch(&location, "p", vec![event])], conformance::at(2)).unwrap();
                    (outcome[0].accepted, outcome[0].duplicates)
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().map(|handle| handle.join().unwrap()).collect();
        assert_eq!(outcomes.iter().map(|(accepted, _)| accepted).sum::<u32>(), 1, "{outcomes:?}");
        assert_eq!(outcomes.iter().map(|(_, duplicates)| duplicates).sum::<u32>(), 1, "{outcomes:?}");
    }
    assert_eq!(replicas[0].last_seq(&location).unwrap(), 20);
}

#[test]
fn concurrent_creates_across_replicas_have_one_winner() {
    let url = database(server(), "creates");
    let replicas = [Arc::new(open(&url)), Arc::new(open(&url))];
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|n| {
            let (store, barrier) = (replicas[n % 2].clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store.create_collector(&"us-east".parse().unwrap(), conformance::at(1))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|handle| handle.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 1);
    assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::CollectorExists(_)))), "{results:?}");
}

#[test]
fn a_database_with_a_newer_schema_is_refused() {
    let url = database(server(), "newer_schema");
    drop(open(&url));
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&(schema::LATEST + 1)]).unwrap();
    let err = PgStore::open(&PgOptions::new(&url)).unwrap_err();
    assert!(err.to_string().contains(&format!("newer than version {}", schema::LATEST)), "{err}");
    // Opening again at the current version is a no-op, not a second migration.
    client.execute("DELETE FROM schema_version WHERE version > $1", &[&schema::LATEST]).unwrap();
    drop(open(&url));
    let versions: i64 = client.query_one("SELECT count(*) FROM schema_version", &[]).unwrap().get(0);
    assert_eq!(versions, i64::from(schema::LATEST));
}

/// Replicas starting at once against an empty database apply the migrations once.
#[test]
fn replicas_starting_together_migrate_once() {
    let url = database(server(), "start_together");
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PgStore::open(&PgOptions::new(&url)).map(drop)
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap().unwrap();
    }
}

/// A server killed and restarted: the pool drops its dead connections, appends resume, and
/// every acknowledged event is there.
#[test]
fn the_pool_recovers_from_a_killed_server() {
    let mut own = Postgres::start().expect("start postgresql");
    let store = open(&own.url());
    let location: Location = "us-east".parse().unwrap();
    store.create_collector(&location, conformance::at(1)).unwrap();
    let mut acknowledged = 0;
    for seq in 1..=5 {
        store
            .append(vec![batch(&location, "p", vec![new_event(&location, seq, seq as u64)])], conformance::at(2))
            .unwrap();
        acknowledged += 1;
    }
    own.kill();
    let down = store.append(vec![batch(&location, "p", vec![new_event(&location, 6, 6)])], conformance::at(2));
    assert!(matches!(down, Err(StoreError::Backend(_))), "{down:?}");
    own.restart().expect("restart postgresql");
    for seq in 6..=10 {
        let outcome =
            store.append(vec![batch(&location, "p", vec![new_event(&location, seq, seq as u64)])], conformance::at(3));
        assert_eq!(outcome.unwrap()[0].accepted, 1);
        acknowledged += 1;
    }
    assert_eq!(store.last_seq(&location).unwrap(), acknowledged);
    let verdict = verify_with_tree(&store, &location, CheckRange { from_seq: 1, to_seq: 10 }, 10, None).unwrap();
    assert!(verdict.ok, "{verdict:?}");
}

#[test]
fn retention_is_refused_as_something_this_store_does_not_do() {
    let store = open(&database(server(), "unsupported_retention"));
    let policy = proto::RetentionPolicy { location: "us-east".into(), days: 30 };
    let err = store.set_retention(&policy).unwrap_err();
    assert!(matches!(err, StoreError::Unsupported(_)), "{err:?}");
    let status = tonic::Status::from(crate::Error::Store(err));
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "not worth retrying: {status:?}");
    assert!(
        store
            .prune(&"us-east".parse().unwrap(), 10, &|_| false)
            .is_err_and(|err| matches!(err, StoreError::Unsupported(_)))
    );
}
