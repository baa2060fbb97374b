//! Requests whose body is not the method's message: refused INVALID_ARGUMENT and audited.

use prost::bytes::{Buf, BufMut};
use qtrail_cadf::{Action, Severity};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

use crate::harness::{ALICE, Expected, TestRuntime, assert_event, call};

/// Sends and receives raw protobuf bytes, so a test can send what no generated client would.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Self::Error> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_field_that_is_not_utf8_is_refused_invalid_argument_and_audited() {
    let runtime = TestRuntime::start().await;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", runtime.addr)).unwrap();
    let mut grpc = tonic::client::Grpc::new(endpoint.connect().await.unwrap());
    // GetJobRequest { id (field 1, length-delimited) = [0xff, 0xfe] }: not UTF-8.
    let body = vec![0x0a, 0x02, 0xff, 0xfe];
    for (path, action) in [
        ("/qtrail.runtime.v1.JobService/GetJob", Action::JobRead),
        ("/qtrail.runtime.v1.ProgramService/DeleteProgram", Action::ProgramDelete),
    ] {
        let (request, correlation) = call(body.clone(), Some(ALICE));
        grpc.ready().await.unwrap();
        let status = grpc.unary(request, PathAndQuery::from_static(path), RawCodec).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert!(status.message().starts_with("invalid request: cannot decode the message"), "{}", status.message());
        let event = runtime.event(&correlation).await;
        let severity = if action == Action::ProgramDelete { Severity::Critical } else { Severity::Warning };
        assert_event(&event, Expected { action, code: 400, severity, target: None, account: "acc-alice" });
        assert_eq!(event.initiator.id, "IBMid-alice");
        assert_eq!(event.reason.reason_for_failure, status.message());
    }
    // A well-formed raw request still reaches the handler, once: one event, the handler's.
    let (request, correlation) = call(vec![0x0a, 0x03, b'a', b'b', b'c'], Some(ALICE));
    grpc.ready().await.unwrap();
    let path = PathAndQuery::from_static("/qtrail.runtime.v1.JobService/GetJob");
    let status = grpc.unary(request, path, RawCodec).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(runtime.event(&correlation).await.reason.code, 404);
}
