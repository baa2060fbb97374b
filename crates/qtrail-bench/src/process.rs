//! Servers under test as child processes: the harness runs its own binary again as
//! `qtrail-bench serve <role> …`, which calls the collector's or the runtime's `run` exactly as
//! their binaries do. Separate processes keep the load generator's CPU and memory out of the
//! servers' (peak RSS is read from `/proc`) and talk over real loopback sockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use qtrail_server::tls::ClientTls;
use qtrail_testkit::{Process, ServerAddr, Signal};

/// How long a server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A server running as a child process; killed when dropped.
#[derive(Debug)]
pub struct Server {
    process: Process,
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// How long it took from spawning to its address file (written once it serves).
    pub start_time: Duration,
    /// How clients reach it when it serves TLS.
    tls: Option<ClientTls>,
}

impl Server {
    /// Starts `qtrail-bench serve <role> <args>`, which must write its address to `addr_file`
    /// once it serves, and waits for that.
    ///
    /// # Errors
    /// When the process cannot start, exits, or does not serve in time.
    pub async fn start(role: &str, args: &[String], addr_file: &Path) -> anyhow::Result<Self> {
        let _ = std::fs::remove_file(addr_file);
        let exe = std::env::current_exe().context("cannot find the harness binary")?;
        let started = Instant::now();
        let mut command = std::process::Command::new(exe);
        command
            .arg("serve")
            .arg(role)
            .args(args)
            // The servers' info logs would drown the measurements; warnings and errors still show.
            .env("RUST_LOG", std::env::var("QTRAIL_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut process = Process::spawn(&format!("the {role}"), &mut command)?;
        let addr = process.wait_for_addr_file(addr_file, START_TIMEOUT).await?;
        Ok(Self { process, addr, start_time: started.elapsed(), tls: None })
    }

    /// Marks it as serving TLS, reached with `tls`.
    #[must_use]
    pub fn with_client_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    fn address(&self) -> ServerAddr {
        ServerAddr { addr: self.addr, tls: self.tls.clone() }
    }

    /// Returns its URL: `http://ADDR`, or `https://localhost:PORT` when it serves TLS (the
    /// name its test certificate carries).
    pub fn url(&self) -> String {
        self.address().url()
    }

    /// Returns how clients reach it: TLS files, or none for plaintext.
    pub fn client_tls(&self) -> ClientTls {
        self.address().client_tls()
    }

    /// Returns its process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Returns its peak resident set so far, in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        crate::machine::peak_rss_mib(self.pid())
    }

    /// Stops it with SIGTERM, as an operator would, and waits for it to exit.
    ///
    /// # Errors
    /// When it does not exit in time or exits with a failure.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let status = self.process.stop(Signal::SIGTERM, STOP_TIMEOUT).await?;
        if !status.success() {
            bail!("the server exited with {status}");
        }
        Ok(())
    }
}

impl Server {
    /// Kills it with SIGKILL, as a crash would, and waits for it to be gone.
    ///
    /// # Errors
    /// When the signal cannot be sent or it does not exit in time.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.process.signal(Signal::SIGKILL)?;
        self.process.wait_exit(STOP_TIMEOUT).await?;
        Ok(())
    }
}

/// The files of one server: data directory, tokens or principals, address file.
#[derive(Debug)]
pub struct Files {
    /// Root of the server's files.
    pub dir: PathBuf,
}

impl Files {
    /// Returns the files under `dir`, creating it.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Returns the path of `name` inside.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Returns the path of `name` inside as a string argument.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}
