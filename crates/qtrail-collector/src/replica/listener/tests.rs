//! The listener against a real PostgreSQL server: its notifications wake the follower, and
//! after the server is killed and restarted it reconnects and the follower catches up on what
//! was appended meanwhile, with no gap and no duplicate.

use prost_types::Timestamp;
use qtrail_testkit::Postgres;

use super::*;
use crate::fanout::{Fanout, Subscriber};
use crate::replica::Follower;
use crate::store::conformance::{at, batch, location, simple_events};
use crate::store::{EventStore, FileStore};

const DEADLINE: Duration = Duration::from_secs(30);

/// Sends what an append transaction of the shared store sends on commit.
fn notify(postgres: &Postgres) {
    let output = postgres
        .client("psql")
        .args(["--dbname", "postgres", "--command", &format!("NOTIFY {CHANNEL}, 'us-east'")])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn append(store: &dyn EventStore, from: u64, count: usize) {
    let events = simple_events("us-east", count);
    let items: Vec<(u64, &_)> = events.iter().enumerate().map(|(i, event)| (from + i as u64, event)).collect();
    store.append(vec![batch("us-east", "p", 1, &items)], at(1)).unwrap();
}

/// Returns the positions received until `last`.
async fn receive_until(live: &mut Subscriber, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    let receiving = async {
        while seen.last() != Some(&last) {
            let committed = live.recv().await.unwrap();
            seen.extend(committed.records.iter().map(|appended| appended.record.location_seq));
        }
    };
    tokio::time::timeout(DEADLINE, receiving).await.unwrap_or_else(|_| panic!("only {seen:?} arrived"));
    seen
}

/// Waits until the listener has listened in `count` sessions.
async fn sessions_reach(listened: &mut watch::Receiver<u64>, count: u64) {
    tokio::time::timeout(DEADLINE, listened.wait_for(|sessions| *sessions >= count))
        .await
        .expect("the listener did not listen in time")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_wake_the_follower_and_a_restart_loses_nothing() {
    let mut postgres = Postgres::start().unwrap();
    let wake = Arc::new(Notify::new());
    let (sessions, mut listened) = watch::channel(0);
    let stop = CancellationToken::new();
    let listening = tokio::spawn(listen(postgres.url(), wake.clone(), Some(sessions), stop.clone()));
    sessions_reach(&mut listened, 1).await;
    // The wake-up of the connect itself, then one of a notification alone.
    tokio::time::timeout(DEADLINE, wake.notified()).await.expect("woken on connect");
    notify(&postgres);
    tokio::time::timeout(DEADLINE, wake.notified()).await.expect("woken by the notification");

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path(), 8 * 1024 * 1024).unwrap());
    store.create_collector(&location("us-east"), Timestamp::default()).unwrap();
    let fanout = Fanout::new(8 * 1024 * 1024);
    let mut live = fanout.subscribe();
    let follower = Follower::start_at_head(store.clone(), fanout).await.unwrap();
    // No poll in this test: only the listener wakes the follower.
    let following = tokio::spawn(follower.run(wake.clone(), Duration::from_secs(3600), stop.clone()));
    append(store.as_ref(), 1, 3);
    notify(&postgres);
    assert_eq!(receive_until(&mut live, 3).await, [1, 2, 3]);

    // Appended while the server is down: no notification is ever sent for these.
    postgres.kill();
    append(store.as_ref(), 4, 2);
    postgres.restart().unwrap();
    sessions_reach(&mut listened, 2).await;
    assert_eq!(receive_until(&mut live, 5).await, [4, 5], "caught up on reconnect");

    append(store.as_ref(), 6, 1);
    notify(&postgres);
    assert_eq!(receive_until(&mut live, 6).await, [6], "nothing published twice");

    stop.cancel();
    listening.await.unwrap();
    following.await.unwrap();
}
