//! The `qtrail` command line.
//!
//! `qtrail up` runs a collector service, a runtime and the web console locally; the other
//! commands are gRPC clients of those services: `collectors` (admin), `programs` and `jobs`
//! (runtime users), `events` (auditors) and `alerts` (rules, firings, a webhook receiver);
//! `proof verify` checks an inclusion proof offline. Results print as tables or, with `--output json`,
//! as JSON; failures print one line on stderr and exit with a code from [`error`].

pub mod cli;
pub mod commands;
pub mod connect;
pub mod error;
pub mod output;
pub mod timearg;
pub mod up;

use std::io::Write;

use crate::cli::{Cli, Command};
use crate::connect::Settings;
use crate::error::CliError;

/// Runs one parsed command line, printing results to `out`.
///
/// # Errors
/// Whatever ended the command unsuccessfully; [`CliError::exit_code`] gives its exit code.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    let global = cli.global;
    match cli.command {
        Command::Up(args) => up::run(args, &global, out).await,
        Command::Collectors(command) => commands::collectors::run(command, &Settings::resolve(&global)?, out).await,
        Command::Programs(command) => commands::programs::run(command, &Settings::resolve(&global)?, out).await,
        Command::Jobs(command) => commands::jobs::run(command, &Settings::resolve(&global)?, out).await,
        Command::Events(command) => commands::events::run(command, &Settings::resolve(&global)?, out).await,
        Command::Alerts(command) => commands::alerts::run(command, &Settings::resolve(&global)?, out).await,
        // Offline: no server, so no connection settings.
        Command::Proof(command) => commands::proof::run(command, &global, out),
        Command::Archive(command) => commands::archive::run(command, &global, out).await,
    }
}
