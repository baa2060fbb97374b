//! The collector's Prometheus metrics at `/metrics`. Each test in a process of its own: the
//! recorder is process-wide, so only there can gauges be expected to return to exactly zero.

use crate::common;

use std::time::Duration;

use common::http::{HttpClient, sample};
use common::{AUDITOR, TestServer, events, wait_until};

const LOCATION: &str = "us-east";

/// Returns the value of the sample `name`, which the page must have.
fn value(text: &str, name: &str) -> f64 {
    sample(text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn metrics_show_ingest_streams_commits_store_and_tails() {
    if !qtrail_testkit::in_own_process("metrics::metrics_show_ingest_streams_commits_store_and_tails") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_http(dir.path()).await;
    server.create_collector(LOCATION).await;
    let mut client = server.http();
    assert_eq!(client.sign_in(AUDITOR).await.status, 200);

    let (mut publisher, _) = server.open_publisher("pub-m", LOCATION, 1).await;
    let batch = events(LOCATION, 0, 5);
    assert_eq!(publisher.publish(1, &batch, 1).await.accepted, 5);
    assert_eq!(publisher.publish(2, &batch[..2], 1).await.duplicates, 2);
    let mut mixed = events("eu-de", 0, 1);
    mixed.extend(events(LOCATION, 5, 1));
    let ack = publisher.publish(3, &mixed, 6).await;
    assert_eq!((ack.accepted, ack.rejected.len()), (1, 1));
    let live = client.events(&format!("/api/locations/{LOCATION}/live"), &[]).await;

    let metrics = client.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body;
    assert_eq!(value(&text, r#"qtrail_collector_ingest_batches_total{location="us-east"}"#), 3.0);
    assert_eq!(value(&text, r#"qtrail_collector_ingest_events_total{location="us-east",result="accepted"}"#), 6.0);
    assert_eq!(value(&text, r#"qtrail_collector_ingest_events_total{location="us-east",result="duplicate"}"#), 2.0);
    assert_eq!(value(&text, r#"qtrail_collector_ingest_events_total{location="us-east",result="rejected"}"#), 1.0);
    assert_eq!(value(&text, r#"qtrail_collector_events_stored{location="us-east"}"#), 6.0);
    assert_eq!(value(&text, "qtrail_collector_publish_streams"), 1.0);
    assert_eq!(value(&text, "qtrail_collector_tail_subscribers"), 1.0);
    assert_eq!(value(&text, "qtrail_collector_console_sessions"), 1.0);
    assert!(value(&text, "qtrail_collector_store_bytes") > 0.0);
    // The disk's headroom, read at start and every few seconds.
    let (free, size) =
        (value(&text, "qtrail_collector_disk_free_bytes"), value(&text, "qtrail_collector_disk_size_bytes"));
    assert!(free > 0.0 && free <= size, "{free} of {size}");
    // Three batches reached the writer (the duplicates too); each was its own group here.
    for summary in ["qtrail_collector_write_group_batches", "qtrail_collector_write_group_events"] {
        assert_eq!(value(&text, &format!("{summary}_count")), 3.0, "{summary}");
    }
    assert_eq!(value(&text, "qtrail_collector_write_group_events_sum"), 8.0);
    assert_eq!(value(&text, "qtrail_collector_commit_seconds_count"), 3.0);
    assert_eq!(client.get("/healthz").await.body, "ok\n");

    // Closing the stream and the live view brings the gauges back down.
    publisher.close();
    drop(live);
    let settled = wait_until(Duration::from_secs(10), || {
        let client: HttpClient = client.clone();
        async move {
            let text = client.get("/metrics").await.body;
            // The indexer reports its lag after its first step, which may not have run yet.
            value(&text, "qtrail_collector_publish_streams") == 0.0
                && value(&text, "qtrail_collector_tail_subscribers") == 0.0
                && sample(&text, "qtrail_collector_index_lag_events") == Some(0.0)
        }
    })
    .await;
    assert!(settled, "gauges return to zero, and the indexer catches up");
    server.stop().await;
}

/// A collector with a checkpoint key counts the checkpoints it signs and shows when it signed
/// the newest, so that an alert can fire when signing stops.
#[tokio::test]
async fn metrics_show_signed_checkpoints() {
    if !qtrail_testkit::in_own_process("metrics::metrics_show_signed_checkpoints") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("checkpoint-key.pem");
    std::fs::write(&key_file, qtrail_cadf::checkpoint::SigningKey::generate_pem().unwrap()).unwrap();
    let mut config = qtrail_collector::Config::for_test(dir.path().join("data"), common::tokens());
    config.checkpoint_key = Some(key_file);
    config.checkpoint_interval = Duration::from_millis(50);
    let server = TestServer::start_with_http_config(config).await;
    server.create_collector("eu-de").await;
    let client = server.http();
    let signed = wait_until(Duration::from_secs(20), || async {
        let text = client.get("/metrics").await.body;
        sample(&text, r#"qtrail_collector_checkpoints_total{location="eu-de"}"#).is_some_and(|count| count >= 2.0)
    })
    .await;
    assert!(signed, "checkpoints are counted");
    let text = client.get("/metrics").await.body;
    let signed_at = value(&text, r#"qtrail_collector_checkpoint_time_seconds{location="eu-de"}"#);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - 60.0..=now + 1.0).contains(&signed_at), "{signed_at} near {now}");
    assert_eq!(sample(&text, "qtrail_collector_checkpoint_failures_total"), None, "none failed");
    server.stop().await;
}

/// With `--metrics-token-file`, `/metrics` answers only its bearer token; health stays open.
#[tokio::test]
async fn a_metrics_token_keeps_metrics_from_strangers() {
    if !qtrail_testkit::in_own_process("metrics::a_metrics_token_keeps_metrics_from_strangers") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, "scrape-secret\n").unwrap();
    let mut config = qtrail_collector::Config::for_test(dir.path().join("data"), common::tokens());
    config.metrics_token_file = Some(token_file);
    let server = TestServer::start_with_http_config(config).await;
    server.create_collector(LOCATION).await;
    let client = server.http();

    let refused = client.get("/metrics").await;
    assert_eq!(refused.status, 401);
    assert!(!refused.body.contains(LOCATION), "{}", refused.body);
    let wrong = client.send(hyper::Method::GET, "/metrics", &[("authorization", "Bearer guess")], "").await;
    assert_eq!(wrong.status, 401);
    let scraped = client.send(hyper::Method::GET, "/metrics", &[("authorization", "Bearer scrape-secret")], "").await;
    assert_eq!(scraped.status, 200);
    let has_disk = wait_until(Duration::from_secs(20), || async {
        let scraped =
            client.send(hyper::Method::GET, "/metrics", &[("authorization", "Bearer scrape-secret")], "").await;
        scraped.body.contains("qtrail_collector_disk_free_bytes")
    })
    .await;
    assert!(has_disk, "the token opens the metrics");
    assert_eq!(client.get("/healthz").await.status, 200);
    server.stop().await;
}
