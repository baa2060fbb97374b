//! One child process that never outlives its owner: started from a prepared command, waited
//! for until it writes its address file (failing fast when it exits instead), signalled the
//! way an operator or a crash would stop it, and killed when dropped.
//!
//! Errors rather than panics, because the benchmark harness runs its servers through this in
//! production runs too; tests `expect` them.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

/// The signals a test or the benchmark harness sends (re-exported so that users need no `nix`).
pub use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use qtrail_server::poll;

/// Pause between two looks at an address file: short, because the benchmark harness reports
/// the time from spawning to the address file as the server's start-up time.
const ADDR_FILE_INTERVAL: Duration = Duration::from_millis(2);

/// Why a child process did not start, serve or stop as expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start {name}: {source}")]
    Spawn { name: String, source: std::io::Error },
    #[error("{name} exited during start-up with {status}")]
    ExitedEarly { name: String, status: ExitStatus },
    #[error("{name} did not {what} within {timeout:?}")]
    Timeout { name: String, what: &'static str, timeout: Duration },
    #[error("cannot send {signal} to {name}: {source}")]
    Signal { name: String, signal: Signal, source: nix::Error },
    #[error("cannot wait for {name}: {source}")]
    Wait { name: String, source: std::io::Error },
}

/// A running child process, killed with SIGKILL (and reaped) when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
}

impl Process {
    /// Spawns `command`; `name` names the process in errors.
    ///
    /// # Errors
    /// When the command cannot be spawned.
    pub fn spawn(name: &str, command: &mut Command) -> Result<Self, Error> {
        let child = command.spawn().map_err(|source| Error::Spawn { name: name.to_owned(), source })?;
        Ok(Self { name: name.to_owned(), child })
    }

    /// Returns the name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Returns the exit status once the process has exited, without waiting.
    ///
    /// # Errors
    /// When the process cannot be waited for.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>, Error> {
        self.child.try_wait().map_err(|source| Error::Wait { name: self.name.clone(), source })
    }

    /// Waits until the process has written the address it serves on to `path` (a file that
    /// existed before is the caller's to remove), and returns that address.
    ///
    /// # Errors
    /// When the process exits first, or writes nothing within `timeout`.
    pub async fn wait_for_addr_file(&mut self, path: &Path, timeout: Duration) -> Result<SocketAddr, Error> {
        let written = poll::until_every(ADDR_FILE_INTERVAL, timeout, || {
            let found = match qtrail_server::addr_file::read(path).ok().flatten() {
                Some(addr) => Some(Ok(addr)),
                None => match self.try_status() {
                    Ok(Some(status)) => Some(Err(Error::ExitedEarly { name: self.name.clone(), status })),
                    Ok(None) => None,
                    Err(err) => Some(Err(err)),
                },
            };
            std::future::ready(found)
        })
        .await;
        written
            .unwrap_or_else(|| Err(Error::Timeout { name: self.name.clone(), what: "write its address file", timeout }))
    }

    /// Sends `signal`, e.g. SIGSTOP to freeze the process the way a stalled machine would.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        let name = || self.name.clone();
        let pid = i32::try_from(self.child.id()).map_err(|_| Error::Signal {
            name: name(),
            signal,
            source: nix::Error::ESRCH,
        })?;
        kill(Pid::from_raw(pid), signal).map_err(|source| Error::Signal { name: name(), signal, source })
    }

    /// Waits until the process exits, and returns its status.
    ///
    /// # Errors
    /// When it has not exited within `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        let exited = poll::until(timeout, || std::future::ready(self.try_status().transpose())).await;
        exited.unwrap_or_else(|| Err(Error::Timeout { name: self.name.clone(), what: "exit", timeout }))
    }

    /// Sends `signal` (SIGTERM or SIGINT, as an operator stops a server) and waits until the
    /// process exits.
    ///
    /// # Errors
    /// When the signal cannot be sent or the process has not exited within `timeout`.
    pub async fn stop(&mut self, signal: Signal, timeout: Duration) -> Result<ExitStatus, Error> {
        self.signal(signal)?;
        self.wait_exit(timeout).await
    }

    /// Returns what the process wrote to its piped stderr, reading until it closes (so call
    /// it after the process has exited).
    ///
    /// # Panics
    /// When stderr was not piped, or was taken already.
    pub fn read_stderr(&mut self) -> String {
        let mut stderr = self.child.stderr.take().unwrap_or_else(|| panic!("{}'s stderr is not piped", self.name));
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap_or_else(|err| panic!("read {}'s stderr: {err}", self.name));
        text
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it; nothing happens when
    /// it has exited already.
    pub fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    #[tokio::test]
    async fn a_process_that_exits_instead_of_serving_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut process = Process::spawn("false", Command::new("false").stdin(Stdio::null())).unwrap();
        let err = process.wait_for_addr_file(&dir.path().join("addr"), Duration::from_secs(30)).await.unwrap_err();
        assert!(matches!(err, Error::ExitedEarly { ref status, .. } if !status.success()), "{err}");
    }

    #[tokio::test]
    async fn a_served_then_stopped_process_reports_its_address_status_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let addr_file = dir.path().join("addr");
        // The address file is written once the trap is set, as a server writes it once it serves.
        let script = "trap 'echo bye >&2; exit 0' TERM; echo hi >&2; printf 127.0.0.1:4242 > \"$0.tmp\"; \
                      mv \"$0.tmp\" \"$0\"; while :; do sleep 0.01; done";
        let mut command = Command::new("sh");
        command.arg("-c").arg(script).arg(&addr_file).stdin(Stdio::null()).stderr(Stdio::piped());
        let mut process = Process::spawn("sh", &mut command).unwrap();
        let addr = process.wait_for_addr_file(&addr_file, Duration::from_secs(30)).await.unwrap();
        assert_eq!(addr, "127.0.0.1:4242".parse().unwrap());
        assert!(process.try_status().unwrap().is_none());
        let status = process.stop(Signal::SIGTERM, Duration::from_secs(30)).await.unwrap();
        assert!(status.success(), "{status}");
        assert_eq!(process.read_stderr(), "hi\nbye\n");
    }

    #[tokio::test]
    async fn a_process_is_killed_when_dropped() {
        let process = Process::spawn("sleep", Command::new("sleep").arg("600")).unwrap();
        let pid = Pid::from_raw(i32::try_from(process.id()).unwrap());
        drop(process);
        assert_eq!(kill(pid, None), Err(nix::Error::ESRCH), "the child is gone and reaped");
    }
}
