//! Alerts end to end: the real collector, runtime and `qtrail` binaries, rules made with
//! `qtrail alerts create`, and a real webhook receiver on port 0 built on independent
//! implementations (PyPI `standardwebhooks` checks each signature, PyPI `cloudevents` parses each
//! body: `alerts_receiver.py`; the README's test command installs both).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use qtrail_proto::qtrail::runtime::v1 as runtime;
use qtrail_proto::qtrail::runtime::v1::program_service_client::ProgramServiceClient;
use qtrail_testkit::{Process, START_TIMEOUT, binary, wait_until};
use serde_json::Value;

use crate::servers::{ADMIN_TOKEN, ALICE_KEY, AUDITOR_TOKEN, Collector, Runtime, RuntimeOptions, authed, lazy_channel};

fn secret() -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([9u8; 32]))
}

/// A running `alerts_receiver.py`, killed on drop.
struct Receiver {
    process: Process,
    url: String,
    out: PathBuf,
}

impl Receiver {
    /// Starts the receiver with extra `options` of `alerts_receiver.py` (`--hang`, `--delay-ms N`).
    async fn start(dir: &Path, name: &str, port: u16, options: &[&str]) -> Self {
        let python = std::env::var("QTRAIL_PYTHON").unwrap_or_else(|_| "python3".into());
        let probe = Command::new(&python).args(["-c", "import standardwebhooks, cloudevents"]).output();
        assert!(
            probe.is_ok_and(|out| out.status.success()),
            "{python} cannot import standardwebhooks and cloudevents: run `pip install standardwebhooks cloudevents` \
             (scripts/test does)"
        );
        let addr_file = dir.join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&addr_file);
        let out = dir.join(format!("{name}.jsonl"));
        let mut command = Command::new(&python);
        command
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/e2e/alerts_receiver.py"))
            .args(["--secret", &secret(), "--port", &port.to_string()])
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--out")
            .arg(&out)
            .args(options)
            .stdin(Stdio::null());
        let mut process = Process::spawn(name, &mut command).expect("spawn the receiver");
        let addr = process.wait_for_addr_file(&addr_file, START_TIMEOUT).await.expect("receiver ready");
        Self { process, url: format!("http://{addr}/hook"), out }
    }

    fn port(&self) -> u16 {
        self.url.rsplit_once(':').and_then(|(_, rest)| rest.trim_end_matches("/hook").parse().ok()).expect("port")
    }

    fn deliveries(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        // A line still being written has no newline yet: only whole lines count.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole.lines().map(|line| serde_json::from_str(line).expect("json line")).collect()
    }

    async fn wait_for(&self, what: &str, count: usize) -> Vec<Value> {
        wait_until(what, Duration::from_secs(60), || async {
            let deliveries = self.deliveries();
            (deliveries.len() >= count).then_some(deliveries)
        })
        .await
    }
}

/// Runs `qtrail --output json … alerts <args>` against `collector` and returns its stdout.
fn qtrail(collector: &Collector, token: &str, args: &[&str]) -> String {
    let output = Command::new(binary("qtrail"))
        .args(["--collector", &collector.url(), "--token", token, "--location", "us-east", "--output", "json"])
        .arg("alerts")
        .args(args)
        .env_remove("QTRAIL_DATA_DIR")
        .output()
        .expect("run qtrail");
    assert!(output.status.success(), "qtrail alerts {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8")
}

fn create_rule(collector: &Collector, name: &str, url: &str, rule: &[&str]) {
    let secret = secret();
    let mut args = vec!["create", "--name", name, "--webhook", url, "--secret", &secret];
    args.extend_from_slice(rule);
    qtrail(collector, ADMIN_TOKEN, &args);
}

async fn start(dir: &Path, collector_args: &[&str]) -> (Collector, Runtime) {
    let args: Vec<OsString> = collector_args.iter().map(OsString::from).collect();
    let collector = Collector::start_with("collector", dir, args, None).await;
    collector.create_collector("us-east").await;
    let runtime = Runtime::start(RuntimeOptions::new(collector.url()), dir).await;
    (collector, runtime)
}

/// Makes `count` ListPrograms calls with `key` (one event each), ignoring refusals.
async fn list_programs(runtime: &Runtime, key: &str, count: usize) {
    let mut client = ProgramServiceClient::new(lazy_channel(&runtime.url()));
    for _ in 0..count {
        let _ = client.list_programs(authed(runtime::ListProgramsRequest::default(), key)).await;
    }
}

fn of_rule<'a>(deliveries: &'a [Value], rule: &str) -> Vec<&'a Value> {
    deliveries.iter().filter(|d| d["data"]["rule"] == rule).collect()
}

#[tokio::test]
async fn every_trigger_fires_absence_resolves_and_deliveries_verify_independently() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, runtime) = start(dir.path(), &["--alert-retry-cap-secs", "1"]).await;
    let receiver = Receiver::start(dir.path(), "receiver", 0, &[]).await;
    create_rule(&collector, "quiet", &receiver.url, &["--action", "quantum-computing.program", "--absence", "2s"]);
    create_rule(&collector, "refused", &receiver.url, &["--outcome", "failure", "--severity", "critical", "--each"]);
    create_rule(
        &collector,
        "burst",
        &receiver.url,
        &[
            "--action",
            "quantum-computing.program.read",
            "--threshold",
            "3",
            "--window",
            "1m",
            "--group-by",
            "initiator",
        ],
    );
    // No program call for two seconds: the absence fires on the clock.
    let fired = receiver.wait_for("the absence to fire", 1).await;
    assert_eq!(
        (fired[0]["data"]["rule"].as_str(), fired[0]["type"].as_str()),
        (Some("quiet"), Some("com.qtrail.alert.fired"))
    );

    list_programs(&runtime, ALICE_KEY, 3).await;
    list_programs(&runtime, "not-a-key", 1).await;
    // Waited for by content, not by count: the 2 s absence fires again 2 s after the last call,
    // which a loaded machine may deliver before the others.
    let deliveries = wait_until("burst, resolve and refusal", Duration::from_secs(60), || async {
        let deliveries = receiver.deliveries();
        let done = of_rule(&deliveries, "quiet").len() >= 2
            && !of_rule(&deliveries, "burst").is_empty()
            && !of_rule(&deliveries, "refused").is_empty();
        done.then_some(deliveries)
    })
    .await;
    let resolved = of_rule(&deliveries, "quiet");
    assert_eq!(resolved[1]["type"], "com.qtrail.alert.resolved", "{deliveries:?}");
    assert!(resolved[2..].iter().all(|d| d["type"] == "com.qtrail.alert.fired"), "{deliveries:?}");
    let burst = of_rule(&deliveries, "burst");
    assert_eq!(burst.len(), 1, "{deliveries:?}");
    assert_eq!(burst[0]["data"]["count"], 3);
    assert_eq!(burst[0]["data"]["events"].as_array().unwrap().len(), 3);
    let refused = of_rule(&deliveries, "refused");
    assert_eq!(refused.len(), 1, "{deliveries:?}");
    assert_eq!(refused[0]["data"]["events"][0]["outcome"], "failure");
    for delivery in &deliveries {
        assert_eq!(delivery["specversion"], "1.0");
        assert_eq!(delivery["source"], "crn:v1:bluemix:public:quantum-computing:us-east::::");
        assert_eq!(delivery["id"], delivery["webhook_id"]);
    }

    let quiet = [("rule", "us-east/quiet"), ("kind", "resolved")];
    assert_eq!(collector.metric("qtrail_collector_alert_firings_total", &quiet).await, 1.0, "resolved once");
    let delivered = collector.metric("qtrail_collector_alert_deliveries_total", &[("outcome", "delivered")]).await;
    assert!(delivered >= 4.0, "{delivered}");

    // The watch stream has the same firings, resumable from the start.
    let watched = qtrail(&collector, AUDITOR_TOKEN, &["watch", "--from-start", "--count", "4"]);
    let rules: Vec<String> = watched
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["rule"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rules.len(), 4);
    assert!(["quiet", "burst", "refused"].iter().all(|rule| rules.iter().any(|r| r == rule)), "{rules:?}");
    let listed: Value = serde_json::from_str(&qtrail(&collector, AUDITOR_TOKEN, &["list"])).unwrap();
    assert_eq!(listed["rules"].as_array().unwrap().len(), 3);
    assert!(!qtrail(&collector, AUDITOR_TOKEN, &["get", "burst"]).contains("whsec_"));
    drop(receiver);
}

#[tokio::test]
async fn a_hanging_receiver_delays_no_other_rule_and_a_receiver_down_then_up_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, runtime) = start(dir.path(), &["--alert-retry-cap-secs", "2", "--alert-timeout-secs", "120"]).await;
    let hanging = Receiver::start(dir.path(), "hanging", 0, &["--hang"]).await;
    let mut receiver = Receiver::start(dir.path(), "receiver", 0, &[]).await;
    let each = ["--action", "quantum-computing.program.read", "--each"];
    create_rule(&collector, "to-hanging", &hanging.url, &each);
    create_rule(&collector, "to-receiver", &receiver.url, &each);

    // The hanging endpoint holds its own worker for up to 120 s; the other rule's delivery
    // arrives well within the wait below.
    let started = std::time::Instant::now();
    list_programs(&runtime, ALICE_KEY, 1).await;
    receiver.wait_for("the delivery beside a hanging endpoint", 1).await;
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());

    // Recorded as delivered before the receiver goes, so that its answer is not cut off.
    wait_until("the first delivery recorded", Duration::from_secs(30), || async {
        let delivered = collector
            .metric(
                "qtrail_collector_alert_deliveries_total",
                &[("rule", "us-east/to-receiver"), ("outcome", "delivered")],
            )
            .await;
        (delivered >= 1.0).then_some(())
    })
    .await;

    // The receiver goes down for a minute; firings meanwhile are retried until it is back on
    // its port.
    let port = receiver.port();
    receiver.process.kill();
    let down = std::time::Instant::now();
    list_programs(&runtime, ALICE_KEY, 3).await;
    let to_receiver = [("rule", "us-east/to-receiver")];
    wait_until("a minute of failed attempts while the receiver is down", Duration::from_secs(120), || async {
        let retries = collector
            .metric("qtrail_collector_alert_deliveries_total", &[("rule", "us-east/to-receiver"), ("outcome", "retry")])
            .await;
        (retries >= 12.0 && down.elapsed() >= Duration::from_secs(60)).then_some(())
    })
    .await;
    let queued = collector.metric("qtrail_collector_alert_queue_depth", &to_receiver).await;
    assert_eq!(queued, 3.0, "the three firings wait for the receiver");
    receiver = Receiver::start(dir.path(), "receiver", port, &[]).await;
    let deliveries = receiver.wait_for("every delivery after the receiver is back", 4).await;
    let ids: HashSet<&str> = deliveries.iter().map(|d| d["webhook_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "{deliveries:?}");
    drop(hanging);
}

/// Calls of the kill -9 test's burst, one event and one firing each.
const BURST: usize = 300;

#[tokio::test]
async fn a_collector_killed_during_a_burst_loses_no_firing_and_repeats_keep_their_webhook_id() {
    let dir = tempfile::tempdir().unwrap();
    let (mut collector, runtime) = start(dir.path(), &["--alert-retry-cap-secs", "1"]).await;
    // A slow receiver (one delivery at a time per channel) lets firings outrun deliveries, so
    // the kill always lands with firings committed and not yet delivered.
    let receiver = Receiver::start(dir.path(), "receiver", 0, &["--delay-ms", "20"]).await;
    create_rule(&collector, "lists", &receiver.url, &["--action", "quantum-computing.program.read", "--each"]);

    let url = runtime.url();
    let burst = tokio::spawn(async move {
        let mut client = ProgramServiceClient::new(lazy_channel(&url));
        let mut made = 0;
        while made < BURST {
            if client.list_programs(authed(runtime::ListProgramsRequest::default(), ALICE_KEY)).await.is_ok() {
                made += 1;
            }
        }
    });
    receiver.wait_for("the first deliveries of the burst", 5).await;
    // Firings 1..=recorded were committed before the kill (one rule, numbered densely), at least
    // ten of them not delivered yet.
    let recorded = wait_until("firings ahead of deliveries", Duration::from_secs(60), || async {
        let delivered = receiver.deliveries().len() as u64;
        let fired = collector.metric("qtrail_collector_alert_firings_total", &[("rule", "us-east/lists")]).await as u64;
        (fired >= delivered + 10).then_some(fired)
    })
    .await;
    assert!(!burst.is_finished(), "the kill lands during the burst");
    collector.process().kill();
    let delivered_before: HashSet<String> =
        receiver.deliveries().iter().map(|d| d["webhook_id"].as_str().unwrap().to_owned()).collect();
    collector.process().restart().await;
    burst.await.unwrap();

    // Each event's webhook-ids, over every delivery received.
    let notified = |deliveries: &[Value]| {
        let mut by_event: HashMap<String, HashSet<String>> = HashMap::new();
        for delivery in deliveries {
            for event in delivery["data"]["events"].as_array().unwrap() {
                let id = event["id"].as_str().unwrap().to_owned();
                by_event.entry(id).or_default().insert(delivery["webhook_id"].as_str().unwrap().to_owned());
            }
        }
        by_event
    };
    let deliveries = wait_until("every event delivered", Duration::from_secs(60), || async {
        let deliveries = receiver.deliveries();
        (notified(&deliveries).len() >= BURST).then_some(deliveries)
    })
    .await;
    let by_event = notified(&deliveries);
    assert_eq!(by_event.len(), BURST);
    assert!(by_event.values().all(|ids| ids.len() == 1), "an event was notified under two webhook-ids");
    // The restart path was exercised: a firing committed before the kill was delivered only
    // after the restart, under the webhook-id it was committed with.
    let ids: HashSet<&str> = deliveries.iter().map(|d| d["webhook_id"].as_str().unwrap()).collect();
    let watched = qtrail(&collector, AUDITOR_TOKEN, &["watch", "--from-start", "--count", &BURST.to_string()]);
    let after_restart: Vec<String> = watched
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|firing| firing["number"].as_u64().is_some_and(|number| number <= recorded))
        .map(|firing| firing["webhookId"].as_str().unwrap().to_owned())
        .filter(|id| !delivered_before.contains(id))
        .collect();
    assert!(!after_restart.is_empty(), "every firing before the kill was delivered before it: {recorded}");
    assert!(after_restart.iter().all(|id| ids.contains(id.as_str())), "{after_restart:?}");
    drop(runtime);
}

/// Sends a POST with a made-up signature to `addr` and returns the answer's status line.
async fn post_forged(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let request = format!(
        "POST /hook HTTP/1.1\r\nhost: {addr}\r\nwebhook-id: msg_forged\r\nwebhook-timestamp: {now}\r\n\
         webhook-signature: v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn qtrail_alerts_receive_refuses_forged_deliveries_and_prints_signed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, runtime) = start(dir.path(), &["--alert-retry-cap-secs", "1"]).await;
    let (addr_file, out) = (dir.path().join("receive.addr"), dir.path().join("receive.out"));
    let mut command = Command::new(binary("qtrail"));
    command
        .args(["alerts", "receive", "--listen", "127.0.0.1:0", "--secret", &secret(), "--count", "1", "--addr-file"])
        .arg(&addr_file)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null());
    let mut receive = Process::spawn("qtrail alerts receive", &mut command).unwrap();
    let addr = receive.wait_for_addr_file(&addr_file, START_TIMEOUT).await.unwrap();
    assert_eq!(post_forged(addr).await, "HTTP/1.1 401 Unauthorized");

    let each = ["--action", "quantum-computing.program.read", "--each"];
    create_rule(&collector, "reads", &format!("http://{addr}/"), &each);
    list_programs(&runtime, ALICE_KEY, 1).await;
    let status = receive.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(status.success(), "{status:?}");
    let printed: Value = serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert!(printed["webhookId"].as_str().unwrap().starts_with("msg_"), "{printed}");
    assert_eq!(printed["event"]["id"], printed["webhookId"]);
    assert_eq!(printed["event"]["type"], "com.qtrail.alert.fired");
    assert_eq!(printed["event"]["data"]["rule"], "reads");
}
