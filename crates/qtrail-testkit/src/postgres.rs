//! A real PostgreSQL server of a test or benchmark: a data directory made by `initdb` in a
//! temporary directory, a server listening on a unix socket in it (no TCP port to collide on),
//! trust authentication for one user, stopped and removed when dropped.
//!
//! The server is started in a process group of its own, so that [`Postgres::kill`] can kill it
//! the way a crash would (the postmaster and every backend at once, SIGKILL) and
//! [`Postgres::restart`] can start it again on the same data directory, which then runs crash
//! recovery. PostgreSQL refuses to run as root: when the caller is root, the server runs as
//! `nobody`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The user the server trusts.
pub const USER: &str = "qtrail";
/// The socket's "port": it only names the socket file, no TCP is opened.
const PORT: u16 = 5432;
/// `nobody`, who runs the server when the caller is root.
const NOBODY: u32 = 65_534;
/// How long start-up (initdb, then the server accepting connections) may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the server did not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no postgresql binaries (postgres, initdb, pg_isready, psql, pg_dump) in /usr/lib/postgresql/*/bin, on PATH or in /usr/local/bin"
    )]
    NoBinaries,
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("initdb failed: {0}")]
    Initdb(String),
    #[error("postgres exited during start-up with {0}")]
    ExitedEarly(std::process::ExitStatus),
    #[error("postgres did not accept connections within {0:?}")]
    Timeout(Duration),
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { what: what.to_owned(), source }
}

/// The binaries a directory must hold: the server's and the clients' the tests run.
const BINARIES: [&str; 5] = ["postgres", "initdb", "pg_isready", "psql", "pg_dump"];

/// Returns the directory holding the server and client binaries, if any: PostgreSQL's own
/// directories (`/usr/lib/postgresql/*/bin`, newest first), then `PATH` and the usual places
/// (some hold only the server, without the clients).
pub fn find_binaries() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|entry| entry.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    let mut dirs: Vec<PathBuf> = versions.into_iter().rev().collect();
    dirs.extend(
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect::<Vec<_>>()).unwrap_or_default(),
    );
    dirs.push("/usr/local/bin".into());
    dirs.push("/usr/local/pgsql/bin".into());
    dirs.into_iter().find(|dir| BINARIES.iter().all(|name| dir.join(name).is_file()))
}

/// A running PostgreSQL server; killed (the whole process group) and removed when dropped.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    settings: Vec<String>,
    child: Option<Child>,
}

impl Postgres {
    /// Creates a database cluster in a temporary directory and starts a server on it, with
    /// PostgreSQL's durable defaults (`fsync`, `synchronous_commit`); returns once it accepts
    /// connections.
    ///
    /// # Errors
    /// When the binaries are missing, initdb fails, or the server does not start.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(&[])
    }

    /// As [`Postgres::start`], with extra server settings (`name=value`, each given as `-c`).
    ///
    /// # Errors
    /// As [`Postgres::start`].
    pub fn start_with(settings: &[&str]) -> Result<Self, Error> {
        let bin = find_binaries().ok_or(Error::NoBinaries)?;
        let dir = tempfile::Builder::new().prefix("qtrail-pg-").tempdir().map_err(io("cannot create a temp dir"))?;
        if running_as_root() {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY))
                .map_err(io("cannot hand the temp dir to nobody"))?;
        }
        let output = command(&bin, "initdb")
            .args(["--auth=trust", "--encoding=UTF8", "--no-sync", "--username", USER, "-D"])
            .arg(dir.path().join("data"))
            .output()
            .map_err(io("cannot run initdb"))?;
        if !output.status.success() {
            return Err(Error::Initdb(String::from_utf8_lossy(&output.stderr).trim().to_owned()));
        }
        let settings = settings.iter().map(|setting| (*setting).to_owned()).collect();
        let mut server = Self { bin, dir, settings, child: None };
        server.restart()?;
        Ok(server)
    }

    /// Returns the connection URL of the `postgres` database (`postgres://…?host=<socket dir>`).
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// Returns the connection URL of database `name`.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://{USER}@localhost:{PORT}/{name}?host={}", self.dir.path().display())
    }

    /// Returns the directory holding the socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the directory of the binaries (for `psql`, `pg_dump`, `pg_restore`, `createdb`).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Returns a command running PostgreSQL client `name` (e.g. `psql`, `pg_dump`) against this
    /// server: host, port and user set, as `nobody` when the caller is root.
    pub fn client(&self, name: &str) -> Command {
        let mut command = command(&self.bin, name);
        command.arg("--host").arg(self.dir.path()).args(["--port", &PORT.to_string(), "--username", USER]);
        command
    }

    /// Kills the server the way a crash would: SIGKILL to the postmaster and every backend.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
        // Backends of the killed group may take a moment to go; a restart refuses to start while
        // one still holds the old server's shared memory.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.backends_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Returns whether any process still has the data directory as its working directory (a
    /// backend of a killed server).
    fn backends_alive(&self) -> bool {
        let data = self.dir.path().join("data");
        let Ok(processes) = std::fs::read_dir("/proc") else {
            return false;
        };
        processes.flatten().any(|entry| std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == data))
    }

    /// Starts the server (again) on its data directory and waits until it accepts connections.
    ///
    /// # Errors
    /// When it cannot be spawned, exits, or does not accept connections in time.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill();
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).map_err(io("cannot create the log"))?;
        let mut command = command(&self.bin, "postgres");
        command
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(self.dir.path())
            .args(["-p", &PORT.to_string(), "-c", "listen_addresses="])
            .stdout(log.try_clone().map_err(io("cannot share the log"))?)
            .stderr(log)
            .process_group(0);
        for setting in &self.settings {
            command.arg("-c").arg(setting);
        }
        let child = command.spawn().map_err(io("cannot start postgres"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Polls `pg_isready` until the server accepts connections.
    fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = self.client("pg_isready").args(["--dbname", "postgres"]).output();
            if ready.is_ok_and(|output| output.status.success()) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::ExitedEarly(status));
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(START_TIMEOUT));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Returns the server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Returns whether this process runs as root (the owner of `/proc/self` is its effective user).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|metadata| metadata.uid() == 0)
}

/// Runs a PostgreSQL binary, as `nobody` when the caller is root (PostgreSQL refuses root).
fn command(bin: &Path, name: &str) -> Command {
    let mut command = Command::new(bin.join(name));
    if running_as_root() {
        command.uid(NOBODY).gid(NOBODY);
    }
    command.stdin(Stdio::null());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psql(server: &Postgres, sql: &str) -> std::process::Output {
        server.client("psql").args(["--dbname", "postgres", "-tAc", sql]).output().expect("run psql")
    }

    #[test]
    fn a_killed_server_restarts_with_its_committed_data() {
        let mut server = Postgres::start().expect("start postgres");
        assert!(server.url().starts_with("postgres://qtrail@"), "{}", server.url());
        let created = psql(&server, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)");
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

        server.kill();
        assert!(!psql(&server, "SELECT 1").status.success(), "a killed server answered");
        server.restart().expect("restart after kill");

        let read = psql(&server, "SELECT v FROM t");
        assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "42", "{}", server.log());
    }
}
