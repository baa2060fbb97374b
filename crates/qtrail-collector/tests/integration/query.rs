//! EventQuery against a real server: pages and page tokens, filters, tails, exports, chain
//! verification of an intact chain, and every bad input.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::{AUDITOR, TestServer, authed, events};
use prost_types::Timestamp;
use qtrail_proto::qtrail::audit::v1 as proto;
use tonic::Code;

fn query_request(location: &str) -> proto::QueryEventsRequest {
    proto::QueryEventsRequest { location: location.into(), ..Default::default() }
}

async fn seeded(count: usize) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let (mut stream, _) = server.open_publisher("p", "us-east", 1).await;
    let all = events("us-east", 0, count);
    for (index, chunk) in all.chunks(100).enumerate() {
        let ack = stream.publish(index as u64 + 1, chunk, index as u64 * 100 + 1).await;
        assert_eq!(ack.accepted as usize, chunk.len());
    }
    stream.close();
    (dir, server)
}

#[tokio::test]
async fn pages_newest_first_with_stable_tokens() {
    let (_dir, server) = seeded(25).await;
    let mut query = server.query().await;
    let mut seqs = Vec::new();
    let mut token = String::new();
    loop {
        let request =
            proto::QueryEventsRequest { page_size: 10, page_token: token.clone(), ..query_request("us-east") };
        let page = query.query_events(authed(request, AUDITOR)).await.unwrap().into_inner();
        assert!(page.events.len() <= 10);
        seqs.extend(page.events.iter().map(|e| e.location_seq));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        // New events arriving between pages do not shift the pages.
        if seqs.len() == 10 {
            server.publish("us-east", &events("us-east", 100, 1), 1000).await;
        }
    }
    assert_eq!(seqs, (1..=25).rev().collect::<Vec<u64>>());

    // The default page size is 100.
    let page = query.query_events(authed(query_request("us-east"), AUDITOR)).await.unwrap().into_inner();
    assert_eq!(page.events.len(), 26);
    assert!(page.next_page_token.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn filters_select_events() {
    let (_dir, server) = seeded(40).await;
    let query = server.query().await;
    let run = |filter: proto::EventFilter, order: proto::Order| {
        let request = proto::QueryEventsRequest {
            filter: Some(filter),
            order: order as i32,
            page_size: 1000,
            ..query_request("us-east")
        };
        let mut query = query.clone();
        async move { query.query_events(authed(request, AUDITOR)).await.unwrap().into_inner().events }
    };
    // Actions cycle job.create, job.read, program.create, job.cancel.
    let jobs = run(
        proto::EventFilter { action: "quantum-computing.job".into(), ..Default::default() },
        proto::Order::OldestFirst,
    )
    .await;
    assert_eq!(jobs.len(), 30);
    assert!(jobs.windows(2).all(|w| w[0].location_seq < w[1].location_seq));
    let cancels = run(
        proto::EventFilter { action: "quantum-computing.job.cancel".into(), ..Default::default() },
        proto::Order::NewestFirst,
    )
    .await;
    assert_eq!(cancels.len(), 10);
    assert!(cancels.windows(2).all(|w| w[0].location_seq > w[1].location_seq));
    assert!(cancels.iter().all(|e| e.event.as_ref().unwrap().action == "quantum-computing.job.cancel"));
    let by_initiator =
        run(proto::EventFilter { initiator_id: "IBMid-1".into(), ..Default::default() }, proto::Order::OldestFirst)
            .await;
    assert_eq!(by_initiator.len(), 13);
    let warnings = run(
        proto::EventFilter { severity: proto::Severity::Warning as i32, ..Default::default() },
        proto::Order::OldestFirst,
    )
    .await;
    assert_eq!(warnings.len(), 10);
    // Event i happened at 1_700_000_000 + i seconds: [10 s, 20 s) holds events 10..=19.
    let window = run(
        proto::EventFilter {
            start_time: Some(Timestamp { seconds: 1_700_000_010, nanos: 0 }),
            end_time: Some(Timestamp { seconds: 1_700_000_020, nanos: 0 }),
            ..Default::default()
        },
        proto::Order::OldestFirst,
    )
    .await;
    assert_eq!(window.iter().map(|e| e.location_seq).collect::<Vec<_>>(), (11..=20).collect::<Vec<u64>>());
    let instance = "crn:v1:bluemix:public:quantum-computing:us-east:a/acc-1:inst-1";
    let programs = run(
        proto::EventFilter { target_id: format!("{instance}:program"), ..Default::default() },
        proto::Order::OldestFirst,
    )
    .await;
    assert_eq!(programs.len(), 10);
    let one = run(
        proto::EventFilter { target_id: format!("{instance}:job:r-1"), ..Default::default() },
        proto::Order::OldestFirst,
    )
    .await;
    assert_eq!(one.len(), 1);
    let correlated = one[0].event.as_ref().unwrap().correlation_id.clone();
    let by_correlation =
        run(proto::EventFilter { correlation_id: correlated, ..Default::default() }, proto::Order::OldestFirst).await;
    assert_eq!(by_correlation.len(), 1);
    server.stop().await;
}

/// The indexes follow the chain after the Ack; queries and exports must not wait for them.
#[tokio::test]
async fn every_acknowledged_event_is_found_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let (mut stream, _) = server.open_publisher("p", "us-east", 1).await;
    let mut query = server.query().await;
    let instance = "crn:v1:bluemix:public:quantum-computing:us-east:a/acc-1:inst-1";
    for round in 0..20_usize {
        let batch = events("us-east", round * 50, 50);
        let ack = stream.publish(round as u64 + 1, &batch, round as u64 * 50 + 1).await;
        assert_eq!(ack.accepted, 50);
        let newest = round * 50 + 49;
        let filter = proto::EventFilter { target_id: format!("{instance}:job:r-{newest}"), ..Default::default() };
        let request = proto::QueryEventsRequest { filter: Some(filter.clone()), ..query_request("us-east") };
        let page = query.query_events(authed(request, AUDITOR)).await.unwrap().into_inner();
        let seqs: Vec<u64> = page.events.iter().map(|event| event.location_seq).collect();
        assert_eq!(seqs, [newest as u64 + 1], "round {round}");
        let export = proto::ExportEventsRequest {
            location: "us-east".into(),
            format: proto::ExportFormat::AtJson as i32,
            filter: Some(filter),
            ..Default::default()
        };
        let mut lines = query.export_events(authed(export, AUDITOR)).await.unwrap().into_inner();
        let mut count = 0;
        while let Some(chunk) = lines.message().await.unwrap() {
            count += chunk.lines.len();
        }
        assert_eq!(count, 1, "round {round}");
    }
    stream.close();
    server.stop().await;
}

#[tokio::test]
async fn bad_query_requests_are_refused() {
    let (_dir, server) = seeded(5).await;
    let query = server.query().await;
    let refuse = |request: proto::QueryEventsRequest| {
        let mut query = query.clone();
        async move { query.query_events(authed(request, AUDITOR)).await.unwrap_err() }
    };
    let status = refuse(proto::QueryEventsRequest { page_size: 5000, ..query_request("us-east") }).await;
    assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "page_size 5000 is over the limit of 1000"));
    for garbage in ["garbage", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "%%%"] {
        let status = refuse(proto::QueryEventsRequest { page_token: garbage.into(), ..query_request("us-east") }).await;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("invalid page_token"), "{}", status.message());
    }
    // A token is only good for the filter it was made for.
    let first = query
        .clone()
        .query_events(authed(proto::QueryEventsRequest { page_size: 2, ..query_request("us-east") }, AUDITOR))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let other_filter = proto::QueryEventsRequest {
        page_size: 2,
        page_token: first.next_page_token.clone(),
        filter: Some(proto::EventFilter { initiator_id: "IBMid-1".into(), ..Default::default() }),
        ..query_request("us-east")
    };
    assert!(refuse(other_filter).await.message().starts_with("invalid page_token"));
    let other_order = proto::QueryEventsRequest {
        page_size: 2,
        page_token: first.next_page_token,
        order: proto::Order::OldestFirst as i32,
        ..query_request("us-east")
    };
    assert!(refuse(other_order).await.message().starts_with("invalid page_token"));

    let inverted = proto::EventFilter {
        start_time: Some(Timestamp { seconds: 200, nanos: 0 }),
        end_time: Some(Timestamp { seconds: 100, nanos: 0 }),
        ..Default::default()
    };
    let status = refuse(proto::QueryEventsRequest { filter: Some(inverted), ..query_request("us-east") }).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("inverted time range"), "{}", status.message());
    let bad_action = proto::EventFilter { action: "quantum-comp".into(), ..Default::default() };
    let status = refuse(proto::QueryEventsRequest { filter: Some(bad_action), ..query_request("us-east") }).await;
    assert!(status.message().contains("filter.action"), "{}", status.message());
    assert_eq!(
        refuse(proto::QueryEventsRequest { order: 7, ..query_request("us-east") }).await.code(),
        Code::InvalidArgument
    );
    assert_eq!(refuse(query_request("eu-de")).await.code(), Code::NotFound);
    assert_eq!(refuse(query_request("Not A Location")).await.code(), Code::InvalidArgument);
    server.stop().await;
}

/// Publishes while a tail runs: the tail sees history and live events, each exactly once, in
/// chain order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_streams_history_then_live_without_gap_or_duplicate() {
    let (_dir, server) = seeded(30).await;
    let mut query = server.query().await;
    let request = proto::TailEventsRequest { location: "us-east".into(), filter: None, from_seq: 11 };
    let mut tail = query.tail_events(authed(request, AUDITOR)).await.unwrap().into_inner();
    let live_only = proto::TailEventsRequest { location: "us-east".into(), filter: None, from_seq: 0 };
    let mut live = query.tail_events(authed(live_only, AUDITOR)).await.unwrap().into_inner();
    let jobs_only = proto::TailEventsRequest {
        location: "us-east".into(),
        filter: Some(proto::EventFilter { action: "quantum-computing.job.cancel".into(), ..Default::default() }),
        from_seq: 1,
    };
    let mut cancels = query.tail_events(authed(jobs_only, AUDITOR)).await.unwrap().into_inner();

    // Publish 300 more events from two publishers while the tails run.
    let (mut first, _) = server.open_publisher("p-a", "us-east", 1).await;
    let (mut second, _) = server.open_publisher("p-b", "us-east", 1).await;
    for round in 0..15_u64 {
        let ack = first.publish(round + 1, &events("us-east", 1000 + round as usize * 10, 10), round * 10 + 1).await;
        assert_eq!(ack.accepted, 10);
        let ack = second.publish(round + 1, &events("us-east", 2000 + round as usize * 10, 10), round * 10 + 1).await;
        assert_eq!(ack.accepted, 10);
    }
    first.close();
    second.close();

    let total = 330_u64;
    let mut seen = Vec::new();
    while seen.len() < (total - 10) as usize {
        let message = tokio::time::timeout(Duration::from_secs(30), tail.message()).await.unwrap().unwrap().unwrap();
        seen.push(message.event.unwrap().location_seq);
    }
    assert_eq!(seen, (11..=total).collect::<Vec<u64>>());

    let mut live_seen = Vec::new();
    while live_seen.len() < 300 {
        let message = tokio::time::timeout(Duration::from_secs(30), live.message()).await.unwrap().unwrap().unwrap();
        live_seen.push(message.event.unwrap().location_seq);
    }
    assert_eq!(live_seen, (31..=total).collect::<Vec<u64>>());

    let expected_cancels: Vec<u64> = server
        .all_events("us-east")
        .await
        .into_iter()
        .filter(|record| record.event.as_ref().unwrap().action == "quantum-computing.job.cancel")
        .map(|record| record.location_seq)
        .collect();
    assert!(expected_cancels.len() > 50);
    let mut cancel_seen = HashSet::new();
    let mut last = 0;
    while cancel_seen.len() < expected_cancels.len() {
        let message = tokio::time::timeout(Duration::from_secs(30), cancels.message()).await.unwrap().unwrap().unwrap();
        let record = message.event.unwrap();
        assert_eq!(record.event.as_ref().unwrap().action, "quantum-computing.job.cancel");
        assert!(record.location_seq > last);
        last = record.location_seq;
        assert!(cancel_seen.insert(record.location_seq));
    }
    assert_eq!(cancel_seen, expected_cancels.into_iter().collect::<HashSet<u64>>());
    drop((tail, live, cancels));
    server.stop().await;
}

/// A tail that reads slowly falls out of a tiny buffer again and again and catches up from the
/// store each time: it still sees every event once, in chain order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tail_falls_behind_the_buffer_and_still_sees_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = qtrail_collector::Config::for_test(dir.path(), common::tokens());
    // Smaller than one batch: every tail that is not already waiting lags.
    config.tail_buffer_bytes = 4 * 1024;
    let server = TestServer::start_with(config).await;
    server.create_collector("us-east").await;
    let mut query = server.query().await;
    let request = proto::TailEventsRequest { location: "us-east".into(), filter: None, from_seq: 0 };
    let mut tail = query.tail_events(authed(request, AUDITOR)).await.unwrap().into_inner();

    let (mut publisher, _) = server.open_publisher("p", "us-east", 1).await;
    let mut seen = Vec::new();
    for round in 0..20_u64 {
        let ack = publisher.publish(round + 1, &events("us-east", round as usize * 50, 50), round * 50 + 1).await;
        assert_eq!(ack.accepted, 50);
        // Read a little after each batch, so that the tail is always behind.
        for _ in 0..10 {
            let message =
                tokio::time::timeout(Duration::from_secs(30), tail.message()).await.unwrap().unwrap().unwrap();
            seen.push(message.event.unwrap().location_seq);
        }
    }
    publisher.close();
    while seen.len() < 1000 {
        let message = tokio::time::timeout(Duration::from_secs(30), tail.message()).await.unwrap().unwrap().unwrap();
        seen.push(message.event.unwrap().location_seq);
    }
    assert_eq!(seen, (1..=1000).collect::<Vec<u64>>());
    drop(tail);
    server.stop().await;
}

#[tokio::test]
async fn tail_refuses_bad_requests() {
    let (_dir, server) = seeded(1).await;
    let mut query = server.query().await;
    let unknown = proto::TailEventsRequest { location: "eu-de".into(), ..Default::default() };
    assert_eq!(query.tail_events(authed(unknown, AUDITOR)).await.unwrap_err().code(), Code::NotFound);
    let bad = proto::TailEventsRequest {
        location: "us-east".into(),
        filter: Some(proto::EventFilter { outcome: 42, ..Default::default() }),
        from_seq: 1,
    };
    let status = query.tail_events(authed(bad, AUDITOR)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("filter.outcome"));
    server.stop().await;
}

#[tokio::test]
async fn exports_both_formats_in_chain_order_and_chunks() {
    let (_dir, server) = seeded(620).await;
    let mut query = server.query().await;
    let stored = server.all_events("us-east").await;
    for format in [proto::ExportFormat::AtJson, proto::ExportFormat::CadfJson] {
        let request =
            proto::ExportEventsRequest { location: "us-east".into(), format: format as i32, ..Default::default() };
        let mut stream = query.export_events(authed(request, AUDITOR)).await.unwrap().into_inner();
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.message().await.unwrap() {
            chunks.push(chunk.lines);
        }
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [500, 120], "{format:?}");
        let lines: Vec<String> = chunks.into_iter().flatten().collect();
        for (line, record) in lines.iter().zip(&stored) {
            assert!(!line.contains('\n'));
            let json: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(json["id"], record.event.as_ref().unwrap().id.as_str());
            match format {
                proto::ExportFormat::AtJson => assert_eq!(json["observer"]["name"], "ActivityTracker"),
                _ => assert_eq!(json["typeURI"], "http://schemas.dmtf.org/cloud/audit/1.0/event"),
            }
        }
    }
    // A range and a filter.
    let request = proto::ExportEventsRequest {
        location: "us-east".into(),
        format: proto::ExportFormat::AtJson as i32,
        range: Some(proto::SeqRange { from_seq: 11, to_seq: 30 }),
        filter: Some(proto::EventFilter { action: "quantum-computing.job.read".into(), ..Default::default() }),
    };
    let mut stream = query.export_events(authed(request, AUDITOR)).await.unwrap().into_inner();
    let mut lines = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        lines.extend(chunk.lines);
    }
    assert_eq!(lines.len(), 5);

    let unspecified = proto::ExportEventsRequest { location: "us-east".into(), ..Default::default() };
    let status = query.export_events(authed(unspecified, AUDITOR)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("format"), "{}", status.message());
    let inverted = proto::ExportEventsRequest {
        location: "us-east".into(),
        format: proto::ExportFormat::AtJson as i32,
        range: Some(proto::SeqRange { from_seq: 9, to_seq: 3 }),
        ..Default::default()
    };
    assert_eq!(query.export_events(authed(inverted, AUDITOR)).await.unwrap_err().code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn verifies_an_intact_chain() {
    let (_dir, server) = seeded(120).await;
    let mut query = server.query().await;
    let verify = |range: Option<proto::SeqRange>| proto::VerifyChainRequest { location: "us-east".into(), range };
    let whole = query.verify_chain(authed(verify(None), AUDITOR)).await.unwrap().into_inner();
    assert!(whole.ok, "{whole:?}");
    assert_eq!((whole.checked, whole.from_seq, whole.to_seq), (120, 1, 120));
    assert_eq!(whole.head_chain_hash, server.collector("us-east").await.head_chain_hash);
    let part = query
        .verify_chain(authed(verify(Some(proto::SeqRange { from_seq: 50, to_seq: 60 })), AUDITOR))
        .await
        .unwrap()
        .into_inner();
    assert!(part.ok);
    assert_eq!(part.checked, 11);
    let past = query.verify_chain(authed(verify(Some(proto::SeqRange { from_seq: 1, to_seq: 500 })), AUDITOR)).await;
    assert_eq!(past.unwrap_err().code(), Code::InvalidArgument);
    let unknown = proto::VerifyChainRequest { location: "eu-de".into(), range: None };
    assert_eq!(query.verify_chain(authed(unknown, AUDITOR)).await.unwrap_err().code(), Code::NotFound);

    // An empty chain verifies.
    server.create_collector("eu-de").await;
    let empty = proto::VerifyChainRequest { location: "eu-de".into(), range: None };
    let empty = query.verify_chain(authed(empty, AUDITOR)).await.unwrap().into_inner();
    assert!(empty.ok && empty.checked == 0);

    // ListPublishers for an unknown location.
    let status = query
        .list_publishers(authed(
            proto::ListPublishersRequest { location: "au-syd".into(), ..Default::default() },
            AUDITOR,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    server.stop().await;
}

/// A tail whose client stops reading cannot keep the collector from stopping: after the grace
/// period it gives up on the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_waiting_for_a_client_that_does_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = qtrail_collector::Config::for_test(dir.path(), common::tokens());
    config.shutdown_grace = Duration::from_millis(300);
    let mut server = TestServer::start_with(config).await;
    server.create_collector("us-east").await;
    let (mut stream, _) = server.open_publisher("p", "us-east", 1).await;
    let all = events("us-east", 0, 6000);
    for (index, chunk) in all.chunks(1000).enumerate() {
        assert_eq!(stream.publish(index as u64 + 1, chunk, index as u64 * 1000 + 1).await.accepted, 1000);
    }
    stream.close();
    // Small flow-control windows, so that what the client does not read backs up on the server.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut query = proto::event_query_client::EventQueryClient::new(channel);
    let request = proto::TailEventsRequest { location: "us-east".into(), filter: None, from_seq: 1 };
    let mut tail = query.tail_events(authed(request, AUDITOR)).await.unwrap().into_inner();
    // Read one event, then stop reading: megabytes of history back up behind it.
    assert!(tail.message().await.unwrap().is_some());

    let started = std::time::Instant::now();
    server.stop_inner().await.expect("clean stop");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    drop(tail);
}

/// ListCheckpoints of a collector that signs none, and its bad inputs.
#[tokio::test]
async fn list_checkpoints_validates_its_request() {
    let (_dir, server) = seeded(5).await;
    let mut query = server.query().await;
    let request = |location: &str, page_size| proto::ListCheckpointsRequest {
        location: location.into(),
        page_size,
        before_number: 0,
    };
    let listed = query.list_checkpoints(authed(request("us-east", 0), AUDITOR)).await.unwrap().into_inner();
    assert!(listed.checkpoints.is_empty(), "no key, no checkpoints");
    let cases = [
        (request("us-east", 5000), Code::InvalidArgument, "page_size 5000 is over the limit of 1000"),
        (request("jp-tok", 0), Code::NotFound, "no collector for location `jp-tok`"),
    ];
    for (request, code, message) in cases {
        let status = query.list_checkpoints(authed(request, AUDITOR)).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message));
    }
    let status = query.list_checkpoints(authed(request("Bad Location", 0), AUDITOR)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    let status = query.list_checkpoints(authed(request("us-east", 0), common::PUBLISHER)).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    server.stop().await;
}
