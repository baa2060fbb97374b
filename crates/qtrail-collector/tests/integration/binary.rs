//! The real `qtrail-collector` binary: flags, address file, readiness, SIGTERM and a bad tokens
//! file.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ADMIN, AUDITOR, PUBLISHER, authed};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_testkit::{Process, Signal};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const BINARY: &str = env!("CARGO_BIN_EXE_qtrail-collector");

fn write_tokens(path: &Path, role: &str) {
    let text = format!(
        "[[token]]\ntoken = \"{ADMIN}\"\nrole = \"{role}\"\nname = \"ops\"\n\n[[token]]\ntoken = \"p\"\nrole = \"publisher\"\nname = \"rt\"\nlocations = [\"us-east\"]\n"
    );
    std::fs::write(path, text).unwrap();
}

/// Waits until `process`, started in `dir`, has written its address file (failing at once
/// should it exit first), and connects.
pub async fn connect(process: &mut Process, dir: &Path) -> tonic::transport::Channel {
    let addr =
        process.wait_for_addr_file(&dir.join("addr"), Duration::from_secs(30)).await.expect("address file written");
    tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

/// Sends SIGTERM and returns the exit status once the process has exited.
pub async fn terminate(process: &mut Process) -> std::process::ExitStatus {
    process.stop(Signal::SIGTERM, Duration::from_secs(30)).await.expect("exits after sigterm")
}

/// Starts the collector from `command`, killed when the test ends.
pub fn spawn(command: &mut Command) -> Process {
    Process::spawn("qtrail-collector", command).unwrap()
}

pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--tokens")
        .arg(dir.join("tokens.toml"))
        .arg("--addr-file")
        .arg(dir.join("addr"))
        .env_remove("RUST_LOG");
    command
}

#[tokio::test]
async fn serves_until_sigterm_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    write_tokens(&dir.path().join("tokens.toml"), "admin");
    let mut process = spawn(command(dir.path()).stdout(Stdio::null()).stderr(Stdio::null()));
    let channel = connect(&mut process, dir.path()).await;
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: "qtrail.audit.v1.Ingest".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);
    let mut admin = proto::collector_admin_client::CollectorAdminClient::new(channel);
    admin.create_collector(authed(proto::CreateCollectorRequest { location: "us-east".into() }, ADMIN)).await.unwrap();

    let status = terminate(&mut process).await;
    assert!(status.success(), "{status:?}");

    // The collector is still there after a restart from the same flags.
    let _ = std::fs::remove_file(dir.path().join("addr"));
    let mut restarted = spawn(command(dir.path()).stdout(Stdio::null()).stderr(Stdio::null()));
    let channel = connect(&mut restarted, dir.path()).await;
    let mut admin = proto::collector_admin_client::CollectorAdminClient::new(channel);
    let again =
        admin.create_collector(authed(proto::CreateCollectorRequest { location: "us-east".into() }, ADMIN)).await;
    assert_eq!(again.unwrap_err().code(), tonic::Code::AlreadyExists);
}

#[tokio::test]
async fn the_http_flag_serves_the_console_and_metrics_next_to_grpc() {
    let dir = tempfile::tempdir().unwrap();
    write_tokens(&dir.path().join("tokens.toml"), "admin");
    let http_addr_file = dir.path().join("http.addr");
    let mut command = command(dir.path());
    // The environment variable is what `qtrail up` and service managers use.
    command.env("QTRAIL_COLLECTOR_HTTP", "127.0.0.1:0").arg("--http-addr-file").arg(&http_addr_file);
    let mut process = spawn(command.stdout(Stdio::null()).stderr(Stdio::null()));
    let channel = connect(&mut process, dir.path()).await;
    // Written before the gRPC address file, so whoever waits for that one finds both.
    let http_addr = qtrail_server::addr_file::read(&http_addr_file).unwrap().expect("the http address");
    let client = common::http::HttpClient::new(http_addr);
    assert_eq!(client.get("/healthz").await.body, "ok\n");
    let mut admin = proto::collector_admin_client::CollectorAdminClient::new(channel);
    admin.create_collector(authed(proto::CreateCollectorRequest { location: "us-east".into() }, ADMIN)).await.unwrap();
    let metrics = client.get("/metrics").await.body;
    assert!(metrics.contains("qtrail_collector_events_stored{location=\"us-east\"} 0"), "{metrics}");
    let page = client.get("/").await;
    assert!(page.body.contains("qtrail console") && page.header("content-security-policy").contains("'self'"));
    assert_eq!(client.get("/api/collectors").await.status, 401);

    // A taken HTTP port stops start-up and says which.
    let second = tempfile::tempdir().unwrap();
    write_tokens(&second.path().join("tokens.toml"), "admin");
    let output = self::command(second.path()).arg("--http").arg(http_addr.to_string()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("failed to listen for http on {http_addr}")), "{stderr}");
    assert!(!second.path().join("addr").exists());
}

#[test]
fn a_bad_tokens_file_stops_start_up_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    write_tokens(&dir.path().join("tokens.toml"), "root");
    let output = command(dir.path()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tokens.toml") && stderr.contains("line 3"), "{stderr}");
    assert!(!stderr.contains(ADMIN), "secret leaked: {stderr}");
    assert!(!dir.path().join("addr").exists());
}

#[test]
fn bad_tls_files_stop_start_up_naming_the_file_and_never_serve_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    write_tokens(&dir.path().join("tokens.toml"), "admin");
    let pki = qtrail_server::tls::testing::TestPki::create(&dir.path().join("pki"), "qtrail test");
    let missing = dir.path().join("missing.pem");

    let output =
        command(dir.path()).arg("--tls-cert").arg(&missing).arg("--tls-key").arg(&pki.server_key).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("failed to set up tls") && stderr.contains("missing.pem"), "{stderr}");
    assert!(!dir.path().join("addr").exists(), "nothing listened");

    // A key that is not the certificate's.
    let output = command(dir.path())
        .arg("--tls-cert")
        .arg(&pki.server_cert)
        .arg("--tls-key")
        .arg(&pki.client_key)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not belong to the certificate"), "{stderr}");
    assert!(!dir.path().join("addr").exists(), "nothing listened");

    // Half a configuration is refused by the flags themselves.
    let output = command(dir.path()).arg("--tls-client-ca").arg(&pki.ca).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    // Binding publishers to client certificates without mutual TLS, too.
    let output = command(dir.path())
        .args(["--tls-cert"])
        .arg(&pki.server_cert)
        .arg("--tls-key")
        .arg(&pki.server_key)
        .arg("--bind-publishers-to-client-cert")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tls-client-ca"), "{stderr}");
    assert!(!dir.path().join("addr").exists(), "nothing listened");
}

/// With `--bind-publishers-to-client-cert` (here from its environment variable), a stream with
/// the right token but another client certificate than the one a publisher id is bound to is
/// refused, and the refusal is in the access log naming both identities, never the token.
#[tokio::test]
async fn a_stream_of_another_client_certificate_is_refused_in_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    write_tokens(&dir.path().join("tokens.toml"), "admin");
    let pki = qtrail_server::tls::testing::TestPki::create(&dir.path().join("pki"), "qtrail test");
    let log = std::fs::File::create(dir.path().join("log.jsonl")).unwrap();
    let mut command = command(dir.path());
    command.arg("--log-json").arg("--tls-cert").arg(&pki.server_cert).arg("--tls-key").arg(&pki.server_key);
    command.arg("--tls-client-ca").arg(&pki.ca).env("QTRAIL_COLLECTOR_BIND_PUBLISHERS_TO_CLIENT_CERT", "true");
    let mut process = spawn(command.stdout(Stdio::null()).stderr(log));
    let addr = process.wait_for_addr_file(&dir.path().join("addr"), Duration::from_secs(30)).await;
    let url = format!("https://localhost:{}", addr.expect("address file written").port());
    let connect = |tls: qtrail_server::tls::ClientTls| {
        let endpoint = tls.endpoint(&url).unwrap();
        async move { endpoint.connect().await.unwrap() }
    };
    let first = connect(pki.client(true)).await;
    let mut admin = proto::collector_admin_client::CollectorAdminClient::new(first.clone());
    admin.create_collector(authed(proto::CreateCollectorRequest { location: "us-east".into() }, ADMIN)).await.unwrap();

    let request = |kind| proto::PublishRequest { kind: Some(kind) };
    let hello = request(proto::publish_request::Kind::Hello(proto::Hello {
        publisher_id: "pub-1".into(),
        location: "us-east".into(),
        epoch: 1,
    }));
    let batch = request(proto::publish_request::Kind::Batch(proto::Batch {
        batch_seq: 1,
        events: common::published(&common::events("us-east", 0, 1), 1),
    }));
    let mut ingest = proto::ingest_client::IngestClient::new(first);
    let stream = tokio_stream::iter([hello.clone(), batch]);
    let mut answers = ingest.publish(authed(stream, "p")).await.unwrap().into_inner();
    answers.message().await.unwrap().expect("welcome");
    let ack = answers.message().await.unwrap().expect("ack");
    assert!(matches!(ack.kind, Some(proto::publish_response::Kind::Ack(proto::Ack { accepted: 1, .. }))), "{ack:?}");

    let other = qtrail_server::tls::ClientTls {
        ca: Some(pki.ca.clone()),
        cert: Some(pki.other_client_cert.clone()),
        key: Some(pki.other_client_key.clone()),
    };
    let mut ingest = proto::ingest_client::IngestClient::new(connect(other).await);
    let mut answers = ingest.publish(authed(tokio_stream::iter([hello]), "p")).await.unwrap().into_inner();
    let status = answers.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    terminate(&mut process).await;
    let text = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    let refused: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "qtrail::access" && line["fields"]["message"] == "call refused")
        .map(|line| line["fields"].clone())
        .collect();
    assert_eq!(refused.len(), 1, "{text}");
    let fields: Vec<&str> =
        ["token", "call", "location", "reason"].iter().map(|field| refused[0][field].as_str().unwrap()).collect();
    assert_eq!(fields[..3], ["rt", "Publish", "us-east"]);
    assert_eq!(fields[3], status.message());
    assert!(
        status.message().starts_with("publisher `pub-1` is bound to token `rt@cert:sha256:"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("`, not `rt@cert:sha256:"), "{}", status.message());
    assert!(!text.contains(ADMIN), "no token in the log");
}

/// Reads of the audit trail, over gRPC or the console, and calls refused for their token (also a
/// Publish stream for a location its token does not name) leave a line each in the access log
/// (JSON with `--log-json`): the token's name, the call and the location, never the token.
#[tokio::test]
async fn reads_and_refusals_are_in_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = format!(
        "[[token]]\ntoken = \"{ADMIN}\"\nrole = \"admin\"\nname = \"ops\"\n\n\
         [[token]]\ntoken = \"{AUDITOR}\"\nrole = \"auditor\"\nname = \"alice\"\n\n\
         [[token]]\ntoken = \"{PUBLISHER}\"\nrole = \"publisher\"\nname = \"rt-eu-de\"\nlocations = [\"eu-de\"]\n"
    );
    std::fs::write(dir.path().join("tokens.toml"), tokens).unwrap();
    let log = std::fs::File::create(dir.path().join("log.jsonl")).unwrap();
    let http_addr_file = dir.path().join("http.addr");
    let mut command = command(dir.path());
    command.args(["--log-json", "--http", "127.0.0.1:0"]).arg("--http-addr-file").arg(&http_addr_file);
    let mut process = spawn(command.stdout(Stdio::null()).stderr(log));
    let channel = connect(&mut process, dir.path()).await;
    let mut admin = proto::collector_admin_client::CollectorAdminClient::new(channel.clone());
    admin.create_collector(authed(proto::CreateCollectorRequest { location: "us-east".into() }, ADMIN)).await.unwrap();
    let mut query = proto::event_query_client::EventQueryClient::new(channel);
    let request = proto::QueryEventsRequest { location: "us-east".into(), ..Default::default() };
    query.query_events(authed(request.clone(), AUDITOR)).await.unwrap();
    let verify = proto::VerifyChainRequest { location: "us-east".into(), range: None };
    query.verify_chain(authed(verify, AUDITOR)).await.unwrap();
    assert_eq!(query.query_events(authed(request, ADMIN)).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    let http_addr = qtrail_server::addr_file::read(&http_addr_file).unwrap().unwrap();
    assert_eq!(common::http::HttpClient::new(http_addr).sign_in("not-a-token").await.status, 401);
    let mut console = common::http::HttpClient::new(http_addr);
    assert_eq!(console.sign_in(AUDITOR).await.status, 200);
    assert_eq!(console.get("/api/locations/us-east/events").await.status, 200);
    let hello = proto::Hello { publisher_id: "p".into(), location: "us-east".into(), epoch: 1 };
    let hello = proto::PublishRequest { kind: Some(proto::publish_request::Kind::Hello(hello)) };
    let mut ingest = proto::ingest_client::IngestClient::new(connect(&mut process, dir.path()).await);
    let mut answers = ingest.publish(authed(tokio_stream::iter([hello]), PUBLISHER)).await.unwrap().into_inner();
    assert_eq!(answers.message().await.unwrap_err().code(), tonic::Code::PermissionDenied);

    terminate(&mut process).await;
    let text = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    let access: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "qtrail::access")
        .map(|line| line["fields"].clone())
        .collect();
    let reads: Vec<(&str, &str, &str)> = access
        .iter()
        .filter(|fields| fields["message"] == "audit trail read")
        .map(|fields| {
            (fields["token"].as_str().unwrap(), fields["call"].as_str().unwrap(), fields["location"].as_str().unwrap())
        })
        .collect();
    let expected = [
        ("alice", "QueryEvents", "us-east"),
        ("alice", "VerifyChain", "us-east"),
        ("alice", "console GET /api/locations/us-east/events", "us-east"),
    ];
    assert_eq!(reads, expected, "{text}");
    let (console_refused, refused): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) = access
        .iter()
        .filter(|fields| fields["message"] == "call refused")
        .partition(|fields| fields["reason"].as_str().is_some_and(|reason| reason.starts_with("console")));
    assert_eq!(console_refused.len(), 1, "{text}");
    assert_eq!(console_refused[0]["reason"], "console sign-in with an unknown token");
    assert_eq!(refused.len(), 2, "{text}");
    assert_eq!(refused[0]["needed_role"], "auditor");
    assert_eq!(refused[0]["reason"], "token `ops` has role `admin`, this service needs role `auditor`");
    let publish: Vec<&str> =
        ["token", "call", "location", "reason"].iter().map(|field| refused[1][field].as_str().unwrap()).collect();
    assert_eq!(publish, ["rt-eu-de", "Publish", "us-east", "token `rt-eu-de` may not publish to location `us-east`"]);
    assert!(!text.contains(ADMIN) && !text.contains(AUDITOR) && !text.contains(PUBLISHER), "no token in the log");
}
