//! Reading and rewriting the commit log of a stopped store, item by item: for inspection, and
//! for the tests that alter a store behind the collector's back to check that verification
//! names each fault. A rewrite recomputes every frame's CRC, as someone who knows the format
//! would; that is why the chain hashes and signed checkpoints, not the CRCs, are the evidence.

use std::path::Path;

use prost::Message as _;
use qtrail_proto::qtrail::audit::v1 as proto;

use super::FileStore;
use super::log::{self, FrameBuilder, Item, MAGIC, put_location, take_location};
use crate::store::{Result, StoreError};

/// One item of the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A new collector.
    Collector(proto::Collector),
    /// A stored record; its position is its place among its location's records.
    Event(Box<proto::StoredEvent>),
    /// A publisher's state from then on.
    Publisher { location: String, state: proto::PublisherState },
    /// A checkpoint as stored under `number`.
    Checkpoint { location: String, number: u64, bytes: Vec<u8> },
    /// Records a compaction reduced to stubs, the item as stored (see `compaction`).
    Pruned(Vec<u8>),
}

/// Returns the items of the log in `data_dir`, in order.
///
/// # Errors
/// As [`FileStore::open`] for a damaged log; [`StoreError::Backend`] when it cannot be read.
pub fn read(data_dir: &Path) -> Result<Vec<Entry>> {
    let file = std::fs::File::open(data_dir.join(FileStore::FILE_NAME))
        .map_err(|err| StoreError::io("cannot open the commit log", &err))?;
    let mut entries = Vec::new();
    log::read_frames(&file, MAGIC.len() as u64, |frame| {
        for item in frame.items()? {
            entries.push(entry(item.item, item.payload)?);
        }
        Ok(())
    })?;
    Ok(entries)
}

fn entry(item: Item, payload: &[u8]) -> Result<Entry> {
    let bad = || StoreError::Corrupt("an item of the commit log is malformed".into());
    Ok(match item {
        Item::Collector => Entry::Collector(proto::Collector::decode(payload).map_err(|_| bad())?),
        Item::Event => Entry::Event(Box::new(proto::StoredEvent::decode(payload).map_err(|_| bad())?)),
        Item::Publisher => {
            let (location, bytes) = take_location(payload).ok_or_else(bad)?;
            let state = proto::PublisherState::decode(bytes).map_err(|_| bad())?;
            Entry::Publisher { location: location.to_owned(), state }
        }
        Item::Checkpoint => {
            let (location, rest) = take_location(payload).ok_or_else(bad)?;
            let (number, bytes) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
            Entry::Checkpoint {
                location: location.to_owned(),
                number: u64::from_le_bytes(*number),
                bytes: bytes.to_vec(),
            }
        }
        Item::Pruned => Entry::Pruned(payload.to_vec()),
    })
}

/// Replaces the log in `data_dir` with `entries`, one frame each, and removes the state
/// snapshot, which describes the log replaced (an open would find it does not fit, mostly; a
/// rewrite that keeps every offset could pass its spot checks).
///
/// # Errors
/// [`StoreError::Backend`] when it cannot be written.
pub fn write(data_dir: &Path, entries: &[Entry]) -> Result<()> {
    let mut bytes = MAGIC.to_vec();
    for entry in entries {
        let mut frame = FrameBuilder::default();
        let mut payload = Vec::new();
        let item = match entry {
            Entry::Collector(collector) => {
                collector.encode(&mut payload).map_err(encode)?;
                Item::Collector
            }
            Entry::Event(record) => {
                record.encode(&mut payload).map_err(encode)?;
                Item::Event
            }
            Entry::Publisher { location, state } => {
                put_location(&mut payload, location)?;
                state.encode(&mut payload).map_err(encode)?;
                Item::Publisher
            }
            Entry::Checkpoint { location, number, bytes } => {
                put_location(&mut payload, location)?;
                payload.extend_from_slice(&number.to_le_bytes());
                payload.extend_from_slice(bytes);
                Item::Checkpoint
            }
            Entry::Pruned(bytes) => {
                payload.extend_from_slice(bytes);
                Item::Pruned
            }
        };
        frame.item(item, &payload)?;
        bytes.extend_from_slice(&frame.finish()?);
    }
    match std::fs::remove_file(data_dir.join(super::snapshot::FILE_NAME)) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(StoreError::io("cannot remove the state snapshot", &err));
        }
        _ => {}
    }
    std::fs::write(data_dir.join(FileStore::FILE_NAME), bytes)
        .map_err(|err| StoreError::io("cannot write the commit log", &err))
}

fn encode(err: prost::EncodeError) -> StoreError {
    StoreError::Backend(format!("cannot encode an item: {err}"))
}
