//! Account-scoped auditors end to end, through `qtrail up`: alice and bob call the runtime (alice
//! reads bob's public program), and bob's scoped token (`auditor-bob`, which `up` writes) sees
//! exactly the events of bob's account through the CLI's query and export, a gRPC tail and a
//! proof, while the unscoped auditor token sees everything.

use std::time::Duration;

use qtrail_proto::qtrail::audit::v1 as audit;
use serde_json::Value;

use crate::servers::{authed, lazy_channel};
use crate::tlog_interop::checkpoint_covering;
use crate::up::Up;

const BELL: &str = "OPENQASM 2.0; include \"qelib1.inc\"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;";

/// Returns bob's API key, the second principal `up` writes.
fn bob_key(up: &Up) -> String {
    let principals = std::fs::read_to_string(up.data_dir().join("principals.toml")).unwrap();
    let keys: Vec<&str> =
        principals.lines().filter_map(|line| line.strip_prefix("api_key = \"")?.strip_suffix('"')).collect();
    keys[1].to_owned()
}

/// Runs `qtrail --output json ARGS` and returns its JSON, failing unless it exits 0.
fn ok_json(up: &Up, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let output = up.qtrail(&all);
    assert_eq!(output.code, 0, "{args:?}: {output:?}");
    output.json()
}

/// Returns whether an event (AT-JSON) belongs to bob's account, as initiator or target owner.
fn bobs(event: &Value) -> bool {
    let in_bobs = |crn: &Value| crn.as_str().is_some_and(|crn| crn.contains(":a/acc-bob:"));
    in_bobs(&event["logSourceCRN"]) || in_bobs(&event["target"]["id"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_auditor_sees_only_its_accounts_events_everywhere() {
    let up = Up::start().await;
    let bob_auditor = up.field("bob_auditor_token");
    let bob = bob_key(&up);
    std::fs::write(up.data_dir().parent().unwrap().join("bell.qasm"), BELL).unwrap();

    // Bob publishes a program; alice lists hers and reads bob's.
    let created = ok_json(
        &up,
        &["--api-key", &bob, "programs", "create", "--name", "bobs", "--source-file", "bell.qasm", "--public"],
    );
    let program = created["id"].as_str().unwrap().to_owned();
    ok_json(&up, &["programs", "list"]);
    ok_json(&up, &["programs", "get", &program]);

    // The runtime's events: the trail's own use (the rule `up` creates, these reads) aside.
    let everything =
        ok_json(&up, &["events", "query", "--action", "quantum-computing", "--oldest-first", "--limit", "100"]);
    let everything = everything["events"].as_array().unwrap().clone();
    assert_eq!(everything.len(), 3, "{everything:?}");
    // Their positions: the trail's own use is interleaved in the log.
    let seq_of = |n: usize| everything[n]["locationSeq"].as_u64().unwrap();
    let (bobs_create, alices_list, alices_read) = (seq_of(0), seq_of(1), seq_of(2));
    let read = &everything[2]["event"];
    assert_eq!(read["action"], "quantum-computing.program.read");
    assert!(read["logSourceCRN"].as_str().unwrap().contains(":a/acc-alice:"), "{read}");
    assert!(
        read["target"]["id"].as_str().unwrap().ends_with(&format!(":a/acc-bob:qtrail-local:program:{program}")),
        "{read}"
    );

    // Bob's auditor: his create and alice's read of his program, not alice's list.
    let scoped = ok_json(&up, &["--token", &bob_auditor, "events", "query", "--oldest-first", "--limit", "100"]);
    let seqs: Vec<u64> =
        scoped["events"].as_array().unwrap().iter().map(|e| e["locationSeq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [bobs_create, alices_read], "{scoped}");
    let exported = up.qtrail(&["--token", &bob_auditor, "events", "export", "--format", "at-json"]);
    assert_eq!(exported.code, 0, "{exported:?}");
    let lines: Vec<Value> = exported.stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{exported:?}");
    assert!(lines.iter().all(bobs));

    // A gRPC tail from the start: the same two, then bob's next call live, never alice's.
    let mut query = audit::event_query_client::EventQueryClient::new(lazy_channel(&up.field("collector")));
    let request = audit::TailEventsRequest { location: up.field("location"), filter: None, from_seq: 1 };
    let mut tail = query.tail_events(authed(request, &bob_auditor)).await.unwrap().into_inner();
    ok_json(&up, &["programs", "list"]);
    ok_json(&up, &["--api-key", &bob, "programs", "list"]);
    let mut tailed = Vec::new();
    while tailed.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(30), tail.message()).await.expect("the tail keeps up");
        tailed.push(next.unwrap().unwrap().event.unwrap().location_seq);
    }
    assert_eq!(tailed[..2], [bobs_create, alices_read]);
    assert!(tailed[2] > alices_read, "bob's next call, live: {tailed:?}");

    // Bob proves alice's read of his program; alice's own list is not his to prove.
    checkpoint_covering(&up, tailed[2]).await;
    let read_seq = alices_read.to_string();
    let proved =
        up.qtrail(&["--token", &bob_auditor, "events", "prove", "--seq", &read_seq, "-o", "data/bob.tlog-proof"]);
    assert_eq!(proved.code, 0, "{proved:?}");
    let checked = up.qtrail(&["proof", "verify", "data/bob.tlog-proof", "--public-key", "data/checkpoint-key.pub.pem"]);
    assert_eq!(checked.code, 0, "{checked:?}");
    let list_seq = alices_list.to_string();
    let refused =
        up.qtrail(&["--token", &bob_auditor, "events", "prove", "--seq", &list_seq, "-o", "data/alice.tlog-proof"]);
    assert_eq!(refused.code, 3, "not found, as if absent: {refused:?}");
}
