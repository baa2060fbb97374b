//! Property tests of event decoding and validation against hostile bytes: whatever a publisher
//! sends, decoding gives a clear error or a valid, bounded event, never a panic or a blow-up,
//! and it agrees with what prost and `ValidEvent::try_from` make of the same bytes.

mod common;

use proptest::prelude::*;
use qtrail_cadf::proto::MAX_ENCODED_EVENT_BYTES;
use qtrail_cadf::{EventError, MAX_EVENT_BYTES, ValidEvent};
use qtrail_proto::qtrail::audit::v1 as proto;
use serde_json::json;

use common::*;

/// Encoded events that are valid, to mutate: one per action, and one with nested data.
fn valid_encodings() -> Vec<Vec<u8>> {
    let mut events = one_per_action();
    let nested = json!({"a": [1, -2.5, null, true, "x\u{1b}y", {"b": {"c": [[], {}]}}], "": ""});
    events.push(
        builder(qtrail_cadf::Action::JobRead, "j-1", "job")
            .request_data(object(nested))
            .response_data(object(json!({"status": "DONE"})))
            .status(200)
            .build()
            .expect("valid event"),
    );
    events.iter().map(|event| prost::Message::encode_to_vec(&proto::AuditEvent::from(event))).collect()
}

/// One change to an encoded event.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the byte at (index modulo length) with the value.
    Set(usize, u8),
    /// Insert bytes at (index modulo length + 1).
    Insert(usize, Vec<u8>),
    /// Remove up to `n` bytes from (index modulo length).
    Remove(usize, usize),
    /// Keep the first (index modulo length + 1) bytes.
    Truncate(usize),
    /// Append a copy of the bytes (protobuf merges fields given twice).
    Repeat,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        2 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        2 => (any::<usize>(), 1..8_usize).prop_map(|(at, n)| Mutation::Remove(at, n)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => Just(Mutation::Repeat),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    match mutation {
        Mutation::Set(at, byte) => bytes[at % len] = *byte,
        Mutation::Insert(at, inserted) => {
            let at = at % len + 1;
            bytes.splice(at..at, inserted.iter().copied());
        }
        Mutation::Remove(at, n) => {
            let at = at % len;
            bytes.drain(at..(at + n).min(len));
        }
        Mutation::Truncate(at) => bytes.truncate(at % len + 1),
        Mutation::Repeat => bytes.extend_from_within(..),
    }
}

/// What must hold of any outcome of decoding `bytes`.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    match ValidEvent::decode(bytes) {
        Ok(valid) => {
            // A valid, bounded event that validates again as it is.
            prop_assert!(valid.canonical().len() <= MAX_EVENT_BYTES);
            prop_assert!(valid.event().validate().is_ok());
            // The same event prost and validation make of these bytes.
            let through_prost = <proto::AuditEvent as prost::Message>::decode(bytes)
                .map_err(|err| EventError::Undecodable(err.to_string()))
                .and_then(ValidEvent::try_from);
            prop_assert_eq!(Some(&valid), through_prost.as_ref().ok());
        }
        Err(err) => {
            // A clear message: lowercase, no trailing period.
            let message = err.to_string();
            prop_assert!(!message.is_empty());
            prop_assert!(!message.starts_with(|c: char| c.is_ascii_uppercase()), "{}", message);
            prop_assert!(!message.ends_with('.'), "{}", message);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random bytes: nearly always an error, never a panic.
    #[test]
    fn random_bytes_decode_to_an_error_or_a_valid_event(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes)?;
    }

    /// A valid event with a few bytes changed: an error or a valid event, never a panic, and
    /// always what prost and validation make of it.
    #[test]
    fn mutated_events_decode_to_an_error_or_a_valid_event(
        which in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let encodings = valid_encodings();
        let mut bytes = which.get(&encodings).clone();
        for mutation in &mutations {
            apply(&mut bytes, mutation);
        }
        check(&bytes)?;
    }
}

/// An event over the encoded limit is refused before it is decoded, however valid its start.
#[test]
fn an_event_over_the_encoded_limit_is_refused_unread() {
    let mut bytes = valid_encodings().remove(0);
    let copies = MAX_ENCODED_EVENT_BYTES / bytes.len() + 1;
    bytes = bytes.repeat(copies);
    let err = ValidEvent::decode(&bytes).unwrap_err();
    assert_eq!(err.to_string(), format!("event is {} bytes, over the limit of {MAX_ENCODED_EVENT_BYTES}", bytes.len()));
}
