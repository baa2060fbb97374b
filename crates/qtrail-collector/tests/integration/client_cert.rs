//! Publisher ids bound to client certificates (`--bind-publishers-to-client-cert`), over a real
//! collector serving mutual TLS: two clients of the same CA with the same publisher token are
//! told apart by their certificates with the flag, and alike without it.

use crate::common;

use std::path::Path;

use base64::Engine as _;
use common::{PUBLISHER, PublishStream, TestServer, events, tokens};
use qtrail_collector::Config;
use qtrail_collector::store::publisher::cert_credential;
use qtrail_server::tls::ClientTls;
use qtrail_server::tls::testing::TestPki;
use tonic::Code;

/// Returns the credential of a stream with the publisher token and the certificate in `pem`.
fn credential_of(pem: &Path) -> String {
    let text = std::fs::read_to_string(pem).unwrap();
    let body: String = text.lines().filter(|line| !line.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
    cert_credential("runtime-us-east", &der)
}

/// Client TLS presenting the second client certificate of `pki`.
fn other_client(pki: &TestPki) -> ClientTls {
    ClientTls {
        ca: Some(pki.ca.clone()),
        cert: Some(pki.other_client_cert.clone()),
        key: Some(pki.other_client_key.clone()),
    }
}

/// Starts a collector over `data` serving mutual TLS of `pki`, binding publishers to client
/// certificates with `bind`; its clients present the first client certificate.
async fn start(data: &Path, pki: &TestPki, bind: bool) -> TestServer {
    let mut config = Config::for_test(data, tokens());
    config.tls = Some(pki.server(true));
    config.bind_publishers_to_client_cert = bind;
    let mut server = TestServer::start_with(config).await;
    server.client_tls = Some(pki.client(true));
    server
}

/// Returns the credential every stored record of `location` names, oldest first.
async fn record_credentials(server: &TestServer, location: &str) -> Vec<(String, String)> {
    let records = server.all_events(location).await.into_iter().map(|record| record.publisher.unwrap());
    records.map(|publisher| (publisher.id, publisher.credential)).collect()
}

/// With the flag, the first certificate to publish under an id binds it: a second certificate
/// of the same CA with the same token is refused at its Hello, naming both identities, while
/// the first goes on publishing, on its stream and on a new one.
#[tokio::test]
async fn a_publisher_id_is_bound_to_the_client_certificate_of_its_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(&dir.path().join("pki"), "qtrail test");
    let (first, second) = (credential_of(&pki.client_cert), credential_of(&pki.other_client_cert));
    assert_ne!(first, second);
    let mut server = start(&dir.path().join("data"), &pki, true).await;
    server.create_collector("us-east").await;
    let (mut bound, _) = server.open_publisher("pub-1", "us-east", 1).await;
    assert_eq!(bound.publish(1, &events("us-east", 0, 2), 1).await.accepted, 2);

    server.client_tls = Some(other_client(&pki));
    let mut intruder = PublishStream::open_with_token(&server, PUBLISHER).await.unwrap();
    intruder.send_hello("pub-1", "us-east", 1).await;
    let status = intruder.error().await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), format!("publisher `pub-1` is bound to token `{first}`, not `{second}`"));
    // The second certificate's own id is its own.
    let (mut other, _) = server.open_publisher("pub-2", "us-east", 1).await;
    assert_eq!(other.publish(1, &events("us-east", 2, 1), 1).await.accepted, 1);
    other.close();

    // The first certificate goes on, on its stream and on a new one.
    assert_eq!(bound.publish(2, &events("us-east", 3, 1), 3).await.accepted, 1);
    bound.close();
    server.client_tls = Some(pki.client(true));
    let (mut again, stored_seq) = server.open_publisher("pub-1", "us-east", 1).await;
    assert_eq!(stored_seq, 3);
    assert_eq!(again.publish(1, &events("us-east", 4, 1), 4).await.accepted, 1);
    again.close();

    let expected = [("pub-1", &first), ("pub-1", &first), ("pub-2", &second), ("pub-1", &first), ("pub-1", &first)];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(id, cred)| ((*id).to_owned(), (*cred).clone())).collect();
    assert_eq!(record_credentials(&server, "us-east").await, expected);
    let publishers = server.publishers("us-east").await;
    let bindings: Vec<&str> = publishers.iter().map(|state| state.credential.as_str()).collect();
    assert_eq!(bindings, [first.as_str(), second.as_str()]);
    server.stop().await;
}

/// Without the flag, a publisher id is bound to the token name alone: both certificates publish
/// under it. Restarted with the flag, the id (bound to the bare name) is taken over by the
/// first certificate to publish with that token, and the other is refused from then on.
#[tokio::test]
async fn without_the_flag_certificates_share_an_id_and_the_flag_later_binds_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pki = TestPki::create(&dir.path().join("pki"), "qtrail test");
    let mut server = start(&data, &pki, false).await;
    server.create_collector("us-east").await;
    let (mut first, _) = server.open_publisher("pub-1", "us-east", 1).await;
    assert_eq!(first.publish(1, &events("us-east", 0, 1), 1).await.accepted, 1);
    first.close();
    server.client_tls = Some(other_client(&pki));
    let (mut second, stored_seq) = server.open_publisher("pub-1", "us-east", 1).await;
    assert_eq!(stored_seq, 1);
    assert_eq!(second.publish(1, &events("us-east", 1, 1), 2).await.accepted, 1);
    second.close();
    let bindings: Vec<String> = server.publishers("us-east").await.into_iter().map(|state| state.credential).collect();
    assert_eq!(bindings, ["runtime-us-east"]);
    server.stop().await;

    let mut server = start(&data, &pki, true).await;
    server.client_tls = Some(other_client(&pki));
    let (mut second, _) = server.open_publisher("pub-1", "us-east", 1).await;
    assert_eq!(second.publish(1, &events("us-east", 2, 1), 3).await.accepted, 1);
    second.close();
    let other = credential_of(&pki.other_client_cert);
    let bindings: Vec<String> = server.publishers("us-east").await.into_iter().map(|state| state.credential).collect();
    assert_eq!(bindings, std::slice::from_ref(&other), "re-bound to the name and the certificate");

    server.client_tls = Some(pki.client(true));
    let mut first = PublishStream::open_with_token(&server, PUBLISHER).await.unwrap();
    first.send_hello("pub-1", "us-east", 1).await;
    let status = first.error().await;
    assert_eq!(status.code(), Code::PermissionDenied);
    let expected = format!("publisher `pub-1` is bound to token `{other}`, not `{}`", credential_of(&pki.client_cert));
    assert_eq!(status.message(), expected);
    let credentials: Vec<String> =
        record_credentials(&server, "us-east").await.into_iter().map(|(_, credential)| credential).collect();
    assert_eq!(credentials, ["runtime-us-east".to_owned(), "runtime-us-east".to_owned(), other]);
    server.stop().await;
}

/// The flag needs mutual TLS: without a client CA there is no certificate to bind to, and the
/// collector refuses to start rather than ignore it.
#[tokio::test]
async fn the_flag_without_mutual_tls_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(&dir.path().join("pki"), "qtrail test");
    for tls in [None, Some(pki.server(false))] {
        let mut config = Config::for_test(dir.path().join("data"), tokens());
        config.tls = tls;
        config.bind_publishers_to_client_cert = true;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = qtrail_collector::run(listener, config, std::future::pending()).await.unwrap_err();
        assert_eq!(err.to_string(), "--bind-publishers-to-client-cert needs mutual tls: give --tls-client-ca too");
    }
}
