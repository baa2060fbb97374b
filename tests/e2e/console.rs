//! The web console in a real browser: headless Chromium, driven through WebDriver, against the
//! real `qtrail-collector` binary with its HTTP side, fed by a real `qtrail-runtime`.
//!
//! The walk-through makes calls to the runtime (programs, jobs, refused cancels, a call without
//! a valid key), signs in to the console (after a refused wrong-role token), finds those calls'
//! events, filters them to failed job cancels, opens one event's detail and follows its
//! correlation id, watches a new call's event appear live without a reload, verifies the chain
//! and signs out; then bob makes a call and bob's account-scoped token (`accounts =
//! ["acc-bob"]`) shows that call alone; it leaves screenshots in `target/e2e-artifacts/`. A second test names a
//! program `<img src=x onerror=alert(1)>` and checks that the name shows as text and that no
//! script runs.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use qtrail_proto::qtrail::audit::v1 as audit;
use qtrail_proto::qtrail::audit::v1::collector_admin_client::CollectorAdminClient;
use qtrail_proto::qtrail::audit::v1::event_query_client::EventQueryClient;
use qtrail_proto::qtrail::runtime::v1 as runtime;
use qtrail_proto::qtrail::runtime::v1::job_service_client::JobServiceClient;
use qtrail_proto::qtrail::runtime::v1::program_service_client::ProgramServiceClient;
use qtrail_testkit::{START_TIMEOUT, ServerProcess, binary, wait_until};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::webdriver::{Browser, Chromedriver};

const LOCATION: &str = "us-east";
const PUBLISHER_TOKEN: &str = "e2e-publisher-token";
const AUDITOR_TOKEN: &str = "e2e-auditor-token";
/// An auditor token that reads only the events of bob's account.
const BOB_AUDITOR_TOKEN: &str = "e2e-bob-auditor-token";
pub const ADMIN_TOKEN: &str = "e2e-admin-token";
const API_KEY: &str = "e2e-alice-api-key";
const BOB_API_KEY: &str = "e2e-bob-api-key";
const XSS_NAME: &str = "<img src=x onerror=alert(1)>";
const BELL: &str =
    "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n";

/// How long the browser may take to show something.
const UI_TIMEOUT: Duration = Duration::from_secs(30);

/// A collector service with its HTTP side and the collector of [`LOCATION`], and a runtime of
/// that location publishing to it. Every runtime call produces exactly one event, so counting
/// calls tells how many events the chain will hold.
pub struct Trail {
    collector: ServerProcess,
    _runtime: ServerProcess,
    pub collector_channel: Channel,
    programs: ProgramServiceClient<Channel>,
    jobs: JobServiceClient<Channel>,
    pub calls: u64,
}

impl Trail {
    pub async fn start(dir: &Path) -> Self {
        let tokens = dir.join("tokens.toml");
        let entries = [
            (PUBLISHER_TOKEN, "publisher", "runtime-us-east", "locations = [\"us-east\"]\n"),
            (AUDITOR_TOKEN, "auditor", "alice", ""),
            (ADMIN_TOKEN, "admin", "ops", ""),
            (BOB_AUDITOR_TOKEN, "auditor", "auditor-bob", "accounts = [\"acc-bob\"]\n"),
        ];
        let text: String = entries
            .iter()
            .map(|(token, role, name, locations)| {
                format!("[[token]]\ntoken = \"{token}\"\nrole = \"{role}\"\nname = \"{name}\"\n{locations}\n")
            })
            .collect();
        std::fs::write(&tokens, text).expect("write the tokens file");
        let principals = dir.join("principals.toml");
        let principal = format!(
            "[[principal]]\napi_key = \"{API_KEY}\"\niam_id = \"IBMid-0001\"\nname = \"alice@example.com\"\naccount = \"acc-alice\"\n\n\
             [[principal]]\napi_key = \"{BOB_API_KEY}\"\niam_id = \"IBMid-0002\"\nname = \"bob@example.com\"\naccount = \"acc-bob\"\n"
        );
        std::fs::write(&principals, principal).expect("write the principals file");

        let args: Vec<OsString> =
            vec!["--data-dir".into(), dir.join("collector-data").into(), "--tokens".into(), tokens.into()];
        let collector = ServerProcess::start_with_http("collector", binary("qtrail-collector"), args, dir).await;
        let collector_channel = connect(&collector.url()).await;
        let request = authed(audit::CreateCollectorRequest { location: LOCATION.into() }, ADMIN_TOKEN);
        CollectorAdminClient::new(collector_channel.clone())
            .create_collector(request)
            .await
            .expect("collector created");

        let args: Vec<OsString> = vec![
            "--location".into(),
            LOCATION.into(),
            "--instance".into(),
            "inst-e2e".into(),
            "--collector".into(),
            collector.url().into(),
            "--collector-token".into(),
            PUBLISHER_TOKEN.into(),
            "--principals".into(),
            principals.into(),
            "--data-dir".into(),
            dir.join("runtime-data").into(),
        ];
        let runtime = ServerProcess::start("runtime", binary("qtrail-runtime"), args, dir).await;
        let runtime_channel = connect(&runtime.url()).await;
        Self {
            collector,
            _runtime: runtime,
            collector_channel,
            programs: ProgramServiceClient::new(runtime_channel.clone()),
            jobs: JobServiceClient::new(runtime_channel),
            calls: 0,
        }
    }

    fn console_url(&self) -> String {
        format!("{}/", self.collector.http_url())
    }

    /// Returns `message` as a call of alice's with `correlation` as its correlation id, and
    /// counts the call.
    fn call<T>(&mut self, message: T, correlation: &str) -> tonic::Request<T> {
        self.calls += 1;
        let mut request = authed(message, API_KEY);
        request.metadata_mut().insert("x-correlation-id", correlation.parse().expect("ascii"));
        request
    }

    /// Creates a program running a Bell pair; returns its id.
    pub async fn create_program(&mut self, name: &str) -> String {
        let create = runtime::CreateProgramRequest {
            name: name.into(),
            source: BELL.into(),
            max_execution_time: 60,
            ..Default::default()
        };
        let request = self.call(create, &format!("create-{}", self.calls + 1));
        self.programs.create_program(request).await.expect("program created").into_inner().id
    }

    /// Runs a job of `program_id` to its end (each look at it is a call too); returns its id.
    pub async fn run_job(&mut self, program_id: &str) -> String {
        let params = json!({ "shots": 64, "seed": 7 });
        let create = runtime::CreateJobRequest {
            program_id: program_id.into(),
            params: Some(qtrail_cadf::proto::struct_from_json(params.as_object().expect("an object"))),
            ..Default::default()
        };
        let request = self.call(create, "run");
        let id = self.jobs.create_job(request).await.expect("job created").into_inner().id;
        wait_until(&format!("job {id} to complete"), START_TIMEOUT, || {
            let request = self.call(runtime::GetJobRequest { id: id.clone() }, "run");
            let mut jobs = self.jobs.clone();
            async move {
                let job = jobs.get_job(request).await.expect("job").into_inner();
                let status = job.state.map(|state| state.status).unwrap_or_default();
                (status == runtime::JobStatus::Completed as i32).then_some(())
            }
        })
        .await;
        id
    }

    /// Cancels job `id`; returns the code of the refusal, or OK.
    pub async fn cancel(&mut self, id: &str, correlation: &str) -> tonic::Code {
        let request = self.call(runtime::CancelJobRequest { id: id.into() }, correlation);
        self.jobs.cancel_job(request).await.map_or_else(|status| status.code(), |_| tonic::Code::Ok)
    }

    /// Looks at job `id`; returns the code.
    async fn get_job(&mut self, id: &str, correlation: &str) -> tonic::Code {
        let request = self.call(runtime::GetJobRequest { id: id.into() }, correlation);
        self.jobs.get_job(request).await.map_or_else(|status| status.code(), |_| tonic::Code::Ok)
    }

    /// Lists programs with a key the runtime does not know: refused, and audited all the same.
    pub async fn list_programs_without_a_valid_key(&mut self) -> tonic::Code {
        self.calls += 1;
        let request = authed(runtime::ListProgramsRequest::default(), "not-a-key");
        self.programs.list_programs(request).await.map_or_else(|status| status.code(), |_| tonic::Code::Ok)
    }

    /// Lists alice's programs.
    pub async fn list_programs(&mut self) {
        let request = self.call(runtime::ListProgramsRequest::default(), "list");
        self.programs.list_programs(request).await.expect("programs listed");
    }

    /// Lists programs as bob: an event of bob's account alone.
    pub async fn list_programs_as_bob(&mut self) {
        self.calls += 1;
        let request = authed(runtime::ListProgramsRequest::default(), BOB_API_KEY);
        self.programs.list_programs(request).await.expect("programs listed");
    }

    /// Waits until the collector holds the event of every call made so far: the runtime's
    /// publishers' counts, since the trail's own use (the console's reads) is in the log too.
    pub async fn wait_stored(&self) {
        let expected = self.calls;
        let channel = self.collector_channel.clone();
        wait_until(&format!("{expected} events at the collector"), START_TIMEOUT, || {
            let channel = channel.clone();
            async move {
                let request = audit::ListPublishersRequest { location: LOCATION.into(), ..Default::default() };
                let listed = EventQueryClient::new(channel).list_publishers(authed(request, AUDITOR_TOKEN)).await;
                let publishers = listed.ok()?.into_inner().publishers;
                let runtime =
                    publishers.iter().filter(|publisher| !publisher.publisher_id.starts_with("qtrail-collector"));
                let stored: u64 = runtime.map(|publisher| publisher.event_count).sum();
                assert!(stored <= expected, "more events than calls");
                (stored == expected).then_some(())
            }
        })
        .await;
    }
}

async fn connect(url: &str) -> Channel {
    Channel::from_shared(url.to_owned()).expect("a url").connect().await.expect("connect")
}

pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

/// Saves a screenshot of the browser window as `target/e2e-artifacts/<name>` and prints where.
pub async fn save_screenshot(browser: &Browser, name: &str) {
    let path = qtrail_testkit::artifacts_dir("e2e-artifacts").join(name);
    std::fs::write(&path, browser.screenshot().await).expect("write the screenshot");
    println!("console screenshot: {}", path.display());
}

/// Runs `script` until it returns something other than null or false, then returns that.
pub async fn wait_for_script(browser: &Browser, what: &str, script: &str, args: Value) -> Value {
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
pub async fn rows(browser: &Browser) -> Vec<Vec<String>> {
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

pub async fn sign_in(browser: &Browser, trail: &Trail) {
    sign_in_with(browser, trail, AUDITOR_TOKEN).await;
}

async fn sign_in_with(browser: &Browser, trail: &Trail, token: &str) {
    browser.goto(&trail.console_url()).await;
    submit_token(browser, token).await;
    wait_until("the console of us-east", UI_TIMEOUT, || async {
        (browser.url().await.ends_with("/console/us-east") && is_shown(browser, "console").await).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_console_in_a_browser_signs_in_filters_shows_details_goes_live_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut trail = Trail::start(dir.path()).await;
    let program = trail.create_program("bell").await;
    let first_job = trail.run_job(&program).await;
    trail.run_job(&program).await;
    // Two refused cancels: a finished job, and a job that does not exist (looked at too, in
    // the same correlation).
    assert_eq!(trail.cancel(&first_job, "cancel-finished").await, tonic::Code::FailedPrecondition);
    assert_eq!(trail.cancel("no-such-job", "cancel-missing").await, tonic::Code::NotFound);
    assert_eq!(trail.get_job("no-such-job", "cancel-missing").await, tonic::Code::NotFound);
    assert_eq!(trail.list_programs_without_a_valid_key().await, tonic::Code::Unauthenticated);
    trail.wait_stored().await;
    let total = trail.calls;
    assert!(total < 50, "one page holds every event ({total})");

    let driver = Chromedriver::start(dir.path()).await;
    let browser = driver.browser(&dir.path().join("chromium-profile")).await;

    sign_in_refuses_other_tokens(&browser, &trail).await;
    the_list_shows_the_events_newest_first(&browser, total).await;
    let missing_cancel_seq = the_filter_shows_the_failed_cancels(&browser, &first_job).await;
    the_detail_shows_one_event_and_its_correlation(&browser, &missing_cancel_seq).await;
    live_shows_a_new_call_without_a_reload(&browser, &mut trail, total).await;
    verifying_and_signing_out(&browser, total).await;
    a_scoped_token_shows_only_its_accounts_events(&browser, &mut trail).await;
    browser.close().await;

    // The logs name the auditor's token, never a secret (they go to stderr under TEST_LOG).
    let collector_log = std::fs::read_to_string(dir.path().join("collector.log")).unwrap_or_default();
    let runtime_log = std::fs::read_to_string(dir.path().join("runtime.log")).unwrap_or_default();
    if std::env::var_os("TEST_LOG").is_none() {
        assert!(collector_log.contains("console sign-in") && collector_log.contains("alice"), "{collector_log}");
    }
    for secret in [AUDITOR_TOKEN, BOB_AUDITOR_TOKEN, ADMIN_TOKEN, PUBLISHER_TOKEN, API_KEY, BOB_API_KEY] {
        assert!(!collector_log.contains(secret) && !runtime_log.contains(secret), "{secret} in a log");
    }
}

/// Signed out, the console shows the sign-in form and nothing else; tokens of another role,
/// or unknown, are refused with a message saying why.
async fn sign_in_refuses_other_tokens(browser: &Browser, trail: &Trail) {
    // Signed out, the console shows the sign-in form and nothing else.
    browser.goto(&trail.console_url()).await;
    browser.wait_for("#sign-in:not([hidden])").await;
    for section in ["console", "collectors", "detail"] {
        assert!(!is_shown(browser, section).await, "{section} is hidden before sign-in");
    }
    // A token of another role is refused with a message saying why.
    submit_token(browser, ADMIN_TOKEN).await;
    let refusal = wait_for_script(
        browser,
        "the wrong-role message",
        "const t = document.getElementById('sign-in-error').textContent; return t || null;",
        json!([]),
    )
    .await;
    assert_eq!(refusal, "Sign-in refused: token `ops` has role `admin`, this service needs role `auditor`");
    submit_token(browser, "no-such-token").await;
    wait_for_script(
        browser,
        "the unknown-token message",
        "return document.getElementById('sign-in-error').textContent === 'Sign-in refused: unknown token';",
        json!([]),
    )
    .await;
}

/// Signing in with the auditor token leads from `/` to the only collector's page, which
/// lists the runtime's `total` events, newest first.
async fn the_list_shows_the_events_newest_first(browser: &Browser, total: u64) {
    submit_token(browser, AUDITOR_TOKEN).await;
    wait_until("the console of us-east", UI_TIMEOUT, || async {
        (browser.url().await.ends_with("/console/us-east") && is_shown(browser, "console").await).then_some(())
    })
    .await;
    wait_for_script(
        browser,
        "the runtime's events",
        "return document.querySelectorAll('#event-rows tr').length === arguments[0];",
        json!([total]),
    )
    .await;
    let listed = rows(browser).await;
    let seqs: Vec<String> = listed.iter().map(|row| row[0].clone()).collect();
    assert_eq!(seqs, (1..=total).rev().map(|seq| seq.to_string()).collect::<Vec<_>>(), "newest first");
    let newest = &listed[0];
    assert_eq!(newest[2], "quantum-computing.program.read");
    assert_eq!((newest[3].as_str(), newest[4].as_str()), ("failure", "critical"), "a refused key is critical");
    assert_eq!(newest[5], "anonymous", "{newest:?}");
    let oldest = &listed[listed.len() - 1];
    assert_eq!((oldest[2].as_str(), oldest[6].as_str()), ("quantum-computing.program.create", "bell"));
    assert_eq!(oldest[5], "alice@example.com");
    assert_eq!(browser.text(&browser.wait_for("#who").await).await, "alice (auditor)");
    let page = browser.execute("return document.documentElement.outerHTML + location.href;", json!([])).await;
    let page = page.as_str().unwrap();
    assert!(!page.contains(AUDITOR_TOKEN) && !page.contains(API_KEY), "no secret in the page or its URL");
}

/// Filtering to failed job cancels; returns the position of the cancel of a missing job.
async fn the_filter_shows_the_failed_cancels(browser: &Browser, first_job: &str) -> String {
    let action = browser.wait_for("input[name=action]").await;
    browser.type_text(&action, "quantum-computing.job.cancel").await;
    browser.click(&browser.wait_for("select[name=outcome] option[value=failure]").await).await;
    browser.click(&browser.wait_for("#apply").await).await;
    wait_for_script(
        browser,
        "the failed cancels",
        "return document.querySelectorAll('#event-rows tr').length === 2;",
        json!([]),
    )
    .await;
    let cancels = rows(browser).await;
    for row in &cancels {
        assert_eq!((row[2].as_str(), row[3].as_str()), ("quantum-computing.job.cancel", "failure"), "{row:?}");
    }
    // A job that does not exist has no name: the list labels it from its CRN.
    assert_eq!(cancels[0][6], "job no-such-job");
    assert_eq!(cancels[1][6], first_job);
    let highlighted = browser
        .execute(
            "return [...document.querySelectorAll('#event-rows tr')].every(r => r.classList.contains('row-outcome-failure') && getComputedStyle(r).backgroundColor !== 'rgba(0, 0, 0, 0)');",
            json!([]),
        )
        .await;
    assert_eq!(highlighted, true, "failures are highlighted");
    let url = browser.url().await;
    assert!(url.contains("action=quantum-computing.job.cancel") && url.contains("outcome=failure"), "{url}");

    cancels[0][0].clone()
}

/// One event's detail: both JSON forms, its position and hashes, and its correlation.
async fn the_detail_shows_one_event_and_its_correlation(browser: &Browser, missing_cancel_seq: &str) {
    browser
        .click(&browser.wait_for(&format!("#event-rows tr[data-seq='{missing_cancel_seq}'] button.seq")).await)
        .await;
    let detail = wait_for_script(
        browser,
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
    assert_eq!(at["correlationId"], "cancel-missing");
    assert_eq!(at["initiator"]["id"], "IBMid-0001");
    let cadf: Value =
        serde_json::from_str(browser.text(&browser.wait_for("#detail-cadf").await).await.as_str()).expect("CADF-JSON");
    assert_eq!(cadf["action"], "update/cancel");
    let fact = |name: &str| {
        let script = "const dt = [...document.querySelectorAll('#detail-facts dt')].find(d => d.textContent === arguments[0]); return dt ? dt.nextElementSibling.textContent : null;";
        browser.execute(script, json!([name]))
    };
    assert_eq!(fact("location_seq").await, Value::String(missing_cancel_seq.to_owned()));
    assert_eq!(fact("Correlation id").await, "cancel-missing");
    let hashes = browser
        .execute(
            "return [...document.querySelectorAll('#detail-facts dd')].map(d => d.textContent).filter(t => /^[0-9a-f]{64}$/.test(t)).length;",
            json!([]),
        )
        .await;
    assert_eq!(hashes, 2, "chain hash and previous hash");
    assert!(fact("Publisher").await.as_str().unwrap().starts_with("runtime-inst-e2e-"));
    save_screenshot(browser, "console-detail.png").await;
    browser.click(&browser.wait_for("#detail-correlation:not([hidden])").await).await;
    wait_for_script(
        browser,
        "the events of correlation cancel-missing",
        "return document.querySelectorAll('#event-rows tr').length === 2 && location.search === '?correlation_id=cancel-missing';",
        json!([]),
    )
    .await;
    let correlated: Vec<String> = rows(browser).await.into_iter().map(|row| row[2].clone()).collect();
    assert_eq!(correlated, ["quantum-computing.job.read", "quantum-computing.job.cancel"]);
}

/// Live: the event of a new call appears at the top without a reload.
async fn live_shows_a_new_call_without_a_reload(browser: &Browser, trail: &mut Trail, total: u64) {
    browser.click(&browser.wait_for("#clear").await).await;
    wait_for_script(
        browser,
        "the whole list",
        "return document.querySelectorAll('#event-rows tr').length === arguments[0];",
        json!([total]),
    )
    .await;
    browser.execute("window.__sameDocument = 'still here';", json!([])).await;
    browser.click(&browser.wait_for("#live").await).await;
    wait_for_script(
        browser,
        "the live view to connect",
        "return document.getElementById('live-status').textContent.startsWith('live:');",
        json!([]),
    )
    .await;
    trail.list_programs().await;
    wait_for_script(
        browser,
        "the live event",
        "const r = document.querySelector('#event-rows tr'); return !!r && Number(r.dataset.seq) > arguments[0];",
        json!([total]),
    )
    .await;
    let live = &rows(browser).await[0];
    assert_eq!((live[2].as_str(), live[3].as_str()), ("quantum-computing.program.read", "success"));
    let same_document = browser.execute("return window.__sameDocument;", json!([])).await;
    assert_eq!(same_document, "still here", "the page was not reloaded");
}

/// The chain verifies; signing out forgets what was shown and the API no longer answers.
async fn verifying_and_signing_out(browser: &Browser, total: u64) {
    // Verify the chain.
    browser.click(&browser.wait_for("#verify").await).await;
    let verdict = wait_for_script(
        browser,
        "the chain verdict",
        "const v = document.getElementById('verify-result'); return v.classList.contains('ok') || v.classList.contains('bad') ? v.textContent : null;",
        json!([]),
    )
    .await;
    // Every event of the chain: the runtime's total + 1 and the trail's own use since sign-in.
    let checked: u64 = verdict
        .as_str()
        .and_then(|text| text.strip_prefix("Chain ok: "))
        .and_then(|text| text.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("a verdict of a whole chain: {verdict}"));
    assert!(checked > total + 1, "the runtime's events and the console's own reads: {verdict}");
    // This collector has no checkpoint key; the verdict says so rather than stay silent.
    assert!(verdict.as_str().unwrap().ends_with(". No signed checkpoints"), "{verdict}");
    save_screenshot(browser, "console.png").await;

    // Signing out forgets what was shown and the API no longer answers this browser.
    browser.click(&browser.wait_for("#sign-out").await).await;
    browser.wait_for("#sign-in:not([hidden])").await;
    assert!(rows(browser).await.is_empty(), "the list is emptied on sign-out");
    let status = browser.execute("return fetch('/api/collectors').then(r => r.status);", json!([])).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn markup_in_event_text_shows_as_text_and_runs_no_script() {
    let dir = tempfile::tempdir().unwrap();
    let mut trail = Trail::start(dir.path()).await;
    trail.create_program("harmless").await;
    trail.wait_stored().await;
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
        .execute(
            "window.__xss = false; window.alert = () => { window.__xss = true; }; document.addEventListener('securitypolicyviolation', e => { window.__blocked = e.violatedDirective; });",
            json!([]),
        )
        .await;
    browser.click(&browser.wait_for("#live").await).await;
    wait_for_script(
        &browser,
        "the live view",
        "return document.getElementById('live-status').textContent.startsWith('live:');",
        json!([]),
    )
    .await;
    let program = trail.create_program(XSS_NAME).await;
    wait_for_script(
        &browser,
        "the program's event",
        "return document.querySelectorAll('#event-rows tr').length === 2;",
        json!([]),
    )
    .await;

    let cells = browser
        .execute(
            "const r = document.querySelector('#event-rows tr'); return [r.querySelector('td.target').textContent, r.querySelector('td.message').textContent];",
            json!([]),
        )
        .await;
    assert_eq!(cells[0], XSS_NAME, "the name shows as text");
    assert!(cells[1].as_str().unwrap().contains(XSS_NAME), "{cells}");
    // The newest of the service's events: the program's (the list leaves out the trail's own use).
    browser.click(&browser.wait_for("#event-rows tr:first-child button.seq").await).await;
    let detail = wait_for_script(
        &browser,
        "the detail",
        "const t = document.getElementById('detail-at').textContent; return t.includes('onerror') ? t : null;",
        json!([]),
    )
    .await;
    let at: Value = serde_json::from_str(detail.as_str().unwrap()).unwrap();
    assert_eq!(
        (at["target"]["name"].as_str(), at["responseData"]["programId"].as_str()),
        (Some(XSS_NAME), Some(program.as_str()))
    );
    let images = browser.execute("return document.querySelectorAll('img').length;", json!([])).await;
    assert_eq!(images, 0, "no element was made from the event text");
    assert_eq!(browser.execute("return window.__xss;", json!([])).await, false, "alert never ran");
    assert_eq!(browser.dialog_text().await, None, "no dialog is open");

    // Even markup that did reach the DOM could not run: the policy blocks inline handlers.
    let forced = XSS_NAME.replace("alert(1)", "window.__xss=true");
    browser
        .execute(
            "const d = document.createElement('div'); d.id = 'probe'; document.body.append(d); d.innerHTML = arguments[0];",
            json!([forced]),
        )
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
    let request = authed(audit::CreateCollectorRequest { location: "eu-de".into() }, ADMIN_TOKEN);
    CollectorAdminClient::new(trail.collector_channel.clone())
        .create_collector(request)
        .await
        .expect("second collector");
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

/// Bob's account-scoped token shows bob's one call, none of alice's many: in the list, and by
/// position, where alice's first event answers 404 as if absent.
async fn a_scoped_token_shows_only_its_accounts_events(browser: &Browser, trail: &mut Trail) {
    trail.list_programs_as_bob().await;
    trail.wait_stored().await;
    sign_in_with(browser, trail, BOB_AUDITOR_TOKEN).await;
    assert_eq!(browser.text(&browser.wait_for("#who").await).await, "auditor-bob (auditor)");
    wait_for_script(
        browser,
        "bob's call",
        "return [...document.querySelectorAll('#event-rows tr')].some(r => r.textContent.includes('bob@example.com'));",
        json!([]),
    )
    .await;
    let shown = rows(browser).await;
    assert_eq!(shown.len(), 1, "only bob's call: {shown:?}");
    assert!(shown[0].iter().any(|cell| cell.contains("bob@example.com")), "{shown:?}");
    assert!(!shown.iter().flatten().any(|cell| cell.contains("alice@example.com")), "{shown:?}");
    let status =
        browser.execute("return fetch('/api/locations/us-east/events/1').then(r => r.status);", json!([])).await;
    assert_eq!(status, 404);
    save_screenshot(browser, "console-scoped.png").await;
}
