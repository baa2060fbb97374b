//! End-to-end tests of qtrail: the real `qtrail-collector`, `qtrail-runtime` and `qtrail`
//! binaries as separate processes, talking over real sockets.

// The modules form one test binary; `pub` marks the API the test modules share.
#![allow(unreachable_pub)]

mod alerts;
mod console;
mod console_alerts;
mod delivery;
mod grpcurl;
mod monitor;
mod proofs;
mod publishers;
mod receipts;
mod servers;
mod timeline;
mod tlog_interop;
mod tls;
mod up;
mod webdriver;
mod witness;
