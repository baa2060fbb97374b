//! JobService: every RPC's success and failure paths, the job lifecycle on the simulator, and
//! the exact audit event of each call.

use qtrail_cadf::proto::struct_from_json;
use qtrail_cadf::{Action, Severity};
use qtrail_proto::qtrail::runtime::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::harness::{ALICE, BELL, BOB, TestRuntime, assert_audited, assert_codes, call, wait_until};

/// Mid-circuit measurement forces shot-by-shot simulation of 16 qubits: far longer than a
/// second for 100 000 shots.
const SLOW: &str = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[16];\ncreg c[16];\nh q;\nmeasure q[0] -> c[0];\nh q[0];\nmeasure q -> c;\n";

fn params(value: serde_json::Value) -> Option<prost_types::Struct> {
    Some(struct_from_json(value.as_object().unwrap()))
}

async fn create_job(runtime: &TestRuntime, request: pb::CreateJobRequest, key: &str) -> pb::Job {
    let (request, _) = call(request, Some(key));
    runtime.jobs().await.create_job(request).await.unwrap().into_inner()
}

async fn status_of(runtime: &TestRuntime, id: &str) -> pb::Job {
    let (request, _) = call(pb::GetJobRequest { id: id.into() }, Some(ALICE));
    runtime.jobs().await.get_job(request).await.unwrap().into_inner()
}

async fn wait_for_status(runtime: &TestRuntime, id: &str, status: pb::JobStatus) -> pb::Job {
    let reached = wait_until(|| async { status_of(runtime, id).await.state.unwrap().status == status as i32 }).await;
    assert!(reached, "job {id} never reached {status:?}");
    status_of(runtime, id).await
}

/// Returns the target of an event about `job`.
fn target(job: &pb::Job) -> Option<(&'static str, &str)> {
    Some(("job", job.id.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_to_completion_with_results_interim_results_and_logs() {
    let runtime = TestRuntime::start().await;
    let program = runtime.create_program("bell", BELL, false).await;
    let mut client = runtime.jobs().await;
    let request = pb::CreateJobRequest {
        program_id: program.id.clone(),
        params: params(json!({"shots": 2000, "seed": 42})),
        log_level: "DEBUG".into(),
        tags: vec!["exp-1".into()],
        ..Default::default()
    };
    let (request, created) = call(request, Some(ALICE));
    let job = client.create_job(request).await.unwrap().into_inner();
    assert_eq!(job.backend, "simulator_statevector");
    assert_eq!(job.session_id, job.id, "a job without a session is its own session");
    let event = runtime.event(&created).await;
    assert_eq!(event.request_data.as_ref().unwrap()["params"], json!({"shots": 2000, "seed": 42}));
    assert_eq!(event.request_data.as_ref().unwrap()["programId"], json!(program.id));

    let done = wait_for_status(&runtime, &job.id, pb::JobStatus::Completed).await;
    assert!(done.start_time.is_some() && done.end_time.is_some());
    let (request, read) = call(pb::GetJobRequest { id: job.id.clone() }, Some(ALICE));
    let fetched = client.get_job(request).await.unwrap().into_inner();
    assert_eq!((fetched.log_level.as_str(), fetched.tags.as_slice()), ("DEBUG", ["exp-1".to_owned()].as_slice()));
    let event = runtime.event(&read).await;
    assert_eq!(event.message, format!("Qiskit Runtime: read job {}", job.id));
    assert_eq!(event.response_data.as_ref().unwrap()["status"], json!("COMPLETED"));

    let (request, results_read) =
        call(pb::GetJobResultsRequest { id: job.id.clone(), ..Default::default() }, Some(ALICE));
    let results = client.get_job_results(request).await.unwrap().into_inner();
    assert_eq!((results.shots, results.seed), (2000, 42));
    let mut keys: Vec<&String> = results.counts.keys().collect();
    keys.sort();
    assert_eq!(keys, ["00", "11"]);
    assert_eq!(results.counts.values().sum::<u32>(), 2000);

    let (request, interim_read) = call(pb::GetJobInterimResultsRequest { id: job.id.clone() }, Some(ALICE));
    let interim = client.get_job_interim_results(request).await.unwrap().into_inner();
    let done_shots: Vec<u32> = interim.results.iter().map(|result| result.shots_done).collect();
    assert_eq!(done_shots, [500, 1000, 1500, 2000]);
    assert_eq!(runtime.event(&interim_read).await.action, Action::JobRead);

    let (request, logs_read) = call(pb::GetJobLogsRequest { id: job.id.clone() }, Some(ALICE));
    let logs = client.get_job_logs(request).await.unwrap().into_inner().logs;
    assert!(logs.contains("INFO job queued"), "{logs}");
    assert!(logs.contains("DEBUG sampling seed 42"), "{logs}");
    assert!(logs.contains("INFO job completed"), "{logs}");
    assert_codes(&runtime, &[(&logs_read, 200)]).await;

    let id = target(&job);
    assert_audited(
        &runtime,
        &[
            (&created, Action::JobCreate, 201, Severity::Normal, id, "acc-alice"),
            (&read, Action::JobRead, 200, Severity::Normal, id, "acc-alice"),
            (&results_read, Action::JobRead, 200, Severity::Normal, id, "acc-alice"),
        ],
    )
    .await;
    seeds_decide_the_counts(&runtime, &program, &results).await;
}

/// The same seed gives the same counts; without a seed one is picked and reported.
async fn seeds_decide_the_counts(runtime: &TestRuntime, program: &pb::Program, results: &pb::JobResults) {
    let mut client = runtime.jobs().await;
    // The same seed gives the same counts.
    let again = create_job(
        runtime,
        pb::CreateJobRequest {
            program_id: program.id.clone(),
            params: params(json!({"shots": 2000, "seed": 42})),
            ..Default::default()
        },
        ALICE,
    )
    .await;
    wait_for_status(runtime, &again.id, pb::JobStatus::Completed).await;
    let (request, _) = call(pb::GetJobResultsRequest { id: again.id.clone(), ..Default::default() }, Some(ALICE));
    assert_eq!(client.get_job_results(request).await.unwrap().into_inner().counts, results.counts);

    // Without a seed one is picked and reported.
    let unseeded =
        create_job(runtime, pb::CreateJobRequest { program_id: program.id.clone(), ..Default::default() }, ALICE).await;
    wait_for_status(runtime, &unseeded.id, pb::JobStatus::Completed).await;
    let (request, _) = call(pb::GetJobResultsRequest { id: unseeded.id.clone(), ..Default::default() }, Some(ALICE));
    let unseeded_results = client.get_job_results(request).await.unwrap().into_inner();
    assert_eq!(unseeded_results.shots, 1024);
    let (request, _) = call(pb::GetJobRequest { id: unseeded.id.clone() }, Some(ALICE));
    assert!(client.get_job(request).await.unwrap().into_inner().params.unwrap().fields.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_job_refusals_are_audited() {
    let runtime = TestRuntime::start().await;
    let program = runtime.create_program("bell", BELL, false).await;
    let mut client = runtime.jobs().await;
    let base = || pb::CreateJobRequest { program_id: program.id.clone(), ..Default::default() };
    let cases = [
        (
            pb::CreateJobRequest { params: params(json!({"shots": 0})), ..base() },
            Code::InvalidArgument,
            400,
            "invalid params.shots",
        ),
        (
            pb::CreateJobRequest { params: params(json!({"shots": 5.5})), ..base() },
            Code::InvalidArgument,
            400,
            "invalid params.shots",
        ),
        (
            pb::CreateJobRequest { params: params(json!({"seed": "x"})), ..base() },
            Code::InvalidArgument,
            400,
            "invalid params.seed",
        ),
        (
            pb::CreateJobRequest { params: params(json!({"optimization_level": 3})), ..base() },
            Code::InvalidArgument,
            400,
            "invalid params: unknown parameter `optimization_level`",
        ),
        (pb::CreateJobRequest { backend: "ibm_kyiv".into(), ..base() }, Code::InvalidArgument, 400, "invalid backend"),
        (pb::CreateJobRequest { log_level: "LOUD".into(), ..base() }, Code::InvalidArgument, 400, "invalid log_level"),
        (pb::CreateJobRequest { tags: vec!["t".into(); 17], ..base() }, Code::InvalidArgument, 400, "invalid tags"),
        (
            pb::CreateJobRequest { program_id: String::new(), ..base() },
            Code::InvalidArgument,
            400,
            "invalid program_id",
        ),
        (pb::CreateJobRequest { program_id: "nope".into(), ..base() }, Code::NotFound, 404, "program `nope` not found"),
    ];
    for (request, code, http, message) in cases {
        let (request, correlation) = call(request, Some(ALICE));
        let status = client.create_job(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().starts_with(message), "{}", status.message());
        assert_audited(&runtime, &[(&correlation, Action::JobCreate, http, Severity::Warning, None, "acc-alice")])
            .await;
    }
    // Bob cannot run alice's private program, but can run a public one.
    let (request, correlation) = call(base(), Some(BOB));
    assert_eq!(client.create_job(request).await.unwrap_err().code(), Code::NotFound);
    assert_codes(&runtime, &[(&correlation, 404)]).await;
    let public = runtime.create_program("public", BELL, true).await;
    create_job(&runtime, pb::CreateJobRequest { program_id: public.id, ..Default::default() }, BOB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_job_is_not_found_for_every_call() {
    let runtime = TestRuntime::start().await;
    let program = runtime.create_program("bell", BELL, false).await;
    let job = create_job(&runtime, pb::CreateJobRequest { program_id: program.id, ..Default::default() }, ALICE).await;
    let mut client = runtime.jobs().await;
    let id = job.id.clone();
    let message = format!("job `{id}` not found");

    let (request, read) = call(pb::GetJobRequest { id: id.clone() }, Some(BOB));
    let status = client.get_job(request).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::NotFound, message.as_str()));
    let (request, results_read) = call(pb::GetJobResultsRequest { id: id.clone(), ..Default::default() }, Some(BOB));
    assert_eq!(client.get_job_results(request).await.unwrap_err().code(), Code::NotFound);
    let (request, interim_read) = call(pb::GetJobInterimResultsRequest { id: id.clone() }, Some(BOB));
    assert_eq!(client.get_job_interim_results(request).await.unwrap_err().code(), Code::NotFound);
    let (request, logs_read) = call(pb::GetJobLogsRequest { id: id.clone() }, Some(BOB));
    assert_eq!(client.get_job_logs(request).await.unwrap_err().code(), Code::NotFound);
    let (request, cancelled) = call(pb::CancelJobRequest { id: id.clone() }, Some(BOB));
    assert_eq!(client.cancel_job(request).await.unwrap_err().code(), Code::NotFound);
    let (request, deleted) = call(pb::DeleteJobRequest { id: id.clone() }, Some(BOB));
    assert_eq!(client.delete_job(request).await.unwrap_err().code(), Code::NotFound);
    assert_codes(&runtime, &[(&results_read, 404), (&interim_read, 404), (&logs_read, 404)]).await;
    let job = Some(("job", id.as_str()));
    assert_audited(
        &runtime,
        &[
            (&read, Action::JobRead, 404, Severity::Warning, job, "acc-bob"),
            (&cancelled, Action::JobCancel, 404, Severity::Warning, job, "acc-bob"),
            (&deleted, Action::JobDelete, 404, Severity::Critical, job, "acc-bob"),
        ],
    )
    .await;
    // A read refused for its key still names the job asked for: a read of it, not a list.
    let (request, correlation) = call(pb::GetJobRequest { id: id.clone() }, None);
    assert_eq!(client.get_job(request).await.unwrap_err().code(), Code::Unauthenticated);
    assert_audited(&runtime, &[(&correlation, Action::JobRead, 401, Severity::Critical, job, "qtrail")]).await;
    let event = runtime.event(&correlation).await;
    assert_eq!(event.message, format!("Qiskit Runtime: read job {id} -failure"));
    let (request, correlation) =
        call(pb::GetJobResultsRequest { id: id.clone(), ..Default::default() }, Some("not-a-key"));
    assert_eq!(client.get_job_results(request).await.unwrap_err().code(), Code::Unauthenticated);
    let event = runtime.event(&correlation).await;
    assert_eq!(event.target.crn.resource_id(), id);
    assert_eq!(event.message, format!("Qiskit Runtime: read job {id} -failure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_delete_follow_the_job_state() {
    let runtime = TestRuntime::start_with(true, |config| config.max_concurrent_jobs = 1).await;
    let slow = runtime.create_program("slow", SLOW, false).await;
    let bell = runtime.create_program("bell", BELL, false).await;
    let mut client = runtime.jobs().await;
    let slow_job = |shots: u32| pb::CreateJobRequest {
        program_id: slow.id.clone(),
        params: params(json!({"shots": shots, "seed": 1})),
        ..Default::default()
    };
    let running = create_job(&runtime, slow_job(100_000), ALICE).await;
    wait_for_status(&runtime, &running.id, pb::JobStatus::Running).await;
    // One executor slot: this one waits.
    let queued = create_job(&runtime, slow_job(100_000), ALICE).await;
    assert_eq!(status_of(&runtime, &queued.id).await.state.unwrap().status, pb::JobStatus::Queued as i32);

    // Results before completion: 409.
    let (request, early_results) =
        call(pb::GetJobResultsRequest { id: running.id.clone(), ..Default::default() }, Some(ALICE));
    let status = client.get_job_results(request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_codes(&runtime, &[(&early_results, 409)]).await;

    // Delete of a running job: 409.
    let (request, running_deleted) = call(pb::DeleteJobRequest { id: running.id.clone() }, Some(ALICE));
    let status = client.delete_job(request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    let mut cancels = Vec::new();
    for job in [&queued, &running] {
        let (request, correlation) = call(pb::CancelJobRequest { id: job.id.clone() }, Some(ALICE));
        let cancelled = client.cancel_job(request).await.unwrap().into_inner();
        let state = cancelled.state.unwrap();
        assert_eq!((state.status, state.reason.as_str()), (pb::JobStatus::Cancelled as i32, "cancelled by the user"));
        cancels.push(correlation);
    }

    // The executor slot frees up: a new job completes.
    let quick =
        create_job(&runtime, pb::CreateJobRequest { program_id: bell.id.clone(), ..Default::default() }, ALICE).await;
    wait_for_status(&runtime, &quick.id, pb::JobStatus::Completed).await;
    assert_eq!(
        status_of(&runtime, &running.id).await.state.unwrap().status,
        pb::JobStatus::Cancelled as i32,
        "a cancel wins"
    );

    // Cancel of a finished job: 409.
    let (request, finished_cancelled) = call(pb::CancelJobRequest { id: quick.id.clone() }, Some(ALICE));
    let status = client.cancel_job(request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), format!("job `{}` is COMPLETED and can no longer be cancelled", quick.id));

    // Delete of a finished job, then it is gone.
    let (request, finished_deleted) = call(pb::DeleteJobRequest { id: quick.id.clone() }, Some(ALICE));
    client.delete_job(request).await.unwrap();
    let (request, _) = call(pb::GetJobRequest { id: quick.id.clone() }, Some(ALICE));
    assert_eq!(client.get_job(request).await.unwrap_err().code(), Code::NotFound);

    let (running, queued, quick) = (target(&running), target(&queued), target(&quick));
    assert_audited(
        &runtime,
        &[
            (&running_deleted, Action::JobDelete, 409, Severity::Critical, running, "acc-alice"),
            (&cancels[0], Action::JobCancel, 200, Severity::Warning, queued, "acc-alice"),
            (&cancels[1], Action::JobCancel, 200, Severity::Warning, running, "acc-alice"),
            (&finished_cancelled, Action::JobCancel, 409, Severity::Warning, quick, "acc-alice"),
            (&finished_deleted, Action::JobDelete, 200, Severity::Critical, quick, "acc-alice"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_max_execution_time_is_cancelled_for_running_too_long() {
    let runtime = TestRuntime::start().await;
    let (request, _) = call(
        pb::CreateProgramRequest {
            name: "slow".into(),
            source: SLOW.into(),
            max_execution_time: 1,
            ..Default::default()
        },
        Some(ALICE),
    );
    let program = runtime.programs().await.create_program(request).await.unwrap().into_inner();
    let job = create_job(
        &runtime,
        pb::CreateJobRequest {
            program_id: program.id,
            params: params(json!({"shots": 100_000})),
            ..Default::default()
        },
        ALICE,
    )
    .await;
    let cancelled = wait_for_status(&runtime, &job.id, pb::JobStatus::Cancelled).await;
    assert_eq!(cancelled.state.unwrap().reason, "RAN TOO LONG");
    let (request, _) = call(pb::GetJobLogsRequest { id: job.id.clone() }, Some(ALICE));
    let logs = runtime.jobs().await.get_job_logs(request).await.unwrap().into_inner().logs;
    assert!(logs.contains("ERROR job cancelled: RAN TOO LONG"), "{logs}");
    // The executor's transitions are not user actions: every event is one of our calls.
    assert!(runtime.stub.stored().iter().all(|stored| stored.event.initiator.as_ref().unwrap().id == "IBMid-alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_jobs_filters_and_pages() {
    let runtime = TestRuntime::start().await;
    let bell = runtime.create_program("bell", BELL, false).await;
    let other = runtime.create_program("other", BELL, false).await;
    let mut ids = Vec::new();
    for (program, tags) in [(&bell, vec!["a", "b"]), (&bell, vec!["a"]), (&other, vec!["b"])] {
        let request = pb::CreateJobRequest {
            program_id: program.id.clone(),
            tags: tags.into_iter().map(String::from).collect(),
            ..Default::default()
        };
        let job = create_job(&runtime, request, ALICE).await;
        ids.push(job.id.clone());
        wait_for_status(&runtime, &job.id, pb::JobStatus::Completed).await;
    }
    create_job(
        &runtime,
        pb::CreateJobRequest { program_id: runtime.create_program_as_bob().await, ..Default::default() },
        BOB,
    )
    .await;
    let mut client = runtime.jobs().await;
    let lister = client.clone();
    let list = |request: pb::ListJobsRequest| {
        let mut client = lister.clone();
        async move {
            let (request, _) = call(request, Some(ALICE));
            client.list_jobs(request).await.map(|response| response.into_inner())
        }
    };

    let (request, correlation) = call(pb::ListJobsRequest::default(), Some(ALICE));
    let all = client.list_jobs(request).await.unwrap().into_inner();
    assert_eq!(all.count, 3, "bob's job is not listed");
    assert_eq!(
        all.jobs.iter().map(|job| job.id.clone()).collect::<Vec<_>>(),
        ids.iter().rev().cloned().collect::<Vec<_>>()
    );
    assert_audited(&runtime, &[(&correlation, Action::JobRead, 200, Severity::Normal, None, "acc-alice")]).await;

    let ascending =
        list(pb::ListJobsRequest { ascending: true, limit: 2, offset: 1, ..Default::default() }).await.unwrap();
    assert_eq!((ascending.count, ascending.jobs.len()), (3, 2));
    assert_eq!(ascending.jobs[0].id, ids[1]);
    let tagged = list(pb::ListJobsRequest { tags: vec!["a".into(), "b".into()], ..Default::default() }).await.unwrap();
    assert_eq!(tagged.jobs.iter().map(|job| job.id.as_str()).collect::<Vec<_>>(), [ids[0].as_str()]);
    let of_program = list(pb::ListJobsRequest { program_id: other.id.clone(), ..Default::default() }).await.unwrap();
    assert_eq!(of_program.count, 1);
    assert_eq!(list(pb::ListJobsRequest { pending: Some(true), ..Default::default() }).await.unwrap().count, 0);
    assert_eq!(list(pb::ListJobsRequest { pending: Some(false), ..Default::default() }).await.unwrap().count, 3);
    let created = status_of(&runtime, &ids[1]).await.create_time.unwrap();
    let after = list(pb::ListJobsRequest { created_after: Some(created), ascending: true, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(after.jobs.first().map(|job| job.id.as_str()), Some(ids[1].as_str()));
    let before = list(pb::ListJobsRequest { created_before: Some(created), ..Default::default() }).await.unwrap();
    assert!(before.jobs.iter().all(|job| job.id != ids[1] && job.id != ids[2]));

    let late = prost_types::Timestamp { seconds: created.seconds + 10, nanos: 0 };
    let inverted =
        pb::ListJobsRequest { created_after: Some(late), created_before: Some(created), ..Default::default() };
    let bad_time = prost_types::Timestamp { seconds: -5, nanos: 0 };
    let cases = [
        (inverted, "invalid created_before: is earlier than created_after"),
        (pb::ListJobsRequest { limit: -1, ..Default::default() }, "invalid limit"),
        (pb::ListJobsRequest { limit: 5000, ..Default::default() }, "invalid limit"),
        (pb::ListJobsRequest { offset: -1, ..Default::default() }, "invalid offset"),
        (pb::ListJobsRequest { tags: vec!["é".repeat(300); 1000], ..Default::default() }, "invalid tags"),
        (pb::ListJobsRequest { created_after: Some(bad_time), ..Default::default() }, "invalid created_after"),
    ];
    for (request, message) in cases {
        let (request, correlation) = call(request, Some(ALICE));
        let status = client.list_jobs(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(message), "{}", status.message());
        assert_audited(&runtime, &[(&correlation, Action::JobRead, 400, Severity::Warning, None, "acc-alice")]).await;
    }
}
