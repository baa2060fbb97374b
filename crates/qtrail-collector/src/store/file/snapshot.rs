//! The state snapshot, `state.snapshot`: the in-memory state ([`State`]) as of a frame
//! boundary of the commit log, so that an open replays only the frames after it instead of the
//! whole log, whose replay grows with the store.
//!
//! # Format
//!
//! Little-endian throughout: the magic [`MAGIC`] (its last bytes the version), `log_end: u64`
//! (the boundary it covers), `tail_crc: u32` (CRC32C of the [`TAIL`] bytes of the log before
//! `log_end`), `locations: u32`, then per location `collector_len: u32` and the protobuf
//! `Collector`, `positions: u64` and each `offset: u64, len: u32`, `ids: u64` and each
//! `id: u128, location_seq: u64` sorted by id, `checkpoints: u32` and each `number: u64,
//! len: u32` and the protobuf bytes, `tree_size: u64` and `tree_root: [u8; 32]` (the Merkle
//! tree of the location's events as its tree file held it, made durable before the snapshot
//! was written; size 0 when none is recorded); then `publishers: u32` and each `location_len: u8`,
//! location, `len: u32` and the protobuf `PublisherState`; last a CRC32C of all before it.
//!
//! # What is trusted
//!
//! Nothing on its word. The snapshot is used only when its CRC holds, its boundary lies in the
//! log, the log's bytes before the boundary hash to `tail_crc`, a frame header that passes its
//! check (or the end of the file) follows the boundary, every position lies before it, and each
//! location's last record reads back from the log with the location and chain hash the snapshot
//! holds for it (unless a compaction left only its stub, which holds no chain hash). Anything else means a full replay (a snapshot of an older version too), with a warning: a snapshot only saves time,
//! it never decides what is stored. Damage to the log before the boundary that a full replay
//! would refuse is not looked for (that would be the full scan this avoids); verification
//! reads every record and still finds it. The tree head is checked by the open's tree repair
//! as a checkpoint's is: a tree file that does not give its root is rebuilt from the log.
//!
//! It is written in the background (see [`super::FileStore::snapshot`]) to a temporary file,
//! synced, renamed over the old one and the directory synced, so a crash leaves the old
//! snapshot or the new one whole.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use prost::Message as _;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::Hash;

use super::ids::{Ids, Parts, Sorted};
use super::log::{FRAME_HEADER, MAGIC as LOG_MAGIC, put_location};
use super::state::{LocationState, Position, State, read_record, record_head};
use crate::store::{Result, StoreError};

/// File name of the snapshot inside the data directory.
pub(super) const FILE_NAME: &str = "state.snapshot";

/// The first bytes of a snapshot, with the format's version.
const MAGIC: &[u8; 8] = b"QTRSNP02";

/// Bytes of the log before the boundary whose CRC the snapshot holds: enough to tell this log
/// from another one or from itself rewritten, cheap to read.
const TAIL: u64 = 4096;

/// Why a snapshot is not used.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unusable {
    #[error("it cannot be read: {0}")]
    Unreadable(String),
    #[error("it is damaged or cut short ({0})")]
    Damaged(&'static str),
    #[error("it does not fit the commit log ({0})")]
    Mismatch(String),
}

/// One location as copied for a snapshot.
struct LocationCopy {
    name: String,
    collector: proto::Collector,
    positions: Vec<Position>,
    ids: Parts,
    checkpoints: Vec<(u64, Vec<u8>)>,
    /// The tree's size and root, once [`StateCopy::record_trees`] has read them.
    tree: Option<(u64, Hash)>,
}

/// What a snapshot is made of, copied from the state while its read lock is held; encoding
/// and writing happen after it is released.
pub(super) struct StateCopy {
    end: u64,
    locations: Vec<LocationCopy>,
    publishers: Vec<(String, proto::PublisherState)>,
}

impl StateCopy {
    pub(super) fn take(state: &State) -> Self {
        let locations = state
            .locations
            .iter()
            .map(|(name, location)| LocationCopy {
                name: name.clone(),
                collector: location.collector.clone(),
                positions: location.positions.clone(),
                ids: location.ids.parts(),
                checkpoints: location.checkpoints.iter().map(|(number, bytes)| (*number, bytes.clone())).collect(),
                tree: None,
            })
            .collect();
        let publishers =
            state.publishers.iter().map(|((location, _), state)| (location.clone(), state.clone())).collect();
        Self { end: state.end, locations, publishers }
    }

    /// Records each location's tree head at the copy's size, which `root` returns (made
    /// durable first), so that an open starts its tree repair there; done after the state's
    /// lock is released, since it syncs files.
    pub(super) fn record_trees(&mut self, mut root: impl FnMut(&str, u64) -> Option<Hash>) {
        for location in &mut self.locations {
            let size = location.positions.len() as u64;
            location.tree = root(&location.name, size).map(|root| (size, root));
        }
    }

    /// Returns the log boundary it covers.
    pub(super) fn end(&self) -> u64 {
        self.end
    }
}

/// A snapshot written: its size, and each location's ids merged, to fold into the state.
pub(super) struct Written {
    pub(super) bytes: u64,
    pub(super) ids: Vec<(String, Sorted, u64)>,
}

/// Encodes `copy` and makes it the snapshot in `dir`, durably.
pub(super) fn write(dir: &Path, log: &File, copy: StateCopy) -> Result<Written> {
    let mut out = Vec::with_capacity(64 + copy.locations.iter().map(|l| l.positions.len() * 36).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&copy.end.to_le_bytes());
    out.extend_from_slice(&tail_crc(log, copy.end)?.to_le_bytes());
    out.extend_from_slice(&len32(copy.locations.len())?.to_le_bytes());
    let mut merged_ids = Vec::with_capacity(copy.locations.len());
    for location in copy.locations {
        put_bytes(&mut out, &location.collector.encode_to_vec())?;
        out.extend_from_slice(&(location.positions.len() as u64).to_le_bytes());
        for position in &location.positions {
            out.extend_from_slice(&position.offset.to_le_bytes());
            out.extend_from_slice(&position.len.to_le_bytes());
        }
        let (base, recent) = location.ids;
        let merged: Sorted = Ids::merge(&base, recent).into();
        out.extend_from_slice(&(merged.len() as u64).to_le_bytes());
        for (id, seq) in merged.iter() {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
        }
        out.extend_from_slice(&len32(location.checkpoints.len())?.to_le_bytes());
        for (number, bytes) in &location.checkpoints {
            out.extend_from_slice(&number.to_le_bytes());
            put_bytes(&mut out, bytes)?;
        }
        let (tree_size, tree_root) = location.tree.unwrap_or_default();
        out.extend_from_slice(&tree_size.to_le_bytes());
        out.extend_from_slice(&tree_root);
        merged_ids.push((location.name, merged, location.positions.len() as u64));
    }
    out.extend_from_slice(&len32(copy.publishers.len())?.to_le_bytes());
    for (location, state) in &copy.publishers {
        put_location(&mut out, location)?;
        put_bytes(&mut out, &state.encode_to_vec())?;
    }
    out.extend_from_slice(&crc32c::crc32c(&out).to_le_bytes());

    let path = dir.join(FILE_NAME);
    let temp = dir.join(format!("{FILE_NAME}.tmp"));
    let written = File::create(&temp).and_then(|mut file| {
        file.write_all(&out)?;
        file.sync_all()
    });
    written
        .and_then(|()| std::fs::rename(&temp, &path))
        .map_err(|err| StoreError::io(&format!("cannot write the snapshot {}", path.display()), &err))?;
    super::sync_dir(dir)?;
    Ok(Written { bytes: out.len() as u64, ids: merged_ids })
}

/// Returns the state the snapshot in `dir` holds, checked against `log` of `log_len` bytes;
/// `Ok(None)` when there is none.
///
/// # Errors
/// [`Unusable`] says why a snapshot that exists is not used.
pub(super) fn load(dir: &Path, log: &File, log_len: u64) -> std::result::Result<Option<(State, u64)>, Unusable> {
    let bytes = match std::fs::read(dir.join(FILE_NAME)) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Unusable::Unreadable(err.to_string())),
    };
    let (body, crc) = bytes.split_last_chunk::<4>().ok_or(Unusable::Damaged("shorter than its checksum"))?;
    if crc32c::crc32c(body) != u32::from_le_bytes(*crc) {
        return Err(Unusable::Damaged("its checksum fails"));
    }
    let (state, tail) = decode(body)?;
    check(&state, tail, log, log_len)?;
    Ok(Some((state, bytes.len() as u64)))
}

/// Returns the state and the tail CRC a snapshot's body holds.
fn decode(body: &[u8]) -> std::result::Result<(State, u32), Unusable> {
    let mut input = Input(body);
    if input.take(MAGIC.len())? != MAGIC {
        return Err(Unusable::Damaged("not a snapshot of this version"));
    }
    let mut state = State { end: input.u64()?, ..State::default() };
    let tail = input.u32()?;
    for _ in 0..input.u32()? {
        let collector = proto::Collector::decode(input.bytes()?).map_err(|_| Unusable::Damaged("a collector"))?;
        let count = input.count(12)?;
        let mut positions = Vec::with_capacity(count);
        for _ in 0..count {
            positions.push(Position { offset: input.u64()?, len: input.u32()? });
        }
        let count = input.count(24)?;
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            ids.push((u128::from_le_bytes(input.array()?), input.u64()?));
        }
        if ids.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return Err(Unusable::Damaged("its ids are not sorted"));
        }
        let mut checkpoints = std::collections::BTreeMap::new();
        for _ in 0..input.u32()? {
            let number = input.u64()?;
            checkpoints.insert(number, input.bytes()?.to_vec());
        }
        let tree_size = input.u64()?;
        let tree_root: Hash = input.array()?;
        if tree_size != 0 && tree_size != positions.len() as u64 {
            return Err(Unusable::Damaged("a tree size"));
        }
        let snapshot_tree = (tree_size > 0).then_some((tree_size, tree_root));
        let location = LocationState {
            collector,
            positions,
            ids: Ids::from_sorted(ids),
            checkpoints,
            snapshot_tree,
            removed: Default::default(),
        };
        state.locations.insert(location.collector.location.clone(), location);
    }
    for _ in 0..input.u32()? {
        let len = usize::from(input.take(1)?[0]);
        let location = std::str::from_utf8(input.take(len)?).map_err(|_| Unusable::Damaged("a location"))?.to_owned();
        let publisher =
            proto::PublisherState::decode(input.bytes()?).map_err(|_| Unusable::Damaged("a publisher state"))?;
        state.publishers.insert((location, publisher.publisher_id.clone()), publisher);
    }
    if !input.0.is_empty() {
        return Err(Unusable::Damaged("bytes after its end"));
    }
    Ok((state, tail))
}

/// The spot checks against the log (see the module docs).
fn check(state: &State, tail: u32, log: &File, log_len: u64) -> std::result::Result<(), Unusable> {
    let mismatch = |what: String| Unusable::Mismatch(what);
    if state.end < LOG_MAGIC.len() as u64 || state.end > log_len {
        return Err(mismatch(format!("it covers {} bytes of a log of {log_len}", state.end)));
    }
    if tail_crc(log, state.end).map_err(|err| Unusable::Unreadable(err.to_string()))? != tail {
        return Err(mismatch(format!("the log's bytes before offset {} differ", state.end)));
    }
    if log_len - state.end >= FRAME_HEADER && !header_at(log, state.end)? {
        return Err(mismatch(format!("no frame starts at offset {}", state.end)));
    }
    for (name, location) in &state.locations {
        if name != &location.collector.location || location.collector.event_count != location.positions.len() as u64 {
            return Err(Unusable::Damaged("a collector"));
        }
        if location.positions.iter().any(|p| p.offset + u64::from(p.len) > state.end) {
            return Err(mismatch(format!("a position of location `{name}` lies past the boundary")));
        }
        // A compacted record's stub holds no chain hash to compare (see `compaction`).
        let Some(last) = location.positions.last().filter(|last| !last.is_stub()) else {
            continue;
        };
        let record = read_record(log, *last).map_err(|err| Unusable::Unreadable(err.to_string()))?;
        let fits = record_head(&record).is_some_and(|(record_location, hash)| {
            record_location == *name && hash == location.collector.head_chain_hash
        });
        if !fits {
            return Err(mismatch(format!("the last record of location `{name}` differs")));
        }
    }
    Ok(())
}

/// Returns the CRC32C of the [`TAIL`] bytes of the log before `end` (fewer in a short log).
fn tail_crc(log: &File, end: u64) -> Result<u32> {
    let from = end.saturating_sub(TAIL).max(LOG_MAGIC.len() as u64).min(end);
    let mut bytes = vec![0; usize::try_from(end - from).unwrap_or(0)];
    log.read_exact_at(&mut bytes, from).map_err(|err| StoreError::io("cannot read the commit log", &err))?;
    Ok(crc32c::crc32c(&bytes))
}

/// Returns whether a frame header that passes its check starts at `at`.
fn header_at(log: &File, at: u64) -> std::result::Result<bool, Unusable> {
    let mut header = [0; FRAME_HEADER as usize];
    log.read_exact_at(&mut header, at).map_err(|err| Unusable::Unreadable(err.to_string()))?;
    let (words, check) = header.split_at(8);
    Ok(crc32c::crc32c(words).to_le_bytes() == check)
}

fn len32(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| StoreError::Backend("a snapshot count is larger than 2^32".into()))
}

/// Writes `len: u32` then `bytes`.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<()> {
    out.extend_from_slice(&len32(bytes.len())?.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// The unread rest of a snapshot's body; every read fails as [`Unusable::Damaged`] past its end.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, len: usize) -> std::result::Result<&'a [u8], Unusable> {
        let (taken, rest) = self.0.split_at_checked(len).ok_or(Unusable::Damaged("cut short"))?;
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], Unusable> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u32(&mut self) -> std::result::Result<u32, Unusable> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> std::result::Result<u64, Unusable> {
        self.array().map(u64::from_le_bytes)
    }

    /// Reads a count of entries of `size` bytes each, refused when they cannot fit in what is
    /// left, so that a damaged count cannot ask for an absurd allocation.
    fn count(&mut self, size: usize) -> std::result::Result<usize, Unusable> {
        let count = usize::try_from(self.u64()?).map_err(|_| Unusable::Damaged("a count"))?;
        if count.checked_mul(size).is_none_or(|bytes| bytes > self.0.len()) {
            return Err(Unusable::Damaged("a count"));
        }
        Ok(count)
    }

    /// Reads `len: u32` then that many bytes.
    fn bytes(&mut self) -> std::result::Result<&'a [u8], Unusable> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests;
