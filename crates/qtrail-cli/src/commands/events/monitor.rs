//! `qtrail events monitor`: a log monitor in the transparency-log sense. It polls the location's
//! newest signed tree head, checks its signature with a key kept out of band, and checks that it
//! extends the last head it saw (an RFC 6962 consistency proof), which it keeps as the note
//! itself in `--state` (written atomically, so a crash leaves the old head or the new one). A
//! smaller tree than seen is a rollback, a tree that does not extend the one seen (or one of the
//! same size with another root) a fork: either is printed, posted to `--webhook` as a signed
//! CloudEvent, kept beside the state as evidence, and ends the monitor with exit 10.
//!
//! Memory stays constant: one note and one proof at a time, whatever the log's size.

use std::io::Write;
use std::path::Path;

use qtrail_cadf::checkpoint::VerifyingKey;
use qtrail_proto::qtrail::audit::v1::event_query_client::EventQueryClient;
use qtrail_proto::qtrail::audit::v1::{GetConsistencyProofRequest, ListCheckpointsRequest};
use qtrail_tlog::{Checkpoint as TreeHead, Hash, verify_consistency};
use serde_json::json;
use tonic::transport::Channel;

use super::Session;
use super::consistency::open_head;
use super::read_public_keys;
use crate::cli::{EventMonitorArgs, OutputFormat};
use crate::connect::authorized;
use crate::error::CliError;
use crate::output::write_json_line;
use crate::up::write_private;

mod alarm;

/// What one poll found.
enum Verdict {
    /// No signed tree head yet.
    Waiting,
    /// The newest head, which extends the one seen before (if any).
    Consistent { newest: TreeHead, seen: Option<u64> },
    /// A fork or a rollback: the kind, what is wrong, and the offending note.
    Alarm { kind: &'static str, detail: String, note: String },
}

/// Polls until a fork or a rollback (exit 10), or once with `--once`.
///
/// # Errors
/// [`CliError::Checkpoint`] on a fork, a rollback or a note that is not the key's; usage, file
/// and (with `--once`) RPC errors.
pub(super) async fn monitor(session: Session, args: EventMonitorArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Session { mut client, token, location, output } = session;
    let keys = read_public_keys(&args.public_key)?.unwrap_or_default();
    let alarm = args.webhook.as_deref().map(|url| alarm::Webhook::new(url, args.secret.as_ref())).transpose()?;
    std::fs::create_dir_all(&args.state)
        .map_err(|source| CliError::File { path: args.state.display().to_string(), source })?;
    let state = args.state.join(format!("{location}.checkpoint"));
    let mut ticker = tokio::time::interval(args.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let verdict = match poll(&mut client, &token, &location, &keys, &state).await {
            Ok(verdict) => verdict,
            // A collector that is briefly away is not evidence of anything: poll again.
            Err(CliError::Rpc(status)) if !args.once => {
                eprintln!("warning: cannot poll {location}: {}", CliError::Rpc(status));
                continue;
            }
            Err(err) => return Err(err),
        };
        report(&verdict, &location, output, out)?;
        if let Verdict::Alarm { kind, detail, note } = verdict {
            let evidence = args.state.join(format!("{location}.{kind}"));
            write_private(&evidence, note.as_bytes())?;
            if let Some(alarm) = &alarm {
                let seen = std::fs::read_to_string(&state).unwrap_or_default();
                alarm.post(kind, &location, &detail, &seen, &note).await;
            }
            return Err(CliError::Checkpoint { location, detail: format!("{kind}: {detail}") });
        }
        if args.once {
            return Ok(());
        }
    }
}

/// Polls once: the newest head, checked against the one kept in `state`, which it replaces
/// when consistent. The newest head is read first and a proof asked for only when it is larger,
/// so that a smaller or equal head is judged on the notes alone.
async fn poll(
    client: &mut EventQueryClient<Channel>,
    token: &str,
    location: &str,
    keys: &[VerifyingKey],
    state: &Path,
) -> Result<Verdict, CliError> {
    let seen = read_seen(state, location, keys)?;
    let mut note = newest_note(client, token, location).await?;
    if note.is_empty() {
        return Ok(match seen {
            None => Verdict::Waiting,
            Some(seen) => Verdict::Alarm {
                kind: "rollback",
                detail: format!("the log has no signed tree head any more; one of {} leaves was seen", seen.size),
                note,
            },
        });
    }
    let mut proof = Vec::new();
    let mut newest = match open_head(&note, location, keys) {
        Ok((_, newest)) => newest,
        Err(why) => return Ok(not_the_keys(&why, note)),
    };
    if let Some(seen) = seen.as_ref().filter(|seen| newest.size > seen.size) {
        let request = GetConsistencyProofRequest { location: location.to_owned(), old_size: seen.size };
        let answer = client.get_consistency_proof(authorized(request, token)?).await?.into_inner();
        // The answer's head is the newest then, which may have grown since the list.
        newest = match open_head(&answer.note, location, keys) {
            Ok((_, newest)) => newest,
            Err(why) => return Ok(not_the_keys(&why, answer.note)),
        };
        (note, proof) = (answer.note, answer.proof);
    }
    if let Some((kind, detail)) = judge(seen.as_ref(), &newest, &proof) {
        return Ok(Verdict::Alarm { kind, detail, note });
    }
    if seen.as_ref().is_none_or(|seen| seen.size != newest.size) {
        write_private(state, note.as_bytes())?;
    }
    Ok(Verdict::Consistent { seen: seen.map(|seen| seen.size), newest })
}

/// The alarm for a newest head that the key did not sign (or not under the location's origin):
/// the collector serves a head its own key does not vouch for.
fn not_the_keys(why: &str, note: String) -> Verdict {
    Verdict::Alarm { kind: "fork", detail: format!("the newest tree head is not the key's: {why}"), note }
}

/// Compares the newest head with the one seen: `None` when it extends it, else the alarm.
fn judge(seen: Option<&TreeHead>, newest: &TreeHead, proof: &[Vec<u8>]) -> Option<(&'static str, String)> {
    let seen = seen?;
    if newest.size < seen.size {
        let detail = format!(
            "the newest signed tree head has {} leaves, fewer than the {} seen before: the log was cut back",
            newest.size, seen.size
        );
        return Some(("rollback", detail));
    }
    let proof: Option<Vec<Hash>> = proof.iter().map(|hash| Hash::try_from(hash.as_slice()).ok()).collect();
    let consistent =
        proof.is_some_and(|proof| verify_consistency(seen.size, newest.size, &seen.root, &newest.root, &proof).is_ok());
    (!consistent).then(|| {
        let detail = if newest.size == seen.size {
            format!("two signed tree heads of {} leaves have different roots", newest.size)
        } else {
            format!(
                "the newest signed tree head ({} leaves) does not extend the one seen ({} leaves): the log was rewritten",
                newest.size, seen.size
            )
        };
        ("fork", detail)
    })
}

/// Returns the head kept in `state`, checked like any other (a state file edited by someone
/// else must not become the reference).
fn read_seen(state: &Path, location: &str, keys: &[VerifyingKey]) -> Result<Option<TreeHead>, CliError> {
    let note = match std::fs::read_to_string(state) {
        Ok(note) => note,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CliError::File { path: state.display().to_string(), source }),
    };
    let (_, head) = open_head(&note, location, keys).map_err(|why| CliError::Checkpoint {
        location: location.to_owned(),
        detail: format!("the kept tree head {}: {why}", state.display()),
    })?;
    Ok(Some(head))
}

/// Returns the newest checkpoint's note, empty when none is signed yet.
async fn newest_note(client: &mut EventQueryClient<Channel>, token: &str, location: &str) -> Result<String, CliError> {
    let request = ListCheckpointsRequest { location: location.to_owned(), page_size: 1, before_number: 0 };
    let listed = client.list_checkpoints(authorized(request, token)?).await?.into_inner();
    Ok(listed.checkpoints.into_iter().next().map(|checkpoint| checkpoint.note).unwrap_or_default())
}

/// Prints one poll's verdict as a line (table) or a JSON line.
fn report(verdict: &Verdict, location: &str, output: OutputFormat, out: &mut dyn Write) -> Result<(), CliError> {
    let (line, value) = match verdict {
        Verdict::Waiting => (
            format!("{location}: no signed tree head yet"),
            json!({"location": location, "ok": true, "treeSize": null}),
        ),
        Verdict::Consistent { newest, seen } => (
            match seen {
                Some(seen) => format!(
                    "{location}: tree head ok: {} leaves, root {}, extends the {seen} seen before",
                    newest.size,
                    hex::encode(newest.root)
                ),
                None => format!(
                    "{location}: tree head ok: {} leaves, root {} (first seen)",
                    newest.size,
                    hex::encode(newest.root)
                ),
            },
            json!({"location": location, "ok": true, "treeSize": newest.size, "root": hex::encode(newest.root), "seenSize": seen}),
        ),
        Verdict::Alarm { kind, detail, .. } => (
            format!("{location}: {kind}: {detail}"),
            json!({"location": location, "ok": false, "alarm": kind, "detail": detail}),
        ),
    };
    match output {
        OutputFormat::Json => write_json_line(out, &value)?,
        OutputFormat::Table => writeln!(out, "{line}")?,
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use qtrail_tlog::{leaf_hash, node_hash};

    use super::*;

    fn head(size: u64, root: Hash) -> TreeHead {
        TreeHead { origin: "qtrail.local/us-east".into(), size, root, extensions: Vec::new() }
    }

    #[test]
    fn heads_are_judged_against_the_one_seen() {
        let (a, b, c) = (leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c"));
        let one = head(1, a);
        let two = head(2, node_hash(&a, &b));
        let other_two = head(2, node_hash(&a, &c));
        // First sight, the same head again, and a head that extends it with its proof.
        assert_eq!(judge(None, &two, &[]), None);
        assert_eq!(judge(Some(&two), &two, &[]), None);
        assert_eq!(judge(Some(&one), &two, &[b.to_vec()]), None);
        // Smaller: a rollback; same size, other root, or a proof that does not connect: a fork.
        assert_eq!(judge(Some(&two), &one, &[]).map(|(kind, _)| kind), Some("rollback"));
        let same_size = judge(Some(&two), &other_two, &[]).unwrap();
        assert_eq!(same_size.0, "fork");
        assert!(same_size.1.contains("different roots"), "{}", same_size.1);
        let unconnected = judge(Some(&one), &other_two, &[b.to_vec()]).unwrap();
        assert!(unconnected.0 == "fork" && unconnected.1.contains("does not extend"), "{}", unconnected.1);
        assert_eq!(judge(Some(&one), &two, &[vec![0; 31]]).map(|(kind, _)| kind), Some("fork"));
    }
}
