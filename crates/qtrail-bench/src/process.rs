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

/// How long a server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A server running as a child process; killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: std::process::Child,
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
        let mut child = std::process::Command::new(exe)
            .arg("serve")
            .arg(role)
            .args(args)
            // The servers' info logs would drown the measurements; warnings and errors still show.
            .env("RUST_LOG", std::env::var("QTRAIL_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start the {role}"))?;
        loop {
            if let Some(addr) = qtrail_server::addr_file::read(addr_file).ok().flatten() {
                return Ok(Self { child, addr, start_time: started.elapsed(), tls: None });
            }
            if let Some(status) = child.try_wait()? {
                bail!("the {role} exited before serving: {status}");
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                bail!("the {role} did not serve within {} s", START_TIMEOUT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Marks it as serving TLS, reached with `tls`.
    #[must_use]
    pub fn with_client_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Returns its URL: `http://ADDR`, or `https://localhost:PORT` when it serves TLS (the
    /// name its test certificate carries).
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    /// Returns how clients reach it: TLS files, or none for plaintext.
    pub fn client_tls(&self) -> ClientTls {
        self.tls.clone().unwrap_or_default()
    }

    /// Returns its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).context("pid out of range")?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).context("cannot signal the server")?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the server exited with {status}");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the server did not stop within {} s", STOP_TIMEOUT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
