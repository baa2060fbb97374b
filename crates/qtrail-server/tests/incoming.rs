//! The gRPC side's connection cap, its eviction, and the first-request and idle deadlines, over
//! a real tonic server on a loopback port.

use std::net::SocketAddr;
use std::time::Duration;

use qtrail_server::incoming::{CappedIncoming, GrpcTimeouts};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Far beyond what a local connection needs.
const DEADLINE: Duration = Duration::from_secs(20);

/// Timeouts none of the tests waits for, so that only the one under test can act.
const NEVER: GrpcTimeouts = GrpcTimeouts {
    first_request: Duration::from_secs(600),
    idle: Duration::from_secs(600),
    write_stall: Duration::from_secs(600),
};

/// Serves the health service on a loopback port, at most `max` connections under `timeouts`,
/// until the returned token is cancelled.
async fn start(
    max: usize,
    timeouts: GrpcTimeouts,
) -> (SocketAddr, tonic_health::server::HealthReporter, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    let incoming: CappedIncoming = qtrail_server::incoming::incoming_with_timeouts(listener, max, timeouts);
    let mut builder = qtrail_server::tls::grpc_server(None).unwrap().layer(incoming.activity_layer());
    let router = builder.add_service(health);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move { router.serve_with_incoming_shutdown(incoming, stopped.cancelled_owned()).await });
    (addr, reporter, stop)
}

/// Opens a connection that says nothing, once the server has taken it (it speaks first, its
/// HTTP/2 settings).
async fn silent(addr: SocketAddr) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let read = tokio::time::timeout(DEADLINE, stream.read(&mut [0; 1])).await.expect("the server's settings");
    assert!(matches!(read, Ok(1)), "{read:?}");
    stream
}

/// Returns once the server has closed `stream` (an error counts as closed); panics after
/// [`DEADLINE`].
async fn closed(stream: &mut tokio::net::TcpStream, what: &str) {
    let read = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut Vec::new())).await;
    assert!(read.is_ok(), "{what} was not closed");
}

#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_makes_room() {
    let (addr, _reporter, stop) = start(2, NEVER).await;
    // A flood of silent connections, three times the cap: each takes the place of an older one.
    let mut flood = Vec::new();
    for _ in 0..6 {
        flood.push(silent(addr).await);
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = HealthClient::new(channel);
    client.check(HealthCheckRequest::default()).await.expect("a call gets in at the cap");
    closed(&mut flood[0], "the oldest silent connection").await;
    closed(&mut flood[4], "the longest idle at the client's arrival").await;
    stop.cancel();
}

#[tokio::test]
async fn when_every_connection_has_a_call_in_progress_a_new_one_is_closed_at_once() {
    let (addr, reporter, stop) = start(2, NEVER).await;
    let mut watches = Vec::new();
    for _ in 0..2 {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut watch = HealthClient::new(channel).watch(HealthCheckRequest::default()).await.unwrap().into_inner();
        watch.message().await.expect("the first status").expect("a status");
        watches.push(watch);
    }
    // Closed before it says anything: taken, the server would send its HTTP/2 settings.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let read = tokio::time::timeout(DEADLINE, third.read(&mut [0; 16])).await.expect("closed by the server");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // The busy ones were not evicted: they still deliver.
    reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    for watch in &mut watches {
        let status = watch.message().await.expect("the watch still works").expect("a status");
        assert_eq!(status.status, tonic_health::pb::health_check_response::ServingStatus::NotServing as i32);
    }
    stop.cancel();
}

#[tokio::test]
async fn a_connection_that_sends_only_the_preface_is_closed_after_the_first_request_deadline() {
    let (addr, _reporter, stop) = start(16, GrpcTimeouts { first_request: Duration::from_millis(300), ..NEVER }).await;
    let mut preface_only = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The client preface and an empty SETTINGS frame: a valid HTTP/2 connection, with no call.
    preface_only.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    closed(&mut preface_only, "the preface-only connection").await;
    let mut silent = silent(addr).await;
    closed(&mut silent, "the silent connection").await;
    stop.cancel();
}

#[tokio::test]
async fn connections_without_a_call_in_progress_are_closed_after_the_idle_timeout() {
    let timeouts = GrpcTimeouts { idle: Duration::from_millis(300), ..NEVER };
    let (addr, reporter, stop) = start(16, timeouts).await;

    // A call in progress (a health watch) keeps its connection open past the timeout.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut watch = HealthClient::new(channel.clone()).watch(HealthCheckRequest::default()).await.unwrap().into_inner();
    watch.message().await.expect("the first status").expect("a status");

    // A connection whose one call ended is closed: tonic's channel then reconnects, and a
    // raw connection sees the close.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(&h2_health_check()).await.unwrap();
    closed(&mut raw, "the connection whose call ended").await;

    // By now the watch's connection is older than the timeout, and still delivers.
    reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    let status = watch.message().await.expect("the watch still works").expect("a status");
    assert_eq!(status.status, tonic_health::pb::health_check_response::ServingStatus::NotServing as i32);
    stop.cancel();
}

/// The bytes of an HTTP/2 connection that makes one health check and then waits: the preface,
/// empty settings, and the call's headers (HPACK literals, no Huffman) and empty request.
fn h2_health_check() -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0".to_vec();
    let headers = hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/grpc.health.v1.Health/Check"),
        (":authority", "x"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]);
    frame(&mut bytes, 1, 0x4, 1, &headers);
    frame(&mut bytes, 0, 0x1, 1, &[0; 5]);
    bytes
}

/// Encodes `headers` as HPACK literals without indexing.
fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(0);
        for part in [name, value] {
            block.push(u8::try_from(part.len()).unwrap());
            block.extend_from_slice(part.as_bytes());
        }
    }
    block
}

/// Appends an HTTP/2 frame of `kind` with `flags` on `stream`.
fn frame(bytes: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes()[1..]);
    bytes.extend_from_slice(&[kind, flags]);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
}
