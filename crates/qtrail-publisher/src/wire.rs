//! `Ingest.Publish` as a publisher sends it: each event as the bytes the outbox stores.
//!
//! On the wire an embedded message is a length-delimited field, exactly like a `bytes` field.
//! So [`EncodedPublishRequest`], which declares `PublishedEvent.event` as `bytes`, sends the
//! outbox's encoded `AuditEvent` unchanged and is byte for byte the `PublishRequest` of the
//! generated types (the collector reads it the same way round, events left as bytes). The generated client would make the publisher
//! decode every event from the outbox only for tonic to encode it again.

use qtrail_proto::limits::MAX_MESSAGE_BYTES;
use qtrail_proto::qtrail::audit::v1::{Hello, PublishResponse};
use tonic::codec::Streaming;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// `qtrail.audit.v1.PublishRequest` with pre-encoded events.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncodedPublishRequest {
    /// `PublishRequest.kind`.
    #[prost(oneof = "EncodedKind", tags = "1, 2")]
    pub kind: Option<EncodedKind>,
}

/// `PublishRequest.kind`: a Hello, or a batch of pre-encoded events.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum EncodedKind {
    /// `PublishRequest.hello`.
    #[prost(message, tag = "1")]
    Hello(Hello),
    /// `PublishRequest.batch`.
    #[prost(message, tag = "2")]
    Batch(EncodedBatch),
}

/// `qtrail.audit.v1.Batch` with pre-encoded events.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncodedBatch {
    /// `Batch.batch_seq`.
    #[prost(uint64, tag = "1")]
    pub batch_seq: u64,
    /// `Batch.events`.
    #[prost(message, repeated, tag = "2")]
    pub events: Vec<EncodedEvent>,
}

/// `qtrail.audit.v1.PublishedEvent` whose event is already encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncodedEvent {
    /// `PublishedEvent.seq`.
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    /// `PublishedEvent.event`: a protobuf-encoded `qtrail.audit.v1.AuditEvent`.
    #[prost(bytes = "vec", tag = "2")]
    pub event: Vec<u8>,
}

/// Opens a Publish stream on `channel` that sends `requests`, as the generated client's
/// `publish` does, with the ingest message size limits.
///
/// # Errors
/// The status the stream could not be opened with.
pub async fn publish(
    channel: Channel,
    requests: impl tonic::IntoStreamingRequest<Message = EncodedPublishRequest>,
) -> Result<tonic::Response<Streaming<PublishResponse>>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    grpc.ready().await.map_err(|err| tonic::Status::unavailable(format!("collector not ready: {err}")))?;
    let codec = tonic_prost::ProstCodec::<EncodedPublishRequest, PublishResponse>::default();
    let path = PathAndQuery::from_static("/qtrail.audit.v1.Ingest/Publish");
    grpc.streaming(requests.into_streaming_request(), path, codec).await
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use qtrail_proto::qtrail::audit::v1 as proto;

    use super::*;

    /// The whole point: what the publisher sends is what the collector's types decode.
    #[test]
    fn an_encoded_batch_is_a_publish_request_on_the_wire() {
        let event = proto::AuditEvent { id: "e-1".into(), message: "m".into(), ..Default::default() };
        let batch = EncodedPublishRequest {
            kind: Some(EncodedKind::Batch(EncodedBatch {
                batch_seq: 7,
                events: vec![EncodedEvent { seq: 3, event: event.encode_to_vec() }],
            })),
        };
        let expected = proto::PublishRequest {
            kind: Some(proto::publish_request::Kind::Batch(proto::Batch {
                batch_seq: 7,
                events: vec![proto::PublishedEvent { seq: 3, event: Some(event) }],
            })),
        };
        assert_eq!(batch.encode_to_vec(), expected.encode_to_vec());
        let hello = Hello { publisher_id: "p".into(), location: "us-east".into(), epoch: 2 };
        let sent = EncodedPublishRequest { kind: Some(EncodedKind::Hello(hello.clone())) };
        let decoded = proto::PublishRequest::decode(sent.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.kind, Some(proto::publish_request::Kind::Hello(hello)));
    }
}
