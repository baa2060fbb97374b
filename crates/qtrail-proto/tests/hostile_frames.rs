//! Property tests of the Publish request as the collector reads it, events left as bytes:
//! whatever bytes a publisher sends as a request, reading them gives a clear error or a request
//! bounded by those bytes, never a panic; and the wire is the one of a peer that declares
//! `PublishedEvent.event` as an `AuditEvent` message, both ways.

use proptest::prelude::*;
use prost::Message as _;
use prost::bytes::Bytes;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::publish_request::Kind;

/// The Publish request of a peer that declares `PublishedEvent.event` as `AuditEvent`, as the
/// contract did before the field became `bytes`.
mod message_typed {
    use qtrail_proto::qtrail::audit::v1 as proto;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct PublishRequest {
        #[prost(oneof = "Kind", tags = "1, 2")]
        pub(crate) kind: Option<Kind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Kind {
        #[prost(message, tag = "1")]
        Hello(proto::Hello),
        #[prost(message, tag = "2")]
        Batch(Batch),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Batch {
        #[prost(uint64, tag = "1")]
        pub(crate) batch_seq: u64,
        #[prost(message, repeated, tag = "2")]
        pub(crate) events: Vec<PublishedEvent>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct PublishedEvent {
        #[prost(uint64, tag = "1")]
        pub(crate) seq: u64,
        #[prost(message, optional, tag = "2")]
        pub(crate) event: Option<proto::AuditEvent>,
    }
}

fn hello() -> impl Strategy<Value = proto::Hello> {
    (".{0,16}", ".{0,16}", any::<u64>()).prop_map(|(publisher_id, location, epoch)| proto::Hello {
        publisher_id,
        location,
        epoch,
    })
}

fn published_event() -> impl Strategy<Value = proto::PublishedEvent> {
    (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64))
        .prop_map(|(seq, event)| proto::PublishedEvent { seq, event: Bytes::from(event) })
}

fn request() -> impl Strategy<Value = proto::PublishRequest> {
    let batch = (any::<u64>(), proptest::collection::vec(published_event(), 0..8))
        .prop_map(|(batch_seq, events)| Kind::Batch(proto::Batch { batch_seq, events }));
    proptest::option::of(prop_oneof![hello().prop_map(Kind::Hello), batch])
        .prop_map(|kind| proto::PublishRequest { kind })
}

/// A request as a message-typed peer writes it: small events with an id and a message. The id
/// is never empty: an empty event is the one difference, written as an empty field by a
/// message-typed peer and left out as the default of `bytes`; the collector reads either as a
/// missing event.
fn message_typed_request() -> impl Strategy<Value = message_typed::PublishRequest> {
    let event = (any::<u64>(), proptest::option::of((".{1,16}", ".{0,32}"))).prop_map(|(seq, event)| {
        message_typed::PublishedEvent {
            seq,
            event: event.map(|(id, message)| proto::AuditEvent { id, message, ..Default::default() }),
        }
    });
    let batch = (any::<u64>(), proptest::collection::vec(event, 0..8))
        .prop_map(|(batch_seq, events)| message_typed::Kind::Batch(message_typed::Batch { batch_seq, events }));
    proptest::option::of(prop_oneof![hello().prop_map(message_typed::Kind::Hello), batch])
        .prop_map(|kind| message_typed::PublishRequest { kind })
}

/// What must hold of any outcome of reading `bytes` as a request.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let message_typed = message_typed::PublishRequest::decode(bytes);
    match proto::PublishRequest::decode(bytes) {
        Ok(request) => {
            // Bounded by the bytes read: no event is larger than the request that carried it.
            if let Some(Kind::Batch(batch)) = &request.kind {
                prop_assert!(batch.events.len() <= bytes.len());
                for event in &batch.events {
                    prop_assert!(event.event.len() <= bytes.len());
                }
            }
            // Stable: it reads back as itself once written.
            prop_assert_eq!(&proto::PublishRequest::decode(request.encode_to_vec().as_slice()).unwrap(), &request);
            // A Hello reads as a message-typed peer reads it.
            if let Some(Kind::Hello(hello)) = &request.kind {
                let read = message_typed.expect("a message-typed peer reads a hello this reads");
                prop_assert_eq!(read.kind, Some(message_typed::Kind::Hello(hello.clone())));
            }
        }
        Err(err) => {
            // Whatever a message-typed peer reads (its events decoded) reads here too.
            prop_assert!(message_typed.is_err(), "a message-typed peer reads what this does not: {}", err);
            prop_assert!(!err.to_string().is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_read_as_an_error_or_a_bounded_request(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        check(&bytes)?;
    }

    /// Requests as a publisher writes them read back as they were.
    #[test]
    fn written_requests_read_back_whole(request in request()) {
        let bytes = request.encode_to_vec();
        prop_assert_eq!(&proto::PublishRequest::decode(bytes.as_slice()).unwrap(), &request);
        check(&bytes)?;
    }

    /// A message-typed peer and this declaration write the same bytes for the same request, and
    /// each reads what the other writes, every event the same `AuditEvent`.
    #[test]
    fn the_wire_is_that_of_a_message_typed_peer(sent in message_typed_request()) {
        let bytes = sent.encode_to_vec();
        let read = proto::PublishRequest::decode(bytes.as_slice()).unwrap();
        prop_assert_eq!(read.encode_to_vec(), bytes.clone());
        match (&sent.kind, &read.kind) {
            (None, None) => {}
            (Some(message_typed::Kind::Hello(sent)), Some(Kind::Hello(read))) => prop_assert_eq!(sent, read),
            (Some(message_typed::Kind::Batch(sent)), Some(Kind::Batch(read))) => {
                prop_assert_eq!(sent.batch_seq, read.batch_seq);
                prop_assert_eq!(sent.events.len(), read.events.len());
                for (sent, read) in sent.events.iter().zip(&read.events) {
                    prop_assert_eq!(sent.seq, read.seq);
                    // An absent event reads as empty bytes, which decode as the empty event.
                    let event = proto::AuditEvent::decode(read.event.as_ref()).unwrap();
                    prop_assert_eq!(&sent.event.clone().unwrap_or_default(), &event);
                }
            }
            (sent, read) => prop_assert!(false, "sent {:?}, read {:?}", sent, read),
        }
        prop_assert_eq!(message_typed::PublishRequest::decode(read.encode_to_vec().as_slice()).unwrap(), sent);
        check(&bytes)?;
    }

    /// A written request with bytes changed, cut or added: an error or a bounded request.
    #[test]
    fn mutated_requests_read_as_an_error_or_a_bounded_request(
        request in request(),
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = request.encode_to_vec();
        if !bytes.is_empty() {
            for (at, byte) in &changes {
                let at = at.index(bytes.len());
                bytes[at] = *byte;
            }
            bytes.truncate(cut.index(bytes.len()) + 1);
        }
        check(&bytes)?;
    }
}
