//! The follower over a real file store, with records appended through the store itself, as
//! another replica's writer would.

use std::time::Duration;

use prost_types::Timestamp;

use super::*;
use crate::fanout::Subscriber;
use crate::store::FileStore;
use crate::store::conformance::{at, batch, location, simple_events};

/// Longest wait for a record to be published.
const DEADLINE: Duration = Duration::from_secs(20);
/// A poll interval that never comes in a test: only wake-ups move the follower.
const NEVER: Duration = Duration::from_secs(3600);

/// Appends `count` events to `location` as publisher `publisher`, from its seq `from`.
fn append(store: &dyn EventStore, location: &str, publisher: &str, from: u64, count: usize) {
    let events = simple_events(location, count);
    let items: Vec<(u64, &_)> = events.iter().enumerate().map(|(i, event)| (from + i as u64, event)).collect();
    store.append(vec![batch(location, publisher, 1, &items)], at(1)).expect("append");
}

/// Returns the positions the subscriber receives, of `location`, until it has `last`.
async fn receive_until(live: &mut Subscriber, location: &str, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    let receiving = async {
        while seen.last() != Some(&last) {
            let committed = live.recv().await.expect("no batch is evicted in these tests");
            if committed.location == location {
                seen.extend(committed.records.iter().map(|appended| appended.record.location_seq));
            }
        }
    };
    tokio::time::timeout(DEADLINE, receiving).await.unwrap_or_else(|_| panic!("only {seen:?} arrived"));
    seen
}

struct Running {
    store: Arc<FileStore>,
    live: Subscriber,
    wake: Arc<Notify>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Starts a follower over a file store holding `before` events of `us-east`.
async fn start(before: usize) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path(), 8 * 1024 * 1024).unwrap());
    store.create_collector(&location("us-east"), Timestamp::default()).unwrap();
    if before > 0 {
        append(store.as_ref(), "us-east", "old", 1, before);
    }
    let fanout = Fanout::new(64 * 1024 * 1024);
    let live = fanout.subscribe();
    let follower = Follower::start_at_head(store.clone(), fanout).await.unwrap();
    let (wake, stop) = (Arc::new(Notify::new()), CancellationToken::new());
    let task = tokio::spawn(follower.run(wake.clone(), NEVER, stop.clone()));
    Running { store, live, wake, stop, task, _dir: dir }
}

/// Every record appended through the store after the start reaches a subscriber once, in
/// order, however it was cut into appends and chunks; those stored before the start do not.
#[tokio::test]
async fn a_subscriber_sees_each_record_appended_through_the_store_once_in_order() {
    let mut running = start(3).await;
    append(running.store.as_ref(), "us-east", "p", 1, 2);
    append(running.store.as_ref(), "us-east", "q", 1, 1);
    running.wake.notify_one();
    assert_eq!(receive_until(&mut running.live, "us-east", 6).await, [4, 5, 6]);

    // More than a chunk at once: published in chunks, still each once and in order.
    append(running.store.as_ref(), "us-east", "p", 3, 2 * CHUNK + 7);
    running.wake.notify_one();
    let last = 6 + 2 * CHUNK as u64 + 7;
    let seen = receive_until(&mut running.live, "us-east", last).await;
    assert_eq!(seen, (7..=last).collect::<Vec<_>>());

    // A wake-up with nothing new publishes nothing: the next record is the next one received.
    running.wake.notify_one();
    append(running.store.as_ref(), "us-east", "q", 2, 1);
    running.wake.notify_one();
    assert_eq!(receive_until(&mut running.live, "us-east", last + 1).await, [last + 1]);

    running.stop.cancel();
    running.task.await.unwrap();
}

/// A location created after the start is followed from its first record.
#[tokio::test]
async fn a_location_created_later_is_followed_from_its_start() {
    let mut running = start(0).await;
    running.store.create_collector(&location("eu-de"), Timestamp::default()).unwrap();
    append(running.store.as_ref(), "eu-de", "p", 1, 3);
    running.wake.notify_one();
    assert_eq!(receive_until(&mut running.live, "eu-de", 3).await, [1, 2, 3]);
    running.stop.cancel();
    running.task.await.unwrap();
}

/// The periodic poll catches up without any wake-up.
#[tokio::test]
async fn the_poll_catches_up_without_a_wake_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path(), 8 * 1024 * 1024).unwrap());
    store.create_collector(&location("us-east"), Timestamp::default()).unwrap();
    let fanout = Fanout::new(1024 * 1024);
    let mut live = fanout.subscribe();
    let follower = Follower::start_at_head(store.clone(), fanout).await.unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(follower.run(Arc::new(Notify::new()), Duration::from_millis(20), stop.clone()));
    append(store.as_ref(), "us-east", "p", 1, 2);
    assert_eq!(receive_until(&mut live, "us-east", 2).await, [1, 2]);
    stop.cancel();
    task.await.unwrap();
}
