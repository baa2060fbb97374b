//! The archive's format, shared by the archiver that writes it and the offline verifier and
//! restorer that read it: object and manifest names, the zstd AT-JSON lines of an object, the
//! manifest (a C2SP signed note whose text is one JSON line), and the Merkle frontier that lets a
//! range's leaves be folded into the root of the whole tree without the leaves before it.
//!
//! An object `<prefix>/<location>/<first:020>-<last:020>.jsonl.zst` holds events `first..=last`
//! of the location, one AT-JSON document a line, each with the extra member
//! `"qtrail": {"location_seq": N}` (AT-JSON readers ignore unknown members). Its manifest is
//! `<same name without .jsonl.zst>.manifest.json`.

use qtrail_cadf::{AuditEvent, at_json, canonical_bytes};
use qtrail_tlog::{Hash, NoteSigner, NoteVerifier, leaf_hash, node_hash, open_note, sign_note, stored_hash_index};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ArchiveError;

/// The manifest format's name, its note's first line.
pub const MANIFEST_FORMAT: &str = "qtrail-archive-manifest/v1";
/// Ends every object's name.
pub const OBJECT_SUFFIX: &str = ".jsonl.zst";
/// Ends every manifest's name.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// The zstd level of objects: the default, a good ratio at a cost far below the upload's.
const ZSTD_LEVEL: i32 = 3;

/// Returns the base name (no suffix) of the range `first..=last`: zero-padded so that names
/// sort as positions do.
pub fn range_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}")
}

/// Parses a manifest's base name (see [`range_name`]) back into its range.
pub fn parse_range_name(name: &str) -> Option<(u64, u64)> {
    let base = name.strip_suffix(MANIFEST_SUFFIX)?;
    let (first, last) = base.split_once('-')?;
    let ok = |part: &str| part.len() == 20 && part.bytes().all(|b| b.is_ascii_digit());
    if !ok(first) || !ok(last) {
        return None;
    }
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// One complete subtree of the tree before a range: its height and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontierNode {
    /// Height: the subtree has 2^level leaves.
    pub level: u32,
    /// Its RFC 6962 hash, base64.
    #[serde(with = "b64_hash")]
    pub hash: Hash,
}

/// What a manifest states about its range, signed as a note by the checkpoint key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The location whose events these are.
    pub location: String,
    /// First position of the range.
    pub first: u64,
    /// Last position of the range: the size of the covering checkpoint's tree.
    pub last: u64,
    /// The object's name relative to the location's directory.
    pub object: String,
    /// SHA-256 of the object's bytes (compressed), hex.
    pub object_sha256: String,
    /// Events in the object: `last - first + 1`.
    pub events: u64,
    /// RFC 6962 root of the tree of `last` leaves, base64: the covering checkpoint's.
    #[serde(with = "b64_hash")]
    pub root: Hash,
    /// The covering checkpoint's C2SP note, as the collector signed it.
    pub checkpoint_note: String,
    /// The complete subtrees of the tree of `first - 1` leaves, largest first.
    pub frontier: Vec<FrontierNode>,
    /// Every stored checkpoint numbered after the previous range's covering one, up to and with
    /// this range's (protobuf `Checkpoint`, base64): what a restore stores so that the original
    /// signatures still hold.
    pub checkpoints: Vec<String>,
    /// Number of the covering checkpoint.
    pub checkpoint_number: u64,
}

impl Manifest {
    /// Returns the manifest as a signed note: the format line, the JSON line, the signature.
    ///
    /// # Errors
    /// [`ArchiveError::Invalid`] when the note cannot be signed.
    pub fn sign(&self, signer: &NoteSigner<'_>) -> Result<String, ArchiveError> {
        let json = serde_json::to_string(self).map_err(|err| ArchiveError::Invalid(err.to_string()))?;
        sign_note(&format!("{MANIFEST_FORMAT}\n{json}\n"), signer).map_err(|err| ArchiveError::Invalid(err.to_string()))
    }

    /// Opens a signed manifest note with `verifier`.
    ///
    /// # Errors
    /// [`ArchiveError::Invalid`] when the signature does not hold or the text is no manifest.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Self, ArchiveError> {
        let text = open_note(note, std::slice::from_ref(verifier))
            .map_err(|err| ArchiveError::Invalid(format!("manifest signature: {err}")))?;
        let json = text
            .strip_prefix(MANIFEST_FORMAT)
            .and_then(|rest| rest.strip_prefix('\n'))
            .and_then(|rest| rest.strip_suffix('\n'))
            .ok_or_else(|| ArchiveError::Invalid(format!("not a {MANIFEST_FORMAT} note")))?;
        serde_json::from_str(json).map_err(|err| ArchiveError::Invalid(format!("manifest: {err}")))
    }
}

/// Returns the stored hash indexes of the complete subtrees of the tree of `size` leaves,
/// largest first, with their levels: the frontier to read from the store.
pub fn frontier_indexes(size: u64) -> Vec<(u32, u64)> {
    let mut lo = 0u64;
    let mut out = Vec::new();
    for level in (0..64u32).rev() {
        if size & (1u64 << level) != 0 {
            out.push((level, stored_hash_index(level, lo >> level)));
            lo += 1u64 << level;
        }
    }
    out
}

/// A frontier being extended leaf by leaf (RFC 6962's tree as a stack of complete subtrees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontier(pub Vec<FrontierNode>);

impl Frontier {
    /// Appends one leaf hash, merging the subtrees it completes.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = FrontierNode { level: 0, hash: leaf };
        while let Some(top) = self.0.last().filter(|top| top.level == node.level) {
            node = FrontierNode { level: node.level + 1, hash: node_hash(&top.hash, &node.hash) };
            self.0.pop();
        }
        self.0.push(node);
    }

    /// Returns the number of leaves it covers, `None` when its levels are not strictly
    /// decreasing (not a tree's frontier).
    pub fn size(&self) -> Option<u64> {
        let ordered = self.0.windows(2).all(|pair| pair[0].level > pair[1].level);
        let small = self.0.iter().all(|node| node.level < 64);
        (ordered && small).then(|| self.0.iter().map(|node| 1u64 << node.level).sum())
    }

    /// Returns the RFC 6962 root of the tree it covers.
    pub fn root(&self) -> Hash {
        let mut nodes = self.0.iter().rev();
        let Some(last) = nodes.next() else { return qtrail_tlog::EMPTY_TREE_HASH };
        nodes.fold(last.hash, |right, left| node_hash(&left.hash, &right))
    }
}

/// Returns an event's archive line: its AT-JSON with the `qtrail` member.
pub fn event_line(event: &AuditEvent, location_seq: u64) -> String {
    let mut value = at_json::to_value(event);
    if let Some(object) = value.as_object_mut() {
        object.insert("qtrail".to_owned(), serde_json::json!({ "location_seq": location_seq }));
    }
    value.to_string()
}

/// Returns the zstd-compressed lines.
///
/// # Errors
/// [`ArchiveError::Invalid`] when compression fails.
pub fn compress(lines: &str) -> Result<Vec<u8>, ArchiveError> {
    zstd::encode_all(lines.as_bytes(), ZSTD_LEVEL).map_err(|err| ArchiveError::Invalid(format!("zstd: {err}")))
}

/// One archived event read back: its position, the event and its canonical bytes.
#[derive(Debug, Clone)]
pub struct ArchivedEvent {
    /// Its position in the location's chain.
    pub location_seq: u64,
    /// The event.
    pub event: AuditEvent,
    /// Its canonical bytes, the tree's leaf.
    pub canonical: Vec<u8>,
}

/// Decompresses and parses an object: every line must be a valid event at the next position
/// from `first` on.
///
/// # Errors
/// [`ArchiveError::Invalid`] naming the first line at fault.
pub fn read_object(bytes: &[u8], first: u64) -> Result<Vec<ArchivedEvent>, ArchiveError> {
    let raw =
        zstd::decode_all(bytes).map_err(|err| ArchiveError::Invalid(format!("object does not decompress: {err}")))?;
    let text = String::from_utf8(raw).map_err(|_| ArchiveError::Invalid("object is not utf-8".to_owned()))?;
    let mut events = Vec::new();
    for (expected, line) in (first..).zip(text.lines()) {
        let bad = |why: String| ArchiveError::Invalid(format!("line of location_seq {expected}: {why}"));
        let value: serde_json::Value = serde_json::from_str(line).map_err(|err| bad(err.to_string()))?;
        let seq = value.pointer("/qtrail/location_seq").and_then(serde_json::Value::as_u64);
        if seq != Some(expected) {
            return Err(bad(format!("holds location_seq {seq:?}")));
        }
        let event = at_json::from_str(line).map_err(|err| bad(err.to_string()))?;
        let canonical = canonical_bytes(&event);
        events.push(ArchivedEvent { location_seq: expected, event, canonical });
    }
    Ok(events)
}

/// Returns the SHA-256 of `bytes` in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Returns the frontier after `events` are appended to `before`.
pub fn extend(before: &Frontier, events: &[ArchivedEvent]) -> Frontier {
    let mut frontier = before.clone();
    for event in events {
        frontier.push(leaf_hash(&event.canonical));
    }
    frontier
}

/// Base64 of a 32-byte hash, for serde.
mod b64_hash {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::Hash;

    pub(super) fn serialize<S: Serializer>(hash: &Hash, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(hash))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Hash, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64
            .decode(text)
            .ok()
            .and_then(|bytes| Hash::try_from(bytes).ok())
            .ok_or_else(|| serde::de::Error::custom("not a base64 sha-256 hash"))
    }
}

#[cfg(test)]
mod tests {
    use qtrail_tlog::testing::reference_root;
    use qtrail_tlog::{HashReader, append_hashes};

    use super::*;

    /// Stored hashes in memory, in Go tlog's layout.
    struct Stored(Vec<Hash>);

    impl HashReader for Stored {
        fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, qtrail_tlog::Error> {
            Ok(indexes.iter().map(|&index| self.0[usize::try_from(index).unwrap()]).collect())
        }
    }

    #[test]
    fn a_frontier_folds_to_the_trees_root_and_matches_the_stored_subtrees_at_every_size() {
        let mut stored = Stored(Vec::new());
        let mut leaves = Vec::new();
        let mut frontier = Frontier(Vec::new());
        for n in 0..40u64 {
            let leaf = leaf_hash(&n.to_be_bytes());
            let appended = append_hashes(n, &[leaf], &stored).unwrap();
            stored.0.extend(appended);
            leaves.push(leaf);
            frontier.push(leaf);
            let size = n + 1;
            assert_eq!(frontier.root(), reference_root(&leaves), "size {size}");
            let read: Vec<(u32, Hash)> = frontier_indexes(size)
                .into_iter()
                .map(|(level, index)| (level, stored.read_hashes(&[index]).unwrap()[0]))
                .collect();
            let expected: Vec<(u32, Hash)> = frontier.0.iter().map(|node| (node.level, node.hash)).collect();
            assert_eq!(read, expected, "size {size}");
            assert_eq!(frontier.size(), Some(size));
        }
    }

    #[test]
    fn range_names_sort_and_parse_back() {
        let name = format!("{}{MANIFEST_SUFFIX}", range_name(1, 250));
        assert_eq!(name, "00000000000000000001-00000000000000000250.manifest.json");
        assert_eq!(parse_range_name(&name), Some((1, 250)));
        assert_eq!(parse_range_name("1-250.manifest.json"), None);
    }
}
