//! The grammar of the proof commands (pinned in DESIGN.md, "Growing the trail" → Proofs):
//! `qtrail events prove` writes a C2SP tlog-proof, `qtrail proof verify` checks one offline, and
//! `qtrail events monitor` watches the signed tree heads for a fork or a rollback.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use qtrail_runtime::config::Secret;

/// Flags of `qtrail events prove`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("leaf").required(true).args(["correlation_id", "event_id", "seq"])))]
pub struct EventProveArgs {
    /// The event with this correlation id (the oldest, when several have it).
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,
    /// The event with this event id (a UUID).
    #[arg(long, value_name = "UUID")]
    pub event_id: Option<String>,
    /// The event at this chain position (location_seq, from 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub seq: Option<u64>,
    /// Prove it in the signed checkpoint of this many leaves (default: the newest).
    #[arg(long, value_name = "N")]
    pub tree_size: Option<u64>,
    /// File to write the proof to (C2SP tlog-proof; conventionally NAME.tlog-proof).
    #[arg(long = "output-file", short = 'o', value_name = "FILE")]
    pub output_file: PathBuf,
}

/// `qtrail proof …`
#[derive(Debug, Subcommand)]
pub enum ProofCommand {
    /// Check a proof file offline (no server): the checkpoint's signature, and that the event it
    /// carries is in the signed tree; exits 10 if not.
    Verify(ProofVerifyArgs),
}

/// Flags of `qtrail proof verify`.
#[derive(Debug, Args)]
pub struct ProofVerifyArgs {
    /// The proof file, as `qtrail events prove` wrote it.
    pub file: PathBuf,
    /// Public key (PEM) of the collector's checkpoint key, kept out of band; repeat it for keys
    /// rotated over time.
    #[arg(long, env = "QTRAIL_CHECKPOINT_PUBLIC_KEY", value_name = "FILE", required = true)]
    pub public_key: Vec<PathBuf>,
    /// A file with the event as JSON (CADF JSON, Activity Tracker JSON or canonical bytes): it
    /// must be the event the proof proves (exit 10 if not).
    #[arg(long, value_name = "FILE")]
    pub event: Option<PathBuf>,
}

/// Flags of `qtrail events monitor`.
#[derive(Debug, Args)]
pub struct EventMonitorArgs {
    /// Public key (PEM) of the collector's checkpoint key, kept out of band; repeat it for keys
    /// rotated over time.
    #[arg(long, env = "QTRAIL_CHECKPOINT_PUBLIC_KEY", value_name = "FILE", required = true)]
    pub public_key: Vec<PathBuf>,
    /// Directory that keeps the newest tree head seen, one note per location (created if
    /// missing): keep it across runs, or the monitor starts trusting anew.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Time between two polls.
    #[arg(long, value_name = "DUR", default_value = "1m", value_parser = parse_interval)]
    pub interval: Duration,
    /// Poll once and exit (for cron and scripts).
    #[arg(long)]
    pub once: bool,
    /// An http URL that receives a fork or rollback as a signed CloudEvent.
    #[arg(long, value_name = "URL", requires = "secret")]
    pub webhook: Option<String>,
    /// The webhook's signing secret, `whsec_` and base64 (Standard Webhooks).
    #[arg(long, value_name = "SECRET", env = "QTRAIL_WEBHOOK_SECRET", hide_env_values = true, requires = "webhook")]
    pub secret: Option<Secret>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(interval) if interval >= Duration::from_millis(100) => Ok(interval),
        Ok(_) => Err("the interval must be at least 100ms".to_owned()),
        Err(err) => Err(format!("invalid duration `{text}`: {err}")),
    }
}
