//! The collector's HTTP side over real sockets: the console's JSON API (sign-in and sessions,
//! status codes, escaping, the same answers as gRPC), the live stream, exports, the page's
//! security headers, and stopping together with gRPC. Metrics have their own module.

use crate::common;

use common::http::HttpClient;
use common::{ADMIN, AUDITOR, PUBLISHER, TestServer, authed, events};
use hyper::Method;
use qtrail_cadf::checkpoint::SigningKey;
use qtrail_cadf::{Action, AuditEvent, Crn, EventBuilder, EventTime, Initiator, Location};
use qtrail_proto::qtrail::audit::v1 as proto;

pub const LOCATION: &str = "us-east";

/// Starts a collector with an HTTP side and a collector for [`LOCATION`].
pub async fn start(dir: &tempfile::TempDir) -> TestServer {
    let server = TestServer::start_with_http(dir.path()).await;
    server.create_collector(LOCATION).await;
    server
}

/// Returns a client signed in as the auditor.
pub async fn signed_in(server: &TestServer) -> HttpClient {
    let mut client = server.http();
    let answer = client.sign_in(AUDITOR).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    client
}

/// Returns a failed cancel of job `job`, correlated by `correlation`.
pub fn failed_cancel(job: &str, correlation: &str, millis: i64) -> AuditEvent {
    let location: Location = LOCATION.parse().unwrap();
    let source = Crn::instance(&location, "acc-1", "inst-1").unwrap();
    let initiator = Initiator {
        id: "IBMid-9".into(),
        name: "mallory@example.com".into(),
        type_uri: qtrail_cadf::event::INITIATOR_USER.into(),
        credential_type: "apikey".into(),
        host_address: "192.0.2.9".into(),
        host_agent: "qtrail-tests".into(),
    };
    EventBuilder::new(Action::JobCancel, source, initiator)
        .target(job, job)
        .failure(409, "job already completed")
        .correlation_id(correlation)
        .event_time(EventTime::from_unix_millis(millis).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn sign_in_takes_only_auditor_tokens_and_never_echoes_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let mut client = server.http();

    let not_json = client.send(Method::POST, "/api/session", &[("content-type", "text/plain")], AUDITOR).await;
    assert_eq!(not_json.status, 400);
    assert_eq!(not_json.error(), "invalid sign-in: content-type must be application/json");

    let json = [("content-type", "application/json")];
    let garbage = client.send(Method::POST, "/api/session", &json, r#"{"token": 42, "x": "auditor-secret"}"#).await;
    assert_eq!(garbage.status, 400);
    assert!(garbage.error().starts_with("invalid sign-in body"), "{}", garbage.body);
    assert!(!garbage.body.contains(AUDITOR), "the body is never quoted back");

    let empty = client.sign_in("  ").await;
    assert_eq!((empty.status, empty.error()), (400, "missing token".to_owned()));

    let unknown = client.sign_in("not-a-token").await;
    assert_eq!((unknown.status, unknown.error()), (401, "unknown token".to_owned()));
    assert!(!unknown.body.contains("not-a-token"));

    for (token, name) in [(ADMIN, "ops"), (PUBLISHER, "runtime-us-east")] {
        let wrong_role = client.sign_in(token).await;
        assert_eq!(wrong_role.status, 403, "{}", wrong_role.body);
        assert!(wrong_role.error().contains(&format!("token `{name}` has role")), "{}", wrong_role.body);
        assert!(wrong_role.error().contains("needs role `auditor`"), "{}", wrong_role.body);
        assert!(!wrong_role.body.contains(token));
        assert!(wrong_role.header("set-cookie").is_empty(), "no session for a wrong role");
    }

    let answer = client.sign_in(AUDITOR).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let who = answer.json();
    assert_eq!((who["name"].as_str(), who["role"].as_str()), (Some("alice"), Some("auditor")));
    let cookie = answer.header("set-cookie");
    for attribute in ["qtrail_session=", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains(AUDITOR) && !answer.body.contains(AUDITOR), "the token is not the session id");
    server.stop().await;
}

#[tokio::test]
async fn the_api_answers_only_live_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let mut client = server.http();

    let signed_out = client.get("/api/collectors").await;
    assert_eq!(signed_out.status, 401);
    assert_eq!(signed_out.error(), "not signed in: sign in with an auditor token");
    assert_eq!(signed_out.header("content-type"), "application/json");
    client.cookie = Some("qtrail_session=made-up".into());
    assert_eq!(client.get("/api/session").await.status, 401);
    // A bearer token is not a session: the console API takes cookies only.
    let authorization = format!("Bearer {AUDITOR}");
    let bearer = client.send(Method::GET, "/api/collectors", &[("authorization", &authorization)], "").await;
    assert_eq!(bearer.status, 401);

    let mut client = signed_in(&server).await;
    let who = client.get("/api/session").await;
    assert_eq!(who.status, 200);
    assert!(who.json()["expires_in_secs"].as_u64().unwrap() > 0);
    let collectors = client.get("/api/collectors").await.json();
    assert_eq!(collectors["collectors"][0]["location"], LOCATION);

    let sign_out = client.send(Method::DELETE, "/api/session", &[], "").await;
    assert_eq!(sign_out.status, 204);
    assert!(sign_out.header("set-cookie").contains("Max-Age=0"), "the browser forgets the cookie");
    // The old cookie no longer opens anything.
    assert_eq!(client.get("/api/collectors").await.status, 401);
    assert_eq!(client.get(&format!("/api/locations/{LOCATION}/events")).await.status, 401);
    client.sign_in(AUDITOR).await;
    assert_eq!(client.get("/api/collectors").await.status, 200, "a new sign-in works");
    server.stop().await;
}

#[tokio::test]
async fn lists_filter_and_page_like_query_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let mut published = events(LOCATION, 0, 25);
    published.push(failed_cancel("job-7", "corr-7", 1_700_000_100_000));
    published.push(failed_cancel("job-8", "corr-8", 1_700_000_101_000));
    let ack = server.publish(LOCATION, &published, 1).await;
    assert_eq!(ack.accepted, 27);
    let client = signed_in(&server).await;
    let base = format!("/api/locations/{LOCATION}/events");

    // Newest first, in pages with tokens, covering everything exactly once.
    let first = client.get(&format!("{base}?page_size=10")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    assert_eq!(first["head_seq"], 27);
    assert_eq!(seqs(&first), (18..=27).rev().collect::<Vec<_>>());
    let mut all = seqs(&first);
    let mut token = first["next_page_token"].as_str().unwrap().to_owned();
    while !token.is_empty() {
        let page = client.get(&format!("{base}?page_size=10&page_token={token}")).await.json();
        all.extend(seqs(&page));
        token = page["next_page_token"].as_str().unwrap().to_owned();
    }
    assert_eq!(all, (1..=27).rev().collect::<Vec<_>>());

    // The row of the newest event says what the list shows.
    let newest = &first["events"][0];
    assert_eq!(newest["action"], "quantum-computing.job.cancel");
    assert_eq!(newest["outcome"], "failure");
    assert_eq!(newest["severity"], "warning");
    assert_eq!(newest["initiator_name"], "mallory@example.com");
    assert_eq!(newest["target_name"], "job-8");
    assert_eq!(newest["reason_code"], 409);
    assert_eq!(newest["time"], "2023-11-14T22:15:01.000Z");
    assert!(newest["message"].as_str().unwrap().contains("-failure"), "{newest}");

    every_filter_answers_as_grpc(&server, &client, &base).await;
    let cancels = client.get(&format!("{base}?action=quantum-computing.job.cancel&outcome=failure")).await.json();
    assert_eq!(seqs(&cancels), vec![27, 26]);
    let oldest = client.get(&format!("{base}?order=oldest&page_size=2")).await.json();
    assert_eq!(seqs(&oldest), vec![1, 2]);
    server.stop().await;
}

/// Returns the location sequence numbers of a page of the console's event list.
fn seqs(page: &serde_json::Value) -> Vec<u64> {
    page["events"].as_array().unwrap().iter().map(|event| event["location_seq"].as_u64().unwrap()).collect()
}

/// Every filter of QueryEvents, with the same answers as gRPC.
async fn every_filter_answers_as_grpc(server: &TestServer, client: &HttpClient, base: &str) {
    let cases = [
        (
            "action=quantum-computing.job.cancel&outcome=failure",
            proto::EventFilter {
                action: "quantum-computing.job.cancel".into(),
                outcome: proto::Outcome::Failure as i32,
                ..Default::default()
            },
        ),
        (
            "action=quantum-computing.job",
            proto::EventFilter { action: "quantum-computing.job".into(), ..Default::default() },
        ),
        ("severity=warning", proto::EventFilter { severity: proto::Severity::Warning as i32, ..Default::default() }),
        ("initiator_id=IBMid-1", proto::EventFilter { initiator_id: "IBMid-1".into(), ..Default::default() }),
        ("correlation_id=corr-7", proto::EventFilter { correlation_id: "corr-7".into(), ..Default::default() }),
        (
            "target_id=crn:v1:bluemix:public:quantum-computing:us-east:a/acc-1:inst-1:job:job-7",
            proto::EventFilter {
                target_id: "crn:v1:bluemix:public:quantum-computing:us-east:a/acc-1:inst-1:job:job-7".into(),
                ..Default::default()
            },
        ),
        (
            "start_time=2023-11-14T22:13:25Z&end_time=2023-11-14T22:13:30.000Z&outcome=&severity=",
            proto::EventFilter {
                start_time: Some(prost_types::Timestamp { seconds: 1_700_000_005, nanos: 0 }),
                end_time: Some(prost_types::Timestamp { seconds: 1_700_000_010, nanos: 0 }),
                ..Default::default()
            },
        ),
    ];
    let mut grpc = server.query().await;
    for (params, filter) in cases {
        let page = client.get(&format!("{base}?{params}&page_size=100")).await;
        assert_eq!(page.status, 200, "{params}: {}", page.body);
        let request = proto::QueryEventsRequest {
            location: LOCATION.into(),
            filter: Some(filter),
            page_size: 100,
            ..Default::default()
        };
        let expected: Vec<u64> = grpc
            .query_events(authed(request, AUDITOR))
            .await
            .unwrap()
            .into_inner()
            .events
            .iter()
            .map(|event| event.location_seq)
            .collect();
        assert!(!expected.is_empty(), "{params} selects something");
        assert_eq!(seqs(&page.json()), expected, "{params}");
    }
}

#[tokio::test]
async fn errors_are_json_name_the_parameter_and_contain_no_markup() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    server.publish(LOCATION, &events(LOCATION, 0, 3), 1).await;
    let client = signed_in(&server).await;
    let base = format!("/api/locations/{LOCATION}");

    let cases: [(&str, u16, &str); 16] = [
        (
            "/api/locations/%3Cscript%3Ealert(1)%3C%2Fscript%3E/events",
            400,
            "invalid location `<script>alert(1)</script>`",
        ),
        ("/api/locations/eu-de/events", 404, "no collector for location `eu-de`"),
        (&format!("{base}/events?colour=red"), 400, "unknown parameter `colour`"),
        (&format!("{base}/events?outcome=maybe"), 400, "invalid outcome `maybe`: expected success, failure or pending"),
        (&format!("{base}/events?severity=%3Cb%3E"), 400, "invalid severity `<b>`"),
        (&format!("{base}/events?action=quantum-comp"), 400, "unknown filter.action `quantum-comp`"),
        (&format!("{base}/events?start_time=yesterday"), 400, "invalid start_time `yesterday`"),
        (
            &format!("{base}/events?start_time=2024-01-02T00:00:00Z&end_time=2024-01-01T00:00:00Z"),
            400,
            "inverted time range",
        ),
        (&format!("{base}/events?page_size=5000"), 400, "page_size 5000 is over the limit of 1000"),
        (&format!("{base}/events?page_size=-1"), 400, "invalid page_size `-1`"),
        (&format!("{base}/events?page_token=%3Cimg%3E"), 400, "invalid page_token"),
        (&format!("{base}/events?order=random"), 400, "invalid order `random`"),
        (&format!("{base}/events?action=a&action=b"), 400, "parameter `action` given twice"),
        (&format!("{base}/events/abc"), 400, "invalid location_seq `abc`"),
        (&format!("{base}/events/99"), 404, "no event at location_seq 99 of location `us-east`"),
        (&format!("{base}/verify?to_seq=99"), 400, "range.to_seq"),
    ];
    for (path, status, message) in cases {
        let answer = client.get(path).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert_eq!(answer.header("content-type"), "application/json", "{path}");
        assert_eq!(answer.header("x-content-type-options"), "nosniff", "{path}");
        let error = answer.error();
        assert!(error.contains(message), "{path}: {error}");
        assert!(!error.ends_with('.'), "{error}");
        assert_eq!(error.chars().next().map(char::is_lowercase), Some(true), "{error}");
        // What the caller sent comes back as text, with markup escaped in the JSON itself.
        assert!(!answer.body.contains('<') && !answer.body.contains('>'), "{path}: {}", answer.body);
    }
    let escaped = client.get("/api/locations/%3Cscript%3E/events").await;
    assert!(escaped.body.contains(r"\u003cscript\u003e"), "{}", escaped.body);

    let no_route = client.get("/api/nothing/here").await;
    assert_eq!((no_route.status, no_route.error()), (404, "no such api route".to_owned()));
    let missing_format = client.get(&format!("{base}/export")).await;
    assert_eq!(
        (missing_format.status, missing_format.error()),
        (400, "missing format: at-json or cadf-json".to_owned())
    );
    server.stop().await;
}

#[tokio::test]
async fn event_detail_carries_both_forms_and_the_chain_links() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let published = vec![events(LOCATION, 0, 1).remove(0), failed_cancel("job-1", "corr-1", 1_700_000_100_000)];
    server.publish(LOCATION, &published, 1).await;
    let stored = server.all_events(LOCATION).await;
    let client = signed_in(&server).await;

    let first = client.get(&format!("/api/locations/{LOCATION}/events/1")).await.json();
    assert_eq!(first["prev_chain_hash"], "0".repeat(64));
    assert_eq!(first["chain_hash"], hex(&stored[0].chain_hash));

    let detail = client.get(&format!("/api/locations/{LOCATION}/events/2")).await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    let detail = detail.json();
    assert_eq!(detail["location_seq"], 2);
    assert_eq!(detail["location"], LOCATION);
    assert_eq!(detail["chain_hash"], hex(&stored[1].chain_hash));
    assert_eq!(detail["prev_chain_hash"], hex(&stored[0].chain_hash));
    assert_eq!(detail["publisher"]["id"], "pub-1");
    assert_eq!(detail["publisher"]["seq"], 2);
    assert_eq!(detail["publisher"]["credential"], "runtime-us-east", "the token that delivered it");
    assert_eq!(detail["correlation_id"], "corr-1");
    let event = AuditEvent::try_from(stored[1].event.clone().unwrap()).unwrap();
    assert_eq!(detail["at_json"], qtrail_cadf::at_json::to_string_pretty(&event));
    assert_eq!(detail["cadf_json"], qtrail_cadf::cadf_json::to_string_pretty(&event));
    let at: serde_json::Value = serde_json::from_str(detail["at_json"].as_str().unwrap()).unwrap();
    assert_eq!(at["action"], "quantum-computing.job.cancel");
    assert_eq!(at["reason"]["reasonCode"], 409);
    let cadf: serde_json::Value = serde_json::from_str(detail["cadf_json"].as_str().unwrap()).unwrap();
    assert_eq!(cadf["typeURI"], "http://schemas.dmtf.org/cloud/audit/1.0/event");
    server.stop().await;
}

#[tokio::test]
async fn verify_reports_ok_then_the_first_fault() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir).await;
    server.publish(LOCATION, &events(LOCATION, 0, 6), 1).await;
    let head = server.collector(LOCATION).await.head_chain_hash;
    let client = signed_in(&server).await;
    let verify = format!("/api/locations/{LOCATION}/verify");

    let verdict = client.get(&verify).await.json();
    assert_eq!(verdict["ok"], true);
    assert_eq!((verdict["checked"].as_u64(), verdict["to_seq"].as_u64()), (Some(6), Some(6)));
    assert_eq!(verdict["head_chain_hash"], hex(&head));
    assert!(verdict["fault"].is_null());
    assert_eq!(verdict["checkpoints_checked"], 0, "this collector signs none");
    let part = client.get(&format!("{verify}?from_seq=2&to_seq=4")).await.json();
    assert_eq!((part["ok"].as_bool(), part["checked"].as_u64()), (Some(true), Some(3)));

    // Alter the fourth record's message behind the collector's back.
    server.stop_inner().await.unwrap();
    tamper_message(dir.path(), 4);
    let server = TestServer::start_with_http(dir.path()).await;
    let client = signed_in(&server).await;
    let verdict = client.get(&verify).await.json();
    assert_eq!(verdict["ok"], false);
    assert_eq!(verdict["checked"], 3);
    assert_eq!(verdict["fault"]["location_seq"], 4);
    assert_eq!(verdict["fault"]["kind"], "modified");
    assert_eq!(verdict["fault"]["detail"], "its content no longer matches its chain hash");
    server.stop().await;
}

/// Rewrites the message of the record at `seq` in the stopped collector's log.
fn tamper_message(data_dir: &std::path::Path, seq: u64) {
    use qtrail_collector::store::file::offline::{self, Entry};
    let mut entries = offline::read(data_dir).unwrap();
    for entry in &mut entries {
        if let Entry::Event(record) = entry
            && record.location == LOCATION
            && record.location_seq == seq
        {
            record.event.as_mut().unwrap().message = "nothing to see here".into();
        }
    }
    offline::write(data_dir, &entries).unwrap();
}

#[tokio::test]
async fn live_streams_history_then_new_events_and_resumes_after_the_last_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    server.publish(LOCATION, &events(LOCATION, 0, 3), 1).await;
    let client = signed_in(&server).await;
    let live = format!("/api/locations/{LOCATION}/live");

    let mut stream = client.events(&format!("{live}?from_seq=2"), &[]).await;
    for seq in [2, 3] {
        let event = stream.next().await.expect("history");
        assert_eq!((event.event.as_str(), event.id.clone()), ("stored", seq.to_string()));
        let row: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(row["location_seq"], seq);
    }
    // Only failures from here on: the filter applies to what arrives live.
    let mut failures = client.events(&format!("{live}?outcome=failure"), &[]).await;
    let (mut stream2, _) = server.open_publisher("pub-2", LOCATION, 1).await;
    stream2.publish(1, &[events(LOCATION, 10, 1).remove(0), failed_cancel("job-3", "c", 1_700_000_000_000)], 1).await;
    for seq in [4, 5] {
        assert_eq!(stream.next().await.expect("live").id, seq.to_string());
    }
    let failure = failures.next().await.expect("the failure");
    assert_eq!(failure.id, "5");
    assert!(failure.data.contains("\"outcome\":\"failure\""), "{}", failure.data);

    // A reconnecting browser sends the last id it saw and gets what follows, nothing twice.
    let mut resumed = client.events(&format!("{live}?from_seq=1"), &[("last-event-id", "3")]).await;
    assert_eq!(resumed.next().await.expect("resumed").id, "4");
    assert_eq!(resumed.next().await.expect("resumed").id, "5");

    let mut signed_out = client.clone();
    signed_out.cookie = None;
    assert_eq!(signed_out.get(&live).await.status, 401);
    assert_eq!(client.get(&format!("{live}?from_seq=x")).await.status, 400);

    // Shutdown ends open live views rather than waiting for browsers to leave.
    stream2.close();
    server.stop().await;
    assert!(stream.next().await.is_none(), "the stream ends at shutdown");
}

#[tokio::test]
async fn export_downloads_json_lines_of_the_filtered_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let mut published = events(LOCATION, 0, 4);
    published.push(failed_cancel("job-1", "c1", 1_700_000_100_000));
    server.publish(LOCATION, &published, 1).await;
    let client = signed_in(&server).await;

    let at = client.get(&format!("/api/locations/{LOCATION}/export?format=at-json")).await;
    assert_eq!(at.status, 200, "{}", at.body);
    assert_eq!(at.header("content-type"), "application/x-ndjson");
    assert_eq!(at.header("content-disposition"), "attachment; filename=\"qtrail-us-east-at-json.jsonl\"");
    let lines: Vec<serde_json::Value> = at.body.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[4]["action"], "quantum-computing.job.cancel");

    let cadf = client.get(&format!("/api/locations/{LOCATION}/export?format=cadf-json&outcome=failure")).await;
    let lines: Vec<serde_json::Value> = cadf.body.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["outcome"], "failure");
    assert_eq!(lines[0]["typeURI"], "http://schemas.dmtf.org/cloud/audit/1.0/event");
    server.stop().await;
}

#[tokio::test]
async fn the_page_carries_no_data_and_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let client = server.http();

    for path in ["/", "/console/us-east", "/console/%3Cscript%3E"] {
        let page = client.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
        let policy = page.header("content-security-policy");
        assert!(policy.contains("default-src 'self'") && policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
        assert_eq!(page.header("x-content-type-options"), "nosniff");
        assert_eq!(page.header("x-frame-options"), "DENY");
        // Scripts only from our own files, no inline handlers, nothing from another host.
        assert_eq!(page.body.matches("<script").count(), SCRIPTS.len());
        for name in SCRIPTS {
            assert!(page.body.contains(&format!(r#"<script src="/assets/{name}" defer></script>"#)), "{name}");
        }
        assert!(!page.body.contains(" onclick=") && !page.body.contains(" onload="));
        assert!(!page.body.contains("http://") && !page.body.contains("https://"), "no CDN");
        assert!(!page.body.contains("script>alert"), "the path is never written into the page");
    }
    for name in SCRIPTS {
        let script = client.get(&format!("/assets/{name}")).await;
        assert_eq!((script.status, script.header("content-type").as_str()), (200, "text/javascript; charset=utf-8"));
        // The scripts build their DOM with textContent; nothing may parse data as HTML.
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!script.body.contains(sink), "{name} uses {sink}");
        }
    }
    let style = client.get("/assets/console.css").await;
    assert_eq!((style.status, style.header("content-type").as_str()), (200, "text/css; charset=utf-8"));
    assert_eq!(client.get("/nothing").await.status, 404);
    assert_eq!(client.get("/assets/nothing.js").await.status, 404);
    server.stop().await;
}

/// The page's scripts, in the order it loads them.
const SCRIPTS: [&str; 4] = ["timeline.js", "chain.js", "alerts.js", "console.js"];

#[tokio::test]
async fn without_http_nothing_listens_and_with_it_both_stop_together() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let http_addr = server.http_addr.unwrap();
    assert_eq!(server.http().get("/healthz").await.status, 200);
    server.stop().await;
    assert!(tokio::net::TcpStream::connect(http_addr).await.is_err(), "the http side stopped with gRPC");

    let plain = tempfile::tempdir().unwrap();
    let server = TestServer::start(plain.path()).await;
    server.create_collector(LOCATION).await;
    assert!(!plain.path().join("http.addr").exists());
    server.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The console lists the signed checkpoints the collector holds, newest first, with what an
/// auditor needs to check them against the public key; bad parameters are a 400.
#[tokio::test]
async fn checkpoints_are_listed_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("checkpoint-key.pem");
    std::fs::write(&key_file, SigningKey::generate_pem().unwrap()).unwrap();
    let public_key = SigningKey::from_pem(&std::fs::read(&key_file).unwrap()).unwrap().public_pem();
    let mut config = qtrail_collector::Config::for_test(dir.path().join("data"), common::tokens());
    config.checkpoint_key = Some(key_file);
    config.checkpoint_interval = std::time::Duration::from_millis(50);
    let server = TestServer::start_with_http_config(config).await;
    server.create_collector(LOCATION).await;
    let client = signed_in(&server).await;
    let base = format!("/api/locations/{LOCATION}/checkpoints");
    let listed = common::wait_until(std::time::Duration::from_secs(20), || async {
        client.get(&format!("{base}?limit=2")).await.json()["checkpoints"].as_array().is_some_and(|all| all.len() == 2)
    })
    .await;
    assert!(listed, "two checkpoints are listed");
    let page = client.get(&format!("{base}?limit=2")).await.json();
    let checkpoints = page["checkpoints"].as_array().unwrap();
    let newest = checkpoints[0]["number"].as_u64().unwrap();
    assert_eq!(checkpoints[1]["number"].as_u64(), Some(newest - 1), "newest first");
    let key_id = qtrail_cadf::checkpoint::VerifyingKey::from_pem(public_key.as_bytes()).unwrap().id().to_owned();
    assert_eq!(checkpoints[0]["key_id"], key_id.as_str());
    assert_eq!(checkpoints[0]["signature"].as_str().map(str::len), Some(128), "64 bytes in hex");
    assert_eq!(checkpoints[0]["tree_size"], checkpoints[0]["location_seq"], "the tree head is the chain head");
    assert_eq!(checkpoints[0]["root"].as_str().map(str::len), Some(64), "32 bytes in hex");
    assert!(checkpoints[0]["note"].as_str().unwrap().starts_with("qtrail.local/"), "{}", checkpoints[0]);
    let older = client.get(&format!("{base}?limit=1&before_number={newest}")).await.json();
    assert_eq!(older["checkpoints"][0]["number"].as_u64(), Some(newest - 1));
    for (query, error) in [
        ("limit=0", "invalid limit `0`: expected 1 to 1000"),
        ("limit=5000", "invalid limit `5000`: expected 1 to 1000"),
        ("page=2", "unknown parameter `page`: expected one of limit, before_number"),
    ] {
        let answer = client.get(&format!("{base}?{query}")).await;
        assert_eq!((answer.status, answer.error()), (400, error.to_owned()), "{query}");
    }
    assert_eq!(client.get("/api/locations/jp-tok/checkpoints").await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn live_views_end_when_their_session_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let client = signed_in(&server).await;
    let other = signed_in(&server).await;
    let live = format!("/api/locations/{LOCATION}/live");
    let mut stream = client.events(&live, &[]).await;
    let mut kept = other.events(&live, &[]).await;

    let sign_out = client.send(Method::DELETE, "/api/session", &[], "").await;
    assert_eq!(sign_out.status, 204);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next()).await;
    assert!(ended.expect("the live view ended at sign-out").is_none());

    // Another session's view goes on.
    server.publish(LOCATION, &events(LOCATION, 0, 1), 1).await;
    assert_eq!(kept.next().await.expect("still live").id, "1");
    server.stop().await;
}

#[tokio::test]
async fn failed_sign_ins_are_rate_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir).await;
    let mut client = server.http();
    for attempt in 1..=10 {
        let unknown = client.sign_in(&format!("guess-{attempt}")).await;
        assert_eq!(unknown.status, 401, "attempt {attempt}: {}", unknown.body);
    }
    // Now even the right token is refused, so that guessing learns nothing more.
    let limited = client.sign_in(AUDITOR).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    let retry_after: u64 = limited.header("retry-after").parse().expect("a retry-after in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        limited.error(),
        format!("too many failed sign-ins from this address: try again in {retry_after} seconds")
    );
    assert!(limited.header("set-cookie").is_empty());
    server.stop().await;
}
