//! The event ids of one location, which deduplication looks up for every event admitted.
//!
//! Most ids sit in a sorted array (`base`), as the state snapshot stores them: loading it
//! costs a copy, not a million hash insertions, and each id costs 24 bytes instead of a hash
//! map entry's 32 plus its spare capacity. The ids added since that array was made go to a hash
//! map (`recent`), which a lookup asks first; each snapshot written folds `recent` into a new
//! `base`.

use std::collections::HashMap;
use std::sync::Arc;

/// Event ids with their `location_seq`, sorted by id, shared without a copy.
pub(super) type Sorted = Arc<[(u128, u64)]>;

/// What a snapshot takes of [`Ids`]: the sorted array and the recent ids.
pub(super) type Parts = (Sorted, Vec<(u128, u64)>);

/// Event id → `location_seq`.
#[derive(Debug, Default, Clone)]
pub(super) struct Ids {
    /// Sorted by id, one entry per id; shared with a snapshot being written.
    base: Sorted,
    /// Ids added after `base` was made; on an id in both, this one holds.
    recent: HashMap<u128, u64>,
}

impl Ids {
    /// Returns the ids of `sorted`, which must be sorted by id with no id twice.
    pub(super) fn from_sorted(sorted: Vec<(u128, u64)>) -> Self {
        Self { base: sorted.into(), recent: HashMap::new() }
    }

    /// Returns the `location_seq` of `id`.
    pub(super) fn get(&self, id: u128) -> Option<u64> {
        if let Some(seq) = self.recent.get(&id) {
            return Some(*seq);
        }
        self.base.binary_search_by_key(&id, |(id, _)| *id).ok().map(|at| self.base[at].1)
    }

    /// Adds (or moves) `id`.
    pub(super) fn insert(&mut self, id: u128, seq: u64) {
        self.recent.insert(id, seq);
    }

    /// Returns what a snapshot needs of them: the shared array, and a copy of the recent ids,
    /// which is what takes time under the state's lock and why `recent` is kept small.
    pub(super) fn parts(&self) -> Parts {
        (self.base.clone(), self.recent.iter().map(|(id, seq)| (*id, *seq)).collect())
    }

    /// Merges `parts` into one sorted array, the recent id winning over the same id in the
    /// array.
    pub(super) fn merge(base: &[(u128, u64)], mut recent: Vec<(u128, u64)>) -> Vec<(u128, u64)> {
        recent.sort_unstable_by_key(|(id, _)| *id);
        let mut merged = Vec::with_capacity(base.len() + recent.len());
        let (mut old, mut new) = (base.iter().peekable(), recent.into_iter().peekable());
        loop {
            match (old.peek(), new.peek()) {
                (Some(a), Some(b)) if a.0 < b.0 => merged.extend(old.next().copied()),
                (Some(a), Some(b)) if a.0 == b.0 => {
                    old.next();
                    merged.extend(new.next());
                }
                (_, Some(_)) => merged.extend(new.next()),
                (Some(_), None) => merged.extend(old.next().copied()),
                (None, None) => return merged,
            }
        }
    }

    /// Makes `merged` (the ids as of `location_seq` `upto`, from [`Ids::merge`]) the array, and
    /// keeps in the map only the ids added after it.
    pub(super) fn fold(&mut self, merged: Sorted, upto: u64) {
        self.base = merged;
        self.recent.retain(|_, seq| *seq > upto);
    }

    /// Returns every id with its `location_seq`, sorted by id.
    #[cfg(test)]
    pub(super) fn sorted(&self) -> Vec<(u128, u64)> {
        let (base, recent) = self.parts();
        Self::merge(&base, recent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_see_the_array_the_recent_ids_and_the_recent_one_first() {
        let mut ids = Ids::from_sorted(vec![(1, 1), (5, 2), (9, 3)]);
        ids.insert(7, 4);
        ids.insert(5, 5);
        assert_eq!([1, 5, 7, 9, 2].map(|id| ids.get(id)), [Some(1), Some(5), Some(4), Some(3), None]);
        assert_eq!(ids.sorted(), [(1, 1), (5, 5), (7, 4), (9, 3)]);
        let merged: Sorted = ids.sorted().into();
        ids.insert(3, 6);
        ids.fold(merged, 5);
        assert_eq!(ids.recent.len(), 1, "only the id added after the fold stays in the map");
        assert_eq!(ids.sorted(), [(1, 1), (3, 6), (5, 5), (7, 4), (9, 3)]);
    }
}
