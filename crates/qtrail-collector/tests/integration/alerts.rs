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
pub type Received = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// Starts an HTTP receiver on port 0 that answers 204 and records each delivery.
pub async fn receiver() -> (String, Received) {
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
    let watch = proto::WatchAlertsRequest { location: "us-east".into(), delivery_updates: true, ..Default::default() };
    let mut watch = alerts.watch_alerts(authed(watch, AUDITOR)).await.unwrap().into_inner();

    // Events 0..8 cycle job create, job read, program create, job cancel: 6 are job calls.
    server.publish("us-east", &events("us-east", 0, 8), 1).await;
    let (mut fired, mut delivered) = (Vec::new(), std::collections::HashSet::new());
    while fired.len() < 6 || delivered.len() < 6 {
        let firing = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.unwrap().unwrap().unwrap();
        if !firing.delivery_update {
            fired.push(firing);
        } else if firing.delivery == proto::DeliveryState::Delivered as i32 {
            delivered.insert(firing.number);
        }
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
            assert_eq!(body["source"], "crn:v1:bluemix:public:quantum-computing:us-east::::");
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
        proto::WatchAlertsRequest { location: "us-east".into(), after: fired[2].number, ..Default::default() },
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

/// Each rule change is a line of the access log with the token's name; no line shows the
/// secret.
#[tokio::test]
async fn rule_changes_are_in_the_access_log_with_the_token_name_and_no_secret() {
    use crate::binary::{command, connect, spawn, terminate};
    let dir = tempfile::tempdir().unwrap();
    let tokens = format!("[[token]]\ntoken = \"{ADMIN}\"\nrole = \"admin\"\nname = \"ops\"\n");
    std::fs::write(dir.path().join("tokens.toml"), tokens).unwrap();
    let log = std::fs::File::create(dir.path().join("log.jsonl")).unwrap();
    let mut command = command(dir.path());
    command.arg("--log-json").env("RUST_LOG", "debug");
    let mut process = spawn(command.stdout(std::process::Stdio::null()).stderr(log));
    let channel = connect(&mut process, dir.path()).await;
    let mut admin = proto::collector_admin_client::CollectorAdminClient::new(channel.clone());
    admin.create_collector(authed(proto::CreateCollectorRequest { location: "us-east".into() }, ADMIN)).await.unwrap();
    let mut alerts = AlertServiceClient::new(channel);
    create(&mut alerts, each_rule("audited", Some("http://127.0.0.1:9/hook"))).await.unwrap();
    let update = proto::UpdateAlertRuleRequest { rule: Some(each_rule("audited", Some("http://127.0.0.1:9/other"))) };
    alerts.update_alert_rule(authed(update, ADMIN)).await.unwrap();
    let delete = proto::DeleteAlertRuleRequest { location: "us-east".into(), name: "audited".into() };
    alerts.delete_alert_rule(authed(delete, ADMIN)).await.unwrap();
    terminate(&mut process).await;

    let text = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    let changes: Vec<(String, String, String)> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "qtrail::access" && line["fields"]["message"] == "alert rule changed")
        .map(|line| {
            let field = |name: &str| line["fields"][name].as_str().unwrap().to_owned();
            (field("token"), field("call"), field("rule"))
        })
        .collect();
    let expected = ["CreateAlertRule", "UpdateAlertRule", "DeleteAlertRule"]
        .map(|call| ("ops".to_owned(), call.to_owned(), "audited".to_owned()));
    assert_eq!(changes, expected, "{text}");
    let encoded = secret().trim_start_matches("whsec_").to_owned();
    assert!(!text.contains(&encoded) && !text.contains(ADMIN), "a secret reached the log");
}

/// A cool-down folds a storm into one notification with its count, sent by the clock once the
/// cool-down is over even if no further event arrives.
#[tokio::test]
async fn a_cooldown_folds_a_storm_into_one_notification_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path()).await;
    server.create_collector("us-east").await;
    let mut alerts = client(&server).await;
    let rule =
        proto::AlertRule { cooldown: Some(prost_types::Duration { seconds: 1, nanos: 0 }), ..each_rule("calm", None) };
    create(&mut alerts, rule).await.unwrap();
    let request = authed(proto::WatchAlertsRequest { location: "us-east".into(), ..Default::default() }, AUDITOR);
    let mut watch = alerts.watch_alerts(request).await.unwrap().into_inner();
    // Six job calls in one batch: the first notifies, the other five wait for the cool-down.
    server.publish("us-east", &events("us-east", 0, 8), 1).await;
    let mut counts = Vec::new();
    while counts.len() < 2 {
        let firing = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.unwrap().unwrap().unwrap();
        counts.push((firing.count, firing.events.len()));
    }
    assert_eq!(counts, [(1, 1), (5, 5)]);
    server.stop().await;
}

/// A delivery that cannot be made is retried until the retry horizon, then `failed`, which a
/// watch with delivery updates sees.
#[tokio::test]
async fn a_delivery_past_its_retry_horizon_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = qtrail_collector::Config::for_test(dir.path(), common::tokens());
    config.alert_retry_cap = Duration::from_secs(1);
    config.alert_retry_horizon = Duration::from_secs(2);
    let server = TestServer::start_with(config).await;
    server.create_collector("us-east").await;
    // A port nothing listens on: every attempt is refused at once.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let mut alerts = client(&server).await;
    create(&mut alerts, each_rule("doomed", Some(&url))).await.unwrap();
    let watch = proto::WatchAlertsRequest { location: "us-east".into(), delivery_updates: true, ..Default::default() };
    let mut watch = alerts.watch_alerts(authed(watch, AUDITOR)).await.unwrap().into_inner();
    server.publish("us-east", &events("us-east", 0, 1), 1).await;
    let failed = loop {
        let firing = tokio::time::timeout(Duration::from_secs(20), watch.message()).await.unwrap().unwrap().unwrap();
        if firing.delivery == proto::DeliveryState::Failed as i32 {
            break firing;
        }
    };
    assert!(failed.delivery_update && failed.rule == "doomed");
    server.stop().await;
}

/// Webhooks reach https endpoints, checked against the Mozilla roots and `--alert-tls-ca`.
#[tokio::test]
async fn https_webhooks_are_delivered_to_an_endpoint_of_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = qtrail_server::tls::testing::TestPki::create(&dir.path().join("pki"), "webhooks");
    let tls = tokio_rustls::TlsAcceptor::from(pki.server(false).load().unwrap().http());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://localhost:{}/hook", listener.local_addr().unwrap().port());
    let received: Received = Arc::default();
    let seen = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tls, seen) = (tls.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(stream) = tls.accept(stream).await else { return };
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let id = request.headers()["webhook-id"].to_str().unwrap().to_owned();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        seen.lock().unwrap().push((
                            id,
                            String::new(),
                            String::new(),
                            String::from_utf8_lossy(&body).into(),
                        ));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new()))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    let mut config = qtrail_collector::Config::for_test(dir.path().join("data"), common::tokens());
    config.alert_tls_ca = Some(pki.ca.clone());
    let server = TestServer::start_with(config).await;
    server.create_collector("us-east").await;
    let mut alerts = client(&server).await;
    create(&mut alerts, each_rule("over-tls", Some(&url))).await.unwrap();
    server.publish("us-east", &events("us-east", 0, 1), 1).await;
    assert!(wait_until(Duration::from_secs(20), || async { !received.lock().unwrap().is_empty() }).await);
    let body: serde_json::Value = serde_json::from_str(&received.lock().unwrap()[0].3).unwrap();
    assert_eq!(body["data"]["rule"], "over-tls");
    server.stop().await;
}
