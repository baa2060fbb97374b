//! Tracing set-up shared by the binaries: `RUST_LOG` filters (default `info`), output to stderr,
//! as text or as JSON lines.

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber. Does nothing if one is installed already, so tests
/// that start several servers in one process can call it freely.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
