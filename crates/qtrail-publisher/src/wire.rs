//! The client side of `Ingest.Publish` as a publisher sends it: requests as
//! [`qtrail_proto::encoded::PublishRequest`], each event as the bytes the outbox stores. The
//! generated client would make the publisher decode every event from the outbox only for tonic
//! to encode it again.

use qtrail_proto::encoded::{PUBLISH_PATH, PublishRequest};
use qtrail_proto::limits::MAX_MESSAGE_BYTES;
use qtrail_proto::qtrail::audit::v1::PublishResponse;
use tonic::codec::Streaming;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Opens a Publish stream on `channel` that sends `requests`, as the generated client's
/// `publish` does, with the ingest message size limits.
///
/// # Errors
/// The status the stream could not be opened with.
pub async fn publish(
    channel: Channel,
    requests: impl tonic::IntoStreamingRequest<Message = PublishRequest>,
) -> Result<tonic::Response<Streaming<PublishResponse>>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    grpc.ready().await.map_err(|err| tonic::Status::unavailable(format!("collector not ready: {err}")))?;
    let codec = tonic_prost::ProstCodec::<PublishRequest, PublishResponse>::default();
    let path = PathAndQuery::from_static(PUBLISH_PATH);
    grpc.streaming(requests.into_streaming_request(), path, codec).await
}
