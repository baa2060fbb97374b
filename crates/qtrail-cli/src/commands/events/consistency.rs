//! `qtrail events verify --checkpoint FILE`: a tree head note kept out of band, checked against
//! the collector's newest one with an RFC 6962 consistency proof, so that the log need not be
//! re-read: O(log n) hashes instead of every event.

use std::io::Write;
use std::path::Path;

use qtrail_cadf::checkpoint::VerifyingKey;
use qtrail_proto::qtrail::audit::v1::event_query_client::EventQueryClient;
use qtrail_proto::qtrail::audit::v1::{GetConsistencyProofRequest, ListCheckpointsRequest};
use qtrail_tlog::{Checkpoint as TreeHead, Hash, NoteVerifier, open_note, verify_consistency};
use serde_json::json;
use tonic::transport::Channel;

use crate::cli::OutputFormat;
use crate::connect::authorized;
use crate::error::CliError;
use crate::output::write_json;

/// Opens a tree head note of `location` signed by one of `keys`; returns its verifier and head.
/// Its origin must be exactly `<prefix>/<location>` with a prefix the collector accepts
/// (non-empty, no space or `+`), and the same in its text and its signature's key name.
pub(super) fn open_head(note: &str, location: &str, keys: &[VerifyingKey]) -> Result<(NoteVerifier, TreeHead), String> {
    let origin = note.lines().next().unwrap_or_default();
    let prefix = origin.strip_suffix(location).and_then(|prefix| prefix.strip_suffix('/'));
    if prefix.is_none_or(|prefix| prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c == '+')) {
        return Err(format!("its origin `{origin}` is not `<prefix>/{location}`"));
    }
    let mut last_error = "no --public-key given".to_owned();
    for key in keys {
        let verifier = NoteVerifier::new(origin, key.raw()).map_err(|err| err.to_string())?;
        match open_note(note, std::slice::from_ref(&verifier)) {
            Ok(text) => {
                let head = TreeHead::parse(text).map_err(|err| err.to_string())?;
                return Ok((verifier, head));
            }
            Err(err) => last_error = err.to_string(),
        }
    }
    Err(last_error)
}

/// Returns the note of the newest checkpoint of `location`, empty when there is none.
async fn newest_note(client: &mut EventQueryClient<Channel>, token: &str, location: &str) -> Result<String, CliError> {
    let request = ListCheckpointsRequest { location: location.to_owned(), page_size: 1, before_number: 0 };
    let listed = client.list_checkpoints(authorized(request, token)?).await?.into_inner();
    Ok(listed.checkpoints.into_iter().next().map(|checkpoint| checkpoint.note).unwrap_or_default())
}

/// The verdict on a log whose newest signed head is smaller than the kept one.
fn cut_short(location: &str, newest: u64, kept: u64) -> CliError {
    CliError::Checkpoint {
        location: location.to_owned(),
        detail: format!(
            "the log no longer reaches the kept tree head: the newest has {newest} leaves, the kept one {kept}"
        ),
    }
}

/// Checks the kept note in `path` against the newest tree head of `location`.
///
/// # Errors
/// [`CliError::Checkpoint`] when the kept note is not signed by a key given, or the newest head
/// does not extend it; file, usage and RPC errors.
pub(super) async fn check_kept_note(
    client: &mut EventQueryClient<Channel>,
    token: &str,
    location: &str,
    keys: &[VerifyingKey],
    path: &Path,
    output: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let note =
        std::fs::read_to_string(path).map_err(|source| CliError::File { path: path.display().to_string(), source })?;
    let broken = |detail: String| CliError::Checkpoint { location: location.to_owned(), detail };
    let (_, kept) = open_head(&note, location, keys)
        .map_err(|why| broken(format!("the kept tree head {}: {why}", path.display())))?;
    if kept.size == 0 {
        return Err(CliError::Usage(format!("--checkpoint {}: the kept tree head is empty", path.display())));
    }
    // The newest head must be of the same log, signed by any key given: the collector's key
    // may have been rotated since the kept head was signed.
    let verifiers = keys
        .iter()
        .map(|key| NoteVerifier::new(&kept.origin, key.raw()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| broken(format!("the kept tree head {}: {err}", path.display())))?;
    let request = GetConsistencyProofRequest { location: location.to_owned(), old_size: kept.size };
    let answer = match client.get_consistency_proof(authorized(request, token)?).await {
        Ok(answer) => answer.into_inner(),
        // Refused for a kept size past the newest head: whether the log was cut is for the
        // newest signed note to say, not for the refusal's words.
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            let newest = newest_note(client, token, location).await?;
            let newest = open_note(&newest, &verifiers)
                .and_then(TreeHead::parse)
                .map_err(|err| broken(format!("the newest tree head: {err}")))?;
            if newest.size < kept.size {
                return Err(cut_short(location, newest.size, kept.size));
            }
            return Err(status.into());
        }
        Err(status) => return Err(status.into()),
    };
    let newest = open_note(&answer.note, &verifiers)
        .and_then(TreeHead::parse)
        .map_err(|err| broken(format!("the newest tree head: {err}")))?;
    if newest.origin != kept.origin {
        return Err(broken(format!(
            "the newest tree head is of the log `{}`, the kept one of `{}`",
            newest.origin, kept.origin
        )));
    }
    if newest.size < kept.size {
        return Err(cut_short(location, newest.size, kept.size));
    }
    let proof: Vec<Hash> = answer.proof.iter().filter_map(|hash| Hash::try_from(hash.as_slice()).ok()).collect();
    if proof.len() != answer.proof.len() || answer.tree_size != newest.size {
        return Err(broken("the collector answered a malformed proof".to_owned()));
    }
    verify_consistency(kept.size, newest.size, &kept.root, &newest.root, &proof).map_err(|_| {
        broken(format!(
            "the newest tree head ({} leaves) does not extend the kept one ({} leaves): the log was rewritten",
            newest.size, kept.size
        ))
    })?;
    match output {
        OutputFormat::Json => write_json(
            out,
            &json!({
                "location": location, "ok": true, "keptSize": kept.size,
                "newestSize": newest.size, "newestRoot": hex::encode(newest.root), "proofHashes": proof.len(),
            }),
        )?,
        OutputFormat::Table => writeln!(
            out,
            "tree ok: the newest tree head of {location} ({} leaves, root {}) extends the kept one ({} leaves)",
            newest.size,
            hex::encode(newest.root),
            kept.size
        )?,
    }
    Ok(())
}
