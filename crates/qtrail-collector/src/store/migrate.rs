//! Moving a data dir from the redb store ([`RedbStore`], `collector.redb`) to the file store
//! ([`FileStore`], `commit.log`), which the collector does by itself at start-up.
//!
//! Every record is copied as stored (same positions, chain hashes, publisher refs and receive
//! times), with every publisher state and checkpoint, so `events verify` and the signed
//! checkpoints stay valid. The log is built in `migration/` inside the data dir and moved into
//! place with one rename when complete; only then is `collector.redb` renamed to
//! `collector.redb.migrated` (kept: delete it once satisfied). A crash at any point leaves
//! either the old store untouched (the next start migrates again from scratch) or the complete
//! log in place (the next start only sets the old file aside). The index file is kept: its
//! marks name positions and chain hashes, which the copy keeps, so the file store checks and
//! reuses it.
//!
//! A migration holds `migration.lock` in the data dir, so that two collectors started on the
//! same dir do not work in `migration/` at once; a `migration/` left by a crash is removed.
//! A record missing from the old store refuses the migration and changes nothing.

use std::path::Path;

use nix::fcntl::{Flock, FlockArg};
use prost::Message as _;
use qtrail_cadf::Location;
use tracing::info;

use super::file::{Item, put_location};
use super::{EventStore, FileStore, RedbStore, Result, StoreError};

/// Records copied per frame of the new log.
const CHUNK: usize = 1000;

/// The file a migration holds locked.
const LOCK_FILE: &str = "migration.lock";

/// Name of the old store's file once migrated.
pub const MIGRATED_SUFFIX: &str = ".migrated";

/// Converts the redb store in `data_dir`, if there is one and no file store yet; returns the
/// number of events copied (`None` when there was nothing to convert).
///
/// # Errors
/// [`StoreError::Corrupt`] when a record or checkpoint of the old store no longer decodes:
/// nothing is changed then, and `qtrail events verify` on the old collector names it;
/// [`StoreError::Backend`] on storage failure.
pub fn from_redb(data_dir: &Path, cache_bytes: usize) -> Result<Option<u64>> {
    let old = data_dir.join(RedbStore::FILE_NAME);
    let new = data_dir.join(FileStore::FILE_NAME);
    if !old.exists() {
        return Ok(None);
    }
    // Held to the end: a second collector started on the same dir must not remove or write
    // the migration dir under this one.
    let _lock = lock(data_dir)?;
    let mut copied = 0;
    let work = data_dir.join("migration");
    if work.exists() {
        // Debris of a migration that stopped before its rename (nothing of it was used) or
        // after it (the log in place holds everything).
        std::fs::remove_dir_all(&work).map_err(|err| StoreError::io("cannot remove an unfinished migration", &err))?;
    }
    if !new.exists() {
        copied = {
            let source = RedbStore::open(data_dir, cache_bytes)?;
            let target = FileStore::open(&work, cache_bytes)?;
            copy(&source, &target)?
        };
        std::fs::rename(work.join(FileStore::FILE_NAME), &new)
            .map_err(|err| StoreError::io("cannot move the new log", &err))?;
        sync_dir(data_dir)?;
        std::fs::remove_dir_all(&work).map_err(|err| StoreError::io("cannot remove the migration dir", &err))?;
        info!(events = copied, data_dir = %data_dir.display(), "migrated the redb store to the file store");
    }
    let aside = data_dir.join(format!("{}{MIGRATED_SUFFIX}", RedbStore::FILE_NAME));
    std::fs::rename(&old, &aside).map_err(|err| StoreError::io("cannot set the old store aside", &err))?;
    sync_dir(data_dir)?;
    Ok(Some(copied))
}

/// Copies every collector, record, publisher state and checkpoint; returns the events copied.
fn copy(source: &RedbStore, target: &FileStore) -> Result<u64> {
    let mut copied = 0;
    for collector in source.collectors()? {
        let location: Location = collector.location.parse().map_err(|_| {
            StoreError::Corrupt(format!("the old store holds a collector of invalid location `{}`", collector.location))
        })?;
        let created =
            qtrail_proto::qtrail::audit::v1::Collector { event_count: 0, head_chain_hash: Vec::new(), ..collector };
        target.import(|frame| frame.item(Item::Collector, &created.encode_to_vec()).map(drop))?;
        copied += copy_records(source, target, &location)?;
        copy_publishers(source, target, &location)?;
        copy_checkpoints(source, target, &location)?;
    }
    Ok(copied)
}

/// Copies the records of `location` in order. A missing position refuses the migration: the
/// file store numbers records by their place, so copying on would renumber every later one.
fn copy_records(source: &RedbStore, target: &FileStore, location: &Location) -> Result<u64> {
    let mut next = 1;
    loop {
        let chunk = source.events(location, next, CHUNK)?;
        let Some(last) = chunk.last().map(|record| record.location_seq) else {
            return Ok(next - 1);
        };
        for (expected, record) in (next..).zip(&chunk) {
            if record.location_seq != expected {
                return Err(StoreError::Corrupt(format!(
                    "the old store has no record {expected} of `{location}` (the next is {}); nothing was \
                     migrated",
                    record.location_seq
                )));
            }
        }
        target.import(|frame| {
            for record in &chunk {
                frame.item(Item::Event, &record.encode_to_vec())?;
            }
            Ok(())
        })?;
        next = last + 1;
    }
}

fn copy_publishers(source: &RedbStore, target: &FileStore, location: &Location) -> Result<()> {
    let mut after: Option<String> = None;
    loop {
        let page = source.publishers(location, after.as_deref(), CHUNK)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.publisher_id.clone());
        target.import(|frame| {
            for state in &page {
                let mut payload = Vec::new();
                put_location(&mut payload, location.as_str())?;
                payload.extend_from_slice(&state.encode_to_vec());
                frame.item(Item::Publisher, &payload)?;
            }
            Ok(())
        })?;
    }
}

fn copy_checkpoints(source: &RedbStore, target: &FileStore, location: &Location) -> Result<()> {
    let mut entries = source.checkpoints(location, None, usize::MAX)?;
    entries.reverse();
    for entry in entries {
        let checkpoint = entry.checkpoint.map_err(|why| StoreError::Corrupt(format!("cannot migrate: {why}")))?;
        target.add_checkpoint(&checkpoint)?;
    }
    Ok(())
}

/// Takes the migration lock of `data_dir` (a lock file of its own: the old store's file is
/// locked by redb when opened).
fn lock(data_dir: &Path) -> Result<Flock<std::fs::File>> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|err| StoreError::io("cannot open the migration lock", &err))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        StoreError::Backend(format!("cannot lock {}: {errno} (is another collector migrating it?)", path.display()))
    })
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| StoreError::io("cannot sync the data dir", &err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{CheckRange, verify};
    use crate::filter::{Filter, Order};
    use crate::store::conformance::event;
    use crate::store::{AppendBatch, NewEvent};
    use prost_types::Timestamp;
    use qtrail_proto::qtrail::audit::v1 as proto;

    fn location(name: &str) -> Location {
        name.parse().unwrap()
    }

    /// Fills a redb store: two locations, two publishers, 2500 events over several commits
    /// (more than a chunk), a conflicting id, checkpoints and a partly built index.
    fn old_store(dir: &Path) {
        let store = RedbStore::open(dir, 4 * 1024 * 1024).unwrap();
        for name in ["us-east", "eu-de"] {
            store.create_collector(&location(name), Timestamp { seconds: 5, nanos: 0 }).unwrap();
        }
        for round in 0..5_u64 {
            let batches = ["pub-1", "pub-2"]
                .into_iter()
                .map(|publisher| AppendBatch {
                    location: location("us-east"),
                    publisher_id: publisher.into(),
                    epoch: 1,
                    credential: format!("token-{publisher}"),
                    events: (1..=250)
                        .map(|i| {
                            let seq = round * 250 + i;
                            let millis = (seq * 2 + u64::from(publisher == "pub-2")) as i64;
                            let target = format!("job-{}", seq % 7);
                            let made = event("us-east", qtrail_cadf::Action::JobRead, publisher, &target, 200, millis);
                            NewEvent::new(seq, &made)
                        })
                        .collect(),
                    rejected_seqs: vec![round + 10_000],
                })
                .collect();
            store.append(batches, Timestamp { seconds: 10 + round as i64, nanos: 0 }).unwrap();
            let head = store.collector(&location("us-east")).unwrap().unwrap();
            let checkpoint = proto::Checkpoint {
                location: "us-east".into(),
                number: round + 1,
                location_seq: head.event_count,
                head_chain_hash: head.head_chain_hash,
                ..Default::default()
            };
            store.add_checkpoint(&checkpoint).unwrap();
        }
        store.index_step(1200).unwrap();
    }

    fn everything(
        store: &dyn EventStore,
    ) -> (Vec<proto::Collector>, Vec<proto::StoredEvent>, Vec<proto::PublisherState>) {
        let us = location("us-east");
        (store.collectors().unwrap(), store.events(&us, 1, 10_000).unwrap(), store.publishers(&us, None, 100).unwrap())
    }

    #[test]
    fn a_redb_data_dir_is_converted_whole_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        old_store(dir.path());
        let before = {
            let old = RedbStore::open(dir.path(), 1024 * 1024).unwrap();
            (everything(&old), old.checkpoints(&location("us-east"), None, 100).unwrap())
        };
        assert_eq!(before.0.1.len(), 2500);

        assert_eq!(from_redb(dir.path(), 1024 * 1024).unwrap(), Some(2500));
        assert!(!dir.path().join(RedbStore::FILE_NAME).exists());
        assert!(dir.path().join(format!("{}{MIGRATED_SUFFIX}", RedbStore::FILE_NAME)).exists(), "kept aside");
        assert!(!dir.path().join("migration").exists());
        assert_eq!(from_redb(dir.path(), 1024 * 1024).unwrap(), None, "done once");

        let store = FileStore::open(dir.path(), 1024 * 1024).unwrap();
        assert_eq!(everything(&store), before.0);
        assert_eq!(store.checkpoints(&location("us-east"), None, 100).unwrap(), before.1);
        let us = location("us-east");
        let verdict = verify(&store, &us, CheckRange { from_seq: 1, to_seq: 2500 }, 2500).unwrap();
        assert!(verdict.ok && verdict.checkpoints_checked == 5, "{verdict:?}");
        // The old index still fits (same positions and hashes): kept, and queries agree.
        assert_eq!(store.indexed_seq(&us).unwrap(), 1200);
        let filter = Filter { initiator_id: Some("pub-2".into()), ..Filter::default() };
        assert_eq!(store.query(&us, &filter, Order::NewestFirst, None, 5000).unwrap().len(), 1250);
        // And the chain goes on where it was.
        let next = event("us-east", qtrail_cadf::Action::JobRead, "pub-1", "j", 200, 1);
        let batch = AppendBatch {
            location: us.clone(),
            publisher_id: "pub-1".into(),
            epoch: 1,
            credential: "token-pub-1".into(),
            events: vec![NewEvent::new(1251, &next)],
            rejected_seqs: vec![],
        };
        let outcome = store.append(vec![batch], Timestamp::default()).unwrap();
        assert_eq!(outcome[0].stored[0].record.location_seq, 2501);
        assert!(verify(&store, &us, CheckRange { from_seq: 1, to_seq: 2501 }, 2501).unwrap().ok);
    }

    #[test]
    fn a_missing_record_refuses_the_migration_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        old_store(dir.path());
        {
            let db = redb::Database::open(dir.path().join(RedbStore::FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            let name = crate::store::embedded::events_table_name("us-east");
            let def: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new(&name);
            txn.open_table(def).unwrap().remove(1700).unwrap().unwrap();
            txn.commit().unwrap();
        }
        let err = from_redb(dir.path(), 1024 * 1024).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        assert!(err.to_string().contains("no record 1700 of `us-east`"), "{err}");
        assert!(dir.path().join(RedbStore::FILE_NAME).exists());
        assert!(!dir.path().join(FileStore::FILE_NAME).exists());
    }

    #[test]
    fn a_second_migration_of_the_same_dir_is_refused_while_the_first_runs() {
        let dir = tempfile::tempdir().unwrap();
        old_store(dir.path());
        let _first = lock(dir.path()).unwrap();
        let err = from_redb(dir.path(), 1024 * 1024).unwrap_err().to_string();
        assert!(err.contains("cannot lock") && err.contains("migration.lock"), "{err}");
        assert!(!dir.path().join(FileStore::FILE_NAME).exists());
    }

    /// A crash after the rename, before the migration dir was removed: the next start removes it.
    #[test]
    fn debris_of_a_finished_migration_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        old_store(dir.path());
        assert_eq!(from_redb(dir.path(), 1024 * 1024).unwrap(), Some(2500));
        let aside = dir.path().join(format!("{}{MIGRATED_SUFFIX}", RedbStore::FILE_NAME));
        std::fs::rename(&aside, dir.path().join(RedbStore::FILE_NAME)).unwrap();
        std::fs::create_dir(dir.path().join("migration")).unwrap();
        assert_eq!(from_redb(dir.path(), 1024 * 1024).unwrap(), Some(0));
        assert!(!dir.path().join("migration").exists());
    }

    /// A crash after the new log was moved into place, before the old file was set aside: the
    /// next start only sets it aside, and copies nothing twice.
    #[test]
    fn a_migration_cut_short_after_the_rename_finishes_without_copying_again() {
        let dir = tempfile::tempdir().unwrap();
        old_store(dir.path());
        assert_eq!(from_redb(dir.path(), 1024 * 1024).unwrap(), Some(2500));
        let aside = dir.path().join(format!("{}{MIGRATED_SUFFIX}", RedbStore::FILE_NAME));
        std::fs::rename(&aside, dir.path().join(RedbStore::FILE_NAME)).unwrap();
        assert_eq!(from_redb(dir.path(), 1024 * 1024).unwrap(), Some(0));
        assert!(aside.exists());
        assert_eq!(FileStore::open(dir.path(), 1024 * 1024).unwrap().last_seq(&location("us-east")).unwrap(), 2500);
    }
}
