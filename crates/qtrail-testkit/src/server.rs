//! A qtrail server binary under test: started on port 0 with an address file, ready once it
//! reports SERVING on `grpc.health.v1`, restartable on the same ports, killed on drop.
//!
//! Servers with an HTTP side (the collector's console and metrics) get `--http 127.0.0.1:0`
//! and an HTTP address file too; restarts keep both ports.
//!
//! Child logs go to `<dir>/<name>.log`; with `TEST_LOG` set (to a `RUST_LOG` filter, or empty
//! for `info`) they go to this process's stderr instead.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use nix::sys::signal::Signal;
use qtrail_server::tls::ClientTls;

use crate::address::ServerAddr;
use crate::binary::without_tls_env;
use crate::process::Process;
use crate::wait::{START_TIMEOUT, wait_until};

/// Sends a child's logs where a test reader finds them: to `<dir>/<name>.log` at `info`, or,
/// with `TEST_LOG` set, to this process's stderr at that filter (`info` when empty).
///
/// # Panics
/// When the log file cannot be opened.
pub fn capture_logs(command: &mut Command, dir: &Path, name: &str) {
    match std::env::var("TEST_LOG") {
        Ok(filter) => {
            command.env("RUST_LOG", if filter.is_empty() { "info".to_owned() } else { filter });
            command.stderr(Stdio::inherit());
        }
        Err(_) => {
            let log_path = dir.join(format!("{name}.log"));
            let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("open log file");
            command.env("RUST_LOG", "info").stderr(log);
        }
    }
}

/// A server binary running as a child process.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    binary: PathBuf,
    args: Vec<OsString>,
    dir: PathBuf,
    process: Option<Process>,
    /// The gRPC address (port 0 until the first start) and the TLS clients need.
    address: ServerAddr,
    /// The HTTP side's address, for servers started with one.
    http: Option<SocketAddr>,
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
        let addr = "127.0.0.1:0".parse().expect("a valid address");
        let mut server = Self {
            name: name.to_owned(),
            binary,
            args,
            dir: dir.to_owned(),
            process: None,
            address: ServerAddr { addr, tls },
            http,
        };
        server.launch().await;
        server
    }

    fn addr_file(&self) -> PathBuf {
        self.dir.join(format!("{}.addr", self.name))
    }

    fn http_addr_file(&self) -> PathBuf {
        self.dir.join(format!("{}.http.addr", self.name))
    }

    /// Launches the child on the current address (port 0 the first time, the same port on
    /// restarts, so that clients configured with the address keep working).
    async fn launch(&mut self) {
        let addr_file = self.addr_file();
        let _ = std::fs::remove_file(&addr_file);
        let mut command = Command::new(&self.binary);
        without_tls_env(&mut command);
        command.args(&self.args).arg("--listen").arg(self.address.addr.to_string()).arg("--addr-file").arg(&addr_file);
        if let Some(http) = self.http {
            let _ = std::fs::remove_file(self.http_addr_file());
            command.arg("--http").arg(http.to_string()).arg("--http-addr-file").arg(self.http_addr_file());
        }
        command.stdin(Stdio::null()).stdout(Stdio::null());
        capture_logs(&mut command, &self.dir, &self.name);
        let mut process = Process::spawn(&self.name, &mut command).unwrap_or_else(|err| panic!("{err}"));
        let log = self.dir.join(format!("{}.log", self.name));
        self.address.addr = process
            .wait_for_addr_file(&addr_file, START_TIMEOUT)
            .await
            .unwrap_or_else(|err| panic!("{err}; see {}", log.display()));
        self.process = Some(process);
        let name = self.name.clone();
        if self.http.is_some() {
            let http = qtrail_server::addr_file::read(&self.http_addr_file())
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("{name} wrote its address file but not its http address file"));
            self.http = Some(http);
        }
        let (url, tls) = (self.url(), self.client_tls());
        wait_until(&format!("{name} to report SERVING"), START_TIMEOUT, || {
            let (url, tls) = (url.clone(), tls.clone());
            async move { qtrail_server::health::is_serving_over(&url, &tls).await.then_some(()) }
        })
        .await;
    }

    /// Returns the server's gRPC URL: `http://<addr>`, or `https://localhost:<port>` for a
    /// server that serves TLS (the name its test certificate carries).
    pub fn url(&self) -> String {
        self.address.url()
    }

    /// Returns how clients reach the server: TLS files, or none for plaintext.
    pub fn client_tls(&self) -> ClientTls {
        self.address.client_tls()
    }

    /// Returns the bound address.
    pub fn addr(&self) -> SocketAddr {
        self.address.addr
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
        format!("http://{}", self.http_addr())
    }

    /// Returns the process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::id)
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        // Dropping the process kills and reaps it.
        self.process = None;
    }

    /// Sends `signal` to the running process, e.g. SIGSTOP to freeze it the way a stalled
    /// machine would (a frozen process can still be killed).
    pub fn signal(&self, signal: Signal) {
        let process = self.process.as_ref().expect("the process is running");
        process.signal(signal).unwrap_or_else(|err| panic!("{err}"));
    }

    /// Sends SIGTERM and waits for the process to exit, returning its status.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut process = self.process.take().expect("the process is running");
        process.stop(Signal::SIGTERM, START_TIMEOUT).await.unwrap_or_else(|err| panic!("{err}"))
    }

    /// Starts the process again with the same arguments and address, after a kill or
    /// terminate.
    pub async fn restart(&mut self) {
        assert!(self.process.is_none(), "restart of a running {}", self.name);
        self.launch().await;
    }
}
