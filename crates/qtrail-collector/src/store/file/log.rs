//! The commit log: one file of frames, one frame per durable write (a group commit, a new
//! collector, a checkpoint), each written whole with `write_all` and made durable with one
//! `fdatasync` before its write is acknowledged.
//!
//! # Format
//!
//! The file starts with the 8-byte magic [`MAGIC`]. A frame is `len: u32 LE`, `crc: u32 LE`
//! (CRC32C of the body), `header_crc: u32 LE` (CRC32C of the 8 bytes before it), then `len`
//! bytes of body. The body is a sequence of items, each `tag: u8`, `len: u32 LE`, then `len`
//! bytes (see [`Item`]). The header has its own check so that a damaged `len` is told apart
//! from a frame cut short: without it, a bit flip that makes `len` run past the end of the file
//! would read as a torn tail and every acknowledged frame after it would be cut.
//!
//! # Repair
//!
//! Only the last frame can be unacknowledged: frames are written one after the other, each
//! durable before the next starts. So a frame that fails a check is a torn tail, never
//! acknowledged, and is cut (the caller keeps a copy of the cut bytes), if and only if no
//! valid frame (header and body passing their checks) follows it: a crash may persist a later
//! page of the last frame and not the one with its header, or leave zeros or stale bytes after
//! it. A header that passes its check but whose body runs past the end of the file is torn
//! too. When a valid frame follows, the damage is in acknowledged data: the log refuses to
//! open and names the offset, rather than drop what follows; and so it does for a last frame
//! whose header alone is damaged, its body written whole (its CRC matches the rest of the
//! file).
//!
//! After a header that passes its check the next frame can only start where its body ends,
//! so the search starts there; after a damaged header it starts at the next byte, since the
//! length is not known.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;

use crate::store::{Result, StoreError, error_text};

/// The first bytes of a commit log, with the format's version.
pub(super) const MAGIC: &[u8; 8] = b"QTRLOG02";

/// The magic of the first format, whose frame header had no check of its own; never released,
/// so it is named in the refusal rather than read.
pub(super) const MAGIC_V1: &[u8; 8] = b"QTRLOG01";

/// Bytes of a frame header: length, body CRC and header CRC.
pub(super) const FRAME_HEADER: u64 = 12;

/// Bytes of an item header: tag and length.
pub(super) const ITEM_HEADER: usize = 5;

/// Largest frame body accepted when reading: far above any group commit (the writer caps a
/// group's batches), small enough that a damaged length cannot ask for an absurd allocation.
const MAX_FRAME: u32 = 1 << 30;

/// Tags of the items of a frame body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Item {
    /// A new collector: protobuf `Collector`.
    Collector = 1,
    /// A stored event: protobuf `StoredEvent` with `location` and `location_seq` set.
    Event = 2,
    /// A publisher's state after the frame: `location_len: u8`, location, protobuf
    /// `PublisherState`.
    Publisher = 3,
    /// A checkpoint: `location_len: u8`, location, `number: u64 LE`, protobuf `Checkpoint`.
    Checkpoint = 4,
    /// Consecutive records of one location that a compaction dropped, each reduced to what
    /// the state and the tree still need (see [`super::compaction`]).
    Pruned = 5,
}

impl Item {
    fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            1 => Self::Collector,
            2 => Self::Event,
            3 => Self::Publisher,
            4 => Self::Checkpoint,
            5 => Self::Pruned,
            _ => return None,
        })
    }
}

/// A frame body under construction.
#[derive(Debug, Default)]
pub(crate) struct FrameBuilder {
    body: Vec<u8>,
}

impl FrameBuilder {
    /// Starts an item and returns the body offset of its payload; the caller appends the
    /// payload to [`FrameBuilder::buffer`] and calls [`FrameBuilder::finish_item`].
    pub(super) fn start_item(&mut self, item: Item) -> usize {
        self.body.push(item as u8);
        self.body.extend_from_slice(&[0; 4]);
        self.body.len()
    }

    /// The body, to append an item's payload to.
    pub(super) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.body
    }

    /// Writes the length of the item whose payload started at `start`.
    pub(super) fn finish_item(&mut self, start: usize) -> Result<()> {
        let len = u32::try_from(self.body.len() - start)
            .map_err(|_| StoreError::Backend("an item of the commit log is larger than 4 GiB".into()))?;
        self.body[start - 4..start].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }

    /// Appends a whole item.
    pub(crate) fn item(&mut self, item: Item, payload: &[u8]) -> Result<usize> {
        let start = self.start_item(item);
        self.body.extend_from_slice(payload);
        self.finish_item(start)?;
        Ok(start)
    }

    /// Returns the frame: header, then body.
    pub(super) fn finish(self) -> Result<Vec<u8>> {
        let len = u32::try_from(self.body.len())
            .ok()
            .filter(|len| *len <= MAX_FRAME)
            .ok_or_else(|| StoreError::Backend("a commit is larger than 1 GiB".into()))?;
        let mut frame = Vec::with_capacity(self.body.len() + FRAME_HEADER as usize);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32c::crc32c(&self.body).to_le_bytes());
        let header_crc = crc32c::crc32c(&frame);
        frame.extend_from_slice(&header_crc.to_le_bytes());
        frame.extend_from_slice(&self.body);
        Ok(frame)
    }
}

/// Writes `location` as `len: u8` then its bytes: locations are short names.
pub(crate) fn put_location(buffer: &mut Vec<u8>, location: &str) -> Result<()> {
    let len = u8::try_from(location.len())
        .map_err(|_| StoreError::Backend(format!("location `{location}` is longer than 255 bytes")))?;
    buffer.push(len);
    buffer.extend_from_slice(location.as_bytes());
    Ok(())
}

/// Splits a payload that starts with a location written by [`put_location`].
pub(super) fn take_location(payload: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = payload.split_first()?;
    let (location, rest) = rest.split_at_checked(usize::from(len))?;
    Some((std::str::from_utf8(location).ok()?, rest))
}

/// The log file, positioned for appends.
#[derive(Debug)]
pub(super) struct Writer {
    /// Where the next frame goes: the end of the last good frame.
    pub(super) end: u64,
    /// Set when a failed append could not be cut back durably: the file may hold stale bytes
    /// after `end` that a shorter next frame would leave behind, and after a failed fsync the
    /// kernel's view of the file is not to be trusted (fsyncgate). Only a reopen, which reads
    /// the log from the disk, clears it.
    failed: bool,
}

impl Writer {
    pub(super) fn new(end: u64) -> Self {
        Self { end, failed: false }
    }

    /// Appends `frame` at the end and makes it durable with one `fdatasync`; returns where it
    /// starts. On failure (a full disk above all) the file is cut back to the end of the last
    /// good frame, so that nothing partial stays behind an acknowledged frame and the next
    /// append starts clean.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the write fails, and for every later append when the cut
    /// failed too.
    pub(super) fn append(&mut self, file: &File, frame: &[u8]) -> Result<u64> {
        if self.failed {
            return Err(StoreError::Backend(
                "the commit log refuses writes since a failed write could not be undone; restart the collector to \
                 repair it"
                    .into(),
            ));
        }
        let at = self.end;
        let written = file.write_all_at(frame, at).and_then(|()| file.sync_data());
        if let Err(err) = written {
            let failed = StoreError::io("cannot write the commit log", &err);
            let text = error_text(&err);
            return Err(match self.cut(file, at) {
                Ok(()) => failed,
                Err(StoreError::Backend(cut)) => {
                    StoreError::Backend(format!("cannot write the commit log: {text}; {cut}"))
                }
                Err(other) => other,
            });
        }
        self.end = at + frame.len() as u64;
        Ok(at)
    }

    /// Cuts the file back to `at` (the start of a frame that must not stay) and makes the cut
    /// durable; when either fails, refuses every later append.
    pub(super) fn cut(&mut self, file: &File, at: u64) -> Result<()> {
        self.end = at;
        if let Err(err) = file.set_len(at).and_then(|()| file.sync_all()) {
            self.failed = true;
            tracing::error!(offset = at, error = %err, "cannot cut the commit log back, refusing writes until restart");
            return Err(StoreError::Backend(format!(
                "cannot cut the commit log back, refusing writes until restart: {}",
                error_text(&err)
            )));
        }
        Ok(())
    }
}

/// One frame read back: where its body starts in the file, and the body.
pub(super) struct Frame {
    pub(super) body_offset: u64,
    pub(super) body: Vec<u8>,
}

/// One item of a frame body: its tag, and where its payload starts in the file.
pub(super) struct FrameItem<'a> {
    pub(super) item: Item,
    pub(super) offset: u64,
    pub(super) payload: &'a [u8],
}

impl Frame {
    /// Returns the items of the body.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the body does not split into known items (its CRC was
    /// right, so it was written that way: the file is not one this version wrote).
    pub(super) fn items(&self) -> Result<Vec<FrameItem<'_>>> {
        let mut items = Vec::new();
        let mut at = 0;
        while at < self.body.len() {
            let bad =
                || StoreError::Corrupt(format!("the commit log frame at offset {} is malformed", self.body_offset));
            let header = self.body.get(at..at + ITEM_HEADER).ok_or_else(bad)?;
            let item = Item::from_tag(header[0]).ok_or_else(bad)?;
            let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let start = at + ITEM_HEADER;
            let payload = self.body.get(start..start + len).ok_or_else(bad)?;
            items.push(FrameItem { item, offset: self.body_offset + start as u64, payload });
            at = start + len;
        }
        Ok(items)
    }
}

/// Reads the frames of a log from `from` (just past the magic for a whole log), calling `each`
/// on every good one, and returns the end of the last good frame. A torn tail is reported
/// through the returned end being before the file's length; damage in the middle is an error.
pub(super) fn read_frames(file: &File, from: u64, mut each: impl FnMut(Frame) -> Result<()>) -> Result<u64> {
    let len = file.metadata().map_err(|err| StoreError::io("cannot read the commit log", &err))?.len();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(from))
        .map_err(|err| StoreError::io("cannot read the commit log", &err))?;
    let mut at = from;
    while at < len {
        if len - at < FRAME_HEADER {
            return Ok(at);
        }
        let mut header = [0; FRAME_HEADER as usize];
        reader.read_exact(&mut header).map_err(|err| StoreError::io("cannot read the commit log", &err))?;
        let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (body_len, crc) = (word(0), word(4));
        if crc32c::crc32c(&header[..8]) != word(8) {
            return torn_header(file, at, &header, len);
        }
        // The header is as written; a length no writer writes means the file is not ours.
        if body_len == 0 || body_len > MAX_FRAME {
            return Err(damaged(at, "the frame header there states an impossible length"));
        }
        let end = at + FRAME_HEADER + u64::from(body_len);
        if end > len {
            return Ok(at);
        }
        let mut body = vec![0; body_len as usize];
        reader.read_exact(&mut body).map_err(|err| StoreError::io("cannot read the commit log", &err))?;
        if crc32c::crc32c(&body) != crc {
            return torn_unless_followed(file, at, end, len, "the frame body there fails its check");
        }
        each(Frame { body_offset: at + FRAME_HEADER, body })?;
        at = end;
    }
    Ok(at)
}

/// Decides what a frame at `at` whose header fails its check is (see the module docs).
fn torn_header(file: &File, at: u64, header: &[u8; FRAME_HEADER as usize], len: u64) -> Result<u64> {
    let what = "the frame header there fails its check";
    let torn = torn_unless_followed(file, at, at + 1, len, what)?;
    // Zeros are what a crash leaves most often, and their CRC field would match an empty body.
    let rest = len - at - FRAME_HEADER;
    if rest > 0 && header.iter().any(|byte| *byte != 0) {
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if body_passes(file, at + FRAME_HEADER, rest, crc)? {
            return Err(damaged(at, "the frame header there fails its check but its body was written whole"));
        }
    }
    Ok(torn)
}

/// Returns `at`, where the good frames end, when no valid frame starts at or after `from`: the
/// frame at `at` is a torn tail. Otherwise the frame at `at` was acknowledged and is damaged.
/// A bit flip inside the last frame reads as a torn tail: nothing tells the two apart, which
/// is why the cut bytes are kept.
fn torn_unless_followed(file: &File, at: u64, from: u64, len: u64, what: &str) -> Result<u64> {
    match next_valid_frame(file, from, len)? {
        None => Ok(at),
        Some(next) => Err(damaged(at, &format!("{what} and a valid frame follows it at offset {next}"))),
    }
}

fn damaged(at: u64, what: &str) -> StoreError {
    StoreError::Corrupt(format!("the commit log is damaged at offset {at}: {what}; restore the data dir from a backup"))
}

/// Bytes of the log read at a time while searching for a frame.
const SCAN_CHUNK: u64 = 1 << 20;

/// Returns the offset of the first valid frame (header and body pass their checks, the body
/// within the file) at or after `from`, reading the file only up to it.
fn next_valid_frame(file: &File, from: u64, len: u64) -> Result<Option<u64>> {
    let mut chunk = Vec::new();
    let mut start = from;
    while start.saturating_add(FRAME_HEADER) <= len {
        // Consecutive chunks overlap by a header less one byte, so every offset is tried once.
        let n = (SCAN_CHUNK + FRAME_HEADER - 1).min(len - start);
        chunk.resize(usize::try_from(n).unwrap_or(usize::MAX), 0);
        file.read_exact_at(&mut chunk, start).map_err(|err| StoreError::io("cannot read the commit log", &err))?;
        for (i, header) in chunk.windows(FRAME_HEADER as usize).enumerate() {
            let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
            let (body_len, crc) = (word(0), word(4));
            if crc32c::crc32c(&header[..8]) != word(8) || body_len == 0 || body_len > MAX_FRAME {
                continue;
            }
            let at = start + i as u64;
            let body_at = at + FRAME_HEADER;
            if body_at + u64::from(body_len) <= len && body_passes(file, body_at, u64::from(body_len), crc)? {
                return Ok(Some(at));
            }
        }
        start += n - FRAME_HEADER + 1;
    }
    Ok(None)
}

/// Returns whether the `len` bytes of the file at `at` have the CRC32C `crc`.
fn body_passes(file: &File, at: u64, len: u64, crc: u32) -> Result<bool> {
    let mut chunk = vec![0; usize::try_from(len.min(SCAN_CHUNK)).unwrap_or(usize::MAX)];
    let (mut offset, mut sum) = (at, 0);
    while offset < at + len {
        let n = chunk.len().min(usize::try_from(at + len - offset).unwrap_or(usize::MAX));
        file.read_exact_at(&mut chunk[..n], offset)
            .map_err(|err| StoreError::io("cannot read the commit log", &err))?;
        sum = crc32c::crc32c_append(sum, &chunk[..n]);
        offset += n as u64;
    }
    Ok(sum == crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that fails on a file that cannot be cut either (opened read-only here, as a
    /// stand-in for a failing disk) leaves the writer refusing every later append, even on a
    /// file that would take it.
    #[test]
    fn a_failed_cut_refuses_every_later_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, MAGIC).unwrap();
        let mut frame = FrameBuilder::default();
        frame.item(Item::Collector, b"x").unwrap();
        let frame = frame.finish().unwrap();
        let mut writer = Writer::new(MAGIC.len() as u64);
        let read_only = File::open(&path).unwrap();
        let err = writer.append(&read_only, &frame).unwrap_err().to_string();
        assert!(err.contains("cannot write the commit log") && err.contains("cannot cut"), "{err}");
        let writable = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let err = writer.append(&writable, &frame).unwrap_err().to_string();
        assert!(err.contains("restart the collector"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), MAGIC);
        // A writer whose cut worked goes on.
        let mut writer = Writer::new(MAGIC.len() as u64);
        assert_eq!(writer.append(&writable, &frame).unwrap(), MAGIC.len() as u64);
    }
}
