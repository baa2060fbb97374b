//! `qtrail --help` and every subcommand's help, compared with snapshots in
//! `tests/snapshots/help/`. Run with `UPDATE_SNAPSHOTS=1` to rewrite them after a deliberate
//! change, then review the diff.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::CommandFactory;
use qtrail_cli::cli::Cli;

fn snapshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/help")
}

/// Returns (snapshot name, long help) for the command and each subcommand, depth first.
fn all_helps(command: &mut clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    out.push((format!("{path}.txt"), command.render_long_help().to_string()));
    for sub in command.get_subcommands_mut() {
        if sub.get_name() == "help" {
            continue;
        }
        let name = format!("{path}-{}", sub.get_name());
        all_helps(sub, &name, out);
    }
}

#[test]
fn every_help_matches_its_snapshot() {
    let mut command = Cli::command();
    command.build();
    let mut helps = Vec::new();
    all_helps(&mut command, "qtrail", &mut helps);
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();

    let mut mismatched = Vec::new();
    for (name, help) in &helps {
        let path = snapshot_dir().join(name);
        if update {
            std::fs::write(&path, help).unwrap();
        }
        let snapshot = std::fs::read_to_string(&path).unwrap_or_default();
        if &snapshot != help {
            mismatched.push(name.clone());
        }
    }
    assert!(mismatched.is_empty(), "help differs from its snapshot (UPDATE_SNAPSHOTS=1 to accept): {mismatched:?}");

    // No snapshot outlives its command.
    let expected: BTreeSet<String> = helps.iter().map(|(name, _)| name.clone()).collect();
    let present: BTreeSet<String> = std::fs::read_dir(snapshot_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(present, expected, "stale or missing help snapshots");
    // Every command of the issue is covered.
    for name in [
        "qtrail-collectors-create.txt",
        "qtrail-programs-update.txt",
        "qtrail-jobs-results.txt",
        "qtrail-events-export.txt",
        "qtrail-events-verify.txt",
    ] {
        assert!(expected.contains(name), "{name}");
    }
}

#[test]
fn the_command_definition_is_consistent() {
    Cli::command().debug_assert();
}
