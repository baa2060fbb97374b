//! The gRPC side's connection cap, over a real tonic server on a loopback port.

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
    let mut builder = qtrail_server::tls::grpc_server(None).unwrap();
    let router = builder.add_service(health);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(async move {
        let incoming = qtrail_server::incoming::incoming(listener, 2);
        router.serve_with_incoming_shutdown(incoming, stopped.cancelled_owned()).await
    });

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
