//! Zero-loss delivery from the runtime to the collector, proven by fault injection (issue #6).
//!
//! Each scenario runs the real `qtrail-runtime` and `qtrail-collector` binaries, drives a
//! workload of every runtime RPC while it breaks something (SIGKILL of either process, a
//! collector that is down, missing or for the wrong location, a full outbox, a network cut),
//! then counts with Jepsen's total-queue method: every call the runtime answered must have
//! exactly one stored event. Each prints `sent, acknowledged, stored, lost, duplicated` and
//! asserts that lost and duplicated are zero and that every location's chain verifies.

pub mod checker;
mod proxy;
mod scenarios;
pub mod workload;
