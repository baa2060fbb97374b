//! Plumbing that every qtrail gRPC server needs in the same way, so that the runtime and the
//! collector behave alike at their edges: server reflection in both protocol versions, the
//! address file that tells a parent process where a server listens, the shutdown signal,
//! tracing set-up, TOML config files, bearer-token extraction, the gRPC side's capped
//! connections, the HTTP side with Prometheus metrics, the write-stall deadline both sides'
//! connections share, disk headroom, TLS from PEM files, and waiting on a condition with a
//! deadline.

pub mod addr_file;
pub mod auth;
pub mod config;
pub mod disk;
pub mod health;
pub mod http;
pub mod incoming;
pub mod poll;
pub mod reflection;
pub mod shutdown;
pub mod stall;
pub mod telemetry;
pub mod tls;
