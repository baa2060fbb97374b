//! The `qtrail-runtime` binary: flags and environment, the address files, health, metrics, and
//! a clean exit on SIGTERM, with the collector token nowhere in its output.

use std::process::{Command, Stdio};
use std::time::Duration;

use qtrail_server::poll;
use qtrail_testkit::{Process, Signal, http_get};

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "collector-secret-token";

/// Returns the binary's command with one principal (api key `k`), its data in `dir`, its address
/// to `addr_file`, and a collector address nothing listens on: events wait in the outbox.
fn runtime_command(dir: &std::path::Path, addr_file: &std::path::Path) -> Command {
    let principals = dir.join("principals.toml");
    std::fs::write(
        &principals,
        "[[principal]]\napi_key = \"k\"\niam_id = \"IBMid-1\"\nname = \"n\"\naccount = \"acc\"\n",
    )
    .unwrap();
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_qtrail-runtime"));
    command
        .args(["--listen", "127.0.0.1:0", "--location", "us-east", "--instance", "inst-bin"])
        .arg("--collector")
        .arg(format!("http://{collector}"))
        .arg("--principals")
        .arg(&principals)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--addr-file")
        .arg(addr_file)
        .args(["--shutdown-flush-ms", "200"]);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_until_sigterm_then_exits_zero_without_leaking_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("addr");
    let http_addr_file = dir.path().join("http-addr");
    let mut command = runtime_command(dir.path(), &addr_file);
    command.args(["--http", "127.0.0.1:0", "--http-addr-file"]).arg(&http_addr_file);
    command.env("QTRAIL_COLLECTOR_TOKEN", TOKEN).env("RUST_LOG", "debug");
    let mut runtime = Process::spawn("qtrail-runtime", command.stdout(Stdio::null()).stderr(Stdio::piped())).unwrap();

    let addr = runtime.wait_for_addr_file(&addr_file, WAIT).await.expect("no address file");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let response = health
        .check(tonic_health::pb::HealthCheckRequest { service: "qtrail.runtime.v1.JobService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    // The HTTP address file is written before the gRPC one; the outbox's bound is in /metrics.
    let http = qtrail_server::addr_file::read(&http_addr_file).unwrap().expect("http address file written first");
    let (status, metrics) = poll::until(WAIT, || async move {
        let (status, text) = http_get(&format!("http://{http}/metrics")).await;
        text.contains("qtrail_runtime_outbox_capacity_events{publisher=").then_some((status, text))
    })
    .await
    .expect("no outbox metrics");
    assert_eq!(status, 200, "{metrics}");
    assert!(!metrics.contains(TOKEN));

    let status = runtime.stop(Signal::SIGTERM, WAIT).await.expect("no exit after sigterm");
    assert!(status.success(), "{status:?}");
    let stderr = runtime.read_stderr();
    assert!(stderr.contains("runtime serving"), "{stderr}");
    assert!(stderr.contains("shutdown signal received"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "the collector token never reaches a log");
}

#[test]
fn a_missing_flag_is_reported_with_its_environment_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_qtrail-runtime")).args(["--location", "us-east"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--instance"), "{stderr}");
    let help = Command::new(env!("CARGO_BIN_EXE_qtrail-runtime")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "QTRAIL_COLLECTOR_TOKEN",
        "--max-concurrent-jobs",
        "--outbox-max-events",
        "--outbox-max-bytes",
        "--log-json",
        "--account",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

/// Returns a request with the API key of the principal `k`.
fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", "Bearer k".parse().unwrap());
    request
}

/// Gate `g<levels>` applies a barrier 2^levels times.
fn bomb(levels: usize) -> String {
    let mut source = String::from("OPENQASM 2.0;\nqreg q[1];\ngate g0 a { barrier a; }\n");
    for level in 1..=levels {
        source.push_str(&format!("gate g{level} a {{ g{} a; g{} a; }}\n", level - 1, level - 1));
    }
    source.push_str(&format!("g{levels} q[0];\n"));
    source
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_with_bombs_and_a_wide_job_in_flight_drains_promptly() {
    use qtrail_proto::qtrail::runtime::v1 as pb;

    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("addr");
    let mut command = runtime_command(dir.path(), &addr_file);
    let mut runtime = Process::spawn("qtrail-runtime", command.stdout(Stdio::null()).stderr(Stdio::piped())).unwrap();
    let addr = runtime.wait_for_addr_file(&addr_file, WAIT).await.expect("no address file");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut programs = pb::program_service_client::ProgramServiceClient::new(channel.clone());
    let mut jobs = pb::job_service_client::JobServiceClient::new(channel.clone());

    // A job over 20 qubits with a mid-circuit measurement: every shot is simulated in full.
    let wide = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[20];\ncreg c[20];\nh q;\nmeasure q[0] -> c[0];\nh q;\nh q;\nh q;\nmeasure q -> c;\n";
    let program = programs
        .create_program(authorized(pb::CreateProgramRequest {
            name: "wide".into(),
            source: wide.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let job = jobs
        .create_job(authorized(pb::CreateJobRequest { program_id: program.id, ..Default::default() }))
        .await
        .unwrap();
    let job_id = job.into_inner().id;
    let running = poll::holds(WAIT, || {
        let mut jobs = jobs.clone();
        let request = authorized(pb::GetJobRequest { id: job_id.clone() });
        async move {
            jobs.get_job(request).await.unwrap().into_inner().state.unwrap().status == pb::JobStatus::Running as i32
        }
    })
    .await;
    assert!(running, "the wide job started");

    let mut bombers = Vec::new();
    for _ in 0..3 {
        let mut programs = programs.clone();
        let request = move || {
            authorized(pb::CreateProgramRequest { name: "bomb".into(), source: bomb(48), ..Default::default() })
        };
        bombers.push(tokio::spawn(async move {
            // Refused until the runtime goes away.
            while let Err(status) = programs.create_program(request()).await {
                if status.code() != tonic::Code::InvalidArgument {
                    return;
                }
            }
        }));
    }

    let interrupted = std::time::Instant::now();
    let status = runtime.stop(Signal::SIGINT, WAIT).await.expect("no exit after sigint");
    assert!(status.success(), "{status:?}");
    // Generous for a debug build on a busy machine; a hung drain never ends.
    assert!(interrupted.elapsed() < Duration::from_secs(20), "drained in {:?}", interrupted.elapsed());
    for bomber in bombers {
        bomber.await.unwrap();
    }
    let stderr = runtime.read_stderr();
    assert!(stderr.contains("runtime stopped"), "{stderr}");
}
