//! The tree as stored hashes (Go tlog's layout): the hash of the complete subtree of height
//! `level` at position `n` lives at [`stored_hash_index`]`(level, n)`, and appending a leaf
//! appends its leaf hash followed by the hashes of the subtrees it completes.

use crate::{EMPTY_TREE_HASH, Error, Hash, node_hash};

/// Reads stored hashes by stored index.
pub trait HashReader {
    /// Returns the hashes at `indexes`, in the same order.
    ///
    /// # Errors
    /// [`Error::Storage`] when the storage fails or lacks one of them.
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error>;
}

impl<R: HashReader + ?Sized> HashReader for &R {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
        (**self).read_hashes(indexes)
    }
}

/// Reads `indexes` and checks that the reader kept its contract.
pub(crate) fn read_exact(reader: &impl HashReader, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
    let hashes = reader.read_hashes(indexes)?;
    if hashes.len() != indexes.len() {
        return Err(Error::ShortRead { asked: indexes.len(), got: hashes.len() });
    }
    Ok(hashes)
}

/// Returns the stored index of the hash of the subtree of height `level` at position `n`
/// (leaves are level 0, leaf `n` is position `n`).
pub fn stored_hash_index(level: u32, n: u64) -> u64 {
    // Every complete subtree left of (level, n) at levels below: the hashes stored before the
    // leaves under it, then the `level` hashes of its own left spine.
    let mut n = n;
    for _ in 0..level {
        n = 2 * n + 1;
    }
    let mut index = 0;
    while n > 0 {
        index += n;
        n >>= 1;
    }
    index + u64::from(level)
}

/// Returns the number of stored hashes of a tree of `n` leaves.
pub fn stored_hash_count(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    // The hashes up to the last leaf, plus the subtrees that leaf completes.
    let mut count = stored_hash_index(0, n - 1) + 1;
    let mut i = n - 1;
    while i & 1 != 0 {
        count += 1;
        i >>= 1;
    }
    count
}

/// The stored hashes to append, in order, at stored indexes `stored_hash_count(old_size)..`,
/// when leaves with hashes `leaves` are appended to a tree of `old_size` leaves (Go's
/// StoredHashes applied leaf after leaf, the pending hashes of the batch kept in memory).
///
/// # Errors
/// What `reader` returns for the hashes of the old tree.
pub fn append_hashes(old_size: u64, leaves: &[Hash], reader: &impl HashReader) -> Result<Vec<Hash>, Error> {
    let base = stored_hash_count(old_size);
    let mut pending: Vec<Hash> = Vec::with_capacity(leaves.len() * 2);
    for (offset, leaf) in (0u64..).zip(leaves) {
        let n = old_size + offset;
        // Leaf n completes one subtree per trailing one bit of n: its left siblings.
        let completed = (n + 1).trailing_zeros();
        let indexes: Vec<u64> = (0..completed).rev().map(|level| stored_hash_index(level, (n >> level) - 1)).collect();
        let siblings = read_pending(base, &pending, &indexes, reader)?;
        let mut hash = *leaf;
        pending.push(hash);
        for sibling in siblings.iter().rev() {
            hash = node_hash(sibling, &hash);
            pending.push(hash);
        }
    }
    Ok(pending)
}

/// Reads `indexes` from `pending` (stored from `base` on) or, below `base`, from `reader`.
fn read_pending(base: u64, pending: &[Hash], indexes: &[u64], reader: &impl HashReader) -> Result<Vec<Hash>, Error> {
    let stored: Vec<u64> = indexes.iter().copied().filter(|&index| index < base).collect();
    let mut from_reader = read_exact(reader, &stored)?.into_iter();
    indexes
        .iter()
        .map(|&index| match index.checked_sub(base) {
            Some(at) => usize::try_from(at).ok().and_then(|at| pending.get(at)).copied().ok_or_else(missing),
            None => from_reader.next().ok_or_else(missing),
        })
        .collect()
}

fn missing() -> Error {
    Error::Storage("a stored hash of the pending batch is missing".to_owned())
}

/// Returns the largest power of two smaller than `n` (n ≥ 2) and its log.
pub(crate) fn split_point(n: u64) -> (u64, u32) {
    let level = 63 - (n - 1).leading_zeros();
    (1 << level, level)
}

/// Appends to `need` the stored indexes of the complete subtrees that make up leaves `lo..hi`,
/// largest first (`lo` must be aligned as the tree's own decomposition is).
pub(crate) fn subtree_indexes(mut lo: u64, hi: u64, need: &mut Vec<u64>) {
    while lo < hi {
        let (size, level) = largest_aligned(hi - lo);
        need.push(stored_hash_index(level, lo >> level));
        lo += size;
    }
}

/// Returns the largest power of two not above `n` (n ≥ 1) and its log.
fn largest_aligned(n: u64) -> (u64, u32) {
    let level = 63 - n.leading_zeros();
    (1 << level, level)
}

/// Folds the subtree hashes of leaves `lo..hi` (as listed by [`subtree_indexes`]) into the
/// hash of that range, consuming them from the front of `hashes`.
pub(crate) fn fold_subtrees(mut lo: u64, hi: u64, hashes: &mut impl Iterator<Item = Hash>) -> Result<Hash, Error> {
    let mut parts = Vec::new();
    while lo < hi {
        lo += largest_aligned(hi - lo).0;
        parts.push(hashes.next().ok_or(Error::ShortRead { asked: parts.len() + 1, got: parts.len() })?);
    }
    let mut parts = parts.into_iter().rev();
    let last = parts.next().unwrap_or(EMPTY_TREE_HASH);
    Ok(parts.fold(last, |right, left| node_hash(&left, &right)))
}

/// Returns the hash of the tree of the first `size` leaves.
///
/// # Errors
/// What `reader` returns.
pub fn tree_hash(size: u64, reader: &impl HashReader) -> Result<Hash, Error> {
    if size == 0 {
        return Ok(EMPTY_TREE_HASH);
    }
    let mut indexes = Vec::new();
    subtree_indexes(0, size, &mut indexes);
    let hashes = read_exact(reader, &indexes)?;
    fold_subtrees(0, size, &mut hashes.into_iter())
}
