//! GetInclusionProof: a proof of an event chosen by leaf index, event id or correlation id, in
//! the newest signed tree head or an older one, that verifies against the signed note's root
//! from the event's canonical bytes; and the code of every bad ask.

use qtrail_cadf::checkpoint::SigningKey;
use qtrail_collector::store::canonical_of;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::get_inclusion_proof_request::Leaf;
use qtrail_tlog::{Checkpoint, Hash, NoteVerifier, leaf_hash, open_note, verify_inclusion};
use tonic::Code;

use crate::common::{self, AUDITOR, PUBLISHER, TestServer, authed, events};
use crate::tlog::{EVENTS, newest_checkpoint, signed_server, signing_config};

async fn prove(
    server: &TestServer,
    leaf: Option<Leaf>,
    tree_size: u64,
) -> Result<proto::GetInclusionProofResponse, tonic::Status> {
    let request = proto::GetInclusionProofRequest { location: "us-east".into(), leaf, tree_size };
    server.query().await.get_inclusion_proof(authed(request, AUDITOR)).await.map(tonic::Response::into_inner)
}

/// Checks an answer as an offline verifier would, and returns the head it proves the leaf in.
fn check(answer: &proto::GetInclusionProofResponse, verifier: &NoteVerifier) -> Checkpoint {
    let head = Checkpoint::parse(open_note(&answer.note, std::slice::from_ref(verifier)).unwrap()).unwrap();
    assert_eq!(head.size, answer.tree_size);
    let proof: Vec<Hash> = answer.proof.iter().map(|hash| hash.as_slice().try_into().unwrap()).collect();
    let leaf = leaf_hash(&answer.leaf);
    assert_eq!(verify_inclusion(answer.leaf_index, head.size, &leaf, &proof, &head.root), Ok(()));
    head
}

#[tokio::test]
async fn each_selector_proves_its_event_in_a_signed_head() {
    let dir = tempfile::tempdir().unwrap();
    let server = signed_server(signing_config(dir.path(), false)).await;
    let key = SigningKey::from_pem(&std::fs::read(dir.path().join("checkpoint-key.pem")).unwrap()).unwrap();
    let verifier = NoteVerifier::new("qtrail.local/us-east", key.public_key()).unwrap();
    // Two more events sharing one correlation id, and a head over them.
    let mut more = events("us-east", EVENTS, 3);
    more[1].correlation_id = "corr-shared".into();
    more[2].correlation_id = "corr-shared".into();
    assert_eq!(server.publish("us-east", &more, EVENTS as u64 + 1).await.accepted, 3);
    let size = EVENTS as u64 + 3;
    let covered = common::wait_until(std::time::Duration::from_secs(20), || async {
        newest_checkpoint(&server).await.is_some_and(|checkpoint| checkpoint.tree_size == size)
    })
    .await;
    assert!(covered, "a checkpoint covers the new events");
    let stored = server.all_events("us-east").await;

    for index in [0, 150, 255, 256, size - 1] {
        let answer = prove(&server, Some(Leaf::LeafIndex(index)), 0).await.unwrap();
        assert_eq!((answer.leaf_index, answer.tree_size), (index, size));
        let record = stored.iter().find(|record| record.location_seq == index + 1).unwrap();
        assert_eq!(answer.leaf, canonical_of(record).unwrap());
        check(&answer, &verifier);
    }
    let event_id = stored[41].event.as_ref().unwrap().id.clone();
    let by_id = prove(&server, Some(Leaf::EventId(event_id.to_uppercase())), 0).await.unwrap();
    assert_eq!(by_id.leaf_index, stored[41].location_seq - 1);
    check(&by_id, &verifier);
    // Of the two events with the correlation id, the oldest is proved.
    let by_correlation = prove(&server, Some(Leaf::CorrelationId("corr-shared".into())), 0).await.unwrap();
    assert_eq!(by_correlation.leaf_index, EVENTS as u64 + 1);
    assert!(String::from_utf8_lossy(&by_correlation.leaf).contains("\"correlationId\":\"corr-shared\""));
    check(&by_correlation, &verifier);
    // An older signed head, by its size.
    let older = prove(&server, Some(Leaf::LeafIndex(7)), EVENTS as u64).await.unwrap();
    assert_eq!(check(&older, &verifier).size, EVENTS as u64);

    let code = |result: Result<proto::GetInclusionProofResponse, tonic::Status>| result.unwrap_err().code();
    let not_uuid = prove(&server, Some(Leaf::EventId("not-a-uuid".into())), 0).await.unwrap_err();
    assert_eq!((not_uuid.code(), not_uuid.message()), (Code::InvalidArgument, "event_id is not a uuid"));
    assert_eq!(code(prove(&server, None, 0).await), Code::InvalidArgument);
    assert_eq!(code(prove(&server, Some(Leaf::CorrelationId(String::new())), 0).await), Code::InvalidArgument);
    let unknown = Leaf::EventId(uuid::Uuid::nil().to_string());
    assert_eq!(code(prove(&server, Some(unknown), 0).await), Code::NotFound);
    assert_eq!(code(prove(&server, Some(Leaf::CorrelationId("nobody".into())), 0).await), Code::NotFound);
    assert_eq!(code(prove(&server, Some(Leaf::LeafIndex(size)), 0).await), Code::NotFound);
    // A leaf past the head asked for; a size no checkpoint has; one not signed yet.
    let outside = prove(&server, Some(Leaf::LeafIndex(EVENTS as u64 + 1)), EVENTS as u64).await.unwrap_err();
    assert_eq!(outside.code(), Code::InvalidArgument, "{outside:?}");
    assert_eq!(code(prove(&server, Some(Leaf::LeafIndex(0)), EVENTS as u64 - 1).await), Code::NotFound);
    let later = prove(&server, Some(Leaf::LeafIndex(0)), size + 1).await.unwrap_err();
    assert_eq!(later.code(), Code::FailedPrecondition);
    assert!(later.message().contains("retry after the next checkpoint"), "{later:?}");
    let elsewhere =
        proto::GetInclusionProofRequest { location: "eu-de".into(), leaf: Some(Leaf::LeafIndex(0)), tree_size: 0 };
    let missing = server.query().await.get_inclusion_proof(authed(elsewhere.clone(), AUDITOR)).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let publisher = server.query().await.get_inclusion_proof(authed(elsewhere, PUBLISHER)).await;
    assert_eq!(publisher.unwrap_err().code(), Code::PermissionDenied);
    server.stop().await;
}

/// Without signed heads nothing can be proved yet: the caller is told to retry.
#[tokio::test]
async fn without_a_signed_head_an_event_is_not_yet_provable() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_http(dir.path()).await;
    server.create_collector("us-east").await;
    assert_eq!(server.publish("us-east", &events("us-east", 0, 2), 1).await.accepted, 2);
    let refused = prove(&server, Some(Leaf::LeafIndex(0)), 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(refused.message(), "location `us-east` has no signed tree head yet; retry after the next checkpoint");
    server.stop().await;
}
