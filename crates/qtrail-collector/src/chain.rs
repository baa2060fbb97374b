//! Verification of a location's hash chain.
//!
//! Each stored record keeps its event, its `prev_chain_hash` and its `chain_hash`, where
//! `chain_hash = SHA-256(prev_chain_hash || canonical_bytes(event))` and the first record's
//! `prev_chain_hash` is 32 zero bytes. `verify` walks the records of a range in
//! `location_seq` order, re-deriving each hash from the previous one, and reports the first
//! record that does not fit:
//!
//! - **MISSING** at `s`: no record is stored at `s` (a hole, or the chain ends before the head
//!   the collector row records), or the record at `s` links to a hash that no stored record has
//!   (the records before it were removed and the rest renumbered);
//! - **REORDERED** at `s`: the record at `s` links to the hash of a record stored *later*;
//! - **INSERTED** at `s`: the record at `s` is not part of the chain: the next record links
//!   past it (to the hash `s` links to, or to an earlier record's hash);
//! - **MODIFIED** at `s`: the record links correctly but its content (or its stored hash) no
//!   longer gives its stored `chain_hash`, or it no longer decodes or validates.
//!
//! A broken link is explained by looking the linked hash up among all stored records, which
//! scans the location once; verification stops at the first fault, so this happens at most once.
//!
//! The walk reads each chunk of records once, in bulk, and hashes every record on all cores
//! from its bytes (`digest`): the chain hash and the Merkle leaf hash come from one reading of
//! the canonical bytes, and the tree is checked chunk by chunk in the same pass
//! ([`verify_with_tree`], [`crate::merkle`]). Only a record that reading does not confirm is
//! read again, fully, to say what is wrong with it.
//!
//! Signed checkpoints of the location are checked too: every checkpoint whose position lies in
//! the range must state the hash the walk derived there (else MODIFIED at that position: the
//! chain was rewritten at or before it), and when the range reaches the chain's end, no
//! checkpoint may lie beyond it (else MISSING: the chain was cut short). Their signatures are
//! the auditor's to check, with the public key (`qtrail events verify --public-key`). A stored
//! checkpoint entry that no longer decodes, or holds another checkpoint than its number names
//! (copied from another location, swapped with another), is damaged evidence: it is left out
//! of the comparison and, unless the chain itself is faulty, the verdict is
//! **CHECKPOINT_DAMAGED** naming its number.
//!
//! # Limits
//!
//! - Someone who can write the store can rewrite a suffix of the chain consistently (new
//!   content, recomputed hashes): the chain proves order and integrity relative to a trusted
//!   head hash, not on its own. Signed checkpoints are such heads; without them (or if they
//!   were deleted too), keep the head hash (`Collector.head_chain_hash`, a checkpoint, or a
//!   `VerifyChain` response) somewhere else to detect that.
//! - Truncation of the newest records is detected against the event count in the collector
//!   row, which the same writer could lower too, and against the newest checkpoint.
//! - A record modified *with* a recomputed hash shows up as MISSING at the next position (its
//!   successor links to a hash no record has), indistinguishable from a removal.
//! - A range that starts after 1 trusts the stored hash of the record just before it.

use std::collections::BTreeMap;

use qtrail_cadf::{AuditEvent, ChainHash, Location, canonical_bytes, chain_hash_of_bytes};
use qtrail_proto::qtrail::audit::v1 as proto;
use qtrail_proto::qtrail::audit::v1::ChainFaultKind;

use qtrail_tlog::{Hash, NoteVerifier, leaf_hash};

use crate::merkle::TreeCheck;
use crate::store::{ChainRecord, EventStore, Result, StoredBytes};

mod digest;

/// Records (and checkpoints) read from the store per step; the tree is checked chunk by chunk
/// of this size too.
const CHUNK: usize = 1000;

/// An inclusive range of positions to check, already resolved against the chain's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckRange {
    /// First position, at least 1.
    pub(crate) from_seq: u64,
    /// Last position.
    pub(crate) to_seq: u64,
}

/// Verifies `range` of the chain of `location`, whose newest position is `chain_end`, and
/// returns the verdict, without looking at the Merkle tree.
#[cfg(test)]
pub(crate) fn verify(
    store: &dyn EventStore,
    location: &Location,
    range: CheckRange,
    chain_end: u64,
) -> Result<proto::VerifyChainResponse> {
    verifier(store, location, range, chain_end, None)?.run()
}

/// Verifies `range` of the chain of `location`, whose newest position is `chain_end`, and its
/// Merkle tree (see [`crate::merkle`]; with `verifiers`, the checkpoint notes' signatures too),
/// in one pass over the records, and returns the verdict: the chain's fault if there is one,
/// else the tree's.
pub(crate) fn verify_with_tree(
    store: &dyn EventStore,
    location: &Location,
    range: CheckRange,
    chain_end: u64,
    verifiers: Option<&[NoteVerifier]>,
) -> Result<proto::VerifyChainResponse> {
    let tree = TreeCheck::new(store, location, range, verifiers)?;
    let mut verifier = verifier(store, location, range, chain_end, Some(tree))?;
    let verdict = verifier.run()?;
    match verifier.tree {
        Some(tree) if verdict.ok => Ok(tree.verdict(verdict)),
        _ => Ok(verdict),
    }
}

/// Returns the verifier of `range`, with the heads the checkpoints signed read.
fn verifier<'a>(
    store: &'a dyn EventStore,
    location: &'a Location,
    range: CheckRange,
    chain_end: u64,
    tree: Option<TreeCheck<'a>>,
) -> Result<Verifier<'a>> {
    let mut heads: BTreeMap<u64, Vec<SignedHead>> = BTreeMap::new();
    let mut damaged = Vec::new();
    // Read a page at a time: a collector signs every location at every tick, so there can be
    // many, while distinct heads are few.
    let mut before = None;
    loop {
        let page = store.checkpoints(location, before, CHUNK)?;
        let Some(oldest) = page.last().map(|entry| entry.number) else {
            break;
        };
        for entry in page {
            let checkpoint = match entry.checkpoint {
                Ok(checkpoint) => checkpoint,
                Err(detail) => {
                    damaged.push((entry.number, detail));
                    continue;
                }
            };
            let hash = qtrail_cadf::checkpoint::head_of(&checkpoint);
            let signed = heads.entry(checkpoint.location_seq).or_default();
            // An idle chain gets the same head signed again and again: kept once, counted.
            match signed.iter_mut().find(|head| head.hash == hash) {
                Some(head) => head.count += 1,
                None => signed.push(SignedHead { number: checkpoint.number, hash, count: 1 }),
            }
        }
        before = Some(oldest);
    }
    let pruned_through = store.pruned_through(location)?;
    Ok(Verifier {
        store,
        location,
        range,
        chain_end,
        heads,
        damaged,
        checked: 0,
        checkpoints_checked: 0,
        tree,
        pruned_through,
    })
}

struct Verifier<'a> {
    store: &'a dyn EventStore,
    location: &'a Location,
    range: CheckRange,
    chain_end: u64,
    /// The heads the checkpoints signed, by the position they cover.
    heads: BTreeMap<u64, Vec<SignedHead>>,
    /// Checkpoint entries that are not the checkpoint their number names, newest first, with
    /// what is wrong.
    damaged: Vec<(u64, String)>,
    checked: u64,
    checkpoints_checked: u64,
    /// Positions up to here were pruned (see [`EventStore::prune`]): their absence is no fault.
    pruned_through: u64,
    /// The tree's check, fed each chunk's leaf hashes once the chunk's records are intact.
    tree: Option<TreeCheck<'a>>,
}

/// A chain hash signed at one position by one or more checkpoints.
struct SignedHead {
    /// The newest checkpoint that signed it (checkpoints come newest first).
    number: u64,
    /// The hash; `None` when the checkpoint's is not 32 bytes.
    hash: Option<ChainHash>,
    /// How many checkpoints signed it.
    count: u64,
}

/// A decoded record's links.
struct Links {
    prev: Option<ChainHash>,
    hash: Option<ChainHash>,
}

fn links(record: &proto::StoredEvent) -> Links {
    Links { prev: ChainHash::from_slice(&record.prev_chain_hash), hash: ChainHash::from_slice(&record.chain_hash) }
}

impl Verifier<'_> {
    fn run(&mut self) -> Result<proto::VerifyChainResponse> {
        let CheckRange { from_seq, to_seq } = self.range;
        if from_seq > to_seq {
            return Ok(match self.signed_beyond(to_seq).or_else(|| self.damaged_checkpoint()) {
                Some(fault) => self.fault(fault),
                None => self.ok(ChainHash::GENESIS),
            });
        }
        let mut expected_prev = match self.anchor()? {
            Ok(anchor) => anchor,
            Err(fault) => return Ok(self.fault(fault)),
        };
        let mut next_seq = from_seq;
        // The position before the range was pruned: no record gives the anchor, the first one
        // read does (see below).
        let mut reanchor = from_seq > 1 && from_seq - 1 <= self.pruned_through;
        while next_seq <= to_seq {
            let limit = usize::try_from((to_seq - next_seq + 1).min(CHUNK as u64)).unwrap_or(CHUNK);
            let chunk = self.store.stored_bytes(self.location, next_seq, limit)?;
            if chunk.is_empty() {
                break;
            }
            let first = next_seq;
            let digests = digest::digest_all(&chunk);
            let mut leaves = Vec::with_capacity(chunk.len());
            for (index, (stored, digest)) in chunk.iter().zip(&digests).enumerate() {
                if stored.location_seq > to_seq {
                    break;
                }
                if stored.location_seq != next_seq || reanchor {
                    reanchor = false;
                    // Across a pruned stretch the chain is anchored by the stored link of the
                    // first record after it; the Merkle tree is no longer walked leaf by leaf
                    // (its hashes and the checkpoints still prove what remains, see the README).
                    match digest {
                        Some(digest) if stored.location_seq - 1 <= self.pruned_through => {
                            expected_prev = digest.prev;
                            next_seq = stored.location_seq;
                            self.tree = None;
                        }
                        _ => return Ok(self.fault(missing(next_seq, format!("location_seq {next_seq} is absent")))),
                    }
                }
                let checked = match digest {
                    Some(digest) if digest.fits(&expected_prev) => Ok((digest.hash, digest.leaf)),
                    _ => self.check_fully(&chunk, index, &expected_prev)?,
                };
                match checked {
                    Ok((hash, leaf)) => {
                        expected_prev = hash;
                        leaves.push(leaf);
                    }
                    Err(fault) => return Ok(self.fault(fault)),
                }
                if let Err(fault) = self.check_checkpoints(next_seq, &expected_prev) {
                    return Ok(self.fault(fault));
                }
                self.checked += 1;
                next_seq += 1;
            }
            if let Some(tree) = self.tree.as_mut() {
                tree.chunk(first, &leaves)?;
            }
        }
        if next_seq <= to_seq && to_seq > self.pruned_through {
            return Ok(self.fault(missing(
                next_seq,
                format!("location_seq {next_seq} is absent: the chain ends at {} of {to_seq}", next_seq - 1),
            )));
        }
        if let Some(fault) = self.signed_beyond(to_seq).or_else(|| self.damaged_checkpoint()) {
            return Ok(self.fault(fault));
        }
        Ok(self.ok(expected_prev))
    }

    /// Returns a CHECKPOINT_DAMAGED fault for the newest damaged checkpoint entry, if any. The
    /// chain is walked first, against the intact checkpoints, so that a fault in the chain itself
    /// is the one reported; damaged evidence still fails the verification.
    fn damaged_checkpoint(&self) -> Option<proto::ChainFault> {
        let (number, detail) = self.damaged.first()?;
        let others = match self.damaged.len() - 1 {
            0 => String::new(),
            1 => ", and 1 more checkpoint entry is damaged".to_owned(),
            more => format!(", and {more} more checkpoint entries are damaged"),
        };
        Some(proto::ChainFault {
            location_seq: 0,
            kind: ChainFaultKind::CheckpointDamaged as i32,
            detail: format!("{detail}{others}"),
            checkpoint_number: *number,
        })
    }

    /// Returns a MISSING fault when the range ends at the chain's end, `to_seq`, but a
    /// checkpoint was signed at a later position: the chain was cut short.
    fn signed_beyond(&self, to_seq: u64) -> Option<proto::ChainFault> {
        if to_seq < self.chain_end {
            return None;
        }
        let (&signed_seq, heads) = self.heads.range(to_seq + 1..).next_back()?;
        let number = heads.iter().map(|head| head.number).max().unwrap_or_default();
        Some(missing(
            to_seq + 1,
            format!("the chain ends at {to_seq}, but checkpoint {number} was signed at location_seq {signed_seq}"),
        ))
    }

    /// Checks the checkpoints signed at `seq` against the chain hash derived there.
    fn check_checkpoints(&mut self, seq: u64, hash: &ChainHash) -> Result<(), proto::ChainFault> {
        let Some(checkpoints) = self.heads.get(&seq) else {
            return Ok(());
        };
        for head in checkpoints {
            if head.hash.as_ref() != Some(hash) {
                return Err(fault(
                    seq,
                    ChainFaultKind::Modified,
                    format!(
                        "its chain hash differs from the one signed in checkpoint {}: the chain was rewritten at \
                         or before this position",
                        head.number
                    ),
                ));
            }
            self.checkpoints_checked += head.count;
        }
        Ok(())
    }

    /// Returns the hash the first record of the range must link to.
    fn anchor(&self) -> Result<Result<ChainHash, proto::ChainFault>> {
        let from_seq = self.range.from_seq;
        if from_seq <= 1 {
            return Ok(Ok(ChainHash::GENESIS));
        }
        let before = from_seq - 1;
        if before <= self.pruned_through {
            // Pruned: the run anchors on the first record it reads (see `run`).
            return Ok(Ok(ChainHash::GENESIS));
        }
        let record = self.store.chain_records(self.location, before, 1)?.into_iter().next();
        let anchor = record
            .filter(|entry| entry.location_seq == before)
            .and_then(|entry| entry.record)
            .and_then(|record| links(&record).hash);
        Ok(anchor.ok_or_else(|| {
            missing(from_seq, format!("location_seq {before}, before the range, is absent or unreadable"))
        }))
    }

    /// Checks the record at `index` of `chunk`, which the fast reading could not confirm, by
    /// reading it fully; returns its hash and leaf hash, or the fault.
    fn check_fully(
        &self,
        chunk: &[StoredBytes],
        index: usize,
        expected_prev: &ChainHash,
    ) -> Result<Result<(ChainHash, Hash), proto::ChainFault>> {
        let entry = chunk[index].decode(self.location);
        let following = match chunk.get(index + 1) {
            Some(next) => Some(next.decode(self.location)),
            None => self.store.chain_records(self.location, entry.location_seq + 1, 1)?.into_iter().next(),
        };
        self.check(&entry, expected_prev, following.as_ref())
    }

    /// Checks one record against the hash it must link to; returns its hash and leaf hash, or
    /// the fault.
    fn check(
        &self,
        entry: &ChainRecord,
        expected_prev: &ChainHash,
        following: Option<&ChainRecord>,
    ) -> Result<Result<(ChainHash, Hash), proto::ChainFault>> {
        let seq = entry.location_seq;
        let Some(record) = &entry.record else {
            return Ok(Err(fault(seq, ChainFaultKind::Modified, "the record no longer decodes".into())));
        };
        let Links { prev: Some(prev), hash: Some(stored_hash) } = links(record) else {
            return Ok(Err(fault(seq, ChainFaultKind::Modified, "the record's chain hashes are malformed".into())));
        };
        let following_prev = following
            .filter(|next| next.location_seq == seq + 1)
            .and_then(|next| next.record.as_ref())
            .and_then(|next| links(next).prev);
        if prev != *expected_prev {
            return Ok(Err(self.explain_broken_link(seq, &prev, expected_prev, following_prev)?));
        }
        let canonical = match record.event.clone().map(AuditEvent::try_from) {
            Some(Ok(event)) => canonical_bytes(&event),
            Some(Err(err)) => {
                return Ok(Err(fault(seq, ChainFaultKind::Modified, format!("the event no longer validates: {err}"))));
            }
            None => return Ok(Err(fault(seq, ChainFaultKind::Modified, "the record holds no event".into()))),
        };
        if chain_hash_of_bytes(&prev, &canonical) != stored_hash {
            // The next record linking to this record's predecessor means it skips this one.
            if following_prev == Some(prev) {
                return Ok(Err(fault(
                    seq,
                    ChainFaultKind::Inserted,
                    format!("location_seq {} links past it to the same predecessor", seq + 1),
                )));
            }
            return Ok(Err(fault(
                seq,
                ChainFaultKind::Modified,
                "its content no longer matches its chain hash".into(),
            )));
        }
        Ok(Ok((stored_hash, leaf_hash(&canonical))))
    }

    /// Classifies a record whose `prev` is not the hash of the record before it.
    fn explain_broken_link(
        &self,
        seq: u64,
        prev: &ChainHash,
        expected_prev: &ChainHash,
        following_prev: Option<ChainHash>,
    ) -> Result<proto::ChainFault> {
        // The genesis hash is the hash "at position 0": a record linking to it claims to be first.
        let linked =
            if *prev == ChainHash::GENESIS { Some(0) } else { self.store.seq_of_chain_hash(self.location, prev)? };
        if let Some(linked) = linked
            && linked > seq
        {
            return Ok(fault(
                seq,
                ChainFaultKind::Reordered,
                format!("it links to the hash of location_seq {linked}, which is stored after it"),
            ));
        }
        if let Some(linked) = linked
            && linked + 1 < seq
        {
            let first_inserted = (linked + 1).max(self.range.from_seq);
            return Ok(fault(
                first_inserted,
                ChainFaultKind::Inserted,
                format!("location_seq {seq} links to the hash of location_seq {linked}, skipping {first_inserted}"),
            ));
        }
        if following_prev == Some(*expected_prev) {
            return Ok(fault(
                seq,
                ChainFaultKind::Inserted,
                format!("location_seq {} links past it to the same predecessor", seq + 1),
            ));
        }
        if linked == Some(seq) {
            return Ok(fault(seq, ChainFaultKind::Modified, "it links to its own hash".into()));
        }
        Ok(missing(seq, "it links to a hash that no stored record has: records before it were removed".into()))
    }

    fn ok(&self, head: ChainHash) -> proto::VerifyChainResponse {
        proto::VerifyChainResponse {
            ok: true,
            checked: self.checked,
            from_seq: self.range.from_seq,
            to_seq: self.range.to_seq,
            head_chain_hash: if self.checked == 0 { Vec::new() } else { head.as_bytes().to_vec() },
            fault: None,
            checkpoints_checked: self.checkpoints_checked,
            pruned_through: self.pruned_through,
        }
    }

    fn fault(&self, fault: proto::ChainFault) -> proto::VerifyChainResponse {
        proto::VerifyChainResponse {
            ok: false,
            checked: self.checked,
            from_seq: self.range.from_seq,
            to_seq: self.range.to_seq,
            head_chain_hash: Vec::new(),
            fault: Some(fault),
            checkpoints_checked: self.checkpoints_checked,
            pruned_through: self.pruned_through,
        }
    }
}

fn fault(location_seq: u64, kind: ChainFaultKind, detail: String) -> proto::ChainFault {
    proto::ChainFault { location_seq, kind: kind as i32, detail, checkpoint_number: 0 }
}

fn missing(location_seq: u64, detail: String) -> proto::ChainFault {
    fault(location_seq, ChainFaultKind::Missing, detail)
}
