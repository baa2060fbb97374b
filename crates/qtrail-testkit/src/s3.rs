//! A real S3-compatible server for tests: `s3s-fs` (crates.io, installed by `scripts/test` with
//! `cargo install s3s-fs --version 0.14.1 --locked --features binary`), serving a temporary
//! directory on port 0 with one bucket and a key pair; killed and removed when dropped.
//!
//! The binary is found at `QTRAIL_S3S_FS`, on `PATH`, or in `$CARGO_HOME/bin` (`~/.cargo/bin`).
//! Objects are plain files under [`S3Server::bucket_dir`], so a test can damage one the way a
//! faulty disk or a hostile operator would.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The bucket every server has.
pub const BUCKET: &str = "qtrail";
const ACCESS_KEY: &str = "qtrail-test-access";
const SECRET_KEY: &str = "qtrail-test-secret";
/// How long the server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// What s3s-fs logs once it listens, before its address.
const READY: &str = "server is running at ";

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no s3s-fs binary (QTRAIL_S3S_FS, PATH, $CARGO_HOME/bin): cargo install s3s-fs --version 0.14.1 --locked --features binary"
    )]
    NoBinary,
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("s3s-fs did not listen within {0:?}")]
    Timeout(Duration),
}

/// Returns the s3s-fs binary, if installed.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("QTRAIL_S3S_FS") {
        return Some(PathBuf::from(path));
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect()).unwrap_or_default();
    match std::env::var_os("CARGO_HOME") {
        Some(home) => dirs.push(PathBuf::from(home).join("bin")),
        None => dirs.extend(std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin"))),
    }
    dirs.into_iter().map(|dir| dir.join("s3s-fs")).find(|path| path.is_file())
}

/// A running s3s-fs server; killed and its directory removed when dropped.
#[derive(Debug)]
pub struct S3Server {
    child: Child,
    dir: tempfile::TempDir,
    endpoint: String,
}

impl S3Server {
    /// Starts a server on 127.0.0.1, port 0, over a new temporary directory with the bucket
    /// [`BUCKET`]; returns once it listens.
    ///
    /// # Errors
    /// When the binary is missing or the server does not start.
    pub fn start() -> Result<Self, Error> {
        let binary = find_binary().ok_or(Error::NoBinary)?;
        let dir = tempfile::Builder::new()
            .prefix("qtrail-s3-")
            .tempdir()
            .map_err(|source| Error::Io { what: "cannot create a temp dir".to_owned(), source })?;
        std::fs::create_dir(dir.path().join(BUCKET))
            .map_err(|source| Error::Io { what: "cannot create the bucket".to_owned(), source })?;
        let mut child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", "0", "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(dir.path())
            .env("RUST_LOG", "s3s_fs=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Io { what: format!("cannot run {}", binary.display()), source })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (found, address) = mpsc::channel();
        // Reads the log until the address, then drains it so that the server never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(at) = line.find(READY) {
                    let url = line[at + READY.len()..].trim().to_owned();
                    sent = found.send(url).is_ok();
                }
            }
        });
        match address.recv_timeout(START_TIMEOUT) {
            Ok(endpoint) => Ok(Self { child, dir, endpoint }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(Error::Timeout(START_TIMEOUT))
            }
        }
    }

    /// Returns the server's endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Returns the `s3://` URL of `prefix` in the bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// Returns the variables that point an `object_store` S3 client at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }

    /// Returns the directory whose files are the bucket's objects (`<dir>/<key>`).
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join(BUCKET)
    }

    /// Returns the files of objects under `prefix` whose name ends with `suffix`, sorted.
    pub fn objects(&self, prefix: &str, suffix: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        collect(&self.bucket_dir().join(prefix), suffix, &mut found);
        found.sort();
        found
    }
}

fn collect(dir: &Path, suffix: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, suffix, found);
        } else if path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.ends_with(suffix)) {
            found.push(path);
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
