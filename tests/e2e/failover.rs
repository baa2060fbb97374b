//! Publisher failover between replicas: a runtime given two collectors (`--collector A
//! --collector B`) keeps auditing its calls when A is killed with SIGKILL; what A had not
//! acknowledged, and everything after, arrives at B.

use std::time::Duration;

use qtrail_proto::qtrail::runtime::v1 as runtime;
use qtrail_proto::qtrail::runtime::v1::program_service_client::ProgramServiceClient;
use qtrail_testkit::wait_until;

use crate::servers::{ALICE_KEY, Collector, Runtime, RuntimeOptions, authed, lazy_channel};

const LOCATION: &str = "us-east";

/// Makes `calls` audited reads through the runtime.
async fn list_programs(url: &str, calls: usize) {
    let mut client = ProgramServiceClient::new(lazy_channel(url));
    for _ in 0..calls {
        client.list_programs(authed(runtime::ListProgramsRequest::default(), ALICE_KEY)).await.expect("a call");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_fails_over_to_the_next_collector_when_one_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Collector::start("collector-a", dir.path()).await;
    let second = Collector::start("collector-b", dir.path()).await;
    first.create_collector(LOCATION).await;
    second.create_collector(LOCATION).await;
    let options = RuntimeOptions::new(first.url()).args(&["--collector", &second.url()]);
    let runtime = Runtime::start(options, dir.path()).await;

    list_programs(&runtime.url(), 5).await;
    let at_first = wait_until("the first calls at the first collector", Duration::from_secs(60), || async {
        let count = first.event_count(LOCATION).await;
        (count >= 5).then_some(count)
    })
    .await;
    first.process().kill();

    list_programs(&runtime.url(), 5).await;
    let at_second = wait_until("the later calls at the second collector", Duration::from_secs(60), || async {
        let count = second.event_count(LOCATION).await;
        (count >= 5).then_some(count)
    })
    .await;
    // Each call is one event: the five after the kill (and any the first had not acknowledged).
    assert!(at_first + at_second >= 10, "{at_first} at the first, {at_second} at the second");
    second.assert_every_chain_verifies().await;
}
