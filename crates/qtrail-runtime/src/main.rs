//! The `qtrail-runtime` binary: flags, tracing, the listener, and the shutdown signal around
//! [`qtrail_runtime::run`].

use anyhow::Context as _;
use clap::Parser as _;
use qtrail_runtime::config::Flags;

/// jemalloc rather than glibc malloc: see `tikv-jemallocator` in the workspace Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    qtrail_server::telemetry::init(flags.log_json);
    let listen = flags.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    qtrail_runtime::run(listener, flags.config(), qtrail_server::shutdown::signal()).await
}
