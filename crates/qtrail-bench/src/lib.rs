//! The qtrail benchmark harness.
//!
//! Seven scenarios, each measured as ratios against a baseline taken in the same run (these
//! machines are small and noisy): ingest against an ack-only server ([`scenario::ingest`]),
//! the runtime with and without auditing ([`scenario::overhead`]), the delay from a call's
//! response to its event on a tail ([`scenario::latency`]), a location of a million events
//! ([`scenario::scale`]), ingest into PostgreSQL ([`scenario::postgres`]), and alerts: webhooks
//! after their events, ingest under rules ([`scenario::alerts`], [`receiver`]), and collector
//! replicas sharing one PostgreSQL ([`scenario::replicas`]). Servers run as
//! child processes of the harness ([`process`], [`serve`]) over loopback; each measurement
//! prints one line and lands in a JSON [`report`].

pub mod events;
pub mod machine;
pub mod process;
pub mod publish;
pub mod receiver;
pub mod report;
pub mod scenario;
pub mod serve;
pub mod stats;
