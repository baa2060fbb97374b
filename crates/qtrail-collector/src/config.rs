//! Configuration of a collector process: command-line flags (each also settable through a
//! `QTRAIL_*` environment variable) and the [`Config`] that [`crate::run`] takes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use qtrail_server::tls::ServerTls;

use crate::tokens::Tokens;

/// Default redb page cache. redb's own default is 1 GiB, far more than a collector on a small
/// machine should pin; writes and the newest pages of each table fit comfortably in this.
pub const DEFAULT_CACHE_MIB: usize = 64;

/// Default limit of batches committed in one store transaction (group commit).
pub const DEFAULT_GROUP_COMMIT_BATCHES: u16 = 32;

/// Default time that shutdown waits for clients to finish before it stops waiting.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;

/// Default interval between signed checkpoints of each location.
pub const DEFAULT_CHECKPOINT_INTERVAL_SECS: u64 = 60;

/// Default for the most bytes of committed records held for tails (`Config::tail_buffer_bytes`),
/// whatever their number and pace; a tail further behind catches up from the store.
pub const DEFAULT_TAIL_BUFFER_BYTES: usize = 32 * 1024 * 1024;

/// Default time a tail (gRPC `TailEvents`, console live view) waits for its client to make room
/// in its stream before it ends RESOURCE_EXHAUSTED, naming the `from_seq` to resume from.
pub const DEFAULT_TAIL_STALL: Duration = Duration::from_secs(30);

/// Default lifetime of a console session: a working day, after which the auditor signs in again.
pub const DEFAULT_CONSOLE_SESSION_MINUTES: u64 = 8 * 60;

/// Command-line flags of `qtrail-collector`.
#[derive(Debug, clap::Parser)]
#[command(name = "qtrail-collector", version, about = "Stores, chains and serves qtrail audit events")]
pub struct Args {
    /// Address to listen on for gRPC, e.g. `127.0.0.1:0` for an ephemeral port.
    #[arg(long, env = "QTRAIL_COLLECTOR_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// Directory of the collector's store (created if missing).
    #[arg(long, env = "QTRAIL_COLLECTOR_DATA_DIR")]
    pub data_dir: PathBuf,
    /// TOML file of `[[token]]` entries (`token`, `role`, `name`).
    #[arg(long, env = "QTRAIL_COLLECTOR_TOKENS")]
    pub tokens: PathBuf,
    /// File that receives the bound address once the server is ready.
    #[arg(long, env = "QTRAIL_COLLECTOR_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
    /// Address of the HTTP side (web console, `/metrics`, `/healthz`); none when absent.
    #[arg(long, env = "QTRAIL_COLLECTOR_HTTP")]
    pub http: Option<SocketAddr>,
    /// File that receives the HTTP side's bound address; written before `--addr-file`.
    #[arg(long, env = "QTRAIL_COLLECTOR_HTTP_ADDR_FILE", requires = "http")]
    pub http_addr_file: Option<PathBuf>,
    /// File holding a bearer token that `/metrics` then requires; without it `/metrics` is open.
    #[arg(long, env = "QTRAIL_COLLECTOR_METRICS_TOKEN_FILE", requires = "http")]
    pub metrics_token_file: Option<PathBuf>,
    /// Minutes a console sign-in lasts.
    #[arg(long, env = "QTRAIL_COLLECTOR_CONSOLE_SESSION_MINUTES", default_value_t = DEFAULT_CONSOLE_SESSION_MINUTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub console_session_minutes: u64,
    /// Log JSON lines instead of text.
    #[arg(long, env = "QTRAIL_LOG_JSON")]
    pub log_json: bool,
    /// Store page cache in MiB.
    #[arg(long, env = "QTRAIL_COLLECTOR_CACHE_MIB", default_value_t = DEFAULT_CACHE_MIB)]
    pub cache_mib: usize,
    /// Most batches (of any streams) committed together in one durable transaction.
    #[arg(long, env = "QTRAIL_COLLECTOR_GROUP_COMMIT_BATCHES", default_value_t = DEFAULT_GROUP_COMMIT_BATCHES,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub group_commit_batches: u16,
    /// Seconds that shutdown waits for clients (Acks to be read, streams to close) before it
    /// stops waiting.
    #[arg(long, env = "QTRAIL_COLLECTOR_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
    /// PEM certificate chain: gRPC is then served over TLS only. Needs `--tls-key`.
    #[arg(long, env = "QTRAIL_COLLECTOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "QTRAIL_COLLECTOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: every gRPC client must then present a certificate they signed
    /// (mutual TLS). Needs `--tls-cert`.
    #[arg(long, env = "QTRAIL_COLLECTOR_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Bind each publisher id to the token name and the client certificate of its first batch,
    /// so that another certificate with the same token may not publish under it. Needs
    /// `--tls-client-ca`.
    #[arg(long, env = "QTRAIL_COLLECTOR_BIND_PUBLISHERS_TO_CLIENT_CERT", requires = "tls_client_ca")]
    pub bind_publishers_to_client_cert: bool,
    /// PEM Ed25519 private key (PKCS#8) that signs a checkpoint of every location's chain head
    /// at each interval and at shutdown; without it no checkpoints are made.
    #[arg(long, env = "QTRAIL_COLLECTOR_CHECKPOINT_KEY")]
    pub checkpoint_key: Option<PathBuf>,
    /// Seconds between signed checkpoints.
    #[arg(long, env = "QTRAIL_COLLECTOR_CHECKPOINT_INTERVAL_SECS", default_value_t = DEFAULT_CHECKPOINT_INTERVAL_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_interval_secs: u64,
}

/// What [`crate::run`] needs; built from [`Args`] by the binary, or by tests directly.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of the store.
    pub data_dir: PathBuf,
    /// The accepted tokens.
    pub tokens: Tokens,
    /// File that receives the bound address once the server is ready.
    pub addr_file: Option<PathBuf>,
    /// Address of the HTTP side (console, metrics); `None` serves no HTTP. Port 0 picks a free
    /// port, which `http_addr_file` and the log then tell.
    pub http: Option<SocketAddr>,
    /// File that receives the HTTP side's bound address, before `addr_file` is written.
    pub http_addr_file: Option<PathBuf>,
    /// File of the bearer token `/metrics` requires; `/metrics` is open without one.
    pub metrics_token_file: Option<PathBuf>,
    /// How long a console sign-in lasts.
    pub console_session_ttl: Duration,
    /// Store page cache in bytes.
    pub cache_bytes: usize,
    /// Most batches committed together in one transaction.
    pub group_commit_batches: usize,
    /// How long shutdown waits for clients before it stops waiting.
    pub shutdown_grace: Duration,
    /// TLS of the gRPC side; `None` serves plaintext.
    pub tls: Option<ServerTls>,
    /// Whether publisher ids are bound to the client certificate as well as the token name;
    /// needs mutual TLS (`tls` with a client CA), else [`crate::run`] refuses to start.
    pub bind_publishers_to_client_cert: bool,
    /// File of the key that signs checkpoints; `None` makes none.
    pub checkpoint_key: Option<PathBuf>,
    /// Time between signed checkpoints.
    pub checkpoint_interval: Duration,
    /// Most bytes of committed records held for tails; a tail further behind reads the store.
    pub tail_buffer_bytes: usize,
    /// How long a tail waits for its client to read before it ends RESOURCE_EXHAUSTED.
    pub tail_stall: Duration,
}

impl Config {
    /// Returns the configuration the flags describe, loading the tokens file.
    ///
    /// # Errors
    /// A bad tokens file, named with the line at fault.
    pub fn from_args(args: &Args) -> anyhow::Result<Self> {
        let tokens = Tokens::load(&args.tokens).context("failed to load the tokens file")?;
        let tls = ServerTls::from_parts(args.tls_cert.clone(), args.tls_key.clone(), args.tls_client_ca.clone())?;
        Ok(Self {
            data_dir: args.data_dir.clone(),
            tokens,
            addr_file: args.addr_file.clone(),
            http: args.http,
            http_addr_file: args.http_addr_file.clone(),
            metrics_token_file: args.metrics_token_file.clone(),
            console_session_ttl: Duration::from_secs(args.console_session_minutes.saturating_mul(60)),
            cache_bytes: args.cache_mib.saturating_mul(1024 * 1024),
            group_commit_batches: usize::from(args.group_commit_batches),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
            tls,
            bind_publishers_to_client_cert: args.bind_publishers_to_client_cert,
            checkpoint_key: args.checkpoint_key.clone(),
            checkpoint_interval: Duration::from_secs(args.checkpoint_interval_secs),
            tail_buffer_bytes: DEFAULT_TAIL_BUFFER_BYTES,
            tail_stall: DEFAULT_TAIL_STALL,
        })
    }

    /// Returns a configuration for tests: the store in `data_dir`, a small cache.
    pub fn for_test(data_dir: impl Into<PathBuf>, tokens: Tokens) -> Self {
        Self {
            data_dir: data_dir.into(),
            tokens,
            addr_file: None,
            http: None,
            http_addr_file: None,
            metrics_token_file: None,
            console_session_ttl: Duration::from_secs(DEFAULT_CONSOLE_SESSION_MINUTES * 60),
            cache_bytes: 8 * 1024 * 1024,
            group_commit_batches: usize::from(DEFAULT_GROUP_COMMIT_BATCHES),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS),
            tls: None,
            bind_publishers_to_client_cert: false,
            checkpoint_key: None,
            checkpoint_interval: Duration::from_secs(DEFAULT_CHECKPOINT_INTERVAL_SECS),
            tail_buffer_bytes: DEFAULT_TAIL_BUFFER_BYTES,
            tail_stall: DEFAULT_TAIL_STALL,
        }
    }
}
