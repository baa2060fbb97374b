//! The console's Alerts view over a real socket: the rules as `ListAlertRules` has them, the
//! newest firings with each webhook delivery's state (delivered to a real receiver on port 0,
//! pending for a refused one, none without webhook), and the firings marked on the timeline.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::alert_service_client::AlertServiceClient;
use serde_json::Value;

use crate::alerts::receiver;
use crate::common::{ADMIN, authed, events, wait_until};
use crate::console::{LOCATION, signed_in, start};

/// Returns a rule firing on each job call, posting to `webhook` when given.
fn job_rule(name: &str, webhook: Option<&str>) -> proto::AlertRule {
    proto::AlertRule {
        location: LOCATION.into(),
        name: name.into(),
        filter: Some(proto::EventFilter { action: "quantum-computing.job".into(), ..Default::default() }),
        trigger: Some(proto::AlertTrigger { kind: Some(proto::alert_trigger::Kind::Each(proto::EachTrigger {})) }),
        webhook: webhook.map(|url| proto::Webhook {
            url: url.into(),
            secret: format!("whsec_{}", STANDARD.encode([7u8; 32])),
            has_secret: false,
        }),
        ..Default::default()
    }
}

/// Returns the `(rule, delivery)` of each listed firing.
fn deliveries(answer: &Value) -> Vec<(String, String)> {
    let text = |value: &Value| value.as_str().unwrap().to_owned();
    answer["firings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|firing| (text(&firing["rule"]), text(&firing["delivery"])))
        .collect()
}

#[tokio::test]
async fn the_alerts_view_lists_rules_and_firings_with_their_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let client = signed_in(&server).await;
    let base = format!("/api/locations/{LOCATION}/alerts");
    let empty = client.get(&base).await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    assert_eq!(empty.json(), serde_json::json!({ "rules": [], "firings": [] }));

    let mut alerts = AlertServiceClient::new(server.channel().await);
    // A query the view must not show: webhook URLs often carry a credential there.
    let hook = format!("{}?token=receiver-secret", receiver().await.0);
    // Nothing listens on port 1: deliveries there stay pending, retried.
    for rule in [
        job_rule("delivered", Some(&hook)),
        job_rule("refused", Some("http://127.0.0.1:1/hook")),
        job_rule("stream-only", None),
    ] {
        alerts.create_alert_rule(authed(proto::CreateAlertRuleRequest { rule: Some(rule) }, ADMIN)).await.unwrap();
    }
    // Of these four, three are job calls (create, read, cancel).
    assert_eq!(server.publish(LOCATION, &events(LOCATION, 0, 4), 1).await.accepted, 4);

    let done = wait_until(Duration::from_secs(30), || async {
        let answer = client.get(&base).await.json();
        let listed = deliveries(&answer);
        let delivered = listed.iter().filter(|(rule, state)| rule == "delivered" && state == "delivered").count();
        listed.len() == 9 && delivered == 3
    })
    .await;
    assert!(done, "nine firings, three delivered: {}", client.get(&base).await.body);
    let answer = client.get(&base).await.json();
    let listed = deliveries(&answer);
    for (rule, delivery) in [("refused", "pending"), ("stream-only", "none")] {
        let states: Vec<_> = listed.iter().filter(|(name, _)| name == rule).map(|(_, state)| state.as_str()).collect();
        assert_eq!(states, [delivery; 3], "{rule}");
    }
    let numbers: Vec<u64> =
        answer["firings"].as_array().unwrap().iter().map(|f| f["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=9).rev().collect::<Vec<_>>(), "newest first");
    let newest = &answer["firings"][0];
    assert_eq!((newest["kind"].as_str(), newest["count"].as_u64()), (Some("fired"), Some(1)));
    assert_eq!(newest["seqs"], serde_json::json!([4]), "the cancel, the fourth event");

    let rules = &answer["rules"];
    let names: Vec<&str> = rules.as_array().unwrap().iter().map(|rule| rule["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["delivered", "refused", "stream-only"]);
    assert_eq!(rules[0]["filter"], "quantum-computing.job");
    assert_eq!(rules[0]["trigger"], "each event");
    let port = hook.split(':').nth(2).unwrap().split('/').next().unwrap();
    assert_eq!(rules[0]["webhook"], format!("http://127.0.0.1:{port}/…"), "no path or query: they may hold a secret");
    assert!(!answer.to_string().contains("receiver-secret") && !answer.to_string().contains("whsec_"));
    assert_eq!(rules[2]["webhook"], "");

    // The timeline of the last hour marks the firings (the events themselves are from 2023).
    let timeline = client.get(&format!("/api/locations/{LOCATION}/timeline")).await.json();
    assert_eq!(timeline["counted"], 0);
    let marked: Vec<u64> =
        timeline["firings"].as_array().unwrap().iter().map(|f| f["number"].as_u64().unwrap()).collect();
    assert_eq!(marked, (1..=9).rev().collect::<Vec<_>>());
    let past = client.get(&format!("/api/locations/{LOCATION}/timeline?end_time=2024-01-01T00:00:00Z")).await.json();
    assert_eq!(past["firings"], serde_json::json!([]), "no firing before 2024");

    // Another location's firings, numbered among these, are its own.
    server.create_collector("eu-de").await;
    let eu_rule = proto::AlertRule { location: "eu-de".into(), ..job_rule("eu-jobs", None) };
    alerts.create_alert_rule(authed(proto::CreateAlertRuleRequest { rule: Some(eu_rule) }, ADMIN)).await.unwrap();
    assert_eq!(server.publish("eu-de", &events("eu-de", 0, 4), 1).await.accepted, 4);
    let eu = "/api/locations/eu-de/alerts";
    let eu_done =
        wait_until(Duration::from_secs(30), || async { deliveries(&client.get(eu).await.json()).len() == 3 }).await;
    assert!(eu_done, "{}", client.get(eu).await.body);
    let eu_numbers: Vec<u64> = client.get(eu).await.json()["firings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["number"].as_u64().unwrap())
        .collect();
    assert_eq!(eu_numbers, [12, 11, 10]);
    assert_eq!(deliveries(&client.get(&base).await.json()).len(), 9, "us-east lists only its own");

    assert_eq!(server.http().get(&base).await.status, 401, "signed out");
    assert_eq!(client.get("/api/locations/ap-south/alerts").await.status, 404);
    let unknown = client.get(&format!("{base}?limit=5")).await;
    assert_eq!((unknown.status, unknown.error().starts_with("unknown parameter `limit`")), (400, true));
    server.stop().await;
}
