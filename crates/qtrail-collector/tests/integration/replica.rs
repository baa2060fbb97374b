//! A collector over a shared PostgreSQL store (`Config::postgres`): its tails get its events
//! through the follower rather than from its writer, it leads alone and signs checkpoints, and
//! `/metrics` shows its role. In a process of its own, for the metrics.

use std::time::Duration;

use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_testkit::Postgres;

use crate::common::http::sample;
use crate::common::{AUDITOR, TestServer, authed, events, wait_until};
use crate::tlog::{newest_checkpoint, signing_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_alone_leads_signs_and_tails_through_the_follower() {
    if !qtrail_testkit::in_own_process("replica::a_replica_alone_leads_signs_and_tails_through_the_follower") {
        return;
    }
    let postgres = Postgres::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = signing_config(dir.path(), false);
    config.postgres = Some(qtrail_collector::store::postgres::PgOptions::new(postgres.url()));
    config.replica_id = Some("replica-a".into());
    let server = TestServer::start_with_http_config(config).await;
    server.create_collector("us-east").await;

    let request = proto::TailEventsRequest { location: "us-east".into(), filter: None, from_seq: 0 };
    let mut tail = server.query().await.tail_events(authed(request, AUDITOR)).await.unwrap().into_inner();
    assert_eq!(server.publish("us-east", &events("us-east", 0, 10), 1).await.accepted, 10);
    for expected in 1..=10 {
        let message = tokio::time::timeout(Duration::from_secs(20), tail.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(message.event.unwrap().location_seq, expected);
    }

    let signed = wait_until(Duration::from_secs(20), || async {
        newest_checkpoint(&server).await.is_some_and(|checkpoint| checkpoint.tree_size == 10)
    })
    .await;
    assert!(signed, "the leader signs a checkpoint over the events");
    let text = server.http().get("/metrics").await.body;
    assert_eq!(sample(&text, r#"qtrail_replica_leader{replica="replica-a"}"#), Some(1.0), "{text}");
    assert_eq!(sample(&text, r#"qtrail_replica_tail_lag_events{location="us-east"}"#), Some(0.0));
    // The store's pool has lent connections and taken them back.
    let idle = sample(&text, r#"qtrail_store_pool_connections{state="idle"}"#);
    assert!(idle.is_some_and(|idle| idle >= 1.0), "{text}");
    assert!(sample(&text, r#"qtrail_store_pool_connections{state="busy"}"#).is_some(), "{text}");
    drop(tail);
    server.stop().await;
}
