//! `qtrail events verify`: the location's hash chain re-derived by the collector, checked
//! against a head or checkpoints the auditor kept.

use std::io::Write;

use qtrail_proto::qtrail::audit::v1::{ChainFaultKind, VerifyChainRequest};
use serde_json::json;

use super::checkpoints::{check_kept_checkpoint, key_ids, read_public_keys, verify_all_checkpoints};
use super::consistency::check_kept_note;
use super::witnesses::Quorum;
use super::{Session, chain_end, fault_kind, seq_range};
use crate::cli::{EventVerifyArgs, OutputFormat};
use crate::connect::authorized;
use crate::error::CliError;
use crate::output::write_json;

/// Verifies the chain over `args`'s range, and the checkpoints with `--public-key`.
///
/// # Errors
/// [`CliError::ChainBroken`], [`CliError::ChainShort`], [`CliError::HeadMismatch`] or
/// [`CliError::Checkpoint`] when the chain or its evidence does not hold.
pub(super) async fn verify(session: Session, args: EventVerifyArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, token, location, output } = session;
    let expected = expected_head(&args)?;
    let key = read_public_keys(&args.public_key)?;
    let quorum = Quorum::read(&args.witness_keys, args.witness_quorum)?;
    let cosigned = match (&quorum, &key) {
        (Some(quorum), Some(key)) => Some(quorum.check(&mut client, &token, &location, key).await?),
        _ => None,
    };
    if let (Some(path), Some(key)) = (&args.checkpoint, &key) {
        if let (OutputFormat::Table, Some(cosigned)) = (output, &cosigned) {
            writeln!(out, "{}", cosigned.line())?;
        }
        return check_kept_note(&mut client, &token, &location, key, path, output, out).await;
    }
    // Checked before the chain, which the server compares with these same checkpoints.
    let signed = match &key {
        Some(key) => Some(verify_all_checkpoints(&mut client, &token, &location, key).await?),
        None => None,
    };
    if let (Some(path), Some(key)) = (&args.expect_checkpoint, &key) {
        check_kept_checkpoint(&mut client, &token, &location, key, path).await?;
    }
    let request = VerifyChainRequest { location: location.clone(), range: Some(seq_range(&args.range)) };
    let result = match client.verify_chain(authorized(request, &token)?).await {
        Ok(result) => result.into_inner(),
        // A --to-seq past the chain's end: with a head kept for it, events were removed.
        Err(status) if status.code() == tonic::Code::InvalidArgument && expected.is_some() => {
            let end = chain_end(&mut client, &token, &location).await?;
            let expected_seq = args.range.to_seq.unwrap_or_default();
            if end < expected_seq {
                return Err(CliError::ChainShort { end, expected_seq });
            }
            return Err(status.into());
        }
        Err(status) => return Err(status.into()),
    };
    let fault = result.fault.clone().unwrap_or_default();
    let kind = fault_kind(fault.kind);
    match output {
        OutputFormat::Json => write_json(
            out,
            &json!({
                "location": location,
                "ok": result.ok,
                "checked": result.checked,
                "fromSeq": result.from_seq,
                "toSeq": result.to_seq,
                "headChainHash": hex::encode(&result.head_chain_hash),
                "expectedHead": expected.as_ref().map(hex::encode),
                "fault": result.fault.as_ref().map(|f| json!({
                    "locationSeq": f.location_seq, "kind": kind, "detail": f.detail,
                    "checkpointNumber": Some(f.checkpoint_number).filter(|&number| number > 0),
                })),
                "checkpoints": key.as_ref().map(|key| json!({
                    "keyIds": key_ids(key),
                    "verified": signed,
                    "matchedChain": result.checkpoints_checked,
                })),
                "witnesses": cosigned.as_ref().map(|cosigned| cosigned.json()),
            }),
        )?,
        OutputFormat::Table if result.ok && result.checked == 0 => {
            writeln!(out, "chain ok: no events in {location} yet")?
        }
        OutputFormat::Table if result.ok => writeln!(
            out,
            "chain ok: {} events checked in {location} (seq {}..{}), head {}",
            result.checked,
            result.from_seq,
            result.to_seq,
            hex::encode(&result.head_chain_hash)
        )?,
        OutputFormat::Table => {}
    }
    if let (OutputFormat::Table, true, Some(key), Some(signed)) = (output, result.ok, &key, signed) {
        writeln!(
            out,
            "checkpoints ok: {signed} signed by key {}, {} of them in this range matched the chain",
            key_ids(key).join(" or "),
            result.checkpoints_checked
        )?;
    }
    if let (OutputFormat::Table, true, Some(cosigned)) = (output, result.ok, &cosigned) {
        writeln!(out, "{}", cosigned.line())?;
    }
    if !result.ok && fault.kind() == ChainFaultKind::CheckpointDamaged {
        // The evidence, not the chain, is what failed: the detail names the entry.
        return Err(CliError::Checkpoint { location, detail: fault.detail });
    }
    if !result.ok {
        return Err(CliError::ChainBroken { seq: fault.location_seq, kind, detail: fault.detail });
    }
    if let Some(expected) = expected.filter(|expected| *expected != result.head_chain_hash) {
        return Err(CliError::HeadMismatch {
            seq: result.to_seq,
            found: hex::encode(&result.head_chain_hash),
            expected: hex::encode(expected),
        });
    }
    Ok(())
}

/// Returns the head `--expect-head` names, as bytes. It is compared with the head recomputed
/// from the first event: a range starting later trusts the stored hash before it, which a
/// rewrite of history would have changed too.
fn expected_head(args: &EventVerifyArgs) -> Result<Option<Vec<u8>>, CliError> {
    let Some(hex_head) = &args.expect_head else {
        return Ok(None);
    };
    if args.range.from_seq.is_some_and(|from| from > 1) {
        return Err(CliError::Usage(
            "--expect-head checks the chain from its first event: leave out --from-seq".into(),
        ));
    }
    match hex::decode(hex_head.trim()) {
        Ok(head) if head.len() == 32 => Ok(Some(head)),
        _ => Err(CliError::Usage(format!(
            "--expect-head must be a SHA-256 hash in hex (64 characters), not `{hex_head}`"
        ))),
    }
}
