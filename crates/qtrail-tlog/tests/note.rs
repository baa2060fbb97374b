//! Signed notes against Go's golang.org/x/mod/sumdb/note test vectors, and checkpoints.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use qtrail_tlog::{Checkpoint, Error, NoteSigner, NoteVerifier, open_note, sign_note};
use ring::signature::Ed25519KeyPair;

const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SEED: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const TEXT: &str =
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG: &str =
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

fn peter_key() -> Ed25519KeyPair {
    let seed = BASE64.decode(PETER_SEED).unwrap();
    assert_eq!(seed[0], 1);
    Ed25519KeyPair::from_seed_unchecked(&seed[1..]).unwrap()
}

#[test]
fn signing_matches_go_note() {
    let key = peter_key();
    let signer = NoteSigner::new("PeterNeumann", &key).unwrap();
    assert_eq!(signer.verifier().to_string(), PETER_VKEY);
    let note = sign_note(TEXT, &signer).unwrap();
    assert_eq!(note, format!("{TEXT}\n{PETER_SIG}"));
    let verifier = NoteVerifier::parse(PETER_VKEY).unwrap();
    assert_eq!((verifier.name(), verifier.key_id()), ("PeterNeumann", 0xc74f20a3));
    assert_eq!(open_note(&note, &[verifier]), Ok(TEXT));
}

#[test]
fn tampered_notes_are_rejected() {
    let verifier = NoteVerifier::parse(PETER_VKEY).unwrap();
    let note = format!("{TEXT}\n{PETER_SIG}");
    let tampered = note.replacen("problem", "Problem", 1);
    let bad_signature = Err(Error::BadSignature { name: "PeterNeumann".to_owned(), key_id: 0xc74f20a3 });
    assert_eq!(open_note(&tampered, std::slice::from_ref(&verifier)), bad_signature);
    let other = NoteVerifier::new("Other", [9; 32]).unwrap();
    assert_eq!(open_note(&note, &[other]), Err(Error::UnverifiedNote));
    for malformed in [TEXT.to_owned(), note.trim_end().to_owned(), note.replace('—', "-"), format!("{TEXT}\n— a\n")]
    {
        assert!(
            matches!(open_note(&malformed, std::slice::from_ref(&verifier)), Err(Error::BadNote(_))),
            "{malformed}"
        );
    }
    assert!(matches!(open_note(&note.replace("your", "\u{7}"), &[verifier]), Err(Error::BadNote(_))));
}

#[test]
fn unknown_cosignatures_are_ignored() {
    let key = peter_key();
    let witness = NoteSigner::new("witness.example/w1", &key).unwrap();
    let cosigned = sign_note(TEXT, &witness).unwrap();
    let witness_line = cosigned.rsplit_once("\n\n").unwrap().1;
    let note = format!("{TEXT}\n{witness_line}{PETER_SIG}");
    assert_eq!(open_note(&note, &[NoteVerifier::parse(PETER_VKEY).unwrap()]), Ok(TEXT));
}

#[test]
fn bad_verifier_keys_are_rejected() {
    for vkey in [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ] {
        assert!(matches!(NoteVerifier::parse(vkey), Err(Error::BadKey(_))), "{vkey}");
    }
    let key = peter_key();
    assert!(NoteSigner::new("a+b", &key).is_err());
    let signer = NoteSigner::new("PeterNeumann", &key).unwrap();
    assert!(matches!(sign_note("no newline", &signer), Err(Error::BadNote(_))));
}

#[test]
fn checkpoints_round_trip_through_signed_notes() {
    let checkpoint = Checkpoint {
        origin: "qtrail.local/us-south".to_owned(),
        size: 12345,
        root: [7; 32],
        extensions: vec!["ext line".to_owned()],
    };
    let text = checkpoint.to_text();
    assert_eq!(text, format!("qtrail.local/us-south\n12345\n{}\next line\n", BASE64.encode([7; 32])));
    let key = peter_key();
    let signer = NoteSigner::new(&checkpoint.origin, &key).unwrap();
    let note = sign_note(&text, &signer).unwrap();
    let opened = open_note(&note, &[signer.verifier()]).unwrap();
    assert_eq!(Checkpoint::parse(opened), Ok(checkpoint));
}

#[test]
fn malformed_checkpoints_are_rejected() {
    let root = BASE64.encode([7; 32]);
    for text in [
        format!("origin\n12\n{root}"),
        format!("\n12\n{root}\n"),
        format!("origin\n012\n{root}\n"),
        format!("origin\n-1\n{root}\n"),
        format!("origin\n12\n{}\n", BASE64.encode([7; 31])),
        "origin\n12\n".to_owned(),
        format!("origin\n12\n{root}\n\n"),
    ] {
        assert!(matches!(Checkpoint::parse(&text), Err(Error::BadCheckpoint(_))), "{text:?}");
    }
    assert_eq!(Checkpoint::parse(&format!("o\n0\n{root}\n")).unwrap().size, 0);
}

/// C2SP bounds a note's signatures: 100 lines open, 101 do not, whoever signed them; several
/// signatures by known keys (the same one twice, or two keys) must each hold.
#[test]
fn signatures_are_bounded_and_each_known_one_must_hold() {
    let key = peter_key();
    let witness = NoteSigner::new("witness.example/w1", &key).unwrap();
    let witness_line = sign_note(TEXT, &witness).unwrap().rsplit_once("\n\n").unwrap().1.to_owned();
    let peter = NoteVerifier::parse(PETER_VKEY).unwrap();
    let with_unknown = |count: usize| format!("{TEXT}\n{}{PETER_SIG}", witness_line.repeat(count));
    assert_eq!(open_note(&with_unknown(99), std::slice::from_ref(&peter)), Ok(TEXT));
    assert_eq!(open_note(&with_unknown(100), std::slice::from_ref(&peter)), Err(Error::BadNote("too many signatures")));

    let both = [peter.clone(), witness.verifier()];
    let twice = format!("{TEXT}\n{witness_line}{PETER_SIG}{PETER_SIG}");
    assert_eq!(open_note(&twice, &both), Ok(TEXT));
    // A second signature line by a known key that does not hold fails the note, even after a
    // good one.
    let forged = PETER_SIG.replacen("tpRZb6", "tpRZb7", 1);
    let bad = format!("{TEXT}\n{PETER_SIG}{forged}");
    assert_eq!(
        open_note(&bad, &both),
        Err(Error::BadSignature { name: "PeterNeumann".to_owned(), key_id: 0xc74f20a3 })
    );
}
