//! Headless Chromium driven through W3C WebDriver: `chromedriver` as a child process on a free
//! port, and a small client over plain HTTP/1 for the commands the browser tests need.
//!
//! Debian's `chromium` and `chromium-driver` must be installed (`scripts/test` installs them);
//! without them the tests fail, saying how to install them. Chromedriver runs in its own process
//! group, which is killed on drop, so no browser outlives a test, even one that panics.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use qtrail_testkit::{START_TIMEOUT, wait_until};
use serde_json::{Value, json};

/// The key under which WebDriver identifies an element (W3C WebDriver, "web element identifier").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium flags: headless, and nothing that reaches for the network on its own (without
/// them Chromium stalls on a closed network).
const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1440,1000",
];

const INSTALL_HINT: &str =
    "install Debian's chromium and chromium-driver: `apt-get install -y chromium chromium-driver` (scripts/test does)";

/// Returns the path of `program` on `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// A running chromedriver; killed with its browsers on drop.
#[derive(Debug)]
pub struct Chromedriver {
    child: Child,
    url: String,
    chromium: PathBuf,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Chromedriver {
    /// Starts chromedriver on a free port and waits until it is ready; its log goes to
    /// `<dir>/chromedriver.log`.
    ///
    /// # Panics
    /// When Chromium or chromedriver is not installed, naming the packages to install.
    pub async fn start(dir: &Path) -> Self {
        let chromium = find_program("chromium").unwrap_or_else(|| panic!("chromium is not installed: {INSTALL_HINT}"));
        let driver =
            find_program("chromedriver").unwrap_or_else(|| panic!("chromedriver is not installed: {INSTALL_HINT}"));
        // A port the kernel just handed out and released is free for chromedriver to take.
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("create the chromedriver log");
        let child = {
            use std::os::unix::process::CommandExt as _;
            Command::new(&driver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap_or_else(|err| panic!("cannot start {}: {err}", driver.display()))
        };
        let http = Client::builder(TokioExecutor::new()).build_http();
        let driver = Self { child, url: format!("http://127.0.0.1:{port}"), chromium, http };
        wait_until("chromedriver to be ready", START_TIMEOUT, || async {
            let status = request(&driver.http, Method::GET, &format!("{}/status", driver.url), None).await.ok()?;
            status["value"]["ready"].as_bool().filter(|ready| *ready)
        })
        .await;
        driver
    }

    /// Opens a browser with a fresh profile in `profile_dir`.
    pub async fn browser(&self, profile_dir: &Path) -> Browser {
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|flag| (*flag).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile_dir.display()));
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    // Leave any dialog open, so that a test can see that one was (not) opened.
                    "unhandledPromptBehavior": "ignore",
                    "goog:chromeOptions": { "binary": self.chromium, "args": args },
                }
            }
        });
        let session = request(&self.http, Method::POST, &format!("{}/session", self.url), Some(capabilities))
            .await
            .unwrap_or_else(|err| panic!("cannot start chromium: {err}"));
        let id = session["value"]["sessionId"].as_str().expect("a session id");
        Browser { http: self.http.clone(), session: format!("{}/session/{id}", self.url) }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The group holds chromedriver and every browser it started.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Sends one WebDriver command and returns its JSON answer, or the WebDriver error.
async fn request(
    http: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|err| err.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(60), http.request(request))
        .await
        .map_err(|_| format!("no answer from chromedriver to {url}"))?
        .map_err(|err| err.to_string())?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(|err| err.to_string())?.to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).map_err(|err| format!("bad answer from chromedriver: {err}"))?;
    if !status.is_success() {
        let error = &answer["value"];
        return Err(format!("{}: {}", error["error"].as_str().unwrap_or("error"), error["message"]));
    }
    Ok(answer)
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A browser session.
#[derive(Debug)]
pub struct Browser {
    http: Client<HttpConnector, Full<Bytes>>,
    session: String,
}

impl Browser {
    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let answer = request(&self.http, method, &format!("{}{path}", self.session), body).await?;
        Ok(answer["value"].clone())
    }

    async fn must(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.command(method, path, body).await.unwrap_or_else(|err| panic!("webdriver {path}: {err}"))
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.must(Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    /// Returns the current URL.
    pub async fn url(&self) -> String {
        self.must(Method::GET, "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    /// Returns the first element matching `css`, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        let body = json!({ "using": "css selector", "value": css });
        let found = self.command(Method::POST, "/element", Some(body)).await.ok()?;
        found[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned()))
    }

    /// Waits until an element matching `css` exists and returns it.
    pub async fn wait_for(&self, css: &str) -> Element {
        wait_until(&format!("an element `{css}`"), START_TIMEOUT, || self.find(css)).await
    }

    /// Clicks `element`.
    pub async fn click(&self, element: &Element) {
        self.must(Method::POST, &format!("/element/{}/click", element.0), Some(json!({}))).await;
    }

    /// Empties a text field.
    pub async fn clear(&self, element: &Element) {
        self.must(Method::POST, &format!("/element/{}/clear", element.0), Some(json!({}))).await;
    }

    /// Types `text` into `element`.
    pub async fn type_text(&self, element: &Element, text: &str) {
        self.must(Method::POST, &format!("/element/{}/value", element.0), Some(json!({ "text": text }))).await;
    }

    /// Returns the rendered text of `element`.
    pub async fn text(&self, element: &Element) -> String {
        let value = self.must(Method::GET, &format!("/element/{}/text", element.0), None).await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns its
    /// result.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.must(Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// Drags the mouse with its left button held from `from` to `to` (viewport coordinates in
    /// CSS pixels), through the point between them, as a person's drag sends pointer events.
    pub async fn drag(&self, from: (i64, i64), to: (i64, i64)) {
        let point = |(x, y): (i64, i64), duration: u64| json!({ "type": "pointerMove", "origin": "viewport", "x": x, "y": y, "duration": duration });
        let middle = ((from.0 + to.0) / 2, (from.1 + to.1) / 2);
        let mouse = json!({
            "type": "pointer",
            "id": "mouse",
            "parameters": { "pointerType": "mouse" },
            "actions": [
                point(from, 0),
                { "type": "pointerDown", "button": 0 },
                point(middle, 50),
                point(to, 50),
                { "type": "pointerUp", "button": 0 },
            ],
        });
        self.must(Method::POST, "/actions", Some(json!({ "actions": [mouse] }))).await;
    }

    /// Returns the text of the open dialog (alert, confirm, prompt), if one is open.
    pub async fn dialog_text(&self) -> Option<String> {
        let value = self.command(Method::GET, "/alert/text", None).await.ok()?;
        Some(value.as_str().unwrap_or_default().to_owned())
    }

    /// Returns a PNG screenshot of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let value = self.must(Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD.decode(value.as_str().unwrap_or_default()).expect("base64 png")
    }

    /// Ends the session and closes the browser.
    pub async fn close(self) {
        let _ = self.command(Method::DELETE, "", None).await;
    }
}
