//! What can go wrong reading, proving, verifying and parsing.

/// An error of the transparency log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The storage behind a [`crate::HashReader`] failed.
    #[error("cannot read stored hashes: {0}")]
    Storage(String),
    /// A [`crate::HashReader`] returned another number of hashes than asked for.
    #[error("hash reader returned {got} hashes for {asked} indexes")]
    ShortRead { asked: usize, got: usize },
    /// A leaf index or tree size outside the tree.
    #[error("index {index} is outside a tree of size {size}")]
    OutOfRange { index: u64, size: u64 },
    /// A proof does not prove what it claims.
    #[error("invalid {0} proof")]
    BadProof(&'static str),
    /// A tile path or tile coordinates that C2SP tlog-tiles does not allow.
    #[error("invalid tile path {0:?}")]
    BadTilePath(String),
    /// A tile asked for that the tree does not cover.
    #[error("tile {path} is not covered by a tree of size {size}")]
    TileBeyondTree { path: String, size: u64 },
    /// An entry bundle that is not a sequence of length-prefixed entries.
    #[error("malformed entry bundle: {0}")]
    BadBundle(&'static str),
    /// An entry too long for the bundle's 16-bit length prefix.
    #[error("entry of {0} bytes exceeds the 65535-byte bundle limit")]
    EntryTooLong(usize),
    /// A note that is not a C2SP signed note.
    #[error("malformed note: {0}")]
    BadNote(&'static str),
    /// A verifier key string or key name that C2SP signed-note does not allow.
    #[error("invalid verifier key: {0}")]
    BadKey(&'static str),
    /// A note with no signature by any of the known keys.
    #[error("note has no signature by a known key")]
    UnverifiedNote,
    /// A note whose signature by a known key does not hold.
    #[error("invalid signature by {name}+{key_id:08x}")]
    BadSignature { name: String, key_id: u32 },
    /// A note text that is not a C2SP tlog-checkpoint.
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(&'static str),
    /// A text that is not a C2SP tlog-proof.
    #[error("malformed tlog-proof: {0}")]
    BadProofFile(&'static str),
    /// A C2SP tlog-witness request or answer that is not well formed.
    #[error("malformed witness message: {0}")]
    BadRequest(&'static str),
}
