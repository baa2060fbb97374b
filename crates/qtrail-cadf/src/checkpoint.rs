//! Signed checkpoints: Ed25519 signatures over a location's chain head.
//!
//! The hash chain shows that stored records are intact relative to a trusted head hash, but
//! someone who can write the store can rewrite a suffix of it with recomputed hashes, or cut it
//! short. A checkpoint states, under a key the store does not hold, which position the chain
//! had reached and with which hash; one kept elsewhere, or a valid one still in the store,
//! exposes such a rewrite.
//!
//! # Signed bytes, version 1
//!
//! A checkpoint's signature covers these UTF-8 lines, each ending in `\n`:
//!
//! ```text
//! qtrail-checkpoint-v1
//! location=<location>
//! number=<number>
//! location_seq=<location_seq>
//! head_chain_hash=<64 lowercase hex digits>
//! time_millis=<Unix time of signing in milliseconds>
//! key_id=<key id>
//! ```
//!
//! # Keys
//!
//! The signing key is an Ed25519 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as
//! `openssl genpkey -algorithm ed25519` writes it (v1, RFC 5208): new keys are written in that
//! form, and keys are read in it or in v2 (RFC 5958, public key embedded). Auditors verify with
//! its public key in SPKI PEM (`-----BEGIN PUBLIC KEY-----`, `openssl pkey -pubout`). A key's
//! id is the first 16 bytes of the SHA-256 of its raw 32-byte public key, in lowercase hex.

use base64::Engine as _;
use qtrail_proto::qtrail::audit::v1 as proto;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use sha2::{Digest as _, Sha256};

use crate::ChainHash;

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410): the 32 raw key bytes follow.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// DER prefix of an Ed25519 PKCS#8 v1 `PrivateKeyInfo` (RFC 5208, RFC 8410 section 7): version
/// 0, the Ed25519 algorithm, then the 32-byte seed as an OCTET STRING inside the private-key
/// OCTET STRING; the seed follows. This is what `openssl genpkey` writes. ring writes v2 (RFC
/// 5958, with the public key embedded), which OpenSSL 3.0 and Python's `cryptography` refuse.
const PKCS8_V1_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// Why a key or a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The text is not a key of the expected kind.
    #[error("not an ed25519 {kind} key in PEM: {detail}")]
    BadKey {
        /// `private` or `public`.
        kind: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The checkpoint was signed by another key.
    #[error("checkpoint {number} is signed by key {signed_by}, not by key {expected}")]
    OtherKey {
        /// The checkpoint's number.
        number: u64,
        /// Its key id.
        signed_by: String,
        /// The verifying key's id.
        expected: String,
    },
    /// The signature does not cover the checkpoint as it reads now.
    #[error("checkpoint {number} has an invalid signature: it was altered or not signed by this key")]
    BadSignature {
        /// The checkpoint's number.
        number: u64,
    },
}

/// Returns the id of a raw Ed25519 public key.
fn key_id(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..16])
}

/// Returns the bytes a checkpoint's signature covers (see the module docs).
pub fn signed_bytes(checkpoint: &proto::Checkpoint) -> Vec<u8> {
    let time_millis = checkpoint
        .time
        .map_or(0, |time| time.seconds.saturating_mul(1000).saturating_add(i64::from(time.nanos) / 1_000_000));
    format!(
        "qtrail-checkpoint-v1\nlocation={}\nnumber={}\nlocation_seq={}\nhead_chain_hash={}\ntime_millis={}\nkey_id={}\n",
        checkpoint.location,
        checkpoint.number,
        checkpoint.location_seq,
        hex::encode(&checkpoint.head_chain_hash),
        time_millis,
        checkpoint.key_id,
    )
    .into_bytes()
}

/// A key that signs checkpoints.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    id: String,
}

impl std::fmt::Debug for SigningKey {
    /// Shows the key id only: the private key stays out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 PEM Ed25519 private key.
    ///
    /// # Errors
    /// [`CheckpointError::BadKey`] when `pem` holds no such key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CheckpointError> {
        let bad = |detail: String| CheckpointError::BadKey { kind: "private", detail };
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|err| bad(err.to_string().to_lowercase()))?;
        // `maybe_unchecked` also takes PKCS#8 v1 keys (no embedded public key), as openssl writes.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map_err(|err| bad(err.to_string().to_lowercase()))?;
        let id = key_id(pair.public_key().as_ref());
        Ok(Self { pair, id })
    }

    /// Returns a new random key as PKCS#8 v1 PEM, the form every tool reads.
    ///
    /// # Errors
    /// [`CheckpointError::BadKey`] when the system's random source fails.
    pub fn generate_pem() -> Result<String, CheckpointError> {
        let mut seed = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).map_err(|err| {
            CheckpointError::BadKey { kind: "private", detail: format!("cannot generate one: {err}") }
        })?;
        let mut der = PKCS8_V1_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        Ok(pem("PRIVATE KEY", &der))
    }

    /// Returns the key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Returns the key pair, for signatures in other formats (C2SP notes, `qtrail-tlog`).
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    /// Returns the raw 32-byte public key, for verifier keys of other formats (C2SP notes).
    pub fn public_key(&self) -> [u8; 32] {
        self.pair.public_key().as_ref().try_into().unwrap_or([0; 32])
    }

    /// Returns the public key as SPKI PEM, for auditors.
    pub fn public_pem(&self) -> String {
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(self.pair.public_key().as_ref());
        pem("PUBLIC KEY", &spki)
    }

    /// Fills in the key id and the signature of `checkpoint`.
    pub fn sign(&self, checkpoint: &mut proto::Checkpoint) {
        checkpoint.key_id = self.id.clone();
        checkpoint.signature = self.pair.sign(&signed_bytes(checkpoint)).as_ref().to_vec();
    }
}

/// A key that verifies checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    raw: [u8; 32],
    id: String,
}

impl VerifyingKey {
    /// Reads an SPKI PEM Ed25519 public key.
    ///
    /// # Errors
    /// [`CheckpointError::BadKey`] when `pem` holds no such key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CheckpointError> {
        let bad = |detail: String| CheckpointError::BadKey { kind: "public", detail };
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|err| bad(err.to_string().to_lowercase()))?;
        let raw = der
            .as_ref()
            .strip_prefix(SPKI_PREFIX.as_slice())
            .and_then(|raw| <[u8; 32]>::try_from(raw).ok())
            .ok_or_else(|| bad("the key is not an ed25519 key".to_owned()))?;
        Ok(Self { raw, id: key_id(&raw) })
    }

    /// Returns the key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Returns the raw 32-byte public key, for verifiers of other formats (C2SP notes).
    pub fn raw(&self) -> [u8; 32] {
        self.raw
    }

    /// Checks that this key signed `checkpoint` as it reads now.
    ///
    /// # Errors
    /// [`CheckpointError::OtherKey`] when it names another key; [`CheckpointError::BadSignature`]
    /// when the signature does not hold.
    pub fn verify(&self, checkpoint: &proto::Checkpoint) -> Result<(), CheckpointError> {
        if checkpoint.key_id != self.id {
            return Err(CheckpointError::OtherKey {
                number: checkpoint.number,
                signed_by: checkpoint.key_id.clone(),
                expected: self.id.clone(),
            });
        }
        UnparsedPublicKey::new(&ED25519, self.raw)
            .verify(&signed_bytes(checkpoint), &checkpoint.signature)
            .map_err(|_| CheckpointError::BadSignature { number: checkpoint.number })
    }
}

/// Returns the chain hash a checkpoint states, `None` when it is not 32 bytes.
pub fn head_of(checkpoint: &proto::Checkpoint) -> Option<ChainHash> {
    ChainHash::from_slice(&checkpoint.head_chain_hash)
}

/// Returns `der` as PEM with `label`, in lines of 64 characters.
fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).unwrap_or_default());
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    fn checkpoint() -> proto::Checkpoint {
        proto::Checkpoint {
            location: "us-east".into(),
            number: 3,
            location_seq: 42,
            head_chain_hash: vec![7; 32],
            time: Some(Timestamp { seconds: 1_700_000_000, nanos: 123_000_000 }),
            ..Default::default()
        }
    }

    fn key() -> SigningKey {
        SigningKey::from_pem(SigningKey::generate_pem().unwrap().as_bytes()).unwrap()
    }

    #[test]
    fn the_signed_bytes_are_the_documented_lines() {
        let mut signed = checkpoint();
        signed.key_id = "k".into();
        let expected = format!(
            "qtrail-checkpoint-v1\nlocation=us-east\nnumber=3\nlocation_seq=42\nhead_chain_hash={}\n\
             time_millis=1700000000123\nkey_id=k\n",
            "07".repeat(32)
        );
        assert_eq!(String::from_utf8(signed_bytes(&signed)).unwrap(), expected);
    }

    #[test]
    fn a_signed_checkpoint_verifies_with_the_public_key_and_nothing_else() {
        let key = key();
        let mut signed = checkpoint();
        key.sign(&mut signed);
        let public = VerifyingKey::from_pem(key.public_pem().as_bytes()).unwrap();
        assert_eq!(public.id(), key.id());
        assert_eq!(signed.key_id, key.id());
        public.verify(&signed).unwrap();

        let altered = [
            proto::Checkpoint { location_seq: 41, ..signed.clone() },
            proto::Checkpoint { head_chain_hash: vec![8; 32], ..signed.clone() },
            proto::Checkpoint { number: 4, ..signed.clone() },
            proto::Checkpoint { time: Some(Timestamp { seconds: 1_700_000_001, nanos: 0 }), ..signed.clone() },
            proto::Checkpoint { location: "eu-de".into(), ..signed.clone() },
        ];
        for checkpoint in altered {
            assert!(matches!(public.verify(&checkpoint), Err(CheckpointError::BadSignature { .. })), "{checkpoint:?}");
        }
        let other = VerifyingKey::from_pem(self::key().public_pem().as_bytes()).unwrap();
        let err = other.verify(&signed).unwrap_err();
        assert!(matches!(err, CheckpointError::OtherKey { number: 3, .. }), "{err}");
        // A checkpoint that claims the right key id but was signed by another key.
        let mut forged = checkpoint();
        self::key().sign(&mut forged);
        forged.key_id = key.id().to_owned();
        assert_eq!(public.verify(&forged), Err(CheckpointError::BadSignature { number: 3 }));
    }

    /// Keys as openssl writes them: `genpkey -algorithm ed25519` (PKCS#8 v1) and `pkey -pubout`.
    #[test]
    fn reads_openssl_keys() {
        let private = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIP1s6wE4MSYyO4O8jwK+phkLbV6EUb2CgW9wl3S6/esc\n-----END PRIVATE KEY-----\n";
        let public = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEArl+/ClD8OD42VOCbd0fM3b1+U9J3xuvFNnwgnRuLWM0=\n-----END PUBLIC KEY-----\n";
        let key = SigningKey::from_pem(private.as_bytes()).unwrap();
        assert_eq!(key.public_pem(), public);
        let mut signed = checkpoint();
        key.sign(&mut signed);
        VerifyingKey::from_pem(public.as_bytes()).unwrap().verify(&signed).unwrap();
    }

    /// New keys are PKCS#8 v1, the form OpenSSL 3.0 and Python's `cryptography` read; v2 keys
    /// (ring's form) are still read.
    #[test]
    fn writes_pkcs8_v1_and_reads_v2_too() {
        let written = SigningKey::generate_pem().unwrap();
        let der = PrivatePkcs8KeyDer::from_pem_slice(written.as_bytes()).unwrap();
        let der = der.secret_pkcs8_der();
        assert_eq!(der.len(), 48, "sequence of version, algorithm and a 32-byte seed, nothing more");
        assert_eq!(der[..16], PKCS8_V1_PREFIX);
        assert_eq!(der[4], 0, "version 0 is v1");
        assert_ne!(der[16..], [0; 32]);
        let key = SigningKey::from_pem(written.as_bytes()).unwrap();
        assert_ne!(SigningKey::generate_pem().unwrap(), written, "every key is new");

        let v2 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        assert_eq!(v2.as_ref()[4], 1, "ring writes v2");
        let v2_key = SigningKey::from_pem(pem("PRIVATE KEY", v2.as_ref()).as_bytes()).unwrap();
        assert_ne!(v2_key.id(), key.id());
    }

    /// What docs/collector.md promises: `openssl pkey` reads a key qtrail writes, and derives the
    /// same public key from it.
    #[test]
    fn openssl_reads_written_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let written = SigningKey::generate_pem().unwrap();
        std::fs::write(&path, &written).unwrap();
        let output = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&path)
            .output()
            .unwrap_or_else(|err| panic!("this test needs the openssl command (apt-get install openssl): {err}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "openssl refused the key: {stderr}");
        let public = String::from_utf8(output.stdout).unwrap();
        assert_eq!(public, SigningKey::from_pem(written.as_bytes()).unwrap().public_pem());
    }

    #[test]
    fn refuses_what_is_not_an_ed25519_key() {
        let key = key();
        let err = SigningKey::from_pem(key.public_pem().as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("not an ed25519 private key in PEM: "), "{err}");
        let err = VerifyingKey::from_pem(b"hello").unwrap_err();
        assert!(err.to_string().starts_with("not an ed25519 public key in PEM: "), "{err}");
        // A P-256 public key: SPKI, but not Ed25519.
        let p256 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEQYlmUZpy128zNtlziZkuUpbFUDUF\nLVRrEfoONCPMstErwKUh13rAmVxsllBqV70Hiu5x/xCx/DnpYjymoLECtg==\n-----END PUBLIC KEY-----\n";
        let err = VerifyingKey::from_pem(p256.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "not an ed25519 public key in PEM: the key is not an ed25519 key");
        assert!(!format!("{key:?}").contains("pair"), "no private key in debug output");
    }
}
