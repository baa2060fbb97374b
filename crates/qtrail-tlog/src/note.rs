//! C2SP signed notes with Ed25519 keys: a text, a blank line, and signature lines
//! `— <name> <base64(key id || signature)>`, where the key id binds the signature to the key's
//! name and public half, so a verifier finds its signature among others without trying each.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use crate::Error;

/// The signature type byte of Ed25519 keys.
const ALG_ED25519: u8 = 0x01;
/// Starts every signature line.
pub(crate) const SIG_PREFIX: &str = "\u{2014} ";
/// Bounds the work of opening a note with many signatures, as Go's note.Open does.
const MAX_SIGNATURES: usize = 100;

/// Computes the C2SP key id of a note signer: the first 4 bytes of
/// SHA-256(name || 0x0A || 0x01 || public key).
fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    typed_key_id(name, ALG_ED25519, public)
}

/// Computes a C2SP key id for the signature type `alg`: the first 4 bytes of
/// SHA-256(name || 0x0A || alg || public key).
pub(crate) fn typed_key_id(name: &str, alg: u8, public: &[u8; 32]) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([alg]);
    hasher.update(public);
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Checks a key name: non-empty, with no whitespace and no `+`.
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(Error::BadKey("name must be non-empty without spaces or '+'"));
    }
    Ok(())
}

/// Checks note text: valid UTF-8 (given) without control characters other than newline.
pub(crate) fn check_text(text: &str) -> Result<(), Error> {
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(Error::BadNote("control character"));
    }
    Ok(())
}

/// Signs notes under a key name with an Ed25519 key.
#[derive(Debug)]
pub struct NoteSigner<'k> {
    name: String,
    key_id: u32,
    public: [u8; 32],
    key: &'k Ed25519KeyPair,
}

impl<'k> NoteSigner<'k> {
    /// Returns a signer that signs as `name` with `key`.
    ///
    /// # Errors
    /// [`Error::BadKey`] when `name` is not a valid key name.
    pub fn new(name: &str, key: &'k Ed25519KeyPair) -> Result<Self, Error> {
        check_name(name)?;
        let public: [u8; 32] = key.public_key().as_ref().try_into().map_err(|_| Error::BadKey("not ed25519"))?;
        Ok(Self { name: name.to_owned(), key_id: key_id(name, &public), public, key })
    }

    /// Returns the verifier that checks this signer's signatures.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), key_id: self.key_id, public: self.public }
    }
}

/// Returns `text` signed by `signer` as a C2SP signed note.
///
/// # Errors
/// [`Error::BadNote`] when `text` is empty, does not end in a newline, or holds control
/// characters.
pub fn sign_note(text: &str, signer: &NoteSigner<'_>) -> Result<String, Error> {
    if !text.ends_with('\n') {
        return Err(Error::BadNote("text must end in a newline"));
    }
    check_text(text)?;
    let mut blob = signer.key_id.to_be_bytes().to_vec();
    blob.extend_from_slice(signer.key.sign(text.as_bytes()).as_ref());
    Ok(format!("{text}\n{SIG_PREFIX}{} {}\n", signer.name, BASE64.encode(blob)))
}

/// Checks a note and returns its text when a key of `verifiers` signed it. Signatures by
/// other keys are ignored, as C2SP allows (cosigners, witnesses).
///
/// # Errors
/// [`Error::BadNote`] when it is not a signed note; [`Error::BadSignature`] when a known key's
/// signature does not hold; [`Error::UnverifiedNote`] when no known key signed it.
pub fn open_note<'n>(note: &'n str, verifiers: &[NoteVerifier]) -> Result<&'n str, Error> {
    let (text, signatures) = split_note(note)?;
    let mut verified = false;
    for (count, line) in signatures.split('\n').enumerate() {
        if count >= MAX_SIGNATURES {
            return Err(Error::BadNote("too many signatures"));
        }
        let (name, key_id, signature) = parse_signature_line(line)?;
        let Some(verifier) = verifiers.iter().find(|v| v.name == name && v.key_id == key_id) else { continue };
        if !verifier.verify(text.as_bytes(), signature) {
            return Err(Error::BadSignature { name: name.to_owned(), key_id });
        }
        verified = true;
    }
    if !verified {
        return Err(Error::UnverifiedNote);
    }
    Ok(text)
}

/// Splits a signed note into its text (with its final newline) and its signature lines (without
/// the last newline), after checking it has no control characters.
///
/// # Errors
/// [`Error::BadNote`] when it is not a signed note.
pub(crate) fn split_note(note: &str) -> Result<(&str, &str), Error> {
    check_text(note)?;
    let split = note.rfind("\n\n").ok_or(Error::BadNote("no signature block"))?;
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    let signatures = signatures.strip_suffix('\n').ok_or(Error::BadNote("signature block must end in a newline"))?;
    Ok((text, signatures))
}

/// Splits `— <name> <base64>` into the name, the key id and the signature bytes.
pub(crate) fn parse_signature_line(line: &str) -> Result<(&str, u32, Vec<u8>), Error> {
    let bad = Error::BadNote("malformed signature line");
    let rest = line.strip_prefix(SIG_PREFIX).ok_or(bad.clone())?;
    let (name, encoded) = rest.split_once(' ').ok_or(bad.clone())?;
    check_name(name).map_err(|_| bad.clone())?;
    let blob = BASE64.decode(encoded).map_err(|_| bad.clone())?;
    let Some((key_id, signature)) = blob.split_first_chunk::<4>().filter(|(_, sig)| !sig.is_empty()) else {
        return Err(bad);
    };
    Ok((name, u32::from_be_bytes(*key_id), signature.to_vec()))
}

/// Verifies notes signed under a key name with an Ed25519 key; its string form is the C2SP
/// verifier key `<name>+<hex key id>+<base64(0x01 || public key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: u32,
    public: [u8; 32],
}

impl NoteVerifier {
    /// Returns the verifier of `name` with the Ed25519 public key `public`.
    ///
    /// # Errors
    /// [`Error::BadKey`] when `name` is not a valid key name.
    pub fn new(name: &str, public: [u8; 32]) -> Result<Self, Error> {
        check_name(name)?;
        Ok(Self { name: name.to_owned(), key_id: key_id(name, &public), public })
    }

    /// Parses a verifier key string.
    ///
    /// # Errors
    /// [`Error::BadKey`] when it is malformed, not Ed25519, or its key id does not match.
    pub fn parse(vkey: &str) -> Result<Self, Error> {
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::BadKey("expected <name>+<hex key id>+<base64 key>"));
        };
        let key_id = (id.len() == 8)
            .then(|| u32::from_str_radix(id, 16).ok())
            .flatten()
            .ok_or(Error::BadKey("key id must be 8 hex digits"))?;
        let key = BASE64.decode(key).map_err(|_| Error::BadKey("key is not base64"))?;
        let public = match key.split_first() {
            Some((&ALG_ED25519, public)) => {
                <[u8; 32]>::try_from(public).map_err(|_| Error::BadKey("bad key length"))?
            }
            _ => return Err(Error::BadKey("not an ed25519 key")),
        };
        let verifier = Self::new(name, public)?;
        if verifier.key_id != key_id {
            return Err(Error::BadKey("key id does not match the key"));
        }
        Ok(verifier)
    }

    /// Returns the key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, message: &[u8], signature: Vec<u8>) -> bool {
        UnparsedPublicKey::new(&ED25519, self.public).verify(message, &signature).is_ok()
    }
}

impl std::fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut key = vec![ALG_ED25519];
        key.extend_from_slice(&self.public);
        write!(f, "{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(key))
    }
}
