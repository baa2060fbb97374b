//! The console's timeline over a real socket: counts per bucket by outcome over the filter's
//! time range, the bucket width chosen from the window, and refused input.

use qtrail_cadf::{Action, Crn, EventBuilder, EventTime, Initiator, Location};
use serde_json::{Value, json};

use crate::common::events;
use crate::console::{LOCATION, failed_cancel, signed_in, start};

/// 2023-11-14T22:13:20Z, the time of [`events`]' first event; the others follow a second apart.
const FIRST_MILLIS: i64 = 1_700_000_000_000;

/// Returns an accepted (pending) job creation at `millis`.
fn pending_job(millis: i64) -> qtrail_cadf::AuditEvent {
    let location: Location = LOCATION.parse().unwrap();
    let source = Crn::instance(&location, "acc-1", "inst-1").unwrap();
    let initiator = Initiator {
        id: "IBMid-9".into(),
        name: "bob@example.com".into(),
        type_uri: qtrail_cadf::event::INITIATOR_USER.into(),
        credential_type: "apikey".into(),
        host_address: "192.0.2.9".into(),
        host_agent: "qtrail-tests".into(),
    };
    EventBuilder::new(Action::JobCreate, source, initiator)
        .target("job-9", "job-9")
        .status(202)
        .event_time(EventTime::from_unix_millis(millis).unwrap())
        .build()
        .unwrap()
}

/// Returns the buckets of a timeline answer that hold events, as `(index, success, failure,
/// pending)`.
fn filled(timeline: &Value) -> Vec<(usize, u64, u64, u64)> {
    let count = |bucket: &Value, outcome: &str| bucket[outcome].as_u64().unwrap();
    timeline["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(index, bucket)| (index, count(bucket, "success"), count(bucket, "failure"), count(bucket, "pending")))
        .filter(|&(_, success, failure, pending)| success + failure + pending > 0)
        .collect()
}

#[tokio::test]
async fn the_timeline_counts_the_filtered_events_per_minute_by_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let mut published = events(LOCATION, 0, 25);
    published.push(failed_cancel("job-7", "corr-7", FIRST_MILLIS + 100_000));
    published.push(failed_cancel("job-8", "corr-8", FIRST_MILLIS + 101_000));
    published.push(pending_job(FIRST_MILLIS + 101_500));
    assert_eq!(server.publish(LOCATION, &published, 1).await.accepted, 28);
    let client = signed_in(&server).await;
    let base = format!("/api/locations/{LOCATION}/timeline");
    let hour = "start_time=2023-11-14T22:00:00Z&end_time=2023-11-14T23:00:00Z";

    let answer = client.get(&format!("{base}?{hour}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let timeline = answer.json();
    assert_eq!(timeline["start"], "2023-11-14T22:00:00Z");
    assert_eq!(timeline["end"], "2023-11-14T23:00:00Z");
    assert_eq!(timeline["bucket_seconds"], 60);
    assert_eq!(timeline["buckets"].as_array().unwrap().len(), 60);
    assert_eq!(timeline["buckets"][13]["start"], "2023-11-14T22:13:00Z");
    assert_eq!((&timeline["counted"], &timeline["complete"]), (&json!(28), &json!(true)));
    assert_eq!(filled(&timeline), [(13, 25, 0, 0), (15, 0, 2, 1)]);

    // The rest of the filter applies as in the list.
    let failures = client.get(&format!("{base}?{hour}&outcome=failure")).await.json();
    assert_eq!(filled(&failures), [(15, 0, 2, 0)]);
    let cancels = client.get(&format!("{base}?{hour}&action=quantum-computing.job.cancel")).await.json();
    assert_eq!(filled(&cancels), [(13, 6, 0, 0), (15, 0, 2, 0)], "every fourth of the 25 is a cancel");
    // A window that starts inside a minute counts only from its start.
    let late = client.get(&format!("{base}?start_time=2023-11-14T22:13:40Z&end_time=2023-11-14T22:15:01Z")).await;
    let late = late.json();
    assert_eq!((late["bucket_seconds"].as_u64(), late["start"].as_str()), (Some(60), Some("2023-11-14T22:13:40Z")));
    assert_eq!(late["buckets"][0]["start"], "2023-11-14T22:13:00Z", "buckets are whole minutes");
    assert_eq!(filled(&late), [(0, 5, 0, 0), (2, 0, 1, 0)], "22:13:40 to 22:13:44, and 22:15:00 only");
    // Longer windows get wider buckets.
    let day = client.get(&format!("{base}?start_time=2023-11-14T00:00:00Z&end_time=2023-11-15T00:00:00Z")).await;
    let day = day.json();
    assert_eq!((day["bucket_seconds"].as_u64(), day["buckets"].as_array().unwrap().len()), (Some(600), 144));
    assert_eq!(filled(&day), [(133, 25, 2, 1)], "22:10 to 22:20");
    // Without times, the last hour: these events are from 2023.
    let recent = client.get(&base).await.json();
    assert_eq!((recent["counted"].as_u64(), recent["bucket_seconds"].as_u64()), (Some(0), Some(60)));
    assert!(filled(&recent).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn the_timeline_refuses_bad_windows_and_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let base = format!("/api/locations/{LOCATION}/timeline");
    assert_eq!(server.http().get(&base).await.status, 401, "signed out");
    let client = signed_in(&server).await;
    let refused = [
        ("?start_time=2023-11-14T23:00:00Z&end_time=2023-11-14T22:00:00Z", "inverted time range"),
        ("?start_time=2023-11-14T22:00:00Z&end_time=2023-11-14T22:00:00Z", "empty time window"),
        ("?start_time=2000-01-01T00:00:00Z&end_time=2023-11-14T22:00:00Z", "time window too long for a timeline"),
        ("?start_time=yesterday", "invalid start_time `yesterday`"),
        ("?page_size=10", "unknown parameter `page_size`"),
        ("?outcome=maybe", "invalid outcome `maybe`"),
    ];
    for (query, message) in refused {
        let answer = client.get(&format!("{base}{query}")).await;
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        assert!(answer.error().starts_with(message), "{query}: {}", answer.error());
    }
    let elsewhere = client.get("/api/locations/eu-de/timeline").await;
    assert_eq!(elsewhere.status, 404, "{}", elsewhere.body);
    server.stop().await;
}
