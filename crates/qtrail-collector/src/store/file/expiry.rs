//! The file store's retention record (see [`crate::store::expiry`]): `expiry.state` next to the
//! log, written whole to `expiry.state.tmp`, synced, renamed over the old one and the directory
//! synced, so that a crash (kill -9 included) at any step leaves the old record or the new one.
//! A leftover temporary file is an unfinished write: an open removes it.
//!
//! # Why a file of its own
//!
//! A prune changes what reads return, not what the log holds: the log stays append-only, its
//! frames, CRCs and snapshot untouched, and its replay (tree repair included) reads every record
//! as before. Readers skip removed positions by consulting this record, loaded once at open.
//! The price is that removed records still take room in the log until the log is compacted
//! (see the README's retention section).

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use super::sync_dir;
use crate::store::expiry::Expiry;
use crate::store::{Result, StoreError};

/// File name of the record inside the data directory.
pub(super) const FILE_NAME: &str = "expiry.state";

/// File name of a record being written.
const TMP_NAME: &str = "expiry.state.tmp";

/// Loads the record of the store in `dir` (empty when there is none) and removes an unfinished
/// write.
///
/// # Errors
/// [`StoreError::Corrupt`] when the record does not decode; [`StoreError::Backend`] when it
/// cannot be read.
pub(super) fn load(dir: &Path) -> Result<Expiry> {
    let tmp = dir.join(TMP_NAME);
    if tmp.exists() {
        std::fs::remove_file(&tmp)
            .map_err(|err| StoreError::io("cannot remove an unfinished retention record", &err))?;
        tracing::warn!(path = %tmp.display(), "an unfinished retention record was removed (a crash during a write)");
    }
    match std::fs::read(dir.join(FILE_NAME)) {
        Ok(bytes) => Expiry::decode_stored(&bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Expiry::default()),
        Err(err) => Err(StoreError::io("cannot read the retention record", &err)),
    }
}

/// Replaces the record of the store in `dir` with `expiry`, durably.
///
/// # Errors
/// [`StoreError::Backend`] or [`StoreError::Full`]; the old record stays.
pub(super) fn save(dir: &Path, expiry: &Expiry) -> Result<()> {
    let tmp = dir.join(TMP_NAME);
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(&expiry.to_bytes())?;
        file.sync_all()
    });
    written.map_err(|err| StoreError::io("cannot write the retention record", &err))?;
    std::fs::rename(&tmp, dir.join(FILE_NAME))
        .map_err(|err| StoreError::io("cannot replace the retention record", &err))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_write_is_dropped_and_the_old_record_stays() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut old = Expiry::default();
        old.set_pruned("us-east", 3, vec![2]);
        save(dir.path(), &old).expect("save");
        // A crash after the temporary file was written, before the rename.
        let mut new = old.clone();
        new.set_pruned("us-east", 9, Vec::new());
        std::fs::write(dir.path().join(TMP_NAME), &new.to_bytes()[..5]).expect("write tmp");
        assert_eq!(load(dir.path()).expect("load"), old);
        assert!(!dir.path().join(TMP_NAME).exists());
    }

    #[test]
    fn a_damaged_record_is_refused_not_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(FILE_NAME), [0xff, 0xff, 0xff]).expect("write");
        assert!(matches!(load(dir.path()), Err(StoreError::Corrupt(_))));
    }
}
