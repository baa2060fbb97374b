//! ProgramService: every RPC's success and failure paths and the exact audit event of each.

use qtrail_cadf::{Action, Severity};
use qtrail_proto::qtrail::runtime::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::harness::{ALICE, BELL, BOB, TestRuntime, assert_audited, call};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_program_succeeds_with_201_and_never_records_the_source() {
    let runtime = TestRuntime::start().await;
    let request = pb::CreateProgramRequest {
        name: "Bell pair".into(),
        description: "two qubits".into(),
        source: BELL.into(),
        max_execution_time: 60,
        is_public: false,
        spec: None,
    };
    let (request, correlation) = call(request, Some(ALICE));
    let program = runtime.programs().await.create_program(request).await.unwrap().into_inner();
    assert!(program.id.starts_with("bell-pair-"), "{}", program.id);
    assert_eq!((program.num_qubits, program.max_execution_time, program.source.as_str()), (2, 60, BELL));

    let event = runtime.event(&correlation).await;
    assert_audited(
        &runtime,
        &[(&correlation, Action::ProgramCreate, 201, Severity::Normal, Some(("program", &program.id)), "acc-alice")],
    )
    .await;
    assert_eq!(event.target.name, "Bell pair");
    assert_eq!(event.initiator.id, "IBMid-alice");
    assert_eq!(event.initiator.name, "alice@example.com");
    assert_eq!(event.initiator.credential_type, "apikey");
    assert_eq!(event.initiator.host_address, "127.0.0.1");
    assert!(event.initiator.host_agent.starts_with("qtrail-tests/1.0"), "{}", event.initiator.host_agent);
    assert_eq!(event.reason.reason_type, "Created");
    let request_data = serde_json::Value::Object(event.request_data.clone().unwrap());
    assert_eq!(request_data["name"], "Bell pair");
    assert_eq!(request_data["source"]["sourceBytes"], BELL.len());
    assert_eq!(request_data["source"]["sourceSha256"].as_str().unwrap().len(), 64);
    let canonical = String::from_utf8(qtrail_cadf::canonical_bytes(&event)).unwrap();
    assert!(!canonical.contains("cx q[0],q[1]"), "the source never goes into an event");
    assert!(!canonical.contains(ALICE), "the api key never goes into an event");
    assert_eq!(event.response_data.as_ref().unwrap()["programId"], json!(program.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_program_refusals_are_audited() {
    let runtime = TestRuntime::start().await;
    runtime.create_program("taken", BELL, false).await;
    let bad_qasm = "OPENQASM 2.0;\nqreg q[1];\nh q[0];\n";
    let too_big = "OPENQASM 2.0;\nqreg q[30];\n";
    let cases = [
        ("taken", BELL, 0, Code::AlreadyExists, 409, "program name `taken` already exists in this account"),
        ("", BELL, 0, Code::InvalidArgument, 400, "invalid name: must be 1 to 128 characters, got 0"),
        ("ok", bad_qasm, 0, Code::InvalidArgument, 400, "invalid source: line 3, column 1: unknown gate `h`"),
        (
            "ok",
            too_big,
            0,
            Code::InvalidArgument,
            400,
            "invalid source: circuit uses 30 qubits, the simulator limit is 20",
        ),
        (
            "ok",
            "OPENQASM 2.0;\nqreg q[1]\n",
            0,
            Code::InvalidArgument,
            400,
            "invalid source: line 2, column 10: unexpected end of program",
        ),
        ("ok", BELL, 10_801, Code::InvalidArgument, 400, "invalid max_execution_time: must be 1 to 10800 seconds"),
    ];
    let mut client = runtime.programs().await;
    for (name, source, max_execution_time, code, http, message) in cases {
        let request = pb::CreateProgramRequest {
            name: name.into(),
            source: source.into(),
            max_execution_time,
            ..Default::default()
        };
        let (request, correlation) = call(request, Some(ALICE));
        let status = client.create_program(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(status.message().starts_with(message), "{}", status.message());
        let event = runtime.event(&correlation).await;
        assert_audited(&runtime, &[(&correlation, Action::ProgramCreate, http, Severity::Warning, None, "acc-alice")])
            .await;
        assert_eq!(event.reason.reason_for_failure, status.message());
    }
    let long_name = "n".repeat(129);
    let (request, _) =
        call(pb::CreateProgramRequest { name: long_name, source: BELL.into(), ..Default::default() }, Some(ALICE));
    assert_eq!(client.create_program(request).await.unwrap_err().code(), Code::InvalidArgument);
    // The same name in another account is fine.
    let (request, _) =
        call(pb::CreateProgramRequest { name: "taken".into(), source: BELL.into(), ..Default::default() }, Some(BOB));
    client.create_program(request).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_key_are_refused_and_audited_as_anonymous() {
    let runtime = TestRuntime::start().await;
    let mut client = runtime.programs().await;
    for (key, credential) in [(None, ""), (Some("not-a-key"), "apikey")] {
        let (request, correlation) = call(pb::ListProgramsRequest::default(), key);
        let status = client.list_programs(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(!status.message().contains("not-a-key"));
        let event = runtime.event(&correlation).await;
        assert_audited(&runtime, &[(&correlation, Action::ProgramRead, 401, Severity::Critical, None, "qtrail")]).await;
        assert_eq!(event.initiator.id, "anonymous");
        assert_eq!(event.initiator.name, "");
        assert_eq!(event.initiator.credential_type, credential);
        let canonical = String::from_utf8(qtrail_cadf::canonical_bytes(&event)).unwrap();
        assert!(!canonical.contains("not-a-key"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_programs_pages_and_counts_what_the_caller_can_see() {
    let runtime = TestRuntime::start().await;
    for n in 0..3 {
        runtime.create_program(&format!("p{n}"), BELL, false).await;
    }
    let public = runtime.create_program("shared", BELL, true).await;
    let mut client = runtime.programs().await;

    let (request, correlation) =
        call(pb::ListProgramsRequest { limit: 2, offset: 1, ..Default::default() }, Some(ALICE));
    let page = client.list_programs(request).await.unwrap().into_inner();
    assert_eq!(page.count, 4);
    assert_eq!(page.programs.len(), 2);
    let event = runtime.event(&correlation).await;
    assert_audited(&runtime, &[(&correlation, Action::ProgramRead, 200, Severity::Normal, None, "acc-alice")]).await;
    assert_eq!(event.message, "Qiskit Runtime: list programs");
    assert_eq!(event.response_data.as_ref().unwrap()["count"], json!(4));

    // Bob sees only the public one, without its source.
    let (request, _) = call(pb::ListProgramsRequest::default(), Some(BOB));
    let bobs = client.list_programs(request).await.unwrap().into_inner();
    assert_eq!(bobs.count, 1);
    assert_eq!(bobs.programs[0].id, public.id);
    assert!(bobs.programs[0].source.is_empty());

    for (limit, offset, field) in [(-1, 0, "invalid limit"), (1001, 0, "invalid limit"), (10, -3, "invalid offset")] {
        let (request, correlation) = call(pb::ListProgramsRequest { limit, offset, ..Default::default() }, Some(ALICE));
        let status = client.list_programs(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{}", status.message());
        assert_audited(&runtime, &[(&correlation, Action::ProgramRead, 400, Severity::Warning, None, "acc-alice")])
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_program_hides_other_accounts_private_programs() {
    let runtime = TestRuntime::start().await;
    let private = runtime.create_program("private", BELL, false).await;
    let public = runtime.create_program("public", BELL, true).await;
    let mut client = runtime.programs().await;

    let (request, correlation) = call(pb::GetProgramRequest { id: private.id.clone() }, Some(ALICE));
    assert_eq!(client.get_program(request).await.unwrap().into_inner().source, BELL);
    assert_audited(
        &runtime,
        &[(&correlation, Action::ProgramRead, 200, Severity::Normal, Some(("program", &private.id)), "acc-alice")],
    )
    .await;

    let (request, correlation) = call(pb::GetProgramRequest { id: private.id.clone() }, Some(BOB));
    let status = client.get_program(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), format!("program `{}` not found", private.id));
    assert_audited(
        &runtime,
        &[(&correlation, Action::ProgramRead, 404, Severity::Warning, Some(("program", &private.id)), "acc-bob")],
    )
    .await;

    let (request, correlation) = call(pb::GetProgramRequest { id: public.id.clone() }, Some(BOB));
    let seen = client.get_program(request).await.unwrap().into_inner();
    assert_eq!(seen.name, "public");
    assert!(seen.source.is_empty(), "the source is only returned to the owner");
    // The read belongs to both accounts: bob's as its initiator (the log source), alice's as
    // the owner of its target.
    let event = runtime.event(&correlation).await;
    assert_eq!(event.log_source_crn.account(), Some("acc-bob"));
    let owned = format!("crn:v1:bluemix:public:quantum-computing:us-east:a/acc-alice:inst-test:program:{}", public.id);
    assert_eq!(event.target.crn.as_str(), owned);
    // So does a refused change of it, which the answer does not hide.
    let update = pb::UpdateProgramRequest { id: public.id.clone(), name: Some("mine".into()), ..Default::default() };
    let (request, correlation) = call(update, Some(BOB));
    assert_eq!(client.update_program(request).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(runtime.event(&correlation).await.target.crn.as_str(), owned);

    // A caller's odd id still names the target, percent-encoded.
    let (request, correlation) = call(pb::GetProgramRequest { id: "no such:id".into() }, Some(ALICE));
    assert_eq!(client.get_program(request).await.unwrap_err().code(), Code::NotFound);
    let event = runtime.event(&correlation).await;
    assert!(event.target.crn.as_str().ends_with(":program:no%20such:id"), "{}", event.target.crn);

    let (request, correlation) = call(pb::GetProgramRequest { id: String::new() }, Some(ALICE));
    let status = client.get_program(request).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "invalid id: must not be empty"));
    assert_eq!(runtime.event(&correlation).await.reason.code, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_program_records_what_changed() {
    let runtime = TestRuntime::start().await;
    let program = runtime.create_program("first", BELL, false).await;
    runtime.create_program("second", BELL, false).await;
    let mut client = runtime.programs().await;

    let ghz = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[3];\ncreg c[3];\nh q[0];\ncx q[0],q[1];\ncx q[1],q[2];\nmeasure q -> c;\n";
    let update = pb::UpdateProgramRequest {
        id: program.id.clone(),
        name: Some("renamed".into()),
        source: Some(ghz.into()),
        is_public: Some(true),
        ..Default::default()
    };
    let (request, correlation) = call(update, Some(ALICE));
    let updated = client.update_program(request).await.unwrap().into_inner();
    assert_eq!((updated.name.as_str(), updated.num_qubits, updated.is_public), ("renamed", 3, true));
    let event = runtime.event(&correlation).await;
    assert_audited(
        &runtime,
        &[(&correlation, Action::ProgramUpdate, 200, Severity::Warning, Some(("program", &program.id)), "acc-alice")],
    )
    .await;
    let data = serde_json::Value::Object(event.request_data.clone().unwrap());
    assert_eq!(data["updateType"], "name,source,isPublic");
    assert_eq!(data["initialValue"]["name"], "first");
    assert_eq!(data["newValue"]["name"], "renamed");
    assert_eq!(data["initialValue"]["isPublic"], false);
    assert_eq!(data["newValue"]["source"]["sourceBytes"], ghz.len());
    assert!(!String::from_utf8(qtrail_cadf::canonical_bytes(&event)).unwrap().contains("cx q[1],q[2]"));

    // The old name is free again, the new one taken.
    runtime.create_program("first", BELL, false).await;
    let (request, correlation) = call(
        pb::UpdateProgramRequest { id: program.id.clone(), name: Some("second".into()), ..Default::default() },
        Some(ALICE),
    );
    assert_eq!(client.update_program(request).await.unwrap_err().code(), Code::AlreadyExists);
    assert_eq!(runtime.event(&correlation).await.reason.code, 409);

    let (request, correlation) =
        call(pb::UpdateProgramRequest { id: program.id.clone(), ..Default::default() }, Some(ALICE));
    let status = client.update_program(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("invalid update: set at least one of"));
    assert_eq!(runtime.event(&correlation).await.reason.code, 400);

    // Bob can see the now public program but not change it.
    let (request, correlation) = call(
        pb::UpdateProgramRequest { id: program.id.clone(), description: Some("mine".into()), ..Default::default() },
        Some(BOB),
    );
    assert_eq!(client.update_program(request).await.unwrap_err().code(), Code::PermissionDenied);
    // Bob's refused call, on alice's program: the log source is bob's, the target alice's.
    let event = runtime.event(&correlation).await;
    assert_eq!((event.action, event.reason.code, event.severity), (Action::ProgramUpdate, 403, Severity::Critical));
    assert_eq!(event.log_source_crn.account(), Some("acc-bob"));
    let owned = format!("crn:v1:bluemix:public:quantum-computing:us-east:a/acc-alice:inst-test:program:{}", program.id);
    assert_eq!(event.target.crn.as_str(), owned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_program_is_critical_and_owner_only() {
    let runtime = TestRuntime::start().await;
    let private = runtime.create_program("private", BELL, false).await;
    let public = runtime.create_program("public", BELL, true).await;
    let mut client = runtime.programs().await;

    let (request, correlation) = call(pb::DeleteProgramRequest { id: private.id.clone() }, Some(BOB));
    assert_eq!(client.delete_program(request).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(runtime.event(&correlation).await.reason.code, 404);
    let (request, correlation) = call(pb::DeleteProgramRequest { id: public.id.clone() }, Some(BOB));
    assert_eq!(client.delete_program(request).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(runtime.event(&correlation).await.reason.code, 403);

    let (request, correlation) = call(pb::DeleteProgramRequest { id: private.id.clone() }, Some(ALICE));
    client.delete_program(request).await.unwrap();
    assert_audited(
        &runtime,
        &[(&correlation, Action::ProgramDelete, 200, Severity::Critical, Some(("program", &private.id)), "acc-alice")],
    )
    .await;
    let (request, correlation) = call(pb::DeleteProgramRequest { id: private.id.clone() }, Some(ALICE));
    assert_eq!(client.delete_program(request).await.unwrap_err().code(), Code::NotFound);
    assert_audited(
        &runtime,
        &[(&correlation, Action::ProgramDelete, 404, Severity::Critical, Some(("program", &private.id)), "acc-alice")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initiator_comes_from_a_trusted_proxys_forwarded_for_and_bad_correlation_ids_are_replaced() {
    // The test's connections come from 127.0.0.1: a trusted proxy here.
    let runtime = TestRuntime::start_with(true, |config| {
        config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
    })
    .await;
    let mut client = runtime.programs().await;
    // The left-most entry is the caller's own claim; the right-most untrusted one is what the
    // trusted proxies saw.
    let (mut request, correlation) = call(pb::ListProgramsRequest::default(), Some(ALICE));
    request.metadata_mut().insert("x-forwarded-for", "198.51.100.66, 203.0.113.7, 10.0.0.1".parse().unwrap());
    client.list_programs(request).await.unwrap();
    assert_eq!(runtime.event(&correlation).await.initiator.host_address, "203.0.113.7");

    let too_long = "c".repeat(129);
    let (mut request, _) = call(pb::ListProgramsRequest { limit: 7, offset: 0, ..Default::default() }, Some(ALICE));
    request.metadata_mut().insert("x-correlation-id", too_long.parse().unwrap());
    client.list_programs(request).await.unwrap();
    let found = runtime
        .stub
        .wait_for(crate::harness::WAIT, |stub| {
            stub.stored().iter().any(|stored| {
                stored.event.request_data.as_ref().is_some_and(|data| {
                    data.fields.get("limit").is_some_and(
                        |limit| matches!(limit.kind, Some(prost_types::value::Kind::NumberValue(n)) if n == 7.0),
                    )
                })
            })
        })
        .await;
    assert!(found);
    let event = runtime.stub.stored().into_iter().last().unwrap().event;
    assert!(uuid::Uuid::parse_str(&event.correlation_id).is_ok(), "{}", event.correlation_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_identifier_in_a_syntax_error_is_cut_and_the_refusal_audited() {
    let runtime = TestRuntime::start().await;
    let mut client = runtime.programs().await;
    let identifier = "g".repeat(20_000);
    let source = format!("OPENQASM 2.0;\nqreg q[1];\n{identifier} q[0];\n");
    let (request, correlation) =
        call(pb::CreateProgramRequest { name: "huge".into(), source, ..Default::default() }, Some(ALICE));
    let status = client.create_program(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("invalid source:"), "{}", status.message());
    assert!(status.message().len() <= qtrail_runtime::error::MAX_MESSAGE_BYTES, "{}", status.message().len());
    assert!(status.message().ends_with(qtrail_cadf::text::TRUNCATION_MARKER), "{}", status.message());
    let event = runtime.event(&correlation).await;
    assert_audited(&runtime, &[(&correlation, Action::ProgramCreate, 400, Severity::Warning, None, "acc-alice")]).await;
    assert_eq!(event.reason.reason_for_failure, status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_refused_for_its_key_names_the_program_asked_for() {
    let runtime = TestRuntime::start().await;
    let program = runtime.create_program("mine", BELL, false).await;
    let mut client = runtime.programs().await;
    let (request, correlation) = call(pb::GetProgramRequest { id: program.id.clone() }, Some("not-a-key"));
    assert_eq!(client.get_program(request).await.unwrap_err().code(), Code::Unauthenticated);
    let event = runtime.event(&correlation).await;
    assert_audited(
        &runtime,
        &[(&correlation, Action::ProgramRead, 401, Severity::Critical, Some(("program", &program.id)), "qtrail")],
    )
    .await;
    assert_eq!(event.message, format!("Qiskit Runtime: read program {} -failure", program.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let runtime = TestRuntime::start().await;
    let mut client = runtime.programs().await;
    let (mut request, correlation) = call(pb::ListProgramsRequest::default(), Some(ALICE));
    request.metadata_mut().insert("x-forwarded-for", "203.0.113.7".parse().unwrap());
    client.list_programs(request).await.unwrap();
    assert_eq!(runtime.event(&correlation).await.initiator.host_address, "127.0.0.1");
}
