//! What the file store keeps in memory, rebuilt from the commit log at open and moved forward
//! by each durable write: collectors, where each record is in the log, the event ids for
//! deduplication, publisher states and checkpoints. Records themselves stay in the log and are
//! read with `pread` ([`FileChain`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::{PoisonError, RwLock};

use prost::Message as _;
use qtrail_proto::qtrail::audit::v1 as proto;

use super::ids::Ids;
use super::log::{FrameItem, Item, take_location};
use crate::store::expiry::Removed;
use crate::store::index::{Chain, Chains, Records, SeqBounds, Seqs};
use crate::store::{Result, StoreError};

/// Where a record is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) offset: u64,
    pub(super) len: u32,
}

impl Position {
    /// Returns whether this is the stub of a record a compaction dropped: `len` 0, `offset`
    /// where its leaf hash is (see [`super::compaction`]). No record is empty, so a stub is
    /// never read as one.
    pub(super) fn is_stub(self) -> bool {
        self.len == 0
    }
}

/// One location: its collector and chain.
#[derive(Debug)]
pub(super) struct LocationState {
    /// The collector, `event_count` and `head_chain_hash` kept current.
    pub(super) collector: proto::Collector,
    /// Where the record at `location_seq` s is: `positions[s - 1]`.
    pub(super) positions: Vec<Position>,
    /// Event id → `location_seq`.
    pub(super) ids: Ids,
    /// Checkpoint number → protobuf `Checkpoint`, as stored.
    pub(super) checkpoints: BTreeMap<u64, Vec<u8>>,
    /// The tree size and root the snapshot this state was loaded from holds (see
    /// [`super::snapshot`]): where the tree repair of an open may start, like a checkpoint's.
    /// `None` when the state was replayed whole.
    pub(super) snapshot_tree: Option<(u64, qtrail_tlog::Hash)>,
    /// Positions pruned (see [`super::expiry`]): still in the log, never read.
    pub(super) removed: Removed,
}

/// Everything in memory.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) locations: BTreeMap<String, LocationState>,
    pub(super) publishers: BTreeMap<(String, String), proto::PublisherState>,
    /// Where in the log the frames this state holds end: a snapshot of it covers the log up
    /// to there. Zero until the log is read.
    pub(super) end: u64,
}

/// The head of a stored record: what replaying it needs, without decoding the event.
#[derive(Clone, PartialEq, prost::Message)]
struct RecordHead {
    #[prost(message, optional, tag = "1")]
    event: Option<EventId>,
    #[prost(string, tag = "2")]
    location: String,
    #[prost(bytes = "vec", tag = "4")]
    chain_hash: Vec<u8>,
}

/// `AuditEvent.id`.
#[derive(Clone, PartialEq, prost::Message)]
struct EventId {
    #[prost(string, tag = "1")]
    id: String,
}

impl LocationState {
    /// Returns the tree size and root of the newest checkpoint that signs a tree, if any.
    pub(super) fn newest_tree_head(&self) -> Option<(u64, qtrail_tlog::Hash)> {
        let checkpoint = proto::Checkpoint::decode(self.checkpoints.last_key_value()?.1.as_slice()).ok()?;
        let root = qtrail_tlog::Hash::try_from(checkpoint.root.as_slice()).ok()?;
        (checkpoint.tree_size > 0).then_some((checkpoint.tree_size, root))
    }

    /// Returns the tree heads whose trees were made durable before they were recorded: the
    /// newest checkpoint's and the snapshot's, the larger first.
    pub(super) fn durable_tree_heads(&self) -> Vec<(u64, qtrail_tlog::Hash)> {
        let mut heads: Vec<_> = self.newest_tree_head().into_iter().chain(self.snapshot_tree).collect();
        heads.sort_by_key(|head| std::cmp::Reverse(head.0));
        heads
    }
}

impl State {
    /// Returns the location's state.
    pub(super) fn location(&self, location: &str) -> Option<&LocationState> {
        self.locations.get(location)
    }

    /// Adds a new collector.
    pub(super) fn add_collector(&mut self, collector: proto::Collector) {
        let location = LocationState {
            collector: collector.clone(),
            positions: Vec::new(),
            ids: Ids::default(),
            checkpoints: BTreeMap::new(),
            snapshot_tree: None,
            removed: Removed::default(),
        };
        self.locations.insert(collector.location, location);
    }

    /// Adds the next record of `location`, stored at `position`, whose event has `id` (none
    /// when it does not parse) and whose chain hash is `chain_hash`. Its position in the chain
    /// is its place in the log, whatever the record says: a record removed, added or moved in
    /// the file shows as a fault of the chain, which verification names, not as a store that no
    /// longer opens.
    pub(super) fn add_event(
        &mut self,
        location: &str,
        id: Option<u128>,
        chain_hash: &[u8],
        position: Position,
    ) -> Result<()> {
        let state = self.locations.get_mut(location).ok_or_else(|| {
            StoreError::Corrupt(format!("the commit log holds an event of location `{location}` before its collector"))
        })?;
        state.positions.push(position);
        let location_seq = state.positions.len() as u64;
        if let Some(id) = id {
            state.ids.insert(id, location_seq);
        }
        state.collector.event_count = location_seq;
        chain_hash.clone_into(&mut state.collector.head_chain_hash);
        Ok(())
    }

    /// Replays one item of a frame read back from the log.
    pub(super) fn replay(&mut self, item: &FrameItem<'_>) -> Result<()> {
        let bad =
            |what: &str| StoreError::Corrupt(format!("the commit log's {what} at offset {} is malformed", item.offset));
        match item.item {
            Item::Collector => {
                let collector = proto::Collector::decode(item.payload).map_err(|_| bad("collector"))?;
                self.add_collector(collector);
            }
            Item::Event => {
                let (location, id, chain_hash) = event_head(item.payload).ok_or_else(|| bad("event"))?;
                let len = u32::try_from(item.payload.len()).map_err(|_| bad("event"))?;
                let position = Position { offset: item.offset, len };
                self.add_event(&location, id, &chain_hash, position)?;
            }
            Item::Pruned => super::compaction::replay(self, item)?,
            Item::Publisher => {
                let (location, bytes) = take_location(item.payload).ok_or_else(|| bad("publisher state"))?;
                let state = proto::PublisherState::decode(bytes).map_err(|_| bad("publisher state"))?;
                self.publishers.insert((location.to_owned(), state.publisher_id.clone()), state);
            }
            Item::Checkpoint => {
                let (location, rest) = take_location(item.payload).ok_or_else(|| bad("checkpoint"))?;
                let (number, bytes) = rest.split_first_chunk::<8>().ok_or_else(|| bad("checkpoint"))?;
                let location = self.locations.get_mut(location).ok_or_else(|| bad("checkpoint"))?;
                location.checkpoints.insert(u64::from_le_bytes(*number), bytes.to_vec());
            }
        }
        Ok(())
    }
}

/// Returns the location, event id (none when it does not parse) and chain hash of a stored
/// record, `None` when it does not decode.
pub(super) fn event_head(bytes: &[u8]) -> Option<(String, Option<u128>, Vec<u8>)> {
    let head = RecordHead::decode(bytes).ok()?;
    let id = head.event.and_then(|event| uuid::Uuid::parse_str(&event.id).ok()).map(|id| id.as_u128());
    Some((head.location, id, head.chain_hash))
}

/// Returns the location and chain hash a stored record names, `None` when it does not decode.
pub(super) fn record_head(bytes: &[u8]) -> Option<(String, Vec<u8>)> {
    RecordHead::decode(bytes).ok().map(|head| (head.location, head.chain_hash))
}

/// Reads the record at `position` from the log.
pub(super) fn read_record(file: &File, position: Position) -> Result<Vec<u8>> {
    let mut bytes = vec![0; position.len as usize];
    file.read_exact_at(&mut bytes, position.offset)
        .map_err(|err| StoreError::io("cannot read the commit log", &err))?;
    Ok(bytes)
}

/// One location's chain in the log, as the query indexes read it: positions up to `newest`,
/// the snapshot taken when it was made (records are never changed, only added).
pub(super) struct FileChain<'a> {
    pub(super) state: &'a RwLock<State>,
    pub(super) file: &'a File,
    pub(super) location: String,
    pub(super) newest: u64,
}

impl FileChain<'_> {
    fn position(&self, seq: u64) -> Option<Position> {
        if seq == 0 || seq > self.newest {
            return None;
        }
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let index = usize::try_from(seq - 1).ok()?;
        let chain = state.location(&self.location)?;
        if chain.removed.contains(seq) {
            return None;
        }
        chain.positions.get(index).copied().filter(|position| !position.is_stub())
    }

    fn dense(&self, bounds: SeqBounds, descending: bool) -> Box<dyn Iterator<Item = u64> + Send> {
        let (low, high) = (bounds.low.max(1), bounds.high.min(self.newest));
        if descending { Box::new((low..=high).rev()) } else { Box::new(low..=high) }
    }
}

/// Positions read together by [`Chain::records`].
const RUN: u64 = 256;

/// Largest gap between two records of a run read with one `pread`: the bytes of other items
/// between them are read and dropped, which costs less than a system call up to about this.
const MAX_GAP: u64 = 16 * 1024;

impl FileChain<'_> {
    /// Reads the records `first..=last`, ascending, one `pread` per stretch of the log in which
    /// they lie close together.
    pub(super) fn run(&self, first: u64, last: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let (positions, removed): (Vec<Position>, _) = {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            let Some(chain) = state.location(&self.location) else {
                return Ok(Vec::new());
            };
            let to = usize::try_from(last).unwrap_or(usize::MAX).min(chain.positions.len());
            let from = usize::try_from(first - 1).unwrap_or(usize::MAX).min(to);
            (chain.positions[from..to].to_vec(), chain.removed.clone())
        };
        let mut records = Vec::with_capacity(positions.len());
        let mut seq = first;
        for stretch in
            positions.chunk_by(|a, b| b.offset >= a.offset && b.offset - a.offset <= u64::from(a.len) + MAX_GAP)
        {
            let (Some(head), Some(tail)) = (stretch.first(), stretch.last()) else {
                continue;
            };
            let len = u32::try_from(tail.offset + u64::from(tail.len) - head.offset)
                .map_err(|_| StoreError::Corrupt("a stretch of the commit log is larger than 4 GiB".into()))?;
            let span = read_record(self.file, Position { offset: head.offset, len })?;
            for position in stretch {
                let at = usize::try_from(position.offset - head.offset).unwrap_or(usize::MAX);
                let bytes = span.get(at..at + position.len as usize).ok_or_else(|| {
                    StoreError::Corrupt(format!("record at location_seq {seq} lies outside its stretch of the log"))
                })?;
                // A pruned record is still in the log until a compaction leaves a stub of it;
                // reads skip both (see `expiry`, `compaction`).
                if !removed.contains(seq) && !position.is_stub() {
                    records.push((seq, bytes.to_vec()));
                }
                seq += 1;
            }
        }
        Ok(records)
    }
}

impl Chain for FileChain<'_> {
    fn newest(&self) -> Result<u64> {
        Ok(self.newest)
    }

    fn record(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        self.position(seq).map(|position| read_record(self.file, position)).transpose()
    }

    fn positions(&self, bounds: SeqBounds, descending: bool) -> Result<Seqs<'_>> {
        Ok(Box::new(self.dense(bounds, descending).map(Ok)))
    }

    fn records(&self, bounds: SeqBounds, descending: bool) -> Result<Records<'_>> {
        let (low, high) = (bounds.low.max(1), bounds.high.min(self.newest));
        let mut next = if descending { high } else { low };
        let mut chunk = Vec::new().into_iter();
        Ok(Box::new(std::iter::from_fn(move || {
            loop {
                if let Some(record) = chunk.next() {
                    return Some(Ok(record));
                }
                if low > high || !(low..=high).contains(&next) {
                    return None;
                }
                let (first, last) = if descending {
                    (next.saturating_sub(RUN - 1).max(low), next)
                } else {
                    (next, next.saturating_add(RUN - 1).min(high))
                };
                // Past the bounds either way, so that an error ends the iteration.
                next = if descending { first - 1 } else { last.saturating_add(1) };
                match self.run(first, last) {
                    Ok(mut records) => {
                        if descending {
                            records.reverse();
                        }
                        chunk = records.into_iter();
                    }
                    Err(err) => {
                        next = 0;
                        return Some(Err(err));
                    }
                }
            }
        })))
    }
}

/// Every location's chain in the log, each up to its newest position when asked.
pub(super) struct FileChains<'a> {
    pub(super) state: &'a RwLock<State>,
    pub(super) file: &'a File,
}

impl FileChains<'_> {
    /// Returns the chain of `location`, `None` when it has no collector.
    pub(super) fn of(&self, location: &str) -> Option<FileChain<'_>> {
        let newest = {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            state.location(location)?.positions.len() as u64
        };
        Some(FileChain { state: self.state, file: self.file, location: location.to_owned(), newest })
    }
}

impl Chains for FileChains<'_> {
    fn chain(&self, location: &str) -> Result<Option<Box<dyn Chain + '_>>> {
        Ok(self.of(location).map(|chain| Box::new(chain) as Box<dyn Chain>))
    }
}
