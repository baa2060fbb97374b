//! A test that reads process-wide state (the metrics recorder's gauges) in a process of its
//! own, while it shares a test binary with tests whose servers would move that state.

use std::process::Command;

/// Set in the process that runs one test alone: the test's path in its binary.
const OWN_PROCESS: &str = "QTRAIL_TESTKIT_OWN_PROCESS";

/// Returns whether the calling test is to run its body here: `true` in the process started
/// for it alone. Otherwise runs the test binary again with `test` (the test's path in the
/// binary, `module::name`) as the only test, and returns `false` once that has passed.
///
/// ```no_run
/// if !qtrail_testkit::in_own_process("metrics::a_gauge_returns_to_zero") {
///     return;
/// }
/// ```
///
/// # Panics
/// When the test fails in its own process, or `test` names no test of the binary.
pub fn in_own_process(test: &str) -> bool {
    if std::env::var_os(OWN_PROCESS).is_some_and(|running| running == test) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let output = Command::new(exe)
        .args([test, "--exact", "--nocapture"])
        .env(OWN_PROCESS, test)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {test} in a process of its own: {err}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{test} failed in a process of its own:\n{stdout}\n{stderr}");
    // A misspelt name would run nothing and pass.
    assert!(stdout.contains("test result: ok. 1 passed"), "{test} is not a test of this binary:\n{stdout}");
    false
}
