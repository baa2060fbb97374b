//! The publishing side's own client (`qtrail-publisher`: outbox and Publish stream) against the
//! real collector, for what only the two together decide.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::{PUBLISHER, TestServer, event, wait_until};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_publisher::{CommitMode, Outbox, OutboxLimits, Publisher, PublisherConfig};
use redb::{Database, TableDefinition};

const WAIT: Duration = Duration::from_secs(20);

/// The outbox's event table, as `qtrail-publisher` lays it out: seq → (enqueue time, event).
const OUTBOX_EVENTS: TableDefinition<'_, u64, (i64, &[u8])> = TableDefinition::new("qtrail_outbox_events");

/// An outbox event damaged on disk is sent as it is: the collector rejects it alone (and counts
/// it, for its operators), stores the others, and its seq is counted and listed as rejected in
/// the publisher's state, where auditors see it, not as a gap: it arrived. The publisher then
/// moves on instead of resending it forever.
#[tokio::test]
async fn a_damaged_outbox_event_is_rejected_alone_and_counted() {
    // It counts the process-wide metric of rejected events.
    if !qtrail_testkit::in_own_process("publisher::a_damaged_outbox_event_is_rejected_alone_and_counted") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_http(&dir.path().join("collector")).await;
    server.create_collector("us-east").await;

    let db = Arc::new(Database::create(dir.path().join("outbox.redb")).unwrap());
    let outbox = Outbox::open(db.clone(), "runtime-test", OutboxLimits::default(), CommitMode::PerTransaction).unwrap();
    let txn = db.begin_write().unwrap();
    for n in 0..3 {
        outbox.enqueue(&txn, &event("us-east", n)).unwrap();
    }
    // Seq 2's bytes end inside a length-delimited field: they no longer decode.
    txn.open_table(OUTBOX_EVENTS).unwrap().insert(2, (0, [0x0a, 0x7f, 0x01].as_slice())).unwrap();
    txn.commit().unwrap();

    let mut config = PublisherConfig::new(format!("http://{}", server.addr), "us-east".parse().unwrap());
    config.token = Some(PUBLISHER.into());
    let publisher = Publisher::spawn(outbox.clone(), config).unwrap();
    let drained = wait_until(WAIT, || async { outbox.depth().unwrap().events == 0 }).await;
    assert!(drained, "the outbox empties, the damaged event included");
    let stats = publisher.stats().snapshot();
    assert_eq!((stats.acked, stats.rejected), (2, 1));
    assert!(publisher.shutdown(Duration::from_secs(5)).await);

    let stored: Vec<u64> =
        server.all_events("us-east").await.iter().map(|record| record.publisher.as_ref().unwrap().seq).collect();
    assert_eq!(stored, [1, 3]);
    let publishers = server.publishers("us-east").await;
    assert_eq!(publishers.len(), 1);
    assert_eq!(publishers[0].publisher_id, outbox.publisher_id());
    assert!(publishers[0].gaps.is_empty(), "{:?}", publishers[0].gaps);
    assert_eq!(publishers[0].rejected_count, 1);
    assert_eq!(publishers[0].rejected, [proto::RejectedRange { epoch: 1, from_seq: 2, to_seq: 2 }]);
    let metrics = server.http().get("/metrics").await.body;
    let rejected = r#"qtrail_collector_ingest_events_total{location="us-east",result="rejected"} 1"#;
    assert!(metrics.lines().any(|line| line == rejected), "{metrics}");
    server.stop().await;
}
