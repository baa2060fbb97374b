//! Offline proofs end to end: `qtrail events prove` (by seq, event id and correlation id) writes
//! a C2SP tlog-proof that `qtrail proof verify` accepts with the checkpoint public key alone, and
//! with the event's CADF JSON or AT-JSON; a forged hash, a changed event in `extra`, another key
//! or another `--event` exit 10; bad selectors exit with their RPC codes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use qtrail_cadf::checkpoint::{SigningKey, VerifyingKey};
use serde_json::Value;

use crate::tlog_interop::{checkpoint_covering, make_events};
use crate::up::{Output, Up};

const KEY: &str = "data/checkpoint-key.pub.pem";

/// `qtrail proof verify FILE --public-key KEY [extra args]`, with JSON output.
fn verify(up: &Up, file: &str, extra: &[&str]) -> Output {
    let mut args = vec!["--output", "json", "proof", "verify", file, "--public-key", KEY];
    args.extend_from_slice(extra);
    up.qtrail(&args)
}

/// Proves the event `selector` names into `file` (relative to the up directory).
fn prove(up: &Up, selector: &[&str], file: &str) -> Value {
    let mut args = vec!["--output", "json", "events", "prove", "-o", file];
    args.extend_from_slice(selector);
    let proved = up.qtrail(&args);
    assert_eq!(proved.code, 0, "{proved:?}");
    proved.json()
}

/// Writes the proof file `from` as `to`, its line `number` (0: the header) given to `change`.
fn alter(up: &Up, from: &str, to: &str, number: usize, change: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(up.data_dir().join(from)).unwrap();
    let lines: Vec<String> = text
        .split('\n')
        .enumerate()
        .map(|(at, line)| if at == number { change(line) } else { line.to_owned() })
        .collect();
    std::fs::write(up.data_dir().join(to), lines.join("\n")).unwrap();
}

/// Returns line `number` of the proof file `name`.
fn line(up: &Up, name: &str, number: usize) -> String {
    std::fs::read_to_string(up.data_dir().join(name)).unwrap().lines().nth(number).unwrap().to_owned()
}

fn assert_refused(output: &Output, why: &str) {
    assert_eq!(output.code, 10, "{output:?}");
    assert!(output.stderr.contains("proof does not hold") && output.stderr.contains(why), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_file_proves_its_event_offline() {
    let up = Up::start().await;
    make_events(&up, 4);
    let listed = up.qtrail(&["--output", "json", "events", "query", "--oldest-first"]);
    assert_eq!(listed.code, 0, "{listed:?}");
    let events = listed.json()["events"].as_array().unwrap().clone();
    checkpoint_covering(&up, events.len() as u64).await;
    let second = &events[1]["event"];
    let (id, correlation) = (second["id"].as_str().unwrap(), events[2]["event"]["correlationId"].as_str().unwrap());

    // Each selector proves its event, which the offline check names.
    let by_seq = prove(&up, &["--seq", "2"], "data/seq.tlog-proof");
    assert_eq!((by_seq["locationSeq"].as_u64(), by_seq["leafIndex"].as_u64()), (Some(2), Some(1)), "{by_seq}");
    let checked = verify(&up, "data/seq.tlog-proof", &[]);
    assert_eq!(checked.code, 0, "{checked:?}");
    let verdict = checked.json();
    assert_eq!((verdict["ok"].as_bool(), verdict["eventId"].as_str()), (Some(true), Some(id)), "{verdict}");
    assert_eq!(verdict["origin"], format!("qtrail.local/{}", up.field("location")));
    assert_eq!(prove(&up, &["--event-id", id], "data/id.tlog-proof")["leafIndex"], 1);
    assert_eq!(verify(&up, "data/id.tlog-proof", &[]).code, 0);
    assert_eq!(prove(&up, &["--correlation-id", correlation], "data/corr.tlog-proof")["leafIndex"], 2);
    assert_eq!(verify(&up, "data/corr.tlog-proof", &[]).code, 0);

    // The event itself, as CADF JSON (exported) or AT-JSON (queried), is the proved leaf.
    let exported = up.qtrail(&["events", "export", "--format", "cadf-json", "--from-seq", "2", "--to-seq", "2"]);
    assert_eq!(exported.code, 0, "{exported:?}");
    std::fs::write(up.data_dir().join("event.cadf.json"), &exported.stdout).unwrap();
    let with_cadf = verify(&up, "data/seq.tlog-proof", &["--event", "data/event.cadf.json"]);
    assert_eq!(with_cadf.code, 0, "{with_cadf:?}");
    assert_eq!(with_cadf.json()["eventFile"], "data/event.cadf.json");
    std::fs::write(up.data_dir().join("event.at.json"), second.to_string()).unwrap();
    assert_eq!(verify(&up, "data/seq.tlog-proof", &["--event", "data/event.at.json"]).code, 0);
    let table = up.qtrail(&["proof", "verify", "data/seq.tlog-proof", "--public-key", KEY]);
    assert!(table.code == 0 && table.stdout.starts_with(&format!("proof ok: event {id} ")), "{table:?}");

    // Another event given; the proof's event changed; a proof hash flipped; another key.
    std::fs::write(up.data_dir().join("other.at.json"), events[2]["event"].to_string()).unwrap();
    assert_refused(&verify(&up, "data/seq.tlog-proof", &["--event", "data/other.at.json"]), "is not the event");
    // Line 1 is `extra`, 2 `index`, 3 the leaf's sibling hash.
    assert!(line(&up, "seq.tlog-proof", 1).starts_with("extra ") && line(&up, "seq.tlog-proof", 2) == "index 1");
    let other_extra = line(&up, "corr.tlog-proof", 1);
    alter(&up, "seq.tlog-proof", "swapped.tlog-proof", 1, |_| other_extra.clone());
    assert_refused(&verify(&up, "data/swapped.tlog-proof", &[]), "invalid inclusion proof");
    alter(&up, "seq.tlog-proof", "flipped.tlog-proof", 3, |hash_line| {
        let mut hash = BASE64.decode(hash_line).unwrap();
        hash[0] ^= 1;
        BASE64.encode(hash)
    });
    assert_refused(&verify(&up, "data/flipped.tlog-proof", &[]), "invalid inclusion proof");
    let stranger = SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap();
    assert!(VerifyingKey::from_pem(stranger.public_pem().as_bytes()).is_ok());
    std::fs::write(up.data_dir().join("stranger.pub.pem"), stranger.public_pem()).unwrap();
    let other_key = up.qtrail(&["proof", "verify", "data/seq.tlog-proof", "--public-key", "data/stranger.pub.pem"]);
    assert_refused(&other_key, "no signature by a known key");
    std::fs::write(up.data_dir().join("junk.tlog-proof"), "not a proof\n").unwrap();
    assert_refused(&verify(&up, "data/junk.tlog-proof", &[]), "malformed tlog-proof");

    // Bad selectors: refused by the collector with their codes, or by the command line.
    let prove_exit = |selector: &[&str]| {
        let mut args = vec!["events", "prove", "-o", "data/x.tlog-proof"];
        args.extend_from_slice(selector);
        up.qtrail(&args).code
    };
    assert_eq!(prove_exit(&["--event-id", "not-a-uuid"]), 6);
    assert_eq!(prove_exit(&["--seq", "1000000"]), 3);
    assert_eq!(prove_exit(&["--correlation-id", "nobody-has-this"]), 3);
    assert_eq!(prove_exit(&[]), 2);
    assert_eq!(prove_exit(&["--seq", "1", "--event-id", id]), 2);
    assert!(!up.data_dir().join("x.tlog-proof").exists());
}
