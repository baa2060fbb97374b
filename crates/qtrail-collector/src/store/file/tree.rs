//! Each location's Merkle tree as Go-tlog stored hashes in a file of its own,
//! `tree/<location>.hashes`: 32 bytes per stored hash, at stored index × 32, appended after
//! each group commit's frame is durable.
//!
//! The file is derived from the log, so appends do not sync it; it is made durable only
//! before a checkpoint is written to the log ([`Trees::sync`]), so the tree of every stored
//! checkpoint is on the disk whole, and before a state snapshot is written, which records
//! each location's tree size and root (see [`super::snapshot`]). A crash can leave anything in
//! the hashes written since: missing, cut, or the right length with zeros or stale bytes
//! inside. So at open ([`Trees::repair`]) the tree of the newest durable head (the newest
//! checkpoint's or the snapshot's, the larger) is checked against its root (reading the hashes
//! of its root's path only), and every hash after it is computed again from the log's records,
//! compared and rewritten where it differs; a tree that gives no durable head's root is
//! rebuilt from the log whole. The cost of an open is then the records since the last
//! checkpoint or snapshot, not the whole log, with or without a checkpoint key.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prost::Message as _;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{Hash, HashReader, append_hashes, leaf_hash, stored_hash_count, tree_hash};
use tracing::{info, warn};

use super::state::{Position, read_record};
use crate::store::{Result, StoreError, canonical_of, error_text, tree_error};

/// Leaves hashed per step of a repair, which bounds its memory.
const REPAIR_CHUNK: usize = 16 * 1024;

/// The tree files of every location.
#[derive(Debug)]
pub(super) struct Trees {
    dir: PathBuf,
    files: Mutex<HashMap<String, Arc<File>>>,
    /// Leaves hashed again from the log's records since the store was opened: what repairs
    /// cost, which tests read to show what an open did not re-read.
    rehashed: AtomicU64,
}

/// One tree file as a [`HashReader`].
struct FileReader<'a>(&'a File);

impl HashReader for FileReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> std::result::Result<Vec<Hash>, qtrail_tlog::Error> {
        indexes
            .iter()
            .map(|&index| {
                let mut hash = [0; 32];
                self.0
                    .read_exact_at(&mut hash, index * 32)
                    .map(|()| hash)
                    .map_err(|err| qtrail_tlog::Error::Storage(format!("stored hash {index}: {}", error_text(&err))))
            })
            .collect()
    }
}

impl Trees {
    pub(super) fn new(data_dir: &std::path::Path) -> Result<Self> {
        let dir = data_dir.join("tree");
        std::fs::create_dir_all(&dir)
            .map_err(|err| StoreError::io(&format!("cannot create {}", dir.display()), &err))?;
        Ok(Self { dir, files: Mutex::new(HashMap::new()), rehashed: AtomicU64::new(0) })
    }

    /// Returns the tree file of `location`, opened (or created) on first use.
    fn file(&self, location: &str) -> Result<Arc<File>> {
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = files.get(location) {
            return Ok(file.clone());
        }
        let path = self.dir.join(format!("{location}.hashes"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|err| StoreError::io(&format!("cannot open {}", path.display()), &err))?;
        let file = Arc::new(file);
        files.insert(location.to_owned(), file.clone());
        Ok(file)
    }

    /// Appends the stored hashes of `leaves` to the tree of `location`, which has `old_size`
    /// leaves.
    pub(super) fn append(&self, location: &str, old_size: u64, leaves: &[Hash]) -> Result<()> {
        if leaves.is_empty() {
            return Ok(());
        }
        let file = self.file(location)?;
        let hashes = append_hashes(old_size, leaves, &FileReader(&file)).map_err(|err| tree_error(location, &err))?;
        let bytes: Vec<u8> = hashes.iter().flatten().copied().collect();
        file.write_all_at(&bytes, stored_hash_count(old_size) * 32)
            .map_err(|err| StoreError::io("cannot write the merkle tree", &err))
    }

    /// Adds the stored hashes of `leaves`, the newest of the `positions` of `location`, whose
    /// tree had `old_size` leaves before them; when the file is behind that (a write that failed
    /// before, on a full disk say), it is completed from the log first.
    pub(super) fn extend(
        &self,
        location: &str,
        log: &File,
        positions: &[Position],
        old_size: u64,
        leaves: &[Hash],
    ) -> Result<()> {
        let file = self.file(location)?;
        let have = file.metadata().map_err(|err| StoreError::io("cannot read the merkle tree", &err))?.len();
        if have == stored_hash_count(old_size) * 32 {
            return self.append(location, old_size, leaves);
        }
        // Hashes past the tree of the stored events would pass for the new leaves': the ones
        // the file holds whole are kept and the rest computed again.
        let from = whole_tree(have / 32, old_size);
        self.rehash(location, log, positions, from).map(drop)
    }

    /// Makes the tree file of `location` durable: done before a checkpoint of it is written.
    pub(super) fn sync(&self, location: &str) -> Result<()> {
        self.file(location)?.sync_data().map_err(|err| StoreError::io("cannot sync the merkle tree", &err))
    }

    /// Reads stored hashes of `location`, whose tree has `size` leaves.
    pub(super) fn read(&self, location: &str, size: u64, indexes: &[u64]) -> Result<Vec<Hash>> {
        let count = stored_hash_count(size);
        if let Some(index) = indexes.iter().find(|&&index| index >= count) {
            return Err(StoreError::Corrupt(format!(
                "merkle tree of location `{location}`: stored hash {index} is beyond a tree of {size} leaves"
            )));
        }
        let file = self.file(location)?;
        FileReader(&file).read_hashes(indexes).map_err(|err| tree_error(location, &err))
    }

    /// Returns the root of the tree of `location` of `size` leaves as its file holds it, after
    /// making the file durable: the head a state snapshot records, which an open may then start
    /// its repair from as from a checkpoint's. `None` when the file does not hold that tree
    /// (behind after a failed write, say).
    pub(super) fn durable_root(&self, location: &str, size: u64) -> Result<Option<Hash>> {
        if size == 0 {
            return Ok(None);
        }
        self.sync(location)?;
        let file = self.file(location)?;
        let have = file.metadata().map_err(|err| StoreError::io("cannot read the merkle tree", &err))?.len() / 32;
        if stored_hash_count(size) > have {
            return Ok(None);
        }
        tree_hash(size, &FileReader(&file)).map(Some).map_err(|err| tree_error(location, &err))
    }

    /// Returns how many leaves were hashed again from the log since the store was opened.
    #[cfg(test)]
    pub(super) fn rehashed(&self) -> u64 {
        self.rehashed.load(Ordering::Relaxed)
    }

    /// Makes the tree file of `location` hold exactly the stored hashes of its `positions`,
    /// at open: `heads` are sizes and roots of trees made durable before they were recorded
    /// (the newest checkpoint's, the snapshot's; see the module docs), the largest first. The
    /// first whose root the file gives is trusted and the leaves after it are hashed again;
    /// when none is, the tree is rebuilt from the log whole.
    pub(super) fn repair(
        &self,
        location: &str,
        log: &File,
        positions: &[Position],
        heads: &[(u64, Hash)],
    ) -> Result<()> {
        let file = self.file(location)?;
        let have = file.metadata().map_err(|err| StoreError::io("cannot read the merkle tree", &err))?.len() / 32;
        let usable =
            heads.iter().filter(|(size, _)| stored_hash_count(*size) <= have && *size <= positions.len() as u64);
        let mut from = 0;
        for &(size, root) in usable {
            if tree_hash(size, &FileReader(&file)).ok() == Some(root) {
                from = size;
                break;
            }
            warn!(location = %location, tree_size = size, "the merkle tree does not give the root recorded for it");
        }
        if from == 0 && !heads.is_empty() {
            warn!(location = %location, "no durable tree head fits the merkle tree, rebuilding it from the log");
        }
        let rewritten = self.rehash(location, log, positions, from)?;
        if rewritten > 0 {
            warn!(location = %location, from_leaf = from, rewritten, "repaired stored hashes of the merkle tree from the log");
            // What was rewritten below a durable head's size must be as durable as it was.
            self.sync(location)?;
        }
        Ok(())
    }

    /// Computes the stored hashes of the leaves of `positions` from index `from` on, again
    /// from the log's records, trusting the file's hashes of the tree of `from` leaves; writes
    /// those the file does not hold alike and cuts whatever follows the tree. Returns how many
    /// hashes were written.
    fn rehash(&self, location: &str, log: &File, positions: &[Position], from: u64) -> Result<u64> {
        let file = self.file(location)?;
        let size = positions.len() as u64;
        let have = file.metadata().map_err(|err| StoreError::io("cannot read the merkle tree", &err))?.len();
        if from < size {
            info!(location = %location, from_leaf = from, to_leaf = size, "checking the merkle tree against the log");
        }
        let mut rewritten = 0;
        let start = usize::try_from(from).unwrap_or(usize::MAX);
        for (chunk, start) in positions[start..].chunks(REPAIR_CHUNK).zip((from..).step_by(REPAIR_CHUNK)) {
            let leaves = chunk.iter().map(|position| leaf_of(log, *position)).collect::<Result<Vec<Hash>>>()?;
            self.rehashed.fetch_add(leaves.len() as u64, Ordering::Relaxed);
            let hashes = append_hashes(start, &leaves, &FileReader(&file)).map_err(|err| tree_error(location, &err))?;
            let at = stored_hash_count(start) * 32;
            let expected: Vec<u8> = hashes.iter().flatten().copied().collect();
            let mut stored = vec![0; expected.len()];
            let held = usize::try_from(have.saturating_sub(at)).unwrap_or(usize::MAX).min(stored.len());
            file.read_exact_at(&mut stored[..held], at)
                .map_err(|err| StoreError::io("cannot read the merkle tree", &err))?;
            if held == expected.len() && stored == expected {
                continue;
            }
            rewritten += expected.chunks(32).zip(stored.chunks(32)).filter(|(new, old)| new != old).count() as u64;
            rewritten += ((expected.len() - held) / 32) as u64;
            file.write_all_at(&expected, at).map_err(|err| StoreError::io("cannot write the merkle tree", &err))?;
        }
        if have != stored_hash_count(size) * 32 {
            file.set_len(stored_hash_count(size) * 32)
                .map_err(|err| StoreError::io("cannot cut the merkle tree", &err))?;
        }
        Ok(rewritten)
    }
}

/// Returns the leaf count of the largest tree, of at most `leaves` leaves, whose stored hashes
/// fit in `stored` hashes.
fn whole_tree(stored: u64, leaves: u64) -> u64 {
    let mut size = leaves;
    while stored_hash_count(size) > stored {
        size -= 1;
    }
    size
}

/// Returns the leaf hash of the record at `position` of the log; of a compacted record, the
/// leaf hash its stub holds.
fn leaf_of(log: &File, position: Position) -> Result<Hash> {
    if position.is_stub() {
        let mut leaf = [0; 32];
        log.read_exact_at(&mut leaf, position.offset)
            .map_err(|err| StoreError::io("cannot read the commit log", &err))?;
        return Ok(leaf);
    }
    Ok(leaf_of_record(&read_record(log, position)?))
}

/// Returns the leaf hash of a stored record's bytes.
pub(super) fn leaf_of_record(bytes: &[u8]) -> Hash {
    let record = proto::StoredEvent::decode(bytes).ok();
    // A record that no longer decodes is hashed as its bytes could not be: as nothing, so the
    // tree shows the damage instead of failing the open.
    leaf_hash(&record.as_ref().and_then(canonical_of).unwrap_or_default())
}
