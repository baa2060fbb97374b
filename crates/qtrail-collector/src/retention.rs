//! What retention needs to know before it may let events expire: an event expires only after
//! its range is archived and the archive verified.
//!
//! (The retention policy itself lives in another branch; this file holds only the interface the
//! archiver implements, as pinned for both.)

use qtrail_cadf::Location;

use crate::store::Result;

/// How far a location's chain is archived and verified.
pub trait ArchiveProgress {
    /// Returns the last position of `location` whose archive has been read back and verified
    /// (0 when none): positions up to it may be pruned.
    ///
    /// # Errors
    /// When the progress cannot be read.
    fn verified_through(&self, location: &Location) -> Result<u64>;
}
