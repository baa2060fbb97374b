//! `qtrail-collector`: parses flags, sets up logging, binds the listener and runs the collector
//! until SIGTERM or SIGINT.

use anyhow::Context as _;
use clap::Parser as _;
use qtrail_collector::config::Flags;

/// jemalloc rather than glibc malloc: see `tikv-jemallocator` in the workspace Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    qtrail_server::telemetry::init(flags.log_json);
    let config = flags.config()?;
    let listener = tokio::net::TcpListener::bind(flags.listen)
        .await
        .with_context(|| format!("failed to listen on {}", flags.listen))?;
    qtrail_collector::run(listener, config, qtrail_server::shutdown::signal()).await
}
