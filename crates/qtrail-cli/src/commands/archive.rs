//! `qtrail archive verify|restore`: an archive in object storage checked offline with the
//! checkpoint key's public half, and loaded into a scratch collector (see the collector's
//! `archive` module for the format).

use std::io::Write;

use qtrail_collector::archive::verify::verify_location;
use qtrail_collector::archive::{Archive, ArchiveError, restore};
use serde_json::json;

use super::events::read_public_keys;
use crate::cli::{ArchiveCommand, ArchiveRestoreArgs, ArchiveVerifyArgs, GlobalArgs, OutputFormat};
use crate::error::CliError;
use crate::output::write_json;

/// Runs one `archive` subcommand.
///
/// # Errors
/// [`CliError::Archive`] when a range does not verify; object store, file and usage errors.
pub async fn run(command: ArchiveCommand, global: &GlobalArgs, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        ArchiveCommand::Verify(args) => verify(&args, global, out).await,
        ArchiveCommand::Restore(args) => restore_location(&args, global, out).await,
    }
}

fn cli_error(err: ArchiveError) -> CliError {
    match err {
        ArchiveError::Config(why) => CliError::Usage(why),
        ArchiveError::Object(why) => CliError::ArchiveStore(why),
        ArchiveError::Invalid(why) => CliError::Archive(why),
        ArchiveError::Store(err) => CliError::Archive(err.to_string()),
    }
}

async fn verify(args: &ArchiveVerifyArgs, global: &GlobalArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let keys = read_public_keys(&args.public_key)?.unwrap_or_default();
    let archive = Archive::open(&args.url, &args.archive_options).map_err(cli_error)?;
    let locations = match &global.location {
        Some(location) => vec![location.clone()],
        None => archive.locations().await.map_err(cli_error)?,
    };
    let (mut ranges, mut failed) = (0usize, Vec::new());
    let mut lines = Vec::new();
    for location in &locations {
        for report in verify_location(&archive, location, &keys, false).await.map_err(cli_error)? {
            ranges += 1;
            if report.result.is_err() {
                failed.push(report.line(location));
            }
            lines.push(json!({
                "location": location, "first": report.first, "last": report.last,
                "ok": report.result.is_ok(), "line": report.line(location),
            }));
        }
    }
    match global.output {
        OutputFormat::Json => write_json(out, &json!({ "ranges": lines }))?,
        OutputFormat::Table => {
            for line in &lines {
                writeln!(out, "{}", line["line"].as_str().unwrap_or_default())?;
            }
        }
    }
    if ranges == 0 {
        return Err(CliError::Archive(format!("{} holds no archived range", args.url)));
    }
    match failed.first() {
        Some(first) => {
            Err(CliError::Archive(format!("{} of {ranges} ranges do not verify, first: {first}", failed.len())))
        }
        None => Ok(()),
    }
}

async fn restore_location(args: &ArchiveRestoreArgs, global: &GlobalArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Some(location) = &global.location else {
        return Err(CliError::Usage("archive restore needs --location".to_owned()));
    };
    let keys = read_public_keys(&args.public_key)?.unwrap_or_default();
    let archive = Archive::open(&args.url, &args.archive_options).map_err(cli_error)?;
    let restored =
        restore::restore(&archive, location, &keys, &args.data_dir, args.through).await.map_err(cli_error)?;
    match global.output {
        OutputFormat::Json => write_json(
            out,
            &json!({
                "location": location, "dataDir": args.data_dir.display().to_string(),
                "ranges": restored.ranges, "lastSeq": restored.last, "checkpoints": restored.checkpoints,
            }),
        )?,
        OutputFormat::Table => writeln!(
            out,
            "restored {location} 1..={} ({} ranges, {} checkpoints) into {}",
            restored.last,
            restored.ranges,
            restored.checkpoints,
            args.data_dir.display()
        )?,
    }
    Ok(())
}
