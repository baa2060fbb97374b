//! What retention has decided and may decide, as a store keeps it: each location's retention
//! policy, the legal holds, and how far each location's chain was pruned.
//!
//! # Why one small record
//!
//! Policies and holds are a handful of rows, changed by an admin now and then; the pruned range
//! of a location is two facts: `through_seq` (every position up to it was examined and removed)
//! and the positions up to it that were kept because a hold covered them. A removed position is
//! one at or below `through_seq` that is not kept, so the record stays small however many events
//! expire. Every backend stores this record whole and atomically (the file store in a file of
//! its own replaced by rename, the redb store in one row), so a crash leaves the old decision or
//! the new one, never half of one.

use std::collections::BTreeSet;

use prost::Message as _;
use qtrail_proto::qtrail::audit::v1 as proto;

use super::{Result, StoreError};

/// How far one location's chain was pruned.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PrunedRange {
    /// The location.
    #[prost(string, tag = "1")]
    pub(crate) location: String,
    /// Every position up to this one was removed, except those in `kept`.
    #[prost(uint64, tag = "2")]
    pub(crate) through_seq: u64,
    /// Positions up to `through_seq` kept because a legal hold covered them, ascending.
    #[prost(uint64, repeated, tag = "3")]
    pub(crate) kept: Vec<u64>,
}

/// The whole record.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Expiry {
    /// Retention policies, one per location with days > 0.
    #[prost(message, repeated, tag = "1")]
    pub(crate) policies: Vec<proto::RetentionPolicy>,
    /// Legal holds in force.
    #[prost(message, repeated, tag = "2")]
    pub(crate) holds: Vec<proto::LegalHold>,
    /// Pruned ranges, one per location pruned at least once.
    #[prost(message, repeated, tag = "3")]
    pub(crate) pruned: Vec<PrunedRange>,
}

/// Most legal holds kept: each is checked against every event a prune examines.
pub(crate) const MAX_HOLDS: usize = 1000;

impl Expiry {
    /// Reads the record stored as `bytes`.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when it does not decode.
    pub(crate) fn decode_stored(bytes: &[u8]) -> Result<Self> {
        Self::decode(bytes).map_err(|err| StoreError::Corrupt(format!("the retention record does not decode: {err}")))
    }

    /// Returns the retention policy of `location` (0 days when none).
    pub(crate) fn retention(&self, location: &str) -> proto::RetentionPolicy {
        self.policies
            .iter()
            .find(|policy| policy.location == location)
            .cloned()
            .unwrap_or_else(|| proto::RetentionPolicy { location: location.to_owned(), days: 0 })
    }

    /// Sets the retention policy of its location; 0 days removes it.
    pub(crate) fn set_retention(&mut self, policy: &proto::RetentionPolicy) {
        self.policies.retain(|old| old.location != policy.location);
        if policy.days > 0 {
            self.policies.push(policy.clone());
            self.policies.sort_by(|a, b| a.location.cmp(&b.location));
        }
    }

    /// Places (`on`) or lifts a hold on the hold's location or account; placing one that is in
    /// force replaces it (a new reason).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when placing it would keep more than [`MAX_HOLDS`].
    pub(crate) fn set_hold(&mut self, hold: &proto::LegalHold, on: bool) -> Result<()> {
        self.holds.retain(|old| !(old.location == hold.location && old.account == hold.account));
        if on {
            if self.holds.len() >= MAX_HOLDS {
                return Err(StoreError::Backend(format!("too many legal holds (at most {MAX_HOLDS})")));
            }
            self.holds.push(hold.clone());
            // Locations first (an empty account sorts first), then accounts.
            self.holds.sort_by(|a, b| (&a.account, &a.location).cmp(&(&b.account, &b.location)));
        }
        Ok(())
    }

    /// Returns how far `location` was pruned, if it was.
    pub(crate) fn pruned(&self, location: &str) -> Option<&PrunedRange> {
        self.pruned.iter().find(|range| range.location == location)
    }

    /// Returns the position up to which `location` was pruned, 0 when it was not.
    pub(crate) fn pruned_through(&self, location: &str) -> u64 {
        self.pruned(location).map_or(0, |range| range.through_seq)
    }

    /// Records that `location` is pruned through `through_seq` but for `kept`.
    pub(crate) fn set_pruned(&mut self, location: &str, through_seq: u64, kept: Vec<u64>) {
        self.pruned.retain(|range| range.location != location);
        self.pruned.push(PrunedRange { location: location.to_owned(), through_seq, kept });
    }

    /// Returns the record's bytes.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

/// The removed positions of one location, for the reads to skip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Removed {
    through_seq: u64,
    kept: BTreeSet<u64>,
}

impl Removed {
    /// Returns the removed positions `range` describes.
    pub(crate) fn of(range: Option<&PrunedRange>) -> Self {
        range.map_or_else(Self::default, |range| Self {
            through_seq: range.through_seq,
            kept: range.kept.iter().copied().collect(),
        })
    }

    /// Returns whether the record at `seq` was removed.
    pub(crate) fn contains(&self, seq: u64) -> bool {
        seq <= self.through_seq && !self.kept.contains(&seq)
    }
}

/// What one [`super::EventStore::prune`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneOutcome {
    /// Records removed by this prune.
    pub removed: u64,
    /// Records up to the pruned position kept because `keep` kept them (held).
    pub kept: u64,
    /// The location's pruned position after it.
    pub pruned_through: u64,
}

/// Decides, record by record, which of the positions `from..=through_seq` present in the
/// chain are kept: `records` yields them (position, record or `None` when it does not decode).
/// Records that do not decode are kept: they are evidence of damage, which verification must
/// still find, not something retention may erase.
pub(crate) fn decide(
    records: impl IntoIterator<Item = (u64, Option<proto::StoredEvent>)>,
    keep: &dyn Fn(&proto::StoredEvent) -> bool,
) -> (Vec<u64>, Vec<u64>) {
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    for (seq, record) in records {
        match record {
            Some(record) if !keep(&record) => removed.push(seq),
            _ => kept.push(seq),
        }
    }
    (kept, removed)
}
