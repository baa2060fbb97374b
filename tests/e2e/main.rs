//! End-to-end tests of qtrail: the real `qtrail-collector`, `qtrail-runtime` and `qtrail`
//! binaries as separate processes, talking over real sockets.

// The modules form one test binary; `pub` marks the API the test modules share.
#![allow(unreachable_pub)]

mod accounts;
mod alerts;
mod archive;
mod archive_cycle;
mod console;
mod console_alerts;
mod delivery;
mod failover;
mod grpcurl;
mod monitor;
mod postgres_store;
mod proofs;
mod publishers;
mod receipts;
mod replicas;
mod retention;
mod servers;
mod timeline;
mod tlog_interop;
mod tls;
mod up;
mod usage;
mod webdriver;
mod witness;

/// Copies the directory `from` to `to`, recursively: an operator's backup of a data directory,
/// or its restore.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
