//! Ingest.Publish against a real server: the protocol, per-event rejects, deduplication, gaps,
//! durability across restarts and graceful shutdown.

use crate::common;

use common::{EU_DE_PUBLISHER, OTHER_PUBLISHER, PublishStream, TestServer, event, events, published};
use prost::Message as _;
use qtrail_cadf::{ChainHash, chain_hash};
use qtrail_proto::qtrail::audit::v1 as proto;
use tonic::Code;

#[tokio::test]
async fn stores_acknowledges_and_deduplicates() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let batch = events("us-east", 0, 5);

    let (mut stream, stored_seq) = server.open_publisher("runtime-1", "us-east", 1).await;
    assert_eq!(stored_seq, 0);
    let ack = stream.publish(1, &batch, 1).await;
    assert_eq!((ack.batch_seq, ack.accepted, ack.duplicates, ack.rejected.len()), (1, 5, 0, 0));
    // A resend of three of them plus two new ones.
    let mut resend = batch[2..].to_vec();
    resend.extend(events("us-east", 5, 2));
    let ack = stream.publish(2, &resend, 3).await;
    assert_eq!((ack.batch_seq, ack.accepted, ack.duplicates), (2, 2, 3));
    stream.close();

    let stored = server.all_events("us-east").await;
    assert_eq!(stored.len(), 7);
    let mut prev = ChainHash::GENESIS;
    for (index, record) in stored.iter().enumerate() {
        assert_eq!(record.location_seq, index as u64 + 1);
        assert_eq!(record.location, "us-east");
        let expected = chain_hash(&prev, &qtrail_cadf::AuditEvent::try_from(record.event.clone().unwrap()).unwrap());
        assert_eq!(record.prev_chain_hash, prev.as_bytes());
        assert_eq!(record.chain_hash, expected.as_bytes());
        assert_eq!(record.publisher.as_ref().unwrap().id, "runtime-1");
        assert!(record.receive_time.is_some());
        prev = expected;
    }
    let collector = server.collector("us-east").await;
    assert_eq!((collector.event_count, collector.head_chain_hash), (7, prev.as_bytes().to_vec()));

    // A reconnecting publisher learns what is stored.
    let (mut stream, stored_seq) = server.open_publisher("runtime-1", "us-east", 1).await;
    assert_eq!(stored_seq, 7);
    stream.close();
    let (mut stream, stored_seq) = server.open_publisher("runtime-1", "us-east", 2).await;
    assert_eq!(stored_seq, 0);
    stream.close();
    server.stop().await;
}

#[tokio::test]
async fn rejects_bad_events_one_by_one_and_stores_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    server.create_collector("eu-de").await;

    let good = events("us-east", 0, 2);
    let wire = |i: usize| proto::AuditEvent::from(&event("us-east", i));
    let mut missing_id = wire(10);
    missing_id.id.clear();
    let mut bad_crn = wire(11);
    bad_crn.log_source_crn = "crn:v1:nonsense".into();
    let mut unknown_action = wire(12);
    unknown_action.action = "quantum-computing.job.explode".into();
    let mut oversized = wire(13);
    oversized.message = "x".repeat(20 * 1024);
    let foreign = proto::AuditEvent::from(&event("eu-de", 14));
    let mut with_newline = wire(15);
    with_newline.message = "Qiskit Runtime: read job\r\nforged: line".into();

    let published = vec![
        proto::PublishedEvent { seq: 1, event: proto::AuditEvent::from(&good[0]).encode_to_vec().into() },
        proto::PublishedEvent { seq: 2, event: missing_id.encode_to_vec().into() },
        proto::PublishedEvent { seq: 3, event: bad_crn.encode_to_vec().into() },
        proto::PublishedEvent { seq: 4, event: unknown_action.encode_to_vec().into() },
        proto::PublishedEvent { seq: 5, event: oversized.encode_to_vec().into() },
        proto::PublishedEvent { seq: 6, event: foreign.encode_to_vec().into() },
        proto::PublishedEvent { seq: 7, event: Default::default() },
        proto::PublishedEvent { seq: 0, event: proto::AuditEvent::from(&good[1]).encode_to_vec().into() },
        proto::PublishedEvent { seq: 8, event: with_newline.encode_to_vec().into() },
    ];
    let (mut stream, _) = server.open_publisher("runtime-1", "us-east", 1).await;
    stream.send_batch(1, published).await;
    let ack = stream.next_ack().await;
    assert_eq!((ack.accepted, ack.duplicates), (2, 0));
    let reasons: Vec<(u64, String)> = ack.rejected.iter().map(|r| (r.seq, r.reason.clone())).collect();
    assert_eq!(reasons.len(), 7, "{reasons:?}");
    let reason = |seq: u64| reasons.iter().find(|(s, _)| *s == seq).map(|(_, r)| r.clone()).unwrap();
    assert_eq!(reason(2), "missing event id");
    assert!(reason(3).starts_with("invalid log source crn"), "{}", reason(3));
    assert_eq!(reason(4), "unknown action `quantum-computing.job.explode`");
    assert!(reason(5).contains("over the limit"), "{}", reason(5));
    assert_eq!(reason(6), "event location `eu-de` differs from the stream's location `us-east`");
    assert_eq!(reason(7), "missing event");
    assert!(reason(0).contains("invalid seq 0"), "{}", reason(0));
    let foreign_reject = ack.rejected.iter().find(|r| r.seq == 6).unwrap();
    assert_eq!(foreign_reject.event_id, foreign.id);
    stream.close();

    // Only the two valid events are stored, control characters escaped; nothing in eu-de.
    let stored = server.all_events("us-east").await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].event.as_ref().unwrap().message, "Qiskit Runtime: read job\\r\\nforged: line");
    assert!(server.all_events("eu-de").await.is_empty());

    // Rejected seqs are counted and listed for auditors; they arrived, so they are no gaps.
    let publishers = server.publishers("us-east").await;
    assert_eq!(publishers.len(), 1);
    let state = &publishers[0];
    assert_eq!((state.publisher_id.as_str(), state.epoch, state.stored_seq, state.event_count), ("runtime-1", 1, 8, 2));
    assert!(state.gaps.is_empty(), "{:?}", state.gaps);
    assert_eq!(state.rejected_count, 7, "seq 0 counted too");
    assert_eq!(state.rejected, [proto::RejectedRange { epoch: 1, from_seq: 2, to_seq: 7 }]);
    assert!(state.last_seen.is_some());
    server.stop().await;
}

#[tokio::test]
async fn a_conflicting_event_id_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let original = event("us-east", 0);
    let mut impostor = event("us-east", 1);
    impostor.id = original.id;
    assert_eq!(server.publish("us-east", &[original], 1).await.accepted, 1);
    let ack = server.publish("us-east", &[impostor], 2).await;
    assert_eq!((ack.accepted, ack.duplicates, ack.rejected.len()), (0, 0, 1));
    assert!(ack.rejected[0].reason.starts_with("conflicting event id"), "{}", ack.rejected[0].reason);
    assert_eq!(server.all_events("us-east").await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn protocol_violations_fail_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let some = events("us-east", 0, 2);

    // A batch before the Hello.
    let mut stream = PublishStream::open(&server).await;
    stream.send_batch(1, published(&some, 1)).await;
    let status = stream.error().await;
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "first message must be a hello, got a batch")
    );

    // A request with neither.
    let mut stream = PublishStream::open(&server).await;
    stream.send(proto::PublishRequest { kind: None }).await;
    assert_eq!(stream.error().await.code(), Code::InvalidArgument);

    // Bad Hello fields.
    for (publisher_id, location, epoch, field) in [
        ("", "us-east", 1, "hello.publisher_id"),
        ("p", "US", 1, "hello.location"),
        ("p", "us-east", 0, "hello.epoch"),
        ("p\n", "us-east", 1, "hello.publisher_id"),
    ] {
        let mut stream = PublishStream::open(&server).await;
        stream.send_hello(publisher_id, location, epoch).await;
        let status = stream.error().await;
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(status.message().contains(field), "{}", status.message());
    }

    // A location without collector.
    let mut stream = PublishStream::open(&server).await;
    stream.send_hello("p", "eu-de", 1).await;
    let status = stream.error().await;
    assert_eq!((status.code(), status.message()), (Code::FailedPrecondition, "no collector for location `eu-de`"));

    // A second Hello: the batch before it is still acknowledged.
    let (mut stream, _) = server.open_publisher("p", "us-east", 1).await;
    assert_eq!(stream.publish(1, &some[..1], 1).await.accepted, 1);
    stream.send_hello("p", "us-east", 1).await;
    let status = stream.error().await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("hello sent twice"), "{}", status.message());

    // An empty batch, a batch out of order, a batch that is too large.
    let (mut stream, _) = server.open_publisher("p", "us-east", 1).await;
    stream.send_batch(1, Vec::new()).await;
    let status = stream.error().await;
    assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "batch.events of batch 1 is empty"));

    let (mut stream, _) = server.open_publisher("p", "us-east", 1).await;
    stream.send_batch(2, published(&some, 1)).await;
    let status = stream.error().await;
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "batch.batch_seq 2 out of order, expected 1")
    );

    let (mut stream, _) = server.open_publisher("p", "us-east", 1).await;
    let one = proto::PublishedEvent { seq: 1, event: proto::AuditEvent::from(&some[0]).encode_to_vec().into() };
    stream.send_batch(1, vec![one; qtrail_proto::limits::MAX_BATCH_EVENTS + 1]).await;
    let status = stream.error().await;
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("over the limit of 1000"), "{}", status.message());

    // An epoch older than one already seen.
    let (mut stream, _) = server.open_publisher("p", "us-east", 3).await;
    stream.publish(1, &some[1..], 1).await;
    stream.close();
    let mut stream = PublishStream::open(&server).await;
    stream.send_hello("p", "us-east", 2).await;
    assert_eq!(stream.error().await.code(), Code::FailedPrecondition);

    // Nothing partial was stored by any failed stream: the two events acknowledged, no more.
    assert_eq!(server.all_events("us-east").await.len(), 2);
    server.stop().await;
}

/// A publisher token publishes only to the locations it names: a Hello for another location is
/// PERMISSION_DENIED and nothing of that stream is stored, although the location has a
/// collector and the events claim it.
#[tokio::test]
async fn a_publisher_token_publishes_only_to_its_locations() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    server.create_collector("eu-de").await;

    let mut intruder = PublishStream::open_with_token(&server, EU_DE_PUBLISHER).await.unwrap();
    intruder.send_hello("runtime-eu-de-1", "us-east", 1).await;
    intruder.send_batch(1, published(&events("us-east", 0, 2), 1)).await;
    let status = intruder.error().await;
    assert_eq!(
        (status.code(), status.message()),
        (Code::PermissionDenied, "token `runtime-eu-de-only` may not publish to location `us-east`")
    );
    assert!(server.all_events("us-east").await.is_empty());
    assert!(server.publishers("us-east").await.is_empty(), "no publisher state either");

    let (mut own, _) = server.open_publisher_as(EU_DE_PUBLISHER, "runtime-eu-de-1", "eu-de", 1).await;
    assert_eq!(own.publish(1, &events("eu-de", 0, 2), 1).await.accepted, 2);
    own.close();
    server.stop().await;
}

/// A message that is not a `PublishRequest` at all is the publisher's error, answered
/// INVALID_ARGUMENT, never the quiet end of a stream that broke: first, or after the Hello.
#[tokio::test]
async fn a_message_that_is_not_protobuf_fails_the_stream_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    // Field 15 with wire type 7, which does not exist.
    let garbage = vec![0x7f, 0xff, 0xff, 0xff];

    let (responses, ended) = common::publish_raw(&server, vec![garbage.clone()]).await;
    assert!(responses.is_empty(), "{responses:?}");
    let status = ended.expect_err("the stream fails");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("publish request does not decode"), "{}", status.message());

    let hello = proto::Hello { publisher_id: "p".into(), location: "us-east".into(), epoch: 1 };
    let hello = proto::PublishRequest { kind: Some(proto::publish_request::Kind::Hello(hello)) }.encode_to_vec();
    let (responses, ended) = common::publish_raw(&server, vec![hello, garbage]).await;
    assert!(matches!(
        responses[..],
        [proto::PublishResponse { kind: Some(proto::publish_response::Kind::Welcome(_)) }]
    ));
    let status = ended.expect_err("the stream fails");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("publish request does not decode"), "{}", status.message());

    // A message over the size limit is refused unread, and said so.
    let limit = qtrail_proto::limits::MAX_MESSAGE_BYTES;
    let (_, ended) = common::publish_raw(&server, vec![vec![0; limit + 1]]).await;
    let status = ended.expect_err("the stream fails");
    assert_eq!(
        (status.code(), status.message()),
        (Code::ResourceExhausted, format!("publish request over the limit of {limit} bytes").as_str())
    );
    server.stop().await;
}

/// A publisher that skips every other seq opens a gap per event: at the limit, a batch that
/// would open one more fails the stream RESOURCE_EXHAUSTED without an Ack and nothing of it is
/// stored, while a batch that opens none is still stored; its state stays within one page.
#[tokio::test]
async fn a_publisher_at_the_gap_limit_has_batches_that_open_gaps_refused() {
    use qtrail_collector::store::publisher::MAX_GAPS_PER_PUBLISHER;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let all = events("us-east", 0, MAX_GAPS_PER_PUBLISHER + 2);
    let (mut stream, _) = server.open_publisher("skipper", "us-east", 1).await;
    let mut published_events = published(&all[..MAX_GAPS_PER_PUBLISHER], 1);
    for (i, event) in published_events.iter_mut().enumerate() {
        event.seq = 2 * (i as u64 + 1);
    }
    for (batch_seq, chunk) in (1..).zip(published_events.chunks(qtrail_proto::limits::MAX_BATCH_EVENTS)) {
        stream.send_batch(batch_seq, chunk.to_vec()).await;
        assert_eq!(stream.next_ack().await.accepted as usize, chunk.len());
    }
    let highest = 2 * MAX_GAPS_PER_PUBLISHER as u64;
    let batch_seq = published_events.len().div_ceil(qtrail_proto::limits::MAX_BATCH_EVENTS) as u64 + 1;
    let mut over = published(&all[MAX_GAPS_PER_PUBLISHER..MAX_GAPS_PER_PUBLISHER + 1], highest + 2);
    stream.send_batch(batch_seq, std::mem::take(&mut over)).await;
    let status = stream.error().await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "batch {batch_seq} would leave publisher `skipper` more than {MAX_GAPS_PER_PUBLISHER} sequence gaps: \
             resend the missing events first"
        )
    );
    assert_eq!(server.all_events("us-east").await.len(), MAX_GAPS_PER_PUBLISHER);

    let (mut stream, stored_seq) = server.open_publisher("skipper", "us-east", 1).await;
    assert_eq!(stored_seq, highest, "the refused batch moved nothing");
    let ack = stream.publish(1, &all[MAX_GAPS_PER_PUBLISHER..], highest + 1).await;
    assert_eq!(ack.accepted, 2, "contiguous events open no gap");
    stream.close();
    let publishers = server.publishers("us-east").await;
    assert_eq!(publishers[0].gaps.len(), MAX_GAPS_PER_PUBLISHER);
    server.stop().await;
}

/// A publisher whose events are rejected now and then (here every other one, more of them than
/// the gap limit, each between two stored ones) is never wedged by them: rejected seqs arrived
/// and are no gaps, their count stays exact, and the publisher keeps delivering, even batches
/// that skip a seq.
#[tokio::test]
async fn rejected_events_past_the_gap_limit_never_wedge_a_publisher() {
    use qtrail_collector::store::publisher::{MAX_GAPS_PER_PUBLISHER, MAX_REJECTED_RANGES_PER_PUBLISHER};
    use qtrail_proto::limits::MAX_BATCH_EVENTS;

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let rejections = MAX_GAPS_PER_PUBLISHER + 100;
    // Odd seqs valid, even seqs of another location: rejected.
    let wire = |i: usize, location: &str| proto::AuditEvent::from(&event(location, i)).encode_to_vec().into();
    let all: Vec<proto::PublishedEvent> = (0..2 * rejections)
        .map(|i| proto::PublishedEvent {
            seq: i as u64 + 1,
            event: wire(i, if i % 2 == 0 { "us-east" } else { "eu-de" }),
        })
        .collect();
    let (mut stream, _) = server.open_publisher("flaky", "us-east", 1).await;
    let mut batch_seq = 0;
    for chunk in all.chunks(MAX_BATCH_EVENTS) {
        batch_seq += 1;
        stream.send_batch(batch_seq, chunk.to_vec()).await;
        let ack = stream.next_ack().await;
        assert_eq!((ack.accepted as usize, ack.rejected.len()), (chunk.len() / 2, chunk.len() / 2));
    }
    let state = server.publishers("us-east").await.remove(0);
    assert!(state.gaps.is_empty(), "{} gaps", state.gaps.len());
    assert_eq!((state.rejected_count, state.event_count), (rejections as u64, rejections as u64));
    assert_eq!(state.rejected.len(), MAX_REJECTED_RANGES_PER_PUBLISHER, "the oldest ranges dropped");
    let highest = 2 * rejections as u64;
    assert_eq!(state.rejected.last(), Some(&proto::RejectedRange { epoch: 1, from_seq: highest, to_seq: highest }));

    // A real gap still counts, and the publisher still makes progress.
    let more = events("us-east", 2 * rejections, 2);
    batch_seq += 1;
    stream.send_batch(batch_seq, published(&more, highest + 2)).await;
    assert_eq!(stream.next_ack().await.accepted, 2);
    stream.close();
    let state = server.publishers("us-east").await.remove(0);
    let gaps: Vec<(u64, u64, u64)> = state.gaps.iter().map(|g| (g.epoch, g.from_seq, g.to_seq)).collect();
    assert_eq!(gaps, vec![(1, highest + 1, highest + 1)]);
    server.stop().await;
}

/// ListPublishers pages by publisher id; a page token resumes after the last publisher of its
/// page, and a token that is not one, or an over-large page size, is INVALID_ARGUMENT.
#[tokio::test]
async fn list_publishers_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    for (i, id) in ["pub-c", "pub-a", "pub-b"].into_iter().enumerate() {
        let (mut stream, _) = server.open_publisher(id, "us-east", 1).await;
        assert_eq!(stream.publish(1, &events("us-east", i, 1), 1).await.accepted, 1);
        stream.close();
    }
    let mut query = server.query().await;
    let request = |page_size, page_token: &str| {
        common::authed(
            proto::ListPublishersRequest { location: "us-east".into(), page_size, page_token: page_token.into() },
            common::AUDITOR,
        )
    };
    let first = query.list_publishers(request(2, "")).await.unwrap().into_inner();
    let ids = |page: &proto::ListPublishersResponse| {
        page.publishers.iter().map(|p| p.publisher_id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ["pub-a", "pub-b"]);
    assert!(!first.next_page_token.is_empty());
    let second = query.list_publishers(request(2, &first.next_page_token)).await.unwrap().into_inner();
    assert_eq!((ids(&second), second.next_page_token.as_str()), (vec!["pub-c".to_owned()], ""));
    let whole = query.list_publishers(request(0, "")).await.unwrap().into_inner();
    assert_eq!((ids(&whole).len(), whole.next_page_token.as_str()), (3, ""));

    let bad = query.list_publishers(request(2, "not a token!")).await.unwrap_err();
    assert_eq!(
        (bad.code(), bad.message()),
        (Code::InvalidArgument, "invalid page_token: not from a previous page of publishers")
    );
    let too_many = query.list_publishers(request(1001, "")).await.unwrap_err();
    assert_eq!(
        (too_many.code(), too_many.message()),
        (Code::InvalidArgument, "page_size 1001 is over the limit of 1000")
    );
    server.stop().await;
}

#[tokio::test]
async fn acknowledged_batches_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let (mut stream, _) = server.open_publisher("p", "us-east", 1).await;
    let all = events("us-east", 0, 50);
    for (batch, chunk) in all.chunks(10).enumerate() {
        let ack = stream.publish(batch as u64 + 1, chunk, batch as u64 * 10 + 1).await;
        assert_eq!(ack.accepted, 10);
    }
    stream.close();
    let head = server.collector("us-east").await.head_chain_hash;
    server.stop().await;

    let server = TestServer::start(dir.path()).await;
    let collector = server.collector("us-east").await;
    assert_eq!((collector.event_count, collector.head_chain_hash), (50, head));
    let (mut stream, stored_seq) = server.open_publisher("p", "us-east", 1).await;
    assert_eq!(stored_seq, 50);
    // Everything resent after the restart is a duplicate.
    let ack = stream.publish(1, &all[40..], 41).await;
    assert_eq!((ack.accepted, ack.duplicates), (0, 10));
    stream.close();
    server.stop().await;
}

/// Shutdown stops reading, acknowledges every batch already received, and ends the stream
/// UNAVAILABLE; `run` then returns Ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_acknowledges_in_flight_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let (mut stream, _) = server.open_publisher("p", "us-east", 1).await;
    for batch in 0..4_u64 {
        stream.send_batch(batch + 1, published(&events("us-east", batch as usize * 100, 100), batch * 100 + 1)).await;
    }
    // Wait for the first Ack, so that the batches are in the server's hands, then stop.
    let first = stream.next_ack().await;
    assert_eq!(first.batch_seq, 1);
    server.begin_stop();
    let mut acked = vec![first.batch_seq];
    let status = loop {
        match stream.next().await {
            Ok(response) => match response.kind {
                Some(proto::publish_response::Kind::Ack(ack)) => acked.push(ack.batch_seq),
                other => panic!("unexpected {other:?}"),
            },
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    server.stop_inner().await.expect("clean stop");
    assert_eq!(acked, (1..=acked.len() as u64).collect::<Vec<_>>());

    // Every acknowledged batch is stored.
    let server = TestServer::start(dir.path()).await;
    let stored = server.collector("us-east").await.event_count;
    assert!(stored >= acked.len() as u64 * 100, "stored {stored}, acked {acked:?}");
    server.stop().await;
}

/// A publisher id is bound to the token of its first batch: a stream with another publisher
/// token is refused at its Hello, and the records name the token that delivered them.
#[tokio::test]
async fn a_publisher_id_is_bound_to_the_token_that_first_published_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    assert_eq!(server.publish("us-east", &events("us-east", 0, 2), 1).await.accepted, 2);

    let mut intruder = PublishStream::open_with_token(&server, OTHER_PUBLISHER).await.unwrap();
    intruder.send_hello("pub-1", "us-east", 1).await;
    let status = intruder.error().await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "publisher `pub-1` is bound to token `runtime-us-east`, not `runtime-eu-de`");
    // Its own id is its own.
    let (mut other, _) = server.open_publisher_as(OTHER_PUBLISHER, "pub-2", "us-east", 1).await;
    assert_eq!(other.publish(1, &events("us-east", 2, 1), 1).await.accepted, 1);
    other.close();

    let credentials: Vec<(String, String)> = server
        .all_events("us-east")
        .await
        .into_iter()
        .map(|record| record.publisher.unwrap())
        .map(|publisher| (publisher.id, publisher.credential))
        .collect();
    let expected = [("pub-1", "runtime-us-east"), ("pub-1", "runtime-us-east"), ("pub-2", "runtime-eu-de")];
    assert_eq!(credentials, expected.map(|(id, token)| (id.to_owned(), token.to_owned())));
    let publishers = server.publishers("us-east").await;
    let bound: Vec<&str> = publishers.iter().map(|state| state.credential.as_str()).collect();
    assert_eq!(bound, ["runtime-us-east", "runtime-eu-de"]);
    server.stop().await;
}

/// Two streams with different tokens both pass their Hello for a new id; the first batch binds
/// it, and the other stream fails PERMISSION_DENIED without an Ack for its batch (a rejected
/// event would be dropped by its publisher for good), storing nothing.
#[tokio::test]
async fn the_loser_of_a_race_for_a_new_publisher_id_keeps_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let (mut first, stored) = server.open_publisher("pub-new", "us-east", 1).await;
    assert_eq!(stored, 0);
    let (mut second, stored) = server.open_publisher_as(OTHER_PUBLISHER, "pub-new", "us-east", 1).await;
    assert_eq!(stored, 0, "both pass their Hello");

    assert_eq!(first.publish(1, &events("us-east", 0, 2), 1).await.accepted, 2);
    second.send_batch(1, published(&events("us-east", 5, 2), 1)).await;
    let status = second.error().await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "publisher `pub-new` is bound to token `runtime-us-east`, not `runtime-eu-de`");
    first.close();
    assert_eq!(server.all_events("us-east").await.len(), 2, "nothing of the loser was stored");
    server.stop().await;
}
