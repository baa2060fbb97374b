//! The three forms of an event (protobuf, AT-JSON, CADF-JSON) against each other and against
//! golden files, and the canonical bytes and hash chain over them.

mod common;

use std::path::PathBuf;

use qtrail_cadf::{
    Action, AuditEvent, ChainHash, Outcome, Severity, at_json, cadf_json, canonical_bytes, chain_hash,
    chain_hash_of_bytes,
};
use qtrail_proto::qtrail::audit::v1 as proto;
use serde_json::Value;

use common::*;

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

/// Compares `actual` with a golden file as JSON values (key order does not matter). With
/// `UPDATE_GOLDEN=1` the file is rewritten instead.
fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, format!("{actual}\n")).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let golden_value: Value = serde_json::from_str(&golden).unwrap();
    let actual_value: Value = serde_json::from_str(actual).unwrap();
    assert_eq!(actual_value, golden_value, "{name} differs from its golden file");
}

#[test]
fn every_action_round_trips_through_every_form() {
    for event in one_per_action().into_iter().chain(one_per_collector_action()) {
        let wire = proto::AuditEvent::from(&event);
        assert_eq!(AuditEvent::try_from(wire).unwrap(), event, "protobuf {}", event.action);
        assert_eq!(at_json::from_str(&at_json::to_string(&event)).unwrap(), event, "at-json {}", event.action);
        assert_eq!(cadf_json::from_str(&cadf_json::to_string(&event)).unwrap(), event, "cadf-json {}", event.action);
        // Through all three in a row.
        let through_all = cadf_json::from_str(&cadf_json::to_string(
            &at_json::from_str(&at_json::to_string(&AuditEvent::try_from(proto::AuditEvent::from(&event)).unwrap()))
                .unwrap(),
        ))
        .unwrap();
        assert_eq!(canonical_bytes(&through_all), canonical_bytes(&event));
    }
}

#[test]
fn failures_round_trip_too() {
    for event in
        [cancel_failure(), builder(Action::ProgramCreate, "", "bell").failure(409, "name taken").build().unwrap()]
    {
        assert_eq!(AuditEvent::try_from(proto::AuditEvent::from(&event)).unwrap(), event);
        assert_eq!(at_json::from_str(&at_json::to_string(&event)).unwrap(), event);
        assert_eq!(cadf_json::from_str(&cadf_json::to_string(&event)).unwrap(), event);
    }
}

#[test]
fn golden_at_json() {
    check_golden("at-json/read-success.json", &at_json::to_string_pretty(&read_success()));
    check_golden("at-json/cancel-failure.json", &at_json::to_string_pretty(&cancel_failure()));
    // And the golden files parse back to the very same events.
    let read = std::fs::read_to_string(golden_path("at-json/read-success.json")).unwrap();
    assert_eq!(at_json::from_str(&read).unwrap(), read_success());
    let cancel = std::fs::read_to_string(golden_path("at-json/cancel-failure.json")).unwrap();
    assert_eq!(at_json::from_str(&cancel).unwrap(), cancel_failure());
}

#[test]
fn golden_cadf_json() {
    check_golden("cadf-json/read-success.json", &cadf_json::to_string_pretty(&read_success()));
    check_golden("cadf-json/cancel-failure.json", &cadf_json::to_string_pretty(&cancel_failure()));
    let read = std::fs::read_to_string(golden_path("cadf-json/read-success.json")).unwrap();
    assert_eq!(cadf_json::from_str(&read).unwrap(), read_success());
    let cancel = std::fs::read_to_string(golden_path("cadf-json/cancel-failure.json")).unwrap();
    assert_eq!(cadf_json::from_str(&cancel).unwrap(), cancel_failure());
}

#[test]
fn golden_canonical_bytes() {
    let path = golden_path("canonical/cancel-failure.json");
    let actual = canonical_bytes(&cancel_failure());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    // Byte for byte: the canonical form is a contract, not just equivalent JSON.
    assert_eq!(String::from_utf8(actual).unwrap(), std::fs::read_to_string(&path).unwrap());
}

#[test]
fn cancel_failure_derives_what_is_derivable() {
    let event = cancel_failure();
    assert_eq!(event.outcome, Outcome::Failure);
    assert_eq!(event.severity, Severity::Warning);
    assert_eq!(event.reason.reason_type, "Conflict");
    assert_eq!(event.message, "Qiskit Runtime: cancel job cjb0q1v6 -failure");
    assert_eq!(
        event.target.crn.as_str(),
        "crn:v1:bluemix:public:quantum-computing:us-east:a/acc-alice:qr-inst-1:job:cjb0q1v6"
    );
    assert_eq!(event.target.type_uri(), "quantum-computing/job");
    assert_eq!(event.location(), "us-east");
    let cadf = cadf_json::to_value(&event);
    assert_eq!(cadf["action"], "update/cancel");
    assert_eq!(cadf["reason"]["reasonCode"], "409");
    assert_eq!(cadf["target"]["typeURI"], "data/workload/job");
    let at = at_json::to_value(&event);
    assert_eq!(at["reason"]["reasonCode"], 409);
    assert_eq!(at["eventTime"], "2024-05-01T12:34:56.780+0000");
    assert_eq!(at["observer"]["name"], "ActivityTracker");
}

#[test]
fn builder_messages() {
    let list = builder(Action::ProgramRead, "", "").build().unwrap();
    assert_eq!(list.message, "Qiskit Runtime: list programs");
    assert_eq!(cadf_json::to_value(&list)["action"], "read/list");
    let denied = builder(Action::JobRead, "", "").failure(401, "missing api key").build().unwrap();
    assert_eq!(denied.message, "Qiskit Runtime: list jobs -failure");
    assert_eq!(denied.severity, Severity::Critical);
    let delete = builder(Action::ProgramDelete, "bell-1", "bell").build().unwrap();
    assert_eq!(delete.message, "Qiskit Runtime: delete program bell");
    assert_eq!(delete.severity, Severity::Critical);
    let unnamed = builder(Action::JobRead, "j-9", "").status(200).build().unwrap();
    assert_eq!(unnamed.message, "Qiskit Runtime: read job j-9");
    // An id straight from a caller still makes a valid target.
    let odd = builder(Action::JobRead, "no such\njob", "no such\njob").failure(404, "job not found").build().unwrap();
    assert!(odd.target.crn.as_str().ends_with(":job:no%20such%0Ajob"));
    assert_eq!(odd.target.name, "no such\\njob");
    // Fresh ids are UUIDv7 and distinct.
    let a = qtrail_cadf::EventBuilder::new(Action::JobRead, log_source(), alice()).build().unwrap();
    let b = qtrail_cadf::EventBuilder::new(Action::JobRead, log_source(), alice()).build().unwrap();
    assert_eq!(a.id.get_version_num(), 7);
    assert_ne!(a.id, b.id);
    assert_ne!(a.correlation_id, b.correlation_id);
}

/// Writes JSON with every object's keys in reverse order, to feed parsers a different order.
fn reversed_json(value: &Value) -> String {
    match value {
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            keys.reverse();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), reversed_json(&object[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(reversed_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

#[test]
fn canonical_bytes_ignore_key_order_and_number_spelling() {
    let event = one_per_action().remove(4);
    let forward = at_json::to_string(&event);
    let backward = reversed_json(&at_json::to_value(&event));
    assert_ne!(forward, backward);
    assert_eq!(canonical_bytes(&at_json::from_str(&backward).unwrap()), canonical_bytes(&event));

    let a = builder(Action::JobCreate, "j-1", "j-1")
        .request_data(serde_json::from_str(r#"{"b": 1, "a": {"y": 2.0, "x": [3, 4.5]}}"#).unwrap())
        .build()
        .unwrap();
    let b = builder(Action::JobCreate, "j-1", "j-1")
        .request_data(serde_json::from_str(r#"{"a": {"x": [3.0, 4.5], "y": 2}, "b": 1.0}"#).unwrap())
        .build()
        .unwrap();
    assert_eq!(canonical_bytes(&a), canonical_bytes(&b));
    let text = String::from_utf8(canonical_bytes(&a)).unwrap();
    assert!(text.contains(r#""requestData":{"a":{"x":[3,4.5],"y":2},"b":1}"#), "{text}");
    // Large integers read back as the double protobuf would carry.
    let big = builder(Action::JobCreate, "j-1", "j-1")
        .request_data(serde_json::from_str(r#"{"n": 12345678901234567890}"#).unwrap())
        .build()
        .unwrap();
    assert_eq!(AuditEvent::try_from(proto::AuditEvent::from(&big)).unwrap(), big);
}

#[test]
fn canonical_bytes_change_with_any_field() {
    let base = cancel_failure();
    let mut changed = base.clone();
    changed.initiator.host_agent.push('!');
    assert_ne!(canonical_bytes(&base), canonical_bytes(&changed));
    let mut changed = base.clone();
    changed.save_service_copy = false;
    assert_ne!(canonical_bytes(&base), canonical_bytes(&changed));
    let mut changed = base.clone();
    changed.request_data = None;
    assert_ne!(canonical_bytes(&base), canonical_bytes(&changed));
}

#[test]
fn chain_hash_known_answers() {
    // SHA-256 of 32 zero bytes followed by "abc", computed independently with Python's hashlib.
    assert_eq!(
        chain_hash_of_bytes(&ChainHash::GENESIS, b"abc").to_hex(),
        "365aa7d8f7f9402c4b9434502b4cc89ddb09fe50d7cd95b493b834c62d5a5370"
    );
    // The golden cancel event hashed from genesis, then the golden read chained onto it. Python
    // derived the second value from the AT-JSON golden file with its own canonical encoder
    // (json.dumps, sorted keys, compact), so this also checks the canonical format itself.
    let first = chain_hash(&ChainHash::GENESIS, &cancel_failure());
    assert_eq!(first.to_hex(), "52464eca93e4d5ab9fca670f2178ec15986f1414b5cfdb04dc1b7c557243653d");
    let second = chain_hash(&first, &read_success());
    assert_eq!(second.to_hex(), "ebb3bea2207bc7444d5aabbcb4c6533ee82758b80376bb41f3555a2b8d2d1fc8");
    assert_eq!(ChainHash::from_slice(first.as_bytes()), Some(first));
    assert_eq!(ChainHash::from_slice(&[0; 31]), None);
}

/// The collector's own events carry its CRNs, owned by no account, and say so in every form.
#[test]
fn collector_events_name_the_collector_and_its_log() {
    let events = one_per_collector_action();
    let read = &events[0];
    assert_eq!(read.action, Action::EventsRead);
    assert_eq!(read.log_source_crn.as_str(), "crn:v1:bluemix:public:qtrail:us-east::collector::");
    assert_eq!(read.target.crn.as_str(), "crn:v1:bluemix:public:qtrail:us-east::collector:log:us-east");
    assert_eq!(read.message, "qtrail: read events us-east");
    let at: Value = serde_json::from_str(&at_json::to_string(read)).unwrap();
    assert_eq!(at["action"], "qtrail.events.read");
    assert_eq!(at["target"]["typeURI"], "qtrail/log");
    let login = events.iter().find(|event| event.action == Action::ConsoleLogin).unwrap();
    assert_eq!(login.message, "qtrail: login console");
    let cadf: Value = serde_json::from_str(&cadf_json::to_string(login)).unwrap();
    assert_eq!(cadf["action"], "authenticate/login");
    assert_eq!(cadf["target"]["typeURI"], "service/security");
    // A runtime action on the collector's CRNs, or a collector action on a runtime instance, is
    // refused: neither service can speak for the other.
    let mut forged = read.clone();
    forged.action = Action::JobRead;
    assert!(forged.validate().is_err());
    let mut foreign = builder(Action::JobRead, "", "").build().unwrap();
    foreign.action = Action::EventsRead;
    assert!(foreign.validate().is_err());
}
