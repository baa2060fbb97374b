//! `qtrail.audit.v1.PublishRequest` with each event left as its encoded bytes: the form both
//! ends of `Ingest.Publish` use, hand-written beside the generated types.
//!
//! On the wire an embedded message is a length-delimited field, exactly like a `bytes` field. So
//! [`PublishRequest`], which declares `PublishedEvent.event` as `bytes`, is byte for byte the
//! generated `PublishRequest`, but stops at each event. The publisher sends the outbox's encoded
//! events unchanged through it (the generated client would decode each only for tonic to encode
//! it again), and the collector reads requests through it and decodes every event once, straight
//! into the event model, instead of prost building `google.protobuf.Struct` maps that validation
//! would only convert into JSON and drop. Reflection still describes the generated types.

use std::borrow::Cow;

use crate::qtrail::audit::v1::Hello;

/// The path of `Ingest.Publish`.
pub const PUBLISH_PATH: &str = "/qtrail.audit.v1.Ingest/Publish";

/// `qtrail.audit.v1.PublishRequest` with its events left encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishRequest {
    /// `PublishRequest.kind`.
    #[prost(oneof = "Kind", tags = "1, 2")]
    pub kind: Option<Kind>,
}

/// `PublishRequest.kind`: a Hello, or a batch of encoded events.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    /// `PublishRequest.hello`.
    #[prost(message, tag = "1")]
    Hello(Hello),
    /// `PublishRequest.batch`.
    #[prost(message, tag = "2")]
    Batch(Batch),
}

/// `qtrail.audit.v1.Batch` with its events left encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Batch {
    /// `Batch.batch_seq`.
    #[prost(uint64, tag = "1")]
    pub batch_seq: u64,
    /// `Batch.events`.
    #[prost(message, repeated, tag = "2")]
    pub events: Vec<PublishedEvent>,
}

/// `qtrail.audit.v1.PublishedEvent` whose event is left encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishedEvent {
    /// `PublishedEvent.seq`.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// `PublishedEvent.event`, every occurrence of it: a protobuf-encoded
    /// `qtrail.audit.v1.AuditEvent` is the concatenation of its occurrences (protobuf merges a
    /// message field given more than once), see [`PublishedEvent::event_bytes`]. A sender puts
    /// the whole event in one.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub event: Vec<Vec<u8>>,
}

impl PublishedEvent {
    /// Returns the event at `seq` whose protobuf-encoded `AuditEvent` is `encoded`.
    pub fn new(seq: u64, encoded: Vec<u8>) -> Self {
        Self { seq, event: vec![encoded] }
    }

    /// Returns the encoded event, `None` when the field is absent.
    pub fn event_bytes(&self) -> Option<Cow<'_, [u8]>> {
        merged(&self.event)
    }
}

/// Returns the encoded message of a message field read as the `occurrences` of a `bytes` field,
/// `None` when it has none. Protobuf merges a message field given more than once, which is the
/// message of their concatenation; one occurrence (the usual case) is borrowed, not copied.
pub fn merged<T: AsRef<[u8]>>(occurrences: &[T]) -> Option<Cow<'_, [u8]>> {
    match occurrences {
        [] => None,
        [bytes] => Some(bytes.as_ref().into()),
        parts => Some(parts.iter().flat_map(|part| part.as_ref().iter().copied()).collect::<Vec<u8>>().into()),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::qtrail::audit::v1 as proto;

    fn event() -> proto::AuditEvent {
        proto::AuditEvent { id: "e-1".into(), message: "m".into(), ..Default::default() }
    }

    /// What a publisher sends through these types is what the generated ones encode.
    #[test]
    fn an_encoded_batch_is_a_publish_request_on_the_wire() {
        let batch = PublishRequest {
            kind: Some(Kind::Batch(Batch {
                batch_seq: 7,
                events: vec![PublishedEvent::new(3, event().encode_to_vec())],
            })),
        };
        let expected = proto::PublishRequest {
            kind: Some(proto::publish_request::Kind::Batch(proto::Batch {
                batch_seq: 7,
                events: vec![proto::PublishedEvent { seq: 3, event: Some(event()) }],
            })),
        };
        assert_eq!(batch.encode_to_vec(), expected.encode_to_vec());
    }

    /// The generated request's bytes read as this one, events as they were sent.
    #[test]
    fn a_publish_request_reads_with_its_events_left_encoded() {
        let sent = proto::PublishRequest {
            kind: Some(proto::publish_request::Kind::Batch(proto::Batch {
                batch_seq: 7,
                events: vec![
                    proto::PublishedEvent { seq: 3, event: Some(event()) },
                    proto::PublishedEvent { seq: 4, event: None },
                ],
            })),
        };
        let read = PublishRequest::decode(sent.encode_to_vec().as_slice()).unwrap();
        let expected = Batch {
            batch_seq: 7,
            events: vec![PublishedEvent::new(3, event().encode_to_vec()), PublishedEvent { seq: 4, event: Vec::new() }],
        };
        assert_eq!(read.kind, Some(Kind::Batch(expected)));
        assert_eq!(read_event(&read, 0), Some(event()));
    }

    /// An event split over several occurrences of the field reads as their merge.
    #[test]
    fn an_event_given_in_parts_reads_whole() {
        let first = proto::AuditEvent { id: "e-1".into(), ..Default::default() }.encode_to_vec();
        let second = proto::AuditEvent { message: "m".into(), ..Default::default() }.encode_to_vec();
        let parted = PublishedEvent { seq: 3, event: vec![first, second] };
        let request = PublishRequest { kind: Some(Kind::Batch(Batch { batch_seq: 1, events: vec![parted] })) };
        assert_eq!(read_event(&request, 0), Some(event()));
    }

    /// Hellos pass both ways unchanged.
    #[test]
    fn a_hello_is_the_generated_hello() {
        let hello = Hello { publisher_id: "p".into(), location: "us-east".into(), epoch: 2 };
        let sent = PublishRequest { kind: Some(Kind::Hello(hello.clone())) };
        let decoded = proto::PublishRequest::decode(sent.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.kind, Some(proto::publish_request::Kind::Hello(hello.clone())));
        let read = PublishRequest::decode(decoded.encode_to_vec().as_slice()).unwrap();
        assert_eq!(read.kind, Some(Kind::Hello(hello)));
    }

    fn read_event(request: &PublishRequest, index: usize) -> Option<proto::AuditEvent> {
        let Some(Kind::Batch(batch)) = &request.kind else {
            return None;
        };
        let bytes = batch.events[index].event_bytes()?;
        Some(proto::AuditEvent::decode(bytes.as_ref()).unwrap())
    }
}
