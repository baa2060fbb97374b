//! Finding the workspace's binaries and its `target/` directory from a test binary, and keeping
//! this process's TLS settings away from a child.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Returns the path of a workspace binary, next to the test binary's `deps/` directory
/// (`target/<profile>`), or in `QTRAIL_BIN_DIR` when that is set.
///
/// # Panics
/// When the binary does not exist: the binaries must be built first (`cargo build --bins`).
pub fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("QTRAIL_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => profile_dir(),
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} does not exist: build the binaries first with `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    path
}

/// Returns `target/<profile>` of the running test binary.
fn profile_dir() -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test binary knows its path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>
    test_exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps").to_owned()
}

/// Returns the directory of test artifacts (screenshots), `target/<name>`, created if missing.
pub fn artifacts_dir(name: &str) -> PathBuf {
    let profile = profile_dir();
    let target = profile.parent().expect("target/<profile> has a parent");
    let dir = target.join(name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
    dir
}

/// Keeps TLS settings of this process's environment away from a child: a test decides with
/// flags whether its servers and clients speak TLS.
pub fn without_tls_env(command: &mut Command) -> &mut Command {
    for setting in ["TLS_CA", "TLS_CERT", "TLS_KEY"] {
        command.env_remove(format!("QTRAIL_{setting}"));
    }
    for service in ["COLLECTOR", "RUNTIME"] {
        for setting in ["TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA"] {
            command.env_remove(format!("QTRAIL_{service}_{setting}"));
        }
    }
    for setting in ["CA", "CERT", "KEY"] {
        command.env_remove(format!("QTRAIL_RUNTIME_COLLECTOR_{setting}"));
    }
    command
}
