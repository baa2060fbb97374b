//! Inclusion and consistency proofs (RFC 6962 §2.1.1 and §2.1.2) read from stored hashes, and
//! their verification (RFC 9162 §2.1.3.2 and §2.1.4.2), which needs no storage.

use crate::tree::{fold_subtrees, read_exact, split_point, subtree_indexes};
use crate::{EMPTY_TREE_HASH, Error, Hash, HashReader, node_hash};

/// Returns the RFC 6962 inclusion proof of leaf `index` in the tree of the first `size` leaves.
///
/// # Errors
/// [`Error::OutOfRange`] when `index >= size`; what `reader` returns.
pub fn inclusion_proof(index: u64, size: u64, reader: &impl HashReader) -> Result<Vec<Hash>, Error> {
    if index >= size {
        return Err(Error::OutOfRange { index, size });
    }
    // The sibling subtrees on the way from the root down to the leaf.
    let mut ranges = Vec::new();
    let (mut lo, mut hi) = (0, size);
    while hi - lo > 1 {
        let (k, _) = split_point(hi - lo);
        if index < lo + k {
            ranges.push((lo + k, hi));
            hi = lo + k;
        } else {
            ranges.push((lo, lo + k));
            lo += k;
        }
    }
    ranges.reverse();
    range_hashes(&ranges, reader)
}

/// Returns the RFC 6962 consistency proof from the tree of the first `old` leaves to the tree
/// of the first `new` leaves (empty when `old` is 0 or equals `new`).
///
/// # Errors
/// [`Error::OutOfRange`] when `old > new`; what `reader` returns.
pub fn consistency_proof(old: u64, new: u64, reader: &impl HashReader) -> Result<Vec<Hash>, Error> {
    if old > new {
        return Err(Error::OutOfRange { index: old, size: new });
    }
    if old == 0 {
        return Ok(Vec::new());
    }
    // SUBPROOF(old, D[0:new], true), unrolled: each step keeps the side that holds the old
    // tree's right edge and records the other side's subtree.
    let mut ranges = Vec::new();
    let (mut lo, mut hi, mut m, mut whole_old_tree) = (0, new, old, true);
    loop {
        if lo + m == hi {
            if !whole_old_tree {
                ranges.push((lo, hi));
            }
            break;
        }
        let (k, _) = split_point(hi - lo);
        if m <= k {
            ranges.push((lo + k, hi));
            hi = lo + k;
        } else {
            ranges.push((lo, lo + k));
            lo += k;
            m -= k;
            whole_old_tree = false;
        }
    }
    ranges.reverse();
    range_hashes(&ranges, reader)
}

/// Returns the hash of each leaf range, reading all their stored hashes at once.
fn range_hashes(ranges: &[(u64, u64)], reader: &impl HashReader) -> Result<Vec<Hash>, Error> {
    let mut indexes = Vec::new();
    for &(lo, hi) in ranges {
        subtree_indexes(lo, hi, &mut indexes);
    }
    let mut hashes = read_exact(reader, &indexes)?.into_iter();
    ranges.iter().map(|&(lo, hi)| fold_subtrees(lo, hi, &mut hashes)).collect()
}

/// Checks that `proof` proves the leaf with hash `leaf` at `index` in the tree of `size` leaves
/// with hash `root`.
///
/// # Errors
/// [`Error::OutOfRange`] when `index >= size`; [`Error::BadProof`] when the proof fails.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> Result<(), Error> {
    if index >= size {
        return Err(Error::OutOfRange { index, size });
    }
    let bad = Error::BadProof("inclusion");
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(bad);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 || r != *root {
        return Err(bad);
    }
    Ok(())
}

/// Checks that `proof` proves the tree of `old` leaves with hash `old_root` a prefix of the tree
/// of `new` leaves with hash `new_root`.
///
/// # Errors
/// [`Error::OutOfRange`] when `old > new`; [`Error::BadProof`] when the proof fails.
pub fn verify_consistency(old: u64, new: u64, old_root: &Hash, new_root: &Hash, proof: &[Hash]) -> Result<(), Error> {
    if old > new {
        return Err(Error::OutOfRange { index: old, size: new });
    }
    let bad = Error::BadProof("consistency");
    if old == 0 || old == new {
        let roots_agree = if old == 0 { *old_root == EMPTY_TREE_HASH } else { old_root == new_root };
        return if proof.is_empty() && roots_agree { Ok(()) } else { Err(bad) };
    }
    let Some((first, rest)) = proof.split_first() else { return Err(bad) };
    // When the old tree is a complete subtree its hash is the proof's implicit first element.
    let (start, rest) = if old.is_power_of_two() { (old_root, proof) } else { (first, rest) };
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (*start, *start);
    for c in rest {
        if s_n == 0 {
            return Err(bad);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 || f_r != *old_root || s_r != *new_root {
        return Err(bad);
    }
    Ok(())
}
