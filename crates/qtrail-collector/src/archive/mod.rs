//! Archives of sealed ranges in object storage (`--archive-url`): each location's chain is cut
//! into ranges that end at a signed checkpoint, each written as a zstd object of AT-JSON lines
//! plus a manifest signed with the checkpoint key, so that the archive alone, with the key's
//! public half, proves every event it holds ([`verify`]) and can be loaded back into a scratch
//! collector whose checkpoints are the original ones ([`restore`]).
//!
//! The archiver counts a range as archived only once it has read the object and manifest back
//! and verified them as an offline verifier would; [`ArchiveProgress::verified_through`] reports
//! that position to retention, which may then prune the range. Nothing but the archive itself
//! records progress: a start lists the manifests, so a lost data directory loses nothing.

mod archiver;
pub mod format;
pub mod objects;
pub mod restore;
pub mod verify;

pub use archiver::{Archiver, ArchiverConfig};
pub use objects::Archive;

pub use crate::retention::ArchiveProgress;

/// Why archiving, verifying or restoring failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArchiveError {
    /// The archive URL or its options are unusable.
    #[error("{0}")]
    Config(String),
    /// The object store failed.
    #[error("object store: {0}")]
    Object(String),
    /// What was read does not verify, or cannot be written in the archive's format.
    #[error("{0}")]
    Invalid(String),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

#[cfg(test)]
mod tests;
