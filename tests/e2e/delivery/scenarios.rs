//! The six fault scenarios of issue #6.

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use qtrail_testkit::wait_until;
use tempfile::TempDir;

use crate::delivery::checker::{Tally, assert_publisher_order, settle};
use crate::delivery::proxy::{Fault, Proxy, Session, WireReport};
use crate::delivery::workload::{Client, Driver, History, Outcome, TURN};
use crate::servers::{Collector, Runtime, RuntimeOptions};

/// The runtime's location in every scenario.
const LOCATION: &str = "us-east";
/// Kills (or cuts) per scenario that repeats a fault.
const ROUNDS: usize = 10;
/// How long any single step of a scenario may take.
const WAIT: Duration = Duration::from_secs(60);
/// Concurrent clients in the scenarios with a background workload.
const CLIENTS: usize = 2;

fn temp_dir() -> TempDir {
    tempfile::Builder::new().prefix("qtrail-delivery-").tempdir().expect("create a temporary directory")
}

/// Makes one last call (its event is the newest of the runtime's sequence), waits until every
/// answered call's event is stored, prints the counts and asserts them exact, per-publisher
/// order, and every chain.
async fn finish(scenario: &str, collector: &Collector, runtime: &Runtime, history: &History) -> Tally {
    let mut last = Client::new("final", &runtime.url(), history.clone());
    assert_eq!(last.probe().await, Outcome::Ok, "{scenario}: the runtime takes calls at the end");
    let calls = history.calls();
    let (stored, tally) = settle(collector, LOCATION, &calls).await;
    tally.print(scenario);
    tally.assert_exact(scenario);
    assert_publisher_order(&stored, &collector.publishers(LOCATION).await);
    collector.assert_every_chain_verifies().await;
    tally
}

/// Waits until the workload has made `more` calls beyond those it had made.
async fn more_calls(history: &History, more: usize) {
    let target = history.len() + more;
    wait_until(&format!("{more} more calls"), WAIT, || {
        let done = history.len() >= target;
        async move { done.then_some(()) }
    })
    .await;
}

/// Returns the number of batches delivered to the collector over all sessions.
fn delivered_batches(sessions: &[Session]) -> usize {
    sessions.iter().map(|session| session.batches.len()).sum()
}

/// Returns whether the newest Publish stream was welcomed and has had batches acknowledged, so
/// that a fault strikes a stream in full flow rather than one just opened.
fn streaming(sessions: &[Session]) -> bool {
    sessions.last().is_some_and(|session| session.welcome.is_some() && session.acks.len() >= 2)
}

/// Scenario 1: the collector is SIGKILLed again and again while the runtime serves a mixed
/// workload of every RPC, right after it stored something or, every other round, after a freeze
/// (SIGSTOP) during which batches went into its socket buffers unanswered; it restarts on the
/// same port and data each time. The runtime answers every call throughout, and nothing is lost
/// or stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_repeatedly_loses_nothing_and_stores_nothing_twice() {
    let dir = temp_dir();
    let mut collector = Collector::start("collector", dir.path()).await;
    collector.create_collector(LOCATION).await;
    let runtime = Runtime::start(RuntimeOptions::new(collector.url()), dir.path()).await;
    let history = History::default();
    let driver = Driver::start("kill-collector", &runtime.url(), CLIENTS, &history);

    for round in 0..ROUNDS {
        let stored = collector.event_count(LOCATION).await;
        let watched = &collector;
        wait_until("the collector to store more events", WAIT, || async move {
            (watched.event_count(LOCATION).await > stored).then_some(())
        })
        .await;
        if round % 2 == 1 {
            // Frozen first, the collector takes batches into its socket buffers and never
            // answers: they die unacknowledged with it.
            collector.process().signal(Signal::SIGSTOP);
            more_calls(&history, 10).await;
        }
        collector.process().kill();
        // The runtime keeps answering while its collector is dead.
        more_calls(&history, 10).await;
        collector.process().restart().await;
    }
    driver.stop().await;

    let tally = finish("scenario 1 (collector SIGKILL x10)", &collector, &runtime, &history).await;
    assert_eq!(tally.unknown, 0, "the runtime answered every call while the collector was dying");
    let rpcs: HashSet<&str> = history.calls().iter().map(|call| call.rpc).collect();
    assert_eq!(rpcs.len(), 13, "every runtime rpc was called: {rpcs:?}");
    let stored = collector.events(LOCATION).await;
    let actions: HashSet<String> =
        stored.into_iter().filter_map(|record| record.event.map(|event| event.action)).collect();
    assert_eq!(actions.len(), 8, "events of all eight actions: {actions:?}");
}

/// Scenario 1 with state snapshots: the collector writes a snapshot of its store's state
/// every few KiB of log (`--snapshot-every-kib 1`), so each SIGKILL lands while snapshots are
/// being written, and each restart loads one and replays only the log after it. Nothing is
/// lost or stored twice, and no snapshot is ever found unusable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_while_writing_state_snapshots_loses_nothing_and_stores_nothing_twice() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = temp_dir();
    let args = vec!["--snapshot-every-kib".into(), "1".into()];
    let mut collector = Collector::start_with("collector", dir.path(), args, None).await;
    collector.create_collector(LOCATION).await;
    let runtime = Runtime::start(RuntimeOptions::new(collector.url()), dir.path()).await;
    let history = History::default();
    let driver = Driver::start("kill-snapshotting-collector", &runtime.url(), CLIENTS, &history);
    let snapshot = dir.path().join("collector-data").join("state.snapshot");
    // The snapshot's inode: each snapshot is a new file renamed over the last.
    let written = || std::fs::metadata(&snapshot).map(|metadata| metadata.ino()).ok();

    for _ in 0..ROUNDS / 2 {
        let (stored, before) = (collector.event_count(LOCATION).await, written());
        let watched = &collector;
        wait_until("a new snapshot and more events after it", WAIT, || async move {
            let newer = written().is_some_and(|now| Some(now) != before);
            (newer && watched.event_count(LOCATION).await > stored).then_some(())
        })
        .await;
        collector.process().kill();
        more_calls(&history, 10).await;
        collector.process().restart().await;
    }
    driver.stop().await;

    finish("scenario 1b (collector SIGKILL x5, snapshots)", &collector, &runtime, &history).await;
    // Logs go to the test's stderr instead of the file with TEST_LOG set.
    if std::env::var_os("TEST_LOG").is_none() {
        let log = std::fs::read_to_string(dir.path().join("collector.log")).expect("read the collector's log");
        assert!(log.contains("state loaded from the snapshot"), "restarts load the snapshot");
        assert!(!log.contains("snapshot is not used"), "no snapshot was found unusable");
        assert!(!log.contains("does not replay"), "the log after each snapshot replays");
    }
}

/// Scenario 2: the runtime is SIGKILLed again and again while it publishes (with a batch stored
/// but unacknowledged, with a batch on the wire, with a batch cut mid-way, with calls in flight)
/// and restarts on the same data directory. Every answered call's event arrives once; calls cut
/// off by the kill may or may not have an event (Jepsen's "recovered"); batches the collector
/// acknowledged are never sent again, and the wire shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_killed_repeatedly_mid_publish_loses_nothing_and_stores_nothing_twice() {
    let dir = temp_dir();
    let collector = Collector::start("collector", dir.path()).await;
    collector.create_collector(LOCATION).await;
    let proxy = Proxy::start(collector.addr()).await;
    let mut runtime = Runtime::start(RuntimeOptions::new(proxy.url()), dir.path()).await;
    let history = History::default();
    let driver = Driver::start("kill-runtime", &runtime.url(), CLIENTS, &history);

    for round in 0..ROUNDS {
        proxy.wait_for("a publish stream carrying batches", WAIT, streaming).await;
        match round % 4 {
            0 => {
                // The collector stores a batch, its Ack never arrives, later batches vanish in
                // a silent network, and the runtime dies.
                proxy.arm(Fault::SwallowAck);
                proxy.wait_struck(WAIT).await;
                more_calls(&history, 10).await;
            }
            1 => {
                // A batch has just reached the collector; its Ack is on the way back.
                let delivered = delivered_batches(&proxy.sessions());
                proxy.wait_for("a batch on the wire", WAIT, |sessions| delivered_batches(sessions) > delivered).await;
            }
            2 => {
                // The runtime dies right after the connection broke mid-batch: the collector
                // never had that batch.
                proxy.arm(Fault::CutMidBatch);
                proxy.wait_struck(WAIT).await;
            }
            _ => more_calls(&history, 5).await,
        }
        runtime.process().kill();
        runtime.process().restart().await;
    }
    driver.stop().await;

    finish("scenario 2 (runtime SIGKILL x10)", &collector, &runtime, &history).await;
    let wire = WireReport::of(&proxy.sessions());
    wire.print("scenario 2");
    wire.assert_only_unacknowledged_resent("scenario 2");
}

/// Scenario 3: the collector is down while the runtime keeps serving from its outbox; once it
/// is back everything arrives, in the order of each publisher's sequence (and, calls being
/// sequential, in the order of the calls). Then a SIGTERM right after a burst of calls: the
/// runtime flushes its outbox before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_for_a_while_then_everything_arrives_in_order() {
    let dir = temp_dir();
    let mut collector = Collector::start("collector", dir.path()).await;
    collector.create_collector(LOCATION).await;
    let mut runtime = Runtime::start(RuntimeOptions::new(collector.url()), dir.path()).await;
    let history = History::default();
    let mut client = Client::new("collector-down", &runtime.url(), history.clone());

    for _ in 0..20 {
        client.step().await;
    }
    let status = collector.process().terminate().await;
    assert!(status.success(), "the collector stops cleanly: {status}");
    // Down for a good number of calls, all answered from the outbox.
    for _ in 0..150 {
        let outcome = client.step().await;
        assert!(outcome.acknowledged(), "the runtime answers while its collector is down: {outcome:?}");
    }
    collector.process().restart().await;
    for _ in 0..20 {
        client.step().await;
    }

    let tally = finish("scenario 3 (collector down, then up)", &collector, &runtime, &history).await;
    assert_eq!(tally.unknown, 0);
    // Sequential calls commit their events in call order, so the store holds them in that order.
    let called: Vec<String> = history
        .calls()
        .into_iter()
        .filter(|call| call.outcome.acknowledged())
        .map(|call| call.correlation_id)
        .collect();
    let stored: Vec<String> = collector
        .events(LOCATION)
        .await
        .into_iter()
        .filter_map(|record| record.event.map(|event| event.correlation_id))
        .collect();
    assert_eq!(stored, called, "events are stored in the order of the calls");

    // A burst of calls, then SIGTERM: the runtime flushes their events before it exits, so they
    // are stored the moment it has exited.
    for _ in 0..20 {
        assert!(client.step().await.acknowledged());
    }
    let status = runtime.process().terminate().await;
    assert!(status.success(), "the runtime stops cleanly: {status}");
    let tally = Tally::of(&history.calls(), &collector.events(LOCATION).await);
    tally.print("scenario 3 (then runtime SIGTERM)");
    tally.assert_exact("scenario 3 (then runtime SIGTERM)");
    collector.assert_every_chain_verifies().await;
}

/// Scenario 4: with the collector down, a small outbox fills; from then on every call is
/// refused UNAVAILABLE and leaves no event, nothing answered is lost, and the runtime takes
/// calls again by itself once the collector is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_outbox_refuses_calls_then_recovers_by_itself() {
    const BOUND: usize = 20;
    let dir = temp_dir();
    let mut collector = Collector::start("collector", dir.path()).await;
    collector.create_collector(LOCATION).await;
    let options = RuntimeOptions::new(collector.url()).args(&["--outbox-max-events", &BOUND.to_string()]);
    let runtime = Runtime::start(options, dir.path()).await;
    let history = History::default();
    let mut client = Client::new("outbox-full", &runtime.url(), history.clone());

    for _ in 0..5 {
        assert!(client.step().await.acknowledged());
    }
    let watched = &collector;
    wait_until("the first events to be stored", WAIT, || async move {
        (watched.event_count(LOCATION).await >= 5).then_some(())
    })
    .await;
    collector.process().kill();

    // The outbox takes at most its bound, then refuses.
    let mut answered = 0;
    loop {
        match client.step().await {
            Outcome::Unaudited => break,
            outcome if outcome.acknowledged() => answered += 1,
            outcome => panic!("unexpected outcome while the outbox fills: {outcome:?}"),
        }
        assert!(answered <= BOUND, "the outbox holds at most {BOUND} events");
    }
    // Every call is refused now: a whole turn of the workload, reads and unauthenticated calls too.
    for _ in 0..TURN {
        let outcome = client.step().await;
        assert_eq!(outcome, Outcome::Unaudited, "every call is refused while the outbox is full");
    }

    collector.process().restart().await;
    // Nobody intervenes: the publisher drains the outbox and calls are taken again.
    let probing = tokio::sync::Mutex::new(client);
    let recovered = qtrail_server::poll::until(WAIT, || async {
        match probing.lock().await.probe().await {
            Outcome::Ok => Some(()),
            Outcome::Unaudited => None,
            outcome => panic!("unexpected outcome while the outbox drains: {outcome:?}"),
        }
    })
    .await;
    assert!(recovered.is_some(), "the runtime never recovered");
    let mut client = probing.into_inner();
    for _ in 0..20 {
        assert!(client.step().await.acknowledged(), "the runtime serves again");
    }

    let tally = finish("scenario 4 (outbox full)", &collector, &runtime, &history).await;
    assert_eq!(tally.unknown, 0);
    assert!(tally.unaudited >= 19, "calls were refused while the outbox was full: {tally}");
    println!("delivery scenario 4: {answered} calls answered while the collector was down (bound {BOUND})");
}

/// Scenario 5: no collector for the runtime's location, then only one for another location
/// (which stores another runtime's events meanwhile): events wait in the outbox and are never
/// stored elsewhere; once the right collector exists, they arrive there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_for_their_own_locations_collector() {
    const OTHER: &str = "eu-de";
    let dir = temp_dir();
    let collector = Collector::start("collector", dir.path()).await;
    let proxy = Proxy::start(collector.addr()).await;
    let runtime = Runtime::start(RuntimeOptions::new(proxy.url()), dir.path()).await;
    let history = History::default();
    let mut client = Client::new("wrong-location", &runtime.url(), history.clone());
    let hellos = |sessions: &[Session]| sessions.iter().filter(|session| session.hello.is_some()).count();

    // No collector at all: calls are answered, the publisher is refused and keeps trying.
    for _ in 0..10 {
        assert!(client.step().await.acknowledged());
    }
    proxy.wait_for("a publish attempt", WAIT, |sessions| hellos(sessions) >= 1).await;

    // A collector for another location only, busy with a runtime of its own: the us-east
    // publisher is still refused, and none of its events is stored there.
    collector.create_collector(OTHER).await;
    let other_options = RuntimeOptions {
        name: "runtime-eu".to_owned(),
        location: OTHER.to_owned(),
        instance: "inst-eu".to_owned(),
        ..RuntimeOptions::new(collector.url())
    };
    let other_runtime = Runtime::start(other_options, dir.path()).await;
    let other_history = History::default();
    let mut other_client = Client::new("other-location", &other_runtime.url(), other_history.clone());
    let tried = hellos(&proxy.sessions());
    for _ in 0..10 {
        assert!(client.step().await.acknowledged());
        assert!(other_client.step().await.acknowledged());
    }
    proxy.wait_for("a publish attempt after eu-de exists", WAIT, |sessions| hellos(sessions) > tried).await;
    let sessions = proxy.sessions();
    assert!(
        sessions.iter().filter_map(|session| session.hello.as_ref()).all(|hello| hello.location == LOCATION),
        "the runtime only ever asks for its own location"
    );
    assert!(sessions.iter().all(|session| session.welcome.is_none()), "no stream was welcomed");
    let (_, other_tally) = settle(&collector, OTHER, &other_history.calls()).await;
    other_tally.assert_exact("scenario 5, the eu-de runtime");
    assert_eq!(Tally::of(&history.calls(), &collector.events(OTHER).await).stored, 0, "no us-east event in eu-de");

    // The right collector appears: everything arrives there, and only there.
    collector.create_collector(LOCATION).await;
    for _ in 0..10 {
        assert!(client.step().await.acknowledged());
    }
    let tally = finish("scenario 5 (wrong or missing collector)", &collector, &runtime, &history).await;
    assert_eq!(tally.unknown, 0);
    let other_events = collector.events(OTHER).await;
    assert_eq!(Tally::of(&history.calls(), &other_events).stored, 0, "no us-east event in eu-de");
    let other_tally = Tally::of(&other_history.calls(), &other_events);
    other_tally.print("scenario 5 (the eu-de runtime meanwhile)");
    other_tally.assert_exact("scenario 5, the eu-de runtime");
    let publishers = collector.publishers(OTHER).await;
    assert!(
        publishers.iter().all(|publisher| publisher.publisher_id.starts_with("runtime-inst-eu-")),
        "only the eu-de runtime delivered to eu-de: {publishers:?}"
    );
}

/// Scenario 6: a proxy between runtime and collector breaks the network mid-stream: a batch cut
/// before its last byte, an Ack dropped with the connection, an Ack or a Welcome swallowed by a
/// network that goes silent, a batch held back and delivered late, every connection reset at
/// once. Only unacknowledged batches are sent again (the wire shows it, so the collector's
/// deduplication hides nothing), late copies are deduplicated, and nothing is lost or stored
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cuts_resend_only_unacknowledged_batches() {
    let dir = temp_dir();
    let collector = Collector::start("collector", dir.path()).await;
    collector.create_collector(LOCATION).await;
    let proxy = Proxy::start(collector.addr()).await;
    // A silent network is noticed by the ack timeout; a short one keeps the test short.
    let options = RuntimeOptions::new(proxy.url()).args(&["--publish-ack-timeout-ms", "1000"]);
    let runtime = Runtime::start(options, dir.path()).await;
    let history = History::default();
    let driver = Driver::start("network-cut", &runtime.url(), CLIENTS, &history);

    let faults = [
        Some(Fault::CutMidBatch),
        Some(Fault::CutBeforeAck),
        Some(Fault::SwallowAck),
        Some(Fault::SwallowWelcome),
        Some(Fault::DelayBatch),
        None,
    ];
    for round in 0..2 * faults.len() {
        proxy.wait_for("a publish stream carrying batches", WAIT, streaming).await;
        let fault = faults[round % faults.len()];
        // Sessions before this index are over once the fault has struck.
        let ended = match fault {
            Some(fault) => {
                proxy.arm(fault);
                if fault == Fault::SwallowWelcome {
                    // Only a new stream has a Welcome to swallow.
                    proxy.cut_all();
                }
                proxy.wait_struck(WAIT).await;
                proxy.sessions().iter().rposition(|session| session.fault.is_some()).map_or(0, |index| index + 1)
            }
            None => {
                let delivered = delivered_batches(&proxy.sessions());
                proxy.wait_for("a batch on the wire", WAIT, |sessions| delivered_batches(sessions) > delivered).await;
                let open = proxy.sessions().len();
                proxy.cut_all();
                open
            }
        };
        // The runtime notices, reconnects and is welcomed on a new stream.
        proxy
            .wait_for("a new publish stream", WAIT, |sessions| {
                sessions[ended.min(sessions.len())..].iter().any(|session| session.welcome.is_some())
            })
            .await;
        if fault == Some(Fault::DelayBatch) {
            // The held batch arrives late, after the new stream has resent it.
            proxy.release();
        }
    }
    driver.stop().await;

    finish("scenario 6 (network cuts)", &collector, &runtime, &history).await;
    let sessions = proxy.sessions();
    let wire = WireReport::of(&sessions);
    wire.print("scenario 6");
    wire.assert_only_unacknowledged_resent("scenario 6");
    let cut: usize = sessions.iter().map(|session| session.cut_batches.len()).sum();
    let dropped: usize = sessions.iter().map(|session| session.dropped_acks.len()).sum();
    let faults_struck: usize = sessions.iter().filter(|session| session.fault.is_some()).count();
    assert!(
        cut >= 2 && dropped >= 4 && faults_struck == 10,
        "every kind of fault struck: {faults_struck} faults, {cut} batches cut, {dropped} acks dropped"
    );
    // Each late batch and its resend both reached the collector: one of the two was counted as
    // duplicates, and the store kept one copy (the tally above found none stored twice).
    assert!(wire.collector_duplicates >= 2, "late batches were deduplicated: {wire}");
    // The collector's own duplicate counter saw them too (and the wire may miss a few Acks of a
    // connection gone silent, never the other way round).
    let counted = collector
        .metric("qtrail_collector_ingest_events_total", &[("location", LOCATION), ("result", "duplicate")])
        .await;
    println!("delivery scenario 6: the collector counted {counted} duplicates");
    assert!(counted >= wire.collector_duplicates as f64, "duplicates counted {counted}, seen on the wire: {wire}");
}
