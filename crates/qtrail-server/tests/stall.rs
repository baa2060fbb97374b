//! The write-stall deadline on the gRPC side: a peer that asks for an endless response and then
//! reads nothing (its TCP window closes, or it never opens its HTTP/2 window) loses its
//! connection, and the call on it ends, while other clients go on being served.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, Response};
use hyper::body::Frame;
use qtrail_server::incoming::GrpcTimeouts;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Far beyond what a local connection needs.
const DEADLINE: Duration = Duration::from_secs(20);

/// A service whose every call answers with zeros for ever; `ended` is cancelled when a
/// response is dropped, which is when its call ends.
#[derive(Debug, Clone)]
struct Endless {
    ended: CancellationToken,
}

impl tonic::server::NamedService for Endless {
    const NAME: &'static str = "test.Endless";
}

impl tower::Service<Request<tonic::body::Body>> for Endless {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<tonic::body::Body>) -> Self::Future {
        let body = Zeros { _ended: self.ended.clone().drop_guard() };
        let response = Response::builder().header("content-type", "application/grpc");
        std::future::ready(Ok(response.body(tonic::body::Body::new(body)).unwrap()))
    }
}

/// An endless body of zeros.
struct Zeros {
    _ended: DropGuard,
}

impl hyper::body::Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[0; 16 * 1024])))))
    }
}

#[tokio::test]
async fn a_peer_that_reads_nothing_loses_its_connection_after_the_write_stall_deadline() {
    peer_that_reads_nothing(true).await;
}

#[tokio::test]
async fn a_peer_that_never_opens_its_http2_window_loses_its_connection_after_the_write_stall_deadline() {
    peer_that_reads_nothing(false).await;
}

/// Serves [`Endless`] and health with a short write-stall deadline, has a peer call
/// [`Endless`] and read nothing (`open_windows`: see [`endless_call`]), and checks that its
/// call and connection end while another client's watch goes on.
async fn peer_that_reads_nothing(open_windows: bool) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let timeouts = GrpcTimeouts {
        first_request: Duration::from_secs(600),
        idle: Duration::from_secs(600),
        write_stall: Duration::from_millis(300),
    };
    let incoming = qtrail_server::incoming::incoming_with_timeouts(listener, 16, timeouts);
    let (reporter, health) = tonic_health::server::health_reporter();
    let ended = CancellationToken::new();
    let mut builder = qtrail_server::tls::grpc_server(None).unwrap().layer(incoming.activity_layer());
    let router = builder.add_service(health).add_service(Endless { ended: ended.clone() });
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move { router.serve_with_incoming_shutdown(incoming, stopped.cancelled_owned()).await });

    // Another client, with a call in progress throughout.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut watch = HealthClient::new(channel.clone()).watch(HealthCheckRequest::default()).await.unwrap().into_inner();
    watch.message().await.expect("the first status").expect("a status");

    let mut stalled = endless_call(addr, open_windows).await;
    let ended_in_time = tokio::time::timeout(DEADLINE, ended.cancelled()).await;
    assert!(ended_in_time.is_ok(), "the stalled call did not end");
    let drained = tokio::time::timeout(DEADLINE, stalled.read_to_end(&mut Vec::new())).await;
    assert!(drained.is_ok(), "the stalled connection was not closed");

    // The other client was not affected, and new calls are served.
    reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    let status = watch.message().await.expect("the watch still works").expect("a status");
    assert_eq!(status.status, tonic_health::pb::health_check_response::ServingStatus::NotServing as i32);
    HealthClient::new(channel).check(HealthCheckRequest::default()).await.expect("still served");
    stop.cancel();
}

/// Opens an HTTP/2 connection that calls [`Endless`] and then reads nothing: with every
/// flow-control window opened wide (`open_windows`), so that only TCP can hold the server
/// back; else with HTTP/2's default 64 KiB windows, never opened further.
async fn endless_call(addr: SocketAddr, open_windows: bool) -> tokio::net::TcpStream {
    const MAX_WINDOW: u32 = 0x7fff_ffff;
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    if open_windows {
        // SETTINGS_INITIAL_WINDOW_SIZE for every stream, and the connection's window.
        let mut settings = vec![0, 4];
        settings.extend_from_slice(&MAX_WINDOW.to_be_bytes());
        frame(&mut bytes, 4, 0, 0, &settings);
        frame(&mut bytes, 8, 0, 0, &(MAX_WINDOW - 65_535).to_be_bytes());
    } else {
        frame(&mut bytes, 4, 0, 0, &[]);
    }
    let mut headers = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/test.Endless/Get"),
        (":authority", "x"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        // An HPACK literal without indexing, no Huffman coding.
        headers.push(0);
        for part in [name, value] {
            headers.push(u8::try_from(part.len()).unwrap());
            headers.extend_from_slice(part.as_bytes());
        }
    }
    // END_HEADERS | END_STREAM: the call needs no request message.
    frame(&mut bytes, 1, 0x5, 1, &headers);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    stream
}

/// Appends an HTTP/2 frame of `kind` with `flags` on `stream`.
fn frame(bytes: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes()[1..]);
    bytes.extend_from_slice(&[kind, flags]);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
}
