//! `Ingest.Publish` requests as the collector reads them: each event left as its bytes.
//!
//! On the wire an embedded message is a length-delimited field, exactly like a `bytes` field, so
//! [`PublishRequest`] decodes the same bytes as the generated `qtrail.audit.v1.PublishRequest`
//! but stops at each event. The ingest session then decodes every event once, straight into the
//! model (`ValidEvent::decode`), instead of prost building `google.protobuf.Struct` maps that
//! validation would only convert into JSON and drop. An event that does not decode is rejected
//! alone, like any other invalid event. Reflection still describes the public types.
//!
//! [`IngestServer`] serves `Ingest.Publish` with requests read this way, for any [`Publish`]:
//! the collector's ingest sessions, or the benchmark's ack-only server, which must read requests
//! as the collector does to be its ceiling.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use qtrail_proto::limits::MAX_MESSAGE_BYTES;
use qtrail_proto::qtrail::audit::v1 as proto;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

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
    /// `PublishedEvent.event`, every occurrence of it: a protobuf-encoded
    /// `qtrail.audit.v1.AuditEvent` is the concatenation of its occurrences (protobuf merges a
    /// message field given more than once), see [`PublishedEvent::event_bytes`].
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub event: Vec<Vec<u8>>,
}

impl PublishedEvent {
    /// Returns the encoded event, `None` when the field is absent.
    pub fn event_bytes(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        match self.event.as_slice() {
            [] => None,
            [bytes] => Some(bytes.as_slice().into()),
            parts => Some(parts.concat().into()),
        }
    }
}

/// The responses of one `Ingest.Publish` stream.
pub type PublishResponses = Pin<Box<dyn Stream<Item = Result<proto::PublishResponse, Status>> + Send + 'static>>;

/// What answers `Ingest.Publish` streams whose requests are read as [`PublishRequest`].
pub trait Publish: Send + Sync + 'static {
    /// Starts answering one stream.
    fn publish(&self, request: Request<Streaming<PublishRequest>>) -> Response<PublishResponses>;
}

/// The `Ingest` service, written out as tonic generates it but decoding requests as
/// [`PublishRequest`]: the generated server would decode every event's request and response
/// data into `google.protobuf.Struct` maps first. Same name, path, codec and size limits.
#[derive(Debug)]
pub struct IngestServer<P> {
    publish: Arc<P>,
}

impl<P> IngestServer<P> {
    /// Returns the server of `publish`.
    pub fn new(publish: P) -> Self {
        Self { publish: Arc::new(publish) }
    }
}

// Not derived: a derive would require `P: Clone`, which sharing through the `Arc` does not need.
impl<P> Clone for IngestServer<P> {
    fn clone(&self) -> Self {
        Self { publish: self.publish.clone() }
    }
}

impl<P> NamedService for IngestServer<P> {
    const NAME: &'static str = proto::ingest_server::SERVICE_NAME;
}

/// The path of `Ingest.Publish`.
const PUBLISH_PATH: &str = "/qtrail.audit.v1.Ingest/Publish";

impl<P, B> tonic::codegen::Service<http::Request<B>> for IngestServer<P>
where
    P: Publish,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != PUBLISH_PATH {
            return Box::pin(async move { Ok(Status::unimplemented("").into_http()) });
        }
        let method = PublishMethod(self.publish.clone());
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<proto::PublishResponse, PublishRequest>::default();
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_max_message_size_config(Some(MAX_MESSAGE_BYTES), Some(MAX_MESSAGE_BYTES));
            Ok(grpc.streaming(method, request).await)
        })
    }
}

/// `Ingest.Publish` as tonic's server calls it.
struct PublishMethod<P>(Arc<P>);

impl<P: Publish> tonic::server::StreamingService<PublishRequest> for PublishMethod<P> {
    type Response = proto::PublishResponse;
    type ResponseStream = PublishResponses;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<PublishRequest>>) -> Self::Future {
        let response = self.0.publish(request);
        Box::pin(async move { Ok(response) })
    }
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
                PublishedEvent { seq: 3, event: vec![event.encode_to_vec()] },
                PublishedEvent { seq: 4, event: Vec::new() },
            ],
        };
        assert_eq!(read.kind, Some(Kind::Batch(expected)));
        let hello = proto::Hello { publisher_id: "p".into(), location: "us-east".into(), epoch: 2 };
        let sent = proto::PublishRequest { kind: Some(proto::publish_request::Kind::Hello(hello.clone())) };
        let read = PublishRequest::decode(sent.encode_to_vec().as_slice()).unwrap();
        assert_eq!(read.kind, Some(Kind::Hello(hello)));
    }
}
