//! The grammar of the archive commands (pinned in DESIGN.md, "Growing the trail" → Accounts,
//! retention, archive): `qtrail archive verify` checks an archive offline, `qtrail archive
//! restore` loads it into a scratch collector's data directory.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `qtrail archive …`
#[derive(Debug, Subcommand)]
pub enum ArchiveCommand {
    /// Check an archive offline (no collector): each range's signed manifest, object hash and
    /// events against the covering signed checkpoint, and that the ranges follow each other;
    /// one line per range, exit 10 if any fails. `--location` limits it to one location.
    Verify(ArchiveVerifyArgs),
    /// Verify a location's archive, then load it into a new data directory that
    /// `qtrail-collector --data-dir DIR` serves, with the original checkpoints (needs
    /// `--location`; every range from position 1 on is loaded, through `--through`).
    Restore(ArchiveRestoreArgs),
}

/// Flags of `qtrail archive verify`.
#[derive(Debug, Args)]
pub struct ArchiveVerifyArgs {
    /// The archive, as given to the collector's `--archive-url` (`s3://bucket/prefix` with the
    /// `AWS_*` variables, `gs://…`, `az://…`, `file:///path`).
    pub url: String,
    /// Public key (PEM) of the collector's checkpoint key, kept out of band; repeat it for keys
    /// rotated over time.
    #[arg(long, env = "QTRAIL_CHECKPOINT_PUBLIC_KEY", value_name = "FILE", required = true)]
    pub public_key: Vec<PathBuf>,
    /// An option of the object store client, `key=value` (e.g. `aws_endpoint=http://…`,
    /// `aws_allow_http=true`); it wins over the environment. Repeatable.
    #[arg(long = "archive-option", value_name = "KEY=VALUE")]
    pub archive_options: Vec<String>,
}

/// Flags of `qtrail archive restore`.
#[derive(Debug, Args)]
pub struct ArchiveRestoreArgs {
    /// The archive, as given to the collector's `--archive-url`.
    pub url: String,
    /// Public key (PEM) of the collector's checkpoint key, kept out of band.
    #[arg(long, env = "QTRAIL_CHECKPOINT_PUBLIC_KEY", value_name = "FILE", required = true)]
    pub public_key: Vec<PathBuf>,
    /// An option of the object store client, `key=value` (e.g. `aws_endpoint=http://…`,
    /// `aws_allow_http=true`); it wins over the environment. Repeatable.
    #[arg(long = "archive-option", value_name = "KEY=VALUE")]
    pub archive_options: Vec<String>,
    /// The new data directory to load the events into (it must not hold the location yet).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Load the ranges up to the one that holds this position (default: all).
    #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
    pub through: Option<u64>,
}
