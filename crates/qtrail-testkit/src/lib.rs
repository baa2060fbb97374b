//! Real qtrail binaries as child processes, the way InfluxDB 3's end-to-end tests start theirs:
//! port 0 and an address file, readiness through `grpc.health.v1`, a data directory of the
//! caller's, logs kept per server, and a kill on drop so that nothing is left behind, even when
//! a test panics.
//!
//! One kit for every place that spawns processes: the end-to-end tests (`tests/e2e`), the
//! tests of the `qtrail-runtime` and `qtrail-collector` binaries, and the benchmark harness,
//! which runs its servers as processes in production runs too (so [`process`] returns errors
//! where the test-only parts panic). It also runs a test that reads process-wide state in a
//! process of its own ([`isolation`]), starts real PostgreSQL servers ([`postgres`]) and a real S3-compatible server ([`s3`]).

pub mod address;
pub mod binary;
pub mod http;
pub mod isolation;
pub mod postgres;
pub mod process;
pub mod s3;
pub mod server;
pub mod wait;

pub use address::ServerAddr;
pub use binary::{artifacts_dir, binary, without_tls_env};
pub use http::http_get;
pub use isolation::in_own_process;
pub use postgres::Postgres;
pub use process::{Process, Signal};
pub use s3::S3Server;
pub use server::ServerProcess;
pub use wait::{START_TIMEOUT, wait_until};
