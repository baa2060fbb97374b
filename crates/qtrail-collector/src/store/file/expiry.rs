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
//! The price is that removed records still take room in the log until the next open compacts
//! it (see [`super::compaction`]).

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use qtrail_cadf::Location;
use qtrail_proto::qtrail::audit::v1 as proto;

use super::{FileStore, sync_dir};
use crate::store::expiry::{Expiry, PruneOutcome, Removed, decide};
use crate::store::{EventStore as _, Result, StoreError};

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

/// [`crate::store::EventStore::prune`] of the file store: decides on the records, stores the
/// new record durably, and only then hides the removed records from reads.
pub(super) fn prune(
    store: &FileStore,
    location: &Location,
    through_seq: u64,
    keep: &dyn Fn(&proto::StoredEvent) -> bool,
) -> Result<PruneOutcome> {
    let last = match store.read_state().location(location.as_str()) {
        Some(chain) => chain.positions.len() as u64,
        None => return Err(StoreError::NoCollector(location.to_string())),
    };
    let outcome = store.change_expiry(|expiry| {
        let through = through_seq.min(last).max(expiry.pruned_through(location.as_str()));
        let (kept, removed) = decide(present_records(store, location, through)?, keep);
        let outcome = PruneOutcome { removed: removed.len() as u64, kept: kept.len() as u64, pruned_through: through };
        expiry.set_pruned(location.as_str(), through, kept);
        Ok(outcome)
    })?;
    let removed = Removed::of(store.lock_expiry().pruned(location.as_str()));
    if let Some(chain) = store.write_state().locations.get_mut(location.as_str()) {
        chain.removed = removed;
    }
    Ok(outcome)
}

/// Returns the records of `location` still present at positions up to `through`, decoded
/// (`None` when a record no longer decodes), for a prune to decide on.
fn present_records(
    store: &FileStore,
    location: &Location,
    through: u64,
) -> Result<Vec<(u64, Option<proto::StoredEvent>)>> {
    const CHUNK: usize = 4096;
    let mut records = Vec::new();
    let mut from = 1;
    while from <= through {
        let chunk = store.chain_records(location, from, CHUNK)?;
        let Some(next) = chunk.last().map(|record| record.location_seq + 1) else {
            break;
        };
        records.extend(
            chunk
                .into_iter()
                .filter(|record| record.location_seq <= through)
                .map(|record| (record.location_seq, record.record)),
        );
        from = next;
    }
    Ok(records)
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

    /// A kill -9 during a prune, before the new record is renamed into place: the store opens
    /// with the prune before it, every record it did not remove intact; the prune done again
    /// then takes effect.
    #[test]
    fn a_prune_cut_before_its_rename_leaves_the_previous_prune() {
        use crate::store::conformance::{append_all, at, location, simple_events};
        let dir = tempfile::tempdir().expect("temp dir");
        let loc = location("us-east");
        {
            let store = FileStore::open(dir.path(), 1 << 20).expect("open");
            store.create_collector(&loc, at(1)).expect("create");
            append_all(&store, "us-east", &simple_events("us-east", 12));
            store.prune(&loc, 5, &|_| false).expect("prune");
            let mut next = load(dir.path()).expect("load");
            next.set_pruned("us-east", 8, Vec::new());
            std::fs::write(dir.path().join(TMP_NAME), next.to_bytes()).expect("write tmp");
        }
        let store = FileStore::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(store.pruned_through(&loc).expect("pruned"), 5);
        let seqs = |store: &FileStore| -> Vec<u64> {
            store.events(&loc, 1, 100).expect("events").iter().map(|record| record.location_seq).collect()
        };
        assert_eq!(seqs(&store), (6..=12).collect::<Vec<_>>());
        assert_eq!(store.prune(&loc, 8, &|_| false).expect("prune").removed, 3);
        drop(store);
        let store = FileStore::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(seqs(&store), (9..=12).collect::<Vec<_>>());
        assert_eq!(store.last_seq(&loc).expect("last"), 12);
    }

    #[test]
    fn a_damaged_record_is_refused_not_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(FILE_NAME), [0xff, 0xff, 0xff]).expect("write");
        assert!(matches!(load(dir.path()), Err(StoreError::Corrupt(_))));
    }
}
