//! The runtime's configuration: command-line flags, each also settable from a `QTRAIL_*`
//! environment variable.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use qtrail_cadf::Location;
use qtrail_server::tls::{ClientTls, ServerTls, TlsError};

use crate::forwarded::Cidr;

/// A secret string (the collector token): kept out of `Debug` output and therefore out of logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
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

/// Everything `run` needs besides its listener.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Location (region) of this runtime, e.g. `us-east`; its collector gets the events.
    #[arg(long, env = "QTRAIL_RUNTIME_LOCATION")]
    pub location: Location,
    /// Service instance id, used in every CRN.
    #[arg(long, env = "QTRAIL_RUNTIME_INSTANCE")]
    pub instance: String,
    /// URL of the collector service, e.g. `http://127.0.0.1:7000`.
    #[arg(long, env = "QTRAIL_RUNTIME_COLLECTOR")]
    pub collector: String,
    /// Token with the `publisher` role at the collector (prefer the environment variable).
    #[arg(long, env = "QTRAIL_COLLECTOR_TOKEN", hide_env_values = true)]
    pub collector_token: Option<Secret>,
    /// TOML file of principals (api key → iam id, name, account).
    #[arg(long, env = "QTRAIL_RUNTIME_PRINCIPALS")]
    pub principals: PathBuf,
    /// Directory of the runtime's database.
    #[arg(long, env = "QTRAIL_RUNTIME_DATA_DIR")]
    pub data_dir: PathBuf,
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
    #[arg(long, env = "QTRAIL_RUNTIME_ACCOUNT", default_value = "qtrail")]
    pub account: String,
    /// Most jobs executing at once.
    #[arg(long, env = "QTRAIL_RUNTIME_MAX_CONCURRENT_JOBS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_jobs: u16,
    /// Most jobs one account may have queued or running; CreateJob beyond it is refused.
    #[arg(long, env = "QTRAIL_RUNTIME_MAX_JOBS_PER_ACCOUNT", default_value_t = crate::executor::MAX_ACTIVE_JOBS_PER_ACCOUNT as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_jobs_per_account: u32,
    /// Most jobs queued or running over all accounts; CreateJob beyond it is refused.
    #[arg(long, env = "QTRAIL_RUNTIME_MAX_QUEUED_JOBS", default_value_t = crate::executor::MAX_ACTIVE_JOBS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queued_jobs: u32,
    /// Most audit events waiting in the outbox; beyond it every call is refused.
    #[arg(long, env = "QTRAIL_RUNTIME_OUTBOX_MAX_EVENTS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub outbox_max_events: u64,
    /// Most bytes of audit events waiting in the outbox (at least 64 KiB, four of the largest
    /// events); beyond it every call is refused.
    #[arg(long, env = "QTRAIL_RUNTIME_OUTBOX_MAX_BYTES", default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(64 * 1024..))]
    pub outbox_max_bytes: u64,
    /// How long the publisher lets a part-filled batch wait for more events, in milliseconds.
    #[arg(long, env = "QTRAIL_RUNTIME_PUBLISH_LINGER_MS", default_value_t = 15)]
    pub publish_linger_ms: u64,
    /// Longest wait between reconnection attempts to the collector, in milliseconds.
    #[arg(long, env = "QTRAIL_RUNTIME_PUBLISH_BACKOFF_MAX_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub publish_backoff_max_ms: u64,
    /// How long the publisher waits for the collector to acknowledge its oldest batch before it
    /// gives the stream up and reconnects, in milliseconds. A network that silently stops
    /// delivering (no reset, no close) is noticed this way.
    #[arg(long, env = "QTRAIL_RUNTIME_PUBLISH_ACK_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub publish_ack_timeout_ms: u64,
    /// How long a shutdown waits for the publisher to empty the outbox, in milliseconds.
    #[arg(long, env = "QTRAIL_RUNTIME_SHUTDOWN_FLUSH_MS", default_value_t = 5_000)]
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
    /// Benchmarks only: what becomes of audit events. No flag or variable sets it.
    #[cfg(feature = "bench")]
    #[arg(skip)]
    pub audit_sink: AuditSink,
}

/// Benchmarks only (feature `bench`): where audit events go.
#[cfg(feature = "bench")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuditSink {
    /// Into the outbox and on to the collector, as in production.
    #[default]
    Outbox,
    /// Nowhere: the runtime as it would be without auditing, the baseline that measures what
    /// auditing costs. Never reachable from the `qtrail-runtime` binary.
    Discard,
}

impl Config {
    /// Returns a configuration for tests: location `us-east`, instance `inst-test`, fast
    /// publisher retries and the default outbox bound.
    pub fn for_test(data_dir: PathBuf, principals: PathBuf, collector: String) -> Self {
        Self {
            location: "us-east".parse().expect("`us-east` is a valid location"),
            instance: "inst-test".to_owned(),
            collector,
            collector_token: Some(Secret("publisher-token".to_owned())),
            principals,
            data_dir,
            addr_file: None,
            http: None,
            http_addr_file: None,
            metrics_token_file: None,
            account: "qtrail".to_owned(),
            max_concurrent_jobs: 2,
            max_jobs_per_account: crate::executor::MAX_ACTIVE_JOBS_PER_ACCOUNT as u32,
            max_queued_jobs: crate::executor::MAX_ACTIVE_JOBS as u32,
            outbox_max_events: 100_000,
            outbox_max_bytes: 256 * 1024 * 1024,
            publish_linger_ms: 5,
            publish_backoff_max_ms: 200,
            publish_ack_timeout_ms: 30_000,
            shutdown_flush_ms: 5_000,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            collector_ca: None,
            collector_cert: None,
            collector_key: None,
            trusted_proxies: Vec::new(),
            #[cfg(feature = "bench")]
            audit_sink: AuditSink::Outbox,
        }
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        config: Config,
    }

    fn parse(extra: &[&str]) -> Result<Config, clap::Error> {
        let required = ["qtrail-runtime", "--location", "us-east", "--instance", "i", "--collector", "http://c"];
        let more = ["--principals", "p.toml", "--data-dir", "d"];
        Flags::try_parse_from(required.iter().chain(&more).chain(extra)).map(|flags| flags.config)
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
}
