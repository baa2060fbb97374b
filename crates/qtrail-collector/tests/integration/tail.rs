//! Tails whose clients read slowly or not at all: what they may pin, and how they end. In a
//! process of its own, with one server, because it reads process-wide gauges from `/metrics`.

use crate::common;

use std::time::Duration;

use common::http::{HttpClient, sample};
use common::{AUDITOR, TestServer, authed, events, wait_until};
use qtrail_proto::qtrail::audit::v1 as proto;
use tonic::Code;

const LOCATION: &str = "us-east";
/// The tail buffer of this test's collector: a few of its batches.
const TAIL_BUFFER: usize = 128 * 1024;

/// A tail that never reads keeps no more committed records in memory than the tail buffer,
/// however much is stored meanwhile; once its stream has had no room for the stall time it ends
/// RESOURCE_EXHAUSTED after what it delivered, naming where to resume, and resuming there loses
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_that_never_reads_pins_at_most_the_buffer_and_is_ended() {
    if !qtrail_testkit::in_own_process("tail::a_tail_that_never_reads_pins_at_most_the_buffer_and_is_ended") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = qtrail_collector::Config::for_test(dir.path(), common::tokens());
    config.tail_buffer_bytes = TAIL_BUFFER;
    config.tail_stall = Duration::from_secs(2);
    let server = TestServer::start_with_http_config(config).await;
    server.create_collector(LOCATION).await;
    let http: HttpClient = server.http();

    let mut query = server.query().await;
    let request = proto::TailEventsRequest { location: LOCATION.into(), filter: None, from_seq: 0 };
    let mut idle = query.tail_events(authed(request, AUDITOR)).await.unwrap().into_inner();

    // About 4 MB of events, far more than the buffer, the stream's queue and HTTP/2's windows.
    let total = 4000_u64;
    let (mut publisher, _) = server.open_publisher("p", LOCATION, 1).await;
    let mut largest = 0.0_f64;
    for (index, chunk) in events(LOCATION, 0, total as usize).chunks(100).enumerate() {
        let ack = publisher.publish(index as u64 + 1, chunk, index as u64 * 100 + 1).await;
        assert_eq!(ack.accepted as usize, chunk.len());
        let text = http.get("/metrics").await.body;
        largest = largest.max(sample(&text, "qtrail_collector_tail_buffer_bytes").unwrap_or_default());
    }
    publisher.close();
    assert!(largest > 0.0, "the tail's batches were buffered");
    assert!(largest <= TAIL_BUFFER as f64, "{largest} bytes buffered, over the {TAIL_BUFFER} limit");

    // The tail's task ends once its stream has been full for the stall time.
    let ended = wait_until(Duration::from_secs(60), || async {
        sample(&http.get("/metrics").await.body, "qtrail_collector_tail_subscribers") == Some(0.0)
    })
    .await;
    assert!(ended, "the stalled tail ends");

    let mut delivered = Vec::new();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(30), idle.message()).await.unwrap() {
            Ok(Some(message)) => delivered.push(message.event.unwrap().location_seq),
            Ok(None) => panic!("the stream ended without a status after {} events", delivered.len()),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let resume = delivered.len() as u64 + 1;
    assert!(resume < total, "the stall left events undelivered");
    assert_eq!(delivered, (1..resume).collect::<Vec<u64>>(), "no gap before the end");
    assert!(
        status.message().starts_with("tail ended: the client read nothing for 2 s")
            && status.message().ends_with(&format!("resume with from_seq {resume}")),
        "{}",
        status.message()
    );

    // Resuming where it said loses nothing.
    let request = proto::TailEventsRequest { location: LOCATION.into(), filter: None, from_seq: resume };
    let mut resumed = query.tail_events(authed(request, AUDITOR)).await.unwrap().into_inner();
    for expected in resume..=total {
        let message = tokio::time::timeout(Duration::from_secs(30), resumed.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(message.event.unwrap().location_seq, expected);
    }
    drop((idle, resumed));
    server.stop().await;
}
