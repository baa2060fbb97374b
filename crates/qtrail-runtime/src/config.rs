//! The runtime's configuration: [`Config`], the typed settings that [`crate::run`] takes, built
//! in code with [`Config::new`] (required settings) and defaults for everything else; and
//! [`Flags`], the binary's command line (each flag also settable from a `QTRAIL_*` environment
//! variable), which only converts flags into a `Config`. The flags with a default are
//! [`Settings`], which a runtime configured in code can read from the environment alone.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use qtrail_cadf::Location;
use qtrail_publisher::AuditSink;
use qtrail_server::tls::{ClientTls, ServerTls, TlsError};

use crate::forwarded::Cidr;
use crate::receipts::ReceiptPolicy;

/// Default operator account: the log source account of events whose caller is unknown.
pub const DEFAULT_ACCOUNT: &str = "qtrail";

/// Default of the most jobs executing at once.
pub const DEFAULT_MAX_CONCURRENT_JOBS: u16 = 2;

/// Default of the most audit events waiting in the outbox.
pub const DEFAULT_OUTBOX_MAX_EVENTS: u64 = 100_000;

/// Default of the most bytes of audit events waiting in the outbox.
pub const DEFAULT_OUTBOX_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Default time a part-filled batch waits for more events, in milliseconds.
pub const DEFAULT_PUBLISH_LINGER_MS: u64 = 15;

/// Default longest wait between reconnection attempts to the collector, in milliseconds.
pub const DEFAULT_PUBLISH_BACKOFF_MAX_MS: u64 = 10_000;

/// Default wait for the collector to acknowledge the oldest batch, in milliseconds.
pub const DEFAULT_PUBLISH_ACK_TIMEOUT_MS: u64 = 30_000;

/// Default of the most receipts kept; the oldest are dropped past it.
pub const DEFAULT_RECEIPT_CAPACITY: u64 = 100_000;

/// Default time a shutdown waits for the publisher to empty the outbox, in milliseconds.
pub const DEFAULT_SHUTDOWN_FLUSH_MS: u64 = 5_000;

/// A secret string (the collector token): kept out of `Debug` output and therefore out of logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Returns `secret` wrapped, so that it stays out of logs from here on.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// Returns the secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Everything `run` needs besides its listener. [`Config::new`] takes the settings without a
/// default; every other field starts at the default its flag documents and is set directly.
#[derive(Debug, Clone)]
pub struct Config {
    /// Location (region) of this runtime; its collector gets the events.
    pub location: Location,
    /// Service instance id, used in every CRN.
    pub instance: String,
    /// URL of the collector service, e.g. `http://127.0.0.1:7000`.
    pub collector: String,
    /// Further replicas of the location's collector, which the publisher moves to in this
    /// order when the current one is unreachable.
    pub failover_collectors: Vec<String>,
    /// Token with the `publisher` role at the collector.
    pub collector_token: Option<Secret>,
    /// TOML file of principals (api key → iam id, name, account).
    pub principals: PathBuf,
    /// Directory of the runtime's database.
    pub data_dir: PathBuf,
    /// File that receives the bound address once the server is ready.
    pub addr_file: Option<PathBuf>,
    /// Address of the HTTP side (`/metrics`, `/healthz`); `None` serves no HTTP.
    pub http: Option<SocketAddr>,
    /// File that receives the HTTP side's bound address, before `addr_file` is written.
    pub http_addr_file: Option<PathBuf>,
    /// File of the bearer token `/metrics` requires; `/metrics` is open without one.
    pub metrics_token_file: Option<PathBuf>,
    /// Operator account: the log source account of events whose caller is unknown.
    pub account: String,
    /// Most jobs executing at once.
    pub max_concurrent_jobs: u16,
    /// Most jobs one account may have queued or running.
    pub max_jobs_per_account: u32,
    /// Most jobs queued or running over all accounts.
    pub max_queued_jobs: u32,
    /// Most audit events waiting in the outbox; beyond it every call is refused.
    pub outbox_max_events: u64,
    /// Most bytes of audit events waiting in the outbox; beyond it every call is refused.
    pub outbox_max_bytes: u64,
    /// How long the publisher lets a part-filled batch wait for more events, in milliseconds.
    pub publish_linger_ms: u64,
    /// Longest wait between reconnection attempts to the collector, in milliseconds.
    pub publish_backoff_max_ms: u64,
    /// How long the publisher waits for the oldest batch's acknowledgement before it
    /// reconnects, in milliseconds.
    pub publish_ack_timeout_ms: u64,
    /// How long a shutdown waits for the publisher to empty the outbox, in milliseconds.
    pub shutdown_flush_ms: u64,
    /// PEM certificate chain of the gRPC side; with `tls_key`, gRPC is served over TLS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that every gRPC client's certificate must be signed by (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// PEM CA certificates that sign the collector's certificate; the built-in Mozilla roots
    /// without it.
    pub collector_ca: Option<PathBuf>,
    /// PEM certificate presented to a collector that requires one (mutual TLS).
    pub collector_cert: Option<PathBuf>,
    /// PEM private key of `collector_cert`.
    pub collector_key: Option<PathBuf>,
    /// Networks of proxies whose `x-forwarded-for` is believed; none believes the header.
    pub trusted_proxies: Vec<Cidr>,
    /// SPKI PEM files of the collector's checkpoint key (several while it is rotated); with
    /// none, no receipts are fetched.
    pub collector_public_keys: Vec<PathBuf>,
    /// Token with the `auditor` role at the collector, to fetch proofs with.
    pub receipts_token: Option<Secret>,
    /// Most receipts kept; the oldest are dropped past it.
    pub receipt_capacity: u64,
    /// What a failed receipt does besides its metric and log line.
    pub on_receipt_failure: ReceiptPolicy,
    /// What becomes of audit events: the outbox, unless a benchmark built with
    /// `qtrail-publisher/testing` measures the unaudited baseline. No flag sets it.
    pub audit_sink: AuditSink,
}

impl Config {
    /// Returns the configuration of a runtime of `instance` in `location`, publishing to the
    /// collector at `collector`, with its principals in the file `principals` and its database in
    /// `data_dir`; every other setting at its default.
    pub fn new(
        location: Location,
        instance: String,
        collector: String,
        principals: PathBuf,
        data_dir: PathBuf,
    ) -> Self {
        Self {
            location,
            instance,
            collector,
            failover_collectors: Vec::new(),
            collector_token: None,
            principals,
            data_dir,
            addr_file: None,
            http: None,
            http_addr_file: None,
            metrics_token_file: None,
            account: DEFAULT_ACCOUNT.to_owned(),
            max_concurrent_jobs: DEFAULT_MAX_CONCURRENT_JOBS,
            max_jobs_per_account: crate::executor::MAX_ACTIVE_JOBS_PER_ACCOUNT as u32,
            max_queued_jobs: crate::executor::MAX_ACTIVE_JOBS as u32,
            outbox_max_events: DEFAULT_OUTBOX_MAX_EVENTS,
            outbox_max_bytes: DEFAULT_OUTBOX_MAX_BYTES,
            publish_linger_ms: DEFAULT_PUBLISH_LINGER_MS,
            publish_backoff_max_ms: DEFAULT_PUBLISH_BACKOFF_MAX_MS,
            publish_ack_timeout_ms: DEFAULT_PUBLISH_ACK_TIMEOUT_MS,
            shutdown_flush_ms: DEFAULT_SHUTDOWN_FLUSH_MS,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            collector_ca: None,
            collector_cert: None,
            collector_key: None,
            trusted_proxies: Vec::new(),
            collector_public_keys: Vec::new(),
            receipts_token: None,
            receipt_capacity: DEFAULT_RECEIPT_CAPACITY,
            on_receipt_failure: ReceiptPolicy::Warn,
            audit_sink: AuditSink::outbox(),
        }
    }

    /// Returns a configuration for tests: location `us-east`, instance `inst-test`, token
    /// `publisher-token`, fast publisher retries and the default outbox bound.
    pub fn for_test(data_dir: PathBuf, principals: PathBuf, collector: String) -> Self {
        let location = "us-east".parse().expect("`us-east` is a valid location");
        let mut config = Self::new(location, "inst-test".to_owned(), collector, principals, data_dir);
        config.collector_token = Some(Secret::new("publisher-token"));
        config.publish_linger_ms = 5;
        config.publish_backoff_max_ms = 200;
        config
    }

    /// Returns the TLS of the gRPC server; `None` serves plaintext.
    ///
    /// # Errors
    /// A key or client CA without certificate (clap's `requires` already refuses these on the
    /// command line; a `Config` built in code is checked here).
    pub fn server_tls(&self) -> Result<Option<ServerTls>, TlsError> {
        ServerTls::from_parts(self.tls_cert.clone(), self.tls_key.clone(), self.tls_client_ca.clone())
    }

    /// Returns the TLS files for reaching the collector.
    pub fn collector_tls(&self) -> ClientTls {
        ClientTls { ca: self.collector_ca.clone(), cert: self.collector_cert.clone(), key: self.collector_key.clone() }
    }

    /// Returns the shutdown flush timeout.
    pub fn shutdown_flush(&self) -> Duration {
        Duration::from_millis(self.shutdown_flush_ms)
    }
}

/// The command line of `qtrail-runtime`: the settings without a default, the collector token
/// (which whoever configures a runtime in code gives it), and [`Settings`];
/// each flag also settable from a `QTRAIL_*` environment variable. [`Flags::config`] turns them
/// into the [`Config`].
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "qtrail-runtime", version, about = "The audited Qiskit Runtime-style service")]
pub struct Flags {
    /// Address to listen on; port 0 picks a free one (see --addr-file).
    #[arg(long, env = "QTRAIL_RUNTIME_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Log JSON lines instead of text.
    #[arg(long, env = "QTRAIL_LOG_JSON")]
    pub log_json: bool,
    /// Location (region) of this runtime, e.g. `us-east`; its collector gets the events.
    #[arg(long, env = "QTRAIL_RUNTIME_LOCATION")]
    pub location: Location,
    /// Service instance id, used in every CRN.
    #[arg(long, env = "QTRAIL_RUNTIME_INSTANCE")]
    pub instance: String,
    /// URL of the collector service, e.g. `http://127.0.0.1:7000`; repeat it (or separate URLs
    /// by commas) for replicas of the location's collector, which the publisher moves between
    /// when one becomes unreachable.
    #[arg(long, env = "QTRAIL_RUNTIME_COLLECTOR", required = true, value_delimiter = ',', value_parser = collector_url)]
    pub collector: Vec<String>,
    /// Token with the `publisher` role at the collector (prefer the environment variable).
    #[arg(long, env = "QTRAIL_COLLECTOR_TOKEN", hide_env_values = true)]
    pub collector_token: Option<Secret>,
    /// TOML file of principals (api key → iam id, name, account).
    #[arg(long, env = "QTRAIL_RUNTIME_PRINCIPALS")]
    pub principals: PathBuf,
    /// Directory of the runtime's database.
    #[arg(long, env = "QTRAIL_RUNTIME_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The settings with a default.
    #[command(flatten)]
    pub settings: Settings,
}

impl Flags {
    /// Returns the configuration these flags describe (the listener and logging are the
    /// binary's own).
    pub fn config(self) -> Config {
        let mut collectors = self.collector.into_iter();
        // clap requires at least one `--collector`.
        let first = collectors.next().unwrap_or_default();
        let mut config = Config::new(self.location, self.instance, first, self.principals, self.data_dir);
        config.failover_collectors = collectors.collect();
        config.collector_token = self.collector_token;
        self.settings.apply(&mut config);
        config
    }
}

/// Checks a `--collector` value: an `http://` or `https://` URL with a host.
fn collector_url(value: &str) -> Result<String, String> {
    let uri: tonic::transport::Uri = value.parse().map_err(|err| format!("not a url: {err}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err("expected an http:// or https:// url with a host, e.g. http://127.0.0.1:7000".to_owned());
    }
    Ok(value.to_owned())
}

/// The runtime's flags that have a default (or are optional), each also settable from a
/// `QTRAIL_RUNTIME_*` environment variable: part of [`Flags`], and on their own the environment
/// layer of a runtime configured in code ([`Settings::from_env`]).
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// File that receives the bound address once the server is ready.
    #[arg(long, env = "QTRAIL_RUNTIME_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
    /// Address of the HTTP side (`/metrics`, `/healthz`); none when unset.
    #[arg(long, env = "QTRAIL_RUNTIME_HTTP")]
    pub http: Option<SocketAddr>,
    /// File that receives the HTTP side's bound address; written before `--addr-file`.
    #[arg(long, env = "QTRAIL_RUNTIME_HTTP_ADDR_FILE", requires = "http")]
    pub http_addr_file: Option<PathBuf>,
    /// File holding a bearer token that `/metrics` then requires; without it `/metrics` is open.
    #[arg(long, env = "QTRAIL_RUNTIME_METRICS_TOKEN_FILE", requires = "http")]
    pub metrics_token_file: Option<PathBuf>,
    /// Operator account: the log source account of events whose caller is unknown.
    #[arg(long, env = "QTRAIL_RUNTIME_ACCOUNT", default_value = DEFAULT_ACCOUNT)]
    pub account: String,
    /// Most jobs executing at once.
    #[arg(long, env = "QTRAIL_RUNTIME_MAX_CONCURRENT_JOBS", default_value_t = DEFAULT_MAX_CONCURRENT_JOBS, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_jobs: u16,
    /// Most jobs one account may have queued or running; CreateJob beyond it is refused.
    #[arg(long, env = "QTRAIL_RUNTIME_MAX_JOBS_PER_ACCOUNT", default_value_t = crate::executor::MAX_ACTIVE_JOBS_PER_ACCOUNT as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_jobs_per_account: u32,
    /// Most jobs queued or running over all accounts; CreateJob beyond it is refused.
    #[arg(long, env = "QTRAIL_RUNTIME_MAX_QUEUED_JOBS", default_value_t = crate::executor::MAX_ACTIVE_JOBS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queued_jobs: u32,
    /// Most audit events waiting in the outbox; beyond it every call is refused.
    #[arg(long, env = "QTRAIL_RUNTIME_OUTBOX_MAX_EVENTS", default_value_t = DEFAULT_OUTBOX_MAX_EVENTS, value_parser = clap::value_parser!(u64).range(1..))]
    pub outbox_max_events: u64,
    /// Most bytes of audit events waiting in the outbox (at least 64 KiB, four of the largest
    /// events); beyond it every call is refused.
    #[arg(long, env = "QTRAIL_RUNTIME_OUTBOX_MAX_BYTES", default_value_t = DEFAULT_OUTBOX_MAX_BYTES, value_parser = clap::value_parser!(u64).range(64 * 1024..))]
    pub outbox_max_bytes: u64,
    /// How long the publisher lets a part-filled batch wait for more events, in milliseconds.
    #[arg(long, env = "QTRAIL_RUNTIME_PUBLISH_LINGER_MS", default_value_t = DEFAULT_PUBLISH_LINGER_MS)]
    pub publish_linger_ms: u64,
    /// Longest wait between reconnection attempts to the collector, in milliseconds.
    #[arg(long, env = "QTRAIL_RUNTIME_PUBLISH_BACKOFF_MAX_MS", default_value_t = DEFAULT_PUBLISH_BACKOFF_MAX_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub publish_backoff_max_ms: u64,
    /// How long the publisher waits for the collector to acknowledge its oldest batch before it
    /// gives the stream up and reconnects, in milliseconds. A network that silently stops
    /// delivering (no reset, no close) is noticed this way.
    #[arg(long, env = "QTRAIL_RUNTIME_PUBLISH_ACK_TIMEOUT_MS", default_value_t = DEFAULT_PUBLISH_ACK_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    pub publish_ack_timeout_ms: u64,
    /// How long a shutdown waits for the publisher to empty the outbox, in milliseconds.
    #[arg(long, env = "QTRAIL_RUNTIME_SHUTDOWN_FLUSH_MS", default_value_t = DEFAULT_SHUTDOWN_FLUSH_MS)]
    pub shutdown_flush_ms: u64,
    /// PEM certificate chain: gRPC is then served over TLS only. Needs `--tls-key`.
    #[arg(long, env = "QTRAIL_RUNTIME_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "QTRAIL_RUNTIME_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: every gRPC client must then present a certificate they signed
    /// (mutual TLS). Needs `--tls-cert`.
    #[arg(long, env = "QTRAIL_RUNTIME_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// PEM CA certificates that sign the collector's certificate (with an `https://`
    /// `--collector`); without it the Mozilla roots built into the binary are trusted.
    #[arg(long, env = "QTRAIL_RUNTIME_COLLECTOR_CA")]
    pub collector_ca: Option<PathBuf>,
    /// PEM certificate presented to a collector that requires one (mutual TLS). Needs
    /// `--collector-key`.
    #[arg(long, env = "QTRAIL_RUNTIME_COLLECTOR_CERT", requires = "collector_key")]
    pub collector_cert: Option<PathBuf>,
    /// PEM private key of `--collector-cert`.
    #[arg(long, env = "QTRAIL_RUNTIME_COLLECTOR_KEY", requires = "collector_cert")]
    pub collector_key: Option<PathBuf>,
    /// Network (CIDR, or one address) of a proxy whose `x-forwarded-for` is believed; repeat for
    /// more. Without any, events record the peer's address whatever the header says.
    #[arg(long = "trusted-proxy", value_name = "CIDR", env = "QTRAIL_RUNTIME_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,
    /// SPKI PEM file of the collector's checkpoint public key; repeat for a key being rotated.
    /// With one, the runtime fetches and verifies a receipt (inclusion proof under a signed
    /// checkpoint) for every event it publishes; without any, receipts are off.
    #[arg(
        long = "collector-public-key",
        value_name = "PEM",
        env = "QTRAIL_RUNTIME_COLLECTOR_PUBLIC_KEYS",
        value_delimiter = ','
    )]
    pub collector_public_keys: Vec<PathBuf>,
    /// Token with the `auditor` role at the collector, used to fetch receipts' proofs.
    #[arg(long, env = "QTRAIL_RUNTIME_RECEIPTS_TOKEN", hide_env_values = true)]
    pub receipts_token: Option<Secret>,
    /// Most receipts kept in the data directory; the oldest are dropped past it.
    #[arg(long, env = "QTRAIL_RUNTIME_RECEIPT_CAPACITY", default_value_t = DEFAULT_RECEIPT_CAPACITY)]
    pub receipt_capacity: u64,
    /// What a failed receipt (bad signature, bad proof, fork) does besides its metric and log
    /// line: `warn` nothing more, `refuse` answers every call UNAVAILABLE until restart.
    #[arg(long, env = "QTRAIL_RUNTIME_ON_RECEIPT_FAILURE", value_enum, default_value_t = ReceiptPolicy::Warn)]
    pub on_receipt_failure: ReceiptPolicy,
}

impl Settings {
    /// Returns the settings the `QTRAIL_RUNTIME_*` environment variables give, defaults for the
    /// rest: for a runtime configured in code (`qtrail up`) that still honours them.
    ///
    /// # Errors
    /// A variable whose value its flag would refuse.
    pub fn from_env() -> Result<Self, clap::Error> {
        use clap::{Args as _, FromArgMatches as _};
        let matches =
            Self::augment_args(clap::Command::new("qtrail-runtime")).try_get_matches_from(["qtrail-runtime"])?;
        Self::from_arg_matches(&matches)
    }

    /// Sets these settings on `config`.
    pub fn apply(self, config: &mut Config) {
        config.addr_file = self.addr_file;
        config.http = self.http;
        config.http_addr_file = self.http_addr_file;
        config.metrics_token_file = self.metrics_token_file;
        config.account = self.account;
        config.max_concurrent_jobs = self.max_concurrent_jobs;
        config.max_jobs_per_account = self.max_jobs_per_account;
        config.max_queued_jobs = self.max_queued_jobs;
        config.outbox_max_events = self.outbox_max_events;
        config.outbox_max_bytes = self.outbox_max_bytes;
        config.publish_linger_ms = self.publish_linger_ms;
        config.publish_backoff_max_ms = self.publish_backoff_max_ms;
        config.publish_ack_timeout_ms = self.publish_ack_timeout_ms;
        config.shutdown_flush_ms = self.shutdown_flush_ms;
        config.tls_cert = self.tls_cert;
        config.tls_key = self.tls_key;
        config.tls_client_ca = self.tls_client_ca;
        config.collector_ca = self.collector_ca;
        config.collector_cert = self.collector_cert;
        config.collector_key = self.collector_key;
        config.trusted_proxies = self.trusted_proxies;
        config.collector_public_keys = self.collector_public_keys;
        config.receipts_token = self.receipts_token;
        config.receipt_capacity = self.receipt_capacity;
        config.on_receipt_failure = self.on_receipt_failure;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, clap::Error> {
        let required = ["qtrail-runtime", "--location", "us-east", "--instance", "i", "--collector", "http://c"];
        let more = ["--principals", "p.toml", "--data-dir", "d"];
        Flags::try_parse_from(required.iter().chain(&more).chain(extra)).map(Flags::config)
    }

    #[test]
    fn trusted_proxies_are_repeatable_and_a_bad_one_stops_start_up() {
        assert!(parse(&[]).unwrap().trusted_proxies.is_empty(), "none by default");
        let config = parse(&["--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "2001:db8::/32"]).unwrap();
        let shown: Vec<String> = config.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "2001:db8::/32"]);
        let err = parse(&["--trusted-proxy", "10.0.0.0/40"]).unwrap_err().to_string();
        assert!(err.contains("--trusted-proxy") && err.contains("prefix length `40` must be 0 to 32"), "{err}");
    }

    #[test]
    fn collectors_are_repeatable_and_must_be_urls() {
        let config = parse(&[]).unwrap();
        assert_eq!((config.collector.as_str(), config.failover_collectors.len()), ("http://c", 0));
        let config = parse(&["--collector", "http://b:1,https://c:2", "--collector", "http://d"]).unwrap();
        assert_eq!(config.collector, "http://c");
        assert_eq!(config.failover_collectors, ["http://b:1", "https://c:2", "http://d"]);
        for bad in ["c:7000", "ftp://c", "http://"] {
            let err = parse(&["--collector", bad]).unwrap_err().to_string();
            assert!(err.contains("--collector") && err.contains("url"), "{bad}: {err}");
        }
        let none = Flags::try_parse_from(["qtrail-runtime", "--location", "us-east", "--instance", "i"]);
        let none = none.map(Flags::config).unwrap_err().to_string();
        assert!(none.contains("--collector"), "{none}");
    }

    /// The flags' defaults and `Config::new`'s are one set of constants: a runtime configured in
    /// code (`qtrail up`, tests) behaves as the binary does with no flags given.
    #[test]
    fn flags_left_out_give_the_typed_defaults() {
        let from_flags = parse(&[]).unwrap();
        let location: Location = "us-east".parse().unwrap();
        let typed = Config::new(location, "i".into(), "http://c".into(), "p.toml".into(), "d".into());
        assert_eq!(format!("{from_flags:?}"), format!("{typed:?}"));
        assert_eq!(typed.audit_sink, AuditSink::outbox(), "no flag can switch auditing off");
        assert!(!typed.audit_sink.discards());
        assert_eq!(typed.shutdown_flush(), Duration::from_secs(5));
    }
}
