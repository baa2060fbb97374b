//! Verification of a location's Merkle tree against its events and its signed tree heads, in
//! the same pass as the chain walk (`chain`), which hands over each chunk's leaf hashes once it
//! found the chunk's records intact; a fault of the chain is the one reported, whatever the tree.
//!
//! Every leaf hash is recomputed from the event's canonical bytes (by the walk, from the bytes
//! it hashed for the chain) and compared with the stored one. When the range starts at the first event, every stored hash is rebuilt from those
//! leaves, chunk by chunk (`append_hashes` over the hashes compared before), and compared: the
//! interior ones too, which tiles serve as immutable and every proof uses. Then every
//! checkpoint note's root (read from the note, its signature checked when the collector holds
//! the key, by that key or a previous one it was given after a rotation) is compared with the
//! tree's at its size. A mismatch is a MODIFIED fault at the position where it shows, naming
//! the checkpoint when one is involved.

use std::collections::BTreeMap;

use qtrail_cadf::Location;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::ChainFaultKind;
use qtrail_tlog::{
    Checkpoint as TreeHead, Hash, NoteVerifier, append_hashes, open_note, stored_hash_count, stored_hash_index,
    tree_hash,
};

use crate::chain::CheckRange;
use crate::store::{EventStore, Result, TreeReader};

/// Checkpoints read from the store per step.
const CHUNK: usize = 1000;

/// The check of a location's tree, fed the leaf hashes of the chain walk chunk by chunk.
pub(crate) struct TreeCheck<'a> {
    store: &'a dyn EventStore,
    location: &'a Location,
    /// Whether the range starts at the first event, so that every stored hash is rebuilt.
    whole: bool,
    /// The roots the checkpoint notes signed, by tree size.
    heads: SignedRoots,
    /// The first checkpoint whose note does not state a tree head of this log.
    bad_note: Option<BadNote>,
    /// The first difference found: (position, checkpoint number or 0, what).
    mismatch: Option<(u64, u64, String)>,
}

impl<'a> TreeCheck<'a> {
    /// Starts the check of the tree of `location` over `range`, reading the signed roots (with
    /// `verifiers`, each note's signature must hold too).
    ///
    /// # Errors
    /// When the checkpoints cannot be read.
    pub(crate) fn new(
        store: &'a dyn EventStore,
        location: &'a Location,
        range: CheckRange,
        verifiers: Option<&[NoteVerifier]>,
    ) -> Result<Self> {
        let (heads, bad_note) = match signed_roots(store, location, range.to_seq, verifiers)? {
            Ok(heads) => (heads, None),
            Err(bad) => (SignedRoots::new(), Some(bad)),
        };
        Ok(Self { store, location, whole: range.from_seq <= 1, heads, bad_note, mismatch: None })
    }

    /// Checks the leaves from position `first` on, whose content hashes to `leaves`: the
    /// chunks come in order, each after the chain walk found its records intact. After the
    /// first difference the rest is not looked at: it is the one reported.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub(crate) fn chunk(&mut self, first: u64, leaves: &[Hash]) -> Result<()> {
        if self.bad_note.is_some() || self.mismatch.is_some() || leaves.is_empty() {
            return Ok(());
        }
        let reader = TreeReader { store: self.store, location: self.location };
        // From the first event, the chunk's stored hashes (interior ones too: tiles serve them
        // as immutable and every proof uses them) are rebuilt and compared; the hashes before
        // the chunk were compared in the chunks before.
        let checked = if self.whole {
            check_stored(self.store, self.location, first, leaves, &reader)?
        } else {
            check_leaves(self.store, self.location, first, leaves)?
        };
        if let Err((seq, detail)) = checked {
            self.mismatch = Some((seq, 0, detail));
            return Ok(());
        }
        let last = first + leaves.len() as u64 - 1;
        for (&seq, signed) in self.heads.range(first..=last).filter(|_| self.whole) {
            for (number, root) in signed {
                if tree_hash(seq, &reader).ok().as_ref() != Some(root) {
                    let detail = format!(
                        "the merkle tree root at size {seq} differs from the one signed in checkpoint {number}"
                    );
                    self.mismatch = Some((seq, *number, detail));
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Returns `verdict` (the chain walk's, which found no fault), turned into a MODIFIED fault
    /// when a note is bad or the tree differs from the events.
    pub(crate) fn verdict(self, verdict: proto::VerifyChainResponse) -> proto::VerifyChainResponse {
        let (location_seq, checkpoint_number, detail) = match (self.bad_note, self.mismatch) {
            (Some(BadNote { number, location_seq, detail }), _) => (location_seq, number, detail),
            (None, Some(mismatch)) => mismatch,
            (None, None) => return verdict,
        };
        proto::VerifyChainResponse {
            ok: false,
            head_chain_hash: Vec::new(),
            fault: Some(proto::ChainFault {
                location_seq,
                kind: ChainFaultKind::Modified as i32,
                detail,
                checkpoint_number,
            }),
            ..verdict
        }
    }
}

/// Where the tree first differs from the events: (position, what).
type Mismatch = (u64, String);

/// Compares the stored leaf hashes of the positions from `first` on with `leaves`, their
/// content's.
///
/// # Errors
/// When the store cannot be read.
fn check_leaves(
    store: &dyn EventStore,
    location: &Location,
    first: u64,
    leaves: &[Hash],
) -> Result<std::result::Result<(), Mismatch>> {
    let indexes: Vec<u64> = (first..).take(leaves.len()).map(|seq| stored_hash_index(0, seq - 1)).collect();
    let Ok(stored) = store.read_hashes(location, &indexes) else {
        return Ok(Err((first, "the merkle tree lacks leaf hashes of this range".to_owned())));
    };
    for ((seq, leaf), stored) in (first..).zip(leaves).zip(stored) {
        if *leaf != stored {
            return Ok(Err((seq, LEAF_DIFFERS.to_owned())));
        }
    }
    Ok(Ok(()))
}

const LEAF_DIFFERS: &str = "its leaf hash in the merkle tree differs from its content";

/// Rebuilds the stored hashes that `leaves`, the leaves from position `first` on, append to
/// the tree before them, and compares them with the stored ones.
///
/// # Errors
/// When the store cannot be read.
fn check_stored(
    store: &dyn EventStore,
    location: &Location,
    first: u64,
    leaves: &[Hash],
    reader: &TreeReader<'_>,
) -> Result<std::result::Result<(), Mismatch>> {
    let old_size = first - 1;
    let Ok(rebuilt) = append_hashes(old_size, leaves, reader) else {
        return Ok(Err((first, "the merkle tree lacks hashes before this range".to_owned())));
    };
    let base = stored_hash_count(old_size);
    let indexes: Vec<u64> = (base..).take(rebuilt.len()).collect();
    let Ok(stored) = store.read_hashes(location, &indexes) else {
        return Ok(Err((first, "the merkle tree lacks hashes of this range".to_owned())));
    };
    let Some(at) = rebuilt.iter().zip(&stored).position(|(rebuilt, stored)| rebuilt != stored) else {
        return Ok(Ok(()));
    };
    // Leaf n appends its own hash, then one per subtree it completes (its trailing one bits).
    let mut offset = 0;
    for n in old_size.. {
        let count = 1 + usize::try_from((n + 1).trailing_zeros()).unwrap_or(0);
        if at < offset + count {
            let level = at - offset;
            let detail = if level == 0 {
                LEAF_DIFFERS.to_owned()
            } else {
                format!(
                    "the stored merkle tree hash of level {level} completed here differs from the tree of the events"
                )
            };
            return Ok(Err((n + 1, detail)));
        }
        offset += count;
    }
    Ok(Ok(()))
}

/// Roots signed by checkpoint notes, by tree size: (checkpoint number, root).
type SignedRoots = BTreeMap<u64, Vec<(u64, Hash)>>;

/// A checkpoint whose note does not state a tree head of this log.
struct BadNote {
    number: u64,
    location_seq: u64,
    detail: String,
}

/// Returns the roots that checkpoint notes signed, by tree size, up to `to_seq`, read from the
/// notes (the v1 signature does not cover the `tree_size` and `root` fields); with `verifiers`
/// (the collector signs checkpoints) each note's signature by one of them must hold too.
///
/// # Errors
/// When the checkpoints cannot be read; the first bad note as the inner error.
fn signed_roots(
    store: &dyn EventStore,
    location: &Location,
    to_seq: u64,
    verifiers: Option<&[NoteVerifier]>,
) -> Result<std::result::Result<SignedRoots, BadNote>> {
    let mut heads = SignedRoots::new();
    let mut before = None;
    loop {
        let page = store.checkpoints(location, before, CHUNK)?;
        let Some(oldest) = page.last().map(|entry| entry.number) else { break };
        for checkpoint in page.iter().filter_map(|entry| entry.intact()) {
            if checkpoint.note.is_empty() {
                continue;
            }
            let head = match note_head(&checkpoint.note, location, verifiers) {
                Ok(head) => head,
                Err(why) => {
                    let detail = format!("checkpoint {} has a bad tree head note: {why}", checkpoint.number);
                    let location_seq = checkpoint.location_seq.min(to_seq);
                    return Ok(Err(BadNote { number: checkpoint.number, location_seq, detail }));
                }
            };
            if head.size > to_seq {
                continue;
            }
            let signed = heads.entry(head.size).or_default();
            // An idle tree gets the same head signed again and again: compared once.
            if !signed.iter().any(|(_, root)| *root == head.root) {
                signed.push((checkpoint.number, head.root));
            }
        }
        before = Some(oldest);
    }
    Ok(Ok(heads))
}

/// Returns the tree head a note states, checked with `verifiers` (all under the log's origin)
/// when there are some, and of the log of `location`.
pub(crate) fn note_head(
    note: &str,
    location: &Location,
    verifiers: Option<&[NoteVerifier]>,
) -> std::result::Result<TreeHead, String> {
    let text = match verifiers {
        Some(verifiers) => open_note(note, verifiers).map_err(|err| err.to_string())?,
        None => note.rfind("\n\n").map(|split| &note[..=split]).ok_or("no signature block")?,
    };
    let head = TreeHead::parse(text).map_err(|err| err.to_string())?;
    // With the key, the origin is exactly the configured one the note was signed under;
    // without, it must at least be `<prefix>/<location>`.
    let fits = match verifiers {
        Some(verifiers) => verifiers.iter().any(|verifier| head.origin == verifier.name()),
        None => head
            .origin
            .strip_suffix(location.as_str())
            .and_then(|prefix| prefix.strip_suffix('/'))
            .is_some_and(|prefix| !prefix.is_empty() && !prefix.chars().any(|c| c.is_whitespace() || c == '+')),
    };
    if !fits {
        return Err(format!("its origin `{}` is not this collector's log of `{location}`", head.origin));
    }
    Ok(head)
}
