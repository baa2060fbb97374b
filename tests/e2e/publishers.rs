//! Publishers other than the runtime, against the real collector: the example Rust service
//! (`examples/audited-service`) and the Python grpcio publisher of `docs/publishing.md`
//! (`examples/python/publish.py`). Each run's events must be stored exactly once.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};

use qtrail_testkit::{binary, without_tls_env};

use crate::servers::{Collector, PUBLISHER_TOKEN};

const LOCATION: &str = "us-east";

/// Runs `command` to its end off the async runtime and returns what it did.
async fn run(mut command: Command) -> Output {
    let what = format!("{command:?}");
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the command's thread ends")
        .unwrap_or_else(|err| panic!("cannot run {what}: {err}"))
}

/// Returns stdout's lines, after asserting that the command succeeded.
fn succeeded(output: &Output, what: &str) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{what} failed ({}): {stderr}", output.status);
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

/// Returns the ids of the events stored for the location, asserting none is stored twice.
async fn stored_ids(collector: &Collector) -> Vec<String> {
    let ids: Vec<String> =
        collector.events(LOCATION).await.into_iter().map(|stored| stored.event.expect("an event").id).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no event is stored twice: {ids:?}");
    ids
}

/// The example service's calls reach the collector, each event once, through its outbox and
/// `qtrail-publisher`; the binary exits only when every event is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_service_publishes_each_of_its_events_once() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start("collector", dir.path()).await;
    collector.create_collector(LOCATION).await;

    let mut command = Command::new(binary("audited-service"));
    without_tls_env(&mut command)
        .args(["--collector", &collector.url(), "--location", LOCATION, "--data-dir"])
        .arg(dir.path().join("catalogue"))
        .env("AUDITED_SERVICE_TOKEN", PUBLISHER_TOKEN);
    let printed = succeeded(&run(command).await, "audited-service");
    assert_eq!(printed.len(), 4, "one event per call: {printed:?}");

    let stored = collector.events(LOCATION).await;
    let ids: Vec<String> = stored.iter().map(|record| record.event.as_ref().unwrap().id.clone()).collect();
    assert_eq!(ids, printed, "every event stored once, in the order of the calls");
    let actions: Vec<&str> = stored.iter().map(|record| record.event.as_ref().unwrap().action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "quantum-computing.program.create",
            "quantum-computing.program.update",
            "quantum-computing.program.delete",
            "quantum-computing.program.delete"
        ]
    );
    let codes: Vec<u32> =
        stored.iter().map(|record| record.event.as_ref().unwrap().reason.as_ref().unwrap().reason_code).collect();
    assert_eq!(codes, [200, 200, 200, 404], "the delete of a missing program is audited as refused");
    let publishers = collector.publishers(LOCATION).await;
    assert_eq!(publishers.len(), 1);
    assert!(publishers[0].publisher_id.starts_with("catalogue-"), "{:?}", publishers[0].publisher_id);
    collector.assert_every_chain_verifies().await;
}

/// The Python publisher of docs/publishing.md gets its events stored once; run again with the
/// same event ids, it learns from the Welcome what is stored and its resent events are counted
/// as duplicates, not stored again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_publisher_stores_its_events_once_and_a_resend_as_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start("collector", dir.path()).await;
    collector.create_collector(LOCATION).await;

    let first = succeeded(&run(python_publisher(&collector)).await, "publish.py");
    assert_eq!(first, ["welcome stored_seq=0", "ack accepted=3 duplicates=0 rejected=0"]);
    let ids = stored_ids(&collector).await;
    assert_eq!(ids.len(), 3, "{ids:?}");

    let second = succeeded(&run(python_publisher(&collector)).await, "publish.py, again");
    assert_eq!(second, ["welcome stored_seq=3", "ack accepted=0 duplicates=3 rejected=0"]);
    assert_eq!(stored_ids(&collector).await, ids, "the resent events are not stored again");
    let publishers = collector.publishers(LOCATION).await;
    assert_eq!(publishers.len(), 1);
    assert_eq!((publishers[0].publisher_id.as_str(), publishers[0].stored_seq), ("python-example", 3));
    collector.assert_every_chain_verifies().await;
}

/// Returns the command that runs `examples/python/publish.py` against `collector`, with the
/// interpreter `QTRAIL_PYTHON` names (`python3` by default; it needs grpcio and grpcio-tools,
/// which `scripts/test` installs).
fn python_publisher(collector: &Collector) -> Command {
    let python = std::env::var("QTRAIL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/publish.py");
    let mut command = Command::new(python);
    command.arg(script).args(["--collector", &collector.addr().to_string(), "--token", PUBLISHER_TOKEN]);
    // A fixed event time: a resent event must be the same event, not one with the same id.
    command.args(["--location", LOCATION, "--event-time-ms", "1796400000000"]);
    command
}
