//! Verification of a location's Merkle tree against its events and its signed tree heads, after
//! the chain walk (`chain`) found the records themselves intact.
//!
//! Every leaf hash is recomputed from the event's canonical bytes and compared with the stored
//! one; when the range starts at the first event, the tree is rebuilt from those leaves (a
//! frontier of complete subtrees, O(log n) memory), every checkpoint note's root is compared
//! with the rebuilt root at its size, and the stored tree at the range's end with the rebuilt
//! one. A mismatch is a MODIFIED fault at the position where it shows, naming the checkpoint
//! when one is involved.

use std::collections::BTreeMap;

use qtrail_cadf::Location;
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::ChainFaultKind;
use qtrail_tlog::{
    Checkpoint as TreeHead, EMPTY_TREE_HASH, Hash, NoteVerifier, leaf_hash, node_hash, open_note, stored_hash_index,
    tree_hash,
};

use crate::chain::CheckRange;
use crate::store::{EventStore, Result, TreeReader, canonical_of};

/// Records read from the store per step.
const CHUNK: usize = 1000;

/// The complete subtrees of the leaves seen so far, largest first: (leaves, hash).
#[derive(Debug, Default)]
struct Frontier(Vec<(u64, Hash)>);

impl Frontier {
    fn push(&mut self, leaf: Hash) {
        let (mut size, mut hash) = (1, leaf);
        while let Some(&(top_size, top)) = self.0.last().filter(|(top_size, _)| *top_size == size) {
            self.0.pop();
            (size, hash) = (top_size * 2, node_hash(&top, &hash));
        }
        self.0.push((size, hash));
    }

    /// Returns the RFC 6962 root of the leaves seen: the subtrees folded from the right.
    fn root(&self) -> Hash {
        let mut subtrees = self.0.iter().rev();
        let Some(&(_, last)) = subtrees.next() else { return EMPTY_TREE_HASH };
        subtrees.fold(last, |right, (_, left)| node_hash(left, &right))
    }
}

/// Checks the tree of `location` over `range` and returns `verdict` (the chain walk's, which
/// found no fault), turned into a fault when the tree does not hold.
pub(crate) fn verify(
    store: &dyn EventStore,
    location: &Location,
    range: CheckRange,
    verifier: Option<&NoteVerifier>,
    verdict: proto::VerifyChainResponse,
) -> Result<proto::VerifyChainResponse> {
    let fault = |location_seq, checkpoint_number, detail: String| proto::VerifyChainResponse {
        ok: false,
        head_chain_hash: Vec::new(),
        fault: Some(proto::ChainFault {
            location_seq,
            kind: ChainFaultKind::Modified as i32,
            detail,
            checkpoint_number,
        }),
        ..verdict.clone()
    };
    let heads = match signed_roots(store, location, range.to_seq, verifier)? {
        Ok(heads) => heads,
        Err(BadNote { number, location_seq, detail }) => return Ok(fault(location_seq, number, detail)),
    };
    let whole = range.from_seq <= 1;
    let mut frontier = Frontier::default();
    let mut next = range.from_seq.max(1);
    while next <= range.to_seq {
        let limit = usize::try_from((range.to_seq - next + 1).min(CHUNK as u64)).unwrap_or(CHUNK);
        let records = store.chain_records(location, next, limit)?;
        let Some(last) = records.last().map(|entry| entry.location_seq) else { break };
        let indexes: Vec<u64> = records.iter().map(|entry| stored_hash_index(0, entry.location_seq - 1)).collect();
        let Ok(stored) = store.read_hashes(location, &indexes) else {
            return Ok(fault(next, 0, "the merkle tree lacks leaf hashes of this range".to_owned()));
        };
        for (entry, stored) in records.iter().zip(stored) {
            let seq = entry.location_seq;
            let leaf = entry.record.as_ref().and_then(canonical_of).map(|canonical| leaf_hash(&canonical));
            if leaf != Some(stored) {
                return Ok(fault(seq, 0, "its leaf hash in the merkle tree differs from its content".to_owned()));
            }
            if !whole {
                continue;
            }
            frontier.push(stored);
            for (number, root) in heads.get(&seq).into_iter().flatten() {
                if *root != frontier.root() {
                    let detail = format!(
                        "the merkle tree root at size {seq} differs from the one signed in checkpoint {number}"
                    );
                    return Ok(fault(seq, *number, detail));
                }
            }
        }
        next = last + 1;
    }
    if whole && range.to_seq > 0 {
        let stored = tree_hash(range.to_seq, &TreeReader { store, location }).ok();
        if stored != Some(frontier.root()) {
            let detail = "the stored merkle tree differs from the tree of the events".to_owned();
            return Ok(fault(range.to_seq, 0, detail));
        }
    }
    Ok(verdict)
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
/// notes (the v1 signature does not cover the `tree_size` and `root` fields); with `verifier`
/// (the collector signs checkpoints) each note's signature must hold too.
///
/// # Errors
/// When the checkpoints cannot be read; the first bad note as the inner error.
fn signed_roots(
    store: &dyn EventStore,
    location: &Location,
    to_seq: u64,
    verifier: Option<&NoteVerifier>,
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
            let head = match note_head(&checkpoint.note, location, verifier) {
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

/// Returns the tree head a note states, checked with `verifier` when there is one, and of the
/// log of `location`.
fn note_head(
    note: &str,
    location: &Location,
    verifier: Option<&NoteVerifier>,
) -> std::result::Result<TreeHead, String> {
    let text = match verifier {
        Some(verifier) => open_note(note, std::slice::from_ref(verifier)).map_err(|err| err.to_string())?,
        None => note.rfind("\n\n").map(|split| &note[..=split]).ok_or("no signature block")?,
    };
    let head = TreeHead::parse(text).map_err(|err| err.to_string())?;
    if !head.origin.ends_with(&format!("/{location}")) {
        return Err(format!("its origin `{}` is not of location `{location}`", head.origin));
    }
    Ok(head)
}
