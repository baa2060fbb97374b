//! The trail's own use on the trail: an auditor's `qtrail events query`, `qtrail events
//! export` and a console sign-in (an HTTP POST to `/api/session`, admitted and refused) each
//! become an event of the collector's own service in the location's log, found again with
//! `qtrail events query --action qtrail.… --initiator <token name>`, and `qtrail events verify`
//! covers them.

use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qtrail_testkit::{START_TIMEOUT, wait_until};
use serde_json::Value;

use crate::up::Up;

/// The auditor token's name in the tokens file `qtrail up` writes.
const AUDITOR: &str = "auditor-local";

/// Posts `body` as JSON to `url` and returns the status.
async fn post_json(url: &str, body: &str) -> u16 {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("user-agent", "e2e-usage")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response =
        tokio::time::timeout(Duration::from_secs(30), client.request(request)).await.expect("answer").expect("post");
    let status = response.status().as_u16();
    response.into_body().collect().await.expect("body");
    status
}

/// Returns the events of `action` the CLI finds (as the auditor, which records one more read).
fn events_of(up: &Up, action: &str, initiator: &str) -> Vec<Value> {
    let output = up.qtrail(&[
        "--output",
        "json",
        "events",
        "query",
        "--action",
        action,
        "--initiator",
        initiator,
        "--limit",
        "100",
    ]);
    assert_eq!(output.code, 0, "query failed: {output:?}");
    output.json()["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditors_query_export_and_sign_in_are_on_the_trail_and_verify_covers_them() {
    let up = Up::start().await;
    // The auditor reads and exports.
    let queried = up.qtrail(&["--output", "json", "events", "query", "--action", "quantum-computing.job"]);
    assert_eq!(queried.code, 0, "{queried:?}");
    let exported = up.qtrail(&["events", "export", "--format", "at-json", "-o", "export.jsonl"]);
    assert_eq!(exported.code, 0, "{exported:?}");
    // A console sign-in, then one with an unknown token: both are recorded, the token never.
    let console = up.field("console");
    let token = up.field("auditor_token");
    assert_eq!(post_json(&format!("{console}/api/session"), &format!(r#"{{"token": "{token}"}}"#)).await, 200);
    let wrong = "not-a-token-of-this-collector";
    assert_eq!(post_json(&format!("{console}/api/session"), &format!(r#"{{"token": "{wrong}"}}"#)).await, 401);

    // The first query is the one above: its filter is in the event, its initiator the token's name.
    let reads = events_of(&up, "qtrail.events.read", AUDITOR);
    let first = &reads
        .iter()
        .find(|stored| stored["event"]["requestData"]["filter"]["action"] == "quantum-computing.job")
        .unwrap_or_else(|| panic!("the query is recorded: {reads:?}"))["event"];
    assert_eq!(first["initiator"]["id"], AUDITOR);
    assert_eq!(first["initiator"]["credential"]["type"], "token");
    assert_eq!(first["outcome"], "success");
    assert_eq!(first["target"]["id"], "crn:v1:bluemix:public:qtrail:us-east::collector:log:us-east");
    assert_eq!(first["logSourceCRN"], "crn:v1:bluemix:public:qtrail:us-east::collector::");

    let exports = events_of(&up, "qtrail.events.export", AUDITOR);
    assert_eq!(exports.len(), 1, "one event per export, however many lines: {exports:?}");
    let logins = events_of(&up, "qtrail.console.login", AUDITOR);
    assert_eq!(logins.len(), 1, "{logins:?}");
    assert_eq!(logins[0]["event"]["initiator"]["host"]["agent"], "e2e-usage");
    let refused = events_of(&up, "qtrail.console.login", "unknown-token");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["event"]["outcome"], "failure");
    assert_eq!(refused[0]["event"]["reason"]["reasonCode"], 401);

    // No event holds a token.
    let all = up.qtrail(&["events", "export", "--format", "cadf-json", "-o", "all.jsonl"]);
    assert_eq!(all.code, 0, "{all:?}");
    let lines = std::fs::read_to_string(up.data_dir().parent().unwrap().join("all.jsonl")).unwrap();
    assert!(!lines.contains(&token) && !lines.contains(wrong), "a token reached the trail");

    // The chain verifies, and covers the trail's own events: the newest one is a read recorded
    // before this verification was answered.
    let newest = events_of(&up, "qtrail", AUDITOR)
        .iter()
        .map(|stored| stored["locationSeq"].as_u64().unwrap())
        .max()
        .expect("events of the collector's own");
    let verified = wait_until("a verification", START_TIMEOUT, || {
        let output = up.qtrail(&["--output", "json", "events", "verify"]);
        std::future::ready((output.code == 0).then(|| output.json()))
    })
    .await;
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(verified["toSeq"].as_u64().unwrap() >= newest, "{verified} covers {newest}");
    let verifications = events_of(&up, "qtrail.events.verify", AUDITOR);
    assert_eq!(verifications.len(), 1, "{verifications:?}");
}
