//! The gRPC side's connection cap and idle timeout, over a real tonic server on a loopback
//! port.

use std::time::Duration;

use qtrail_server::health::wait_serving;
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Far beyond what a local connection needs.
const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_until_one_ends() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_, health) = tonic_health::server::health_reporter();
    let incoming = qtrail_server::incoming::incoming(listener, 2);
    let mut builder = qtrail_server::tls::grpc_server(None).unwrap().layer(incoming.activity_layer());
    let router = builder.add_service(health);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let server =
        tokio::spawn(async move { router.serve_with_incoming_shutdown(incoming, stopped.cancelled_owned()).await });

    let url = format!("http://{addr}");
    let mut clients = Vec::new();
    for _ in 0..2 {
        let channel = tonic::transport::Endpoint::from_shared(url.clone()).unwrap().connect().await.unwrap();
        let mut client = HealthClient::new(channel);
        client.check(HealthCheckRequest::default()).await.expect("within the cap");
        clients.push(client);
    }
    // A third connection is closed at once, before it says anything; uncapped, the server would
    // wait for its HTTP/2 preface.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let read = tokio::time::timeout(DEADLINE, third.read(&mut [0; 16])).await.expect("closed by the server");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // The ones inside still work, and an ended one makes room.
    clients[1].check(HealthCheckRequest::default()).await.expect("still served");
    clients.remove(0);
    assert!(wait_serving(&url, DEADLINE).await, "room once a connection ended");

    stop.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn connections_without_a_call_in_progress_are_closed_after_the_idle_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, health) = tonic_health::server::health_reporter();
    let incoming = qtrail_server::incoming::incoming_with_idle_timeout(listener, 16, Duration::from_millis(300));
    let mut builder = qtrail_server::tls::grpc_server(None).unwrap().layer(incoming.activity_layer());
    let router = builder.add_service(health);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move { router.serve_with_incoming_shutdown(incoming, stopped.cancelled_owned()).await });

    // A call in progress (a health watch) keeps its connection open past the timeout.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut watch = HealthClient::new(channel).watch(HealthCheckRequest::default()).await.unwrap().into_inner();
    watch.message().await.expect("the first status").expect("a status");

    // A connection that says nothing is closed; uncapped and without the timeout, the server
    // would wait for its HTTP/2 preface for good.
    // (The server speaks first, its HTTP/2 settings, then closes.)
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let read = tokio::time::timeout(DEADLINE, silent.read_to_end(&mut Vec::new())).await;
    assert!(read.is_ok(), "the silent connection was not closed");

    // By now the watch's connection is older than the timeout, and still delivers.
    reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    let status = watch.message().await.expect("the watch still works").expect("a status");
    assert_eq!(status.status, tonic_health::pb::health_check_response::ServingStatus::NotServing as i32);
    stop.cancel();
}
