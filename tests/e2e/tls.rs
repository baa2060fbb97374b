//! TLS end to end: a collector that requires mutual TLS, a runtime that serves TLS and
//! publishes to that collector with a client certificate, and the `qtrail` CLI reaching both
//! with `--tls-ca` (and a client certificate for the collector); the collector's console over
//! HTTPS. Clients that do not trust the servers' CA, present no certificate, or speak
//! plaintext are refused.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use qtrail_server::tls::testing::TestPki;
use qtrail_testkit::{START_TIMEOUT, wait_until, without_tls_env};

use crate::grpcurl::grpcurl_binary;
use crate::servers::{ALICE_KEY, AUDITOR_TOKEN, Collector, Runtime, RuntimeOptions};
use crate::up::run_qtrail;

fn path(path: &Path) -> &str {
    path.to_str().expect("temporary paths are utf-8")
}

/// Returns the CLI's flags for TLS with a client certificate.
fn client_cert_flags<'a>(ca: &'a Path, cert: &'a Path, key: &'a Path) -> [&'a str; 6] {
    ["--tls-ca", path(ca), "--tls-cert", path(cert), "--tls-key", path(key)]
}

#[tokio::test]
async fn events_travel_over_mutual_tls_and_clients_without_trust_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::create(&dir.path().join("pki"), "qtrail e2e");
    let stranger = TestPki::create(&dir.path().join("stranger"), "someone else");

    let collector_args: Vec<OsString> = vec![
        "--tls-cert".into(),
        pki.server_cert.clone().into(),
        "--tls-key".into(),
        pki.server_key.clone().into(),
        "--tls-client-ca".into(),
        pki.ca.clone().into(),
    ];
    let collector = Collector::start_with("collector", dir.path(), collector_args, Some(pki.client(true))).await;
    assert!(collector.url().starts_with("https://"), "{}", collector.url());
    collector.create_collector("us-east").await;
    the_console_serves_https_to_client_certificates_of_its_ca(&collector, &pki, &stranger).await;

    let mut options = RuntimeOptions::new(collector.url()).args(&[
        "--tls-cert",
        path(&pki.server_cert),
        "--tls-key",
        path(&pki.server_key),
        "--collector-ca",
        path(&pki.ca),
        "--collector-cert",
        path(&pki.client_cert),
        "--collector-key",
        path(&pki.client_key),
    ]);
    options.tls = Some(pki.client(false));
    let runtime = Runtime::start(options, dir.path()).await;

    // A read through the CLI over TLS; its audit event reaches the collector over mutual TLS.
    let runtime_url = runtime.url();
    let listed = run_qtrail(
        dir.path(),
        &["--runtime", &runtime_url, "--api-key", ALICE_KEY, "--tls-ca", path(&pki.ca), "programs", "list"],
    );
    assert_eq!(listed.code, 0, "programs list over tls: {}", listed.stderr);
    let auditor = Auditor { dir: dir.path(), collector_url: collector.url() };
    let with_cert = client_cert_flags(&pki.ca, &pki.client_cert, &pki.client_key);
    let found = wait_until("the read's event to be stored", START_TIMEOUT, || {
        let outcome = auditor.query(&with_cert);
        let found = outcome.code == 0 && outcome.stdout.contains("quantum-computing.program.read");
        std::future::ready(found.then_some(outcome))
    })
    .await;
    assert!(found.stdout.contains("alice@example.com"), "{}", found.stdout);

    grpcurl_verifies_over_mutual_tls_only(&auditor.collector_url, &pki);
    clients_without_trust_are_refused(&auditor, &runtime_url, &pki, &stranger);
}

/// The HTTP side (console, metrics) serves HTTPS with the same certificate, and requires a
/// client certificate as gRPC does; signed in over HTTPS, the session cookie is `Secure`.
async fn the_console_serves_https_to_client_certificates_of_its_ca(
    collector: &Collector,
    pki: &TestPki,
    stranger: &TestPki,
) {
    // The HTTP side (console, metrics) serves HTTPS with the same certificate, and requires a
    // client certificate as gRPC does.
    let console_port = collector.http_addr().port();
    let (status, page) = pki.https_get(console_port, "/", true).await.expect("console over https");
    assert_eq!(status, 200);
    assert!(page.contains("qtrail console"), "{page}");
    assert!(stranger.https_get(console_port, "/healthz", true).await.is_err(), "the client checks the console");
    let without_cert = pki.https_get(console_port, "/healthz", false).await;
    assert!(without_cert.as_ref().map_or(true, |(status, _)| *status == 0), "{without_cert:?}");
    // Signed in over HTTPS, the session cookie is `Secure`: a browser keeps it off plaintext ports.
    let body = format!(r#"{{"token": "{AUDITOR_TOKEN}"}}"#);
    let sign_in = format!(
        "POST /api/session HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let signed_in = pki.https_exchange(console_port, &sign_in, true).await.expect("sign in over https");
    assert!(signed_in.starts_with("HTTP/1.1 200"), "{signed_in}");
    let cookie = signed_in.lines().find(|line| line.to_ascii_lowercase().starts_with("set-cookie:"));
    assert!(cookie.is_some_and(|cookie| cookie.contains("; Secure")), "{signed_in}");
}

/// The CLI's `events query` as the auditor, against the collector serving mutual TLS.
struct Auditor<'a> {
    dir: &'a Path,
    collector_url: String,
}

impl Auditor<'_> {
    fn query(&self, extra: &[&str]) -> crate::up::Output {
        let mut args = vec!["--collector", &self.collector_url, "--token", AUDITOR_TOKEN, "--location", "us-east"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--output", "json", "events", "query"]);
        run_qtrail(self.dir, &args)
    }
}

/// grpcurl, as docs/tls.md shows it: reflection and a call over mutual TLS, refused without
/// a client certificate.
fn grpcurl_verifies_over_mutual_tls_only(collector_url: &str, pki: &TestPki) {
    let grpcurl = |cert: &[&str]| {
        let target = collector_url.trim_start_matches("https://");
        let data = r#"{"location": "us-east"}"#;
        let output = Command::new(grpcurl_binary())
            // A refused client certificate shows as a dial that never completes.
            .args(["-connect-timeout", "2", "-cacert", path(&pki.ca)])
            .args(cert)
            .args(["-H", &format!("authorization: Bearer {AUDITOR_TOKEN}"), "-d", data, target])
            .arg("qtrail.audit.v1.EventQuery/VerifyChain")
            .output()
            .expect("run grpcurl");
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (ok, verified) = grpcurl(&["-cert", path(&pki.client_cert), "-key", path(&pki.client_key)]);
    assert!(ok && verified.contains("\"ok\": true"), "grpcurl over mutual tls: {verified}");
    let (ok, _) = grpcurl(&[]);
    assert!(!ok, "grpcurl without a client certificate");
}

/// Clients that do not trust a server's CA, present no certificate or another CA's, or speak
/// plaintext are refused.
fn clients_without_trust_are_refused(auditor: &Auditor<'_>, runtime_url: &str, pki: &TestPki, stranger: &TestPki) {
    let dir = auditor.dir;
    let collector_url = &auditor.collector_url;

    // The runtime's certificate comes from a CA the CLI does not know.
    let untrusted = run_qtrail(dir, &["--runtime", runtime_url, "--api-key", ALICE_KEY, "programs", "list"]);
    assert_eq!(untrusted.code, 5, "unknown issuer: {}", untrusted.stderr);
    assert!(untrusted.stderr.contains("cannot connect to the runtime"), "{}", untrusted.stderr);
    assert!(untrusted.stderr.contains("certificate"), "names the certificate problem: {}", untrusted.stderr);
    let wrong_ca = run_qtrail(
        dir,
        &["--runtime", runtime_url, "--api-key", ALICE_KEY, "--tls-ca", path(&stranger.ca), "programs", "list"],
    );
    assert_eq!(wrong_ca.code, 5, "another CA: {}", wrong_ca.stderr);

    // The collector requires a client certificate of its CA: none, or another CA's, is refused.
    let without_cert = auditor.query(&["--tls-ca", path(&pki.ca)]);
    // TLS 1.3 completes the client's side of the handshake before the server checks for a
    // certificate, so the refusal arrives as the connection breaking during the call.
    assert_eq!(without_cert.code, 5, "no client certificate: {}", without_cert.stderr);
    assert!(without_cert.stderr.contains("transport error"), "{}", without_cert.stderr);
    assert!(!without_cert.stdout.contains("quantum-computing"), "no event without a client certificate");
    let strange_cert = auditor.query(&client_cert_flags(&pki.ca, &stranger.client_cert, &stranger.client_key));
    assert_eq!(strange_cert.code, 5, "another CA's client certificate: {}", strange_cert.stderr);
    // The server's alert (UnknownCA) and the client's write race: either may be what is seen.
    assert!(strange_cert.stderr.contains("transport error"), "{}", strange_cert.stderr);
    assert!(!strange_cert.stdout.contains("quantum-computing"), "no event with another CA's client certificate");

    // Plaintext to a TLS port gets nothing, and TLS files with an http:// URL are a usage error.
    let plaintext_url = collector_url.replace("https://localhost", "http://127.0.0.1");
    let plaintext = run_qtrail(
        dir,
        &["--collector", &plaintext_url, "--token", AUDITOR_TOKEN, "--location", "us-east", "events", "query"],
    );
    assert_eq!(plaintext.code, 5, "plaintext to a tls port: {}", plaintext.stderr);
    let misused = run_qtrail(
        dir,
        &[
            "--collector",
            &plaintext_url,
            "--token",
            AUDITOR_TOKEN,
            "--location",
            "us-east",
            "--tls-ca",
            path(&pki.ca),
            "events",
            "query",
        ],
    );
    assert_eq!(misused.code, 2, "{}", misused.stderr);
    assert!(misused.stderr.contains("is plaintext: use an https:// url"), "{}", misused.stderr);
}

#[test]
fn qtrail_up_refuses_tls_settings_it_would_not_use() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listen =
        ["--runtime-listen", "127.0.0.1:0", "--collector-listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0"];
    let run_up = |envs: &[(&str, &str)], flags: &[&str]| {
        let mut command = Command::new(qtrail_testkit::binary("qtrail"));
        without_tls_env(&mut command).current_dir(dir.path()).args(["--data-dir", "data"]);
        command.args(flags).arg("up").args(listen);
        for (name, value) in envs {
            command.env(name, value);
        }
        let output = command.output().expect("run qtrail up");
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };

    let (code, stderr) = run_up(&[], &["--tls-ca", "ca.pem"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("qtrail up serves plaintext on loopback"), "{stderr}");
    let (code, stderr) = run_up(&[("QTRAIL_COLLECTOR_TLS_CERT", "c.pem"), ("QTRAIL_COLLECTOR_TLS_KEY", "k.pem")], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unset QTRAIL_COLLECTOR_TLS_CERT"), "{stderr}");
    let (code, stderr) = run_up(&[("QTRAIL_RUNTIME_COLLECTOR_CA", "ca.pem")], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unset QTRAIL_RUNTIME_COLLECTOR_CA"), "{stderr}");
    // Refused before anything was written, let alone started.
    assert!(!dir.path().join("data").exists(), "no data directory, no credentials");
}
