//! TLS settings the runtime cannot honour stop its start-up, before anything listens: it never
//! falls back to plaintext, for its own server or towards the collector.

use std::path::Path;

use qtrail_runtime::Config;
use qtrail_server::tls::testing::TestPki;
use tokio::net::TcpListener;

use crate::harness::PRINCIPALS;

/// Runs the runtime with `configure`d TLS and returns the error its start-up ends with.
async fn start_up_error(dir: &Path, collector: &str, configure: impl FnOnce(&mut Config)) -> String {
    let principals = dir.join("principals.toml");
    std::fs::write(&principals, PRINCIPALS).unwrap();
    let mut config = Config::for_test(dir.join("data"), principals, collector.to_owned());
    config.addr_file = Some(dir.join("addr"));
    configure(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Bounded: a regression that let start-up succeed would otherwise serve until killed.
    let running = qtrail_runtime::run(listener, config, std::future::pending());
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), running).await.expect("start-up must end");
    let err = ended.expect_err("start-up must fail");
    assert!(!dir.join("addr").exists(), "nothing may be served: {err:#}");
    format!("{err:#}")
}

#[tokio::test]
async fn tls_settings_that_cannot_be_honoured_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::create(&dir.path().join("pki"), "qtrail test");

    let missing = dir.path().join("missing.key");
    let err = start_up_error(dir.path(), "http://127.0.0.1:1", |config| {
        config.tls_cert = Some(pki.server_cert.clone());
        config.tls_key = Some(missing.clone());
    })
    .await;
    assert!(err.contains("failed to set up tls") && err.contains("missing.key"), "{err}");

    let err = start_up_error(dir.path(), "http://127.0.0.1:1", |config| {
        config.tls_key = Some(pki.server_key.clone());
    })
    .await;
    assert!(err.contains("a private key needs its certificate"), "{err}");

    // A CA for the collector, but a plaintext collector URL.
    let err = start_up_error(dir.path(), "http://127.0.0.1:1", |config| {
        config.collector_ca = Some(pki.ca.clone());
    })
    .await;
    assert!(err.contains("tls settings need an https:// url"), "{err}");

    let err = start_up_error(dir.path(), "https://localhost:1", |config| {
        config.collector_ca = Some(pki.server_key.clone());
    })
    .await;
    assert!(err.contains("holds no valid PEM `CERTIFICATE` block"), "{err}");
}
