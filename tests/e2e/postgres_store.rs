//! The collector on the PostgreSQL store, end to end: a spawned `qtrail-collector --store
//! postgres://…` (over a real server started with `initdb`) takes a spawned runtime's events,
//! is restarted, still serves them, and `qtrail events verify` finds the chain and tree whole;
//! a second collector over the same database serves the same location.

use std::ffi::OsString;
use std::time::Duration;

use qtrail_proto::qtrail::runtime::v1 as runtime;
use qtrail_proto::qtrail::runtime::v1::program_service_client::ProgramServiceClient;
use qtrail_testkit::{Postgres, binary, wait_until};

use crate::servers::{ALICE_KEY, AUDITOR_TOKEN, Collector, Runtime, RuntimeOptions, authed, lazy_channel};

const WAIT: Duration = Duration::from_secs(60);

async fn start_collector(name: &str, dir: &std::path::Path, url: &str) -> Collector {
    let args: Vec<OsString> = vec!["--store".into(), url.into()];
    Collector::start_with(name, dir, args, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_on_postgresql_keeps_its_events_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Postgres::start().expect("start postgresql");
    let url = server.url();
    let mut collector = start_collector("collector", dir.path(), &url).await;
    collector.create_collector("us-east").await;
    let runtime = Runtime::start(RuntimeOptions::new(collector.url()), dir.path()).await;
    let mut client = ProgramServiceClient::new(lazy_channel(&runtime.url()));
    for _ in 0..5 {
        client.list_programs(authed(runtime::ListProgramsRequest::default(), ALICE_KEY)).await.expect("call");
    }
    wait_until("5 events stored", WAIT, || async { (collector.event_count("us-east").await >= 5).then_some(()) }).await;

    collector.process().terminate().await;
    let collector = start_collector("collector", dir.path(), &url).await;
    assert_eq!(collector.event_count("us-east").await, 5);
    assert_eq!(collector.events("us-east").await.len(), 5);
    collector.assert_every_chain_verifies().await;

    // A second replica over the same database serves the same location.
    let replica = start_collector("replica", dir.path(), &url).await;
    assert_eq!(replica.events("us-east").await.len(), 5);

    let output = std::process::Command::new(binary("qtrail"))
        .args(["--collector", &collector.url(), "--token", AUDITOR_TOKEN, "--location", "us-east", "--output", "json"])
        .args(["events", "verify"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "qtrail events verify: {stdout} {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("\"ok\": true") || stdout.contains("\"ok\":true"), "{stdout}");
}
