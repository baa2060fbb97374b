//! The `qtrail-runtime` binary: flags, tracing, the listener, and the shutdown signal around
//! [`qtrail_runtime::run`].

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use qtrail_runtime::Config;

/// jemalloc rather than glibc malloc: see `tikv-jemallocator` in the workspace Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The audited Qiskit Runtime-style service.
#[derive(Debug, Parser)]
#[command(name = "qtrail-runtime", version)]
struct Cli {
    /// Address to listen on; port 0 picks a free one (see --addr-file).
    #[arg(long, env = "QTRAIL_RUNTIME_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Log JSON lines instead of text.
    #[arg(long, env = "QTRAIL_LOG_JSON")]
    log_json: bool,
    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    qtrail_server::telemetry::init(cli.log_json);
    let listener =
        tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("cannot listen on {}", cli.listen))?;
    qtrail_runtime::run(listener, cli.config, qtrail_server::shutdown::signal()).await
}
