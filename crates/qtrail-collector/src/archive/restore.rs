//! Loading an archived location into a scratch collector's store for an investigation: the
//! archive is verified first, then its events are appended at their original positions (from 1:
//! a later range needs every earlier one, since positions are dense and the tree is rebuilt
//! from its first leaf) and the checkpoints the manifests carry are stored under their original
//! numbers, so that their signatures, and proofs against them, hold as they did.
//!
//! The archive keeps no publisher information: restored events are stored as published by the
//! reserved publisher id [`RESTORED_PUBLISHER`], at publisher seq = position.

use std::path::Path;

use qtrail_cadf::Location;
use qtrail_cadf::checkpoint::VerifyingKey;

use super::ArchiveError;
use super::format::ArchivedEvent;
use super::objects::Archive;
use super::verify::verify_location;
use crate::store::{AppendBatch, EventStore, FileStore, NewEvent};
use crate::writer::now;

/// The publisher id, epoch credential, of restored events.
pub const RESTORED_PUBLISHER: &str = "archive";
/// Events appended per transaction.
const BATCH: usize = 1000;

/// What a restore loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Ranges loaded.
    pub ranges: usize,
    /// Last position loaded.
    pub last: u64,
    /// Checkpoints stored.
    pub checkpoints: u64,
}

/// Verifies `location`'s archive and loads its ranges, from the first through the one that
/// holds `through` (all when `None`), into a new store in `data_dir`.
///
/// # Errors
/// [`ArchiveError::Invalid`] when a range up to there does not verify, the archive does not
/// start at position 1, or `data_dir` already holds this location; store and object errors.
pub async fn restore(
    archive: &Archive,
    location: &str,
    keys: &[VerifyingKey],
    data_dir: &Path,
    through: Option<u64>,
) -> Result<Restored, ArchiveError> {
    let parsed: Location = location.parse().map_err(|err| ArchiveError::Invalid(format!("location: {err}")))?;
    let reports = verify_location(archive, location, keys, true).await?;
    let mut ranges = Vec::new();
    for report in reports {
        let line = report.line(location);
        let range = report.result.map_err(|_| ArchiveError::Invalid(line))?;
        let done = through.is_some_and(|through| range.manifest.last >= through);
        ranges.push(range);
        if done {
            break;
        }
    }
    match ranges.first() {
        None => return Err(ArchiveError::Invalid(format!("the archive holds no range of `{location}`"))),
        Some(first) if first.manifest.first != 1 => {
            return Err(ArchiveError::Invalid(format!(
                "the archive of `{location}` starts at {}: a restore needs every range from position 1",
                first.manifest.first
            )));
        }
        Some(_) => {}
    }
    if let Some(through) = through.filter(|&through| ranges.last().is_some_and(|last| last.manifest.last < through)) {
        return Err(ArchiveError::Invalid(format!("the archive of `{location}` does not reach position {through}")));
    }
    let data_dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || -> Result<Restored, ArchiveError> {
        let store = FileStore::open(&data_dir, 16 * 1024 * 1024)?;
        store.create_collector(&parsed, now())?;
        let mut restored = Restored { ranges: 0, last: 0, checkpoints: 0 };
        for range in ranges {
            for chunk in range.events.chunks(BATCH) {
                append(&store, &parsed, chunk)?;
            }
            for checkpoint in &range.checkpoints {
                store.add_checkpoint(checkpoint)?;
                restored.checkpoints += 1;
            }
            restored.ranges += 1;
            restored.last = range.manifest.last;
        }
        Ok(restored)
    })
    .await
    .map_err(|err| ArchiveError::Invalid(err.to_string()))?
}

/// Appends archived events at their positions (which follow the store's last one), and checks
/// that they landed there.
fn append(store: &FileStore, location: &Location, events: &[ArchivedEvent]) -> Result<(), ArchiveError> {
    let batch = AppendBatch {
        location: location.clone(),
        publisher_id: RESTORED_PUBLISHER.to_owned(),
        epoch: 1,
        credential: RESTORED_PUBLISHER.to_owned(),
        events: events.iter().map(|archived| NewEvent::new(archived.location_seq, &archived.event)).collect(),
        rejected_seqs: Vec::new(),
    };
    let outcomes = store.append(vec![batch], now())?;
    let stored: Vec<u64> = outcomes
        .iter()
        .flat_map(|outcome| outcome.stored.iter().map(|appended| appended.record.location_seq))
        .collect();
    let expected: Vec<u64> = events.iter().map(|archived| archived.location_seq).collect();
    if stored != expected {
        return Err(ArchiveError::Invalid(format!(
            "the scratch store did not store the events at their positions {}..={}",
            expected.first().unwrap_or(&0),
            expected.last().unwrap_or(&0)
        )));
    }
    Ok(())
}
