//! Delivery: events survive restarts and a collector outage, a full outbox refuses every call
//! until it drains, shutdown flushes, and the server is ready when it says so.

use std::collections::HashSet;

use qtrail_proto::qtrail::runtime::v1 as pb;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::harness::{ALICE, BELL, BOB, TestRuntime, WAIT, call, wait_until};

/// Makes a mix of calls (successes and failures) and returns their correlation ids.
async fn some_calls(runtime: &TestRuntime) -> Vec<String> {
    let mut correlations = Vec::new();
    let mut programs = runtime.programs().await;
    let (request, correlation) =
        call(pb::CreateProgramRequest { name: "bell".into(), source: BELL.into(), ..Default::default() }, Some(ALICE));
    let program = programs.create_program(request).await.unwrap().into_inner();
    correlations.push(correlation);
    let (request, correlation) = call(pb::GetProgramRequest { id: program.id.clone() }, Some(ALICE));
    programs.get_program(request).await.unwrap();
    correlations.push(correlation);
    let (request, correlation) = call(pb::GetProgramRequest { id: program.id.clone() }, Some(BOB));
    assert_eq!(programs.get_program(request).await.unwrap_err().code(), Code::NotFound);
    correlations.push(correlation);
    let (request, correlation) = call(pb::ListProgramsRequest::default(), None);
    assert_eq!(programs.list_programs(request).await.unwrap_err().code(), Code::Unauthenticated);
    correlations.push(correlation);
    correlations
}

fn stored_correlations(runtime: &TestRuntime) -> Vec<String> {
    runtime.stub.stored().into_iter().map(|stored| stored.event.correlation_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_events_survive_a_restart_and_are_published_once() {
    let mut runtime = TestRuntime::start_with(false, |config| config.shutdown_flush_ms = 200).await;
    let mut correlations = some_calls(&runtime).await;
    runtime.stop().await.unwrap();
    assert!(runtime.stub.stored().is_empty(), "the collector was down");

    // Restarted on the same data directory, still without a collector, then the collector comes.
    runtime.restart().await;
    correlations.extend(some_calls_after_restart(&runtime).await);
    runtime.start_collector().await;
    assert!(runtime.stub.wait_for(WAIT, |stub| stub.stored().len() >= correlations.len()).await);

    let stored = stored_correlations(&runtime);
    assert_eq!(stored, correlations, "every event exactly once, in the order of the calls");
    let batches: usize = runtime.stub.batches().iter().map(|batch| batch.seqs.len()).sum();
    assert_eq!(batches, correlations.len(), "nothing was sent twice");
    let seqs: Vec<u64> = runtime.stub.stored().iter().map(|stored| stored.seq).collect();
    assert_eq!(seqs, (1..=correlations.len() as u64).collect::<Vec<_>>(), "a dense sequence across the restart");
    let publishers: HashSet<String> = runtime.stub.hellos().into_iter().map(|hello| hello.publisher_id).collect();
    assert_eq!(publishers.len(), 1, "the publisher id is persisted");
    assert!(publishers.iter().all(|id| id.starts_with("runtime-inst-test-")));
    runtime.stop().await.unwrap();
}

async fn some_calls_after_restart(runtime: &TestRuntime) -> Vec<String> {
    let (request, correlation) = call(pb::ListProgramsRequest::default(), Some(ALICE));
    let listed = runtime.programs().await.list_programs(request).await.unwrap().into_inner();
    assert_eq!(listed.count, 1, "state survived the restart too");
    vec![correlation]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stored_but_never_acknowledged_are_dropped_after_the_welcome_not_resent() {
    let mut runtime = TestRuntime::start_with(true, |config| config.shutdown_flush_ms = 200).await;
    runtime.stub.hold_acks(true);
    let correlations = some_calls(&runtime).await;
    assert!(runtime.stub.wait_for(WAIT, |stub| stub.stored().len() == correlations.len()).await);
    runtime.stop().await.unwrap();
    assert_eq!(outbox_depth(&runtime), correlations.len() as u64, "nothing was acknowledged");

    // The collector's Welcome says it has seq 1..=4 already: they leave the outbox unsent.
    runtime.stub.hold_acks(false);
    runtime.restart().await;
    assert!(runtime.stub.wait_for(WAIT, |stub| stub.hellos().len() == 2).await);
    assert_eq!(runtime.stub.hellos()[1].epoch, 1);
    runtime.stop().await.unwrap();
    assert_eq!(outbox_depth(&runtime), 0);
    let sent: usize = runtime.stub.batches().iter().map(|batch| batch.seqs.len()).sum();
    assert_eq!(sent, correlations.len(), "nothing was sent twice");
    assert_eq!(stored_correlations(&runtime), correlations);
}

/// Returns the number of events in a stopped runtime's outbox.
fn outbox_depth(runtime: &TestRuntime) -> u64 {
    let store = qtrail_runtime::store::Store::open(&runtime.data_dir()).unwrap();
    let outbox = qtrail_publisher::Outbox::open(
        store.database(),
        "runtime-inst-test",
        Default::default(),
        qtrail_publisher::CommitMode::Grouped,
    )
    .unwrap();
    outbox.depth().unwrap().events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_refuses_every_call_until_the_collector_drains_it() {
    let mut runtime = TestRuntime::start_with(false, |config| {
        config.outbox_max_events = 4;
        config.shutdown_flush_ms = 200;
    })
    .await;
    let accepted = some_calls(&runtime).await;
    let mut programs = runtime.programs().await;
    let mut jobs = runtime.jobs().await;

    // Reads, writes and even unauthenticated calls are refused: none could be audited.
    let (request, refused_read) = call(pb::ListProgramsRequest::default(), Some(ALICE));
    let status = programs.list_programs(request).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::Unavailable, "audit outbox full"));
    let (request, refused_write) =
        call(pb::CreateProgramRequest { name: "x".into(), source: BELL.into(), ..Default::default() }, Some(ALICE));
    assert_eq!(programs.create_program(request).await.unwrap_err().code(), Code::Unavailable);
    let (request, refused_anonymous) = call(pb::ListJobsRequest::default(), None);
    assert_eq!(jobs.list_jobs(request).await.unwrap_err().code(), Code::Unavailable);

    runtime.start_collector().await;
    let recovered = qtrail_server::poll::until(WAIT, || {
        let (request, correlation) = call(pb::ListProgramsRequest::default(), Some(ALICE));
        let mut programs = programs.clone();
        async move {
            match programs.list_programs(request).await {
                Ok(listed) => {
                    assert_eq!(listed.into_inner().count, 1, "the refused create changed nothing");
                    Some(correlation)
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable);
                    None
                }
            }
        }
    })
    .await
    .expect("the service recovers by itself once the outbox drains");
    runtime.event(&recovered).await;
    let stored = stored_correlations(&runtime);
    assert_eq!(stored[..accepted.len()], accepted[..]);
    for refused in [refused_read, refused_write, refused_anonymous] {
        assert!(!stored.contains(&refused), "a refused call has no event");
    }
    runtime.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_calls_and_flushes_the_outbox() {
    let mut runtime = TestRuntime::start().await;
    runtime.stub.hold_acks(true);
    let correlations = some_calls(&runtime).await;
    runtime.stub.hold_acks(false);
    runtime.stub.release_acks();
    runtime.stop().await.unwrap();
    assert_eq!(stored_correlations(&runtime), correlations);
    assert_eq!(outbox_depth(&runtime), 0, "acknowledged events left the outbox before exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_interrupted_by_a_restart_run_again() {
    let mut runtime = TestRuntime::start_with(true, |config| config.shutdown_flush_ms = 200).await;
    let slow = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[16];\ncreg c[16];\nh q;\nmeasure q[0] -> c[0];\nh q[0];\nmeasure q -> c;\n";
    let program = runtime.create_program("slow", slow, false).await;
    let params = qtrail_cadf::proto::struct_from_json(serde_json::json!({"shots": 100_000}).as_object().unwrap());
    let (request, _) =
        call(pb::CreateJobRequest { program_id: program.id, params: Some(params), ..Default::default() }, Some(ALICE));
    let job = runtime.jobs().await.create_job(request).await.unwrap().into_inner();
    let running = pb::JobStatus::Running as i32;
    assert!(wait_until(|| async { job_status(&runtime, &job.id).await == running }).await);
    runtime.restart().await;
    assert!(wait_until(|| async { job_status(&runtime, &job.id).await == running }).await, "running again");
    let (request, _) = call(pb::GetJobLogsRequest { id: job.id.clone() }, Some(ALICE));
    let logs = runtime.jobs().await.get_job_logs(request).await.unwrap().into_inner().logs;
    assert!(logs.contains("WARNING job interrupted by a service restart, queued again"), "{logs}");
    assert_eq!(logs.matches("INFO job started").count(), 2, "{logs}");
    let (request, _) = call(pb::CancelJobRequest { id: job.id.clone() }, Some(ALICE));
    runtime.jobs().await.cancel_job(request).await.unwrap();
    runtime.stop().await.unwrap();
}

async fn job_status(runtime: &TestRuntime, id: &str) -> i32 {
    let (request, _) = call(pb::GetJobRequest { id: id.into() }, Some(ALICE));
    runtime.jobs().await.get_job(request).await.unwrap().into_inner().state.unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_and_reflection_once_the_address_file_is_written() {
    let addr_file = tempfile::tempdir().unwrap();
    let path = addr_file.path().join("addr");
    let runtime = {
        let path = path.clone();
        TestRuntime::start_with(true, move |config| config.addr_file = Some(path)).await
    };
    assert!(wait_until(|| async { qtrail_server::addr_file::read(&path).unwrap().is_some() }).await);
    let addr = qtrail_server::addr_file::read(&path).unwrap().unwrap();
    assert_eq!(addr, runtime.addr);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "qtrail.runtime.v1.ProgramService", "qtrail.runtime.v1.JobService"] {
        let response =
            health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(
            response.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }

    use tonic_reflection::pb::v1 as reflection;
    let mut client = reflection::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = reflection::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(reflection::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut responses = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(reflection::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
    for expected in ["qtrail.runtime.v1.ProgramService", "qtrail.runtime.v1.JobService", "grpc.health.v1.Health"] {
        assert!(names.contains(&expected.to_owned()), "{names:?}");
    }

    use tonic_reflection::pb::v1alpha;
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut responses = alpha.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    assert!(responses.next().await.unwrap().is_ok(), "v1alpha answers too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_start_up_configuration_stops_run_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let principals = dir.path().join("principals.toml");
    std::fs::write(
        &principals,
        "[[principal]]\napi_key = \"k\"\niam_id = \"i\"\nname = \"n\"\naccount = \"bad:account\"\n",
    )
    .unwrap();
    let config =
        qtrail_runtime::Config::for_test(dir.path().join("data"), principals.clone(), "http://127.0.0.1:1".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = qtrail_runtime::run(listener, config.clone(), std::future::pending()).await.unwrap_err();
    assert!(err.to_string().contains("principal 1: account"), "{err:#}");

    let mut bad_instance = config;
    bad_instance.instance = "has space".into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = qtrail_runtime::run(listener, bad_instance, std::future::pending()).await.unwrap_err();
    assert!(err.to_string().starts_with("invalid --account or --instance"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_event_cannot_be_recorded_fails_unavailable_and_changes_nothing() {
    use qtrail_runtime::audit::Auditor;
    use qtrail_runtime::auth::{CallContext, Caller, Principal};
    use qtrail_runtime::service::RuntimeService;

    let dir = tempfile::tempdir().unwrap();
    let store = qtrail_runtime::store::Store::open(dir.path()).unwrap();
    let outbox = qtrail_publisher::Outbox::open(
        store.database(),
        "runtime-test",
        Default::default(),
        qtrail_publisher::CommitMode::Grouped,
    )
    .unwrap();
    let executor = qtrail_runtime::executor::Executor::start(store.clone(), 1);
    let location: qtrail_cadf::Location = "us-east".parse().unwrap();
    // An instance id no CRN can hold: every event of this service fails to build.
    let broken = RuntimeService::new(
        store.clone(),
        outbox.clone(),
        Auditor::new(location.clone(), "bad:instance".into(), "qtrail".into()),
        executor.clone(),
    );
    let working = RuntimeService::new(
        store,
        outbox.clone(),
        Auditor::new(location, "inst".into(), "qtrail".into()),
        executor.clone(),
    );
    let alice = CallContext::for_test(Caller::Principal(Principal {
        iam_id: "IBMid-alice".into(),
        name: "alice".into(),
        account: "acc-alice".into(),
    }));

    let create = pb::CreateProgramRequest { name: "bell".into(), source: BELL.into(), ..Default::default() };
    let err = broken.settle(broken.create_program(&alice, create)).await.unwrap_err();
    assert_eq!(tonic::Status::from(err).message(), "audit log unavailable");
    let listed = working.settle(working.list_programs(&alice, pb::ListProgramsRequest::default())).await.unwrap();
    assert_eq!(listed.count, 0, "the program was not created without its event");
    assert_eq!(outbox.depth().unwrap().events, 1, "only the working service's list left an event");
    executor.shutdown().await;
}

/// Returns the value of metric `name` of the runtime whose publisher id starts with
/// `runtime-inst-metrics-` in the Prometheus text. Other tests' runtimes in this process report
/// into the same registry under their own publisher label.
fn metric(text: &str, name: &str) -> Option<f64> {
    let prefix = format!("{name}{{publisher=\"runtime-inst-metrics-");
    text.lines().filter(|line| line.starts_with(&prefix)).find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_outbox_filling_and_draining() {
    let prometheus = qtrail_server::http::prometheus();
    let mut runtime = TestRuntime::start_with(false, |config| config.instance = "inst-metrics".into()).await;
    let correlations = some_calls(&runtime).await;
    let waiting = correlations.len() as f64;
    let filled = wait_until(|| {
        let text = prometheus.render();
        let filled = metric(&text, "qtrail_runtime_outbox_events") == Some(waiting)
            && metric(&text, "qtrail_runtime_outbox_oldest_age_seconds").is_some()
            && metric(&text, "qtrail_runtime_publisher_connected") == Some(0.0);
        std::future::ready(filled)
    })
    .await;
    assert!(filled, "the outbox depth in /metrics: {}", prometheus.render());

    runtime.start_collector().await;
    let drained = wait_until(|| {
        let text = prometheus.render();
        let drained = metric(&text, "qtrail_runtime_outbox_events") == Some(0.0)
            && metric(&text, "qtrail_runtime_events_acked_total").is_some_and(|acked| acked >= waiting)
            && metric(&text, "qtrail_runtime_publisher_connected") == Some(1.0);
        std::future::ready(drained)
    })
    .await;
    assert!(drained, "the outbox draining in /metrics: {}", prometheus.render());
    let text = prometheus.render();
    assert_eq!(metric(&text, "qtrail_runtime_outbox_capacity_events"), Some(100_000.0));
    let free = metric(&text, "qtrail_runtime_disk_free_bytes").unwrap_or_default();
    let size = metric(&text, "qtrail_runtime_disk_size_bytes").unwrap_or_default();
    assert!(free > 0.0 && free <= size, "the data dir's disk: {free} of {size}");
    assert!(text.contains("qtrail_runtime_calls_refused_total{publisher=\"runtime-inst-metrics-"), "{text}");
    runtime.stop().await.unwrap();
}

/// A client of the HTTP side that never finishes its request (here: headers without their end)
/// cannot hold the runtime's exit: after a bounded drain the connection is closed and `run`
/// returns, well before that request's own 30 s header timeout would end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http_client_does_not_hold_the_shutdown() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut runtime = TestRuntime::start_with(true, |config| {
        config.http = Some("127.0.0.1:0".parse().unwrap());
        config.http_addr_file = Some(config.data_dir.with_extension("http-addr"));
    })
    .await;
    let addr_file = runtime.config.http_addr_file.clone().unwrap();
    let written =
        wait_until(|| std::future::ready(qtrail_server::addr_file::read(&addr_file).ok().flatten().is_some()));
    assert!(written.await, "the http address file is written");
    let http_addr = qtrail_server::addr_file::read(&addr_file).unwrap().unwrap();
    let mut stalled = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    stalled.write_all(b"GET /metrics HTTP/1.1\r\nhost: qtrail\r\n").await.unwrap();

    let stopped = tokio::time::timeout(std::time::Duration::from_secs(20), runtime.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "run returns: {stopped:?}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, stalled.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(_)) | Ok(Err(_))), "the stalled connection is closed");
    assert!(rest.is_empty() || !rest.starts_with(b"HTTP/1.1 200"), "it was never answered");
}
