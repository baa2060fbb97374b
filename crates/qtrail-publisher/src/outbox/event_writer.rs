//! The event writer: records an event alone, durably, batched with whatever else is waiting: for
//! calls that change nothing (reads, refusals) and so need no transaction of their own.
//!
//! [`Outbox::submit`] hands the event to the outbox's event writer, a thread that takes every
//! event waiting, appends them in one write transaction, commits it durably (one fsync for the
//! whole batch) and then answers each caller. While it commits, new events queue up and form the
//! next batch, so the batch grows with the load and the fsync is shared by ever more calls. The
//! caller awaits the returned [`Recording`] rather than blocking a thread while the fsync runs (a
//! blocked thread per call in flight costs a thread wake-up and two context switches per call).
//!
//! Each event keeps its own fate: one that does not fit in the outbox's bound is refused
//! ([`OutboxError::Full`]) and the others of its batch are stored. A failed commit fails every
//! event of its batch (none is stored). The writer thread starts with the first event and ends
//! when the last handle to the outbox is dropped.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Weak};

use qtrail_cadf::AuditEvent;
use tokio::sync::oneshot;
use tracing::error;

use super::{Inner, Outbox};
use crate::error::OutboxError;

/// Most events the writer appends in one transaction.
const MAX_BATCH: usize = 4096;

/// An event waiting for the writer, and where its outcome goes.
pub(super) struct Pending {
    encoded: Vec<u8>,
    reply: oneshot::Sender<Result<u64, OutboxError>>,
}

/// An event handed to the outbox's event writer by [`Outbox::submit`], on its way to the disk.
#[derive(Debug)]
#[must_use = "the event is durable only once its recording has completed"]
pub struct Recording {
    outcome: oneshot::Receiver<Result<u64, OutboxError>>,
}

impl Recording {
    /// Completes once the durable commit holding the event has returned, with the event's seq.
    ///
    /// # Errors
    /// [`OutboxError::Full`] when the event did not fit in the bound (nothing was written);
    /// [`OutboxError::Storage`] when the commit failed or the writer stopped.
    pub async fn durable(self) -> Result<u64, OutboxError> {
        self.outcome.await.unwrap_or_else(|_| Err(stopped("the outbox's event writer stopped")))
    }
}

impl Outbox {
    /// Hands `event` to the outbox's event writer, which appends it in a durable commit shared
    /// with every other event waiting, and returns at once; the returned [`Recording`] completes
    /// when that commit has returned (then the publisher is woken). Does not block.
    ///
    /// # Errors
    /// [`OutboxError::Storage`] when the writer cannot run.
    pub fn submit(&self, event: &AuditEvent) -> Result<Recording, OutboxError> {
        let (reply, outcome) = oneshot::channel();
        let encoded = event.encode_proto();
        let writer = self.inner.writer.get_or_init(|| spawn(Arc::downgrade(&self.inner)));
        let Some(writer) = writer else {
            return Err(stopped("the outbox's event writer could not start"));
        };
        writer.send(Pending { encoded, reply }).map_err(|_| stopped("the outbox's event writer stopped"))?;
        Ok(Recording { outcome })
    }
}

fn stopped(why: &str) -> OutboxError {
    OutboxError::Storage(Box::new(redb::Error::from(std::io::Error::other(why.to_owned()))))
}

/// Starts the writer thread; `None` when it cannot start.
fn spawn(outbox: Weak<Inner>) -> Option<Sender<Pending>> {
    let (sender, queue) = std::sync::mpsc::channel();
    let started = std::thread::Builder::new().name("qtrail-outbox-writer".into()).spawn(move || run(&outbox, &queue));
    match started {
        Ok(_) => Some(sender),
        Err(err) => {
            error!(error = %err, "cannot start the outbox's event writer");
            None
        }
    }
}

fn run(outbox: &Weak<Inner>, queue: &Receiver<Pending>) {
    // Ends when the outbox (which holds the sender) is dropped.
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let Some(inner) = outbox.upgrade() else {
            return;
        };
        let outbox = Outbox { inner };
        let outcomes = match outbox.append_durably(&batch) {
            Ok(outcomes) => outcomes,
            Err(err) => {
                error!(error = %err, events = batch.len(), "cannot commit audit events");
                let text = err.to_string();
                batch.iter().map(|_| Err(stopped(&text))).collect()
            }
        };
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            // A caller that is gone no longer waits for its answer.
            let _ = pending.reply.send(outcome);
        }
        outbox.wake_publisher();
    }
}

impl Outbox {
    /// Appends the events that fit in one durable transaction; returns each one's outcome.
    fn append_durably(&self, batch: &[Pending]) -> Result<Vec<Result<u64, OutboxError>>, OutboxError> {
        let txn = self.inner.db.begin_write()?;
        let appended = self.append_all(&txn, batch.iter().map(|pending| pending.encoded.as_slice()))?;
        txn.commit()?;
        // That commit was durable, and so is everything committed before it.
        self.inner.durable.advance(appended.epoch, appended.last_seq);
        Ok(appended.outcomes)
    }
}
