//! Fixtures shared by the qtrail-cadf integration tests.

#![allow(dead_code, unreachable_pub)]

use qtrail_cadf::{Action, AuditEvent, Crn, EventBuilder, EventTime, Initiator, JsonObject, Location};
use serde_json::json;
use uuid::Uuid;

/// The service instance every fixture event comes from.
pub fn log_source() -> Crn {
    let location: Location = "us-east".parse().unwrap();
    Crn::instance(&location, "acc-alice", "qr-inst-1").unwrap()
}

/// Alice, calling with an API key.
pub fn alice() -> Initiator {
    Initiator {
        id: "IBMid-550003ABCD".into(),
        name: "alice@example.com".into(),
        type_uri: qtrail_cadf::event::INITIATOR_USER.into(),
        credential_type: "apikey".into(),
        host_address: "192.0.2.10".into(),
        host_agent: "qiskit-ibm-runtime/0.9.0".into(),
    }
}

/// A fixed time, 2024-05-01T12:34:56.780Z.
pub fn fixed_time() -> EventTime {
    "2024-05-01T12:34:56.780Z".parse().unwrap()
}

pub fn object(value: serde_json::Value) -> JsonObject {
    match value {
        serde_json::Value::Object(object) => object,
        other => panic!("not an object: {other}"),
    }
}

/// A deterministic builder for `action`, targeting a resource with id `target_id` (or the
/// instance when empty).
pub fn builder(action: Action, target_id: &str, target_name: &str) -> EventBuilder {
    EventBuilder::new(action, log_source(), alice())
        .id(Uuid::parse_str("0190f3a4-5b6c-7d8e-9f01-23456789abcd").unwrap())
        .event_time(fixed_time())
        .correlation_id("bcac04dc-e0be-4110-862c-347088a7836a")
        .target(target_id, target_name)
}

/// The golden successful read: GetJob of a completed job.
pub fn read_success() -> AuditEvent {
    builder(Action::JobRead, "cjb0q1v6", "cjb0q1v6")
        .request_data(object(json!({"jobId": "cjb0q1v6", "requestId": "req-1"})))
        .response_data(object(json!({"status": "COMPLETED", "programId": "bell-a1b2c3"})))
        .build()
        .unwrap()
}

/// The golden failed cancel: CancelJob of a job that already completed.
pub fn cancel_failure() -> AuditEvent {
    builder(Action::JobCancel, "cjb0q1v6", "cjb0q1v6")
        .failure(409, "job cannot be cancelled: job is COMPLETED")
        .request_data(object(json!({"jobId": "cjb0q1v6", "requestId": "req-2"})))
        .build()
        .unwrap()
}

/// One event per action, each with the data its real RPC would carry.
pub fn one_per_action() -> Vec<AuditEvent> {
    Action::ALL
        .into_iter()
        .map(|action| {
            let (id, name, data) = match action {
                Action::ProgramCreate => ("bell-a1b2c3", "bell", json!({"name": "bell", "isPublic": false})),
                Action::ProgramRead => ("", "", json!({"limit": 10, "offset": 0})),
                Action::ProgramUpdate => (
                    "bell-a1b2c3",
                    "bell",
                    json!({"updateType": "description", "initialValue": "old", "newValue": "new"}),
                ),
                Action::ProgramDelete => ("bell-a1b2c3", "bell", json!({"programId": "bell-a1b2c3"})),
                Action::JobCreate => {
                    ("j-1", "j-1", json!({"programId": "bell-a1b2c3", "params": {"shots": 1024, "seed": 7}}))
                }
                Action::JobRead => ("", "", json!({"pending": true, "tags": ["a", "b"], "ratio": 0.25})),
                Action::JobCancel => ("j-1", "j-1", json!({"jobId": "j-1"})),
                Action::JobDelete => ("j-1", "j-1", json!({"jobId": "j-1", "nested": {"list": [1, 2.5, null, "x"]}})),
                // `Action::ALL` holds the runtime's eight only; the collector's own are built
                // by the collector on its own log source.
                _ => unreachable!("not a runtime action: {action}"),
            };
            builder(action, id, name).request_data(object(data)).build().unwrap()
        })
        .collect()
}

/// One event per collector action, as the collector records the trail's own use: initiated by
/// an auditor token, on the collector of `us-east`, targeting its log, a rule or the collector.
pub fn one_per_collector_action() -> Vec<AuditEvent> {
    let location: Location = "us-east".parse().unwrap();
    let auditor = Initiator {
        id: "auditor-1".into(),
        name: "auditor-1".into(),
        type_uri: qtrail_cadf::event::INITIATOR_SERVICE_ID.into(),
        credential_type: "token".into(),
        host_address: "127.0.0.1".into(),
        host_agent: String::new(),
    };
    Action::COLLECTOR
        .into_iter()
        .map(|action| {
            let builder =
                EventBuilder::new(action, Crn::collector(&location), auditor.clone()).event_time(fixed_time());
            let builder = match action {
                Action::ConsoleLogin => builder,
                Action::AlertRuleCreate | Action::AlertRuleUpdate | Action::AlertRuleDelete => {
                    builder.target("fail-burst", "fail-burst")
                }
                _ => builder.target("us-east", "us-east"),
            };
            builder.request_data(object(json!({"filter": {"action": "quantum-computing.job"}}))).build().unwrap()
        })
        .collect()
}
