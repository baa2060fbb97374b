//! Group commit: many concurrent callers' transactions made durable by one fsync.
//!
//! A durable redb commit costs an fsync, and redb has one writer at a time, so a service that
//! commits every call with its own fsync serialises on the disk. Under [`CommitMode::Grouped`],
//! [`Outbox::begin`] hands out a write transaction whose [`OutboxTransaction::commit`] instead
//! commits *without* an fsync
//! (redb's `Durability::None`: visible to later transactions, on disk only once a durable
//! commit follows) and then waits for a durable commit made after it. Whoever waits first
//! becomes the leader: it lets the transactions already under way finish, then makes one empty
//! durable commit (one fsync) for all of them, and wakes everyone it covered. Callers that
//! commit meanwhile wait for the next leader.
//!
//! What a caller keeps:
//! - **fail-closed**: `commit` returns `Ok` only once a durable commit that follows its own has
//!   returned, so a call answered after `commit` has its change and its event on disk;
//! - **isolation of failures**: every caller has a transaction of its own, so one that fails or
//!   aborts (a bad request, an event that cannot be built, a full outbox) takes nothing of
//!   anyone else's with it;
//! - **nothing published early**: the publisher reads only events up to the outbox position that
//!   the last durable commit covered (the [`super::watermark`]), never an event whose call could
//!   still vanish in a crash.
//!
//! Under [`CommitMode::PerTransaction`] the same transaction simply commits durably by itself.
//!
//! If the durable commit fails, every caller it covered gets the error. redb then refuses further
//! writes until the database is reopened, and what those callers committed may or may not have
//! reached the disk; since each transaction held a call's change together with its event, the
//! two survive or vanish together.

use std::ops::Deref;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use redb::{Durability, WriteTransaction};
use tracing::error;

use super::{COUNTERS, CommitMode, EPOCH, NEXT_SEQ, Outbox, read_counter};
use crate::error::OutboxError;

/// The shared state of group commits on one database.
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    state: Mutex<State>,
    /// Signalled when a transaction ends while a leader waits for it.
    ended: Condvar,
    /// Signalled when a durable commit has finished, well or not.
    flushed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Transactions begun (counted before waiting for redb's writer lock).
    begun: u64,
    /// Transactions committed or aborted.
    ended: u64,
    /// Tickets handed out: one per non-durable commit.
    issued: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// Every ticket above `durable` up to this one was covered by a durable commit that failed.
    failed: u64,
    /// Whether a leader is gathering or making a durable commit.
    flushing: bool,
}

/// A write transaction of the outbox's database whose commit is shared with concurrent callers.
/// Dereferences to the [`WriteTransaction`], for the caller's own tables and for
/// [`Outbox::enqueue`]. Dropping it without committing aborts it.
pub struct OutboxTransaction {
    txn: Option<WriteTransaction>,
    outbox: Outbox,
    /// Whether the commit is a group commit, counted in the group's state from `begin` on.
    grouped: bool,
}

impl std::fmt::Debug for OutboxTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxTransaction").field("open", &self.txn.is_some()).finish_non_exhaustive()
    }
}

impl Deref for OutboxTransaction {
    type Target = WriteTransaction;

    fn deref(&self) -> &WriteTransaction {
        // `txn` is only taken by `commit` and `abort`, which consume `self`.
        self.txn.as_ref().expect("an outbox transaction holds its transaction until it ends")
    }
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is a few plain assignments under the lock, so a panic
        // elsewhere while it was held leaves it consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a transaction about to begin.
    fn begin(&self) {
        self.lock().begun += 1;
    }

    /// Counts a transaction that ended; returns the state for whoever continues with it.
    fn end(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        state.ended += 1;
        if state.flushing {
            self.ended.notify_one();
        }
        state
    }
}

impl Outbox {
    /// Starts a write transaction of the outbox's database whose commit returns once durable:
    /// shared with concurrent callers under [`CommitMode::Grouped`] (see
    /// [`OutboxTransaction::commit`]), its own fsync under [`CommitMode::PerTransaction`].
    ///
    /// # Errors
    /// [`OutboxError::Storage`] when the transaction cannot begin.
    pub fn begin(&self) -> Result<OutboxTransaction, OutboxError> {
        let grouped = self.inner.mode == CommitMode::Grouped;
        if grouped {
            self.inner.group.begin();
        }
        match self.inner.db.begin_write() {
            Ok(txn) => Ok(OutboxTransaction { txn: Some(txn), outbox: self.clone(), grouped }),
            Err(err) => {
                if grouped {
                    drop(self.inner.group.end());
                }
                Err(err.into())
            }
        }
    }

    /// Makes every commit so far durable with one empty durable commit (one fsync), and moves
    /// the watermark to the outbox position it covers.
    fn flush(&self) -> Result<(), OutboxError> {
        let txn = self.inner.db.begin_write()?;
        let (epoch, next_seq) = {
            let counters = txn.open_table(COUNTERS)?;
            (read_counter(&counters, EPOCH)?, read_counter(&counters, NEXT_SEQ)?)
        };
        txn.commit()?;
        self.inner.durable.advance(epoch, next_seq - 1);
        Ok(())
    }

    /// Waits until `ticket` is durable, leading a durable commit when nobody else is.
    fn wait_durable(&self, ticket: u64) -> Result<(), OutboxError> {
        let group = &self.inner.group;
        let mut state = group.lock();
        loop {
            if state.durable >= ticket {
                drop(state);
                self.wake_publisher();
                return Ok(());
            }
            if state.failed >= ticket {
                return Err(OutboxError::Storage(Box::new(redb::Error::from(std::io::Error::other(
                    "the durable commit covering this transaction failed",
                )))));
            }
            if state.flushing {
                state = group.flushed.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Lead: let the transactions begun so far end (they are queued on redb's writer
            // lock, so this is short), so that one fsync covers them too.
            state.flushing = true;
            let gathered = state.begun;
            while state.ended < gathered {
                state = group.ended.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            let target = state.issued;
            drop(state);
            let flushed = self.flush();
            state = group.lock();
            state.flushing = false;
            match flushed {
                Ok(()) => state.durable = state.durable.max(target),
                Err(err) => {
                    error!(error = %err, covered = target - state.durable, "durable group commit failed");
                    state.failed = state.failed.max(target);
                }
            }
            group.flushed.notify_all();
        }
    }
}

impl OutboxTransaction {
    /// Commits the transaction and returns once it is durable, having shared the fsync with
    /// whoever committed at about the same time under [`CommitMode::Grouped`]; then wakes the
    /// publisher.
    ///
    /// # Errors
    /// [`OutboxError::Storage`] when the commit, or the durable commit that should cover it,
    /// fails; the caller must then treat its change as not made (see the module docs).
    pub fn commit(mut self) -> Result<(), OutboxError> {
        let Some(mut txn) = self.txn.take() else {
            return Ok(());
        };
        if !self.grouped {
            txn.commit()?;
            self.outbox.wake_publisher();
            return Ok(());
        }
        let committed = match txn.set_durability(Durability::None) {
            Ok(()) => txn.commit().map_err(OutboxError::from),
            Err(err) => Err(OutboxError::Storage(Box::new(redb::Error::from(err)))),
        };
        let mut state = self.outbox.inner.group.end();
        committed?;
        state.issued += 1;
        let ticket = state.issued;
        drop(state);
        self.outbox.wait_durable(ticket)
    }

    /// Aborts the transaction: nothing it wrote stays.
    pub fn abort(self) {
        // Dropping ends it.
    }
}

impl Drop for OutboxTransaction {
    fn drop(&mut self) {
        if let Some(txn) = self.txn.take() {
            // Dropping a write transaction aborts it.
            drop(txn);
            if self.grouped {
                drop(self.outbox.inner.group.end());
            }
        }
    }
}
