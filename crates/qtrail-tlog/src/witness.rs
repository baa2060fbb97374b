//! C2SP tlog-witness `add-checkpoint`: the request body a log posts to a witness (`old <size>`,
//! up to 63 base64 consistency proof hashes, a blank line, the signed checkpoint note) and the
//! `409 Conflict` body (`text/x.tlog.size`) that tells the log the size the witness holds.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::{Error, Hash};

/// Most consistency proof lines a request may carry.
pub const MAX_PROOF_LINES: usize = 63;

/// The content type of a `409 Conflict` answer.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// An `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the witness last cosigned, as the log believes.
    pub old: u64,
    /// The RFC 6962 consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note.
    pub note: String,
}

/// Parses a decimal with no leading zeroes (`0` alone for zero).
fn parse_size(text: &str) -> Option<u64> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

impl AddCheckpoint {
    /// Returns the request body.
    pub fn to_body(&self) -> String {
        let mut body = format!("old {}\n", self.old);
        for hash in &self.proof {
            body.push_str(&BASE64.encode(hash));
            body.push('\n');
        }
        body.push('\n');
        body.push_str(&self.note);
        body
    }

    /// Parses a request body; the note is returned as sent, not yet verified.
    ///
    /// # Errors
    /// [`Error::BadRequest`] when it is not an `add-checkpoint` body.
    pub fn parse(body: &str) -> Result<Self, Error> {
        let (head, note) = body.split_once("\n\n").ok_or(Error::BadRequest("no blank line before the checkpoint"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|line| line.strip_prefix("old "))
            .and_then(parse_size)
            .ok_or(Error::BadRequest("the first line must be `old <size>`"))?;
        let proof = lines
            .map(|line| BASE64.decode(line).ok().and_then(|hash| Hash::try_from(hash).ok()))
            .collect::<Option<Vec<Hash>>>()
            .ok_or(Error::BadRequest("a proof line is not a base64 sha-256 hash"))?;
        if proof.len() > MAX_PROOF_LINES {
            return Err(Error::BadRequest("more than 63 proof lines"));
        }
        Ok(Self { old, proof, note: note.to_owned() })
    }
}

/// Parses the body of a `409 Conflict` answer: the witness's size and a newline.
///
/// # Errors
/// [`Error::BadRequest`] when it is not one.
pub fn parse_conflict_size(body: &str) -> Result<u64, Error> {
    body.strip_suffix('\n').and_then(parse_size).ok_or(Error::BadRequest("a conflict body must be `<size>\\n`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTE: &str = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\
                        \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";

    /// The spec's example body parses, and encodes back to the same bytes.
    #[test]
    fn the_spec_example_round_trips() {
        let body = format!(
            "old 20852014\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\njrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
             5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\n{NOTE}"
        );
        let request = AddCheckpoint::parse(&body).unwrap();
        assert_eq!(request.old, 20_852_014);
        assert_eq!(request.proof.len(), 4);
        assert_eq!(request.note, NOTE);
        assert_eq!(request.to_body(), body);
        let empty = AddCheckpoint { old: 0, proof: Vec::new(), note: NOTE.into() };
        assert_eq!(AddCheckpoint::parse(&empty.to_body()), Ok(empty));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            format!("old 01\n\n{NOTE}"),
            format!("old -1\n\n{NOTE}"),
            format!("new 1\n\n{NOTE}"),
            format!("old 1\nnot-base64!\n\n{NOTE}"),
            format!("old 1\nAAAA\n\n{NOTE}"),
            "old 1\n".to_owned(),
            format!("old 1\n{}\n{NOTE}", "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n".repeat(64)),
        ] {
            assert!(matches!(AddCheckpoint::parse(&body), Err(Error::BadRequest(_))), "{body:?}");
        }
    }

    #[test]
    fn a_conflict_body_is_a_size_line() {
        assert_eq!(parse_conflict_size("42\n"), Ok(42));
        assert!(parse_conflict_size("42").is_err());
        assert!(parse_conflict_size("042\n").is_err());
    }
}
