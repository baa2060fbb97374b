//! The web console in a real browser: headless Chromium, driven through WebDriver, against the
//! real `qtrail-collector` binary with its HTTP side.
//!
//! The walk-through signs in (after a refused wrong-role token), finds the events, filters them
//! to failed job cancels, opens one event's detail and follows its correlation id, watches a
//! new event appear live without a reload, verifies the chain and signs out; it leaves a
//! screenshot in `target/e2e-artifacts/console.png`. A second test puts markup into event text
//! and checks that it shows as text and that no script runs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qtrail_cadf::{Action, AuditEvent, Crn, EventBuilder, Initiator, Location};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::collector_admin_client::CollectorAdminClient;
use qtrail_proto::qtrail::audit::v1::ingest_client::IngestClient;
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;

use crate::harness::{START_TIMEOUT, ServerProcess, binary, wait_until};
use crate::webdriver::{Browser, Chromedriver};

const LOCATION: &str = "us-east";
const PUBLISHER_TOKEN: &str = "e2e-publisher-token";
const AUDITOR_TOKEN: &str = "e2e-auditor-token";
const ADMIN_TOKEN: &str = "e2e-admin-token";
const XSS_NAME: &str = "<img src=x onerror=alert(1)>";

/// How long the browser may take to show something.
const UI_TIMEOUT: Duration = Duration::from_secs(30);

/// A collector with its HTTP side and the collector of [`LOCATION`].
struct Trail {
    collector: ServerProcess,
    publisher_epoch: u64,
    next_seq: u64,
}

impl Trail {
    async fn start(dir: &Path) -> Self {
        let tokens = dir.join("tokens.toml");
        let entries = [
            (PUBLISHER_TOKEN, "publisher", "runtime-us-east"),
            (AUDITOR_TOKEN, "auditor", "alice"),
            (ADMIN_TOKEN, "admin", "ops"),
        ];
        let text: String = entries
            .iter()
            .map(|(token, role, name)| {
                format!("[[token]]\ntoken = \"{token}\"\nrole = \"{role}\"\nname = \"{name}\"\n\n")
            })
            .collect();
        std::fs::write(&tokens, text).expect("write the tokens file");
        let args: Vec<OsString> =
            vec!["--data-dir".into(), dir.join("collector-data").into(), "--tokens".into(), tokens.into()];
        let collector = ServerProcess::start_with_http("collector", binary("qtrail-collector"), args, dir).await;
        let channel = tonic::transport::Channel::from_shared(collector.url()).unwrap().connect().await.unwrap();
        let request = authed(proto::CreateCollectorRequest { location: LOCATION.into() }, ADMIN_TOKEN);
        CollectorAdminClient::new(channel).create_collector(request).await.expect("collector created");
        Self { collector, publisher_epoch: 1, next_seq: 1 }
    }

    /// Publishes `events` in one batch and waits for the Ack.
    async fn publish(&mut self, events: &[AuditEvent]) {
        let channel = tonic::transport::Channel::from_shared(self.collector.url()).unwrap().connect().await.unwrap();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let mut responses = IngestClient::new(channel)
            .publish(authed(ReceiverStream::new(receiver), PUBLISHER_TOKEN))
            .await
            .expect("publish stream")
            .into_inner();
        let hello = proto::Hello { publisher_id: "e2e".into(), location: LOCATION.into(), epoch: self.publisher_epoch };
        sender.send(proto::PublishRequest { kind: Some(proto::publish_request::Kind::Hello(hello)) }).await.unwrap();
        let published = events
            .iter()
            .enumerate()
            .map(|(i, event)| proto::PublishedEvent { seq: self.next_seq + i as u64, event: Some(event.into()) })
            .collect();
        self.next_seq += events.len() as u64;
        let batch = proto::Batch { batch_seq: 1, events: published };
        sender.send(proto::PublishRequest { kind: Some(proto::publish_request::Kind::Batch(batch)) }).await.unwrap();
        loop {
            let response = responses.message().await.expect("publish answer").expect("an answer");
            if let Some(proto::publish_response::Kind::Ack(ack)) = response.kind {
                assert_eq!(ack.accepted as usize, events.len(), "{ack:?}");
                return;
            }
        }
    }

    fn console_url(&self) -> String {
        format!("{}/", self.collector.http_url())
    }
}

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Returns an event of `action` on `target` with `status`.
fn event(action: Action, target: &str, target_name: &str, status: u16, correlation: &str) -> AuditEvent {
    let location: Location = LOCATION.parse().unwrap();
    let source = Crn::instance(&location, "acc-alice", "inst-e2e").unwrap();
    let initiator = Initiator {
        id: "IBMid-0001".into(),
        name: "alice@example.com".into(),
        type_uri: qtrail_cadf::event::INITIATOR_USER.into(),
        credential_type: "apikey".into(),
        host_address: "127.0.0.1".into(),
        host_agent: "qtrail-e2e".into(),
    };
    let builder = EventBuilder::new(action, source, initiator).target(target, target_name).correlation_id(correlation);
    let builder = if status < 400 { builder.status(status) } else { builder.failure(status, "refused") };
    builder.build().unwrap()
}

/// Returns the directory of test artifacts, `target/e2e-artifacts`, created if missing.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/e2e-<hash> → target
    let target = exe.ancestors().nth(3).expect("the test binary lives in target/<profile>/deps");
    let dir = target.join("e2e-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/e2e-artifacts");
    dir
}

/// Saves a screenshot of the browser window as `target/e2e-artifacts/<name>` and prints where.
async fn save_screenshot(browser: &Browser, name: &str) {
    let path = artifacts_dir().join(name);
    std::fs::write(&path, browser.screenshot().await).expect("write the screenshot");
    println!("console screenshot: {}", path.display());
}

/// Runs `script` until it returns something other than null or false, then returns that.
async fn wait_for_script(browser: &Browser, what: &str, script: &str, args: Value) -> Value {
    wait_until(what, UI_TIMEOUT, || {
        let args = args.clone();
        async move {
            let value = browser.execute(script, args).await;
            (!value.is_null() && value != Value::Bool(false)).then_some(value)
        }
    })
    .await
}

/// Returns the rows of the event list as arrays of cell texts.
async fn rows(browser: &Browser) -> Vec<Vec<String>> {
    let value = browser
        .execute(
            "return [...document.querySelectorAll('#event-rows tr')].map(r => [...r.cells].map(c => c.textContent));",
            json!([]),
        )
        .await;
    serde_json::from_value(value).expect("rows of cells")
}

/// Returns true when the element with `id` is shown.
async fn is_shown(browser: &Browser, id: &str) -> bool {
    browser.execute("const e = document.getElementById(arguments[0]); return !!e && !e.hidden;", json!([id])).await
        == Value::Bool(true)
}

/// Signs in with `token` through the form; the caller waits for what follows.
async fn submit_token(browser: &Browser, token: &str) {
    let input = browser.wait_for("#token").await;
    browser.clear(&input).await;
    browser.type_text(&input, token).await;
    browser.click(&browser.wait_for("#sign-in-submit").await).await;
}

async fn sign_in(browser: &Browser, trail: &Trail) {
    browser.goto(&trail.console_url()).await;
    submit_token(browser, AUDITOR_TOKEN).await;
    wait_until("the console of us-east", UI_TIMEOUT, || async {
        (browser.url().await.ends_with("/console/us-east") && is_shown(browser, "console").await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_console_in_a_browser_signs_in_filters_shows_details_goes_live_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut trail = Trail::start(dir.path()).await;
    let mut history = Vec::new();
    for i in 0..12 {
        history.push(event(Action::JobRead, &format!("job-{i}"), &format!("job-{i}"), 200, &format!("read-{i}")));
    }
    history.push(event(Action::ProgramCreate, "prog-1", "bell", 201, "create-1"));
    history.push(event(Action::JobCancel, "job-3", "job-3", 409, "cancel-3"));
    history.push(event(Action::JobCancel, "job-4", "job-4", 200, "cancel-4"));
    history.push(event(Action::JobCancel, "job-9", "job-9", 404, "cancel-9"));
    history.push(event(Action::JobRead, "job-9", "job-9", 404, "cancel-9"));
    history.push(event(Action::ProgramDelete, "prog-1", "bell", 403, "delete-1"));
    trail.publish(&history).await;

    let driver = Chromedriver::start(dir.path()).await;
    let browser = driver.browser(&dir.path().join("chromium-profile")).await;

    // Signed out, the console shows the sign-in form and nothing else.
    browser.goto(&trail.console_url()).await;
    browser.wait_for("#sign-in:not([hidden])").await;
    for section in ["console", "collectors", "detail"] {
        assert!(!is_shown(&browser, section).await, "{section} is hidden before sign-in");
    }
    // A token of another role is refused with a message saying why.
    submit_token(&browser, ADMIN_TOKEN).await;
    let refusal = wait_for_script(
        &browser,
        "the wrong-role message",
        "const t = document.getElementById('sign-in-error').textContent; return t || null;",
        json!([]),
    )
    .await;
    assert_eq!(refusal, "Sign-in refused: token `ops` has role `admin`, this service needs role `auditor`");
    submit_token(&browser, "no-such-token").await;
    wait_for_script(
        &browser,
        "the unknown-token message",
        "return document.getElementById('sign-in-error').textContent === 'Sign-in refused: unknown token';",
        json!([]),
    )
    .await;

    // Signing in with the auditor token leads from `/` to the only collector's page.
    submit_token(&browser, AUDITOR_TOKEN).await;
    wait_until("the console of us-east", UI_TIMEOUT, || async {
        (browser.url().await.ends_with("/console/us-east") && is_shown(&browser, "console").await).then_some(())
    })
    .await;
    wait_for_script(
        &browser,
        "the events",
        "return document.querySelectorAll('#event-rows tr').length === 18;",
        json!([]),
    )
    .await;
    let listed = rows(&browser).await;
    assert_eq!(listed[0][0], "18", "newest first");
    assert_eq!(listed[0][2], "quantum-computing.program.delete");
    assert_eq!((listed[0][3].as_str(), listed[0][4].as_str()), ("failure", "critical"));
    let who = browser.text(&browser.wait_for("#who").await).await;
    assert_eq!(who, "alice (auditor)");
    let page = browser.execute("return document.documentElement.outerHTML + location.href;", json!([])).await;
    assert!(!page.as_str().unwrap().contains(AUDITOR_TOKEN), "the token is nowhere in the page or its URL");

    // Filter to failed job cancels.
    let action = browser.wait_for("input[name=action]").await;
    browser.type_text(&action, "quantum-computing.job.cancel").await;
    browser.click(&browser.wait_for("select[name=outcome] option[value=failure]").await).await;
    browser.click(&browser.wait_for("#apply").await).await;
    wait_for_script(
        &browser,
        "the filtered list",
        "return document.querySelectorAll('#event-rows tr').length === 2;",
        json!([]),
    )
    .await;
    let cancels = rows(&browser).await;
    for row in &cancels {
        assert_eq!((row[2].as_str(), row[3].as_str()), ("quantum-computing.job.cancel", "failure"), "{row:?}");
    }
    assert_eq!(cancels.iter().map(|row| row[0].as_str()).collect::<Vec<_>>(), ["16", "14"]);
    let highlighted = browser
        .execute("return [...document.querySelectorAll('#event-rows tr')].every(r => r.classList.contains('row-outcome-failure') && getComputedStyle(r).backgroundColor !== 'rgba(0, 0, 0, 0)');", json!([]))
        .await;
    assert_eq!(highlighted, true, "failures are highlighted");
    let url = browser.url().await;
    assert!(url.contains("action=quantum-computing.job.cancel") && url.contains("outcome=failure"), "{url}");

    // One event's detail: both JSON forms, its position and hashes, and its correlation.
    browser.click(&browser.wait_for("#event-rows tr[data-seq='16'] button.seq").await).await;
    let detail = wait_for_script(
        &browser,
        "the event detail",
        "const at = document.getElementById('detail-at').textContent; return at ? at : null;",
        json!([]),
    )
    .await;
    let at: Value = serde_json::from_str(detail.as_str().unwrap()).expect("AT-JSON in the detail");
    assert_eq!(
        (at["action"].as_str(), at["outcome"].as_str()),
        (Some("quantum-computing.job.cancel"), Some("failure"))
    );
    assert_eq!(at["reason"]["reasonCode"], 404);
    let cadf: Value =
        serde_json::from_str(browser.text(&browser.wait_for("#detail-cadf").await).await.as_str()).expect("CADF-JSON");
    assert_eq!(cadf["action"], "update/cancel");
    let fact = |name: &str| {
        let script = "const dt = [...document.querySelectorAll('#detail-facts dt')].find(d => d.textContent === arguments[0]); return dt ? dt.nextElementSibling.textContent : null;";
        browser.execute(script, json!([name]))
    };
    assert_eq!(fact("location_seq").await, "16");
    assert_eq!(fact("Correlation id").await, "cancel-9");
    let facts = browser.text(&browser.wait_for("#detail-facts").await).await;
    let hashes = browser
        .execute("return [...document.querySelectorAll('#detail-facts dd')].map(d => d.textContent).filter(t => /^[0-9a-f]{64}$/.test(t)).length;", json!([]))
        .await;
    assert_eq!(hashes, 2, "chain hash and previous hash: {facts}");
    save_screenshot(&browser, "console-detail.png").await;
    browser.click(&browser.wait_for("#detail-correlation:not([hidden])").await).await;
    wait_for_script(
        &browser,
        "the events of correlation cancel-9",
        "const rows = [...document.querySelectorAll('#event-rows tr')]; return rows.length === 2 && location.search === '?correlation_id=cancel-9';",
        json!([]),
    )
    .await;
    let correlated = rows(&browser).await;
    assert_eq!(
        correlated.iter().map(|row| row[2].as_str()).collect::<Vec<_>>(),
        ["quantum-computing.job.read", "quantum-computing.job.cancel"]
    );

    // Live: a new event appears at the top without a reload.
    browser.click(&browser.wait_for("#clear").await).await;
    wait_for_script(
        &browser,
        "the whole list",
        "return document.querySelectorAll('#event-rows tr').length === 18;",
        json!([]),
    )
    .await;
    browser.execute("window.__sameDocument = 'still here';", json!([])).await;
    browser.click(&browser.wait_for("#live").await).await;
    wait_for_script(
        &browser,
        "the live view to connect",
        "return document.getElementById('live-status').textContent.startsWith('live:');",
        json!([]),
    )
    .await;
    trail.publish(&[event(Action::JobCancel, "job-11", "job-11", 409, "cancel-11")]).await;
    wait_for_script(
        &browser,
        "the live event",
        "const r = document.querySelector('#event-rows tr'); return !!r && r.dataset.seq === '19';",
        json!([]),
    )
    .await;
    let newest = &rows(&browser).await[0];
    assert_eq!((newest[2].as_str(), newest[3].as_str()), ("quantum-computing.job.cancel", "failure"));
    let same_document = browser.execute("return window.__sameDocument;", json!([])).await;
    assert_eq!(same_document, "still here", "the page was not reloaded");

    // Verify the chain.
    browser.click(&browser.wait_for("#verify").await).await;
    let verdict = wait_for_script(
        &browser,
        "the chain verdict",
        "const v = document.getElementById('verify-result'); return v.classList.contains('ok') || v.classList.contains('bad') ? v.textContent : null;",
        json!([]),
    )
    .await;
    assert!(verdict.as_str().unwrap().starts_with("Chain ok: 19 events checked"), "{verdict}");

    save_screenshot(&browser, "console.png").await;

    // Signing out forgets what was shown and the API no longer answers this browser.
    browser.click(&browser.wait_for("#sign-out").await).await;
    browser.wait_for("#sign-in:not([hidden])").await;
    assert!(rows(&browser).await.is_empty(), "the list is emptied on sign-out");
    let status = browser.execute("return fetch('/api/collectors').then(r => r.status);", json!([])).await;
    assert_eq!(status, 401);
    browser.close().await;
}

#[tokio::test]
async fn markup_in_event_text_shows_as_text_and_runs_no_script() {
    let dir = tempfile::tempdir().unwrap();
    let mut trail = Trail::start(dir.path()).await;
    trail.publish(&[event(Action::ProgramRead, "prog-0", "harmless", 200, "c0")]).await;
    let driver = Chromedriver::start(dir.path()).await;
    let browser = driver.browser(&dir.path().join("chromium-profile")).await;
    sign_in(&browser, &trail).await;
    wait_for_script(
        &browser,
        "the first event",
        "return document.querySelectorAll('#event-rows tr').length === 1;",
        json!([]),
    )
    .await;

    // A trap for any script the event could smuggle in, set before the event arrives live.
    browser
        .execute("window.__xss = false; window.alert = () => { window.__xss = true; }; document.addEventListener('securitypolicyviolation', e => { window.__blocked = e.violatedDirective; });", json!([]))
        .await;
    browser.click(&browser.wait_for("#live").await).await;
    wait_for_script(
        &browser,
        "the live view",
        "return document.getElementById('live-status').textContent.startsWith('live:');",
        json!([]),
    )
    .await;
    trail.publish(&[event(Action::ProgramCreate, "prog-x", XSS_NAME, 201, XSS_NAME)]).await;
    wait_for_script(
        &browser,
        "the program event",
        "return document.querySelectorAll('#event-rows tr').length === 2;",
        json!([]),
    )
    .await;

    let shown =
        browser.execute("return document.querySelector('#event-rows tr td.target').textContent;", json!([])).await;
    assert_eq!(shown, XSS_NAME, "the name shows as text");
    browser.click(&browser.wait_for("#event-rows tr[data-seq='2'] button.seq").await).await;
    wait_for_script(
        &browser,
        "the detail",
        "return document.getElementById('detail-at').textContent.includes('onerror');",
        json!([]),
    )
    .await;
    let images = browser.execute("return document.querySelectorAll('img').length;", json!([])).await;
    assert_eq!(images, 0, "no element was made from the event text");
    assert_eq!(browser.execute("return window.__xss;", json!([])).await, false, "alert never ran");
    assert_eq!(browser.dialog_text().await, None, "no dialog is open");

    // Even markup that did reach the DOM could not run: the policy blocks inline handlers.
    browser
        .execute("const d = document.createElement('div'); d.id = 'probe'; document.body.append(d); d.innerHTML = arguments[0];", json!([XSS_NAME.replace("alert(1)", "window.__xss=true")]))
        .await;
    let blocked =
        wait_for_script(&browser, "the policy to block the handler", "return window.__blocked || null;", json!([]))
            .await;
    assert_eq!(blocked, "script-src-attr");
    assert_eq!(browser.execute("return window.__xss;", json!([])).await, false);
    assert_eq!(browser.dialog_text().await, None);
    browser.close().await;
}

/// The console's `/` lists collectors when there are several, each a link to its page.
#[tokio::test]
async fn the_front_page_lists_the_collectors() {
    let dir = tempfile::tempdir().unwrap();
    let trail = Trail::start(dir.path()).await;
    let channel = tonic::transport::Channel::from_shared(trail.collector.url()).unwrap().connect().await.unwrap();
    let request = authed(proto::CreateCollectorRequest { location: "eu-de".into() }, ADMIN_TOKEN);
    CollectorAdminClient::new(channel).create_collector(request).await.expect("second collector");
    let driver = Chromedriver::start(dir.path()).await;
    let browser = driver.browser(&dir.path().join("chromium-profile")).await;
    browser.goto(&trail.console_url()).await;
    submit_token(&browser, AUDITOR_TOKEN).await;
    let links = wait_for_script(
        &browser,
        "the list of collectors",
        "const l = [...document.querySelectorAll('#collectors-list a')].map(a => a.getAttribute('href')); return l.length ? l : null;",
        json!([]),
    )
    .await;
    assert_eq!(links, json!(["/console/eu-de", "/console/us-east"]));
    browser.click(&browser.wait_for("#collectors-list a[href='/console/eu-de']").await).await;
    wait_until("the eu-de console", START_TIMEOUT, || async {
        let empty = browser.execute("return !document.getElementById('no-events').hidden;", json!([])).await;
        (browser.url().await.ends_with("/console/eu-de") && empty == Value::Bool(true)).then_some(())
    })
    .await;
    browser.close().await;
}
