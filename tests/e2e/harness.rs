//! Starts the real qtrail binaries as child processes, the way InfluxDB 3's end-to-end tests do:
//! port 0 and an address file, readiness through `grpc.health.v1`, a temporary data directory,
//! and a kill on drop so no test leaves a server behind, even when it panics.
//!
//! Servers with an HTTP side (the collector's console and metrics) get `--http 127.0.0.1:0` and
//! an HTTP address file too; restarts keep both ports.
//!
//! Child logs go to `<data dir>/<name>.log`; with `TEST_LOG` set (to a `RUST_LOG` filter, or
//! empty for `info`) they go to this process's stderr instead.
//!
//! The binaries must be built first (`cargo build --workspace --bins`, which the README's test
//! command runs). `QTRAIL_BIN_DIR` overrides where they are looked for.

#![allow(dead_code)]

use std::ffi::OsString;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use qtrail_server::tls::ClientTls;

/// How long a server may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Returns the path of a workspace binary, next to the test binary's `deps/` directory.
pub fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("QTRAIL_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let test_exe = std::env::current_exe().expect("the test binary knows its path");
            // target/<profile>/deps/e2e-<hash> → target/<profile>
            test_exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps").to_owned()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} does not exist: build the binaries first with `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    path
}

/// Keeps TLS settings of this process's environment away from a child: a test decides with
/// flags whether its servers and clients speak TLS.
pub fn without_tls_env(command: &mut Command) -> &mut Command {
    for setting in ["TLS_CA", "TLS_CERT", "TLS_KEY"] {
        command.env_remove(format!("QTRAIL_{setting}"));
    }
    for service in ["COLLECTOR", "RUNTIME"] {
        for setting in ["TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA"] {
            command.env_remove(format!("QTRAIL_{service}_{setting}"));
        }
    }
    for setting in ["CA", "CERT", "KEY"] {
        command.env_remove(format!("QTRAIL_RUNTIME_COLLECTOR_{setting}"));
    }
    command
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    qtrail_server::poll::until(timeout, check)
        .await
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// A server binary running as a child process.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    binary: PathBuf,
    args: Vec<OsString>,
    dir: PathBuf,
    child: Option<Child>,
    addr: SocketAddr,
    /// The HTTP side's address, for servers started with one.
    http: Option<SocketAddr>,
    /// How clients reach a server that serves TLS (`None`: plaintext).
    tls: Option<ClientTls>,
}

impl ServerProcess {
    /// Starts `binary` with `args` plus `--listen 127.0.0.1:0 --addr-file <dir>/<name>.addr`,
    /// and waits until it reports SERVING on gRPC health.
    pub async fn start(name: &str, binary: PathBuf, args: Vec<OsString>, dir: &Path) -> Self {
        Self::start_inner(name, binary, args, dir, None, None).await
    }

    /// Starts a server whose `args` make it serve TLS, which clients reach with `tls`: its
    /// readiness is checked over TLS and [`ServerProcess::url`] is `https://localhost:<port>`.
    /// With `http`, it gets an HTTP side as with [`ServerProcess::start_with_http`].
    pub async fn start_tls(
        name: &str,
        binary: PathBuf,
        args: Vec<OsString>,
        dir: &Path,
        tls: ClientTls,
        http: bool,
    ) -> Self {
        let http = http.then(|| "127.0.0.1:0".parse().expect("a valid address"));
        Self::start_inner(name, binary, args, dir, http, Some(tls)).await
    }

    /// Starts a server that also has an HTTP side, like [`ServerProcess::start`] plus
    /// `--http 127.0.0.1:0 --http-addr-file <dir>/<name>.http.addr` (the server writes that file
    /// before its gRPC address file); [`ServerProcess::http_url`] then tells where it listens.
    pub async fn start_with_http(name: &str, binary: PathBuf, args: Vec<OsString>, dir: &Path) -> Self {
        let any_port = "127.0.0.1:0".parse().expect("a valid address");
        Self::start_inner(name, binary, args, dir, Some(any_port), None).await
    }

    async fn start_inner(
        name: &str,
        binary: PathBuf,
        args: Vec<OsString>,
        dir: &Path,
        http: Option<SocketAddr>,
        tls: Option<ClientTls>,
    ) -> Self {
        let mut process = Self {
            name: name.to_owned(),
            binary,
            args,
            dir: dir.to_owned(),
            child: None,
            addr: "127.0.0.1:0".parse().expect("a valid address"),
            http,
            tls,
        };
        process.launch().await;
        process
    }

    fn addr_file(&self) -> PathBuf {
        self.dir.join(format!("{}.addr", self.name))
    }

    fn http_addr_file(&self) -> PathBuf {
        self.dir.join(format!("{}.http.addr", self.name))
    }

    /// Launches the child on `self.addr` (port 0 the first time, the same port on restarts, so
    /// that clients configured with the address keep working).
    async fn launch(&mut self) {
        let addr_file = self.addr_file();
        let _ = std::fs::remove_file(&addr_file);
        let mut command = Command::new(&self.binary);
        without_tls_env(&mut command);
        command.args(&self.args).arg("--listen").arg(self.addr.to_string()).arg("--addr-file").arg(&addr_file);
        if let Some(http) = self.http {
            let _ = std::fs::remove_file(self.http_addr_file());
            command.arg("--http").arg(http.to_string()).arg("--http-addr-file").arg(self.http_addr_file());
        }
        command.stdin(Stdio::null()).stdout(Stdio::null());
        match std::env::var("TEST_LOG") {
            Ok(filter) => {
                command.env("RUST_LOG", if filter.is_empty() { "info".to_owned() } else { filter });
                command.stderr(Stdio::inherit());
            }
            Err(_) => {
                let log_path = self.dir.join(format!("{}.log", self.name));
                let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("open log file");
                command.env("RUST_LOG", "info").stderr(log);
            }
        }
        let mut child = command.spawn().unwrap_or_else(|err| panic!("cannot start {}: {err}", self.binary.display()));
        let name = self.name.clone();
        let addr = wait_until(&format!("{name} to write its address file"), START_TIMEOUT, || {
            let exited = child.try_wait().ok().flatten();
            if let Some(status) = exited {
                panic!(
                    "{name} exited during start-up with {status}; see {}",
                    self.dir.join(format!("{name}.log")).display()
                );
            }
            let read = qtrail_server::addr_file::read(&addr_file).ok().flatten();
            async move { read }
        })
        .await;
        self.addr = addr;
        self.child = Some(child);
        if self.http.is_some() {
            let http = qtrail_server::addr_file::read(&self.http_addr_file())
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("{name} wrote its address file but not its http address file"));
            self.http = Some(http);
        }
        let url = self.url();
        let tls = self.tls.clone().unwrap_or_default();
        wait_until(&format!("{name} to report SERVING"), START_TIMEOUT, || {
            let (url, tls) = (url.clone(), tls.clone());
            async move { qtrail_server::health::is_serving_over(&url, &tls).await.then_some(()) }
        })
        .await;
    }

    /// Returns the server's gRPC URL: `http://<addr>`, or `https://localhost:<port>` for a
    /// server that serves TLS (the name its test certificate carries).
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    /// Returns how clients reach the server: TLS files, or none for plaintext.
    pub fn client_tls(&self) -> ClientTls {
        self.tls.clone().unwrap_or_default()
    }

    /// Returns the bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the address of the HTTP side.
    ///
    /// # Panics
    /// When the server was started without one.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.unwrap_or_else(|| panic!("{} was started without an http side", self.name))
    }

    /// Returns the `http://` URL of the HTTP side (no trailing slash).
    ///
    /// # Panics
    /// When the server was started without one.
    pub fn http_url(&self) -> String {
        let http = self.http.unwrap_or_else(|| panic!("{} was started without an http side", self.name));
        format!("http://{http}")
    }

    /// Returns the process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` to the running process, e.g. SIGSTOP to freeze it the way a stalled
    /// machine would (a frozen process can still be killed).
    pub fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("the process is running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
        kill(pid, signal).unwrap_or_else(|err| panic!("send {signal} to {}: {err}", self.name));
    }

    /// Sends SIGTERM and waits for the process to exit, returning its status.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the process is running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
        kill(pid, Signal::SIGTERM).expect("send sigterm");
        let name = self.name.clone();
        wait_until(&format!("{name} to exit after sigterm"), START_TIMEOUT, || {
            let status = child.try_wait().ok().flatten();
            async move { status }
        })
        .await
    }

    /// Starts the process again with the same arguments and address, after a kill or
    /// terminate.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running {}", self.name);
        self.launch().await;
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `GET url` and returns the status code and body (for `/metrics`, `/healthz`, pages).
pub async fn http_get(url: &str) -> (u16, String) {
    use http_body_util::{BodyExt as _, Empty};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = url.parse().unwrap_or_else(|err| panic!("bad url {url}: {err}"));
    let response = tokio::time::timeout(Duration::from_secs(30), client.get(uri))
        .await
        .unwrap_or_else(|_| panic!("no answer from {url}"))
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("read body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
