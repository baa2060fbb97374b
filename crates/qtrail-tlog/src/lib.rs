//! The transparency log of a location: an RFC 6962 Merkle tree kept as Go-tlog-style stored
//! hashes, its inclusion and consistency proofs, C2SP tlog-tiles, C2SP signed notes and
//! tlog-checkpoints, C2SP tlog-proof files, C2SP tlog-cosignatures and the tlog-witness
//! `add-checkpoint` messages.
//!
//! A faithful port of the design of Go's `golang.org/x/mod/sumdb/tlog`: every hash of every
//! complete subtree is stored once, at an index that depends only on its level and position,
//! so a tree is append-only storage and any tree hash or proof reads O(log n) stored hashes.
//! The crate is pure (no I/O, no runtime): storage is behind [`HashReader`].

mod bundle;
mod checkpoint;
mod cosignature;
mod error;
mod hash;
mod note;
mod proof;
mod proof_file;
pub mod testing;
mod tile;
mod tree;
mod witness;

pub use bundle::{pack_entries, unpack_entries};
pub use checkpoint::Checkpoint;
pub use cosignature::{CosignatureVerifier, Cosigner};
pub use error::Error;
pub use hash::{EMPTY_TREE_HASH, Hash, leaf_hash, node_hash};
pub use note::{NoteSigner, NoteVerifier, open_note, sign_note};
pub use proof::{consistency_proof, inclusion_proof, verify_consistency, verify_inclusion};
pub use proof_file::{PROOF_HEADER, ProofFile};
pub use tile::{TILE_HEIGHT, TILE_WIDTH, Tile, read_tile_data, tiles_for_size};
pub use tree::{HashReader, append_hashes, stored_hash_count, stored_hash_index, tree_hash};
pub use witness::{AddCheckpoint, MAX_PROOF_LINES, SIZE_CONTENT_TYPE, parse_conflict_size};
