//! The `qtrail` binary: parses the command line, runs it, and turns the outcome into an exit
//! code and at most one line on stderr.

use std::process::ExitCode;

use clap::Parser;
use qtrail_cli::cli::{Cli, Command};
use qtrail_cli::error::CliError;

/// jemalloc rather than glibc malloc: see `tikv-jemallocator` in the workspace Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only `up` runs services, whose logs matter; client commands stay quiet on stderr.
    if matches!(cli.command, Command::Up(_)) {
        qtrail_server::telemetry::init(false);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = std::io::stdout();
    let result = runtime.block_on(qtrail_cli::run(cli, &mut stdout.lock()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stopped early (`qtrail events tail | head`) is not an error.
        Err(CliError::Output(err)) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
