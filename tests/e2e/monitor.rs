//! `qtrail events monitor` against a real `qtrail up` whose data directory is swapped under it:
//! heads that grow pass and are kept; an old copy of the data brought back is a rollback, and
//! that copy grown with other events past the head seen is a fork; both exit 10, keep the
//! offending note as evidence, and the rollback reaches `qtrail alerts receive` as a signed
//! CloudEvent.

use std::path::Path;
use std::process::{Command, Stdio};

use base64::Engine as _;
use qtrail_testkit::{Process, START_TIMEOUT, binary, wait_until};
use serde_json::Value;

use crate::copy_dir;
use crate::tlog_interop::{checkpoint_covering, make_events};
use crate::up::{Output, Up};

const KEY: &str = "data/checkpoint-key.pub.pem";

/// Stops `up`, replaces its data directory with a copy of `backup`, and starts it again.
async fn restore(mut up: Up, backup: &Path) -> Up {
    assert_eq!(up.interrupt().await, 0);
    std::fs::remove_dir_all(up.data_dir()).unwrap();
    copy_dir(backup, &up.data_dir());
    up.restart().await
}

/// One poll of the monitor with its state in `state`, and `extra` flags.
fn monitor(up: &Up, state: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--output", "json", "events", "monitor", "--public-key", KEY, "--once", "--state"];
    args.push(state.to_str().unwrap());
    args.extend_from_slice(extra);
    up.qtrail(&args)
}

fn tree_size(checkpoint: &Value) -> u64 {
    checkpoint["treeSize"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_catches_a_rollback_and_a_fork() {
    let scratch = tempfile::tempdir().unwrap();
    let (state, backup) = (scratch.path().join("state"), scratch.path().join("backup"));
    let mut up = Up::start().await;
    make_events(&up, 2);
    checkpoint_covering(&up, 2).await;
    assert_eq!(up.interrupt().await, 0);
    copy_dir(&up.data_dir(), &backup);
    let up = up.restart().await;

    // The first head is trusted and kept; a larger one must extend it.
    let first = monitor(&up, &state, &[]);
    assert_eq!(first.code, 0, "{first:?}");
    let kept = first.json()["treeSize"].as_u64().unwrap();
    make_events(&up, 12);
    let grown = tree_size(&checkpoint_covering(&up, kept + 12).await);
    let second = monitor(&up, &state, &[]);
    assert_eq!(second.code, 0, "{second:?}");
    let verdict = second.json();
    assert_eq!(verdict["seenSize"].as_u64(), Some(kept), "{verdict}");
    let seen = verdict["treeSize"].as_u64().unwrap();
    assert!(seen >= grown, "{verdict}");
    let kept_note = std::fs::read_to_string(state.join("us-east.checkpoint")).unwrap();
    assert!(kept_note.starts_with(&format!("qtrail.local/us-east\n{seen}\n")), "{kept_note}");

    // The old copy comes back: a rollback, posted to a receiver that checks its signature.
    let up = restore(up, &backup).await;
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([5u8; 32]));
    let (addr_file, deliveries) = (scratch.path().join("receiver.addr"), scratch.path().join("deliveries.jsonl"));
    let mut command = Command::new(binary("qtrail"));
    command
        .args(["alerts", "receive", "--listen", "127.0.0.1:0", "--count", "1", "--secret", &secret, "--addr-file"])
        .arg(&addr_file)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&deliveries).unwrap());
    let mut receiver = Process::spawn("qtrail alerts receive", &mut command).expect("start the receiver");
    let addr = receiver.wait_for_addr_file(&addr_file, START_TIMEOUT).await.expect("receiver ready");
    let url = format!("http://{addr}/");
    let rolled_back = monitor(&up, &state, &["--webhook", &url, "--secret", &secret]);
    assert_eq!(rolled_back.code, 10, "{rolled_back:?}");
    assert!(rolled_back.stderr.contains("rollback: the newest signed tree head has "), "{rolled_back:?}");
    assert_eq!(rolled_back.stdout.lines().count(), 1, "{rolled_back:?}");
    assert_eq!(serde_json::from_str::<Value>(&rolled_back.stdout).unwrap()["alarm"], "rollback");
    assert!(state.join("us-east.rollback").is_file());
    let delivery: Value = wait_until("the alarm delivered", START_TIMEOUT, || {
        let text = std::fs::read_to_string(&deliveries).unwrap_or_default();
        std::future::ready(text.lines().next().and_then(|line| serde_json::from_str(line).ok()))
    })
    .await;
    assert_eq!(delivery["event"]["type"], "com.qtrail.tlog.rollback", "{delivery}");
    assert_eq!(delivery["event"]["data"]["seenNote"], kept_note.as_str(), "{delivery}");
    drop(receiver);
    // The kept head is still the reference: the alarm repeats.
    assert_eq!(monitor(&up, &state, &[]).code, 10);

    // The old copy grows with other events past the head seen: a fork.
    make_events(&up, 30);
    checkpoint_covering(&up, seen + 1).await;
    let forked = monitor(&up, &state, &[]);
    assert_eq!(forked.code, 10, "{forked:?}");
    assert!(forked.stderr.contains("fork: ") && forked.stderr.contains("does not extend"), "{forked:?}");
    assert!(state.join("us-east.fork").is_file());
    assert_eq!(std::fs::read_to_string(state.join("us-east.checkpoint")).unwrap(), kept_note);
}
