//! C2SP tlog-cosignature, Ed25519 (`cosignature/v1`): a witness's note signature on a
//! checkpoint, saying that as of its timestamp this is the largest consistent tree head it has
//! seen of that log. The signature line is `— <witness name> base64(key id || timestamp ||
//! signature)`, the key id SHA-256(name || 0x0A || 0x04 || public key)[:4], the timestamp 8 bytes
//! big-endian, and the signed message `cosignature/v1\ntime <timestamp>\n` followed by the whole
//! checkpoint text.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use crate::Error;
use crate::note::{SIG_PREFIX, check_name, check_text, parse_signature_line, split_note, typed_key_id};

/// The signature type byte of Ed25519 cosignatures (`cosignature/v1`).
const ALG_COSIGNATURE_V1: u8 = 0x04;
/// The largest timestamp the spec allows (2^63 - 1).
const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// Returns the message a cosignature at `timestamp` signs over the checkpoint `text`.
fn message(text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{text}").into_bytes()
}

/// Cosigns checkpoints as a named witness with an Ed25519 key.
#[derive(Debug)]
pub struct Cosigner<'k> {
    name: String,
    key_id: u32,
    public: [u8; 32],
    key: &'k Ed25519KeyPair,
}

impl<'k> Cosigner<'k> {
    /// Returns a cosigner that signs as `name` with `key`.
    ///
    /// # Errors
    /// [`Error::BadKey`] when `name` is not a valid key name.
    pub fn new(name: &str, key: &'k Ed25519KeyPair) -> Result<Self, Error> {
        check_name(name)?;
        let public: [u8; 32] = key.public_key().as_ref().try_into().map_err(|_| Error::BadKey("not ed25519"))?;
        let key_id = typed_key_id(name, ALG_COSIGNATURE_V1, &public);
        Ok(Self { name: name.to_owned(), key_id, public, key })
    }

    /// Returns the verifier of this cosigner's cosignatures.
    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier { name: self.name.clone(), key_id: self.key_id, public: self.public }
    }

    /// Returns the cosignature line (with its newline) of the checkpoint `text` at `timestamp`
    /// (POSIX seconds).
    ///
    /// # Errors
    /// [`Error::BadNote`] when `text` does not end in a newline or holds control characters, or
    /// the timestamp is beyond 2^63 - 1.
    pub fn cosign(&self, text: &str, timestamp: u64) -> Result<String, Error> {
        if !text.ends_with('\n') {
            return Err(Error::BadNote("text must end in a newline"));
        }
        check_text(text)?;
        if timestamp > MAX_TIMESTAMP {
            return Err(Error::BadNote("timestamp beyond 2^63 - 1"));
        }
        let mut blob = self.key_id.to_be_bytes().to_vec();
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(self.key.sign(&message(text, timestamp)).as_ref());
        Ok(format!("{SIG_PREFIX}{} {}\n", self.name, BASE64.encode(blob)))
    }
}

/// Verifies a witness's cosignatures; its string form is the C2SP verifier key
/// `<name>+<hex key id>+<base64(0x04 || public key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_id: u32,
    public: [u8; 32],
}

impl CosignatureVerifier {
    /// Parses a cosigner's verifier key string.
    ///
    /// # Errors
    /// [`Error::BadKey`] when it is malformed, not an Ed25519 cosignature key, or its key id does
    /// not match.
    pub fn parse(vkey: &str) -> Result<Self, Error> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::BadKey("expected <name>+<hex key id>+<base64 key>"));
        };
        check_name(name)?;
        let key_id = (id.len() == 8)
            .then(|| u32::from_str_radix(id, 16).ok())
            .flatten()
            .ok_or(Error::BadKey("key id must be 8 hex digits"))?;
        let key = BASE64.decode(key).map_err(|_| Error::BadKey("key is not base64"))?;
        let public = match key.split_first() {
            Some((&ALG_COSIGNATURE_V1, public)) => {
                <[u8; 32]>::try_from(public).map_err(|_| Error::BadKey("bad key length"))?
            }
            _ => return Err(Error::BadKey("not an ed25519 cosignature (type 0x04) key")),
        };
        if typed_key_id(name, ALG_COSIGNATURE_V1, &public) != key_id {
            return Err(Error::BadKey("key id does not match the key"));
        }
        Ok(Self { name: name.to_owned(), key_id, public })
    }

    /// Returns the witness name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Checks the cosignatures of this key on a signed note and returns the timestamp of a valid
    /// one; lines of other keys are ignored.
    ///
    /// # Errors
    /// [`Error::BadNote`] when it is not a signed note; [`Error::BadSignature`] when a line of
    /// this key does not hold; [`Error::UnverifiedNote`] when no line is of this key.
    pub fn verify_note(&self, note: &str) -> Result<u64, Error> {
        let (text, signatures) = split_note(note)?;
        self.verify_lines(text, signatures)
    }

    /// As [`CosignatureVerifier::verify_note`], for the checkpoint `text` and signature lines
    /// (each ending in a newline, such as a witness's answer) kept apart.
    ///
    /// # Errors
    /// As [`CosignatureVerifier::verify_note`].
    pub fn verify_lines(&self, text: &str, lines: &str) -> Result<u64, Error> {
        check_text(text)?;
        let mut found = None;
        for line in lines.split('\n').filter(|line| !line.is_empty()) {
            let (name, key_id, blob) = parse_signature_line(line)?;
            if name != self.name || key_id != self.key_id {
                continue;
            }
            let bad = || Error::BadSignature { name: name.to_owned(), key_id };
            let (timestamp, signature) = blob.split_first_chunk::<8>().ok_or_else(bad)?;
            let timestamp = u64::from_be_bytes(*timestamp);
            let holds = timestamp <= MAX_TIMESTAMP
                && UnparsedPublicKey::new(&ED25519, self.public).verify(&message(text, timestamp), signature).is_ok();
            if !holds {
                return Err(bad());
            }
            found = Some(found.map_or(timestamp, |newest: u64| newest.max(timestamp)));
        }
        found.ok_or(Error::UnverifiedNote)
    }
}

impl std::fmt::Display for CosignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut key = vec![ALG_COSIGNATURE_V1];
        key.extend_from_slice(&self.public);
        write!(f, "{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(key))
    }
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::{NoteSigner, NoteVerifier, open_note, sign_note};

    fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    const TEXT: &str = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    /// The line has the spec's layout: key id from type 0x04, then the big-endian timestamp, then
    /// an Ed25519 signature of `cosignature/v1\ntime <t>\n` + the checkpoint text.
    #[test]
    fn a_cosignature_is_laid_out_as_the_spec_says() {
        let key = key();
        let cosigner = Cosigner::new("witness.example/w1", &key).unwrap();
        let line = cosigner.cosign(TEXT, 1_679_315_147).unwrap();
        let encoded = line.strip_prefix("\u{2014} witness.example/w1 ").unwrap().strip_suffix('\n').unwrap();
        let blob = BASE64.decode(encoded).unwrap();
        assert_eq!(blob.len(), 4 + 8 + 64);
        let mut hasher = Sha256::new();
        hasher.update(b"witness.example/w1\n\x04");
        hasher.update(key.public_key().as_ref());
        assert_eq!(blob[..4], hasher.finalize()[..4]);
        assert_eq!(u64::from_be_bytes(blob[4..12].try_into().unwrap()), 1_679_315_147);
        let message = format!("cosignature/v1\ntime 1679315147\n{TEXT}");
        UnparsedPublicKey::new(&ED25519, key.public_key().as_ref()).verify(message.as_bytes(), &blob[12..]).unwrap();
    }

    /// The spec's example cosignature line decodes to the layout: 4-byte key id, the example's
    /// timestamp (1679315147, as its signed message shows) big-endian, and 64 signature bytes.
    /// (The spec gives no public key, so its signature cannot be checked.)
    #[test]
    fn the_spec_example_has_this_layout() {
        let line = "\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==";
        let (name, _key_id, blob) = parse_signature_line(line).unwrap();
        assert_eq!(name, "witness.example.com/w1");
        assert_eq!(blob.len(), 8 + 64);
        assert_eq!(u64::from_be_bytes(blob[..8].try_into().unwrap()), 1_679_315_147);
    }

    /// A cosignature verifies beside the log's own signature, which a note verifier still finds,
    /// and the verifier key round-trips.
    #[test]
    fn a_cosigned_note_verifies_for_both_keys() {
        let (log_key, witness_key) = (key(), key());
        let log = NoteSigner::new("example.com/behind-the-sofa", &log_key).unwrap();
        let note = sign_note(TEXT, &log).unwrap();
        let cosigner = Cosigner::new("witness.example/w1", &witness_key).unwrap();
        let cosigned = format!("{note}{}", cosigner.cosign(TEXT, 7).unwrap());
        let verifier = CosignatureVerifier::parse(&cosigner.verifier().to_string()).unwrap();
        assert_eq!(verifier, cosigner.verifier());
        assert_eq!(verifier.verify_note(&cosigned), Ok(7));
        assert_eq!(open_note(&cosigned, &[log.verifier()]), Ok(TEXT));
        // The log's note alone has no cosignature.
        assert_eq!(verifier.verify_note(&note), Err(Error::UnverifiedNote));
    }

    /// A cosignature over another checkpoint, another time or by another key does not verify.
    #[test]
    fn an_altered_cosignature_is_refused() {
        let key = key();
        let cosigner = Cosigner::new("witness.example/w1", &key).unwrap();
        let verifier = cosigner.verifier();
        let line = cosigner.cosign(TEXT, 7).unwrap();
        let other_text = TEXT.replace("20852163", "20852164");
        assert!(matches!(verifier.verify_lines(&other_text, &line), Err(Error::BadSignature { .. })));
        let mut blob = BASE64.decode(line.trim_end().rsplit(' ').next().unwrap()).unwrap();
        blob[11] ^= 1;
        let retimed = format!("\u{2014} witness.example/w1 {}\n", BASE64.encode(blob));
        assert!(matches!(verifier.verify_lines(TEXT, &retimed), Err(Error::BadSignature { .. })));
        let other = key_pair_verifier("witness.example/w1");
        assert_eq!(other.verify_lines(TEXT, &line), Err(Error::UnverifiedNote));
    }

    fn key_pair_verifier(name: &str) -> CosignatureVerifier {
        let key = key();
        Cosigner::new(name, &key).unwrap().verifier()
    }

    /// A note verifier key (type 0x01) is not a cosignature key, and a wrong key id is refused.
    #[test]
    fn verifier_keys_of_other_types_are_refused() {
        let key = key();
        let note_key =
            NoteVerifier::new("witness.example/w1", key.public_key().as_ref().try_into().unwrap()).unwrap().to_string();
        assert!(CosignatureVerifier::parse(&note_key).is_err());
        let vkey = Cosigner::new("witness.example/w1", &key).unwrap().verifier().to_string();
        let (name, rest) = vkey.split_once('+').unwrap();
        let wrong_id = format!("{name}+00000000+{}", rest.split_once('+').unwrap().1);
        assert_eq!(CosignatureVerifier::parse(&wrong_id), Err(Error::BadKey("key id does not match the key")));
    }
}
