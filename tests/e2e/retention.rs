//! Retention policies and legal holds set through the CLI against a spawned collector: the
//! admin RPCs validate their input, refuse non-admin tokens, and what they set survives a
//! kill -9 of the collector. (Pruning itself waits for the archiver: nothing expires without
//! a verified archive.)

use qtrail_testkit::{binary, without_tls_env};
use serde_json::{Value, json};

use crate::servers::{ADMIN_TOKEN, AUDITOR_TOKEN, Collector};
use crate::up::Output;

/// Runs `qtrail --output json` against `collector` with `token`.
fn qtrail(collector: &Collector, token: &str, args: &[&str]) -> Output {
    let url = collector.url();
    let mut command = std::process::Command::new(binary("qtrail"));
    without_tls_env(&mut command).args(["--collector", url.as_str(), "--token", token, "--output", "json"]).args(args);
    for setting in ["RUNTIME", "COLLECTOR", "API_KEY", "TOKEN", "LOCATION"] {
        command.env_remove(format!("QTRAIL_{setting}"));
    }
    let output = command.output().expect("run qtrail");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn ok(collector: &Collector, args: &[&str]) -> Value {
    let output = qtrail(collector, ADMIN_TOKEN, args);
    assert_eq!(output.code, 0, "qtrail {args:?}: {output:?}");
    output.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_holds_are_set_through_the_cli_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut collector = Collector::start("retention", dir.path()).await;
    collector.create_collector("us-east").await;

    assert_eq!(
        ok(&collector, &["collectors", "retention", "get", "us-east"]),
        json!({"location": "us-east", "days": 0})
    );
    assert_eq!(ok(&collector, &["collectors", "retention", "set", "us-east", "30"])["days"], 30);
    let too_long = qtrail(&collector, ADMIN_TOKEN, &["collectors", "retention", "set", "us-east", "40000"]);
    assert_ne!(too_long.code, 0, "{too_long:?}");
    assert!(too_long.stderr.contains("days must be at most 36500"), "{too_long:?}");
    let nowhere = qtrail(&collector, ADMIN_TOKEN, &["collectors", "retention", "set", "eu-de", "7"]);
    assert!(nowhere.stderr.contains("eu-de"), "no collector there: {nowhere:?}");
    let auditor = qtrail(&collector, AUDITOR_TOKEN, &["collectors", "retention", "set", "us-east", "1"]);
    assert_ne!(auditor.code, 0, "an auditor may not shorten retention: {auditor:?}");

    ok(&collector, &["collectors", "hold", "add", "--account", "acc-alice", "--reason", "case 7"]);
    ok(&collector, &["collectors", "hold", "add", "--location", "us-east", "--reason", "audit 2026"]);
    let bad = qtrail(&collector, ADMIN_TOKEN, &["collectors", "hold", "add", "--account", "acc:x", "--reason", "r"]);
    assert!(bad.stderr.contains("invalid account"), "{bad:?}");
    let holds = ok(&collector, &["collectors", "hold", "list"]);
    assert_eq!(holds["holds"][0]["location"], "us-east", "{holds}");
    assert_eq!(holds["holds"][1]["account"], "acc-alice", "{holds}");
    assert_eq!(holds["holds"][1]["createdBy"], "e2e-admin", "{holds}");

    // Durable: a crash right after the answers loses none of it.
    collector.process().kill();
    collector.process().restart().await;
    assert_eq!(ok(&collector, &["collectors", "retention", "get", "us-east"])["days"], 30);
    assert_eq!(ok(&collector, &["collectors", "hold", "list"])["holds"].as_array().unwrap().len(), 2);
    ok(&collector, &["collectors", "hold", "remove", "--location", "us-east"]);
    let again = qtrail(&collector, ADMIN_TOKEN, &["collectors", "hold", "remove", "--location", "us-east"]);
    assert!(again.stderr.contains("no legal hold on location `us-east`"), "{again:?}");
    assert_eq!(ok(&collector, &["collectors", "hold", "list"])["holds"].as_array().unwrap().len(), 1);

    // Every change, refused ones included, is itself an event on the trail of us-east, by whom.
    let changes: Vec<(String, String)> = collector
        .all_events("us-east")
        .await
        .into_iter()
        .filter_map(|event| event.event)
        .filter(|event| event.action.starts_with("qtrail.retention") || event.action.starts_with("qtrail.hold"))
        .map(|event| (event.action, event.initiator.map(|who| who.name).unwrap_or_default()))
        .collect();
    let count = |action: &str| changes.iter().filter(|change| change.0 == action).count();
    // Retention: 30 (ok), 40000 (refused); the auditor's is refused before it is a change.
    assert_eq!(count("qtrail.retention.update"), 2, "{changes:?}");
    // Holds: two added, one refused, one lifted, one lift refused.
    assert_eq!(count("qtrail.hold.update"), 5, "{changes:?}");
    assert!(changes.iter().all(|change| change.1 == "e2e-admin"), "{changes:?}");
}
