//! Each location's Merkle tree as Go-tlog stored hashes in a file of its own,
//! `tree/<location>.hashes`: 32 bytes per stored hash, at stored index × 32, appended after
//! each group commit's frame is durable.
//!
//! The file is derived from the log, so it needs no fsync of its own: at open
//! ([`Trees::repair`]) a file shorter than its location's chain (a crash before the hashes of the
//! last frames reached the disk, or a lost file) is completed from the log's records, and a
//! longer one (a torn frame cut from the log) is cut back.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use prost::Message as _;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_tlog::{Hash, HashReader, append_hashes, leaf_hash, stored_hash_count};
use tracing::info;

use super::state::{Position, read_record};
use crate::store::{Result, StoreError, canonical_of, error_text, tree_error};

/// Leaves hashed per step of a repair, which bounds its memory.
const REPAIR_CHUNK: usize = 16 * 1024;

/// The tree files of every location.
#[derive(Debug)]
pub(super) struct Trees {
    dir: PathBuf,
    files: Mutex<HashMap<String, Arc<File>>>,
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
        Ok(Self { dir, files: Mutex::new(HashMap::new()) })
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
        let fits = stored_hash_count(old_size) * 32;
        if have == fits {
            return self.append(location, old_size, leaves);
        }
        // Hashes past the tree of the stored events would pass for the new leaves' in the
        // repair: cut them off first, then complete the tree from the log.
        if have > fits {
            file.set_len(fits).map_err(|err| StoreError::io("cannot cut the merkle tree", &err))?;
        }
        self.repair(location, log, positions)
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

    /// Makes the tree file of `location` hold exactly the stored hashes of its `positions`,
    /// recomputing what is missing from the records in `log`.
    pub(super) fn repair(&self, location: &str, log: &File, positions: &[Position]) -> Result<()> {
        let file = self.file(location)?;
        let have = file.metadata().map_err(|err| StoreError::io("cannot read the merkle tree", &err))?.len() / 32;
        let mut size = positions.len() as u64;
        // The largest tree the file holds whole.
        while stored_hash_count(size) > have {
            size -= 1;
        }
        file.set_len(stored_hash_count(size) * 32).map_err(|err| StoreError::io("cannot cut the merkle tree", &err))?;
        if size < positions.len() as u64 {
            info!(location = %location, from_leaf = size, to_leaf = positions.len(), "completing the merkle tree from the log");
        }
        let from = usize::try_from(size).unwrap_or(usize::MAX);
        for (chunk, start) in positions[from..].chunks(REPAIR_CHUNK).zip((size..).step_by(REPAIR_CHUNK)) {
            let leaves = chunk
                .iter()
                .map(|position| {
                    let record = proto::StoredEvent::decode(read_record(log, *position)?.as_slice()).ok();
                    // A record that no longer decodes is hashed as its bytes could not be: as
                    // nothing, so the tree shows the damage instead of failing the open.
                    Ok(leaf_hash(&record.as_ref().and_then(canonical_of).unwrap_or_default()))
                })
                .collect::<Result<Vec<Hash>>>()?;
            self.append(location, start, &leaves)?;
        }
        Ok(())
    }
}
