//! `Ingest.Publish` requests as the collector reads them: each event left as its bytes.
//!
//! On the wire an embedded message is a length-delimited field, exactly like a `bytes` field, so
//! [`PublishRequest`] decodes the same bytes as the generated `qtrail.audit.v1.PublishRequest`
//! but stops at each event. The ingest session then decodes every event once, straight into the
//! model (`ValidEvent::decode`), instead of prost building `google.protobuf.Struct` maps that
//! validation would only convert into JSON and drop. An event that does not decode is rejected
//! alone, like any other invalid event. Reflection still describes the public types.

use qtrail_proto::qtrail::audit::v1 as proto;

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
    Hello(proto::Hello),
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
    /// `PublishedEvent.event`: a protobuf-encoded `qtrail.audit.v1.AuditEvent`; `None` when the
    /// field is absent.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub event: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    /// The whole point: the generated request's bytes read as this one, events as they were sent.
    #[test]
    fn a_publish_request_reads_with_its_events_left_encoded() {
        let event = proto::AuditEvent { id: "e-1".into(), message: "m".into(), ..Default::default() };
        let sent = proto::PublishRequest {
            kind: Some(proto::publish_request::Kind::Batch(proto::Batch {
                batch_seq: 7,
                events: vec![
                    proto::PublishedEvent { seq: 3, event: Some(event.clone()) },
                    proto::PublishedEvent { seq: 4, event: None },
                ],
            })),
        };
        let read = PublishRequest::decode(sent.encode_to_vec().as_slice()).unwrap();
        let expected = Batch {
            batch_seq: 7,
            events: vec![
                PublishedEvent { seq: 3, event: Some(event.encode_to_vec()) },
                PublishedEvent { seq: 4, event: None },
            ],
        };
        assert_eq!(read.kind, Some(Kind::Batch(expected)));
        let hello = proto::Hello { publisher_id: "p".into(), location: "us-east".into(), epoch: 2 };
        let sent = proto::PublishRequest { kind: Some(proto::publish_request::Kind::Hello(hello.clone())) };
        let read = PublishRequest::decode(sent.encode_to_vec().as_slice()).unwrap();
        assert_eq!(read.kind, Some(Kind::Hello(hello)));
    }
}
