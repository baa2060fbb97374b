//! Account-scoped auditor tokens: a token with `accounts = ["acc-bob"]` reads only the events
//! whose initiator (log source) or target account is bob's, on every surface (QueryEvents with
//! full pages, TailEvents from history into live, ExportEvents, GetInclusionProof, the console),
//! and gets hash tiles but not entry tiles; an unscoped token reads everything.

use qtrail_cadf::{Action, Crn, EventBuilder, EventTime, Initiator, Location};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::get_inclusion_proof_request::Leaf;
use std::time::Duration;
use tonic::Code;

use crate::common::{self, AUDITOR, BOB_AUDITOR, TestServer, authed};
use crate::tlog::{newest_checkpoint, signing_config};

const LOCATION: &str = "us-east";
const EVENTS: usize = 90;

/// Event `i`: by turns alice on her own program, alice reading bob's program, and bob on his own.
fn event(i: usize) -> qtrail_cadf::AuditEvent {
    let (initiator, owner) = [("acc-alice", "acc-alice"), ("acc-alice", "acc-bob"), ("acc-bob", "acc-bob")][i % 3];
    let location: Location = LOCATION.parse().unwrap();
    let source = Crn::instance(&location, initiator, "inst-1").unwrap();
    let who = Initiator {
        id: format!("IBMid-{initiator}"),
        name: String::new(),
        type_uri: qtrail_cadf::event::INITIATOR_USER.into(),
        credential_type: "apikey".into(),
        host_address: "192.0.2.7".into(),
        host_agent: "qtrail-tests".into(),
    };
    EventBuilder::new(Action::ProgramRead, source, who)
        .target(&format!("p-{i}"), "")
        .target_account(owner)
        .correlation_id(format!("corr-{i}"))
        .event_time(EventTime::from_unix_millis(1_700_000_000_000 + i as i64 * 1000).unwrap())
        .build()
        .unwrap()
}

fn bobs(record: &proto::StoredEvent) -> bool {
    let event = record.event.as_ref().unwrap();
    event.log_source_crn.contains(":a/acc-bob:") || event.target.as_ref().unwrap().id.contains(":a/acc-bob:")
}

/// Every event of the location, page by page, as `token` reads them.
async fn query_all(server: &TestServer, token: &str, page_size: u32) -> Vec<proto::StoredEvent> {
    let mut query = server.query().await;
    let (mut all, mut page_token) = (Vec::new(), String::new());
    loop {
        let request = proto::QueryEventsRequest {
            location: LOCATION.into(),
            page_size,
            page_token: page_token.clone(),
            order: proto::Order::OldestFirst as i32,
            ..Default::default()
        };
        let page = query.query_events(authed(request, token)).await.unwrap().into_inner();
        if !page.next_page_token.is_empty() {
            assert_eq!(page.events.len(), page_size as usize, "a scoped page is full while matches remain");
        }
        all.extend(page.events);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

async fn server() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_http_config(signing_config(dir.path(), false)).await;
    server.create_collector(LOCATION).await;
    let events: Vec<_> = (0..EVENTS).map(event).collect();
    assert_eq!(server.publish(LOCATION, &events, 1).await.accepted as usize, EVENTS);
    (dir, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_queries_tails_and_exports_only_its_accounts_events() {
    let (_dir, server) = server().await;
    let everything = query_all(&server, AUDITOR, 7).await;
    assert_eq!(everything.len(), EVENTS);
    let bob = query_all(&server, BOB_AUDITOR, 7).await;
    let expected: Vec<u64> = everything.iter().filter(|r| bobs(r)).map(|r| r.location_seq).collect();
    assert_eq!(bob.iter().map(|r| r.location_seq).collect::<Vec<_>>(), expected);
    assert_eq!(bob.len(), EVENTS * 2 / 3, "bob's own events and alice's reads of his programs");

    // The scope narrows the caller's own filter, and GetEvent-like reads see nothing else.
    let mut query = server.query().await;
    let filter = proto::EventFilter { initiator_id: "IBMid-acc-alice".into(), ..Default::default() };
    let request = proto::QueryEventsRequest { location: LOCATION.into(), filter: Some(filter), ..Default::default() };
    let alices = query.query_events(authed(request, BOB_AUDITOR)).await.unwrap().into_inner().events;
    assert_eq!(alices.len(), EVENTS / 3, "only alice's reads of bob's programs");
    assert!(alices.iter().all(bobs));

    let export = proto::ExportEventsRequest {
        location: LOCATION.into(),
        format: proto::ExportFormat::AtJson as i32,
        ..Default::default()
    };
    let mut stream = query.export_events(authed(export, BOB_AUDITOR)).await.unwrap().into_inner();
    let mut lines = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        lines.extend(chunk.lines);
    }
    assert_eq!(lines.len(), expected.len());
    assert!(lines.iter().all(|line| line.contains("a/acc-bob:")), "every exported event is bob's");

    // A tail from the start: history, then live, both scoped.
    let request = proto::TailEventsRequest { location: LOCATION.into(), filter: None, from_seq: 1 };
    let mut tail = query.tail_events(authed(request, BOB_AUDITOR)).await.unwrap().into_inner();
    let more: Vec<_> = (EVENTS..EVENTS + 6).map(event).collect();
    assert_eq!(server.publish(LOCATION, &more, EVENTS as u64 + 1).await.accepted, 6);
    let mut tailed = Vec::new();
    while tailed.len() < expected.len() + 4 {
        let next = tokio::time::timeout(Duration::from_secs(20), tail.message()).await.expect("tail keeps up");
        tailed.push(next.unwrap().unwrap().event.unwrap());
    }
    assert!(tailed.iter().all(bobs));
    assert_eq!(tailed.last().unwrap().location_seq, EVENTS as u64 + 6, "live events reach a scoped tail");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_proves_its_events_and_reads_hash_tiles_but_not_entries() {
    let (_dir, server) = server().await;
    let signed = common::wait_until(Duration::from_secs(20), || async {
        newest_checkpoint(&server).await.is_some_and(|checkpoint| checkpoint.tree_size == EVENTS as u64)
    })
    .await;
    assert!(signed, "a checkpoint covers the events");
    let prove =
        |leaf: Leaf| proto::GetInclusionProofRequest { location: LOCATION.into(), leaf: Some(leaf), tree_size: 0 };
    let mut query = server.query().await;
    // Leaf 1 is alice's read of bob's program, leaf 0 alice on her own.
    let proved = query.get_inclusion_proof(authed(prove(Leaf::LeafIndex(1)), BOB_AUDITOR)).await.unwrap();
    assert_eq!(proved.into_inner().leaf_index, 1);
    let by_correlation = prove(Leaf::CorrelationId("corr-2".into()));
    assert_eq!(
        query.get_inclusion_proof(authed(by_correlation, BOB_AUDITOR)).await.unwrap().into_inner().leaf_index,
        2
    );
    for hidden in [Leaf::LeafIndex(0), Leaf::CorrelationId("corr-0".into())] {
        let status = query.get_inclusion_proof(authed(prove(hidden.clone()), BOB_AUDITOR)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{hidden:?}: {status:?}");
        assert!(query.get_inclusion_proof(authed(prove(hidden), AUDITOR)).await.is_ok());
    }
    // Consistency and checkpoints say nothing of any event: allowed.
    let consistency = proto::GetConsistencyProofRequest { location: LOCATION.into(), old_size: 1 };
    assert!(query.get_consistency_proof(authed(consistency, BOB_AUDITOR)).await.is_ok());

    let bearer = format!("Bearer {BOB_AUDITOR}");
    let http = server.http();
    let headers = [("authorization", bearer.as_str())];
    let (status, _, body) = http.get_bytes("/tlog/us-east/tile/entries/000.p/1", &headers).await;
    assert_eq!(status, 403);
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains("auditor-bob") && body.contains("qtrail events prove"), "{body}");
    assert_eq!(http.get_bytes("/tlog/us-east/tile/0/000.p/1", &headers).await.0, 200);
    assert_eq!(http.get_bytes("/tlog/us-east/checkpoint", &headers).await.0, 200);
    let unscoped = format!("Bearer {AUDITOR}");
    assert_eq!(
        http.get_bytes("/tlog/us-east/tile/entries/000.p/1", &[("authorization", unscoped.as_str())]).await.0,
        200
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_scoped_token_only_its_accounts_events() {
    let (_dir, server) = server().await;
    let mut http = server.http();
    assert_eq!(http.sign_in(BOB_AUDITOR).await.status, 200);
    let page = http.get("/api/locations/us-east/events?page_size=500").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let rows = page.json()["events"].as_array().unwrap().clone();
    assert_eq!(rows.len(), EVENTS * 2 / 3);
    assert!(rows.iter().all(|row| {
        let seq = row["location_seq"].as_u64().unwrap();
        (seq - 1) % 3 != 0
    }));
    // Alice's own first event is absent, as if it did not exist.
    assert_eq!(http.get("/api/locations/us-east/events/1").await.status, 404);
    assert_eq!(http.get("/api/locations/us-east/events/2").await.status, 200);
    let export = http.get("/api/locations/us-east/export?format=at-json").await;
    assert_eq!(export.body.lines().count(), EVENTS * 2 / 3);
    server.stop().await;
}
