//! Answers stay bounded: result counts come in pages, interim results keep the most frequent
//! outcomes, and program lists leave sources out unless asked and stop before their byte bound.

use std::collections::HashMap;

use qtrail_cadf::proto::struct_from_json;
use qtrail_proto::qtrail::runtime::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::harness::{ALICE, BELL, BOB, TestRuntime, call, wait_until};

/// Eleven qubits in uniform superposition: up to 2048 distinct outcomes.
const SPREAD: &str = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[11];\ncreg c[11];\nh q;\nmeasure q -> c;\n";

async fn completed_job(runtime: &TestRuntime, source: &str, shots: u32) -> String {
    let program = runtime.create_program("spread", source, false).await;
    let request = pb::CreateJobRequest {
        program_id: program.id,
        params: Some(struct_from_json(json!({"shots": shots, "seed": 3}).as_object().unwrap())),
        ..Default::default()
    };
    let (request, _) = call(request, Some(ALICE));
    let job = runtime.jobs().await.create_job(request).await.unwrap().into_inner();
    let done = wait_until(|| async {
        let (request, _) = call(pb::GetJobRequest { id: job.id.clone() }, Some(ALICE));
        let state = runtime.jobs().await.get_job(request).await.unwrap().into_inner().state.unwrap();
        state.status == pb::JobStatus::Completed as i32
    })
    .await;
    assert!(done, "job {} never completed", job.id);
    job.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_results_come_in_pages_and_interim_results_keep_the_most_frequent_outcomes() {
    let runtime = TestRuntime::start().await;
    let id = completed_job(&runtime, SPREAD, 20_000).await;
    let mut client = runtime.jobs().await;

    let (request, _) = call(pb::GetJobResultsRequest { id: id.clone(), ..Default::default() }, Some(ALICE));
    let whole = client.get_job_results(request).await.unwrap().into_inner();
    assert!(whole.outcomes > 1024, "{} outcomes", whole.outcomes);
    assert_eq!(whole.counts.len() as u32, whole.outcomes, "one default page holds them all");
    assert!(whole.next_page_token.is_empty());

    let mut gathered: HashMap<String, u32> = HashMap::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let request = pb::GetJobResultsRequest { id: id.clone(), page_size: 500, page_token };
        let (request, correlation) = call(request, Some(ALICE));
        let page = client.get_job_results(request).await.unwrap().into_inner();
        assert!(page.counts.len() <= 500);
        assert_eq!(page.outcomes, whole.outcomes);
        assert!(page.counts.keys().all(|bits| !gathered.contains_key(bits)), "pages do not overlap");
        gathered.extend(page.counts);
        pages += 1;
        assert_eq!(runtime.event(&correlation).await.reason.code, 200);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(pages, whole.outcomes.div_ceil(500));
    assert_eq!(gathered, whole.counts, "the pages together are the whole result");
    assert_eq!(gathered.values().sum::<u32>(), 20_000);

    for (page_size, page_token, field) in [
        (16_385, "", "invalid page_size"),
        (0, "012", "invalid page_token"),
        (0, &*"1".repeat(65), "invalid page_token"),
    ] {
        let request = pb::GetJobResultsRequest { id: id.clone(), page_size, page_token: page_token.into() };
        let (request, correlation) = call(request, Some(ALICE));
        let status = client.get_job_results(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{}", status.message());
        assert_eq!(runtime.event(&correlation).await.reason.code, 400);
    }

    let (request, _) = call(pb::GetJobInterimResultsRequest { id: id.clone() }, Some(ALICE));
    let interim = client.get_job_interim_results(request).await.unwrap().into_inner();
    let last = interim.results.last().unwrap();
    assert_eq!(last.shots_done, 20_000);
    assert_eq!(last.outcomes, whole.outcomes);
    assert_eq!(last.counts.len(), 1024, "only the most frequent outcomes");
    let least_kept = last.counts.values().min().unwrap();
    let most_left_out = whole.counts.iter().filter(|(bits, _)| !last.counts.contains_key(*bits)).map(|(_, n)| n).max();
    assert!(most_left_out.is_none_or(|left_out| left_out <= least_kept));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn program_lists_leave_sources_out_unless_asked_and_stop_before_their_byte_bound() {
    let runtime = TestRuntime::start().await;
    // Ten programs of ~250 KB: 2.5 MB of sources, more than one page may hold.
    let padding = format!("// {}\n", "x".repeat(250_000));
    let source = format!("{BELL}{padding}");
    for n in 0..10 {
        runtime.create_program(&format!("big-{n}"), &source, n == 0).await;
    }
    let mut client = runtime.programs().await;

    let (request, _) = call(pb::ListProgramsRequest { limit: 10, ..Default::default() }, Some(ALICE));
    let lean = client.list_programs(request).await.unwrap().into_inner();
    assert_eq!((lean.count, lean.programs.len()), (10, 10));
    assert!(lean.programs.iter().all(|program| program.source.is_empty()), "no sources unless asked");

    let mut seen = Vec::new();
    let mut pages = 0;
    while seen.len() < 10 {
        let request = pb::ListProgramsRequest { limit: 10, offset: seen.len() as i32, include_source: true };
        let (request, _) = call(request, Some(ALICE));
        let page = client.list_programs(request).await.unwrap().into_inner();
        assert!(!page.programs.is_empty());
        assert!(page.programs.len() < 10, "2.5 MB does not fit in one page");
        assert!(page.programs.iter().all(|program| program.source == source));
        seen.extend(page.programs.into_iter().map(|program| program.id));
        pages += 1;
    }
    assert!(pages >= 2);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 10);

    // Another account never gets a source, asked or not.
    let (request, _) = call(pb::ListProgramsRequest { include_source: true, ..Default::default() }, Some(BOB));
    let bobs = client.list_programs(request).await.unwrap().into_inner();
    assert_eq!(bobs.count, 1);
    assert!(bobs.programs[0].source.is_empty());
}
