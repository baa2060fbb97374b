//! The tree against RFC 6962's definition: known-answer vectors from Certificate Transparency,
//! an independent recursive tree hash, and proofs that verify (and fail when tampered with).

use proptest::prelude::*;
use qtrail_tlog::testing::reference_root;
use qtrail_tlog::{
    EMPTY_TREE_HASH, Error, Hash, HashReader, append_hashes, consistency_proof, inclusion_proof, leaf_hash,
    stored_hash_count, stored_hash_index, tree_hash, verify_consistency, verify_inclusion,
};

/// A log in memory: its stored hashes, appended in batches.
#[derive(Default)]
struct MemoryLog {
    stored: Vec<Hash>,
    leaves: Vec<Hash>,
}

impl HashReader for MemoryLog {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
        indexes
            .iter()
            .map(|&i| self.stored.get(i as usize).copied().ok_or_else(|| Error::Storage(format!("no hash {i}"))))
            .collect()
    }
}

impl MemoryLog {
    fn append(&mut self, leaves: &[Hash]) {
        let size = self.leaves.len() as u64;
        assert_eq!(self.stored.len() as u64, stored_hash_count(size));
        let hashes = append_hashes(size, leaves, self).unwrap();
        self.stored.extend(hashes);
        self.leaves.extend_from_slice(leaves);
        assert_eq!(self.stored.len() as u64, stored_hash_count(self.leaves.len() as u64));
    }

    fn with_leaves(n: u64) -> Self {
        let mut log = Self::default();
        log.append(&leaves(n));
        log
    }
}

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(format!("event {i}").as_bytes())).collect()
}

/// The leaves of the Certificate Transparency test tree.
const CT_LEAVES: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
];

/// The roots of its first 1..=8 leaves.
const CT_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn ct_log() -> MemoryLog {
    let mut log = MemoryLog::default();
    for leaf in CT_LEAVES {
        log.append(&[leaf_hash(leaf)]);
    }
    log
}

#[test]
fn ct_test_tree_roots_match_the_known_answers() {
    let log = ct_log();
    assert_eq!(tree_hash(0, &log).unwrap(), EMPTY_TREE_HASH);
    assert_eq!(hex::encode(EMPTY_TREE_HASH), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    for (size, root) in (1..).zip(CT_ROOTS) {
        assert_eq!(hex::encode(tree_hash(size, &log).unwrap()), root, "size {size}");
    }
}

#[test]
fn ct_test_tree_proofs_match_the_known_answers() {
    let log = ct_log();
    let hexes = |proof: Vec<Hash>| proof.into_iter().map(hex::encode).collect::<Vec<_>>();
    assert_eq!(
        hexes(inclusion_proof(0, 8, &log).unwrap()),
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ]
    );
    assert_eq!(
        hexes(consistency_proof(1, 8, &log).unwrap()),
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ]
    );
    assert_eq!(
        hexes(consistency_proof(6, 8, &log).unwrap()),
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ]
    );
}

#[test]
fn stored_hash_layout_matches_go_tlog() {
    // Go tlog: leaves and the hashes they complete, interleaved.
    let expected = [(0, 0, 0), (0, 1, 1), (1, 0, 2), (0, 2, 3), (0, 3, 4), (1, 1, 5), (2, 0, 6), (0, 4, 7)];
    for (level, n, index) in expected {
        assert_eq!(stored_hash_index(level, n), index, "level {level} n {n}");
    }
    let counts = [0, 1, 3, 4, 7, 8, 10, 11, 15];
    for (n, count) in (0..).zip(counts) {
        assert_eq!(stored_hash_count(n), count, "n {n}");
    }
}

#[test]
fn batch_boundaries_do_not_change_the_stored_hashes() {
    let all = leaves(300);
    let one_batch = MemoryLog::with_leaves(300);
    let mut one_by_one = MemoryLog::default();
    for leaf in &all {
        one_by_one.append(std::slice::from_ref(leaf));
    }
    let mut uneven = MemoryLog::default();
    for chunk in all.chunks(37) {
        uneven.append(chunk);
    }
    assert_eq!(one_batch.stored, one_by_one.stored);
    assert_eq!(one_batch.stored, uneven.stored);
}

#[test]
fn out_of_range_requests_are_errors() {
    let log = MemoryLog::with_leaves(5);
    assert_eq!(inclusion_proof(5, 5, &log), Err(Error::OutOfRange { index: 5, size: 5 }));
    assert_eq!(consistency_proof(6, 5, &log), Err(Error::OutOfRange { index: 6, size: 5 }));
    assert!(matches!(tree_hash(6, &log), Err(Error::Storage(_))));
    let root = tree_hash(5, &log).unwrap();
    assert!(verify_inclusion(5, 5, &log.leaves[0], &[], &root).is_err());
    assert_eq!(consistency_proof(0, 5, &log), Ok(vec![]));
    assert_eq!(verify_consistency(0, 5, &EMPTY_TREE_HASH, &root, &[]), Ok(()));
    assert_eq!(verify_consistency(5, 5, &root, &root, &[]), Ok(()));
    assert!(verify_consistency(5, 5, &root, &EMPTY_TREE_HASH, &[]).is_err());
}

fn flip(hash: &mut Hash, bit: usize) {
    hash[bit / 8 % 32] ^= 1 << (bit % 8);
}

proptest! {
    #[test]
    fn tree_hash_matches_the_definition(size in 0u64..600) {
        let log = MemoryLog::with_leaves(size);
        for n in [0, size / 3, size / 2, size.saturating_sub(1), size] {
            prop_assert_eq!(tree_hash(n, &log).unwrap(), reference_root(&log.leaves[..n as usize]));
        }
    }

    #[test]
    fn inclusion_proofs_verify_and_tampering_fails(size in 1u64..600, index in any::<u64>(), bit in 0usize..256) {
        let log = MemoryLog::with_leaves(size);
        let index = index % size;
        let root = reference_root(&log.leaves);
        let leaf = log.leaves[index as usize];
        let proof = inclusion_proof(index, size, &log).unwrap();
        prop_assert_eq!(verify_inclusion(index, size, &leaf, &proof, &root), Ok(()));
        let mut bad_leaf = leaf;
        flip(&mut bad_leaf, bit);
        prop_assert!(verify_inclusion(index, size, &bad_leaf, &proof, &root).is_err());
        let mut bad_root = root;
        flip(&mut bad_root, bit);
        prop_assert!(verify_inclusion(index, size, &leaf, &proof, &bad_root).is_err());
        if !proof.is_empty() {
            let mut bad_proof = proof.clone();
            let at = bit % bad_proof.len();
            flip(&mut bad_proof[at], bit);
            prop_assert!(verify_inclusion(index, size, &leaf, &bad_proof, &root).is_err());
            prop_assert!(verify_inclusion(index, size, &leaf, &proof[1..], &root).is_err());
        }
        if size > 1 {
            prop_assert!(verify_inclusion((index + 1) % size, size, &leaf, &proof, &root).is_err());
        }
    }

    #[test]
    fn consistency_proofs_verify_and_tampering_fails(new in 1u64..600, old in any::<u64>(), bit in 0usize..256) {
        let log = MemoryLog::with_leaves(new);
        let old = old % new + 1;
        let old_root = reference_root(&log.leaves[..old as usize]);
        let new_root = reference_root(&log.leaves);
        let proof = consistency_proof(old, new, &log).unwrap();
        prop_assert_eq!(verify_consistency(old, new, &old_root, &new_root, &proof), Ok(()));
        let mut bad_old = old_root;
        flip(&mut bad_old, bit);
        prop_assert!(verify_consistency(old, new, &bad_old, &new_root, &proof).is_err());
        let mut bad_new = new_root;
        flip(&mut bad_new, bit);
        prop_assert!(verify_consistency(old, new, &old_root, &bad_new, &proof).is_err());
        if !proof.is_empty() {
            let mut bad_proof = proof.clone();
            let at = bit % bad_proof.len();
            flip(&mut bad_proof[at], bit);
            prop_assert!(verify_consistency(old, new, &old_root, &new_root, &bad_proof).is_err());
        }
    }

    /// Proofs for a tree head older than the stored tree (a checkpoint signed before the latest
    /// appends) read only hashes of that older tree and verify against its root.
    #[test]
    fn proofs_for_a_tree_below_the_stored_size_verify(stored in 2u64..600, mid in any::<u64>(), at in any::<u64>()) {
        let log = MemoryLog::with_leaves(stored);
        let mid = mid % (stored - 1) + 1;
        let mid_root = reference_root(&log.leaves[..mid as usize]);
        prop_assert_eq!(tree_hash(mid, &log).unwrap(), mid_root);
        let index = at % mid;
        let proof = inclusion_proof(index, mid, &log).unwrap();
        prop_assert_eq!(verify_inclusion(index, mid, &log.leaves[index as usize], &proof, &mid_root), Ok(()));
        let old = at % mid + 1;
        let old_root = reference_root(&log.leaves[..old as usize]);
        let proof = consistency_proof(old, mid, &log).unwrap();
        prop_assert_eq!(verify_consistency(old, mid, &old_root, &mid_root, &proof), Ok(()));
        let stored_root = reference_root(&log.leaves);
        prop_assert!(verify_consistency(old, mid, &old_root, &stored_root, &proof).is_err());
    }
}
