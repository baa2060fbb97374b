//! The watermark: the outbox position up to which every event is durable, and so the furthest
//! the publisher may read under group commit. An event committed without an fsync is visible to
//! later transactions but could still vanish in a crash together with the call it records, so
//! it must not reach the collector before a durable commit covers it.

use std::sync::{Mutex, PoisonError};

/// `(epoch, seq)`: every event up to `seq` of `epoch` is durable.
#[derive(Debug, Default)]
pub(super) struct Watermark(Mutex<(u64, u64)>);

impl Watermark {
    /// Records that every event up to `seq` of `epoch` is durable. The watermark only moves
    /// forward (a new epoch is ahead of every position of the old one), so a durable commit that
    /// reports late cannot pull it back.
    pub(super) fn advance(&self, epoch: u64, seq: u64) {
        let mut durable = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if (epoch, seq) > *durable {
            *durable = (epoch, seq);
        }
    }

    /// Returns the highest durable seq of the current epoch.
    pub(super) fn seq(&self) -> u64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).1
    }
}
