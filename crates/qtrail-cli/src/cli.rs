//! The command-line grammar: every command, flag and environment variable of `qtrail`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod alerts;
mod archive;
mod proof;

pub use alerts::{AlertReceiveArgs, AlertRuleArgs, AlertTestArgs, AlertWatchArgs, AlertsCommand};
pub use archive::{ArchiveCommand, ArchiveRestoreArgs, ArchiveVerifyArgs};
pub use proof::{EventMonitorArgs, EventProveArgs, ProofCommand, ProofVerifyArgs};

/// Audit trail for a Qiskit Runtime–style quantum service.
///
/// Runs the services locally (`qtrail up`), drives the runtime (programs, jobs) and lets
/// auditors query, tail, verify and export the audit events the runtime records.
///
/// Connection settings come from flags, then environment variables, then the `up.json` that
/// `qtrail up` writes into its data directory.
#[derive(Debug, Parser)]
#[command(name = "qtrail", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Connection and output settings shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table, env = "QTRAIL_OUTPUT", hide_env_values = true)]
    pub output: OutputFormat,

    /// Runtime gRPC address, e.g. http://127.0.0.1:7400.
    #[arg(long, global = true, env = "QTRAIL_RUNTIME", value_name = "URL", hide_env_values = true)]
    pub runtime: Option<String>,

    /// Collector gRPC address, e.g. http://127.0.0.1:7410.
    #[arg(long, global = true, env = "QTRAIL_COLLECTOR", value_name = "URL", hide_env_values = true)]
    pub collector: Option<String>,

    /// API key for the runtime (sent as `authorization: Bearer …`).
    #[arg(long, global = true, env = "QTRAIL_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Collector token: an auditor token for `events`, an admin token for `collectors`.
    #[arg(long, global = true, env = "QTRAIL_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Location whose events to read, e.g. us-east (for `up`: the location to run; default us-east).
    #[arg(long, global = true, env = "QTRAIL_LOCATION", value_name = "LOCATION", hide_env_values = true)]
    pub location: Option<String>,

    /// Data directory of `qtrail up`, whose up.json supplies defaults for the settings above.
    #[arg(
        long,
        global = true,
        env = "QTRAIL_DATA_DIR",
        value_name = "DIR",
        default_value = "qtrail-data",
        hide_env_values = true
    )]
    pub data_dir: PathBuf,

    /// PEM CA certificates to trust for https:// addresses (default: the Mozilla roots built into qtrail).
    #[arg(long, global = true, env = "QTRAIL_TLS_CA", value_name = "FILE", hide_env_values = true)]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate for servers that require one (mutual TLS); needs --tls-key.
    #[arg(
        long,
        global = true,
        env = "QTRAIL_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        hide_env_values = true
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(
        long,
        global = true,
        env = "QTRAIL_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert",
        hide_env_values = true
    )]
    pub tls_key: Option<PathBuf>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a collector service (with a collector for the location), a runtime and the web
    /// console on this machine, until Ctrl-C.
    Up(UpArgs),
    /// Create and inspect collectors (needs an admin token).
    #[command(subcommand)]
    Collectors(CollectorsCommand),
    /// Upload, list, change and delete programs (needs an API key).
    #[command(subcommand)]
    Programs(ProgramsCommand),
    /// Run, inspect, cancel and delete jobs (needs an API key).
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Query, tail, verify and export audit events (needs an auditor token).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Create and inspect alert rules, watch their firings, receive their webhooks (admin token
    /// to write, auditor token to read).
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Check inclusion proofs offline, with no server (the files `events prove` writes).
    #[command(subcommand)]
    Proof(ProofCommand),
    /// Check an archive in object storage offline, or load it into a scratch collector.
    #[command(subcommand)]
    Archive(ArchiveCommand),
}

/// Flags of `qtrail up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address of the runtime's gRPC server.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7400")]
    pub runtime_listen: String,

    /// Address of the collector's gRPC server.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7410")]
    pub collector_listen: String,

    /// Address of the web console and metrics.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7480")]
    pub console_listen: String,

    /// The collector's store: `postgres://…` for a PostgreSQL database (see `qtrail-collector
    /// --help`); absent, the embedded store in the data directory.
    #[arg(long, value_name = "URL", env = "QTRAIL_COLLECTOR_STORE")]
    pub store: Option<String>,
}

/// `qtrail collectors …`
#[derive(Debug, Subcommand)]
pub enum CollectorsCommand {
    /// Create the collector of a location (at most one per location).
    Create {
        /// Location, e.g. us-east or eu-de.
        location: String,
    },
    /// List every collector.
    List,
    /// Show the collector of a location.
    Get {
        /// Location.
        location: String,
    },
    /// Set or show how long a location's events are kept (events expire only once archived).
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Place, lift and list legal holds: nothing under a hold expires.
    #[command(subcommand)]
    Hold(HoldCommand),
}

/// `qtrail collectors retention …`
#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Keep a location's events for DAYS after they were received (0: forever).
    Set {
        /// Location.
        location: String,
        /// Days, at most 36500; 0 turns retention off.
        days: u32,
    },
    /// Show a location's retention policy.
    Get {
        /// Location.
        location: String,
    },
}

/// What a legal hold covers: a location or an account.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct HoldTarget {
    /// Hold every event of this location.
    #[arg(long, value_name = "LOCATION")]
    pub location: Option<String>,
    /// Hold every event whose target or log source belongs to this account.
    #[arg(long, value_name = "ACCOUNT")]
    pub account: Option<String>,
}

/// `qtrail collectors hold …`
#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Place a legal hold.
    Add {
        #[command(flatten)]
        target: HoldTarget,
        /// Why, e.g. a case number.
        #[arg(long)]
        reason: String,
    },
    /// Lift a legal hold.
    Remove {
        #[command(flatten)]
        target: HoldTarget,
    },
    /// List the legal holds in force.
    List,
}

/// `qtrail programs …`
#[derive(Debug, Subcommand)]
pub enum ProgramsCommand {
    /// Upload an OpenQASM 2 program.
    Create(ProgramCreateArgs),
    /// List the programs you can see, newest first.
    List(PageArgs),
    /// Show one program.
    Get {
        /// Program id.
        id: String,
    },
    /// Change a program's metadata, source or visibility.
    Update(ProgramUpdateArgs),
    /// Delete a program (its jobs are kept).
    Delete {
        /// Program id.
        id: String,
    },
}

/// Flags of `qtrail programs create`.
#[derive(Debug, Args)]
pub struct ProgramCreateArgs {
    /// Name, unique within your account.
    #[arg(long)]
    pub name: String,
    /// File with the OpenQASM 2 source (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    pub source_file: PathBuf,
    /// Description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Longest a job may run, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub max_execution_time: u32,
    /// Let every account read and run the program.
    #[arg(long)]
    pub public: bool,
}

/// Flags of `qtrail programs update`.
#[derive(Debug, Args)]
pub struct ProgramUpdateArgs {
    /// Program id.
    pub id: String,
    /// New name.
    #[arg(long)]
    pub name: Option<String>,
    /// New description.
    #[arg(long)]
    pub description: Option<String>,
    /// File with the new OpenQASM 2 source (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    pub source_file: Option<PathBuf>,
    /// New maximum execution time, in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub max_execution_time: Option<u32>,
    /// New visibility.
    #[arg(long, value_name = "BOOL")]
    pub public: Option<bool>,
}

/// Paging flags.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// Most items to show (1 to 1000).
    #[arg(long, default_value_t = 100)]
    pub limit: i32,
    /// Items to skip.
    #[arg(long, default_value_t = 0)]
    pub offset: i32,
}

/// `qtrail jobs …`
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Queue a job of a program.
    Run(JobRunArgs),
    /// List your jobs, newest first.
    List(JobListArgs),
    /// Show one job.
    Get {
        /// Job id.
        id: String,
    },
    /// Show a completed job's measurement counts.
    Results {
        /// Job id.
        id: String,
    },
    /// Show the partial counts a job published while it ran.
    Interim {
        /// Job id.
        id: String,
    },
    /// Show a job's log.
    Logs {
        /// Job id.
        id: String,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// Job id.
        id: String,
    },
    /// Delete a finished job and its results.
    Delete {
        /// Job id.
        id: String,
    },
}

/// Flags of `qtrail jobs run`.
#[derive(Debug, Args)]
pub struct JobRunArgs {
    /// Program to run.
    pub program_id: String,
    /// Number of shots.
    #[arg(long)]
    pub shots: Option<u32>,
    /// Seed for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Tag the job (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Session to group the job into.
    #[arg(long)]
    pub session_id: Option<String>,
    /// Log level of the job's log.
    #[arg(long, value_parser = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])]
    pub log_level: Option<String>,
    /// Wait until the job finishes and print its final state.
    #[arg(long)]
    pub wait: bool,
}

/// Flags of `qtrail jobs list`.
#[derive(Debug, Args)]
pub struct JobListArgs {
    /// Only queued and running jobs.
    #[arg(long, conflicts_with = "finished")]
    pub pending: bool,
    /// Only finished jobs.
    #[arg(long)]
    pub finished: bool,
    /// Only jobs of this program.
    #[arg(long, value_name = "ID")]
    pub program: Option<String>,
    /// Only jobs with this tag (repeatable; all must match).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only jobs created at or after this time (RFC 3339, or an age such as 1h).
    #[arg(long, value_name = "TIME")]
    pub created_after: Option<String>,
    /// Only jobs created before this time (RFC 3339, or an age such as 10m).
    #[arg(long, value_name = "TIME")]
    pub created_before: Option<String>,
    /// Oldest first.
    #[arg(long)]
    pub ascending: bool,
    /// Paging.
    #[command(flatten)]
    pub page: PageArgs,
}

/// `qtrail events …`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Search stored events, newest first.
    Query(EventQueryArgs),
    /// Print matching events as they are stored (history first with --from-seq).
    Tail(EventTailArgs),
    /// Re-derive the location's hash chain; exits 10 if it does not hold.
    Verify(EventVerifyArgs),
    /// Write events as Activity Tracker JSON or CADF JSON lines.
    Export(EventExportArgs),
    /// Show each publisher's sequence state, the gaps in it and its rejected events.
    Publishers,
    /// List the collector's signed checkpoints of the chain head, newest first; with
    /// --public-key, check their signatures (exit 10 if one does not hold).
    Checkpoints(EventCheckpointsArgs),
    /// Write an offline proof (C2SP tlog-proof) that one event is in the signed log: its
    /// inclusion proof, the signed checkpoint, and the event's canonical bytes.
    Prove(EventProveArgs),
    /// Watch the location's signed tree heads: each must be signed by --public-key and extend
    /// the last one seen (kept in --state); exits 10 on a fork or a rollback.
    Monitor(EventMonitorArgs),
}

/// Event filters shared by query, tail and export.
#[derive(Debug, Args, Clone)]
pub struct EventFilterArgs {
    /// An action or a prefix of one, e.g. quantum-computing.job or quantum-computing.job.cancel.
    #[arg(long)]
    pub action: Option<String>,
    /// Only this outcome.
    #[arg(long, value_parser = ["success", "failure", "pending"])]
    pub outcome: Option<String>,
    /// Only this severity.
    #[arg(long, value_parser = ["normal", "warning", "critical"])]
    pub severity: Option<String>,
    /// Only events by this initiator id, e.g. IBMid-0001.
    #[arg(long, value_name = "ID")]
    pub initiator: Option<String>,
    /// A target CRN, or a CRN prefix.
    #[arg(long, value_name = "CRN")]
    pub target: Option<String>,
    /// Only events with this correlation id.
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,
    /// Only events at or after this time (RFC 3339, or an age such as 1h or 30m).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only events before this time (RFC 3339, or an age).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

/// Flags of `qtrail events query`.
#[derive(Debug, Args)]
pub struct EventQueryArgs {
    /// Filters.
    #[command(flatten)]
    pub filter: EventFilterArgs,
    /// Events per page (1 to 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Continue from a previous page's next-page token.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
    /// Oldest first.
    #[arg(long)]
    pub oldest_first: bool,
    /// Follow next-page tokens to the end instead of printing one page.
    #[arg(long)]
    pub all: bool,
}

/// Flags of `qtrail events tail`.
#[derive(Debug, Args)]
pub struct EventTailArgs {
    /// Filters.
    #[command(flatten)]
    pub filter: EventFilterArgs,
    /// Start with stored events from this chain position; without it only new events are shown.
    #[arg(long, value_name = "SEQ")]
    pub from_seq: Option<u64>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// A range of chain positions.
#[derive(Debug, Args, Clone)]
pub struct SeqRangeArgs {
    /// First chain position (default: the first).
    #[arg(long, value_name = "SEQ")]
    pub from_seq: Option<u64>,
    /// Last chain position (default: the newest).
    #[arg(long, value_name = "SEQ")]
    pub to_seq: Option<u64>,
}

/// Flags of `qtrail events verify`.
#[derive(Debug, Args)]
pub struct EventVerifyArgs {
    #[command(flatten)]
    pub range: SeqRangeArgs,
    /// Chain hash (hex) that a verify printed earlier for --to-seq, kept out of band: the chain
    /// from the first event must still lead to it, or history was rewritten or cut (exit 10)
    #[arg(long, value_name = "HEX", requires = "to_seq")]
    pub expect_head: Option<String>,
    /// Public key (PEM) of the collector's checkpoint key, kept out of band: the location must
    /// then have signed checkpoints, each with a valid signature of one of the keys given (repeat
    /// the flag for keys rotated over time), numbered densely from 1, and matching the chain
    /// (exit 10 if not)
    #[arg(long, env = "QTRAIL_CHECKPOINT_PUBLIC_KEY", value_name = "FILE")]
    pub public_key: Vec<PathBuf>,
    /// A checkpoint kept out of band, as `qtrail events checkpoints --limit 1 --output json`
    /// wrote it: it must be signed by --public-key, still be held by the collector unchanged, and
    /// the chain from the first event must lead to its head (exit 10 if not). Catches a rewrite
    /// whose newest checkpoints were deleted with it
    #[arg(long, value_name = "FILE", requires = "public_key")]
    pub expect_checkpoint: Option<PathBuf>,
    /// A tree head note kept out of band (a checkpoint's `note`): it must be signed by
    /// --public-key, and the collector's newest tree head must extend it, shown by a consistency
    /// proof instead of a re-read of the log (exit 10 if not)
    #[arg(long, value_name = "FILE", requires = "public_key",
          conflicts_with_all = ["expect_head", "expect_checkpoint", "from_seq", "to_seq"])]
    pub checkpoint: Option<PathBuf>,
    /// Cosignature verifier key of a witness the auditor trusts (`<name>+<hex key id>+<base64
    /// key>`, or a file holding one): the newest checkpoint must carry valid C2SP cosignatures of
    /// at least --witness-quorum of the keys given, so a log showing another view (a fork) or
    /// an older one (a rollback) fails (exit 10). Repeatable
    #[arg(long = "witness-key", value_name = "VKEY", requires = "public_key")]
    pub witness_keys: Vec<String>,
    /// How many of the --witness-key witnesses must have cosigned the newest checkpoint
    /// (default: all of them)
    #[arg(long, value_name = "N", requires = "witness_keys", value_parser = clap::value_parser!(u32).range(1..))]
    pub witness_quorum: Option<u32>,
}

/// Flags of `qtrail events checkpoints`.
#[derive(Debug, Args)]
pub struct EventCheckpointsArgs {
    /// Most checkpoints to list.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Public key (PEM) that must have signed them; repeat it for keys rotated over time.
    #[arg(long, env = "QTRAIL_CHECKPOINT_PUBLIC_KEY", value_name = "FILE")]
    pub public_key: Vec<PathBuf>,
}

/// Flags of `qtrail events export`.
#[derive(Debug, Args)]
pub struct EventExportArgs {
    /// Line format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// File to write (default: standard output).
    #[arg(long = "output-file", short = 'o', value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    /// Chain positions.
    #[command(flatten)]
    pub range: SeqRangeArgs,
    /// Filters.
    #[command(flatten)]
    pub filter: EventFilterArgs,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// IBM Cloud Activity Tracker JSON.
    AtJson,
    /// Strict DMTF CADF JSON.
    CadfJson,
}
