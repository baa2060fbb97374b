//! `qtrail events checkpoints`: the collector's signed checkpoints of the chain head, checked
//! with the auditor's public keys; and the checkpoint checks `events verify` makes.

use std::io::Write;
use std::path::Path;

use qtrail_cadf::checkpoint::{VerifyingKey, signed_bytes};
use qtrail_proto::qtrail::audit::v1::{
    Checkpoint, ListCheckpointsRequest, SeqRange, VerifyChainRequest, event_query_client::EventQueryClient,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::consistency::open_head;
use super::{Session, chain_end, fault_kind};
use crate::cli::{EventCheckpointsArgs, OutputFormat};
use crate::connect::authorized;
use crate::error::CliError;
use crate::output::{Table, write_json};
use crate::timearg::format_time;

/// Lists the newest checkpoints, each checked with `--public-key` when given.
///
/// # Errors
/// [`CliError::Checkpoint`] when one is damaged or its signature does not hold.
pub(super) async fn checkpoints(
    session: Session,
    args: EventCheckpointsArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let Session { mut client, token, location, output } = session;
    let key = read_public_keys(&args.public_key)?;
    let request = ListCheckpointsRequest { location: location.clone(), page_size: args.limit, before_number: 0 };
    let listed = client.list_checkpoints(authorized(request, &token)?).await?.into_inner();
    let (checkpoints, damaged) = (listed.checkpoints, listed.damaged);
    let verdicts: Vec<Option<Result<(), String>>> =
        checkpoints.iter().map(|checkpoint| key.as_ref().map(|key| verify_one(checkpoint, &location, key))).collect();
    if output == OutputFormat::Json {
        let items: Vec<Value> = checkpoints
            .iter()
            .zip(&verdicts)
            .map(|(checkpoint, verdict)| {
                let mut item = checkpoint_json(checkpoint);
                if let Some(verdict) = verdict {
                    item["signatureOk"] = json!(verdict.is_ok());
                }
                item
            })
            .collect();
        let damaged: Vec<Value> =
            damaged.iter().map(|entry| json!({ "number": entry.number, "detail": entry.detail })).collect();
        write_json(out, &json!({ "location": location, "checkpoints": items, "damaged": damaged }))?;
    } else {
        let mut rows = Vec::new();
        for (checkpoint, verdict) in checkpoints.iter().zip(&verdicts) {
            rows.push((
                checkpoint.number,
                vec![
                    checkpoint.number.to_string(),
                    format_time(checkpoint.time.as_ref()),
                    checkpoint.location_seq.to_string(),
                    hex::encode(&checkpoint.head_chain_hash),
                    if checkpoint.note.is_empty() { "-".to_owned() } else { hex::encode(&checkpoint.root) },
                    checkpoint.key_id.clone(),
                    match verdict {
                        None => "unchecked".into(),
                        Some(Ok(())) => "ok".into(),
                        Some(Err(_)) => "BAD".into(),
                    },
                ],
            ));
        }
        // A damaged entry keeps its place in the list, so that what is wrong shows where.
        for entry in &damaged {
            let blank = || "-".to_owned();
            rows.push((
                entry.number,
                vec![entry.number.to_string(), blank(), blank(), blank(), blank(), blank(), "DAMAGED".into()],
            ));
        }
        rows.sort_by_key(|(number, _)| std::cmp::Reverse(*number));
        let mut table = Table::new(&["NUMBER", "TIME", "SEQ", "HEAD", "ROOT", "KEY", "SIGNATURE"]);
        for (_, row) in rows {
            table.row(row);
        }
        table.write(out)?;
    }
    let damage = damaged.into_iter().next().map(|entry| entry.detail);
    match damage.or_else(|| verdicts.into_iter().flatten().find_map(Result::err)) {
        Some(detail) => Err(CliError::Checkpoint { location, detail }),
        None => Ok(()),
    }
}

/// Reads the auditor's copies of the checkpoint public keys; `None` when none is given.
///
/// # Errors
/// [`CliError::File`] when one cannot be read; [`CliError::Usage`] when one holds no Ed25519
/// public key.
pub(crate) fn read_public_keys(paths: &[std::path::PathBuf]) -> Result<Option<Vec<VerifyingKey>>, CliError> {
    if paths.is_empty() {
        return Ok(None);
    }
    let read = |path: &std::path::PathBuf| {
        let pem = std::fs::read(path).map_err(|source| CliError::File { path: path.display().to_string(), source })?;
        VerifyingKey::from_pem(&pem).map_err(|err| CliError::Usage(format!("--public-key {}: {err}", path.display())))
    };
    paths.iter().map(read).collect::<Result<Vec<_>, _>>().map(Some)
}

/// Returns the ids of `keys`.
pub(super) fn key_ids(keys: &[VerifyingKey]) -> Vec<&str> {
    keys.iter().map(VerifyingKey::id).collect()
}

/// Reads every checkpoint of `location` and checks them with [`check_checkpoints`]; returns how
/// many there are.
///
/// # Errors
/// [`CliError::Checkpoint`] when they do not hold; RPC errors.
pub(super) async fn verify_all_checkpoints(
    client: &mut EventQueryClient<Channel>,
    token: &str,
    location: &str,
    key: &[VerifyingKey],
) -> Result<u64, CliError> {
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut before_number = 0;
    loop {
        let request = ListCheckpointsRequest { location: location.to_owned(), page_size: 1000, before_number };
        let page = client.list_checkpoints(authorized(request, token)?).await?.into_inner();
        if let Some(entry) = page.damaged.first() {
            return Err(CliError::Checkpoint { location: location.to_owned(), detail: entry.detail.clone() });
        }
        let Some(oldest) = page.checkpoints.last().map(|checkpoint| checkpoint.number) else {
            break;
        };
        checkpoints.extend(page.checkpoints);
        // Pages go down from the newest; numbers that did not go down would fetch the same page
        // for ever (check_checkpoints then reports them).
        if oldest <= 1 || (before_number != 0 && oldest >= before_number) {
            break;
        }
        before_number = oldest;
    }
    check_checkpoints(&checkpoints, location, key)
        .map_err(|detail| CliError::Checkpoint { location: location.to_owned(), detail })
}

/// Checks checkpoints of `location` listed newest first: at least one, each of that location
/// and signed by `key`, numbered densely down to 1, none without a tree head note after one
/// with (the v1 signature does not cover the note, so a blanked one would skip its check).
/// Returns how many there are, or what is wrong.
fn check_checkpoints(checkpoints: &[Checkpoint], location: &str, key: &[VerifyingKey]) -> Result<u64, String> {
    let Some(newest) = checkpoints.first() else {
        // Nothing signed proves nothing: a key given means checkpoints are expected.
        return Err("there are none: the collector signs none, or they were deleted".to_owned());
    };
    let mut expected = newest.number;
    let mut newer_without_note = None;
    for checkpoint in checkpoints {
        if checkpoint.number != expected {
            return Err(format!("checkpoint {expected} is missing (the next one is {})", checkpoint.number));
        }
        verify_one(checkpoint, location, key)?;
        match newer_without_note {
            Some(newer) if !checkpoint.note.is_empty() => {
                return Err(format!(
                    "checkpoint {newer} has no tree head note, but the older checkpoint {} has one",
                    checkpoint.number
                ));
            }
            None if checkpoint.note.is_empty() => newer_without_note = Some(checkpoint.number),
            _ => {}
        }
        expected = expected.saturating_sub(1);
    }
    match expected {
        0 => Ok(checkpoints.len() as u64),
        newest_missing => Err(format!("checkpoints 1 to {newest_missing} are missing")),
    }
}

/// Checks a checkpoint kept out of band (the JSON of `events checkpoints --output json`, whose
/// newest entry counts): signed by `key`, of `location`, still held by the collector unchanged,
/// and the chain from the first event leads to its head.
///
/// # Errors
/// [`CliError::Checkpoint`], [`CliError::ChainShort`], [`CliError::ChainBroken`] or
/// [`CliError::HeadMismatch`] when it does not hold; file, usage and RPC errors.
pub(super) async fn check_kept_checkpoint(
    client: &mut EventQueryClient<Channel>,
    token: &str,
    location: &str,
    key: &[VerifyingKey],
    path: &Path,
) -> Result<(), CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| CliError::File { path: path.display().to_string(), source })?;
    let kept = kept_checkpoint(&text)
        .map_err(|detail| CliError::Usage(format!("--expect-checkpoint {}: {detail}", path.display())))?;
    let broken = |detail: String| CliError::Checkpoint { location: location.to_owned(), detail };
    verify_one(&kept, location, key).map_err(|detail| broken(format!("the kept one: {detail}")))?;
    let request =
        ListCheckpointsRequest { location: location.to_owned(), page_size: 1, before_number: kept.number + 1 };
    let held = client.list_checkpoints(authorized(request, token)?).await?.into_inner();
    if let Some(entry) = held.damaged.first().filter(|entry| entry.number == kept.number) {
        return Err(broken(format!(
            "checkpoint {} kept out of band is damaged in the collector: {}",
            kept.number, entry.detail
        )));
    }
    let held = held.checkpoints;
    // Compared as signed (times to the millisecond, as the JSON keeps them).
    let same = |held: &Checkpoint| held.signature == kept.signature && signed_bytes(held) == signed_bytes(&kept);
    if !held.first().is_some_and(same) {
        return Err(broken(format!(
            "checkpoint {} kept out of band is gone from the collector or differs",
            kept.number
        )));
    }
    if kept.location_seq == 0 {
        return Ok(());
    }
    let end = chain_end(client, token, location).await?;
    if end < kept.location_seq {
        return Err(CliError::ChainShort { end, expected_seq: kept.location_seq });
    }
    let range = SeqRange { from_seq: 1, to_seq: kept.location_seq };
    let request = VerifyChainRequest { location: location.to_owned(), range: Some(range) };
    let result = client.verify_chain(authorized(request, token)?).await?.into_inner();
    if let Some(fault) = result.fault {
        return Err(CliError::ChainBroken {
            seq: fault.location_seq,
            kind: fault_kind(fault.kind),
            detail: fault.detail,
        });
    }
    if result.head_chain_hash != kept.head_chain_hash {
        return Err(CliError::HeadMismatch {
            seq: kept.location_seq,
            found: hex::encode(&result.head_chain_hash),
            expected: hex::encode(&kept.head_chain_hash),
        });
    }
    Ok(())
}

/// Reads the newest checkpoint of `events checkpoints --output json`.
fn kept_checkpoint(text: &str) -> Result<Checkpoint, String> {
    let listing: Value = serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
    let item = listing["checkpoints"].get(0).ok_or("no checkpoints in it")?;
    let field = |name: &str| item.get(name).ok_or_else(|| format!("no `{name}` in its checkpoint"));
    let number = |name: &str| field(name)?.as_u64().ok_or_else(|| format!("`{name}` is not a number"));
    let text = |name: &str| field(name)?.as_str().map(str::to_owned).ok_or_else(|| format!("`{name}` is not text"));
    let hex = |name: &str| hex::decode(text(name)?).map_err(|_| format!("`{name}` is not hex"));
    let time = chrono::DateTime::parse_from_rfc3339(&text("time")?).map_err(|_| "`time` is not RFC 3339")?;
    let time = prost_types::Timestamp { seconds: time.timestamp(), nanos: time.timestamp_subsec_nanos() as i32 };
    Ok(Checkpoint {
        location: listing["location"].as_str().ok_or("no `location`")?.to_owned(),
        number: number("number")?,
        location_seq: number("locationSeq")?,
        head_chain_hash: hex("headChainHash")?,
        time: Some(time),
        key_id: text("keyId")?,
        signature: hex("signature")?,
        // Absent from listings of checkpoints signed before the tree.
        note: item.get("note").and_then(Value::as_str).unwrap_or_default().to_owned(),
        tree_size: item.get("treeSize").and_then(Value::as_u64).unwrap_or_default(),
        root: item.get("root").and_then(Value::as_str).and_then(|root| hex::decode(root).ok()).unwrap_or_default(),
    })
}

/// Checks that one of `keys` (the one its key id names) signed `checkpoint`, and that it is of
/// `location`.
fn verify_one(checkpoint: &Checkpoint, location: &str, keys: &[VerifyingKey]) -> Result<(), String> {
    if checkpoint.location != location {
        return Err(format!("checkpoint {} is of location `{}`", checkpoint.number, checkpoint.location));
    }
    let Some(key) = keys.iter().find(|key| key.id() == checkpoint.key_id) else {
        return Err(format!(
            "checkpoint {} is signed by key {}, not by any key given ({})",
            checkpoint.number,
            checkpoint.key_id,
            key_ids(keys).join(", ")
        ));
    };
    key.verify(checkpoint).map_err(|err| err.to_string())?;
    verify_note(checkpoint, location, key)
}

/// Checks a checkpoint's tree head note, when it has one: signed by `key` under the origin of
/// `location`, and stating the size and root the checkpoint's fields repeat.
fn verify_note(checkpoint: &Checkpoint, location: &str, key: &VerifyingKey) -> Result<(), String> {
    if checkpoint.note.is_empty() {
        return Ok(());
    }
    let bad = |why: String| format!("checkpoint {} has a bad tree head note: {why}", checkpoint.number);
    let (_, head) = open_head(&checkpoint.note, location, std::slice::from_ref(key)).map_err(bad)?;
    if head.size != checkpoint.tree_size || head.size != checkpoint.location_seq || head.root[..] != checkpoint.root[..]
    {
        return Err(bad("it states another size or root than the checkpoint".to_owned()));
    }
    Ok(())
}

fn checkpoint_json(checkpoint: &Checkpoint) -> Value {
    json!({
        "number": checkpoint.number,
        "time": format_time(checkpoint.time.as_ref()),
        "locationSeq": checkpoint.location_seq,
        "headChainHash": hex::encode(&checkpoint.head_chain_hash),
        "keyId": checkpoint.key_id,
        "signature": hex::encode(&checkpoint.signature),
        "treeSize": checkpoint.tree_size,
        "root": hex::encode(&checkpoint.root),
        "note": checkpoint.note,
    })
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;
    use qtrail_cadf::checkpoint::SigningKey;
    use qtrail_tlog::Checkpoint as TreeHead;

    use super::*;

    fn signed(key: &SigningKey, numbers: &[u64]) -> Vec<Checkpoint> {
        numbers
            .iter()
            .map(|&number| {
                let mut checkpoint = Checkpoint {
                    location: "us-east".into(),
                    number,
                    location_seq: number,
                    head_chain_hash: vec![1; 32],
                    time: Some(Timestamp { seconds: 1_700_000_000, nanos: 0 }),
                    ..Default::default()
                };
                key.sign(&mut checkpoint);
                checkpoint
            })
            .collect()
    }

    /// What `events checkpoints --output json` writes reads back as the checkpoint it signed.
    #[test]
    fn a_listed_checkpoint_reads_back_as_signed() {
        let key = SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap();
        let public = [VerifyingKey::from_pem(key.public_pem().as_bytes()).unwrap()];
        let mut original = signed(&key, &[7]).remove(0);
        original.time = Some(Timestamp { seconds: 1_700_000_000, nanos: 123_456_789 });
        key.sign(&mut original);
        let listing = json!({ "location": "us-east", "checkpoints": [checkpoint_json(&original)] }).to_string();
        let kept = kept_checkpoint(&listing).unwrap();
        assert_eq!(signed_bytes(&kept), signed_bytes(&original));
        assert_eq!(verify_one(&kept, "us-east", &public), Ok(()));
        assert_eq!(kept_checkpoint("{}").unwrap_err(), "no checkpoints in it");
        let no_seq = listing.replace("locationSeq", "seq");
        assert_eq!(kept_checkpoint(&no_seq).unwrap_err(), "no `locationSeq` in its checkpoint");
    }

    /// A checkpoint's tree head note must be signed by the key, of the location, and state the
    /// size and root the checkpoint repeats.
    #[test]
    fn tree_head_notes_are_checked() {
        let key = SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap();
        let public = [VerifyingKey::from_pem(key.public_pem().as_bytes()).unwrap()];
        let with_note = |origin: &str, size: u64| {
            let mut checkpoint = signed(&key, &[7]).remove(0);
            let text = TreeHead { origin: origin.into(), size, root: [3; 32], extensions: vec![] }.to_text();
            let signer = qtrail_tlog::NoteSigner::new(origin, key.key_pair()).unwrap();
            checkpoint.note = qtrail_tlog::sign_note(&text, &signer).unwrap();
            (checkpoint.tree_size, checkpoint.root) = (7, vec![3; 32]);
            checkpoint
        };
        assert_eq!(verify_one(&with_note("qtrail.local/us-east", 7), "us-east", &public), Ok(()));
        let listing = json!({ "location": "us-east", "checkpoints": [checkpoint_json(&with_note("o/us-east", 7))] });
        assert_eq!(verify_one(&kept_checkpoint(&listing.to_string()).unwrap(), "us-east", &public), Ok(()));
        let wrong_size = verify_one(&with_note("o/us-east", 8), "us-east", &public).unwrap_err();
        assert!(wrong_size.contains("another size or root"), "{wrong_size}");
        let other_location = verify_one(&with_note("o/eu-de", 7), "us-east", &public).unwrap_err();
        assert!(other_location.contains("is not `<prefix>/us-east`"), "{other_location}");
        for origin in ["us-east", "/us-east", "o/xus-east"] {
            let bad = verify_one(&with_note(origin, 7), "us-east", &public).unwrap_err();
            assert!(bad.contains("is not `<prefix>/us-east`"), "{origin}: {bad}");
        }
        let mut tampered = with_note("o/us-east", 7);
        tampered.note = tampered.note.replacen("\n7\n", "\n6\n", 1);
        let bad = verify_one(&tampered, "us-east", &public).unwrap_err();
        assert!(bad.contains("invalid signature"), "{bad}");
        // Checkpoints signed before the tree have no note; one without after one with is a fault.
        let mut listed = signed(&key, &[3, 2, 1]);
        assert_eq!(check_checkpoints(&listed, "us-east", &public), Ok(3));
        let mut noted = with_note("o/us-east", 7);
        noted.number = 2;
        key.sign(&mut noted);
        listed[1] = noted.clone();
        assert_eq!(
            check_checkpoints(&listed, "us-east", &public),
            Err("checkpoint 3 has no tree head note, but the older checkpoint 2 has one".to_owned())
        );
        noted.number = 3;
        key.sign(&mut noted);
        listed[0] = noted;
        assert_eq!(check_checkpoints(&listed, "us-east", &public), Ok(3));
    }

    #[test]
    fn checkpoints_must_exist_be_signed_and_run_down_to_one() {
        let key = SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap();
        let public = [VerifyingKey::from_pem(key.public_pem().as_bytes()).unwrap()];
        assert_eq!(check_checkpoints(&signed(&key, &[3, 2, 1]), "us-east", &public), Ok(3));
        let none = check_checkpoints(&[], "us-east", &public).unwrap_err();
        assert!(none.starts_with("there are none"), "{none}");
        assert_eq!(
            check_checkpoints(&signed(&key, &[4, 2, 1]), "us-east", &public),
            Err("checkpoint 3 is missing (the next one is 2)".to_owned())
        );
        assert_eq!(
            check_checkpoints(&signed(&key, &[5, 4]), "us-east", &public),
            Err("checkpoints 1 to 3 are missing".to_owned())
        );
        let mut altered = signed(&key, &[2, 1]);
        altered[1].location_seq = 7;
        let bad = check_checkpoints(&altered, "us-east", &public).unwrap_err();
        assert!(bad.starts_with("checkpoint 1 has an invalid signature"), "{bad}");
        // Validly signed, but another location's.
        assert_eq!(
            check_checkpoints(&signed(&key, &[1]), "eu-de", &public),
            Err("checkpoint 1 is of location `us-east`".to_owned())
        );
        // A key rotated: the older checkpoints are signed by the older key, given too.
        let newer = SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap();
        let mut rotated = signed(&newer, &[4, 3]);
        rotated.extend(signed(&key, &[2, 1]));
        let unknown = check_checkpoints(&rotated, "us-east", &public).unwrap_err();
        assert!(unknown.starts_with(&format!("checkpoint 4 is signed by key {}, not by any key given", newer.id())));
        let both = [VerifyingKey::from_pem(newer.public_pem().as_bytes()).unwrap(), public[0].clone()];
        assert_eq!(check_checkpoints(&rotated, "us-east", &both), Ok(4));
    }
}
