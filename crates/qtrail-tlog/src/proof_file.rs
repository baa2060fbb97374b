//! C2SP tlog-proof (`c2sp.org/tlog-proof@v1`): an offline-verifiable proof that an entry is in
//! a log, as text. The header line, an optional `extra <base64>` line, `index <n>`, the RFC 6962
//! inclusion proof one base64 hash a line (the leaf's sibling first), a blank line, then the
//! log's signed checkpoint note verbatim.
//!
//! The spec leaves `extra` opaque and unauthenticated. Here it carries the entry itself, so that
//! [`ProofFile::verify`] hashes it into the leaf the proof is checked against: the file alone
//! proves the entry, and a changed `extra` fails the proof like a changed hash.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::{Checkpoint, Error, Hash, NoteVerifier, leaf_hash, open_note, verify_inclusion};

/// The first line of every proof.
pub const PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Most hashes of an inclusion proof: one per level of a tree of at most 2^64 leaves.
const MAX_PROOF_HASHES: usize = 64;

/// A parsed C2SP tlog-proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofFile {
    /// The opaque extra data (here: the entry's bytes), if any.
    pub extra: Option<Vec<u8>>,
    /// The zero-based index of the entry in the log.
    pub index: u64,
    /// The inclusion proof, from the leaf's sibling up to the root's child.
    pub proof: Vec<Hash>,
    /// The log's signed checkpoint note, verbatim (ends in a newline).
    pub checkpoint: String,
}

impl ProofFile {
    /// Returns the proof as text.
    pub fn encode(&self) -> String {
        let mut text = format!("{PROOF_HEADER}\n");
        if let Some(extra) = &self.extra {
            text.push_str(&format!("extra {}\n", BASE64.encode(extra)));
        }
        text.push_str(&format!("index {}\n", self.index));
        for hash in &self.proof {
            text.push_str(&BASE64.encode(hash));
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&self.checkpoint);
        text
    }

    /// Parses a proof. The checkpoint is kept as text: [`ProofFile::verify`] opens it.
    ///
    /// # Errors
    /// [`Error::BadProofFile`] naming what is malformed.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let (head, checkpoint) =
            text.split_once("\n\n").ok_or(Error::BadProofFile("no blank line before the checkpoint"))?;
        if checkpoint.is_empty() {
            return Err(Error::BadProofFile("no checkpoint after the blank line"));
        }
        let mut lines = head.split('\n').peekable();
        if lines.next() != Some(PROOF_HEADER) {
            return Err(Error::BadProofFile("first line is not c2sp.org/tlog-proof@v1"));
        }
        let extra = match lines.peek().and_then(|line| line.strip_prefix("extra ")) {
            Some(encoded) => {
                let extra = BASE64.decode(encoded).map_err(|_| Error::BadProofFile("extra is not base64"))?;
                lines.next();
                Some(extra)
            }
            None => None,
        };
        let index = lines
            .next()
            .and_then(|line| line.strip_prefix("index "))
            .ok_or(Error::BadProofFile("expected an `index <n>` line"))?;
        let index = parse_decimal(index).ok_or(Error::BadProofFile("index is not a decimal without leading zeros"))?;
        let proof = lines
            .map(|line| {
                BASE64
                    .decode(line)
                    .ok()
                    .and_then(|hash| Hash::try_from(hash).ok())
                    .ok_or(Error::BadProofFile("a proof line is not a base64 sha-256 hash"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if proof.len() > MAX_PROOF_HASHES {
            return Err(Error::BadProofFile("more than 64 proof hashes"));
        }
        Ok(Self { extra, index, proof, checkpoint: checkpoint.to_owned() })
    }

    /// Checks the proof offline: the checkpoint note is signed by one of `verifiers`, and the
    /// leaf hash of `extra` is at `index` of the tree the checkpoint commits to. Returns that
    /// checkpoint.
    ///
    /// # Errors
    /// [`Error::BadProofFile`] without `extra`; what [`open_note`] and [`Checkpoint::parse`]
    /// return; [`Error::OutOfRange`] or [`Error::BadProof`] when the inclusion does not hold.
    pub fn verify(&self, verifiers: &[NoteVerifier]) -> Result<Checkpoint, Error> {
        let extra = self.extra.as_deref().ok_or(Error::BadProofFile("no extra line: the entry is not in the proof"))?;
        let head = Checkpoint::parse(open_note(&self.checkpoint, verifiers)?)?;
        verify_inclusion(self.index, head.size, &leaf_hash(extra), &self.proof, &head.root)?;
        Ok(head)
    }
}

/// Parses a decimal with no sign and no leading zeros (but `0`), as C2SP writes numbers.
fn parse_decimal(text: &str) -> Option<u64> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    text.parse().ok().filter(|_| canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProofFile {
        ProofFile {
            extra: Some(b"{\"id\":1}".to_vec()),
            index: 5,
            proof: vec![[1; 32], [2; 32]],
            checkpoint: "log.example\n7\nAAAA\n\n\u{2014} log.example c2ln\n".to_owned(),
        }
    }

    #[test]
    fn encoding_round_trips_and_follows_the_spec_layout() {
        let proof = sample();
        let text = proof.encode();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(PROOF_HEADER));
        assert_eq!(lines.next(), Some("extra eyJpZCI6MX0="));
        assert_eq!(lines.next(), Some("index 5"));
        assert_eq!(lines.next(), Some("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="));
        assert_eq!(ProofFile::parse(&text), Ok(proof.clone()));
        let bare = ProofFile { extra: None, proof: Vec::new(), index: 0, ..proof };
        assert_eq!(ProofFile::parse(&bare.encode()), Ok(bare));
    }

    #[test]
    fn malformed_proofs_are_refused() {
        let good = sample().encode();
        let cases = [
            ("", "no blank line"),
            (&good.replacen(PROOF_HEADER, "c2sp.org/tlog-proof@v2", 1), "first line"),
            (&good.replacen("extra eyJpZCI6MX0=", "extra !!", 1), "extra is not base64"),
            (&good.replacen("index 5\n", "", 1), "index"),
            (&good.replacen("index 5", "index 05", 1), "leading zeros"),
            (&good.replacen("index 5", "index -5", 1), "leading zeros"),
            (&good.replacen("index 5", "index 18446744073709551616", 1), "leading zeros"),
            (&good.replacen("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "AQEB", 1), "sha-256"),
            (&good.replacen("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "not base64", 1), "sha-256"),
            (good.split_once("\n\n").unwrap().0, "no blank line"),
            (&format!("{}\n\n", good.split_once("\n\n").unwrap().0), "no checkpoint"),
        ];
        for (text, why) in cases {
            match ProofFile::parse(text) {
                Err(Error::BadProofFile(detail)) => assert!(detail.contains(why), "{text:?}: {detail}"),
                other => panic!("{text:?} parsed as {other:?}"),
            }
        }
        let long = ProofFile { proof: vec![[0; 32]; 65], ..sample() };
        assert_eq!(ProofFile::parse(&long.encode()), Err(Error::BadProofFile("more than 64 proof hashes")));
    }

    #[test]
    fn a_proof_without_extra_does_not_verify() {
        let proof = ProofFile { extra: None, ..sample() };
        assert!(matches!(proof.verify(&[]), Err(Error::BadProofFile(_))));
    }
}
