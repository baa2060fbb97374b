//! The `Ingest` service as the collector serves it: requests read as
//! [`qtrail_proto::encoded::PublishRequest`], each event left as its bytes. The ingest session then
//! decodes every event once, straight into the model (`ValidEvent::decode`); an event that does
//! not decode is rejected alone, like any other invalid event. Reflection still describes the
//! public types.
//!
//! [`IngestServer`] serves `Ingest.Publish` this way for any [`Publish`]: the collector's ingest
//! sessions, or the benchmark's ack-only server, which must read requests as the collector does
//! to be its ceiling.
//!
//! Requests are read through [`PublishCodec`]: a request that is not a `PublishRequest` fails the
//! stream INVALID_ARGUMENT (the publisher sent it), where prost's codec would say INTERNAL.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use qtrail_proto::encoded::{PUBLISH_PATH, PublishRequest};
use qtrail_proto::limits::MAX_MESSAGE_BYTES;
use qtrail_proto::qtrail::audit::v1 as proto;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

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
            let mut grpc = tonic::server::Grpc::new(PublishCodec)
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

/// The codec of `Ingest.Publish`: prost's, but a request whose bytes do not decode is
/// INVALID_ARGUMENT, so that the session can tell a publisher's garbage (a protocol error it
/// answers) from a stream that broke (which it ends quietly).
#[derive(Debug, Clone, Copy, Default)]
pub struct PublishCodec;

impl Codec for PublishCodec {
    type Encode = proto::PublishResponse;
    type Decode = PublishRequest;
    type Encoder = tonic_prost::ProstEncoder<proto::PublishResponse>;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder
    }
}

/// Decodes [`PublishRequest`]s; see [`PublishCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestDecoder;

impl Decoder for RequestDecoder {
    type Item = PublishRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<PublishRequest>, Status> {
        use prost::Message as _;
        PublishRequest::decode(buf)
            .map(Some)
            .map_err(|err| Status::invalid_argument(format!("publish request does not decode: {err}")))
    }
}
