//! `qtrail proof verify FILE --public-key PEM [--event JSON]`: checks a C2SP tlog-proof offline,
//! with no server: the checkpoint note's signature by a key the auditor kept, the event's leaf
//! hash (from the `extra` line) proved at its index of the signed tree, and optionally that a
//! given event is that leaf, canonicalized as the collector does.

use std::io::{Read as _, Write};
use std::path::Path;

use qtrail_cadf::{at_json, cadf_json, canonical_bytes};
use qtrail_tlog::{NoteVerifier, ProofFile};
use serde_json::{Value, json};

use super::events::read_public_keys;
use crate::cli::{GlobalArgs, OutputFormat, ProofCommand, ProofVerifyArgs};
use crate::error::CliError;
use crate::output::write_json;

/// Largest proof or event file read: an event is at most 16 KiB, a proof at most 64 hashes and
/// a note; anything far larger is not one.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Runs one `proof` subcommand.
///
/// # Errors
/// [`CliError::Proof`] when the proof does not hold; file and usage errors.
pub fn run(command: ProofCommand, global: &GlobalArgs, out: &mut dyn Write) -> Result<(), CliError> {
    match command {
        ProofCommand::Verify(args) => verify(&args, global, out),
    }
}

fn verify(args: &ProofVerifyArgs, global: &GlobalArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let keys = read_public_keys(&args.public_key)?.unwrap_or_default();
    let text = String::from_utf8(read_bounded(&args.file)?)
        .map_err(|_| CliError::Proof(format!("{} is not text", args.file.display())))?;
    let broken = |err: qtrail_tlog::Error| CliError::Proof(format!("{}: {err}", args.file.display()));
    let proof = ProofFile::parse(&text).map_err(broken)?;
    let origin = proof.checkpoint.lines().next().unwrap_or_default();
    if let Some(location) = &global.location
        && origin.rsplit_once('/').is_none_or(|(_, log)| log != location)
    {
        return Err(CliError::Proof(format!("the proof is of the log `{origin}`, not of location {location}")));
    }
    let verifiers =
        keys.iter().map(|key| NoteVerifier::new(origin, key.raw())).collect::<Result<Vec<_>, _>>().map_err(broken)?;
    let head = proof.verify(&verifiers).map_err(broken)?;
    let leaf = proof.extra.unwrap_or_default();
    let matched = match &args.event {
        Some(path) => {
            check_event(path, &leaf)?;
            Some(path.display().to_string())
        }
        None => None,
    };
    let summary: Value = serde_json::from_slice(&leaf).unwrap_or(Value::Null);
    let field = |name: &str| summary[name].as_str().unwrap_or_default().to_owned();
    match global.output {
        OutputFormat::Json => write_json(
            out,
            &json!({
                "ok": true, "origin": head.origin, "treeSize": head.size, "root": hex::encode(head.root),
                "leafIndex": proof.index, "locationSeq": proof.index + 1, "eventId": field("id"),
                "action": field("action"), "eventTime": field("eventTime"), "eventFile": matched,
            }),
        )?,
        OutputFormat::Table => {
            writeln!(
                out,
                "proof ok: event {} ({} at {}) is at seq {} of {}, in the signed tree of {} leaves (root {})",
                field("id"),
                field("action"),
                field("eventTime"),
                proof.index + 1,
                head.origin,
                head.size,
                hex::encode(head.root)
            )?;
            if let Some(path) = matched {
                writeln!(out, "event ok: {path} is that event")?;
            }
        }
    }
    Ok(())
}

/// Checks that the event in `path` is the proved leaf: its bytes are the canonical bytes, or it
/// is CADF JSON or AT-JSON whose canonical bytes are.
///
/// # Errors
/// [`CliError::Proof`] when it is another event; [`CliError::Usage`] when it is no event.
fn check_event(path: &Path, leaf: &[u8]) -> Result<(), CliError> {
    let bytes = read_bounded(path)?;
    let trimmed = bytes.trim_ascii_end();
    if trimmed == leaf {
        return Ok(());
    }
    let text = std::str::from_utf8(trimmed)
        .map_err(|_| CliError::Usage(format!("--event {}: not UTF-8 text", path.display())))?;
    let event = cadf_json::from_str(text).or_else(|cadf| {
        at_json::from_str(text).map_err(|at| {
            CliError::Usage(format!(
                "--event {}: neither CADF JSON ({cadf}) nor Activity Tracker JSON ({at})",
                path.display()
            ))
        })
    })?;
    if canonical_bytes(&event) != leaf {
        return Err(CliError::Proof(format!(
            "the event in {} (id {}) is not the event the proof proves",
            path.display(),
            event.id
        )));
    }
    Ok(())
}

/// Reads a file of at most [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, CliError> {
    let file_error = |source| CliError::File { path: path.display().to_string(), source };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(file_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(CliError::Usage(format!("{}: larger than {MAX_FILE_BYTES} bytes", path.display())));
    }
    Ok(bytes)
}
