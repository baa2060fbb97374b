//! The file store, the collector's default backend: an append-only commit log
//! (`commit.log`, see [`log`]) and the query indexes in a redb file of their own (`index.redb`,
//! see [`super::index`]), which follow the log through [`EventStore::index_step`].
//!
//! # Why this shape
//!
//! An acknowledged batch costs one sequential write and one `fdatasync`, as in Tessera's POSIX
//! driver: every durable change (a group commit with all its batches, a new collector, a
//! checkpoint) is one frame appended to the log, with a CRC32C. Nothing is updated in place and
//! no B-tree is written on the acknowledgement path; redb's B-tree inserts and its commit were
//! half of the collector's CPU per event.
//!
//! Records are protobuf `StoredEvent`s with their location and position, in the log as written;
//! memory holds where each is (16 bytes per event) and the event ids (deduplication must be
//! exact when a batch is admitted: 24 bytes per event in a sorted array, a hash map entry for
//! those added since the last snapshot, see [`ids`]), the collectors, publisher states and
//! checkpoints ([`state`]). Opening loads that state from its snapshot (`state.snapshot`, see
//! [`snapshot`]) when it fits the log and replays only the frames after it, else replays the
//! whole log; either way it cuts a torn tail after keeping a copy of it (see [`log`]).
//! Snapshots are written in the background ([`EventStore::snapshot`]). Records a prune
//! removed are hidden at once and dropped from the log by the next open ([`compaction`]).

//! # Queries
//!
//! As with the redb backend: a query reads the index file's snapshot first, then the log's
//! newest position; positions the indexes cover are found through them, the positions after
//! them are read from the log and filtered one by one, so a query sees every event committed
//! before it began, however far behind the indexer is. The index file's marks hold the chain
//! hash of the last position indexed; at open a mark that does not fit the log (the index is
//! from another log, or the log was replaced) drops that location's index, which is rebuilt.

mod compaction;
mod expiry;
mod group;
mod ids;
mod log;
pub mod offline;
mod snapshot;
mod state;
mod tree;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};
use prost::Message as _;
use prost_types::Timestamp;
use qtrail_cadf::{ChainHash, Location};
use qtrail_proto::qtrail::audit::v1 as proto;
use uuid::Uuid;

use group::Group;
pub(crate) use log::{FrameBuilder, Item, put_location};
use log::{MAGIC, Writer};
use state::{FileChains, State, read_record};
use tree::Trees;

use super::embedded::DEFAULT_BUCKET_BITS;
use super::expiry::{Expiry, PruneOutcome, Removed};
use super::index::{self, Index};
use super::{AppendBatch, AppendOutcome, CheckpointEntry, EventStore, IndexStep, Result, StoreError, StoredBytes};
use crate::filter::{Filter, Order};

/// The append-only [`EventStore`].
#[derive(Debug)]
pub struct FileStore {
    /// The log, locked against a second process for as long as the store is open.
    file: Flock<File>,
    /// The single writer: where the next frame goes.
    writer: Mutex<Writer>,
    state: RwLock<State>,
    /// Each location's Merkle tree, derived from the log.
    trees: Trees,
    index: Index,
    dir: PathBuf,
    /// The last snapshot of the state (see [`snapshot`]), held while one is written.
    snapshots: Mutex<SnapshotMark>,
    /// Retention policies, legal holds and pruned ranges (see [`expiry`]), held while one of
    /// them changes.
    expiry: Mutex<Expiry>,
}

/// Where the last snapshot ends in the log, and its size.
#[derive(Debug, Clone, Copy)]
struct SnapshotMark {
    end: u64,
    bytes: u64,
}

impl FileStore {
    /// File name of the commit log inside the data directory.
    pub const FILE_NAME: &'static str = "commit.log";

    /// File name of the index file inside the data directory.
    pub const INDEX_FILE_NAME: &'static str = index::FILE_NAME;

    /// Opens (or creates) the store in `data_dir`, with a page cache of `cache_bytes` for the
    /// index file.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the directory or a file cannot be created, opened or read,
    /// for instance because another process holds it; [`StoreError::Corrupt`] when the log is
    /// damaged before its last frame.
    pub fn open(data_dir: &Path, cache_bytes: usize) -> Result<Self> {
        Self::open_with_bucket_bits(data_dir, cache_bytes, DEFAULT_BUCKET_BITS)
    }

    /// Opens (or creates) the store; a new index file gets buckets of `2^bucket_bits`
    /// positions (see [`super::RedbStore::open_with_bucket_bits`]).
    ///
    /// # Errors
    /// As [`FileStore::open`].
    pub fn open_with_bucket_bits(data_dir: &Path, cache_bytes: usize, bucket_bits: u32) -> Result<Self> {
        Self::open_inner(data_dir, cache_bytes, bucket_bits, compaction::MIN_RECLAIM)
    }

    /// Opens the store, compacting the log when removed records take at least `min_reclaim`
    /// bytes (and a tenth of it; see [`compaction`]).
    #[cfg(test)]
    pub(crate) fn open_compacting(data_dir: &Path, min_reclaim: u64) -> Result<Self> {
        Self::open_inner(data_dir, 1 << 20, DEFAULT_BUCKET_BITS, min_reclaim)
    }

    fn open_inner(data_dir: &Path, cache_bytes: usize, bucket_bits: u32, min_reclaim: u64) -> Result<Self> {
        let new_dir = !data_dir.exists();
        std::fs::create_dir_all(data_dir)
            .map_err(|err| StoreError::io(&format!("cannot create data dir {}", data_dir.display()), &err))?;
        let path = data_dir.join(Self::FILE_NAME);
        let new_log = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|err| StoreError::io(&format!("cannot open {}", path.display()), &err))?;
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            StoreError::Backend(format!("cannot lock {}: {errno} (is another collector using it?)", path.display()))
        })?;
        // A new entry is durable only once its directory is: without this a crash could lose
        // the log (or the data dir) after frames in it were acknowledged.
        if new_log {
            sync_dir(data_dir)?;
        }
        if new_dir && let Some(parent) = data_dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        compaction::discard_unfinished(data_dir)?;
        let expiry = expiry::load(data_dir)?;
        let (mut state, mut end, mut mark) = replay(&file, &path)?;
        mark_removed(&mut state, &expiry);
        let mut file = file;
        if let Some(compacted) = compaction::compact(data_dir, &file, &state, min_reclaim)? {
            file = compacted;
            (state, end, mark) = replay(&file, &path)?;
            mark_removed(&mut state, &expiry);
        }
        let trees = Trees::new(data_dir)?;
        for (location, chain) in &state.locations {
            trees.repair(location, &file, &chain.positions, &chain.durable_tree_heads())?;
        }
        let state = RwLock::new(state);
        let index = Index::open(data_dir, cache_bytes, bucket_bits, &FileChains { state: &state, file: &file })?;
        Ok(Self {
            file,
            writer: Mutex::new(Writer::new(end)),
            state,
            trees,
            index,
            dir: data_dir.to_owned(),
            snapshots: Mutex::new(mark),
            expiry: Mutex::new(expiry),
        })
    }

    /// Appends one frame of items that `build` writes, as they are (no admission, no chain
    /// hashes computed), and replays it into the state as an open would: how [`super::migrate`]
    /// copies another store's records, publisher states and checkpoints into a new store.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the items do not follow the state (a position out of
    /// order): the frame is cut again, but the state may hold part of it, so the store must be
    /// dropped, as the migration does. [`StoreError::Backend`] on storage failure.
    pub(crate) fn import(&self, build: impl FnOnce(&mut FrameBuilder) -> Result<()>) -> Result<()> {
        let mut writer = self.lock_writer();
        let mut frame = FrameBuilder::default();
        build(&mut frame)?;
        let frame = frame.finish()?;
        let at = writer.append(&self.file, &frame)?;
        let body =
            log::Frame { body_offset: at + log::FRAME_HEADER, body: frame[log::FRAME_HEADER as usize..].to_vec() };
        let mut state = self.write_state();
        let replayed = body.items().and_then(|items| items.iter().try_for_each(|item| state.replay(item)));
        if let Err(err) = replayed {
            writer.cut(&self.file, at)?;
            return Err(err);
        }
        state.end = writer.end;
        Ok(())
    }

    fn chains(&self) -> FileChains<'_> {
        FileChains { state: &self.state, file: &self.file }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_expiry(&self) -> std::sync::MutexGuard<'_, Expiry> {
        self.expiry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change` to a copy of the retention record, stores the copy durably, and only
    /// then makes it the record: a failed write changes nothing.
    fn change_expiry<T>(&self, change: impl FnOnce(&mut Expiry) -> Result<T>) -> Result<T> {
        let mut expiry = self.lock_expiry();
        let mut changed = expiry.clone();
        let value = change(&mut changed)?;
        expiry::save(&self.dir, &changed)?;
        *expiry = changed;
        Ok(value)
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns the record at `seq` of `location` with its position filled in, `None` when the
    /// position is empty; `Some(None)` when it no longer decodes.
    fn load(&self, location: &Location, seq: u64) -> Result<Option<Option<proto::StoredEvent>>> {
        let position = {
            let state = self.read_state();
            let Some(index) = seq.checked_sub(1).and_then(|index| usize::try_from(index).ok()) else {
                return Ok(None);
            };
            match state
                .location(location.as_str())
                .filter(|state| !state.removed.contains(seq))
                .and_then(|state| state.positions.get(index))
                .filter(|position| !position.is_stub())
            {
                Some(position) => *position,
                None => return Ok(None),
            }
        };
        let bytes = read_record(&self.file, position)?;
        Ok(Some(proto::StoredEvent::decode(bytes.as_slice()).ok().map(|mut record| {
            // The position is where the record is, whatever it says.
            record.location = location.to_string();
            record.location_seq = seq;
            record
        })))
    }
}

/// Hides from reads the records `expiry` says were pruned.
fn mark_removed(state: &mut State, expiry: &Expiry) {
    for (location, chain) in &mut state.locations {
        chain.removed = Removed::of(expiry.pruned(location));
    }
}

/// Reads the log: writes the magic into a new one, loads the state snapshot when it fits the
/// log and replays the frames after it (all of them without a usable snapshot), and cuts a torn
/// tail, after copying it next to the log (`commit.log.torn-<offset>`) so that a cut never
/// destroys anything. Returns the state, where the next frame goes, and the snapshot used.
fn replay(file: &File, path: &Path) -> Result<(State, u64, SnapshotMark)> {
    use std::os::unix::fs::FileExt as _;
    let start = MAGIC.len() as u64;
    let len = file.metadata().map_err(|err| StoreError::io("cannot read the commit log", &err))?.len();
    let no_snapshot = SnapshotMark { end: start, bytes: 0 };
    if len < start {
        // New, or cut before its first frame: nothing in it was acknowledged.
        file.set_len(0).map_err(|err| StoreError::io("cannot truncate the commit log", &err))?;
        file.write_all_at(MAGIC, 0)
            .and_then(|()| file.sync_all())
            .map_err(|err| StoreError::io("cannot write the commit log", &err))?;
        return Ok((State { end: start, ..State::default() }, start, no_snapshot));
    }
    let mut magic = [0; 8];
    file.read_exact_at(&mut magic, 0).map_err(|err| StoreError::io("cannot read the commit log", &err))?;
    if &magic == log::MAGIC_V1 {
        return Err(StoreError::Corrupt(
            "the commit log has the unreleased format QTRLOG01, which this version does not read".into(),
        ));
    }
    if &magic != MAGIC {
        return Err(StoreError::Corrupt("the commit log does not start with its magic bytes".into()));
    }
    let started = Instant::now();
    match snapshot::load(path.parent().unwrap_or(Path::new(".")), file, len) {
        Ok(Some((state, bytes))) => {
            let mark = SnapshotMark { end: state.end, bytes };
            match replay_from(file, path, state, len) {
                Ok((state, end)) => {
                    tracing::info!(
                        snapshot_end = mark.end,
                        replayed = end - mark.end,
                        millis = started.elapsed().as_millis(),
                        "state loaded from the snapshot, the log replayed after it"
                    );
                    return Ok((state, end, mark));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the commit log after the snapshot does not replay, replaying it whole");
                }
            }
        }
        Ok(None) => {}
        Err(why) => tracing::warn!(reason = %why, "the state snapshot is not used, replaying the whole commit log"),
    }
    let (state, end) = replay_from(file, path, State { end: start, ..State::default() }, len)?;
    tracing::info!(replayed = end - start, millis = started.elapsed().as_millis(), "the commit log replayed whole");
    Ok((state, end, no_snapshot))
}

/// Replays the frames from `state.end` on into `state` and cuts a torn tail.
fn replay_from(file: &File, path: &Path, mut state: State, len: u64) -> Result<(State, u64)> {
    let end = log::read_frames(file, state.end, |frame| {
        for item in frame.items()? {
            state.replay(&item)?;
        }
        state.end = frame.body_offset + frame.body.len() as u64;
        Ok(())
    })?;
    if end < len {
        let kept = keep_torn_tail(file, path, end, len)?;
        tracing::warn!(offset = end, cut = len - end, kept = %kept.display(), "the commit log ends with a torn frame, cutting it");
        file.set_len(end)
            .and_then(|()| file.sync_all())
            .map_err(|err| StoreError::io("cannot truncate the torn tail of the commit log", &err))?;
    }
    Ok((state, end))
}

/// Copies the bytes of the log from `end` to `len` into `commit.log.torn-<end>` and makes the
/// copy durable, so that what the cut removes can still be examined.
fn keep_torn_tail(file: &File, path: &Path, end: u64, len: u64) -> Result<PathBuf> {
    use std::os::unix::fs::FileExt as _;
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".torn-{end}"));
    let kept = PathBuf::from(name);
    let mut bytes = vec![0; usize::try_from(len - end).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut bytes, end).map_err(|err| StoreError::io("cannot read the commit log", &err))?;
    let written = File::create(&kept).and_then(|mut copy| {
        std::io::Write::write_all(&mut copy, &bytes)?;
        copy.sync_all()
    });
    written.map_err(|err| StoreError::io(&format!("cannot keep the torn tail in {}", kept.display()), &err))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(kept)
}

/// Makes the entries of `dir` (a file created or renamed in it) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| StoreError::io(&format!("cannot sync the directory {}", dir.display()), &err))
}

impl EventStore for FileStore {
    fn create_collector(&self, location: &Location, create_time: Timestamp) -> Result<proto::Collector> {
        let mut writer = self.lock_writer();
        if self.read_state().location(location.as_str()).is_some() {
            return Err(StoreError::CollectorExists(location.to_string()));
        }
        let collector = proto::Collector {
            location: location.to_string(),
            create_time: Some(create_time),
            event_count: 0,
            head_chain_hash: Vec::new(),
        };
        let mut frame = FrameBuilder::default();
        frame.item(Item::Collector, &collector.encode_to_vec())?;
        writer.append(&self.file, &frame.finish()?)?;
        let mut state = self.write_state();
        state.add_collector(collector.clone());
        state.end = writer.end;
        Ok(collector)
    }

    fn file_bytes(&self) -> Option<u64> {
        let size = |name: &str| std::fs::metadata(self.dir.join(name)).ok().map(|metadata| metadata.len());
        Some(size(Self::FILE_NAME)? + size(Self::INDEX_FILE_NAME)?)
    }

    fn collector(&self, location: &Location) -> Result<Option<proto::Collector>> {
        Ok(self.read_state().location(location.as_str()).map(|state| state.collector.clone()))
    }

    fn collectors(&self) -> Result<Vec<proto::Collector>> {
        Ok(self.read_state().locations.values().map(|state| state.collector.clone()).collect())
    }

    fn append(&self, batches: Vec<AppendBatch>, receive_time: Timestamp) -> Result<Vec<AppendOutcome>> {
        let mut writer = self.lock_writer();
        let (outcomes, built) = {
            let state = self.read_state();
            let mut group = Group::new(&state, &self.file);
            let outcomes = super::publisher::add_in_order(batches, |batch| group.add(batch, receive_time))?;
            (outcomes, group.build()?)
        };
        let at = writer.append(&self.file, &built.frame)?;
        let mut state = self.write_state();
        let mut leaves: BTreeMap<&str, (u64, Vec<qtrail_tlog::Hash>)> = BTreeMap::new();
        for pending in &built.pending {
            let size = state.location(&pending.location).map_or(0, |chain| chain.positions.len() as u64);
            leaves.entry(&pending.location).or_insert_with(|| (size, Vec::new())).1.push(pending.leaf);
            state.add_event(&pending.location, Some(pending.id), &pending.chain_hash, pending.position(at))?;
        }
        state.publishers.extend(built.publishers);
        state.end = writer.end;
        // The frame is durable: the batches are stored whatever happens to the tree file, which
        // the next append or open completes from the log.
        for (location, (old_size, leaves)) in leaves {
            let positions = state.location(location).map_or(&[][..], |chain| &chain.positions);
            if let Err(err) = self.trees.extend(location, &self.file, positions, old_size, &leaves) {
                tracing::warn!(location = %location, error = %err, "the merkle tree is behind the log until the next append");
            }
        }
        Ok(outcomes)
    }

    fn index_step(&self, limit: u64) -> Result<IndexStep> {
        let locations: Vec<String> = self.read_state().locations.keys().cloned().collect();
        self.index.step(&self.chains(), &locations, limit)
    }

    fn snapshot(&self, min_growth: u64) -> Result<bool> {
        let mut mark = self.snapshots.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let mut copy = {
            let state = self.read_state();
            let growth = state.end.saturating_sub(mark.end);
            // A snapshot costs its size; growing the gap with it keeps what they write a fixed
            // share of what the log does, at the price of a replay after a crash that grows too.
            let due = if min_growth == 0 { growth > 0 } else { growth >= min_growth.max(mark.bytes.saturating_mul(4)) };
            if !due {
                return Ok(false);
            }
            snapshot::StateCopy::take(&state)
        };
        let copied = started.elapsed();
        // The trees up to the copy's sizes are durable before the snapshot that records their
        // roots is, as a checkpoint's tree is before the checkpoint (see `tree`).
        copy.record_trees(|location, size| match self.trees.durable_root(location, size) {
            Ok(root) => root,
            Err(err) => {
                tracing::warn!(location = %location, error = %err, "the snapshot records no merkle tree head");
                None
            }
        });
        let end = copy.end();
        let written = snapshot::write(&self.dir, &self.file, copy)?;
        {
            let mut state = self.write_state();
            for (location, ids, upto) in written.ids {
                if let Some(location) = state.locations.get_mut(&location) {
                    location.ids.fold(ids, upto);
                }
            }
        }
        *mark = SnapshotMark { end, bytes: written.bytes };
        tracing::info!(
            log_end = end,
            bytes = written.bytes,
            copy_micros = copied.as_micros(),
            millis = started.elapsed().as_millis(),
            "state snapshot written"
        );
        Ok(true)
    }

    fn indexed_seq(&self, location: &Location) -> Result<u64> {
        Index::indexed_seq(&self.index.begin_read()?, location.as_str())
    }

    fn publisher(&self, location: &Location, publisher_id: &str) -> Result<Option<proto::PublisherState>> {
        Ok(self.read_state().publishers.get(&(location.to_string(), publisher_id.to_owned())).cloned())
    }

    fn publishers(&self, location: &Location, after: Option<&str>, limit: usize) -> Result<Vec<proto::PublisherState>> {
        let state = self.read_state();
        let from = (location.to_string(), after.unwrap_or("").to_owned());
        Ok(state
            .publishers
            .range(from..)
            .take_while(|((loc, _), _)| loc == location.as_str())
            .filter(|((_, id), _)| Some(id.as_str()) != after)
            .take(limit)
            .map(|(_, state)| state.clone())
            .collect())
    }

    fn stored_bytes(&self, location: &Location, from_seq: u64, limit: usize) -> Result<Vec<StoredBytes>> {
        let chains = self.chains();
        let Some(chain) = chains.of(location.as_str()) else {
            return Ok(Vec::new());
        };
        let first = from_seq.max(1);
        let last = first.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX)).saturating_sub(1).min(chain.newest);
        if limit == 0 || first > last {
            return Ok(Vec::new());
        }
        // Records of a location lie mostly side by side in the log: one `pread` per stretch.
        let records = chain.run(first, last)?;
        Ok(records.into_iter().map(|(location_seq, bytes)| StoredBytes { location_seq, bytes }).collect())
    }

    fn read_hashes(&self, location: &Location, indexes: &[u64]) -> Result<Vec<qtrail_tlog::Hash>> {
        let size = match self.read_state().location(location.as_str()) {
            Some(chain) => chain.positions.len() as u64,
            None => return Err(StoreError::NoCollector(location.to_string())),
        };
        self.trees.read(location.as_str(), size, indexes)
    }

    fn last_seq(&self, location: &Location) -> Result<u64> {
        Ok(self.read_state().location(location.as_str()).map_or(0, |state| state.positions.len() as u64))
    }

    fn seq_of_event_id(&self, location: &Location, id: Uuid) -> Result<Option<u64>> {
        Ok(self.read_state().location(location.as_str()).and_then(|state| state.ids.get(id.as_u128())))
    }

    fn seq_of_chain_hash(&self, location: &Location, hash: &ChainHash) -> Result<Option<u64>> {
        for seq in 1..=self.last_seq(location)? {
            if let Some(Some(record)) = self.load(location, seq)?
                && record.chain_hash == hash.as_bytes()
            {
                return Ok(Some(seq));
            }
        }
        Ok(None)
    }

    fn add_checkpoint(&self, checkpoint: &proto::Checkpoint) -> Result<()> {
        let loc = checkpoint.location.as_str();
        let mut writer = self.lock_writer();
        let newest = match self.read_state().location(loc) {
            Some(state) => state.checkpoints.last_key_value().map_or(0, |(number, _)| *number),
            None => return Err(StoreError::NoCollector(loc.to_owned())),
        };
        if checkpoint.number != newest + 1 {
            return Err(StoreError::Backend(format!(
                "checkpoint {} of location `{loc}` does not follow checkpoint {newest}",
                checkpoint.number
            )));
        }
        let bytes = checkpoint.encode_to_vec();
        let mut payload = Vec::with_capacity(bytes.len() + loc.len() + 9);
        put_location(&mut payload, loc)?;
        payload.extend_from_slice(&checkpoint.number.to_le_bytes());
        payload.extend_from_slice(&bytes);
        let mut frame = FrameBuilder::default();
        frame.item(Item::Checkpoint, &payload)?;
        // The tree the checkpoint signs must be on the disk before the checkpoint is: an open
        // trusts the stored hashes of the newest checkpoint's tree once they give its root.
        self.trees.sync(loc)?;
        writer.append(&self.file, &frame.finish()?)?;
        let mut state = self.write_state();
        if let Some(location) = state.locations.get_mut(loc) {
            location.checkpoints.insert(checkpoint.number, bytes);
        }
        state.end = writer.end;
        Ok(())
    }

    fn checkpoints(&self, location: &Location, before: Option<u64>, limit: usize) -> Result<Vec<CheckpointEntry>> {
        let state = self.read_state();
        let Some(state) = state.location(location.as_str()) else {
            return Ok(Vec::new());
        };
        Ok(state
            .checkpoints
            .range(..before.unwrap_or(u64::MAX))
            .rev()
            .take(limit)
            .map(|(number, bytes)| CheckpointEntry::read(location, *number, bytes))
            .collect())
    }

    fn prune(
        &self,
        location: &Location,
        through_seq: u64,
        keep: &dyn Fn(&proto::StoredEvent) -> bool,
    ) -> Result<PruneOutcome> {
        expiry::prune(self, location, through_seq, keep)
    }

    fn pruned_through(&self, location: &Location) -> Result<u64> {
        Ok(self.lock_expiry().pruned_through(location.as_str()))
    }

    fn retention(&self, location: &Location) -> Result<proto::RetentionPolicy> {
        Ok(self.lock_expiry().retention(location.as_str()))
    }

    fn set_retention(&self, policy: &proto::RetentionPolicy) -> Result<()> {
        self.change_expiry(|expiry| {
            expiry.set_retention(policy);
            Ok(())
        })
    }

    fn holds(&self) -> Result<Vec<proto::LegalHold>> {
        Ok(self.lock_expiry().holds.clone())
    }

    fn set_hold(&self, hold: &proto::LegalHold, on: bool) -> Result<()> {
        self.change_expiry(|expiry| expiry.set_hold(hold, on))
    }

    fn query(
        &self,
        location: &Location,
        filter: &Filter,
        order: Order,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<proto::StoredEvent>> {
        // The index's snapshot first (see the module docs).
        let index_txn = self.index.begin_read()?;
        let chains = self.chains();
        let Some(chain) = chains.of(location.as_str()) else {
            return Ok(Vec::new());
        };
        let query = index::Query { location, filter, order, after, limit };
        self.index.matching(&index_txn, &chain, &query, |seq| {
            Ok(self.load(location, seq)?.flatten().filter(|record| filter.matches(record)))
        })
    }
}

#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod tests;
