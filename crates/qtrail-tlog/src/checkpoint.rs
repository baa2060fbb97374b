//! C2SP tlog-checkpoint: the note text that commits to a tree head,
//! `<origin>\n<size>\n<base64 root>\n` plus optional extension lines.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::{Error, Hash};

/// A tree head as a checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log; also the signing key's name.
    pub origin: String,
    /// The number of leaves.
    pub size: u64,
    /// The tree hash.
    pub root: Hash,
    /// Extension lines, without their newlines.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// Returns the note text.
    pub fn to_text(&self) -> String {
        let mut text = format!("{}\n{}\n{}\n", self.origin, self.size, BASE64.encode(self.root));
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parses a note text (as [`crate::open_note`] returns it).
    ///
    /// # Errors
    /// [`Error::BadCheckpoint`] when it is not a checkpoint body.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let body = text.strip_suffix('\n').ok_or(Error::BadCheckpoint("must end in a newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(Error::BadCheckpoint("expected origin, size and root lines"));
        };
        if origin.is_empty() {
            return Err(Error::BadCheckpoint("empty origin"));
        }
        let canonical =
            !size.is_empty() && size.bytes().all(|b| b.is_ascii_digit()) && (size == "0" || !size.starts_with('0'));
        let size = size.parse().ok().filter(|_| canonical).ok_or(Error::BadCheckpoint("size is not a decimal"))?;
        let root = BASE64
            .decode(root)
            .ok()
            .and_then(|root| Hash::try_from(root).ok())
            .ok_or(Error::BadCheckpoint("root is not a base64 sha-256 hash"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(Error::BadCheckpoint("empty extension line"));
        }
        Ok(Self { origin: origin.to_owned(), size, root, extensions })
    }
}
