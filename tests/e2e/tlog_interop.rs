//! Go's reference implementations, `golang.org/x/mod/sumdb/note` and `sumdb/tlog`, check the
//! transparency log a real `qtrail up` serves, over 600 leaves (full tiles at level 0, a tile at
//! level 1): the checkpoint note's signature with a verifier key computed from the PEM public
//! key (the served one must equal it), every tile through `tlog.TileHashReader` (which checks each against the signed
//! tree), inclusion proofs of served entries, a consistency proof from an older checkpoint, and
//! a C2SP tlog-proof file written by `qtrail events prove` (and refused once its event changes),
//! and the cosignature of the witness `qtrail up` runs (C2SP tlog-cosignature, checked with
//! `crypto/ed25519` from the spec).
//! The Go side is `tests/interop/tlog/main.go`, which shares no code with ours.
//!
//! Needs `go` and the Debian package `golang-golang-x-mod-dev` (GOPATH mode, no network);
//! `scripts/test` installs them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use qtrail_cadf::checkpoint::{SigningKey, VerifyingKey};
use qtrail_testkit::wait_until;
use qtrail_tlog::{Checkpoint as TreeHead, NoteSigner, NoteVerifier, sign_note};
use serde_json::Value;

use crate::up::Up;

/// Where `golang-golang-x-mod-dev` puts golang.org/x/mod, as a GOPATH.
const GOPATH: &str = "/usr/share/gocode";

/// Returns the newest checkpoint once it covers at least `size` leaves.
pub async fn checkpoint_covering(up: &Up, size: u64) -> Value {
    wait_until(&format!("a checkpoint of {size} leaves"), Duration::from_secs(60), || {
        let listed = up.qtrail(&["--output", "json", "events", "checkpoints", "--limit", "1"]);
        let newest = (listed.code == 0).then(|| listed.json()["checkpoints"][0].clone());
        std::future::ready(newest.filter(|checkpoint| checkpoint["treeSize"].as_u64() >= Some(size)))
    })
    .await
}

/// Makes `count` runtime calls, each one audit event, four at a time.
pub fn make_events(up: &Up, count: usize) {
    std::thread::scope(|scope| {
        for share in [count / 4 + count % 4, count / 4, count / 4, count / 4] {
            scope.spawn(move || {
                for _ in 0..share {
                    let listed = up.qtrail(&["programs", "list"]);
                    assert_eq!(listed.code, 0, "{listed:?}");
                }
            });
        }
    });
}

/// Returns the C2SP verifier key of `origin` computed from the PEM public key in `pem`: what an
/// auditor holds, not what the collector serves.
fn verifier_key(pem: &Path, origin: &str) -> String {
    let public = VerifyingKey::from_pem(&std::fs::read(pem).unwrap()).unwrap();
    NoteVerifier::new(origin, public.raw()).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_tlog_checks_the_served_log() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/tlog");
    assert!(
        Path::new(GOPATH).join("src/golang.org/x/mod/sumdb/tlog").is_dir(),
        "golang.org/x/mod is missing: apt-get install golang-go golang-golang-x-mod-dev (scripts/test does)"
    );
    let up = Up::start().await;
    // Enough leaves for full level-0 tiles and a level-1 tile, from an old size that is not a
    // multiple of 256 (its tree ends inside a tile).
    make_events(&up, 300);
    let old = checkpoint_covering(&up, 300).await;
    let old_size = old["treeSize"].as_u64().unwrap();
    assert_ne!(old_size % 256, 0, "the old tree ends inside a tile");
    let old_note = up.data_dir().join("old-checkpoint.note");
    std::fs::write(&old_note, old["note"].as_str().unwrap()).unwrap();
    make_events(&up, 320);
    let new_size = checkpoint_covering(&up, old_size + 320).await["treeSize"].as_u64().unwrap();
    assert!(new_size >= 620);

    let location = up.field("location");
    let origin = format!("qtrail.local/{location}");
    let vkey = verifier_key(&up.data_dir().join("checkpoint-key.pub.pem"), &origin);
    // A proof file of one event, as `qtrail events prove` writes it, checked by Go too.
    let proof_file = up.data_dir().join("event-300.tlog-proof");
    let proved = up.qtrail(&["events", "prove", "--seq", "300", "-o", proof_file.to_str().unwrap()]);
    assert_eq!(proved.code, 0, "{proved:?}");
    let cache = tempfile::tempdir().unwrap();
    let go = |args: &[&str]| {
        Command::new("go")
            .current_dir(&source)
            .env("GO111MODULE", "off")
            .env("GOPATH", GOPATH)
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "")
            .env("GOCACHE", cache.path())
            .args(["run", "."])
            .args(["-origin", &origin, "-vkey", &vkey])
            .args(args)
            .output()
            .expect("run go (apt-get install golang-go golang-golang-x-mod-dev; scripts/test does)")
    };
    let output = go(&[
        "-url",
        &format!("{}/tlog/{location}", up.field("console")),
        "-token",
        &up.field("auditor_token"),
        "-old-checkpoint",
        old_note.to_str().unwrap(),
        "-proof",
        proof_file.to_str().unwrap(),
        "-witness-vkey",
        &up.field("witness_key"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "go tlog refused the log: {stdout}{stderr}");
    assert!(stdout.contains("proof ok: index 299 in size "), "{stdout}");
    assert!(stdout.contains(&format!("checkpoint ok: qtrail.local/{location} size ")), "{stdout}");
    let bundles = new_size.div_ceil(256);
    assert!(stdout.contains(&format!("inclusion ok: {bundles} bundles, ")), "{stdout}");
    assert!(stdout.contains("tiles read: ") && stdout.contains("tile/1/000"), "a level-1 tile was read: {stdout}");
    assert!(stdout.contains(&format!("consistency ok: {old_size} -> ")), "{stdout}");
    assert!(stdout.contains("cosignature ok: qtrail.local/up-witness time "), "{stdout}");
    assert!(new_size > old_size);

    // Go refuses the same file with one bit of the event changed.
    let text = std::fs::read_to_string(&proof_file).unwrap();
    let extra = text.lines().find_map(|line| line.strip_prefix("extra ")).unwrap();
    let mut event = BASE64.decode(extra).unwrap();
    event[10] ^= 1;
    std::fs::write(&proof_file, text.replacen(extra, &BASE64.encode(event), 1)).unwrap();
    let forged = go(&["-proof", proof_file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&forged.stderr);
    assert!(!forged.status.success() && stderr.contains("CheckRecord(299 in "), "go accepted a forged proof: {stderr}");
}

/// `qtrail events verify --checkpoint NOTE` checks a kept tree head by consistency proof alone,
/// and exits 10 for a note that is not the collector's, a head the log does not extend, or one
/// past the log's newest signed head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_tree_head_is_checked_by_consistency_proof() {
    let up = Up::start().await;
    make_events(&up, 2);
    let old = checkpoint_covering(&up, 2).await;
    let kept = up.data_dir().join("kept.note");
    let note = old["note"].as_str().unwrap().to_owned();
    std::fs::write(&kept, &note).unwrap();
    make_events(&up, 2);
    let new_size = checkpoint_covering(&up, old["treeSize"].as_u64().unwrap() + 2).await["treeSize"].as_u64().unwrap();
    let key = "data/checkpoint-key.pub.pem";
    let kept_arg = kept.to_str().unwrap();
    let witness = up.field("witness_key");
    let checked = up.qtrail(&[
        "--output",
        "json",
        "events",
        "verify",
        "--public-key",
        key,
        "--checkpoint",
        kept_arg,
        "--witness-key",
        &witness,
    ]);
    assert_eq!(checked.code, 0, "{checked:?}");
    let verdict = checked.json();
    assert_eq!(verdict["keptSize"], old["treeSize"]);
    assert!(verdict["newestSize"].as_u64() >= Some(new_size), "{verdict}");

    // A note whose size was altered no longer carries the collector's signature.
    let size_line = format!("\n{}\n", old["treeSize"]);
    std::fs::write(&kept, note.replacen(&size_line, "\n1\n", 1)).unwrap();
    let forged = up.qtrail(&["events", "verify", "--public-key", key, "--checkpoint", kept_arg]);
    assert_eq!(forged.code, 10, "{forged:?}");
    assert!(forged.stderr.contains("invalid signature"), "{forged:?}");

    // Heads signed with the collector's own key that its log does not extend: one with another
    // root (a rewritten log), one past its end (a log cut short since).
    let signing = SigningKey::from_pem(&std::fs::read(up.data_dir().join("checkpoint-key.pem")).unwrap()).unwrap();
    let signed_head = |size: u64| {
        let origin = "qtrail.local/us-east";
        let head = TreeHead { origin: origin.into(), size, root: [7; 32], extensions: Vec::new() };
        sign_note(&head.to_text(), &NoteSigner::new(origin, signing.key_pair()).unwrap()).unwrap()
    };
    std::fs::write(&kept, signed_head(old["treeSize"].as_u64().unwrap())).unwrap();
    let rewritten = up.qtrail(&["events", "verify", "--public-key", key, "--checkpoint", kept_arg]);
    assert_eq!(rewritten.code, 10, "{rewritten:?}");
    assert!(rewritten.stderr.contains("does not extend the kept one"), "{rewritten:?}");
    std::fs::write(&kept, signed_head(1_000_000)).unwrap();
    let cut = up.qtrail(&["events", "verify", "--public-key", key, "--checkpoint", kept_arg]);
    assert_eq!(cut.code, 10, "{cut:?}");
    assert!(cut.stderr.contains("the log no longer reaches the kept tree head"), "{cut:?}");
}
