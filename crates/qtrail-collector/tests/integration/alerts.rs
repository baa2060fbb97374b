//! AlertService against a real server on port 0: rules CRUD with roles and caps, firings on the
//! watch stream, signed webhooks to a real HTTP receiver, durability across a restart.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{ADMIN, AUDITOR, TestServer, authed, events, wait_until};
use http_body_util::BodyExt as _;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::alert_service_client::AlertServiceClient;
use tonic::Code;
use tonic::transport::Channel;

fn secret() -> String {
    format!("whsec_{}", STANDARD.encode([42u8; 32]))
}

fn each_rule(name: &str, webhook: Option<&str>) -> proto::AlertRule {
    proto::AlertRule {
        location: "us-east".into(),
        name: name.into(),
        filter: Some(proto::EventFilter { action: "quantum-computing.job".into(), ..Default::default() }),
        trigger: Some(proto::AlertTrigger { kind: Some(proto::alert_trigger::Kind::Each(proto::EachTrigger {})) }),
        webhook: webhook.map(|url| proto::Webhook { url: url.into(), secret: secret(), has_secret: false }),
        ..Default::default()
    }
}

async fn client(server: &TestServer) -> AlertServiceClient<Channel> {
    AlertServiceClient::new(server.channel().await)
}

async fn create(
    alerts: &mut AlertServiceClient<Channel>,
    rule: proto::AlertRule,
) -> Result<proto::AlertRule, tonic::Status> {
    let request = authed(proto::CreateAlertRuleRequest { rule: Some(rule) }, ADMIN);
    alerts.create_alert_rule(request).await.map(tonic::Response::into_inner)
}

#[tokio::test]
async fn admins_write_rules_auditors_read_them_and_secrets_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let mut alerts = client(&server).await;

    let created = create(&mut alerts, each_rule("job-calls", Some("http://127.0.0.1:9/hook"))).await.unwrap();
    let webhook = created.webhook.clone().unwrap();
    assert!(webhook.has_secret && webhook.secret.is_empty(), "{webhook:?}");
    assert!(created.create_time.is_some());
    let again = create(&mut alerts, each_rule("job-calls", None)).await.unwrap_err();
    assert_eq!(
        (again.code(), again.message()),
        (Code::AlreadyExists, "alert rule `job-calls` already exists in location `us-east`")
    );

    // Auditors read, never write.
    let request = authed(proto::CreateAlertRuleRequest { rule: Some(each_rule("other", None)) }, AUDITOR);
    assert_eq!(alerts.create_alert_rule(request).await.unwrap_err().code(), Code::PermissionDenied);
    let get = proto::GetAlertRuleRequest { location: "us-east".into(), name: "job-calls".into() };
    let got = alerts.get_alert_rule(authed(get.clone(), AUDITOR)).await.unwrap().into_inner();
    assert_eq!(got, created);
    let listed = alerts
        .list_alert_rules(authed(proto::ListAlertRulesRequest { location: "us-east".into() }, AUDITOR))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.rules, std::slice::from_ref(&created));

    // An update without a secret keeps the stored one.
    let mut changed = each_rule("job-calls", Some("https://hooks.example/alerts"));
    changed.webhook.as_mut().unwrap().secret.clear();
    changed.cooldown = Some(prost_types::Duration { seconds: 60, nanos: 0 });
    let request = authed(proto::UpdateAlertRuleRequest { rule: Some(changed) }, ADMIN);
    let updated = alerts.update_alert_rule(request).await.unwrap().into_inner();
    assert!(updated.webhook.as_ref().unwrap().has_secret);
    assert_eq!(updated.webhook.unwrap().url, "https://hooks.example/alerts");
    assert_eq!(updated.create_time, created.create_time);

    // Invalid rules are refused by field, never quoting the secret.
    let mut bad = each_rule("bad", Some("ftp://hooks.example/"));
    let status = create(&mut alerts, bad.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("invalid rule.webhook.url"), "{}", status.message());
    bad.webhook = Some(proto::Webhook { url: "http://h/".into(), secret: "whsec_c2hvcnQ=".into(), has_secret: false });
    let status = create(&mut alerts, bad).await.unwrap_err();
    assert!(status.message().starts_with("invalid rule.webhook.secret") && !status.message().contains("c2hvcnQ"));
    let status =
        create(&mut alerts, proto::AlertRule { location: "eu-de".into(), ..each_rule("x", None) }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let delete = proto::DeleteAlertRuleRequest { location: "us-east".into(), name: "job-calls".into() };
    assert_eq!(
        alerts.delete_alert_rule(authed(delete.clone(), AUDITOR)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    alerts.delete_alert_rule(authed(delete.clone(), ADMIN)).await.unwrap();
    assert_eq!(alerts.get_alert_rule(authed(get, AUDITOR)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(alerts.delete_alert_rule(authed(delete, ADMIN)).await.unwrap_err().code(), Code::NotFound);
    server.stop().await;
}

/// What the test receiver got: headers and body of each POST.
type Received = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// Starts an HTTP receiver on port 0 that answers 204 and records each delivery.
async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let seen = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let seen = seen.clone();
                async move {
                    let header = |name: &str| {
                        request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
                    };
                    let (id, timestamp, signature) =
                        (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    seen.lock().unwrap().push((id, timestamp, signature, String::from_utf8(body.to_vec()).unwrap()));
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder().status(204).body(String::new()).unwrap(),
                    )
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (url, received)
}

#[tokio::test]
async fn matching_events_fire_on_the_watch_stream_and_as_signed_cloudevents_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let (url, received) = receiver().await;
    let mut alerts = client(&server).await;
    create(&mut alerts, each_rule("job-calls", Some(&url))).await.unwrap();
    let request = authed(proto::WatchAlertsRequest { location: "us-east".into(), ..Default::default() }, AUDITOR);
    let mut watch = alerts.watch_alerts(request).await.unwrap().into_inner();

    // Events 0..8 cycle job create, job read, program create, job cancel: 6 are job calls.
    server.publish("us-east", &events("us-east", 0, 8), 1).await;
    let mut fired = Vec::new();
    while fired.len() < 6 {
        let firing = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.unwrap().unwrap().unwrap();
        fired.push(firing);
    }
    assert!(fired.iter().all(|f| f.rule == "job-calls" && f.count == 1 && f.kind == proto::FiringKind::Fired as i32));
    assert!(fired.windows(2).all(|pair| pair[1].number == pair[0].number + 1));
    assert!(wait_until(Duration::from_secs(10), || async { received.lock().unwrap().len() >= 6 }).await);
    {
        let received = received.lock().unwrap();
        let key = [42u8; 32];
        for (id, timestamp, signature, body) in received.iter() {
            let expected = qtrail_collector::alerts::webhook::signature(&key, id, timestamp.parse().unwrap(), body);
            assert_eq!(signature, &expected);
            let body: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(body["specversion"], "1.0");
            assert_eq!(body["id"], id.as_str());
            assert_eq!(body["type"], "com.qtrail.alert.fired");
            assert_eq!(body["source"], "crn:v1:bluemix:public:quantum-computing:us-east:::");
            assert_eq!(body["data"]["rule"], "job-calls");
            assert_eq!(body["data"]["count"], 1);
            assert!(body["data"]["events"][0]["action"].as_str().unwrap().starts_with("quantum-computing.job."));
        }
        let ids: std::collections::HashSet<_> = received.iter().map(|r| r.0.clone()).collect();
        assert_eq!(ids.len(), 6, "one webhook-id per firing");
    }
    drop(watch);
    server.stop().await;

    // After a restart the rule resumes from its cursor: no firing twice, new events fire, and a
    // watch resumes from a cursor.
    let server = TestServer::start(dir.path()).await;
    let mut alerts = client(&server).await;
    let got = alerts
        .get_alert_rule(authed(
            proto::GetAlertRuleRequest { location: "us-east".into(), name: "job-calls".into() },
            AUDITOR,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.cursor, 8);
    let after = fired[5].number;
    server.publish("us-east", &events("us-east", 8, 4), 9).await;
    let request = authed(
        proto::WatchAlertsRequest { location: "us-east".into(), after: fired[2].number, from_start: false },
        AUDITOR,
    );
    let mut watch = alerts.watch_alerts(request).await.unwrap().into_inner();
    let mut numbers = Vec::new();
    while numbers.len() < 6 {
        let firing = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.unwrap().unwrap().unwrap();
        numbers.push(firing.number);
    }
    assert_eq!(numbers, ((fired[2].number + 1)..=(after + 3)).collect::<Vec<_>>());
    assert!(wait_until(Duration::from_secs(10), || async { received.lock().unwrap().len() >= 9 }).await);
    server.stop().await;
}
