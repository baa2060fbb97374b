//! References for tests of trees built on this crate (its own, the stores', the collector's):
//! RFC 6962's tree hash straight from the definition, sharing no code with [`crate::tree_hash`]
//! and its stored hashes.

use crate::{EMPTY_TREE_HASH, Hash, node_hash};

/// RFC 6962 §2.1 MTH of `leaves` (leaf hashes), recursively from the definition.
pub fn reference_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_TREE_HASH,
        1 => leaves[0],
        n => {
            // The largest power of two smaller than n.
            let k = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
        }
    }
}
