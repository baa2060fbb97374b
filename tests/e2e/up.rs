//! `qtrail up` as a real process, driven by the real `qtrail` CLI: every one of the eight
//! actions through the CLI, each found again with `qtrail events query --output json`, the
//! chain verified and exported, exit codes scripts rely on, and a clean Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use qtrail_testkit::{Process, START_TIMEOUT, Signal, binary, http_get, wait_until, without_tls_env};
use serde_json::Value;

/// A `qtrail up` child process with its own data directory, killed on drop (by its
/// [`Process`]).
pub struct Up {
    process: Option<Process>,
    dir: tempfile::TempDir,
    /// The parsed `up.json`.
    pub info: Value,
}

/// The result of one `qtrail` command.
#[derive(Debug)]
pub struct Output {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Returns stdout parsed as JSON, panicking with both streams if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("not json ({err}): stdout {:?} stderr {:?}", self.stdout, self.stderr))
    }
}

impl Up {
    /// Starts `qtrail up` on ephemeral ports and waits for its `up.json`.
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir")).await
    }

    /// Starts `qtrail up` again over the directory of one that has stopped.
    pub async fn restart(mut self) -> Self {
        assert!(self.process.is_none(), "stopped first");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        let _ = std::fs::remove_file(dir.path().join("data/up.json"));
        Self::start_in(dir).await
    }

    /// Starts `qtrail up` in `dir` and waits for its `up.json`.
    async fn start_in(dir: tempfile::TempDir) -> Self {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(dir.path().join("up.log")).expect("log file");
        let mut command = Command::new(binary("qtrail"));
        without_tls_env(&mut command)
            .current_dir(dir.path())
            .args(["up", "--data-dir", "data"])
            .args(["--runtime-listen", "127.0.0.1:0", "--collector-listen", "127.0.0.1:0"])
            .args(["--console-listen", "127.0.0.1:0"])
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "info".into()))
            // A signed checkpoint every second, so that tests see them without waiting a minute.
            .env("QTRAIL_COLLECTOR_CHECKPOINT_INTERVAL_SECS", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let process = Process::spawn("qtrail up", &mut command).expect("start qtrail up");
        let up_json = dir.path().join("data/up.json");
        let info = wait_until("qtrail up to write up.json", START_TIMEOUT, || {
            let info = std::fs::read_to_string(&up_json).ok().and_then(|text| serde_json::from_str(&text).ok());
            std::future::ready(info)
        })
        .await;
        Self { process: Some(process), dir, info }
    }

    /// Returns the data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Returns a string field of `up.json`.
    pub fn field(&self, name: &str) -> String {
        self.info[name].as_str().unwrap_or_else(|| panic!("up.json has no {name}")).to_owned()
    }

    /// Runs `qtrail` with `args` in the data directory's parent, so that it finds `up.json`.
    pub fn qtrail(&self, args: &[&str]) -> Output {
        run_qtrail(self.dir.path(), args)
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit code.
    pub async fn interrupt(&mut self) -> i32 {
        let mut process = self.process.take().expect("running");
        let status = process.stop(Signal::SIGINT, Duration::from_secs(30)).await.expect("qtrail up exits after ctrl-c");
        status.code().unwrap_or(-1)
    }
}

/// Runs the `qtrail` binary in `dir` (where `data/up.json`, if any, supplies its settings),
/// with none of its settings from this process's environment.
pub fn run_qtrail(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(binary("qtrail"));
    without_tls_env(&mut command).current_dir(dir).args(["--data-dir", "data"]).args(args);
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

/// Runs `qtrail` and returns its JSON output, failing unless it exits 0.
fn ok_json(up: &Up, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let output = up.qtrail(&all);
    assert_eq!(output.code, 0, "qtrail {args:?} failed: {}", output.stderr);
    output.json()
}

/// A Bell pair.
pub const BELL: &str =
    "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n";

/// A circuit with a mid-circuit measurement and reset, which the simulator must run shot by
/// shot: with many shots it runs long enough to be cancelled while queued or running.
pub const SLOW: &str = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[16];\ncreg c[16];\n\
    h q;\nmeasure q[0] -> c[0];\nreset q[0];\nh q;\ncx q[0],q[1];\nmeasure q -> c;\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qtrail_up_drives_all_eight_actions_through_the_cli() {
    let mut up = Up::start().await;
    let work = up.dir.path();
    std::fs::write(work.join("bell.qasm"), BELL).unwrap();
    std::fs::write(work.join("slow.qasm"), SLOW).unwrap();
    let ids = the_eight_actions_through_the_cli(&up);
    every_action_is_in_the_trail(&up, &ids).await;
    the_chain_verifies_and_exports(&up);
    the_auditors_and_admins_commands_work(&up);

    // The console and both services' metrics are on the console address.
    let console = up.field("console");
    let (status, page) = http_get(&format!("{console}/console/us-east")).await;
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "{page}");
    let (status, metrics) = http_get(&format!("{console}/metrics")).await;
    assert_eq!(status, 200);
    for series in ["qtrail_runtime_outbox_events", "qtrail_runtime_events_acked_total", "qtrail_collector_"] {
        assert!(metrics.contains(series), "{series} missing from /metrics:\n{metrics}");
    }

    // Exit codes for refused credentials, and a clean Ctrl-C.
    let unauthenticated = up.qtrail(&["--api-key", "wrong", "programs", "list"]);
    assert_eq!(unauthenticated.code, 4, "{unauthenticated:?}");
    assert_eq!(up.interrupt().await, 0);
    assert!(!up.data_dir().join("up.json").exists(), "up.json is removed on a clean exit");
}

/// The ids of what [`the_eight_actions_through_the_cli`] created.
struct Ids {
    program_id: String,
    job_id: String,
    slow_job_id: String,
}

/// Calls every action through the CLI: program.create, program.read (list and get),
/// program.update, job.create (waiting for the result), job.read (get, results, logs, interim,
/// list), job.cancel (refused for the finished job, exit 6; accepted for a slow one),
/// job.delete and program.delete.
fn the_eight_actions_through_the_cli(up: &Up) -> Ids {
    // program.create, program.read (list and get), program.update
    let program = ok_json(up, &["programs", "create", "--name", "bell", "--source-file", "bell.qasm"]);
    let program_id = program["id"].as_str().unwrap().to_owned();
    assert_eq!(program["numQubits"], 2);
    let listed = ok_json(up, &["programs", "list"]);
    assert_eq!(listed["count"], 1);
    assert_eq!(ok_json(up, &["programs", "get", &program_id])["name"], "bell");
    let updated = ok_json(up, &["programs", "update", &program_id, "--description", "a bell pair"]);
    assert_eq!(updated["description"], "a bell pair");

    // job.create (waiting for the result), job.read (get, results, logs, interim, list)
    let job = ok_json(up, &["jobs", "run", &program_id, "--shots", "200", "--seed", "7", "--tag", "e2e", "--wait"]);
    let job_id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["state"]["status"], "COMPLETED");
    let results = ok_json(up, &["jobs", "results", &job_id]);
    let counts = results["counts"].as_object().unwrap();
    assert!(counts.keys().all(|outcome| outcome == "00" || outcome == "11"), "{results}");
    assert_eq!(counts.values().map(|n| n.as_u64().unwrap()).sum::<u64>(), 200);
    assert_eq!(ok_json(up, &["jobs", "get", &job_id])["id"], job_id.as_str());
    assert!(ok_json(up, &["jobs", "logs", &job_id])["logs"].as_str().is_some());
    ok_json(up, &["jobs", "interim", &job_id]);
    assert_eq!(ok_json(up, &["jobs", "list", "--tag", "e2e", "--finished"])["count"], 1);

    // job.cancel: refused for the finished job (exit 6), accepted for a slow one.
    let refused = up.qtrail(&["jobs", "cancel", &job_id]);
    assert_eq!(refused.code, 6, "{refused:?}");
    assert!(refused.stderr.starts_with("error: failed precondition:"), "{}", refused.stderr);
    assert_eq!(refused.stderr.lines().count(), 1, "errors are one line: {}", refused.stderr);
    let slow = ok_json(up, &["programs", "create", "--name", "slow", "--source-file", "slow.qasm"]);
    let slow_id = slow["id"].as_str().unwrap().to_owned();
    let slow_job = ok_json(up, &["jobs", "run", &slow_id, "--shots", "100000"]);
    let slow_job_id = slow_job["id"].as_str().unwrap().to_owned();
    let cancelled = ok_json(up, &["jobs", "cancel", &slow_job_id]);
    assert_eq!(cancelled["state"]["status"], "CANCELLED");

    // job.delete, program.delete
    ok_json(up, &["jobs", "delete", &job_id]);
    ok_json(up, &["programs", "delete", &program_id]);
    let missing = up.qtrail(&["programs", "get", &program_id]);
    assert_eq!(missing.code, 3, "not found exits 3: {missing:?}");
    Ids { program_id, job_id, slow_job_id }
}

/// Every action is in the trail, found through the CLI.
async fn every_action_is_in_the_trail(up: &Up, ids: &Ids) {
    let expectations = [
        ("quantum-computing.program.create", "success", ids.program_id.as_str()),
        ("quantum-computing.program.read", "failure", ids.program_id.as_str()),
        ("quantum-computing.program.update", "success", ids.program_id.as_str()),
        ("quantum-computing.program.delete", "success", ids.program_id.as_str()),
        ("quantum-computing.job.create", "success", ids.job_id.as_str()),
        ("quantum-computing.job.read", "success", ids.job_id.as_str()),
        ("quantum-computing.job.cancel", "failure", ids.job_id.as_str()),
        ("quantum-computing.job.cancel", "success", ids.slow_job_id.as_str()),
        ("quantum-computing.job.delete", "success", ids.job_id.as_str()),
    ];
    for (action, outcome, target) in expectations {
        let found = wait_until(&format!("a {outcome} {action} event for {target}"), START_TIMEOUT, || {
            let page = ok_json(up, &["events", "query", "--action", action, "--outcome", outcome, "--limit", "100"]);
            let hit = page["events"].as_array().unwrap().iter().any(|stored| {
                let event = &stored["event"];
                event["action"] == action
                    && event["outcome"] == outcome
                    && event["target"]["id"].as_str().is_some_and(|crn| crn.ends_with(&format!(":{target}")))
            });
            std::future::ready(hit.then_some(()))
        })
        .await;
        let _: () = found;
    }
}

/// The chain holds and exports in both formats.
fn the_chain_verifies_and_exports(up: &Up) {
    let work = up.dir.path();
    let verified = ok_json(up, &["events", "verify"]);
    assert_eq!(verified["ok"], true, "{verified}");
    // A head kept out of band checks the history up to its position: the chain still leads to
    // it; another head, or a position past the chain's end, exits 10; a malformed head is usage.
    let (head, to_seq) = (verified["headChainHash"].as_str().unwrap(), verified["toSeq"].to_string());
    ok_json(up, &["events", "verify", "--to-seq", &to_seq, "--expect-head", head]);
    let other = "ab".repeat(32);
    let rewritten = up.qtrail(&["events", "verify", "--to-seq", &to_seq, "--expect-head", &other]);
    assert_eq!(rewritten.code, 10, "{rewritten:?}");
    assert!(rewritten.stderr.contains(&format!("expected {other}")), "{rewritten:?}");
    let past_end = (verified["toSeq"].as_u64().unwrap() + 1000).to_string();
    let cut = up.qtrail(&["events", "verify", "--to-seq", &past_end, "--expect-head", head]);
    assert_eq!(cut.code, 10, "{cut:?}");
    assert!(cut.stderr.contains("the chain ends at location_seq"), "{cut:?}");
    assert_eq!(up.qtrail(&["events", "verify", "--to-seq", &to_seq, "--expect-head", "xyz"]).code, 2);
    // A --public-key that is no Ed25519 public key is bad usage, naming the file.
    let not_a_key = up.qtrail(&["events", "verify", "--public-key", "data/tokens.toml"]);
    assert_eq!(not_a_key.code, 2, "{not_a_key:?}");
    assert!(not_a_key.stderr.contains("tokens.toml: not an ed25519 public key in PEM"), "{not_a_key:?}");
    let exported = up.qtrail(&["events", "export", "--format", "cadf-json", "-o", "events.jsonl"]);
    assert_eq!(exported.code, 0, "{exported:?}");
    let lines = std::fs::read_to_string(work.join("events.jsonl")).unwrap();
    assert!(lines.lines().count() as u64 >= verified["checked"].as_u64().unwrap());
    for line in lines.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["typeURI"], "http://schemas.dmtf.org/cloud/audit/1.0/event");
    }
}

/// The rest of the auditor's and admin's commands.
fn the_auditors_and_admins_commands_work(up: &Up) {
    let tail = up.qtrail(&["--output", "json", "events", "tail", "--from-seq", "1", "--count", "3"]);
    assert_eq!(tail.code, 0, "{tail:?}");
    let seqs: Vec<u64> = tail
        .stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["locationSeq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3], "tail prints history from --from-seq, one json line each");
    let publishers = ok_json(up, &["events", "publishers"]);
    // The runtime's publisher, beside the collector's own (`qtrail-collector`, the trail's use).
    let listed = publishers["publishers"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{publishers}");
    let runtime = listed.iter().find(|publisher| publisher["publisherId"] != "qtrail-collector").unwrap();
    assert_eq!(runtime["gaps"], serde_json::json!([]), "{publishers}");
    assert_eq!(runtime["rejectedCount"], 0, "{publishers}");
    assert_eq!(runtime["rejected"], serde_json::json!([]), "{publishers}");
    assert_eq!(runtime["credential"], "runtime-local", "bound to the publisher token: {publishers}");
    let own = listed.iter().find(|publisher| publisher["publisherId"] == "qtrail-collector").unwrap();
    assert_eq!(own["gaps"], serde_json::json!([]), "the trail's own events leave no gap: {publishers}");
    let collectors = ok_json(up, &["collectors", "list"]);
    assert_eq!(collectors["collectors"][0]["location"], "us-east");
    // `up` made its example alert rule: every critical event (deletes, refused keys).
    let rules = ok_json(up, &["alerts", "list"]);
    assert_eq!(rules["rules"][0]["name"], "critical-calls", "{rules}");
    assert_eq!(rules["rules"][0]["filter"]["severity"], "critical", "{rules}");
    // Without --location and without up.json, `events` commands read the only location the
    // collector hosts, and name the choices once there are several.
    let elsewhere = tempfile::tempdir().unwrap();
    let (collector, auditor) = (up.field("collector"), up.field("auditor_token"));
    let bare = ["--collector", collector.as_str(), "--token", auditor.as_str(), "--output", "json"];
    let only = run_qtrail(elsewhere.path(), &[&bare[..], &["events", "query", "--limit", "1"]].concat());
    assert_eq!(only.code, 0, "{only:?}");
    assert_eq!(only.json()["events"][0]["location"], "us-east", "{only:?}");
    let twice = up.qtrail(&["collectors", "create", "us-east"]);
    assert_eq!(twice.code, 6, "a second collector for a location is refused: {twice:?}");
    assert!(twice.stderr.contains("already exists"), "{}", twice.stderr);
    assert_eq!(ok_json(up, &["collectors", "create", "eu-de"])["location"], "eu-de");
    let several = run_qtrail(elsewhere.path(), &[&bare[..], &["events", "query"]].concat());
    assert_eq!(several.code, 2, "{several:?}");
    assert!(several.stderr.contains("no location: the collector hosts eu-de, us-east; pass --location"), "{several:?}");
    // up.json's location still comes first, and --location before it.
    assert_eq!(ok_json(up, &["events", "query", "--limit", "1"])["events"][0]["location"], "us-east");
    let flagged = ok_json(up, &["--location", "eu-de", "events", "query"]);
    assert_eq!(flagged["events"], serde_json::json!([]), "{flagged}");
    let bad = up.qtrail(&["collectors", "create", "EU DE"]);
    assert_eq!(bad.code, 6, "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qtrail_up_reuses_its_credentials_and_keeps_its_events_across_restarts() {
    let mut first = Up::start().await;
    let key = first.field("api_key");
    let token = first.field("auditor_token");
    std::fs::write(first.dir.path().join("bell.qasm"), BELL).unwrap();
    ok_json(&first, &["programs", "create", "--name", "bell", "--source-file", "bell.qasm"]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(first.data_dir().join("tokens.toml")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "credentials are private");
    assert_eq!(first.interrupt().await, 0);

    // Start again in the same directory.
    let dir = std::mem::replace(&mut first.dir, tempfile::tempdir().unwrap());
    let log = std::fs::File::create(dir.path().join("up2.log")).unwrap();
    let mut command = Command::new(binary("qtrail"));
    command
        .current_dir(dir.path())
        .args(["up", "--data-dir", "data", "--runtime-listen", "127.0.0.1:0"])
        .args(["--collector-listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0"])
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let process = Process::spawn("qtrail up", &mut command).unwrap();
    let up_json = dir.path().join("data/up.json");
    let info: Value = wait_until("the second qtrail up", START_TIMEOUT, || {
        std::future::ready(std::fs::read_to_string(&up_json).ok().and_then(|t| serde_json::from_str(&t).ok()))
    })
    .await;
    let mut second = Up { process: Some(process), dir, info };
    assert_eq!(second.field("api_key"), key);
    assert_eq!(second.field("auditor_token"), token);
    let page = ok_json(&second, &["events", "query", "--action", "quantum-computing.program.create"]);
    assert_eq!(page["events"].as_array().unwrap().len(), 1, "the first run's event is still there");

    // The first run signed a checkpoint as it stopped, covering its event; the second run
    // signs with the same key, which the auditor checks with the public half.
    let public_key = "data/checkpoint-key.pub.pem";
    let listed = ok_json(&second, &["events", "checkpoints", "--public-key", public_key]);
    let checkpoints = listed["checkpoints"].as_array().unwrap();
    assert!(checkpoints.iter().any(|c| c["locationSeq"].as_u64() >= Some(1)), "{listed}");
    assert!(checkpoints.iter().all(|c| c["signatureOk"] == true), "{listed}");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(second.data_dir().join("checkpoint-key.pem")).unwrap().permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600, "the signing key is private");
    let verified = second.qtrail(&["events", "verify", "--public-key", public_key]);
    assert_eq!(verified.code, 0, "{verified:?}");
    assert!(verified.stdout.contains("checkpoints ok: "), "{verified:?}");
    // A checkpoint kept out of band checks out; the same with its position altered does not.
    let kept = second.qtrail(&["--output", "json", "events", "checkpoints", "--limit", "1"]);
    assert_eq!(kept.code, 0, "{kept:?}");
    std::fs::write(second.dir.path().join("kept.json"), &kept.stdout).unwrap();
    let expect = ["events", "verify", "--public-key", public_key, "--expect-checkpoint", "kept.json"];
    let checked = second.qtrail(&expect);
    assert_eq!(checked.code, 0, "{checked:?}");
    let mut altered = kept.json();
    let seq = altered["checkpoints"][0]["locationSeq"].as_u64().unwrap();
    altered["checkpoints"][0]["locationSeq"] = (seq + 1).into();
    std::fs::write(second.dir.path().join("kept.json"), altered.to_string()).unwrap();
    let refused = second.qtrail(&expect);
    assert_eq!(refused.code, 10, "{refused:?}");
    assert!(refused.stderr.contains("the kept one: checkpoint"), "{refused:?}");
    // Someone else's key: every checkpoint is refused.
    let other = qtrail_cadf::checkpoint::SigningKey::generate_pem().unwrap();
    let other = qtrail_cadf::checkpoint::SigningKey::from_pem(other.as_bytes()).unwrap();
    std::fs::write(second.dir.path().join("other.pub.pem"), other.public_pem()).unwrap();
    let refused = second.qtrail(&["events", "verify", "--public-key", "other.pub.pem"]);
    assert_eq!(refused.code, 10, "{refused:?}");
    assert!(refused.stderr.contains("is signed by key"), "{refused:?}");
    assert_eq!(second.interrupt().await, 0);
}

/// Two signed checkpoints swapped in the collector's store: every way of verifying fails with
/// exit 10 and names the damaged entry, and the listing still shows the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_checkpoints_fail_verification_with_exit_10() {
    let mut up = Up::start().await;
    // Signed every second: wait for three, so that two can be swapped below the newest.
    wait_until("three signed checkpoints", Duration::from_secs(60), || {
        let listed = up.qtrail(&["--output", "json", "events", "checkpoints", "--limit", "1"]);
        let newest = (listed.code == 0).then(|| listed.json()["checkpoints"][0]["number"].as_u64()).flatten();
        std::future::ready(newest.filter(|&number| number >= 3))
    })
    .await;
    let kept = up.qtrail(&["--output", "json", "events", "checkpoints", "--limit", "1"]);
    std::fs::write(up.dir.path().join("kept.json"), &kept.stdout).unwrap();
    assert_eq!(up.interrupt().await, 0);

    // Swapped in the collector's log, the frames' CRCs recomputed.
    use qtrail_collector::store::file::offline::{self, Entry};
    let store = up.data_dir().join("collector");
    let mut entries = offline::read(&store).expect("the collector's log");
    for entry in &mut entries {
        if let Entry::Checkpoint { location, number, .. } = entry
            && location == "us-east"
            && *number <= 2
        {
            *number = 3 - *number;
        }
    }
    offline::write(&store, &entries).unwrap();

    let up = up.restart().await;
    let public_key = "data/checkpoint-key.pub.pem";
    for args in [
        &["events", "verify"][..],
        &["events", "verify", "--public-key", public_key],
        &["events", "verify", "--public-key", public_key, "--expect-checkpoint", "kept.json"],
        &["events", "checkpoints", "--limit", "1000"],
    ] {
        let refused = up.qtrail(args);
        assert_eq!(refused.code, 10, "{args:?}: {refused:?}");
        assert!(
            refused
                .stderr
                .contains("checkpoints of us-east do not hold: checkpoint 2 of location `us-east` holds checkpoint 1"),
            "{args:?}: {refused:?}"
        );
    }
    let verdict = up.qtrail(&["--output", "json", "events", "verify"]);
    assert_eq!(verdict.code, 10, "{verdict:?}");
    let fault = &verdict.json()["fault"];
    assert_eq!((fault["kind"].as_str(), fault["checkpointNumber"].as_u64()), (Some("checkpoint_damaged"), Some(2)));
    let listed = up.qtrail(&["--output", "json", "events", "checkpoints", "--limit", "1000"]);
    let damaged: Vec<u64> =
        listed.json()["damaged"].as_array().unwrap().iter().map(|entry| entry["number"].as_u64().unwrap()).collect();
    assert_eq!(damaged, [2, 1], "{listed:?}");
    assert!(listed.json()["checkpoints"].as_array().unwrap().len() >= 2, "the intact ones are still listed");
}
