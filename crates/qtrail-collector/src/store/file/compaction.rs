//! Compaction of the commit log: the log rewritten without the records a prune removed, so
//! that a store under retention gives their disk space back (a prune alone only hides them,
//! see [`super::expiry`]).
//!
//! # What is kept
//!
//! Every frame is copied in order, every item as it is (collectors, publisher states,
//! checkpoints, kept records byte for byte, stubs of an earlier compaction), except the removed
//! records: consecutive removed records of one location in a frame become one
//! [`Item::Pruned`], `location_len: u8`, location, `count: u32 LE`, `chain_hash_len: u8` and the
//! chain hash of the last of them, then per record `has_id: u8`, `id: u128 LE` and its Merkle
//! `leaf: [u8; 32]` ([`STUB`] bytes). Replaying it gives every record its position back, as a
//! stub ([`Position::is_stub`]: `len` 0, `offset` where its leaf hash is), its event id back
//! for deduplication, and the location's head chain hash; the tree repair of an open reads the
//! stub's leaf hash where it would hash the record, so the tree file can still be rebuilt from
//! the log alone. A removed record costs [`STUB`] bytes instead of its size.
//!
//! # When, and what it needs
//!
//! At open ([`super::FileStore::open`]), before the store serves anything and before the tree
//! repair, when the removed records still in the log take at least [`MIN_RECLAIM`] bytes and a
//! tenth of the log: the single writer is not running yet, so nothing is appended while the
//! log is copied. A running collector does not compact; what its retention sweep prunes is
//! given back at its next start. The copy needs free disk for the kept part of the log (plus
//! the stubs) next to the old log until the rename; when it cannot be written (a full disk
//! above all) the copy is removed and the store opens on the old log, as if there were
//! nothing to compact.
//!
//! # Crash safety
//!
//! The copy is written to `commit.log.compact`, locked like the log (so that a second process
//! can never open the new log unlocked), synced, the state snapshot removed (its offsets are
//! the old log's), then renamed over `commit.log` and the directory synced. A crash before the
//! rename leaves the old log whole, and the leftover copy is removed by the next open; after
//! it, the new log, from which the open replays the whole state (a snapshot left behind does
//! not fit it and is not used), the index (which holds positions, not offsets) and the tree
//! files being independent of the offsets.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};

use super::log::{self, Frame, FrameBuilder, FrameItem, Item, MAGIC, put_location, take_location};
use super::state::{Position, State, event_head};
use super::tree::leaf_of_record;
use super::{FileStore, snapshot, sync_dir};
use crate::store::{Result, StoreError};

/// File name of a compacted log being written, inside the data directory.
pub(super) const TMP_NAME: &str = "commit.log.compact";

/// Bytes of a removed record's stub: `has_id`, id, leaf hash.
pub(super) const STUB: usize = 1 + 16 + 32;

/// Removed bytes below which an open does not compact: a rewrite of the whole log costs more
/// than what it would give back.
pub(super) const MIN_RECLAIM: u64 = 8 << 20;

/// Removes a compacted log a crash left unfinished; call with the log locked.
///
/// # Errors
/// [`StoreError::Backend`] when it cannot be removed.
pub(super) fn discard_unfinished(dir: &Path) -> Result<()> {
    let tmp = dir.join(TMP_NAME);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {
            tracing::warn!(path = %tmp.display(), "an unfinished compaction of the commit log was removed (a crash during it)");
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(StoreError::io("cannot remove an unfinished compaction of the commit log", &err)),
    }
}

/// Returns the bytes of the log that removed records still take.
pub(super) fn reclaimable(state: &State) -> u64 {
    state
        .locations
        .values()
        .flat_map(|chain| {
            (1..).zip(&chain.positions).filter(|(seq, position)| !position.is_stub() && chain.removed.contains(*seq))
        })
        .map(|(_, position)| u64::from(position.len))
        .sum()
}

/// Compacts the log `log` of the store in `dir`, whose replayed state (removed positions
/// included) is `state`, when at least `min_reclaim` bytes and a tenth of the log would be
/// given back; returns the new log, locked, once it has replaced the old one.
///
/// # Errors
/// Only once the new log is renamed into place (the directory cannot be synced): before
/// that a failure leaves the old log, with a warning.
pub(super) fn compact(dir: &Path, log: &Flock<File>, state: &State, min_reclaim: u64) -> Result<Option<Flock<File>>> {
    let reclaim = reclaimable(state);
    let bytes_before = log.metadata().map_err(|err| StoreError::io("cannot read the commit log", &err))?.len();
    if reclaim == 0 || reclaim < min_reclaim || reclaim < bytes_before / 10 {
        return Ok(None);
    }
    let needed = bytes_before - reclaim + stub_bytes(state) + HEADROOM_MARGIN;
    match free_bytes(dir) {
        Some(free) if free < needed => {
            tracing::warn!(
                free_bytes = free,
                needed_bytes = needed,
                reclaimable = reclaim,
                "the commit log is not compacted: not enough free disk for its copy"
            );
            return Ok(None);
        }
        _ => {}
    }
    let started = Instant::now();
    let tmp = dir.join(TMP_NAME);
    let written = write_copy(log, state, &tmp).and_then(|copy| {
        remove_snapshot(dir)?;
        std::fs::rename(&tmp, dir.join(FileStore::FILE_NAME))
            .map_err(|err| StoreError::io("cannot replace the commit log with its compaction", &err))?;
        Ok(copy)
    });
    let (new, records) = match written {
        Ok(written) => written,
        Err(err) => {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(error = %err, reclaimable = reclaim, "the commit log was not compacted, opening it as it is");
            return Ok(None);
        }
    };
    // The new log holds appends from now on: its name must be durable before any is acknowledged.
    sync_dir(dir)?;
    let bytes_after = new.metadata().map_err(|err| StoreError::io("cannot read the commit log", &err))?.len();
    tracing::info!(
        bytes_before,
        bytes_after,
        reclaimed_bytes = bytes_before.saturating_sub(bytes_after),
        records,
        millis = started.elapsed().as_millis(),
        "the commit log was compacted: removed records no longer take disk space"
    );
    Ok(Some(new))
}

/// Free disk kept beyond the copy's size, so that a compaction never fills the disk the index
/// and tree files need next.
const HEADROOM_MARGIN: u64 = 64 << 20;

/// Returns the bytes the stubs of the removed records still in the log will take.
fn stub_bytes(state: &State) -> u64 {
    let removed = state.locations.values().flat_map(|chain| {
        (1..).zip(&chain.positions).filter(|(seq, position)| !position.is_stub() && chain.removed.contains(*seq))
    });
    removed.count() as u64 * STUB as u64
}

/// Returns the bytes free to an unprivileged writer on the file system of `dir`, `None` when
/// it cannot be told (the copy is then tried, and removed if the disk fills).
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    stat.blocks_available().checked_mul(stat.fragment_size())
}

/// Writes the compacted copy of `log` to `tmp`, locked and synced; returns it and how many
/// records it reduced to stubs.
fn write_copy(log: &File, state: &State, tmp: &Path) -> Result<(Flock<File>, u64)> {
    let io = |err: std::io::Error| StoreError::io("cannot write the compacted commit log", &err);
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(tmp).map_err(io)?;
    let file = Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| StoreError::Backend(format!("cannot lock {}: {errno}", tmp.display())))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &*file);
    out.write_all(MAGIC).map_err(io)?;
    let mut copier = Copier { state, seqs: HashMap::new(), stubbed: 0 };
    let end = log::read_frames(log, MAGIC.len() as u64, |frame| {
        let copy = copier.frame(&frame)?;
        out.write_all(&copy).map_err(io)
    })?;
    if end != state.end {
        return Err(StoreError::Backend(format!(
            "the commit log ends at {end} where its state ends at {}: not compacting it",
            state.end
        )));
    }
    out.flush().map_err(io)?;
    drop(out);
    file.sync_all().map_err(io)?;
    Ok((file, copier.stubbed))
}

/// Removes the state snapshot, whose offsets are those of the log being replaced.
fn remove_snapshot(dir: &Path) -> Result<()> {
    match std::fs::remove_file(dir.join(snapshot::FILE_NAME)) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(StoreError::io("cannot remove the state snapshot", &err))
        }
        _ => Ok(()),
    }
}

/// Copies frames, counting each location's positions as a replay does.
struct Copier<'a> {
    state: &'a State,
    seqs: HashMap<String, u64>,
    stubbed: u64,
}

impl Copier<'_> {
    /// Returns the compacted copy of `frame`, header included.
    fn frame(&mut self, frame: &Frame) -> Result<Vec<u8>> {
        let mut out = FrameBuilder::default();
        let mut run: Option<Run> = None;
        for item in frame.items()? {
            match item.item {
                Item::Event => {
                    let bad = || {
                        StoreError::Corrupt(format!("the commit log's event at offset {} is malformed", item.offset))
                    };
                    let (location, id, chain_hash) = event_head(item.payload).ok_or_else(bad)?;
                    let seq = self.advance(&location, 1);
                    if self.state.location(&location).is_some_and(|chain| chain.removed.contains(seq)) {
                        if run.as_ref().is_some_and(|run| run.location != location) {
                            run.take().map(|run| run.write(&mut out)).transpose()?;
                        }
                        let run =
                            run.get_or_insert_with(|| Run { location, chain_hash: Vec::new(), stubs: Vec::new() });
                        run.chain_hash = chain_hash;
                        run.stubs.push((id, leaf_of_record(item.payload)));
                        self.stubbed += 1;
                        continue;
                    }
                }
                Item::Pruned => {
                    let (location, count) = stub_count(&item)?;
                    self.advance(location, count);
                }
                Item::Collector | Item::Publisher | Item::Checkpoint => {}
            }
            run.take().map(|run| run.write(&mut out)).transpose()?;
            out.item(item.item, item.payload)?;
        }
        run.take().map(|run| run.write(&mut out)).transpose()?;
        out.finish()
    }

    /// Moves `location` on by `count` positions and returns the last of them.
    fn advance(&mut self, location: &str, count: u64) -> u64 {
        let seq = self.seqs.entry(location.to_owned()).or_default();
        *seq += count;
        *seq
    }
}

/// Consecutive removed records of one location, as one [`Item::Pruned`].
struct Run {
    location: String,
    /// The chain hash of the last of them.
    chain_hash: Vec<u8>,
    stubs: Vec<(Option<u128>, qtrail_tlog::Hash)>,
}

impl Run {
    fn write(self, out: &mut FrameBuilder) -> Result<()> {
        let too_large = || StoreError::Backend("a run of compacted records is too large".into());
        let mut payload = Vec::with_capacity(self.location.len() + 38 + self.stubs.len() * STUB);
        put_location(&mut payload, &self.location)?;
        payload.extend_from_slice(&u32::try_from(self.stubs.len()).map_err(|_| too_large())?.to_le_bytes());
        payload.push(u8::try_from(self.chain_hash.len()).map_err(|_| too_large())?);
        payload.extend_from_slice(&self.chain_hash);
        for (id, leaf) in self.stubs {
            payload.push(u8::from(id.is_some()));
            payload.extend_from_slice(&id.unwrap_or(0).to_le_bytes());
            payload.extend_from_slice(&leaf);
        }
        out.item(Item::Pruned, &payload).map(drop)
    }
}

fn malformed(item: &FrameItem<'_>) -> StoreError {
    StoreError::Corrupt(format!("the commit log's compacted records at offset {} are malformed", item.offset))
}

/// Returns the location of an [`Item::Pruned`] and how many records it stands for.
fn stub_count<'a>(item: &FrameItem<'a>) -> Result<(&'a str, u64)> {
    let (location, rest) = take_location(item.payload).ok_or_else(|| malformed(item))?;
    let (count, _) = rest.split_first_chunk::<4>().ok_or_else(|| malformed(item))?;
    Ok((location, u64::from(u32::from_le_bytes(*count))))
}

/// Replays an [`Item::Pruned`] into `state`: a stub position and the event id of each record.
pub(super) fn replay(state: &mut State, item: &FrameItem<'_>) -> Result<()> {
    let (location, rest) = take_location(item.payload).ok_or_else(|| malformed(item))?;
    let (count, rest) = rest.split_first_chunk::<4>().ok_or_else(|| malformed(item))?;
    let count = u32::from_le_bytes(*count) as usize;
    let (&hash_len, rest) = rest.split_first().ok_or_else(|| malformed(item))?;
    let (chain_hash, stubs) = rest.split_at_checked(usize::from(hash_len)).ok_or_else(|| malformed(item))?;
    if stubs.len() != count * STUB {
        return Err(malformed(item));
    }
    let first = item.offset + (item.payload.len() - stubs.len()) as u64;
    for (i, stub) in stubs.chunks_exact(STUB).enumerate() {
        let id = (stub[0] == 1).then(|| u128::from_le_bytes(stub[1..17].try_into().unwrap_or_default()));
        let position = Position { offset: first + (i * STUB + 17) as u64, len: 0 };
        state.add_event(location, id, chain_hash, position)?;
    }
    Ok(())
}
