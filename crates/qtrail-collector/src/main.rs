//! `qtrail-collector`: parses flags, sets up logging, binds the listener and runs the collector
//! until SIGTERM or SIGINT.

use anyhow::Context as _;
use clap::Parser as _;
use qtrail_collector::config::{Args, Config};

/// jemalloc rather than glibc malloc: see `tikv-jemallocator` in the workspace Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    qtrail_server::telemetry::init(args.log_json);
    let config = Config::from_args(&args)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    qtrail_collector::run(listener, config, qtrail_server::shutdown::signal()).await
}
