//! Configuration of a collector: [`Config`], the typed settings that [`crate::run`] takes, built
//! in code with [`Config::new`] (the settings without a default) and defaults for everything
//! else; and [`Flags`], the binary's command line (each flag also settable through a `QTRAIL_*`
//! environment variable), which only converts flags into a `Config`. The flags with a default
//! are [`Settings`], which a collector configured in code can read from the environment alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use qtrail_server::tls::ServerTls;

use crate::tokens::Tokens;

/// Default redb page cache. redb's own default is 1 GiB, far more than a collector on a small
/// machine should pin; writes and the newest pages of each table fit comfortably in this.
pub const DEFAULT_CACHE_MIB: usize = 64;

/// Default log growth, in KiB, after which the file store writes a snapshot of its state.
pub const DEFAULT_SNAPSHOT_EVERY_KIB: u64 = 64 * 1024;

/// Default limit of batches committed in one store transaction (group commit).
pub const DEFAULT_GROUP_COMMIT_BATCHES: u16 = 32;

/// Default time that shutdown waits for clients to finish before it stops waiting.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;

/// Default prefix of each location's transparency-log origin.
pub const DEFAULT_LOG_ORIGIN_PREFIX: &str = "qtrail.local";

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

/// Default longest wait between two attempts of one webhook delivery.
pub const DEFAULT_ALERT_RETRY_CAP_SECS: u64 = 3600;

/// Default time a webhook delivery is retried before it is `failed`: a day, so that an endpoint
/// down overnight still receives everything.
pub const DEFAULT_ALERT_RETRY_HORIZON_SECS: u64 = 24 * 3600;

/// Default number of alert firings kept: the oldest beyond it are deleted with their deliveries,
/// so that a noisy rule cannot grow the alert state without bound.
pub const DEFAULT_ALERT_MAX_FIRINGS: u64 = 100_000;

/// Default time one webhook attempt may take (connect, send, answer).
pub const DEFAULT_ALERT_TIMEOUT_SECS: u64 = 10;

/// Command-line flags of `qtrail-collector`: the settings without a default, and [`Settings`];
/// turned into a [`Config`] by [`Flags::config`].
#[derive(Debug, clap::Parser)]
#[command(name = "qtrail-collector", version, about = "Stores, chains and serves qtrail audit events")]
pub struct Flags {
    /// Address to listen on for gRPC, e.g. `127.0.0.1:0` for an ephemeral port.
    #[arg(long, env = "QTRAIL_COLLECTOR_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// Directory of the collector's store (created if missing); with `--store postgres://…`,
    /// of its local files only (alert state, witness).
    #[arg(long, env = "QTRAIL_COLLECTOR_DATA_DIR")]
    pub data_dir: PathBuf,
    /// TOML file of `[[token]]` entries (`token`, `role`, `name`).
    #[arg(long, env = "QTRAIL_COLLECTOR_TOKENS")]
    pub tokens: PathBuf,
    /// Log JSON lines instead of text.
    #[arg(long, env = "QTRAIL_LOG_JSON")]
    pub log_json: bool,
    /// The settings with a default.
    #[command(flatten)]
    pub settings: Settings,
}

/// The collector's flags that have a default (or are optional), each also settable through a
/// `QTRAIL_COLLECTOR_*` environment variable: part of [`Flags`], and on their own the
/// environment layer of a collector configured in code ([`Settings::from_env`]).
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
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
    /// File of the key (32+ bytes, base64 or raw) that signs console session cookies; give
    /// every replica the same one. Without it a key is generated into the data directory.
    #[arg(long, env = "QTRAIL_COLLECTOR_CONSOLE_SESSION_KEY_FILE", requires = "http")]
    pub console_session_key_file: Option<PathBuf>,
    /// Store page cache in MiB.
    #[arg(long, env = "QTRAIL_COLLECTOR_CACHE_MIB", default_value_t = DEFAULT_CACHE_MIB)]
    pub cache_mib: usize,
    /// KiB of commit log after which a snapshot of the store's state is written, so that a
    /// restart replays only the log after it (the gap grows to 4 times the snapshot's size).
    #[arg(long, env = "QTRAIL_COLLECTOR_SNAPSHOT_EVERY_KIB", default_value_t = DEFAULT_SNAPSHOT_EVERY_KIB,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every_kib: u64,
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
    /// PEM Ed25519 public key (SPKI) of a checkpoint key this one replaced: the collector signs
    /// on after checkpoints that key signed, so the key can be rotated. Repeatable; needs
    /// `--checkpoint-key`.
    #[arg(
        long = "previous-checkpoint-public-key",
        env = "QTRAIL_COLLECTOR_PREVIOUS_CHECKPOINT_PUBLIC_KEY",
        value_name = "FILE"
    )]
    pub previous_checkpoint_public_keys: Vec<PathBuf>,
    /// This replica's name in logs and metrics (default `<hostname>-<pid>`).
    #[arg(long, env = "QTRAIL_COLLECTOR_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// Seconds between signed checkpoints.
    #[arg(long, env = "QTRAIL_COLLECTOR_CHECKPOINT_INTERVAL_SECS", default_value_t = DEFAULT_CHECKPOINT_INTERVAL_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_interval_secs: u64,
    /// Longest wait in seconds between two attempts of a webhook delivery (the backoff doubles
    /// up to it).
    #[arg(long, env = "QTRAIL_COLLECTOR_ALERT_RETRY_CAP_SECS", default_value_t = DEFAULT_ALERT_RETRY_CAP_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub alert_retry_cap_secs: u64,
    /// Seconds a webhook delivery is retried before it is `failed`; under a day (86400) is for
    /// tests only, and warned about at start-up.
    #[arg(long, env = "QTRAIL_COLLECTOR_ALERT_RETRY_HORIZON_SECS", default_value_t = DEFAULT_ALERT_RETRY_HORIZON_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub alert_retry_horizon_secs: u64,
    /// Seconds one webhook attempt may take.
    #[arg(long, env = "QTRAIL_COLLECTOR_ALERT_TIMEOUT_SECS", default_value_t = DEFAULT_ALERT_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub alert_timeout_secs: u64,
    /// Alert firings kept (with their deliveries); the oldest beyond it are deleted.
    #[arg(long, env = "QTRAIL_COLLECTOR_ALERT_MAX_FIRINGS", default_value_t = DEFAULT_ALERT_MAX_FIRINGS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub alert_max_firings: u64,
    /// PEM CA certificates that https alert webhooks may also be signed by (beside the Mozilla
    /// roots), for endpoints behind a private CA.
    #[arg(long, env = "QTRAIL_COLLECTOR_ALERT_TLS_CA", value_name = "FILE")]
    pub alert_tls_ca: Option<PathBuf>,
    /// Prefix of each location's transparency-log origin, `<prefix>/<location>`: the first line
    /// of its checkpoint notes and the name of their signing key.
    #[arg(long, env = "QTRAIL_COLLECTOR_LOG_ORIGIN_PREFIX", default_value = DEFAULT_LOG_ORIGIN_PREFIX,
          value_parser = parse_origin_prefix)]
    pub log_origin_prefix: String,
    /// Serve the transparency-log tiles (`/tlog/…`) without a token; otherwise they need an
    /// auditor token as `authorization: Bearer`.
    #[arg(long, env = "QTRAIL_COLLECTOR_PUBLIC_TILES")]
    pub public_tiles: bool,
    /// Act as a C2SP tlog-witness on the HTTP side (`POST /witness/add-checkpoint`), cosigning
    /// with this PEM Ed25519 private key (PKCS#8); needs `--http`, `--witness-name` and at least
    /// one `--witness-log`. Its state is kept in `<data-dir>/witness/`.
    #[arg(long, env = "QTRAIL_COLLECTOR_WITNESS_KEY_FILE", value_name = "FILE",
          requires_all = ["witness_name", "witness_logs"])]
    pub witness_key_file: Option<PathBuf>,
    /// The witness's name: the key name of its cosignatures, e.g. `witness.example/w1`.
    #[arg(long, env = "QTRAIL_COLLECTOR_WITNESS_NAME", value_name = "NAME", requires = "witness_key_file")]
    pub witness_name: Option<String>,
    /// A log the witness watches, as its note verifier key `<origin>+<hex key id>+<base64 key>`
    /// (what `/tlog/<location>/key` serves). Repeatable.
    #[arg(
        long = "witness-log",
        env = "QTRAIL_COLLECTOR_WITNESS_LOG",
        value_name = "VKEY",
        requires = "witness_key_file"
    )]
    pub witness_logs: Vec<String>,
    /// Submission prefix of a witness to submit every signed checkpoint to, e.g.
    /// `http://witness:7480/witness`; its cosignatures are stored with the checkpoint. Repeatable,
    /// each with its `--witness-verifier-key` in the same order; needs `--checkpoint-key`.
    #[arg(long = "witness-url", env = "QTRAIL_COLLECTOR_WITNESS_URL", value_name = "URL", requires = "checkpoint_key")]
    pub witness_urls: Vec<String>,
    /// Cosignature verifier key of the witness at the same position of `--witness-url`:
    /// `<name>+<hex key id>+<base64(0x04 || public key)>`.
    #[arg(long = "witness-verifier-key", env = "QTRAIL_COLLECTOR_WITNESS_VERIFIER_KEY", value_name = "VKEY")]
    pub witness_verifier_keys: Vec<String>,
    /// Where events are stored: `postgres://…` for a PostgreSQL database that any number of
    /// collectors may share (`sslmode` as libpq: disable, prefer, require, verify-full; the
    /// password is never logged). Absent: the embedded store in `--data-dir`, which holds the
    /// local files (alert state, witness) either way.
    #[arg(long, env = "QTRAIL_COLLECTOR_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Most connections the PostgreSQL store holds open.
    #[arg(long, env = "QTRAIL_COLLECTOR_STORE_POOL_SIZE", default_value_t = crate::store::postgres::DEFAULT_POOL_SIZE,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u16).range(1..=1024), usize::from))]
    pub store_pool_size: usize,
    /// CA certificate file (PEM) that the PostgreSQL server's certificate must chain to.
    #[arg(long, env = "QTRAIL_COLLECTOR_STORE_CA")]
    pub store_ca: Option<PathBuf>,
    /// Object storage that sealed ranges are archived to: `s3://bucket/prefix` (configured by the
    /// `AWS_*` variables, e.g. `AWS_ENDPOINT`, `AWS_ALLOW_HTTP=true`), `gs://…` (`GOOGLE_*`),
    /// `az://…` (`AZURE_*`) or `file:///path`. Needs `--checkpoint-key`, which signs the manifests.
    #[arg(long, env = "QTRAIL_COLLECTOR_ARCHIVE_URL", value_name = "URL", requires = "checkpoint_key")]
    pub archive_url: Option<String>,
    /// An option of the archive's object store client, `key=value` with `object_store`'s keys
    /// (e.g. `aws_endpoint=http://127.0.0.1:9000`, `aws_allow_http=true`); it wins over the
    /// environment. Repeatable.
    #[arg(long = "archive-option", value_name = "KEY=VALUE", requires = "archive_url")]
    pub archive_options: Vec<String>,
    /// Time between two rounds of archiving, e.g. `1m`, `30s`.
    #[arg(long, env = "QTRAIL_COLLECTOR_ARCHIVE_EVERY", value_name = "DUR", default_value = "1m",
          value_parser = humantime::parse_duration)]
    pub archive_every: Duration,
    /// Most events of one archived range (one object), unless no checkpoint falls within that many.
    #[arg(long, env = "QTRAIL_COLLECTOR_ARCHIVE_MAX_EVENTS", default_value_t = DEFAULT_ARCHIVE_MAX_EVENTS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub archive_max_events: u64,
    /// Test-only: the retention sweep reckons "now" this far ahead of the clock (e.g. `2days`),
    /// so that end-to-end tests see events expire without waiting days. Hidden from `--help`.
    #[arg(long, hide = true, value_name = "DUR", default_value = "0s", value_parser = humantime::parse_duration)]
    pub retention_clock_ahead: Duration,
}

/// Default of `--archive-max-events`.
pub const DEFAULT_ARCHIVE_MAX_EVENTS: u64 = 10_000;

/// Checks a log origin prefix: it becomes part of a C2SP key name, which has no spaces or `+`.
fn parse_origin_prefix(prefix: &str) -> Result<String, String> {
    if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err("the log origin prefix must be non-empty, without spaces or '+'".to_owned());
    }
    Ok(prefix.to_owned())
}

/// What [`crate::run`] needs: built by [`Config::new`] with every optional setting at its default
/// (the `DEFAULT_*` constants, the same as the flags'), then set field by field; the binary builds
/// it from [`Flags`].
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
    /// File of the console session key; `None` generates one into `data_dir` (when the HTTP
    /// side is served).
    pub console_session_key_file: Option<PathBuf>,
    /// Store page cache in bytes.
    pub cache_bytes: usize,
    /// Bytes of commit log after which a snapshot of the store's state is written.
    pub snapshot_every: u64,
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
    /// Files of the public keys of checkpoint keys `checkpoint_key` replaced: the newest
    /// checkpoint may be signed by one of them.
    pub previous_checkpoint_public_keys: Vec<PathBuf>,
    /// Time between signed checkpoints.
    pub checkpoint_interval: Duration,
    /// This replica's name in logs and metrics; `None` for `<hostname>-<pid>`.
    pub replica_id: Option<String>,
    /// Prefix of each location's log origin, `<prefix>/<location>`.
    pub log_origin_prefix: String,
    /// Whether the transparency-log tiles are served without a token.
    pub public_tiles: bool,
    /// The witness's key file, name and watched logs (note verifier keys); `None` is no witness.
    pub witness: Option<WitnessConfig>,
    /// The witnesses every checkpoint is submitted to: (submission prefix, cosignature verifier key).
    pub witness_urls: Vec<(String, String)>,
    /// Most bytes of committed records held for tails; a tail further behind reads the store.
    pub tail_buffer_bytes: usize,
    /// How long a tail waits for its client to read before it ends RESOURCE_EXHAUSTED.
    pub tail_stall: Duration,
    /// Longest wait between two attempts of a webhook delivery.
    pub alert_retry_cap: Duration,
    /// How long a webhook delivery is retried before it is `failed`.
    pub alert_retry_horizon: Duration,
    /// How long one webhook attempt may take.
    pub alert_timeout: Duration,
    /// Alert firings kept; the oldest beyond it are deleted.
    pub alert_max_firings: u64,
    /// File of further CA certificates https webhooks are checked against.
    pub alert_tls_ca: Option<PathBuf>,
    /// The PostgreSQL store, when events are stored there rather than in `data_dir`.
    pub postgres: Option<crate::store::postgres::PgOptions>,
    /// Whether the trail's own use (auditors' reads, sign-ins, rule and retention changes) is
    /// recorded on the trail. Always on in the binary (no flag turns it off); off only in
    /// [`Config::for_test`], for the in-process tests of other concerns, which count the events
    /// they publish (the recording has its own unit and end-to-end tests).
    pub record_use: bool,
    /// Where and how often sealed ranges are archived; `None` archives nothing.
    pub archive: Option<ArchiveSettings>,
}

/// The archive of sealed ranges (`--archive-url`).
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    /// The object store URL.
    pub url: String,
    /// Options of its client (`key=value`).
    pub options: Vec<String>,
    /// Time between two rounds.
    pub every: Duration,
    /// Most events of one range.
    pub max_events: u64,
    /// How far ahead of the clock the retention sweep reckons "now" (test-only, 0 otherwise).
    pub retention_clock_ahead: Duration,
}

/// A witness run by the collector.
#[derive(Debug, Clone)]
pub struct WitnessConfig {
    /// File of its PEM Ed25519 private key.
    pub key_file: PathBuf,
    /// Its name, the key name of its cosignatures.
    pub name: String,
    /// The note verifier keys of the logs it watches.
    pub logs: Vec<String>,
}

impl Flags {
    /// Returns the configuration the flags describe, loading the tokens file (the listener and
    /// logging are the binary's own).
    ///
    /// # Errors
    /// A bad tokens file, named with the line at fault; TLS files given in an unusable
    /// combination.
    pub fn config(&self) -> anyhow::Result<Config> {
        let tokens = Tokens::load(&self.tokens).context("failed to load the tokens file")?;
        let mut config = Config::new(self.data_dir.clone(), tokens);
        self.settings.apply(&mut config)?;
        Ok(config)
    }
}

impl Settings {
    /// Returns the settings the `QTRAIL_COLLECTOR_*` environment variables give, defaults for
    /// the rest: for a collector configured in code (`qtrail up`) that still honours them.
    ///
    /// # Errors
    /// A variable whose value its flag would refuse.
    pub fn from_env() -> Result<Self, clap::Error> {
        Self::parse_for_code(["qtrail-collector"])
    }

    /// Parses `args` and the environment as the settings of a collector configured in code.
    /// Its caller configures the HTTP side itself (`up` always serves the console), so the
    /// settings that need `--http` on a command line stand on their own here.
    fn parse_for_code<const N: usize>(args: [&str; N]) -> Result<Self, clap::Error> {
        use clap::{Args as _, FromArgMatches as _};
        let command = Self::augment_args(clap::Command::new("qtrail-collector"))
            .mut_arg("http_addr_file", |arg| arg.requires(clap::builder::Resettable::Reset))
            .mut_arg("metrics_token_file", |arg| arg.requires(clap::builder::Resettable::Reset));
        let matches = command.try_get_matches_from(args)?;
        Self::from_arg_matches(&matches)
    }

    /// Sets these settings on `config`.
    ///
    /// # Errors
    /// TLS files given in an unusable combination.
    pub fn apply(&self, config: &mut Config) -> anyhow::Result<()> {
        config.tls = ServerTls::from_parts(self.tls_cert.clone(), self.tls_key.clone(), self.tls_client_ca.clone())?;
        config.addr_file = self.addr_file.clone();
        config.http = self.http;
        config.http_addr_file = self.http_addr_file.clone();
        config.metrics_token_file = self.metrics_token_file.clone();
        config.console_session_ttl = Duration::from_secs(self.console_session_minutes.saturating_mul(60));
        config.console_session_key_file = self.console_session_key_file.clone();
        config.cache_bytes = self.cache_mib.saturating_mul(1024 * 1024);
        config.snapshot_every = self.snapshot_every_kib.saturating_mul(1024);
        config.group_commit_batches = usize::from(self.group_commit_batches);
        config.shutdown_grace = Duration::from_secs(self.shutdown_grace_secs);
        config.bind_publishers_to_client_cert = self.bind_publishers_to_client_cert;
        config.checkpoint_key = self.checkpoint_key.clone();
        config.previous_checkpoint_public_keys = self.previous_checkpoint_public_keys.clone();
        config.checkpoint_interval = Duration::from_secs(self.checkpoint_interval_secs);
        config.replica_id = self.replica_id.clone();
        config.alert_retry_cap = Duration::from_secs(self.alert_retry_cap_secs);
        config.alert_retry_horizon = Duration::from_secs(self.alert_retry_horizon_secs);
        config.alert_timeout = Duration::from_secs(self.alert_timeout_secs);
        config.alert_max_firings = self.alert_max_firings;
        config.alert_tls_ca = self.alert_tls_ca.clone();
        config.log_origin_prefix = self.log_origin_prefix.clone();
        config.public_tiles = self.public_tiles;
        config.witness = match (&self.witness_key_file, &self.witness_name) {
            (Some(key_file), Some(name)) => {
                Some(WitnessConfig { key_file: key_file.clone(), name: name.clone(), logs: self.witness_logs.clone() })
            }
            _ => None,
        };
        if self.witness_urls.len() != self.witness_verifier_keys.len() {
            anyhow::bail!(
                "give one --witness-verifier-key per --witness-url ({} urls, {} keys)",
                self.witness_urls.len(),
                self.witness_verifier_keys.len()
            );
        }
        config.witness_urls =
            self.witness_urls.iter().cloned().zip(self.witness_verifier_keys.iter().cloned()).collect();
        config.postgres = self.postgres_options()?;
        config.archive = self.archive_url.as_ref().map(|url| ArchiveSettings {
            url: url.clone(),
            options: self.archive_options.clone(),
            every: self.archive_every,
            max_events: self.archive_max_events,
            retention_clock_ahead: self.retention_clock_ahead,
        });
        Ok(())
    }

    /// Returns the PostgreSQL store `--store` names, if any.
    fn postgres_options(&self) -> anyhow::Result<Option<crate::store::postgres::PgOptions>> {
        use crate::store::postgres::{PgOptions, is_postgres_url, redacted};
        let Some(url) = &self.store else {
            if self.store_ca.is_some() {
                anyhow::bail!("--store-ca needs --store postgres://…");
            }
            return Ok(None);
        };
        if !is_postgres_url(url) {
            anyhow::bail!("--store `{}`: not a postgres:// url (omit --store for the embedded store)", redacted(url));
        }
        Ok(Some(PgOptions { url: url.clone(), pool_size: self.store_pool_size, ca: self.store_ca.clone() }))
    }
}

impl Config {
    /// Returns the configuration of a collector storing in `data_dir` and accepting `tokens`,
    /// with every other setting at its default: no address files, no HTTP side, plaintext, no
    /// checkpoints.
    pub fn new(data_dir: impl Into<PathBuf>, tokens: Tokens) -> Self {
        Self {
            data_dir: data_dir.into(),
            tokens,
            addr_file: None,
            http: None,
            http_addr_file: None,
            metrics_token_file: None,
            console_session_ttl: Duration::from_secs(DEFAULT_CONSOLE_SESSION_MINUTES * 60),
            console_session_key_file: None,
            cache_bytes: DEFAULT_CACHE_MIB * 1024 * 1024,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY_KIB * 1024,
            group_commit_batches: usize::from(DEFAULT_GROUP_COMMIT_BATCHES),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECS),
            tls: None,
            bind_publishers_to_client_cert: false,
            checkpoint_key: None,
            previous_checkpoint_public_keys: Vec::new(),
            checkpoint_interval: Duration::from_secs(DEFAULT_CHECKPOINT_INTERVAL_SECS),
            replica_id: None,
            log_origin_prefix: DEFAULT_LOG_ORIGIN_PREFIX.to_owned(),
            public_tiles: false,
            witness: None,
            witness_urls: Vec::new(),
            tail_buffer_bytes: DEFAULT_TAIL_BUFFER_BYTES,
            tail_stall: DEFAULT_TAIL_STALL,
            alert_retry_cap: Duration::from_secs(DEFAULT_ALERT_RETRY_CAP_SECS),
            alert_retry_horizon: Duration::from_secs(DEFAULT_ALERT_RETRY_HORIZON_SECS),
            alert_timeout: Duration::from_secs(DEFAULT_ALERT_TIMEOUT_SECS),
            alert_max_firings: DEFAULT_ALERT_MAX_FIRINGS,
            alert_tls_ca: None,
            postgres: None,
            record_use: true,
            archive: None,
        }
    }

    /// Returns the URL of the store shared by replicas, if the store is PostgreSQL's.
    pub fn shared_store_url(&self) -> Option<&str> {
        self.postgres.as_ref().map(|postgres| postgres.url.as_str())
    }

    /// Returns a configuration for tests: the store in `data_dir`, a small cache, the trail's own
    /// use not recorded (see [`Config::record_use`]).
    pub fn for_test(data_dir: impl Into<PathBuf>, tokens: Tokens) -> Self {
        let mut config = Self::new(data_dir, tokens);
        config.cache_bytes = 8 * 1024 * 1024;
        config.record_use = false;
        config
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// The flags' defaults and `Config::new`'s are one set of constants: a collector configured
    /// in code (`qtrail up`, tests) behaves as the binary does with no flags given.
    #[test]
    fn flags_left_out_give_the_typed_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(&tokens, "").unwrap();
        let flags = Flags::try_parse_from([
            "qtrail-collector".as_ref(),
            "--data-dir".as_ref(),
            dir.path().as_os_str(),
            "--tokens".as_ref(),
            tokens.as_os_str(),
        ])
        .unwrap();
        let from_flags = flags.config().unwrap();
        let typed = Config::new(dir.path(), Tokens::load(&tokens).unwrap());
        assert_eq!(format!("{from_flags:?}"), format!("{typed:?}"));
        assert_eq!(typed.cache_bytes, 64 * 1024 * 1024);
        assert!(typed.tls.is_none() && typed.http.is_none() && typed.checkpoint_key.is_none());
    }

    /// The previous checkpoint public key flag repeats: each rotation adds one.
    #[test]
    fn previous_checkpoint_public_keys_repeat() {
        let flags = Flags::try_parse_from(
            ["qtrail-collector", "--data-dir", "d", "--tokens", "t", "--checkpoint-key", "new.pem"].into_iter().chain(
                ["--previous-checkpoint-public-key", "a.pub.pem", "--previous-checkpoint-public-key", "b.pub.pem"],
            ),
        )
        .unwrap();
        let keys = &flags.settings.previous_checkpoint_public_keys;
        assert_eq!(keys, &[PathBuf::from("a.pub.pem"), PathBuf::from("b.pub.pem")]);
    }

    /// `qtrail up` serves the HTTP side itself, so a metrics token file (or an HTTP address
    /// file) from its environment needs no `--http`, while the binary still insists on it.
    #[test]
    fn settings_for_code_take_http_files_without_http() {
        let settings = Settings::parse_for_code(["qtrail-collector", "--metrics-token-file", "metrics.token"]).unwrap();
        assert_eq!(settings.metrics_token_file, Some(PathBuf::from("metrics.token")));
        let flags = Flags::try_parse_from(
            ["qtrail-collector", "--data-dir", "d", "--tokens", "t"]
                .into_iter()
                .chain(["--metrics-token-file", "metrics.token"]),
        );
        assert!(flags.is_err(), "the binary needs --http for a metrics token file");
    }
}
