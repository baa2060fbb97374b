//! TLS from PEM files: a real tonic server on a loopback port, with its health service behind
//! TLS (and mutual TLS), against clients that do and do not trust it or present a certificate.

use std::sync::Arc;
use std::time::Duration;

use qtrail_server::health::{is_serving_over, wait_serving_over};
use qtrail_server::tls::testing::TestPki;
use qtrail_server::tls::{ClientTls, HANDSHAKE_TIMEOUT, ServerTls, TlsError};
use tokio_util::sync::CancellationToken;

/// How long a server that should answer may take to.
const READY: Duration = Duration::from_secs(10);

/// A health-only gRPC server with `tls`, stopped on drop.
struct TlsServer {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
}

impl TlsServer {
    async fn start(tls: &ServerTls) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_, health) = tonic_health::server::health_reporter();
        let loaded = tls.load().unwrap();
        let mut builder = qtrail_server::tls::grpc_server(Some(&loaded)).unwrap();
        let router = builder.add_service(health);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = router.serve_with_incoming_shutdown(incoming, stopped.cancelled_owned()).await;
        });
        Self { addr, stop }
    }

    fn url(&self, scheme: &str, host: &str) -> String {
        format!("{scheme}://{host}:{}", self.addr.port())
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn a_tls_server_answers_only_clients_that_trust_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(&dir.path().join("pki"), "qtrail test");
    let other = TestPki::create(&dir.path().join("other"), "someone else");
    let server = TlsServer::start(&pki.server(false)).await;

    for host in ["localhost", "127.0.0.1"] {
        let url = server.url("https", host);
        assert!(wait_serving_over(&url, &pki.client(false), READY).await, "trusted over {host}");
    }
    assert!(!is_serving_over(&server.url("https", "localhost"), &other.client(false)).await, "a CA it does not know");
    // The client refuses the server itself, before any request: a deterministic error.
    let endpoint = other.client(false).endpoint(&server.url("https", "localhost")).unwrap();
    let refused = endpoint.connect().await.expect_err("an unknown issuer is refused");
    let chain = qtrail_server::tls::error_chain(&refused);
    assert!(chain.contains("invalid peer certificate: UnknownIssuer"), "{chain}");
    assert!(
        !is_serving_over(&server.url("https", "localhost"), &ClientTls::default()).await,
        "the public roots do not vouch for a private CA"
    );
    assert!(!is_serving_over(&server.url("http", "localhost"), &ClientTls::default()).await, "plaintext");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_of_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(&dir.path().join("pki"), "qtrail test");
    let other = TestPki::create(&dir.path().join("other"), "someone else");
    let server = TlsServer::start(&pki.server(true)).await;
    let url = server.url("https", "localhost");

    assert!(wait_serving_over(&url, &pki.client(true), READY).await, "a client certificate of the CA");
    assert!(!is_serving_over(&url, &pki.client(false)).await, "no client certificate");
    let stranger = ClientTls { ca: Some(pki.ca.clone()), cert: Some(other.client_cert), key: Some(other.client_key) };
    assert!(!is_serving_over(&url, &stranger).await, "a client certificate of another CA");
}

/// Serves the base router over HTTPS with `tls` until the returned token is cancelled.
async fn https_server(tls: &ServerTls) -> (u16, CancellationToken, tokio::task::JoinHandle<std::io::Result<()>>) {
    let tls = tls.load().unwrap().http();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let server = tokio::spawn(qtrail_server::http::serve(
        listener,
        qtrail_server::http::base_router(None),
        Some(tls),
        stop.clone().cancelled_owned(),
    ));
    (port, stop, server)
}

#[tokio::test]
async fn the_http_side_serves_https_with_the_same_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(&dir.path().join("pki"), "qtrail test");
    let (port, stop, server) = https_server(&pki.server(false)).await;

    let (status, body) = pki.https_get(port, "/healthz", false).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let other = TestPki::create(&dir.path().join("other"), "someone else");
    assert!(other.https_get(port, "/healthz", false).await.is_err(), "a client that does not trust the CA");
    let plaintext = plaintext_get(port).await;
    assert!(!plaintext.starts_with("HTTP/1.1 200"), "plaintext is not served: {plaintext}");

    // A connection that never starts its handshake holds up neither other clients nor the
    // shutdown (the handshake timeout is 10 s; shutdown must not wait for it).
    let _stalled = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let beside = tokio::time::timeout(Duration::from_secs(5), pki.https_get(port, "/healthz", false)).await;
    assert_eq!(beside.expect("not queued behind the stalled handshake").unwrap().0, 200);
    stop.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), server).await;
    ended.expect("shutdown does not wait for a stalled handshake").unwrap().unwrap();
}

#[tokio::test]
async fn with_a_client_ca_the_http_side_requires_a_client_certificate_too() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(&dir.path().join("pki"), "qtrail test");
    let (port, stop, server) = https_server(&pki.server(true)).await;

    assert_eq!(pki.https_get(port, "/healthz", true).await.unwrap().0, 200, "with a client certificate");
    let without = pki.https_get(port, "/healthz", false).await;
    assert!(without.as_ref().map_or(true, |(status, _)| *status == 0), "no answer without one: {without:?}");
    // A certificate of another CA, from a client that trusts this server.
    let other = TestPki::create(&dir.path().join("other"), "someone else");
    let stranger =
        TestPki { client_cert: other.client_cert.clone(), client_key: other.client_key.clone(), ..pki.clone() };
    let refused = stranger.https_get(port, "/healthz", true).await;
    assert!(refused.as_ref().map_or(true, |(status, _)| *status == 0), "no answer with it: {refused:?}");
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// Sends a plaintext `GET /healthz` and returns whatever comes back.
async fn plaintext_get(port: u16) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn bad_files_are_refused_before_anything_listens_or_connects() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(dir.path(), "qtrail test");
    let missing = dir.path().join("missing.pem");

    let err = ServerTls { cert: missing.clone(), key: pki.server_key.clone(), client_ca: None }.load().unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err}");
    assert!(err.to_string().starts_with("cannot read the tls certificate "), "{err}");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    assert!(std::error::Error::source(&err).is_none(), "the cause is said once, in the message");

    // A key given as the certificate, and a certificate given as the key.
    let swapped = ServerTls { cert: pki.server_key.clone(), key: pki.server_cert.clone(), client_ca: None };
    let err = swapped.load().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("the tls certificate {} holds no valid PEM `CERTIFICATE` block", pki.server_key.display())
    );

    // A certificate block whose content is not a certificate names its file.
    let corrupt = dir.path().join("corrupt.pem");
    std::fs::write(&corrupt, "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n").unwrap();
    let err = ServerTls { cert: pki.server_cert.clone(), key: pki.server_key.clone(), client_ca: Some(corrupt) }
        .load()
        .unwrap_err();
    assert!(err.to_string().starts_with("the tls client CA ") && err.to_string().contains("corrupt.pem"), "{err}");

    // PEM of the right kinds that do not belong together: the client's key with the server's certificate.
    let mismatched = ServerTls { cert: pki.server_cert.clone(), key: pki.client_key.clone(), client_ca: None };
    let err = mismatched.load().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the tls private key {} does not belong to the certificate {}",
            pki.client_key.display(),
            pki.server_cert.display()
        )
    );
    let wrong_identity =
        ClientTls { ca: Some(pki.ca.clone()), cert: Some(pki.client_cert.clone()), key: Some(pki.server_key.clone()) };
    assert!(matches!(wrong_identity.config(), Err(TlsError::KeyMismatch { .. })), "the client's pair is checked too");

    let client = ClientTls { ca: Some(pki.ca.clone()), ..Default::default() };
    let err = client.endpoint("http://127.0.0.1:1").unwrap_err();
    assert_eq!(err.to_string(), "tls files were given but http://127.0.0.1:1 is plaintext: use an https:// url");
    let err = ClientTls { cert: Some(pki.client_cert.clone()), ..Default::default() }.config().unwrap_err();
    assert_eq!(err.to_string(), "invalid tls configuration: a client certificate needs its private key");
    assert!(ClientTls::default().endpoint("http://127.0.0.1:1").is_ok(), "plaintext without files");

    let parts = ServerTls::from_parts(None, None, Some(pki.ca.clone())).unwrap_err();
    assert_eq!(parts.to_string(), "invalid tls configuration: a client CA needs a server certificate and key");
    assert_eq!(ServerTls::from_parts(None, None, None).unwrap(), None);
}

/// Waits until the peer closes `stream`, and returns how long that took (at most `limit`).
async fn closed_after(mut stream: tokio::net::TcpStream, limit: Duration) -> Duration {
    use tokio::io::AsyncReadExt as _;
    let started = std::time::Instant::now();
    let mut buffer = [0_u8; 64];
    let read = tokio::time::timeout(limit, stream.read(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "the server sent something or kept the connection: {read:?}");
    started.elapsed()
}

#[tokio::test]
async fn a_connection_that_never_shakes_hands_is_closed_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(&dir.path().join("pki"), "qtrail test");
    let grpc = TlsServer::start(&pki.server(false)).await;
    let (https_port, stop, _server) = https_server(&pki.server(false)).await;

    let silent_grpc = tokio::net::TcpStream::connect(grpc.addr).await.unwrap();
    let silent_https = tokio::net::TcpStream::connect(("127.0.0.1", https_port)).await.unwrap();
    let limit = HANDSHAKE_TIMEOUT + Duration::from_secs(10);
    let (grpc_closed, https_closed) = tokio::join!(closed_after(silent_grpc, limit), closed_after(silent_https, limit));
    for (side, closed) in [("grpc", grpc_closed), ("https", https_closed)] {
        // Not closed for some other reason long before: the timeout is what ended it.
        assert!(closed >= HANDSHAKE_TIMEOUT - Duration::from_secs(1), "{side} closed after {closed:?}");
    }
    stop.cancel();
}

#[tokio::test]
async fn an_http2_connection_that_sends_only_the_preface_is_closed_after_the_first_request_deadline() {
    use rustls::pki_types::pem::PemObject as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(&dir.path().join("pki"), "qtrail test");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    // HTTP/2 has no header timer, and the idle timeout is far off: only the first-request
    // deadline can close the connection.
    let limits = qtrail_server::http::HttpLimits {
        first_request_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(600),
        ..qtrail_server::http::HttpLimits::default()
    };
    tokio::spawn(qtrail_server::http::serve_with_limits(
        listener,
        qtrail_server::http::base_router(None),
        Some(pki.server(false).load().unwrap().http()),
        limits,
        stop.clone().cancelled_owned(),
    ));

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&pki.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    // The client preface and an empty SETTINGS frame: a valid HTTP/2 connection, with no request.
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let read = tokio::time::timeout(READY, stream.read_to_end(&mut Vec::new())).await;
    assert!(read.is_ok(), "the preface-only connection was not closed");
    stop.cancel();
}
