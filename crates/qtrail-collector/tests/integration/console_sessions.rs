//! Console sessions across collectors and restarts: two in-process collectors on real sockets
//! with the same session key file and tokens accept each other's cookies; a restart keeps
//! them; a tampered, signed-out, or removed-token cookie is refused with 401.

use std::path::Path;

use hyper::Method;
use qtrail_collector::config::Config;
use qtrail_collector::tokens::{Role, TokenEntry, Tokens};

use crate::common::http::HttpClient;
use crate::common::{AUDITOR, TestServer, tokens};

/// Starts a collector over `dir` with its console, signing sessions with `key_file`.
async fn start(dir: &Path, key_file: &Path, tokens: Tokens) -> TestServer {
    let mut config = Config::for_test(dir, tokens);
    config.console_session_key_file = Some(key_file.to_owned());
    TestServer::start_with_http_config(config).await
}

/// Returns a client of `server` that sends `cookie`.
fn with_cookie(server: &TestServer, cookie: &str) -> HttpClient {
    let mut client = server.http();
    client.cookie = Some(cookie.to_owned());
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_works_on_every_replica_and_survives_a_restart() {
    let (one, two, keys) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key_file = keys.path().join("session.key");
    std::fs::write(&key_file, [42u8; 48]).unwrap();
    let first = start(one.path(), &key_file, tokens()).await;
    let second = start(two.path(), &key_file, tokens()).await;

    let mut client = first.http();
    assert_eq!(client.sign_in(AUDITOR).await.status, 200);
    let cookie = client.cookie.clone().unwrap();
    let on_second = with_cookie(&second, &cookie);
    let who = on_second.get("/api/session").await;
    assert_eq!((who.status, who.json()["name"].as_str()), (200, Some("alice")), "{}", who.body);

    // A tampered cookie: one character of the signature changed.
    let mut tampered = cookie.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(with_cookie(&second, &tampered).get("/api/session").await.status, 401);

    // A restart of the first collector keeps the session.
    first.stop().await;
    let first = start(one.path(), &key_file, tokens()).await;
    assert_eq!(with_cookie(&first, &cookie).get("/api/session").await.status, 200, "survives a restart");

    // Signed out on the first: refused there, and there after its restart.
    let sign_out = with_cookie(&first, &cookie).send(Method::DELETE, "/api/session", &[], "").await;
    assert_eq!(sign_out.status, 204);
    assert!(sign_out.header("set-cookie").contains("Max-Age=0"));
    assert_eq!(with_cookie(&first, &cookie).get("/api/session").await.status, 401, "signed out");
    first.stop().await;
    let first = start(one.path(), &key_file, tokens()).await;
    assert_eq!(with_cookie(&first, &cookie).get("/api/session").await.status, 401, "still signed out");

    // A new session ends when its token leaves the tokens file (the second restarts without it).
    let mut client = second.http();
    assert_eq!(client.sign_in(AUDITOR).await.status, 200);
    let fresh = client.cookie.clone().unwrap();
    second.stop().await;
    let without_alice = Tokens::from_entries([TokenEntry::new("other-secret", Role::Admin, "ops")]).unwrap();
    let second = start(two.path(), &key_file, without_alice).await;
    assert_eq!(with_cookie(&second, &fresh).get("/api/session").await.status, 401, "a removed token");
    assert_eq!(with_cookie(&first, &fresh).get("/api/session").await.status, 200, "still in the first's file");
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_key_file_stops_start_up() {
    let (dir, keys) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key_file = keys.path().join("session.key");
    std::fs::write(&key_file, "too short").unwrap();
    let mut config = Config::for_test(dir.path(), tokens());
    config.console_session_key_file = Some(key_file);
    config.http = Some("127.0.0.1:0".parse().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = qtrail_collector::run(listener, config, std::future::pending()).await.unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("holds 9 bytes of key: at least 32 are needed"), "{err}");
}
