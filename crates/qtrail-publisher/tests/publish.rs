//! The outbox and the publisher against an in-memory collector on a real socket, with a real
//! redb database in a temporary directory.

mod support;

use std::sync::Arc;
use std::time::Duration;

use qtrail_publisher::testing::CollectorStub;
use qtrail_publisher::{CommitMode, Outbox, OutboxError, OutboxLimits, Publisher, PublisherConfig};
use redb::Database;
use support::{event, location};

const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    _dir: tempfile::TempDir,
    db: Arc<Database>,
    outbox: Outbox,
}

/// An outbox whose events the tests commit in plain durable transactions of their own.
fn fixture(limits: OutboxLimits) -> Fixture {
    let (dir, db, outbox) = support::open(limits, CommitMode::PerTransaction);
    Fixture { _dir: dir, db, outbox }
}

/// Enqueues `events` in one transaction each and returns their ids, in seq order.
fn enqueue(fixture: &Fixture, range: std::ops::Range<usize>) -> Vec<String> {
    let mut ids = Vec::new();
    for n in range {
        let event = event(n);
        let txn = fixture.db.begin_write().unwrap();
        fixture.outbox.enqueue(&txn, &event).unwrap();
        txn.commit().unwrap();
        ids.push(event.id.to_string());
    }
    fixture.outbox.wake_publisher();
    ids
}

fn config(url: String) -> PublisherConfig {
    let mut config = PublisherConfig::new(url, location());
    config.token = Some("publisher-secret".into());
    config.linger = Duration::from_millis(5);
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    config
}

async fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    qtrail_server::poll::holds(WAIT, || std::future::ready(done())).await
}

fn stored_ids(stub: &CollectorStub) -> Vec<String> {
    stub.stored().into_iter().map(|stored| stored.event.id).collect()
}

#[test]
fn enqueue_commits_with_the_callers_transaction_and_numbers_densely() {
    let fixture = fixture(OutboxLimits::default());
    let aborted = fixture.db.begin_write().unwrap();
    assert_eq!(fixture.outbox.enqueue(&aborted, &event(0)).unwrap(), 1);
    aborted.abort().unwrap();
    assert_eq!(fixture.outbox.depth().unwrap().events, 0, "an aborted transaction leaves no event");

    enqueue(&fixture, 0..3);
    assert_eq!(fixture.outbox.position().unwrap(), (1, 3), "the aborted enqueue used up no seq");
    let depth = fixture.outbox.depth().unwrap();
    assert_eq!(depth.events, 3);
    assert!(depth.bytes > 0);
    assert!(depth.oldest_age.is_some());
    let batch = fixture.outbox.read_after(0, 10, usize::MAX).unwrap();
    assert_eq!(batch.events.iter().map(|queued| queued.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(!batch.more);
    let limited = fixture.outbox.read_after(1, 1, usize::MAX).unwrap();
    assert_eq!(limited.events[0].seq, 2);
    assert!(limited.more);

    assert_eq!(fixture.outbox.remove(&[2]).unwrap(), 1);
    assert_eq!(fixture.outbox.remove_through(3).unwrap(), 2);
    assert_eq!(fixture.outbox.depth().unwrap(), Default::default());
}

#[test]
fn identity_and_counters_survive_a_reopen() {
    let fixture = fixture(OutboxLimits::default());
    enqueue(&fixture, 0..2);
    let id = fixture.outbox.publisher_id().to_owned();
    assert!(id.starts_with("runtime-test-") && id.len() == "runtime-test-".len() + 8, "{id}");
    drop(fixture.outbox);
    let reopened =
        Outbox::open(fixture.db.clone(), "runtime-test", OutboxLimits::default(), CommitMode::PerTransaction).unwrap();
    assert_eq!(reopened.publisher_id(), id);
    assert_eq!(reopened.position().unwrap(), (1, 2));
    assert_eq!(reopened.depth().unwrap().events, 2);
}

#[test]
fn a_full_outbox_refuses_by_events_and_by_bytes() {
    let fixture = fixture(OutboxLimits { max_events: 2, max_bytes: u64::MAX });
    enqueue(&fixture, 0..2);
    let txn = fixture.db.begin_write().unwrap();
    assert!(matches!(fixture.outbox.enqueue(&txn, &event(3)), Err(OutboxError::Full { events: 2, .. })));
    drop(txn);

    let small = fixture_with_bytes(100);
    let txn = small.db.begin_write().unwrap();
    assert!(matches!(small.outbox.enqueue(&txn, &event(0)), Err(OutboxError::Full { events: 0, bytes: 0 })));
}

fn fixture_with_bytes(max_bytes: u64) -> Fixture {
    fixture(OutboxLimits { max_events: 1000, max_bytes })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_in_ordered_bounded_batches_and_deletes_what_is_acked() {
    let fixture = fixture(OutboxLimits::default());
    let ids = enqueue(&fixture, 0..2500);
    let stub = CollectorStub::new();
    let server = stub.start().await;
    let publisher = Publisher::spawn(fixture.outbox.clone(), config(server.url())).unwrap();

    assert!(stub.wait_for(WAIT, |stub| stub.stored().len() == 2500).await);
    assert_eq!(stored_ids(&stub), ids, "events arrive once each, in seq order");
    let batches = stub.batches();
    assert_eq!(batches.iter().map(|batch| batch.batch_seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(batches.iter().map(|batch| batch.seqs.len()).collect::<Vec<_>>(), [1000, 1000, 500]);
    assert_eq!(batches[0].seqs.first(), Some(&1));
    assert_eq!(batches[2].seqs.last(), Some(&2500));

    let hello = &stub.hellos()[0];
    assert_eq!(hello.publisher_id, fixture.outbox.publisher_id());
    assert_eq!(hello.location, "us-east");
    assert_eq!(hello.epoch, 1);
    assert_eq!(stub.authorizations()[0].as_deref(), Some("Bearer publisher-secret"));

    assert!(wait_until(|| fixture.outbox.depth().unwrap().events == 0).await, "acked events leave the outbox");
    // The task counts a batch as acked before removing it: an empty outbox means counted.
    let stats = publisher.stats().snapshot();
    assert_eq!((stats.published, stats.batches, stats.acked, stats.rejected), (2500, 3, 2500, 0));
    assert!(stats.connected);
    assert!(publisher.shutdown(Duration::from_secs(5)).await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_budget_splits_batches() {
    let fixture = fixture(OutboxLimits::default());
    enqueue(&fixture, 0..10);
    let event_bytes = fixture.outbox.read_after(0, 1, usize::MAX).unwrap().events[0].encoded.len();
    let stub = CollectorStub::new();
    let server = stub.start().await;
    let mut config = config(server.url());
    // Room for three events (they all have nearly the same size).
    config.max_batch_bytes = event_bytes * 3 + event_bytes / 2;
    let publisher = Publisher::spawn(fixture.outbox.clone(), config).unwrap();
    assert!(stub.wait_for(WAIT, |stub| stub.stored().len() == 10).await);
    let sizes: Vec<usize> = stub.batches().iter().map(|batch| batch.seqs.len()).collect();
    assert_eq!(sizes, [3, 3, 3, 1]);
    publisher.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linger_gathers_events_committed_while_a_batch_is_in_flight() {
    let fixture = fixture(OutboxLimits::default());
    let stub = CollectorStub::new();
    stub.hold_acks(true);
    let server = stub.start().await;
    let mut config = config(server.url());
    // Long enough that nine separate commits land within it even on a loaded machine.
    config.linger = Duration::from_secs(2);
    let publisher = Publisher::spawn(fixture.outbox.clone(), config).unwrap();
    assert!(stub.wait_for(WAIT, |stub| stub.hellos().len() == 1).await);
    enqueue(&fixture, 0..1);
    assert!(stub.wait_for(WAIT, |stub| stub.batches().len() == 1).await, "the first event goes at once");
    // Its Ack is held: the next events wait for the linger, gathering into one batch.
    enqueue(&fixture, 1..10);
    assert!(stub.wait_for(WAIT, |stub| stub.batches().len() == 2).await);
    let sizes: Vec<usize> = stub.batches().iter().map(|batch| batch.seqs.len()).collect();
    assert_eq!(sizes, [1, 9], "one batch after the linger, not one per commit");
    stub.hold_acks(false);
    stub.release_acks();
    assert!(stub.wait_for(WAIT, |stub| stub.stored().len() == 10).await);
    publisher.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_publisher_sends_a_part_filled_batch_at_once() {
    let fixture = fixture(OutboxLimits::default());
    let stub = CollectorStub::new();
    let server = stub.start().await;
    let mut config = config(server.url());
    // A linger no test waits out: the events can only arrive because nothing was in flight.
    config.linger = Duration::from_secs(3600);
    let publisher = Publisher::spawn(fixture.outbox.clone(), config).unwrap();
    assert!(stub.wait_for(WAIT, |stub| stub.hellos().len() == 1).await);
    enqueue(&fixture, 0..3);
    assert!(stub.wait_for(WAIT, |stub| stub.stored().len() == 3).await);
    publisher.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_the_window_of_batches_is_unacknowledged() {
    let fixture = fixture(OutboxLimits::default());
    enqueue(&fixture, 0..200);
    let stub = CollectorStub::new();
    stub.hold_acks(true);
    let server = stub.start().await;
    let mut config = config(server.url());
    config.max_batch_events = 10;
    let publisher = Publisher::spawn(fixture.outbox.clone(), config).unwrap();

    let window = qtrail_proto::limits::MAX_UNACKED_BATCHES as usize;
    assert!(stub.wait_for(WAIT, |stub| stub.batches().len() == window).await);
    assert_eq!(fixture.outbox.depth().unwrap().events, 200, "nothing is deleted before its ack");
    stub.hold_acks(false);
    stub.release_acks();
    assert!(stub.wait_for(WAIT, |stub| stub.stored().len() == 200).await);
    assert_eq!(stub.batches().len(), 20);
    assert_eq!(stub.max_unacked(), window as u64, "the publisher filled the window and never exceeded it");
    assert!(wait_until(|| fixture.outbox.depth().unwrap().events == 0).await);
    publisher.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_stops_acking_is_given_up_and_the_batch_resent() {
    let fixture = fixture(OutboxLimits::default());
    let ids = enqueue(&fixture, 0..3);
    let stub = CollectorStub::new();
    // The collector stores batches but never answers, and keeps the stream open.
    stub.hold_acks(true);
    let server = stub.start().await;
    let mut config = config(server.url());
    config.ack_timeout = Duration::from_millis(300);
    let publisher = Publisher::spawn(fixture.outbox.clone(), config).unwrap();

    // The batch is stored but never acknowledged: the publisher gives the stream up and opens a
    // new one, whose Welcome covers the stored events, so they leave the outbox unsent.
    assert!(stub.wait_for(WAIT, |stub| stub.hellos().len() >= 2).await, "the silent stream is given up");
    assert!(wait_until(|| fixture.outbox.depth().unwrap().events == 0).await);
    assert_eq!(stored_ids(&stub), ids);
    assert!(publisher.stats().snapshot().reconnects >= 1);
    publisher.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_is_never_welcomed_is_given_up() {
    let fixture = fixture(OutboxLimits::default());
    enqueue(&fixture, 0..1);
    // A peer that accepts connections and then says nothing: a network gone silent while a
    // stream opens. The kernel completes the handshake, so only a timeout can tell.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let peer = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    let mut config = config(url);
    config.ack_timeout = Duration::from_millis(300);
    let publisher = Publisher::spawn(fixture.outbox.clone(), config).unwrap();

    let reconnected = wait_until(|| accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2).await;
    assert!(reconnected, "the publisher gives up a stream without a welcome and connects again");
    assert_eq!(fixture.outbox.depth().unwrap().events, 1, "the event waits in the outbox");
    assert!(!publisher.shutdown(Duration::from_millis(100)).await);
    peer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_events_are_dropped_counted_and_never_resent() {
    let fixture = fixture(OutboxLimits::default());
    let ids = enqueue(&fixture, 0..5);
    let stub = CollectorStub::new();
    stub.reject_event(&ids[2]);
    let server = stub.start().await;
    let publisher = Publisher::spawn(fixture.outbox.clone(), config(server.url())).unwrap();

    assert!(stub.wait_for(WAIT, |stub| stub.stored().len() == 4).await);
    assert!(wait_until(|| fixture.outbox.depth().unwrap().events == 0).await, "the rejected event is dropped");
    // Counted before the removal: an empty outbox means counted.
    let stats = publisher.stats().snapshot();
    assert_eq!((stats.acked, stats.rejected), (4, 1));

    // A new stream has nothing to resend.
    server.stop().await;
    let server = stub.start().await;
    publisher.shutdown(Duration::from_secs(5)).await;
    let publisher = Publisher::spawn(fixture.outbox.clone(), config(server.url())).unwrap();
    assert!(stub.wait_for(WAIT, |stub| stub.hellos().len() == 2).await);
    enqueue(&fixture, 5..6);
    assert!(stub.wait_for(WAIT, |stub| stub.stored().len() == 5).await);
    let sent: usize = stub.batches().iter().map(|batch| batch.seqs.len()).sum();
    assert_eq!(sent, 6, "five first, then only the new one");
    publisher.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_stream_closes_and_resends_only_unacked_events() {
    let fixture = fixture(OutboxLimits::default());
    let ids = enqueue(&fixture, 0..30);
    let stub = CollectorStub::new();
    // The first stream dies on its third batch, which is neither stored nor acknowledged.
    stub.close_next_stream_after(3);
    let server = stub.start().await;
    let mut config = config(server.url());
    config.max_batch_events = 5;
    let publisher = Publisher::spawn(fixture.outbox.clone(), config).unwrap();

    assert!(stub.wait_for(WAIT, |stub| stub.stored().len() == 30).await);
    assert_eq!(stored_ids(&stub), ids, "every event stored once, in order");
    let batches = stub.batches();
    let first: Vec<&Vec<u64>> = batches.iter().filter(|batch| batch.stream == 1).map(|batch| &batch.seqs).collect();
    let second: Vec<_> = batches.iter().filter(|batch| batch.stream == 2).collect();
    assert_eq!(first.len(), 3);
    assert_eq!(second[0].batch_seq, 1, "batch_seq starts again from 1 on a new stream");
    let resent: Vec<u64> = second.iter().flat_map(|batch| batch.seqs.clone()).collect();
    assert_eq!(resent, (11..=30).collect::<Vec<u64>>(), "acked batches are not resent");
    assert!(publisher.stats().snapshot().reconnects >= 1);
    publisher.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_stored_seq_drops_what_the_collector_has() {
    let fixture = fixture(OutboxLimits::default());
    let ids = enqueue(&fixture, 0..10);
    let stub = CollectorStub::new();
    stub.set_stored_seq(fixture.outbox.publisher_id(), 1, 6);
    let server = stub.start().await;
    let publisher = Publisher::spawn(fixture.outbox.clone(), config(server.url())).unwrap();

    assert!(stub.wait_for(WAIT, |stub| stub.stored().len() == 4).await);
    assert_eq!(stored_ids(&stub), ids[6..]);
    assert_eq!(stub.batches()[0].seqs, [7, 8, 9, 10]);
    assert!(wait_until(|| fixture.outbox.depth().unwrap().events == 0).await);
    publisher.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_ahead_of_the_outbox_starts_a_new_epoch() {
    let fixture = fixture(OutboxLimits::default());
    let ids = enqueue(&fixture, 0..3);
    let stub = CollectorStub::new();
    // The collector stored seq 1..=50 of epoch 1: this database lost its history.
    stub.set_stored_seq(fixture.outbox.publisher_id(), 1, 50);
    let server = stub.start().await;
    let publisher = Publisher::spawn(fixture.outbox.clone(), config(server.url())).unwrap();

    assert!(stub.wait_for(WAIT, |stub| stub.stored().len() == 3).await);
    assert_eq!(stored_ids(&stub), ids, "no event is taken for stored");
    let stored = stub.stored();
    assert!(stored.iter().all(|event| event.epoch == 2));
    assert_eq!(stored.iter().map(|event| event.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(fixture.outbox.position().unwrap(), (2, 3));
    publisher.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_while_there_is_no_collector_for_the_location() {
    let fixture = fixture(OutboxLimits::default());
    let ids = enqueue(&fixture, 0..3);
    let stub = CollectorStub::new();
    stub.refuse_streams(Some((tonic::Code::FailedPrecondition, "no collector for location `us-east`")));
    let server = stub.start().await;
    let publisher = Publisher::spawn(fixture.outbox.clone(), config(server.url())).unwrap();

    assert!(stub.wait_for(WAIT, |stub| stub.streams() >= 3).await, "the publisher keeps retrying");
    assert_eq!(fixture.outbox.depth().unwrap().events, 3, "events wait in the outbox");
    assert!(publisher.stats().snapshot().reconnects >= 2);

    stub.refuse_streams(None);
    assert!(stub.wait_for(WAIT, |stub| stub.stored().len() == 3).await);
    assert_eq!(stored_ids(&stub), ids);
    publisher.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_the_outbox_or_gives_up_in_time() {
    let fixture = fixture(OutboxLimits::default());
    // No collector listens here: the port was bound and released.
    let url = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    enqueue(&fixture, 0..3);
    let publisher = Publisher::spawn(fixture.outbox.clone(), config(url)).unwrap();
    let started = std::time::Instant::now();
    assert!(!publisher.shutdown(Duration::from_millis(300)).await, "nothing could be flushed");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(fixture.outbox.depth().unwrap().events, 3, "what was not flushed stays for the next start");

    let stub = CollectorStub::new();
    let server = stub.start().await;
    let publisher = Publisher::spawn(fixture.outbox.clone(), config(server.url())).unwrap();
    assert!(publisher.shutdown(Duration::from_secs(10)).await, "a drain publishes what is queued, then stops");
    assert_eq!(stub.stored().len(), 3);
    assert_eq!(fixture.outbox.depth().unwrap().events, 0);
    server.stop().await;
}

#[tokio::test]
async fn bad_configuration_is_refused() {
    let fixture = fixture(OutboxLimits::default());
    let mut bad_token = config("http://127.0.0.1:1".into());
    bad_token.token = Some("line\nbreak".into());
    let err = Publisher::spawn(fixture.outbox.clone(), bad_token).unwrap_err().to_string();
    assert_eq!(err, "invalid collector token: not printable ascii");
    let mut big = config("http://127.0.0.1:1".into());
    big.max_batch_events = 5000;
    assert!(Publisher::spawn(fixture.outbox.clone(), big).is_err());
    assert!(Publisher::spawn(fixture.outbox.clone(), config("not a url".into())).is_err());
    assert!(!format!("{:?}", config("http://x".into())).contains("publisher-secret"), "debug hides the token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_collector_fails_over_to_the_next_and_the_rest_arrives_there() {
    let fixture = fixture(OutboxLimits::default());
    let (first, second) = (CollectorStub::new(), CollectorStub::new());
    let (first_server, second_server) = (first.start().await, second.start().await);
    let mut config = config(first_server.url());
    config.failover_urls = vec![second_server.url()];
    let publisher = Publisher::spawn(fixture.outbox.clone(), config).unwrap();

    let acked = enqueue(&fixture, 0..500);
    assert!(wait_until(|| fixture.outbox.depth().unwrap().events == 0).await, "the first collector acks");
    // The next events reach the first collector but are never acknowledged there: it stops
    // mid-stream, as a replica killed behind a load balancer would.
    first.hold_acks(true);
    let unacked = enqueue(&fixture, 500..1200);
    // Some of them, up to the window of unacknowledged batches.
    assert!(first.wait_for(WAIT, |stub| stub.stored().len() > 500).await);
    first_server.stop().await;

    assert!(second.wait_for(WAIT, |stub| stub.stored().len() == 700).await, "the rest arrives at the second");
    assert!(wait_until(|| fixture.outbox.depth().unwrap().events == 0).await);
    assert_eq!(stored_ids(&first)[..500], acked[..], "what the first acknowledged stays there");
    assert_eq!(stored_ids(&second), unacked, "every unacknowledged event, once each, in seq order");
    assert_eq!(second.hellos()[0].publisher_id, fixture.outbox.publisher_id());
    let stats = publisher.stats().snapshot();
    assert_eq!((stats.endpoint, stats.acked), (1, 1200), "the second endpoint is current");
    assert!(publisher.shutdown(Duration::from_secs(5)).await);
    second_server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_first_collector_is_skipped_at_once() {
    let fixture = fixture(OutboxLimits::default());
    let gone = CollectorStub::new().start().await;
    let gone_url = gone.url();
    gone.stop().await;
    let second = CollectorStub::new();
    let second_server = second.start().await;
    let mut config = config(gone_url);
    // A backoff far beyond the wait: reaching the second collector must not wait for it.
    config.backoff_initial = Duration::from_secs(60);
    config.backoff_max = Duration::from_secs(60);
    config.failover_urls = vec![second_server.url()];
    let publisher = Publisher::spawn(fixture.outbox.clone(), config).unwrap();
    let ids = enqueue(&fixture, 0..10);
    assert!(second.wait_for(WAIT, |stub| stub.stored().len() == 10).await);
    assert_eq!(stored_ids(&second), ids);
    assert!(publisher.shutdown(Duration::from_secs(5)).await);
    second_server.stop().await;
}
