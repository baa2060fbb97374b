//! Every malformed event is rejected with its own error, whichever form it arrives in, and
//! control characters are escaped rather than rejected.

mod common;

use qtrail_cadf::{AuditEvent, CrnError, EventError, MAX_EVENT_BYTES, at_json, cadf_json};
use qtrail_proto::qtrail::audit::v1 as proto;
use serde_json::json;

use common::*;

/// A valid wire event to break one field at a time.
fn wire() -> proto::AuditEvent {
    proto::AuditEvent::from(&cancel_failure())
}

fn decode(wire: proto::AuditEvent) -> Result<AuditEvent, EventError> {
    AuditEvent::try_from(wire)
}

fn reject(change: impl FnOnce(&mut proto::AuditEvent)) -> EventError {
    let mut event = wire();
    change(&mut event);
    decode(event).expect_err("the broken event was accepted")
}

const OTHER_INSTANCE: &str = "crn:v1:bluemix:public:quantum-computing:us-east:a/acc-alice:other-inst:job:j-1";

#[test]
fn the_unbroken_fixture_is_valid() {
    assert_eq!(decode(wire()).unwrap(), cancel_failure());
}

#[test]
fn rejects_each_malformed_case_with_its_own_error() {
    assert_eq!(reject(|e| e.id.clear()), EventError::MissingId);
    assert_eq!(reject(|e| e.id = "not-a-uuid".into()), EventError::InvalidId("not-a-uuid".into()));
    assert_eq!(reject(|e| e.id = uuid::Uuid::nil().to_string()), EventError::MissingId);
    assert_eq!(
        reject(|e| e.action = "quantum-computing.job.steal".into()),
        EventError::UnknownAction("quantum-computing.job.steal".into())
    );
    assert_eq!(reject(|e| e.outcome = 0), EventError::Missing("outcome"));
    assert_eq!(reject(|e| e.outcome = 9), EventError::UnknownValue { field: "outcome", value: "9".into() });
    assert_eq!(reject(|e| e.severity = 0), EventError::Missing("severity"));
    assert_eq!(reject(|e| e.event_time = None), EventError::Missing("event time"));
    assert!(matches!(reject(|e| e.event_time.as_mut().unwrap().nanos = 1), EventError::InvalidTime(_)));
    assert!(matches!(reject(|e| e.event_time.as_mut().unwrap().seconds = -5), EventError::InvalidTime(_)));
    assert_eq!(reject(|e| e.initiator = None), EventError::MissingInitiatorId);
    assert_eq!(reject(|e| e.initiator.as_mut().unwrap().id.clear()), EventError::MissingInitiatorId);
    assert_eq!(
        reject(|e| e.initiator.as_mut().unwrap().type_uri = "hacker".into()),
        EventError::UnknownValue { field: "initiator type", value: "hacker".into() }
    );
    assert_eq!(
        reject(|e| e.initiator.as_mut().unwrap().credential_type = "password".into()),
        EventError::UnknownValue { field: "credential type", value: "password".into() }
    );
    assert_eq!(reject(|e| e.target = None), EventError::Missing("target"));
    assert_eq!(
        reject(|e| e.target.as_mut().unwrap().id = "job-1".into()),
        EventError::BadCrn { field: "target", source: CrnError::NotACrn }
    );
    assert!(matches!(
        reject(|e| e.target.as_mut().unwrap().id = OTHER_INSTANCE.into()),
        EventError::TargetOutsideLogSource { .. }
    ));
    assert!(matches!(
        reject(|e| e.target.as_mut().unwrap().id = e.target.as_ref().unwrap().id.replace("us-east", "eu-de")),
        EventError::TargetOutsideLogSource { .. }
    ));
    assert_eq!(
        reject(|e| {
            let target = e.target.as_mut().unwrap();
            target.id = target.id.replace(":job:", ":program:");
            target.type_uri.clear();
        }),
        EventError::TargetKindMismatch {
            action: "quantum-computing.job.cancel".into(),
            resource_type: "program".into()
        }
    );
    assert_eq!(
        reject(|e| e.target.as_mut().unwrap().type_uri = "quantum-computing/program".into()),
        EventError::TargetTypeMismatch {
            given: "quantum-computing/program".into(),
            expected: "quantum-computing/job".into()
        }
    );
    assert_eq!(reject(|e| e.log_source_crn.clear()), EventError::Missing("log source crn"));
    assert!(matches!(
        reject(|e| e.log_source_crn = e.target.as_ref().unwrap().id.clone()),
        EventError::NotAnInstance { field: "log source", .. }
    ));
    assert_eq!(
        reject(|e| e.log_source_crn = e.log_source_crn.replace("quantum-computing", "kms")),
        EventError::ForeignService { field: "log source", service: "kms".into() }
    );
    assert_eq!(reject(|e| e.reason = None), EventError::Missing("reason"));
    assert_eq!(reject(|e| e.reason.as_mut().unwrap().reason_code = 99), EventError::InvalidReasonCode(99));
    assert_eq!(reject(|e| e.reason.as_mut().unwrap().reason_code = 70_000), EventError::InvalidReasonCode(70_000));
    assert_eq!(
        reject(|e| e.reason.as_mut().unwrap().reason_code = 200),
        EventError::OutcomeMismatch { outcome: "failure", code: 200 }
    );
    assert_eq!(reject(|e| e.message.clear()), EventError::Missing("message"));
    assert_eq!(
        reject(|e| e.correlation_id = "c".repeat(300)),
        EventError::FieldTooLong { field: "correlation id", len: 300, limit: 256 }
    );
    assert!(matches!(
        reject(|e| e.message = "m".repeat(MAX_EVENT_BYTES)),
        EventError::TooLarge { limit: MAX_EVENT_BYTES, .. }
    ));
    assert_eq!(
        reject(|e| {
            let data = e.request_data.as_mut().unwrap();
            data.fields
                .insert("x".into(), prost_types::Value { kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)) });
        }),
        EventError::NonFiniteNumber("request data")
    );
}

#[test]
fn a_resource_of_another_account_in_the_same_instance_is_a_valid_target() {
    // Bob reads Alice's public program: the event is Bob's, the program keeps Alice's CRN.
    let mut event = wire();
    event.log_source_crn = event.log_source_crn.replace("a/acc-alice", "a/acc-bob");
    assert!(decode(event).is_ok());
}

#[test]
fn errors_read_as_lowercase_sentences_naming_the_field() {
    let errors = [
        reject(|e| e.id.clear()),
        reject(|e| e.initiator.as_mut().unwrap().id.clear()),
        reject(|e| e.target.as_mut().unwrap().id = "crn:v1:bluemix:public:quantum-computing:us-east".into()),
        reject(|e| e.message = "m".repeat(MAX_EVENT_BYTES)),
    ];
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages[0], "missing event id");
    assert_eq!(messages[1], "missing initiator id");
    assert_eq!(messages[2], "invalid target crn: has 6 segments, a crn has 10");
    assert!(messages[3].starts_with("event is 1") && messages[3].ends_with("bytes, over the limit of 16384"));
    for message in messages {
        assert!(!message.ends_with('.') && message.chars().next().is_some_and(|c| c.is_lowercase()), "{message}");
    }
}

#[test]
fn control_characters_are_escaped_not_rejected() {
    let mut event = wire();
    event.initiator.as_mut().unwrap().host_agent = "curl\r\nX-Injected: 1".into();
    event.target.as_mut().unwrap().name = "\u{1b}[2Jjob\u{202e}".into();
    event.reason.as_mut().unwrap().reason_for_failure = "line1\nline2".into();
    let decoded = decode(event).unwrap();
    assert_eq!(decoded.initiator.host_agent, "curl\\r\\nX-Injected: 1");
    assert_eq!(decoded.target.name, "\\u{001b}[2Jjob\\u{202e}");
    assert_eq!(decoded.reason.reason_for_failure, "line1\\nline2");
    // Escaped once, stable afterwards: the collector can validate again without changing it.
    assert_eq!(decode(proto::AuditEvent::from(&decoded)).unwrap(), decoded);
}

#[test]
fn json_forms_reject_documents_that_are_not_events() {
    assert!(matches!(at_json::from_str("{"), Err(EventError::Json { form: "at-json", .. })));
    assert!(matches!(at_json::from_str("{}"), Err(EventError::Json { form: "at-json", .. })));
    assert!(matches!(cadf_json::from_str("[]"), Err(EventError::Json { form: "cadf-json", .. })));

    let mut at = at_json::to_value(&cancel_failure());
    at["reason"]["reasonCode"] = json!(200);
    assert_eq!(at_json::from_str(&at.to_string()), Err(EventError::OutcomeMismatch { outcome: "failure", code: 200 }));
    at["action"] = json!("quantum-computing.device.read");
    assert_eq!(
        at_json::from_str(&at.to_string()),
        Err(EventError::UnknownAction("quantum-computing.device.read".into()))
    );

    let cadf = cadf_json::to_value(&cancel_failure());
    let mut wrong_type = cadf.clone();
    wrong_type["typeURI"] = json!("http://example.com/event");
    assert!(matches!(cadf_json::from_str(&wrong_type.to_string()), Err(EventError::Json { .. })));
    let mut wrong_action = cadf.clone();
    wrong_action["action"] = json!("delete");
    assert!(matches!(cadf_json::from_str(&wrong_action.to_string()), Err(EventError::Json { .. })));
    let mut no_native = cadf.clone();
    no_native["attachments"] = json!([]);
    assert_eq!(cadf_json::from_str(&no_native.to_string()), Err(EventError::Missing("action attachment")));
    let mut bad_code = cadf;
    bad_code["reason"]["reasonCode"] = json!("conflict");
    assert!(matches!(cadf_json::from_str(&bad_code.to_string()), Err(EventError::Json { .. })));
}
