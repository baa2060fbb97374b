//! Hostile callers: a program that expands exponentially is refused without freezing anyone
//! else, an account cannot fill the job queue, and health says when calls cannot be served.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use qtrail_cadf::{Action, Severity};
use qtrail_proto::qtrail::runtime::v1 as pb;
use qtrail_proto::qtrail::runtime::v1::program_service_client::ProgramServiceClient;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::{ALICE, BELL, BOB, TestRuntime, WAIT, assert_audited, call};

/// A program slow enough to keep a job running for minutes: many shots of a 16-qubit circuit
/// with a mid-circuit measurement, so each shot is simulated anew.
const SLOW: &str = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[16];\ncreg c[16];\nh q;\nmeasure q[0] -> c[0];\nh q[0];\nmeasure q -> c;\n";

/// Gate `g<levels>` applies `U` 2^levels times: each level applies the previous one twice.
fn bomb(levels: usize) -> String {
    bomb_of(levels, "U(0,0,0) a; barrier a;")
}

/// Gate `g<levels>` applies `body` 2^levels times.
fn bomb_of(levels: usize, body: &str) -> String {
    let mut source = format!("OPENQASM 2.0;\nqreg q[1];\ngate g0 a {{ {body} }}\n");
    for level in 1..=levels {
        source.push_str(&format!("gate g{level} a {{ g{} a; g{} a; }}\n", level - 1, level - 1));
    }
    source.push_str(&format!("g{levels} q[0];\n"));
    source
}

/// Most a single call of the other principal may take before it counts as timed out.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_bomb_is_refused_while_other_principals_keep_their_latency() {
    let mut runtime = TestRuntime::start().await;
    let mut programs = runtime.programs().await;

    // The bomb of the issue is refused, and audited like any refused call. Made of barriers,
    // which the simulator has nothing to do for, it used to expand for ever.
    let (mut request, correlation) = call(
        pb::CreateProgramRequest { name: "bomb".into(), source: bomb_of(48, "barrier a;"), ..Default::default() },
        Some(ALICE),
    );
    request.set_timeout(CALL_DEADLINE);
    let refusing = Instant::now();
    let status = programs.create_program(request).await.unwrap_err();
    // Refused from the syntax tree, not after expanding a million operations first (which
    // takes many seconds in a debug build).
    assert!(refusing.elapsed() < Duration::from_secs(3), "the bomb took {:?} to refuse", refusing.elapsed());
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid source: expanded size of the program exceeds the limit of 1000000 operations"
    );
    assert_audited(&runtime, &[(&correlation, Action::ProgramCreate, 400, Severity::Warning, None, "acc-alice")]).await;
    // An update to a bomb is refused the same way and leaves the program as it was.
    let own = runtime.create_program("own", BELL, false).await;
    let (request, _) = call(
        pb::UpdateProgramRequest { id: own.id.clone(), source: Some(bomb(48)), ..Default::default() },
        Some(ALICE),
    );
    let status = programs.update_program(request).await.unwrap_err();
    assert!(status.message().contains("expanded size"), "{}", status.message());

    // Alice keeps bombing, creates and updates, from as many tasks as the box has cores and
    // more, while Bob's calls are measured.
    let stop = Arc::new(AtomicBool::new(false));
    let attackers = spawn_attackers(&runtime, &own.id, &stop).await;
    let mut latencies = bobs_call_latencies(&mut programs).await;
    stop.store(true, Ordering::Relaxed);
    let mut refused = 0;
    for attacker in attackers {
        refused += attacker.await.unwrap();
    }
    assert!(refused >= 4, "the bombs were in flight while bob called: {refused}");
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    assert!(p50 < Duration::from_millis(500), "bob's p50 under attack is {p50:?}: {latencies:?}");

    // A shutdown with bombs in flight drains promptly.
    let stop = Arc::new(AtomicBool::new(false));
    let flight = {
        let (stop, mut programs) = (stop.clone(), runtime.programs().await);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let request = pb::CreateProgramRequest { name: "late".into(), source: bomb(64), ..Default::default() };
                if programs
                    .create_program(call(request, Some(ALICE)).0)
                    .await
                    .is_err_and(|status| status.code() != Code::InvalidArgument)
                {
                    return;
                }
            }
        })
    };
    let stopping = Instant::now();
    runtime.stop().await.unwrap();
    assert!(stopping.elapsed() < CALL_DEADLINE, "shutdown took {:?}", stopping.elapsed());
    stop.store(true, Ordering::Relaxed);
    flight.await.unwrap();
}

/// Starts four tasks of Alice's that keep bombing, creates and updates of `own`, until
/// `stop`; each returns how many of its calls were refused.
async fn spawn_attackers(runtime: &TestRuntime, own: &str, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<u32>> {
    let mut attackers = Vec::new();
    for attacker in 0..4 {
        let (stop, mut programs, own) = (stop.clone(), runtime.programs().await, own.to_owned());
        attackers.push(tokio::spawn(async move {
            let mut refused = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let status = if attacker % 2 == 0 {
                    let request = pb::CreateProgramRequest {
                        name: format!("bomb-{attacker}"),
                        source: bomb(48 + attacker),
                        ..Default::default()
                    };
                    programs.create_program(call(request, Some(ALICE)).0).await.unwrap_err()
                } else {
                    let request =
                        pb::UpdateProgramRequest { id: own.clone(), source: Some(bomb(60)), ..Default::default() };
                    programs.update_program(call(request, Some(ALICE)).0).await.unwrap_err()
                };
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                refused += 1;
            }
            refused
        }));
    }

    attackers
}

/// Returns the latencies of 30 calls of Bob's, a third of them updates, each within
/// [`CALL_DEADLINE`].
async fn bobs_call_latencies(programs: &mut ProgramServiceClient<Channel>) -> Vec<Duration> {
    let bobs = {
        let (request, _) = call(
            pb::CreateProgramRequest { name: "bobs".into(), source: BELL.into(), ..Default::default() },
            Some(BOB),
        );
        programs.create_program(request).await.unwrap().into_inner()
    };
    let mut latencies = Vec::new();
    for round in 0..30 {
        let started = Instant::now();
        if round % 3 == 0 {
            let request = pb::UpdateProgramRequest {
                id: bobs.id.clone(),
                description: Some(format!("round {round}")),
                ..Default::default()
            };
            let mut request = call(request, Some(BOB)).0;
            request.set_timeout(CALL_DEADLINE);
            programs.update_program(request).await.expect("bob's update is served");
        } else {
            let mut request = call(pb::GetProgramRequest { id: bobs.id.clone() }, Some(BOB)).0;
            request.set_timeout(CALL_DEADLINE);
            programs.get_program(request).await.expect("bob's read is served");
        }
        latencies.push(started.elapsed());
    }
    latencies
}

async fn create_slow_job(runtime: &TestRuntime, program_id: &str, key: &str) -> Result<pb::Job, tonic::Status> {
    let params = serde_json::json!({"shots": 100_000});
    let request = pb::CreateJobRequest {
        program_id: program_id.into(),
        params: Some(qtrail_cadf::proto::struct_from_json(params.as_object().unwrap())),
        ..Default::default()
    };
    let (request, _) = call(request, Some(key));
    runtime.jobs().await.create_job(request).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_cannot_queue_more_than_its_quota_of_jobs() {
    let runtime = TestRuntime::start_with(true, |config| {
        config.max_concurrent_jobs = 1;
        config.max_jobs_per_account = 4;
        config.max_queued_jobs = 6;
    })
    .await;
    let (request, _) = call(
        pb::CreateProgramRequest { name: "slow".into(), source: SLOW.into(), is_public: true, ..Default::default() },
        Some(ALICE),
    );
    let slow = runtime.programs().await.create_program(request).await.unwrap().into_inner();
    let mut queued = Vec::new();
    for _ in 0..4 {
        queued.push(create_slow_job(&runtime, &slow.id, ALICE).await.unwrap());
    }

    let params = serde_json::json!({"shots": 100_000});
    let request = pb::CreateJobRequest {
        program_id: slow.id.clone(),
        params: Some(qtrail_cadf::proto::struct_from_json(params.as_object().unwrap())),
        ..Default::default()
    };
    let (request, correlation) = call(request, Some(ALICE));
    let status = runtime.jobs().await.create_job(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        "account has 4 jobs queued or running, the most it may have; wait for some to finish or cancel them"
    );
    assert_audited(&runtime, &[(&correlation, Action::JobCreate, 429, Severity::Warning, None, "acc-alice")]).await;

    // Another account is not held back by Alice's jobs.
    let bobs = create_slow_job(&runtime, &slow.id, BOB).await.unwrap();
    // A cancelled job gives its place back.
    let (request, _) = call(pb::CancelJobRequest { id: queued[2].id.clone() }, Some(ALICE));
    runtime.jobs().await.cancel_job(request).await.unwrap();
    queued.push(create_slow_job(&runtime, &slow.id, ALICE).await.unwrap());
    assert_eq!(
        create_slow_job(&runtime, &slow.id, ALICE).await.unwrap_err().code(),
        Code::ResourceExhausted,
        "and only that one"
    );

    // The queue as a whole is bounded too: Bob's second job fills it, his third is refused.
    let bobs_second = create_slow_job(&runtime, &slow.id, BOB).await.unwrap();
    let status = create_slow_job(&runtime, &slow.id, BOB).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::ResourceExhausted, "job queue is full with 6 jobs, try again later")
    );
    queued.push(bobs_second.clone());

    // Not left running for the rest of the suite.
    for job in queued.iter().chain([&bobs]) {
        let key = if job.id == bobs.id || job.id == bobs_second.id { BOB } else { ALICE };
        let (request, _) = call(pb::CancelJobRequest { id: job.id.clone() }, Some(key));
        let _ = runtime.jobs().await.cancel_job(request).await;
    }
}

async fn health_of(health: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
    health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_the_outbox_is_full() {
    let mut runtime = TestRuntime::start_with(false, |config| {
        config.outbox_max_events = 3;
        config.shutdown_flush_ms = 200;
    })
    .await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", runtime.addr)).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["qtrail.runtime.v1.ProgramService", "qtrail.runtime.v1.JobService"] {
        assert_eq!(health_of(&mut health, service).await, ServingStatus::Serving as i32);
    }
    let mut programs = runtime.programs().await;
    for _ in 0..3 {
        let (request, _) = call(pb::ListProgramsRequest::default(), Some(ALICE));
        programs.list_programs(request).await.unwrap();
    }
    let (request, _) = call(pb::ListProgramsRequest::default(), Some(ALICE));
    assert_eq!(programs.list_programs(request).await.unwrap_err().code(), Code::Unavailable);

    let not_serving = qtrail_server::poll::holds(WAIT, || {
        let mut health = health.clone();
        async move {
            health_of(&mut health, "qtrail.runtime.v1.ProgramService").await == ServingStatus::NotServing as i32
                && health_of(&mut health, "qtrail.runtime.v1.JobService").await == ServingStatus::NotServing as i32
        }
    })
    .await;
    assert!(not_serving, "a runtime that can only refuse calls says so");

    runtime.start_collector().await;
    let serving = qtrail_server::poll::holds(WAIT, || {
        let mut health = health.clone();
        async move { health_of(&mut health, "qtrail.runtime.v1.JobService").await == ServingStatus::Serving as i32 }
    })
    .await;
    assert!(serving, "serving again once the collector drained the outbox");
    let (request, _) = call(pb::ListProgramsRequest::default(), Some(ALICE));
    programs.list_programs(request).await.unwrap();
    runtime.stop().await.unwrap();
}
