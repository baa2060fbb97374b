//! `qtrail events prove`: asks the collector for one event's inclusion proof in a signed tree
//! head and writes it as a C2SP tlog-proof file whose `extra` line is the event's canonical
//! bytes, so that the file alone proves the event to anyone holding the checkpoint public key
//! (`qtrail proof verify`).

use std::io::Write;

use qtrail_proto::qtrail::audit::v1::GetInclusionProofRequest;
use qtrail_proto::qtrail::audit::v1::get_inclusion_proof_request::Leaf;
use qtrail_tlog::{Hash, ProofFile};
use serde_json::json;

use super::Session;
use crate::cli::{EventProveArgs, OutputFormat};
use crate::connect::authorized;
use crate::error::CliError;
use crate::output::write_json;
use crate::up::write_private;

/// Writes the proof of the event `args` selects to `args.output_file`.
///
/// # Errors
/// RPC errors (NOT_FOUND for no such event, FAILED_PRECONDITION before a checkpoint covers it);
/// [`CliError::Proof`] for a malformed answer; file errors.
pub(super) async fn prove(session: Session, args: EventProveArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, token, location, output } = session;
    let leaf = match (args.correlation_id, args.event_id, args.seq) {
        (Some(id), None, None) => Leaf::CorrelationId(id),
        (None, Some(id), None) => Leaf::EventId(id),
        (None, None, Some(seq)) => Leaf::LeafIndex(seq - 1),
        _ => return Err(CliError::Usage("give one of --correlation-id, --event-id or --seq".into())),
    };
    let request = GetInclusionProofRequest {
        location: location.clone(),
        leaf: Some(leaf),
        tree_size: args.tree_size.unwrap_or(0),
    };
    let answer = client.get_inclusion_proof(authorized(request, &token)?).await?.into_inner();
    let proof = answer
        .proof
        .iter()
        .map(|hash| Hash::try_from(hash.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| CliError::Proof("the collector answered a proof hash that is not 32 bytes".into()))?;
    let hashes = proof.len();
    let file = ProofFile { extra: Some(answer.leaf), index: answer.leaf_index, proof, checkpoint: answer.note };
    write_private(&args.output_file, file.encode().as_bytes())?;
    let path = args.output_file.display();
    match output {
        OutputFormat::Json => write_json(
            out,
            &json!({
                "location": location, "file": path.to_string(), "locationSeq": answer.leaf_index + 1,
                "leafIndex": answer.leaf_index, "treeSize": answer.tree_size, "proofHashes": hashes,
            }),
        )?,
        OutputFormat::Table => writeln!(
            out,
            "proof written to {path}: the event at seq {} of {location} is in the signed tree of {} leaves",
            answer.leaf_index + 1,
            answer.tree_size
        )?,
    }
    Ok(())
}
