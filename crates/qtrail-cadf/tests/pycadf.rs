//! The CADF-JSON form is accepted by pyCADF, the reference implementation of DMTF DSP0262.
//!
//! Needs Python 3 with `pycadf` (`pip install pycadf`; the README's test command installs it).
//! `QTRAIL_PYTHON` selects the interpreter, `python3` by default.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use qtrail_cadf::{Action, cadf_json};

use common::*;

#[test]
fn pycadf_accepts_every_cadf_json_event() {
    let mut events = one_per_action();
    events.extend(one_per_collector_action());
    events.push(cancel_failure());
    events.push(read_success());
    events.push(builder(Action::ProgramCreate, "", "bell").failure(409, "name taken").build().unwrap());
    events.push(builder(Action::JobRead, "", "").failure(401, "missing api key").build().unwrap());
    let lines: String = events.iter().map(|event| cadf_json::to_string(event) + "\n").collect();

    let python = std::env::var("QTRAIL_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pycadf_check.py");
    let probe = Command::new(&python).args(["-c", "import pycadf"]).output();
    let has_pycadf = probe.as_ref().is_ok_and(|out| out.status.success());
    assert!(has_pycadf, "{python} cannot import pycadf: run `pip install pycadf` (the README test command does)");

    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "pycadf rejected an event: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout.trim(), format!("ok {}", events.len()));
}
