//! Tests of the collector against a real server: in-process on port 0 over a temporary
//! directory (`common`), or the real binary as a child process (`binary`). One test binary, so
//! the collector and its dependencies are linked once for all of them.
//!
//! Tests that read process-wide metrics from `/metrics` (`metrics`, `tail`, `replica`, one of
//! `publisher`), which the other tests' servers move too, each run in a process of their own
//! (`qtrail_testkit::in_own_process`).

// The modules form one test binary; `pub` marks the helpers they share.
#![allow(unreachable_pub)]

mod accounts;
mod admin;
mod alerts;
mod binary;
mod client_cert;
mod common;
mod console;
mod console_alerts;
mod console_sessions;
mod hostile_query;
mod inclusion;
mod ingest;
mod metrics;
mod publisher;
mod query;
mod replica;
mod rotation;
mod tail;
mod tamper;
mod timeline;
mod tlog;
